//! The parser: tokens → AST, by recursive descent. Precedence, loosest first:
//! `or ||`, `xor ^^`, `and &&`, `not !`, then comparisons.

use super::{
    error::RuleError,
    lexer::{Tok, tokens},
};

/// Longest expression accepted, in bytes.
pub const MAX_EXPRESSION_LEN: usize = 1024 * 1024;
/// Deepest nesting of parentheses and operators accepted.
const MAX_DEPTH: usize = 64;

/// Logical operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logic {
    /// `and`, `&&`
    And,
    /// `xor`, `^^`
    Xor,
    /// `or`, `||`
    Or,
}

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// `eq`, `==`
    Eq,
    /// `ne`, `!=`
    Ne,
    /// `lt`, `<`
    Lt,
    /// `le`, `<=`
    Le,
    /// `gt`, `>`
    Gt,
    /// `ge`, `>=`
    Ge,
    /// `contains`
    Contains,
    /// `matches`, `~`
    Matches,
    /// `wildcard` (case-insensitive)
    Wildcard,
    /// `strict wildcard`
    StrictWildcard,
}

/// An index into an array or map.
#[derive(Clone, Debug, PartialEq)]
pub enum IndexKey {
    /// `["name"]`
    Name(String),
    /// `[0]`
    Pos(i64),
    /// `[*]`: every element.
    Star,
}

/// An AST node and the byte offset it starts at.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// What it is.
    pub kind: Kind,
    /// Where it starts.
    pub at: usize,
}

/// The kinds of node.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// A field by name (resolved by the type checker).
    Field(String),
    /// A string literal.
    Str(String),
    /// An integer literal.
    Int(i64),
    /// An IP or CIDR literal.
    Ip(String),
    /// `base[key]`
    Index(Box<Node>, IndexKey),
    /// `name(args...)`
    Call(String, Vec<Node>),
    /// `not x`
    Not(Box<Node>),
    /// `a and b and c`, ...: one node for a whole chain (two terms or more), so
    /// long chains do not make deep trees.
    Logic(Logic, Vec<Node>),
    /// `lhs op rhs`
    Compare(Cmp, Box<Node>, Box<Node>),
    /// `lhs in {items}`
    In(Box<Node>, Vec<Node>),
}

