//! Type checking and compilation in one pass: every AST node becomes a typed
//! closure over [`RequestFields`]. Literals, regexes and sets are prepared
//! here, so evaluation parses nothing; an error names the node's position.

use std::{borrow::Cow, net::IpAddr};

use rustc_hash::FxHashSet as HashSet;

use super::{
    error::RuleError,
    ipset::IpSet,
    parser::{Cmp, IndexKey, Kind, Logic, Node},
    scheme::{Field, Type},
    text,
};
use crate::rules::RequestFields;

type BoolFn = Box<dyn Fn(&RequestFields<'_>) -> bool + Send + Sync>;
type StrFn = Box<dyn for<'a> Fn(&'a RequestFields<'_>) -> Option<Cow<'a, str>> + Send + Sync>;
type IntFn = Box<dyn Fn(&RequestFields<'_>) -> Option<i64> + Send + Sync>;
type IpFn = Box<dyn Fn(&RequestFields<'_>) -> IpAddr + Send + Sync>;
type StrsFn = Box<dyn for<'a> Fn(&'a RequestFields<'_>) -> Vec<Cow<'a, str>> + Send + Sync>;
type BoolsFn = Box<dyn Fn(&RequestFields<'_>) -> Vec<bool> + Send + Sync>;
type StrTest = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// A compiled node.
pub enum Compiled {
    /// A Boolean.
    Bool(BoolFn),
    /// A string (None: a missing element, which makes comparisons false).
    Str(StrFn),
    /// An integer.
    Int(IntFn),
    /// An IP address.
    Ip(IpFn),
    /// An array of strings; `star` when it came from `[*]`.
    Strs(StrsFn, bool),
    /// An array of Booleans, from a comparison over `[*]`.
    Bools(BoolsFn),
    /// The headers map.
    Headers,
}

impl Compiled {
    fn ty(&self) -> Type {
        match self {
            Compiled::Bool(_) => Type::Bool,
            Compiled::Str(_) => Type::Bytes,
            Compiled::Int(_) => Type::Int,
            Compiled::Ip(_) => Type::Ip,
            Compiled::Strs(..) => Type::BytesArray,
            Compiled::Bools(_) => Type::BoolArray,
            Compiled::Headers => Type::Map,
        }
    }
}

/// Regexes may not compile to more than this many bytes.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles an expression that must be Boolean.
pub fn compile_bool(src: &str, node: &Node) -> Result<BoolFn, RuleError> {
    match compile(src, node)? {
        Compiled::Bool(f) => Ok(f),
        Compiled::Bools(_) => Err(RuleError::at(
            src,
            node.at,
            "a comparison over [*] gives one result per element: wrap it in any(...) or all(...)",
        )),
        other => Err(RuleError::at(
            src,
            node.at,
            format!("expected a Boolean expression, found a {}", other.ty()),
        )),
    }
}

fn compile(src: &str, node: &Node) -> Result<Compiled, RuleError> {
    let err = |at: usize, m: String| RuleError::at(src, at, m);
    Ok(match &node.kind {
        Kind::Field(name) => {
            let field = Field::by_name(name).ok_or_else(|| err(node.at, unknown_field(name)))?;
            match field.ty() {
                Type::Bool => Compiled::Bool(Box::new(move |r| field.boolean(r))),
                Type::Ip => Compiled::Ip(Box::new(move |r| field.ip(r))),
                Type::Map => Compiled::Headers,
                _ => Compiled::Str(Box::new(move |r| Some(field.bytes(r)))),
            }
        }
        Kind::Str(_) | Kind::Int(_) | Kind::Ip(_) => {
            return Err(err(
                node.at,
                "a value on its own is not a condition: compare a field with it".into(),
            ));
        }
        Kind::Not(inner) => {
            let f = compile_bool(src, inner)?;
            Compiled::Bool(Box::new(move |r| !f(r)))
        }
        Kind::Logic(op, terms) => {
            let terms = terms
                .iter()
                .map(|t| compile_bool(src, t))
                .collect::<Result<Vec<_>, _>>()?;
            Compiled::Bool(match op {
                Logic::And => Box::new(move |r| terms.iter().all(|t| t(r))),
                Logic::Or => Box::new(move |r| terms.iter().any(|t| t(r))),
                Logic::Xor => Box::new(move |r| terms.iter().fold(false, |acc, t| acc ^ t(r))),
            })
        }
        Kind::Index(base, key) => index(src, base, key)?,
        Kind::Call(name, args) => call(src, node.at, name, args)?,
        Kind::Compare(op, lhs, rhs) => compare(src, *op, lhs, rhs)?,
        Kind::In(lhs, items) => membership(src, lhs, items)?,
    })
}

fn unknown_field(name: &str) -> String {
    let close: Vec<&str> = super::scheme::FIELDS
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| n.starts_with(name.split('.').next().unwrap_or("")))
        .take(4)
        .collect();
    if close.is_empty() {
        format!("unknown field `{name}`")
    } else {
        format!(
            "unknown field `{name}`; fields with that prefix: {}",
            close.join(", ")
        )
    }
}

fn index(src: &str, base: &Node, key: &IndexKey) -> Result<Compiled, RuleError> {
    let compiled = compile(src, base)?;
    let bad = |ty: Type| {
        RuleError::at(
            src,
            base.at,
            format!("a {ty} cannot be indexed with {key:?}"),
        )
    };
    Ok(match (compiled, key) {
        (Compiled::Headers, IndexKey::Name(name)) => {
            let name = name.to_ascii_lowercase();
            Compiled::Strs(
                Box::new(move |r| {
                    r.headers
                        .get_all(name.as_str())
                        .iter()
                        .map(|v| String::from_utf8_lossy(v.as_bytes()))
                        .collect()
                }),
                false,
            )
        }
        (Compiled::Headers, IndexKey::Star) => Compiled::Strs(
            Box::new(|r| {
                r.headers
                    .values()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()))
                    .collect()
            }),
            true,
        ),
        (Compiled::Strs(f, false), IndexKey::Pos(i)) => {
            let i = usize::try_from(*i)
                .map_err(|_| RuleError::at(src, base.at, "array positions start at 0"))?;
            Compiled::Str(Box::new(move |r| f(r).into_iter().nth(i)))
        }
        (Compiled::Strs(f, _), IndexKey::Star) => Compiled::Strs(f, true),
        (c, _) => return Err(bad(c.ty())),
    })
}

fn string_arg(src: &str, node: &Node, func: &str) -> Result<StrFn, RuleError> {
    match &node.kind {
        Kind::Str(s) => {
            let s = s.clone();
            Ok(Box::new(move |_| Some(Cow::Owned(s.clone()))))
        }
        _ => match compile(src, node)? {
            Compiled::Str(f) => Ok(f),
            other => Err(RuleError::at(
                src,
                node.at,
                format!("{func}() takes strings, found a {}", other.ty()),
            )),
        },
    }
}

fn call(src: &str, at: usize, name: &str, args: &[Node]) -> Result<Compiled, RuleError> {
    let call = Call {
        src,
        at,
        name,
        args,
    };
    match name {
        "lower" => call.map(|s| s.to_lowercase()),
        "upper" => call.map(|s| s.to_uppercase()),
        "url_decode" => call.map(text::url_decode),
        "len" => call.len(),
        "concat" => call.concat(),
        "starts_with" | "ends_with" => call.affix(name == "starts_with"),
        "any" | "all" => call.quantifier(name == "any"),
        _ => Err(call.error(
            at,
            format!(
                "unknown function {name}(); known: lower, upper, len, concat, url_decode, starts_with, ends_with, any, all"
            ),
        )),
    }
}

/// A function call being compiled: its name, arguments and position.
struct Call<'a> {
    src: &'a str,
    at: usize,
    name: &'a str,
    args: &'a [Node],
}

