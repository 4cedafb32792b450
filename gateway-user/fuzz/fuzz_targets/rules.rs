//! The firewall rules language (`gateway::rules`): lexer, parser, type checker
//! and compiled closures, then evaluation on a request made from the input.
//!
//! Input: `EXPRESSION [0x00 FIELDS]`. The expression is the text (lossy UTF-8);
//! when it is 0xFE and 1 to 4 bytes, those are repeated past the length limit.
//! FIELDS are 0x00-separated: flags (ssl, cert presented/verified/revoked,
//! details present, IPv6) and the address (text or bytes), then host, method,
//! path, query, user agent, TLS version, cipher, then `name:value` headers and
//! the certificate's string fields.
//!
//! Invariants:
//! - compiling never panics; an error's offset is a char boundary inside the
//!   text, its line and column are those of the offset (within the text's
//!   lines and the line's characters), and its caret is under that character;
//! - compiling the same text twice gives the same outcome (same error, or the
//!   same result on the request);
//! - a compiled rule evaluates without panic on arbitrary values, the same way
//!   twice, and only ever matches a host among its `required_hosts`;
//! - a `RuleSet` holding it (indexed by host) gives the verdict the expression
//!   does, in rule order, and its error is the expression's.
//!
//! The AST has no printer, so there is no print/re-parse round trip to check.
#![no_main]

use std::{borrow::Cow, net::IpAddr};

use gateway::rules::{
    Action, Expression, RequestFields, RuleError, RuleSet, RuleSpec,
    fields::{CertDetails, ClientAuth},
    parser, sample,
};
use libfuzzer_sys::fuzz_target;

/// The request the FIELDS part describes (missing parts keep `sample::blank`).
fn request(fields: &[u8]) -> RequestFields<'static> {
    let mut r = sample::blank();
    let mut parts = fields.split(|b| *b == 0);
    let flags = parts.next().unwrap_or_default();
    let bit = |n: u8| flags.first().is_some_and(|f| f & (1 << n) != 0);
    let mut auth = ClientAuth {
        presented: bit(1),
        verified: bit(2),
        revoked: bit(3),
        ..ClientAuth::default()
    };
    r.ssl = bit(0);
    let raw = flags.get(1..).unwrap_or_default();
    let mut addr = [0u8; 16];
    addr[..raw.len().min(16)].copy_from_slice(&raw[..raw.len().min(16)]);
    r.src = match std::str::from_utf8(raw).ok().and_then(|t| t.parse().ok()) {
        Some(ip) => ip,
        None if bit(5) => IpAddr::from(addr),
        None => IpAddr::from([addr[0], addr[1], addr[2], addr[3]]),
    };
    let text = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
    for slot in [
        &mut r.host,
        &mut r.method,
        &mut r.path,
        &mut r.query,
        &mut r.user_agent,
        &mut r.tls_version,
        &mut r.tls_cipher,
    ] {
        match parts.next() {
            Some(p) => *slot = Cow::Owned(text(p)),
            None => break,
        }
    }
    let mut cert = CertDetails::default();
    let mut cert_fields = [
        &mut cert.issuer_dn,
        &mut cert.issuer_dn_rfc2253,
        &mut cert.issuer_dn_legacy,
        &mut cert.subject_dn,
        &mut cert.subject_dn_rfc2253,
        &mut cert.subject_dn_legacy,
        &mut cert.serial,
        &mut cert.issuer_serial,
        &mut cert.fingerprint_sha256,
        &mut cert.fingerprint_sha1,
        &mut cert.not_before,
        &mut cert.not_after,
        &mut cert.ski,
        &mut cert.issuer_ski,
        &mut cert.rfc9440,
        &mut cert.chain_rfc9440,
    ]
    .into_iter();
    for p in parts {
        let colon = p.iter().position(|b| *b == b':');
        let header = colon.and_then(|i| {
            let name = http::HeaderName::from_bytes(&p[..i].to_ascii_lowercase()).ok()?;
            Some((name, http::HeaderValue::from_bytes(&p[i + 1..]).ok()?))
        });
        match header {
            Some((name, value)) => {
                r.headers.to_mut().append(name, value);
            }
            None => {
                if let Some(slot) = cert_fields.next() {
                    *slot = text(p);
                }
            }
        }
    }
    drop(cert_fields);
    if bit(4) {
        auth.cert = Some(cert);
    }
    r.client_auth = Cow::Owned(auth);
    r
}

