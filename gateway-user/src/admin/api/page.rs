//! Lists the reference way: `page` (from 1) and `per_page` on every list, a
//! stable order, and `result_info` {page, per_page, count, total_count,
//! total_pages}; past the last page, `result` is empty (which is how the
//! official SDK knows to stop).

use serde_json::{Value, json};

use super::{ApiError, Call, Reply};

/// A list's default and largest page size.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Without `per_page`.
    pub default: usize,
    /// The largest `per_page` accepted.
    pub max: usize,
}

/// Custom hostnames, zones and client certificates: 20 by default, 50 at most.
pub const STANDARD: Limits = Limits {
    default: 20,
    max: 50,
};

/// Small lists (uploaded CAs: five at most; rules): one page holds them all.
pub const WHOLE: Limits = Limits {
    default: 1000,
    max: 1000,
};

/// Which page of a list a call asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paging {
    /// The page, from 1.
    pub page: usize,
    /// Items per page.
    pub per_page: usize,
}

impl Paging {
    /// The call's `page` and `per_page` (whole numbers; the SDK may send `2.0`),
    /// or a 400 that says what is wrong.
    pub fn of(call: &Call, limits: Limits) -> Result<Paging, ApiError> {
        let number = |name: &str, default: usize, max: usize| -> Result<usize, ApiError> {
            let Some(text) = call.query.get(name) else {
                return Ok(default);
            };
            text.parse::<f64>()
                .ok()
                .filter(|n| n.fract() == 0.0 && *n >= 1.0 && *n <= max as f64)
                .map(|n| n as usize)
                .ok_or_else(|| {
                    ApiError::invalid(format!(
                        "{name}={text:?}: give a whole number from 1 to {max}"
                    ))
                })
        };
        Ok(Paging {
            page: number("page", 1, 1_000_000_000)?,
            per_page: number("per_page", limits.default, limits.max)?,
        })
    }

    /// The items of this page, out of `total` in `items` (already in the list's order).
    pub fn take<T>(&self, items: impl Iterator<Item = T>) -> Vec<T> {
        let skip = (self.page - 1).saturating_mul(self.per_page);
        items.skip(skip).take(self.per_page).collect()
    }

    /// The answer: this page's `result` and its `result_info`.
    pub fn reply(&self, result: Vec<Value>, total: usize) -> Reply {
        let info = json!({
            "page": self.page,
            "per_page": self.per_page,
            "count": result.len(),
            "total_count": total,
            "total_pages": total.div_ceil(self.per_page),
        });
        Reply {
            result: Value::Array(result),
            result_info: Some(info),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(query: &[(&str, &str)]) -> Call {
        Call {
            method: http::Method::GET,
            path: Vec::new(),
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: Default::default(),
        }
    }

    #[test]
    fn pages_split_a_list_and_end_with_an_empty_one() {
        let p = Paging::of(&call(&[("page", "3"), ("per_page", "2.0")]), STANDARD).unwrap();
        assert_eq!(
            p,
            Paging {
                page: 3,
                per_page: 2
            }
        );
        assert_eq!(p.take(0..5), [4]);
        let past = Paging { page: 4, ..p };
        assert!(past.take(0..5).is_empty());
        let reply = past.reply(Vec::new(), 5);
        let info = reply.result_info.unwrap();
        assert_eq!(info["total_pages"], 3);
        assert_eq!(info["count"], 0);
        assert_eq!(Paging::of(&call(&[]), STANDARD).unwrap().per_page, 20);
    }

    #[test]
    fn bad_page_numbers_are_refused_with_the_range() {
        for (k, v) in [
            ("page", "0"),
            ("page", "x"),
            ("per_page", "51"),
            ("per_page", "1.5"),
        ] {
            let e = Paging::of(&call(&[(k, v)]), STANDARD).unwrap_err();
            assert!(
                e.message.contains(k) && e.message.contains("whole number"),
                "{}",
                e.message
            );
        }
    }
}