impl Call<'_> {
    fn error(&self, at: usize, message: impl Into<String>) -> RuleError {
        RuleError::at(self.src, at, message)
    }

    fn arity(&self, n: usize) -> Result<(), RuleError> {
        if self.args.len() == n {
            Ok(())
        } else {
            Err(self.error(
                self.at,
                format!(
                    "{}() takes {n} argument(s), found {}",
                    self.name,
                    self.args.len()
                ),
            ))
        }
    }

    /// lower(), upper(), url_decode(): a string function over a value or an array.
    fn map(&self, f: fn(&str) -> String) -> Result<Compiled, RuleError> {
        self.arity(1)?;
        Ok(match compile(self.src, &self.args[0])? {
            Compiled::Str(g) => Compiled::Str(Box::new(move |r| g(r).map(|v| Cow::Owned(f(&v))))),
            Compiled::Strs(g, star) => Compiled::Strs(
                Box::new(move |r| g(r).iter().map(|v| Cow::Owned(f(v))).collect()),
                star,
            ),
            other => {
                return Err(self.error(
                    self.args[0].at,
                    format!("{}() takes a String, found a {}", self.name, other.ty()),
                ));
            }
        })
    }

    /// len(): a string's length in bytes, or an array's in elements.
    fn len(&self) -> Result<Compiled, RuleError> {
        self.arity(1)?;
        Ok(match compile(self.src, &self.args[0])? {
            Compiled::Str(g) => Compiled::Int(Box::new(move |r| g(r).map(|v| v.len() as i64))),
            Compiled::Strs(g, _) => Compiled::Int(Box::new(move |r| Some(g(r).len() as i64))),
            other => {
                return Err(self.error(
                    self.args[0].at,
                    format!("len() takes a String or an array, found a {}", other.ty()),
                ));
            }
        })
    }

    /// concat(): its string arguments joined.
    fn concat(&self) -> Result<Compiled, RuleError> {
        if self.args.is_empty() {
            return Err(self.error(self.at, "concat() takes at least one argument"));
        }
        let parts = self
            .args
            .iter()
            .map(|a| string_arg(self.src, a, self.name))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Compiled::Str(Box::new(move |r| {
            let mut out = String::new();
            for p in &parts {
                out.push_str(&p(r)?);
            }
            Some(Cow::Owned(out))
        })))
    }

    /// starts_with() and ends_with(): a value against a string literal.
    fn affix(&self, starts: bool) -> Result<Compiled, RuleError> {
        self.arity(2)?;
        let Kind::Str(affix) = &self.args[1].kind else {
            return Err(self.error(
                self.args[1].at,
                format!(
                    "{}() takes a string literal as its second argument",
                    self.name
                ),
            ));
        };
        let (value, affix) = (
            string_arg(self.src, &self.args[0], self.name)?,
            affix.clone(),
        );
        Ok(Compiled::Bool(Box::new(move |r| {
            value(r).is_some_and(|v| {
                if starts {
                    v.starts_with(&affix)
                } else {
                    v.ends_with(&affix)
                }
            })
        })))
    }

    /// any() and all(): a comparison over `[*]`, reduced.
    fn quantifier(&self, any: bool) -> Result<Compiled, RuleError> {
        self.arity(1)?;
        let name = self.name;
        let Compiled::Bools(g) = compile(self.src, &self.args[0])? else {
            return Err(self.error(
                self.args[0].at,
                format!(
                    "{name}() takes a comparison over [*], e.g. {name}(http.request.headers[\"x\"][*] == \"v\")"
                ),
            ));
        };
        Ok(if any {
            Compiled::Bool(Box::new(move |r| g(r).into_iter().any(|b| b)))
        } else {
            // all() of no elements is false: a missing header never satisfies it.
            Compiled::Bool(Box::new(move |r| {
                let results = g(r);
                !results.is_empty() && results.into_iter().all(|b| b)
            }))
        })
    }
}