/// The error points into the text, at the line, column and caret it says.
fn check_error(text: &str, e: &RuleError) {
    assert!(
        e.offset <= text.len() && text.is_char_boundary(e.offset),
        "offset {} outside the text or inside a character: {e}",
        e.offset
    );
    let before = &text[..e.offset];
    assert_eq!(e.line, before.matches('\n').count() + 1, "line of {e}");
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].split('\n').next().unwrap_or("");
    assert_eq!(e.column, before[line_start..].chars().count() + 1, "{e}");
    assert!(
        e.column <= line.chars().count() + 1,
        "column past the line: {e}"
    );
    assert!(!e.message.is_empty());
    let (shown, caret) = e.excerpt.split_once('\n').expect("excerpt has two lines");
    assert_eq!(caret.trim_start_matches(' '), "^", "a caret: {e}");
    let under = shown.chars().nth(caret.len() - 1);
    let at = text[e.offset..].chars().next().filter(|c| *c != '\n');
    assert_eq!(under, at, "the caret is under the error: {e}");
    let _ = e.to_string();
}

fn spec(id: &str, expression: &str, action: Action) -> RuleSpec {
    RuleSpec {
        id: id.into(),
        description: String::new(),
        expression: expression.into(),
        action,
        enabled: true,
    }
}

fuzz_target!(|data: &[u8]| {
    let (expr, fields) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    if let Some((0xfe, rest)) = expr.split_first()
        && (1..=4).contains(&rest.len())
    {
        // Past the limit: refused, at a position inside the text. A unit of one
        // character or a few bytes is all the limit's check depends on, and an
        // error over a megabyte of text costs milliseconds: checked once.
        let unit = String::from_utf8_lossy(rest);
        let text = unit.repeat(parser::MAX_EXPRESSION_LEN / unit.len() + 1);
        let e = Expression::compile(&text).expect_err("longer than the limit");
        return check_error(&text, &e);
    }
    let text = String::from_utf8_lossy(expr);
    let req = request(fields);
    let first = Expression::compile(&text);
    let again = Expression::compile(&text);
    let set = RuleSet::compile(&[
        spec("r0", &text, Action::Log),
        spec("any", "ssl or not ssl", Action::Log),
        spec("r2", &text, Action::Block),
    ]);
    let e = match (first, again) {
        (Err(a), Err(b)) => {
            check_error(&text, &a);
            assert_eq!(a, b, "compiling twice gives the same error");
            assert_eq!(set.err(), Some(("r0".to_string(), a)), "the set's error");
            return;
        }
        (Ok(a), Ok(b)) => {
            assert_eq!(b.matches(&req), a.matches(&req), "compiled twice");
            a
        }
        (a, b) => panic!("compiling twice: {a:?} then {b:?}"),
    };
    assert_eq!(e.source(), &*text);
    let matched = e.matches(&req);
    assert_eq!(e.matches(&req), matched, "evaluating twice");
    let _ = e.matches(&sample::blank());
    let ast = parser::parse(&text).expect("what compiles parses");
    if let Some(hosts) = parser::required_hosts(&ast)
        && matched
    {
        assert!(
            hosts.iter().any(|h| *h == *req.host),
            "matched outside {hosts:?}"
        );
    }
    let set = set.expect("the set compiles what the expression does");
    let verdict = set.evaluate(&req);
    let want: Vec<(&str, Action)> = if matched {
        vec![
            ("r0", Action::Log),
            ("any", Action::Log),
            ("r2", Action::Block),
        ]
    } else {
        vec![("any", Action::Log)]
    };
    assert_eq!(verdict.matched, want, "the host index changes nothing");
    assert_eq!(verdict.blocked(), matched, "a match blocks");
});
