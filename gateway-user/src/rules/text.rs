//! String helpers of the language: `url_decode` and wildcard patterns.

/// Percent-decodes a string (and `+` as a space); invalid escapes stay as they are.
pub fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A wildcard pattern: `*` matches any run of characters, the rest literally,
/// the whole value (not a substring).
pub struct Wildcard {
    parts: Vec<String>,
    case_insensitive: bool,
}

impl Wildcard {
    /// Prepares `pattern`; `case_insensitive` for `wildcard`, not for `strict wildcard`.
    pub fn new(pattern: &str, case_insensitive: bool) -> Wildcard {
        let fold = |s: &str| {
            if case_insensitive {
                s.to_lowercase()
            } else {
                s.to_string()
            }
        };
        Wildcard {
            parts: pattern.split('*').map(fold).collect(),
            case_insensitive,
        }
    }

    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        let folded;
        let v = if self.case_insensitive {
            folded = value.to_lowercase();
            folded.as_str()
        } else {
            value
        };
        let (first, rest) = self
            .parts
            .split_first()
            .expect("split yields one part at least");
        let Some(mut v) = v.strip_prefix(first.as_str()) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return v.is_empty();
        };
        for part in middle {
            match v.find(part.as_str()) {
                Some(i) => v = &v[i + part.len()..],
                None => return false,
            }
        }
        v.len() >= last.len() && v.ends_with(last.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        let w = Wildcard::new("*.Example.com", true);
        assert!(w.matches("api.example.com"));
        assert!(w.matches("A.B.EXAMPLE.COM"));
        assert!(!w.matches("example.com"));
        assert!(!w.matches("api.example.com.evil"));
        let s = Wildcard::new("/admin*", false);
        assert!(s.matches("/admin") && s.matches("/admin/x") && !s.matches("/Admin"));
        assert!(Wildcard::new("a*b*c", true).matches("aXbYc"));
        assert!(!Wildcard::new("a*b*c", true).matches("aXcYb"));
        assert!(!Wildcard::new("ab*ba", true).matches("aba"));
        assert!(Wildcard::new("exact", false).matches("exact"));
    }

    #[test]
    fn url_decoding() {
        assert_eq!(url_decode("%2Fadmin%20x+y"), "/admin x y");
        assert_eq!(url_decode("100%"), "100%");
        assert_eq!(url_decode("%zz"), "%zz");
    }
}