/// The error for an array used where one value is needed.
fn needs_index(src: &str, node: &Node) -> RuleError {
    RuleError::at(
        src,
        node.at,
        "this is an array: pick one value with [0] or each with [*] (inside any() or all())",
    )
}

/// A predicate on one string, prepared from the operator and the literal.
fn string_test(src: &str, op: Cmp, rhs: &Node) -> Result<StrTest, RuleError> {
    let Kind::Str(lit) = &rhs.kind else {
        return Err(RuleError::at(
            src,
            rhs.at,
            "expected a string to compare a String with",
        ));
    };
    let lit = lit.clone();
    Ok(match op {
        Cmp::Eq => Box::new(move |v| v == lit),
        Cmp::Ne => Box::new(move |v| v != lit),
        Cmp::Lt => Box::new(move |v| v < lit.as_str()),
        Cmp::Le => Box::new(move |v| v <= lit.as_str()),
        Cmp::Gt => Box::new(move |v| v > lit.as_str()),
        Cmp::Ge => Box::new(move |v| v >= lit.as_str()),
        Cmp::Contains => Box::new(move |v| v.contains(lit.as_str())),
        Cmp::Matches => {
            let re = regex::RegexBuilder::new(&lit)
                .size_limit(REGEX_SIZE_LIMIT)
                .dfa_size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| {
                    RuleError::at(src, rhs.at, format!("invalid regular expression: {e}"))
                })?;
            Box::new(move |v| re.is_match(v))
        }
        Cmp::Wildcard | Cmp::StrictWildcard => {
            let pattern = text::Wildcard::new(&lit, op == Cmp::Wildcard);
            Box::new(move |v| pattern.matches(v))
        }
    })
}

