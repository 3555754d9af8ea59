//! The checker's core: a walker over the span-preserving TOML tree that collects every problem
//! with its line, column and key, and the typed reads the section checks share. The top level is
//! in `document`; each section's checks live with it (`sections`, `secrets`, `pins`, `mcp`,
//! `clients`, `command`, `unix`).

use std::ops::Range;

use mcp_guard_secrets::RulesSource;
use toml_edit::{Item, TableLike, Value};

use crate::error::Problem;

/// 1-based line and character column of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// A byte range in the policy text, when the TOML tree kept one.
pub(crate) type Span = Option<Range<usize>>;

/// A checked `[secrets] rules` file and the rule ids and tags it makes (for
/// `[mcp.secret_shapes] ignore`): the checker keeps it, `secret_rules` fills it.
#[derive(Clone, Debug)]
pub(crate) struct CheckedRules {
    pub(crate) source: RulesSource,
    pub(crate) names: Vec<String>,
}

/// Walks the TOML tree, collecting every problem and building the policy as it goes.
pub(crate) struct Checker<'t> {
    pub(crate) text: &'t str,
    pub(crate) problems: Vec<Problem>,
    /// `[secrets] rules`, once read (`[mcp.secret_shapes] ignore` names its rules).
    pub(crate) secret_rules: Option<CheckedRules>,
    /// `[secrets] rules` names a file with problems (already reported): any name may be ignored.
    pub(crate) secret_rules_failed: bool,
}

impl Checker<'_> {
    pub(crate) fn error(&mut self, span: &Span, key: &str, message: impl Into<String>) {
        let (line, col) = span
            .as_ref()
            .map_or((1, 1), |s| line_col(self.text, s.start));
        self.problems.push(Problem {
            line,
            col,
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// Reports unknown keys; returns the table when `item` is one.
    pub(crate) fn table<'d>(
        &mut self,
        item: &'d Item,
        span: &Span,
        path: &str,
        known: &[&str],
    ) -> Option<&'d dyn TableLike> {
        let Some(table) = item.as_table_like() else {
            self.error(
                span,
                path,
                format!("expected a table, found {}", describe(item)),
            );
            return None;
        };
        for (key, _) in table.iter() {
            if !known.contains(&key) {
                let (key_span, _) = entry(table, key, span);
                self.error(
                    &key_span,
                    &join(path, key),
                    format!("unknown key (expected one of: {})", known.join(", ")),
                );
            }
        }
        Some(table)
    }

    pub(crate) fn string<'d>(
        &mut self,
        item: &'d Item,
        span: &Span,
        path: &str,
    ) -> Option<&'d str> {
        let s = item.as_str();
        if s.is_none() {
            self.error(
                span,
                path,
                format!("expected a string, found {}", describe(item)),
            );
        }
        s
    }

    pub(crate) fn boolean(&mut self, item: &Item, span: &Span, path: &str) -> Option<bool> {
        let b = item.as_bool();
        if b.is_none() {
            self.error(
                span,
                path,
                format!("expected true or false, found {}", describe(item)),
            );
        }
        b
    }

    /// An array of strings: each string with its span and key path (`key[i]`).
    pub(crate) fn strings<'d>(
        &mut self,
        item: &'d Item,
        span: &Span,
        path: &str,
    ) -> Vec<(&'d str, Span, String)> {
        let Some(array) = item.as_array() else {
            self.error(
                span,
                path,
                format!("expected an array of strings, found {}", describe(item)),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, value) in array.iter().enumerate() {
            let element_path = format!("{path}[{i}]");
            let element_span = value.span().or_else(|| span.clone());
            match value.as_str() {
                Some(s) => out.push((s, element_span, element_path)),
                None => self.error(
                    &element_span,
                    &element_path,
                    format!("expected a string, found {}", describe_value(value)),
                ),
            }
        }
        out
    }
}

/// The spans of `key` and of its value in `table`, falling back to the key's, then the parent's.
pub(crate) fn entry(table: &dyn TableLike, key: &str, parent: &Span) -> (Span, Span) {
    match table.get_key_value(key) {
        Some((k, item)) => {
            let key_span = k.span().or_else(|| item.span()).or_else(|| parent.clone());
            let value_span = item.span().or_else(|| key_span.clone());
            (key_span, value_span)
        }
        None => (parent.clone(), parent.clone()),
    }
}

/// `parent.key`, quoting keys that are not bare TOML keys.
pub(crate) fn join(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

pub(crate) fn describe(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Value(v) => describe_value(v),
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
    }
}

pub(crate) fn describe_value(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::InlineTable(_) => "a table",
    }
}