/// The hostnames an expression can only match on: when it is `http.host eq "x"`
/// or `http.host in {...}`, or a conjunction with such a term (or a
/// disjunction of such). `None`: any host.
pub fn required_hosts(node: &Node) -> Option<Vec<String>> {
    match &node.kind {
        Kind::Compare(Cmp::Eq, lhs, rhs) => match (&lhs.kind, &rhs.kind) {
            (Kind::Field(f), Kind::Str(s)) if f == "http.host" => Some(vec![s.clone()]),
            _ => None,
        },
        Kind::In(lhs, items) => match &lhs.kind {
            Kind::Field(f) if f == "http.host" => items
                .iter()
                .map(|i| match &i.kind {
                    Kind::Str(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => None,
        },
        Kind::Logic(Logic::And, terms) => terms.iter().find_map(required_hosts),
        Kind::Logic(Logic::Or, terms) => {
            let mut hosts = Vec::new();
            for t in terms {
                hosts.extend(required_hosts(t)?);
            }
            Some(hosts)
        }
        _ => None,
    }
}

/// Parses an expression.
pub fn parse(src: &str) -> Result<Node, RuleError> {
    if src.len() > MAX_EXPRESSION_LEN {
        return Err(RuleError::at(
            src,
            MAX_EXPRESSION_LEN,
            format!("expression longer than {MAX_EXPRESSION_LEN} bytes"),
        ));
    }
    let toks = tokens(src)?;
    let mut p = Parser {
        src,
        toks,
        pos: 0,
        depth: 0,
    };
    let node = p.or()?;
    match p.peek() {
        Tok::End => Ok(node),
        t => Err(p.error(format!(
            "expected `and`, `or`, `xor` or the end of the expression, found {}",
            t.describe()
        ))),
    }
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<(Tok, usize)>,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].0
    }

    fn at(&self) -> usize {
        self.toks[self.pos].1
    }

    fn bump(&mut self) -> (Tok, usize) {
        let t = self.toks[self.pos].clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn error(&self, message: String) -> RuleError {
        RuleError::at(self.src, self.at(), message)
    }

    fn is_word(&self, words: &[&str]) -> bool {
        matches!(self.peek(), Tok::Ident(w) if words.contains(&w.as_str()))
    }

    fn is_sym(&self, syms: &[&str]) -> bool {
        matches!(self.peek(), Tok::Sym(s) if syms.contains(s))
    }

    fn expect_sym(&mut self, sym: &str, what: &str) -> Result<(), RuleError> {
        if self.is_sym(&[sym]) {
            self.bump();
            Ok(())
        } else {
            Err(self.error(format!(
                "expected `{sym}` {what}, found {}",
                self.peek().describe()
            )))
        }
    }

    fn nest(&mut self) -> Result<(), RuleError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(format!("expression nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    fn binary(
        &mut self,
        op: Logic,
        words: &[&str],
        next: fn(&mut Self) -> Result<Node, RuleError>,
    ) -> Result<Node, RuleError> {
        let first = next(self)?;
        let at = first.at;
        let mut terms = vec![first];
        while self.is_word(words) || self.is_sym(words) {
            self.bump();
            terms.push(next(self)?);
        }
        if terms.len() == 1 {
            return Ok(terms.pop().expect("one term"));
        }
        Ok(Node {
            kind: Kind::Logic(op, terms),
            at,
        })
    }

    fn or(&mut self) -> Result<Node, RuleError> {
        self.binary(Logic::Or, &["or", "||"], Self::xor)
    }

    fn xor(&mut self) -> Result<Node, RuleError> {
        self.binary(Logic::Xor, &["xor", "^^"], Self::and)
    }

    fn and(&mut self) -> Result<Node, RuleError> {
        self.binary(Logic::And, &["and", "&&"], Self::unary)
    }

    fn unary(&mut self) -> Result<Node, RuleError> {
        if self.is_word(&["not"]) || self.is_sym(&["!"]) {
            self.nest()?;
            let at = self.bump().1;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Node {
                kind: Kind::Not(Box::new(inner)),
                at,
            });
        }
        if self.is_sym(&["("]) {
            self.nest()?;
            self.bump();
            let inner = self.or()?;
            self.depth -= 1;
            self.expect_sym(")", "to close the parenthesis")?;
            return Ok(inner);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Node, RuleError> {
        let lhs = self.value()?;
        let at = lhs.at;
        let op = match self.peek() {
            Tok::Ident(w) => match w.as_str() {
                "eq" => Some(Cmp::Eq),
                "ne" => Some(Cmp::Ne),
                "lt" => Some(Cmp::Lt),
                "le" => Some(Cmp::Le),
                "gt" => Some(Cmp::Gt),
                "ge" => Some(Cmp::Ge),
                "contains" => Some(Cmp::Contains),
                "matches" => Some(Cmp::Matches),
                "wildcard" => Some(Cmp::Wildcard),
                "strict" => {
                    self.bump();
                    if !self.is_word(&["wildcard"]) {
                        return Err(self.error(format!(
                            "expected `wildcard` after `strict`, found {}",
                            self.peek().describe()
                        )));
                    }
                    Some(Cmp::StrictWildcard)
                }
                "in" => {
                    self.bump();
                    let items = self.set()?;
                    return Ok(Node {
                        kind: Kind::In(Box::new(lhs), items),
                        at,
                    });
                }
                _ => None,
            },
            Tok::Sym(s) => match *s {
                "==" => Some(Cmp::Eq),
                "!=" => Some(Cmp::Ne),
                "<" => Some(Cmp::Lt),
                "<=" => Some(Cmp::Le),
                ">" => Some(Cmp::Gt),
                ">=" => Some(Cmp::Ge),
                "~" => Some(Cmp::Matches),
                _ => None,
            },
            _ => None,
        };
        let Some(op) = op else {
            return Ok(lhs);
        };
        self.bump();
        let rhs = self.literal()?;
        Ok(Node {
            kind: Kind::Compare(op, Box::new(lhs), Box::new(rhs)),
            at,
        })
    }

    fn literal(&mut self) -> Result<Node, RuleError> {
        let (tok, at) = self.bump();
        let kind = match tok {
            Tok::Str(s) => Kind::Str(s),
            Tok::Int(i) => Kind::Int(i),
            Tok::Ip(s) => Kind::Ip(s),
            other => {
                self.pos -= usize::from(other != Tok::End);
                return Err(RuleError::at(
                    self.src,
                    at,
                    format!(
                        "expected a value (string, number or IP), found {}",
                        other.describe()
                    ),
                ));
            }
        };
        Ok(Node { kind, at })
    }

    fn set(&mut self) -> Result<Vec<Node>, RuleError> {
        self.expect_sym("{", "to open the set after `in`")?;
        let mut items = Vec::new();
        loop {
            if self.is_sym(&["}"]) {
                self.bump();
                break;
            }
            if self.is_sym(&[","]) && !items.is_empty() {
                self.bump();
                continue;
            }
            if matches!(self.peek(), Tok::End) {
                return Err(self.error("expected `}` to close the set".to_string()));
            }
            items.push(self.literal()?);
        }
        if items.is_empty() {
            return Err(RuleError::at(
                self.src,
                self.toks[self.pos - 1].1,
                "an empty set matches nothing; list at least one value",
            ));
        }
        Ok(items)
    }

    fn value(&mut self) -> Result<Node, RuleError> {
        let (tok, at) = self.bump();
        let mut node = match tok {
            Tok::Ident(name) if self.is_sym(&["("]) => {
                self.bump();
                self.nest()?;
                let mut args = Vec::new();
                if !self.is_sym(&[")"]) {
                    loop {
                        args.push(self.argument()?);
                        if self.is_sym(&[","]) {
                            self.bump();
                            continue;
                        }
                        break;
                    }
                }
                self.depth -= 1;
                self.expect_sym(")", &format!("to close the arguments of {name}()"))?;
                Node {
                    kind: Kind::Call(name, args),
                    at,
                }
            }
            Tok::Ident(name) if is_keyword(&name) => {
                return Err(RuleError::at(
                    self.src,
                    at,
                    format!("expected a field or a function, found the operator `{name}`"),
                ));
            }
            Tok::Ident(name) => Node {
                kind: Kind::Field(name),
                at,
            },
            other => {
                return Err(RuleError::at(
                    self.src,
                    at,
                    format!(
                        "expected a field, a function or `(`, found {}",
                        other.describe()
                    ),
                ));
            }
        };
        let depth = self.depth;
        while self.is_sym(&["["]) {
            self.nest()?;
            self.bump();
            let key = match self.bump() {
                (Tok::Str(s), _) => IndexKey::Name(s),
                (Tok::Int(i), _) => IndexKey::Pos(i),
                (Tok::Sym("*"), _) => IndexKey::Star,
                (other, at) => {
                    return Err(RuleError::at(
                        self.src,
                        at,
                        format!(
                            "expected a name, a number or `*` inside `[...]`, found {}",
                            other.describe()
                        ),
                    ));
                }
            };
            self.expect_sym("]", "to close the index")?;
            node = Node {
                kind: Kind::Index(Box::new(node), key),
                at,
            };
        }
        self.depth = depth;
        Ok(node)
    }

    /// A function argument: a literal or an expression.
    fn argument(&mut self) -> Result<Node, RuleError> {
        match self.peek() {
            Tok::Str(_) | Tok::Int(_) | Tok::Ip(_) => self.literal(),
            _ => self.or(),
        }
    }
}

fn is_keyword(w: &str) -> bool {
    matches!(
        w,
        "and"
            | "or"
            | "xor"
            | "not"
            | "eq"
            | "ne"
            | "lt"
            | "le"
            | "gt"
            | "ge"
            | "contains"
            | "matches"
            | "wildcard"
            | "strict"
            | "in"
    )
}