fn compare(src: &str, op: Cmp, lhs: &Node, rhs: &Node) -> Result<Compiled, RuleError> {
    let lhs_c = compile(src, lhs)?;
    Ok(match lhs_c {
        Compiled::Str(f) => {
            let test = string_test(src, op, rhs)?;
            Compiled::Bool(Box::new(move |r| f(r).is_some_and(|v| test(&v))))
        }
        Compiled::Strs(f, true) => {
            let test = string_test(src, op, rhs)?;
            Compiled::Bools(Box::new(move |r| f(r).iter().map(|v| test(v)).collect()))
        }
        Compiled::Int(f) => {
            let Kind::Int(n) = rhs.kind else {
                return Err(RuleError::at(
                    src,
                    rhs.at,
                    "expected a number to compare an Integer with",
                ));
            };
            let test: fn(i64, i64) -> bool = match op {
                Cmp::Eq => |a, b| a == b,
                Cmp::Ne => |a, b| a != b,
                Cmp::Lt => |a, b| a < b,
                Cmp::Le => |a, b| a <= b,
                Cmp::Gt => |a, b| a > b,
                Cmp::Ge => |a, b| a >= b,
                _ => {
                    return Err(RuleError::at(
                        src,
                        lhs.at,
                        format!("{op:?} does not apply to an Integer"),
                    ));
                }
            };
            Compiled::Bool(Box::new(move |r| f(r).is_some_and(|v| test(v, n))))
        }
        Compiled::Ip(f) => {
            if !matches!(op, Cmp::Eq | Cmp::Ne) {
                return Err(RuleError::at(
                    src,
                    lhs.at,
                    "an IP address is compared with eq, ne or in {...} only",
                ));
            }
            let Kind::Ip(lit) = &rhs.kind else {
                return Err(RuleError::at(
                    src,
                    rhs.at,
                    "expected an IP address or CIDR to compare ip.src with",
                ));
            };
            let set =
                IpSet::from_literals([lit.as_str()]).map_err(|m| RuleError::at(src, rhs.at, m))?;
            match op {
                Cmp::Eq => Compiled::Bool(Box::new(move |r| set.contains(f(r)))),
                Cmp::Ne => Compiled::Bool(Box::new(move |r| !set.contains(f(r)))),
                _ => {
                    return Err(RuleError::at(
                        src,
                        lhs.at,
                        "an IP address is compared with eq, ne or in {...} only",
                    ));
                }
            }
        }
        Compiled::Strs(_, false) => {
            return Err(needs_index(src, lhs));
        }
        other => {
            return Err(RuleError::at(
                src,
                lhs.at,
                format!(
                    "a {} cannot be compared; use it on its own or with not",
                    other.ty()
                ),
            ));
        }
    })
}

fn membership(src: &str, lhs: &Node, items: &[Node]) -> Result<Compiled, RuleError> {
    let strings = || -> Result<HashSet<String>, RuleError> {
        items
            .iter()
            .map(|n| match &n.kind {
                Kind::Str(s) => Ok(s.clone()),
                _ => Err(RuleError::at(
                    src,
                    n.at,
                    "this set holds strings: every item must be a string",
                )),
            })
            .collect()
    };
    Ok(match compile(src, lhs)? {
        Compiled::Str(f) => {
            let set = strings()?;
            Compiled::Bool(Box::new(move |r| {
                f(r).is_some_and(|v| set.contains(v.as_ref()))
            }))
        }
        Compiled::Strs(f, true) => {
            let set = strings()?;
            Compiled::Bools(Box::new(move |r| {
                f(r).iter().map(|v| set.contains(v.as_ref())).collect()
            }))
        }
        Compiled::Int(f) => {
            let set = items
                .iter()
                .map(|n| match n.kind {
                    Kind::Int(i) => Ok(i),
                    _ => Err(RuleError::at(
                        src,
                        n.at,
                        "this set holds numbers: every item must be a number",
                    )),
                })
                .collect::<Result<HashSet<i64>, _>>()?;
            Compiled::Bool(Box::new(move |r| f(r).is_some_and(|v| set.contains(&v))))
        }
        Compiled::Ip(f) => {
            let mut literals = Vec::new();
            for n in items {
                match &n.kind {
                    Kind::Ip(s) => literals.push(s.as_str()),
                    _ => {
                        return Err(RuleError::at(
                            src,
                            n.at,
                            "this set holds IP addresses: every item must be an address or CIDR",
                        ));
                    }
                }
            }
            let set = IpSet::from_literals(literals).map_err(|m| RuleError::at(src, lhs.at, m))?;
            Compiled::Bool(Box::new(move |r| set.contains(f(r))))
        }
        Compiled::Strs(_, false) => {
            return Err(needs_index(src, lhs));
        }
        other => {
            return Err(RuleError::at(
                src,
                lhs.at,
                format!("`in` does not apply to a {}", other.ty()),
            ));
        }
    })
}
