//! Tokens of the rules language, each with its byte offset.

use super::error::RuleError;

/// A token.
#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    /// A field, function or word operator name.
    Ident(String),
    /// A string literal (escapes resolved).
    Str(String),
    /// An integer literal.
    Int(i64),
    /// An IP address or CIDR literal, as written.
    Ip(String),
    /// Punctuation and symbolic operators: `( ) { } [ ] , *` and `== != < <= > >= ~ ! && || ^^`.
    Sym(&'static str),
    /// End of input.
    End,
}

impl Tok {
    /// How the token is shown in errors.
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Str(s) => format!("the string {s:?}"),
            Tok::Int(i) => format!("the number {i}"),
            Tok::Ip(s) => format!("the address {s}"),
            Tok::Sym(s) => format!("`{s}`"),
            Tok::End => "the end of the expression".to_string(),
        }
    }
}

const SYMBOLS: [&str; 17] = [
    "==", "!=", "<=", ">=", "&&", "||", "^^", "(", ")", "{", "}", "[", "]", ",", "*", "<", ">",
];

/// Splits an expression into tokens.
pub fn tokens(src: &str) -> Result<Vec<(Tok, usize)>, RuleError> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c == b'"' {
            let (s, next) = string(src, i)?;
            out.push((Tok::Str(s), start));
            i = next;
        } else if c == b'r' && matches!(bytes.get(i + 1), Some(b'"' | b'#')) {
            let (s, next) = raw_string(src, i)?;
            out.push((Tok::Str(s), start));
            i = next;
        } else if let Some(sym) = SYMBOLS.iter().find(|s| src[i..].starts_with(**s)) {
            out.push((Tok::Sym(sym), start));
            i += sym.len();
        } else if c == b'~' {
            out.push((Tok::Sym("~"), start));
            i += 1;
        } else if c == b'!' {
            out.push((Tok::Sym("!"), start));
            i += 1;
        } else if c.is_ascii_alphanumeric() || c == b'_' || c == b':' || c == b'$' {
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || b"_.:/$".contains(&bytes[i]))
            {
                i += 1;
            }
            let word = &src[start..i];
            out.push((word_token(src, word, start)?, start));
        } else {
            let ch = src[i..].chars().next().unwrap_or('?');
            return Err(RuleError::at(
                src,
                i,
                format!("unexpected character {ch:?}"),
            ));
        }
    }
    out.push((Tok::End, src.len()));
    Ok(out)
}

fn word_token(src: &str, word: &str, at: usize) -> Result<Tok, RuleError> {
    let first = word.as_bytes()[0];
    if word.contains(':') || (first.is_ascii_digit() && (word.contains('.') || word.contains('/')))
    {
        let addr = word.split('/').next().unwrap_or("");
        if addr.parse::<std::net::IpAddr>().is_err() {
            return Err(RuleError::at(
                src,
                at,
                format!("{word:?} is not an IP address or CIDR"),
            ));
        }
        return Ok(Tok::Ip(word.to_string()));
    }
    if first.is_ascii_digit() {
        return word
            .parse::<i64>()
            .map(Tok::Int)
            .map_err(|_| RuleError::at(src, at, format!("{word:?} is not a number")));
    }
    if word.starts_with('$') {
        return Err(RuleError::at(
            src,
            at,
            "named lists ($name) are not supported; write the set in {...}",
        ));
    }
    Ok(Tok::Ident(word.to_string()))
}

fn string(src: &str, start: usize) -> Result<(String, usize), RuleError> {
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, start + 1 + i + 1)),
            '\\' => match chars.next() {
                Some((_, e @ ('"' | '\\'))) => out.push(e),
                Some((_, e)) => {
                    return Err(RuleError::at(
                        src,
                        start + 1 + i,
                        format!(
                            "unknown escape \\{e}: only \\\" and \\\\ are escapes (use a raw string r\"...\" for regexes)"
                        ),
                    ));
                }
                None => break,
            },
            c => out.push(c),
        }
    }
    Err(RuleError::at(
        src,
        start,
        "unterminated string: expected a closing \"",
    ))
}

fn raw_string(src: &str, start: usize) -> Result<(String, usize), RuleError> {
    let rest = &src[start + 1..];
    let hashes = rest.bytes().take_while(|b| *b == b'#').count();
    if rest.as_bytes().get(hashes) != Some(&b'"') {
        return Err(RuleError::at(
            src,
            start,
            "expected `\"` to open the raw string",
        ));
    }
    let body_start = start + 1 + hashes + 1;
    let close = format!("\"{}", "#".repeat(hashes));
    match src[body_start..].find(&close) {
        Some(i) => Ok((
            src[body_start..body_start + i].to_string(),
            body_start + i + close.len(),
        )),
        None => Err(RuleError::at(
            src,
            start,
            format!("unterminated raw string: expected {close}"),
        )),
    }
}
