//! Errors in rule expressions, with the position they refer to.

use std::fmt;

/// A syntax or type error: where, what was found, what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    /// Byte offset of the error in the expression.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
    /// Line (1-based) and column (1-based, in characters) of `offset`.
    pub line: usize,
    /// See `line`.
    pub column: usize,
    /// The offending line and a caret under the position.
    pub excerpt: String,
}

impl RuleError {
    /// An error at `offset` of `source` (clamped to the text, and moved back
    /// to the start of the character it falls inside).
    pub fn at(source: &str, offset: usize, message: impl Into<String>) -> RuleError {
        let offset = source.floor_char_boundary(offset.min(source.len()));
        let before = &source[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line_end = source[offset..]
            .find('\n')
            .map_or(source.len(), |i| offset + i);
        let column = source[line_start..offset].chars().count() + 1;
        // At most 40 characters either side of the position.
        let line_text: Vec<char> = source[line_start..line_end].chars().collect();
        let from = (column - 1).saturating_sub(40);
        let to = (column - 1 + 40).min(line_text.len());
        let text: String = line_text[from..to].iter().collect();
        let (lead, tail) = (
            if from > 0 { "…" } else { "" },
            if to < line_text.len() { "…" } else { "" },
        );
        let caret = column - 1 - from + usize::from(from > 0);
        let excerpt = format!("{lead}{text}{tail}\n{}^", " ".repeat(caret));
        RuleError {
            offset,
            message: message.into(),
            line,
            column,
            excerpt,
        }
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}\n{}",
            self.line, self.column, self.message, self.excerpt
        )
    }
}

impl std::error::Error for RuleError {}
