//! One JSON line, written field by field in a log's own order, only the fields
//! selected. Names are the log's constants; every value goes through
//! serde_json, so that what a client sent (quotes, CR and LF, control
//! characters, invalid UTF-8 made lossy) stays inside its string.

use std::borrow::Cow;

use serde::Serialize;

/// The longest value of client origin written; longer ones are cut (at a
/// character boundary) and end with `…`.
pub const MAX_VALUE: usize = 4096;

/// The fields a log writes: a bit per field of its list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldMask(u64);

impl FieldMask {
    /// The fields named in `selected` (empty: all) out of `names`; an unknown
    /// name is an error that lists the known ones.
    pub fn select(names: &[&str], selected: &[String]) -> Result<FieldMask, String> {
        debug_assert!(names.len() <= 64);
        if selected.is_empty() {
            return Ok(FieldMask(u64::MAX));
        }
        let mut mask = 0u64;
        for s in selected {
            let Some(i) = names.iter().position(|n| n == s) else {
                return Err(format!(
                    "unknown field {s:?}; the fields are {}",
                    names.join(", ")
                ));
            };
            mask |= 1 << i;
        }
        Ok(FieldMask(mask))
    }
}

/// A line being written: fields must be given in the order of the log's list.
pub struct Line {
    buf: Vec<u8>,
    names: &'static [&'static str],
    mask: FieldMask,
    next: usize,
}

impl Line {
    /// An empty object of a log with these field names and selection.
    pub fn new(names: &'static [&'static str], mask: FieldMask) -> Line {
        let mut buf = Vec::with_capacity(768);
        buf.push(b'{');
        Line {
            buf,
            names,
            mask,
            next: 0,
        }
    }

    /// Writes field `name` (the next of the list, skipping none) if selected.
    pub fn field<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) {
        let Some(i) = self.names[self.next..]
            .iter()
            .position(|n| *n == name)
            .map(|i| i + self.next)
        else {
            debug_assert!(false, "field {name} out of order");
            return;
        };
        self.next = i + 1;
        if self.mask.0 & (1 << i) == 0 {
            return;
        }
        if self.buf.len() > 1 {
            self.buf.push(b',');
        }
        self.buf.push(b'"');
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b"\":");
        if serde_json::to_writer(&mut self.buf, value).is_err() {
            self.buf.extend_from_slice(b"null");
        }
    }

    /// The line, `\n` included.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(b"}\n");
        self.buf
    }
}

/// Bytes of client origin as text: invalid UTF-8 replaced, cut at [`MAX_VALUE`].
pub fn text(bytes: &[u8]) -> Cow<'_, str> {
    match String::from_utf8_lossy(bytes) {
        Cow::Borrowed(s) => cut(s),
        Cow::Owned(s) => Cow::Owned(cut(&s).into_owned()),
    }
}

/// `s`, cut at [`MAX_VALUE`] bytes (on a character boundary) with `…` added.
pub fn cut(s: &str) -> Cow<'_, str> {
    if s.len() <= MAX_VALUE {
        return Cow::Borrowed(s);
    }
    let mut end = MAX_VALUE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &s[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &[&str] = &["A", "B", "C"];

    #[test]
    fn only_selected_fields_are_written_and_values_are_escaped() {
        let mask = FieldMask::select(NAMES, &["A".into(), "C".into()]).unwrap();
        let mut line = Line::new(NAMES, mask);
        line.field("A", "x\"\r\n{\"forged\":1}\u{0}");
        line.field("B", &1);
        line.field("C", &text(b"\xff\xfeok"));
        let line = line.finish();
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["A"], "x\"\r\n{\"forged\":1}\u{0}");
        assert!(v.get("B").is_none());
        assert_eq!(v["C"], "\u{fffd}\u{fffd}ok");
        assert!(FieldMask::select(NAMES, &["D".into()]).is_err());
    }

    #[test]
    fn long_values_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_VALUE);
        let cut = cut(&long);
        assert!(cut.len() <= MAX_VALUE + "…".len());
        assert!(cut.ends_with('…'));
    }
}
