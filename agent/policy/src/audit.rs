//! A policy's `[audit]` table: how much of its server's calls the history keeps, over the
//! host's defaults (the agent config's `[audit]`, see [`crate::history`]).
//!
//! ```toml
//! [audit]
//! arguments = true           # each call's arguments, redacted
//! result_bytes = 4096        # of each result, redacted; 0: none
//! [audit.tools]
//! read_text_file = "off"     # nothing of its calls' arguments or results
//! get_token = { result_bytes = 0 }
//! ```

use std::collections::BTreeMap;

use toml_edit::{Item, Value};

use crate::check::{Checker, Span, describe, entry, join};
use crate::values::is_tool_name;
use crate::values::parse_size;

/// The largest `result_bytes` (the history keeps each call's excerpt in its row).
pub const MAX_RESULT_BYTES: u64 = 1 << 20;

/// `[audit]`: values left `None` come from the host's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Audit {
    /// `arguments`: keep each call's arguments.
    pub arguments: Option<bool>,
    /// `result_bytes`: keep this much of each result.
    pub result_bytes: Option<u64>,
    /// `[audit.tools]`: per tool.
    pub tools: BTreeMap<String, ToolAudit>,
}

/// One tool's entry in `[audit.tools]` (`"off"` is both `false` and `0`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolAudit {
    /// Keep its calls' arguments (`None`: as for every tool).
    pub arguments: Option<bool>,
    /// Keep this much of its results (`None`: as for every tool).
    pub result_bytes: Option<u64>,
}

impl Checker<'_> {
    /// The `[audit]` table.
    pub(super) fn audit(&mut self, item: &Item, span: &Span) -> Audit {
        let mut audit = Audit::default();
        let Some(table) = self.table(item, span, "audit", &["arguments", "result_bytes", "tools"])
        else {
            return audit;
        };
        if let Some(v) = table.get("arguments") {
            let (_, s) = entry(table, "arguments", span);
            audit.arguments = self.boolean(v, &s, "audit.arguments");
        }
        if let Some(v) = table.get("result_bytes") {
            let (_, s) = entry(table, "result_bytes", span);
            audit.result_bytes = self.result_bytes(v, &s, "audit.result_bytes");
        }
        if let Some(v) = table.get("tools") {
            let (_, s) = entry(table, "tools", span);
            audit.tools = self.audit_tools(v, &s);
        }
        audit
    }

    fn audit_tools(&mut self, item: &Item, span: &Span) -> BTreeMap<String, ToolAudit> {
        let mut out = BTreeMap::new();
        let Some(table) = item.as_table_like() else {
            self.error(
                span,
                "audit.tools",
                format!(
                    "expected a table of TOOL = \"off\" or {{ arguments, result_bytes }}, found {}",
                    describe(item)
                ),
            );
            return out;
        };
        for (tool, value) in table.iter() {
            let (key_span, value_span) = entry(table, tool, span);
            let path = join("audit.tools", tool);
            if !is_tool_name(tool) {
                self.error(&key_span, &path, format!("{tool:?} is not a tool name"));
                continue;
            }
            let keep = match value.as_str() {
                Some("off") => ToolAudit {
                    arguments: Some(false),
                    result_bytes: Some(0),
                },
                Some(other) => {
                    self.error(
                        &value_span,
                        &path,
                        format!(
                            "{other:?}: expected \"off\" or a table {{ arguments, result_bytes }}"
                        ),
                    );
                    continue;
                }
                None => {
                    let Some(t) =
                        self.table(value, &value_span, &path, &["arguments", "result_bytes"])
                    else {
                        continue;
                    };
                    let mut keep = ToolAudit::default();
                    if let Some(v) = t.get("arguments") {
                        let (_, s) = entry(t, "arguments", &value_span);
                        keep.arguments = self.boolean(v, &s, &join(&path, "arguments"));
                    }
                    if let Some(v) = t.get("result_bytes") {
                        let (_, s) = entry(t, "result_bytes", &value_span);
                        keep.result_bytes = self.result_bytes(v, &s, &join(&path, "result_bytes"));
                    }
                    keep
                }
            };
            out.insert(tool.to_string(), keep);
        }
        out
    }

    /// A byte count: an integer, or a size such as `"4K"`; at most [`MAX_RESULT_BYTES`].
    fn result_bytes(&mut self, item: &Item, span: &Span, path: &str) -> Option<u64> {
        let n = match item.as_value() {
            Some(Value::Integer(n)) => {
                u64::try_from(*n.value()).map_err(|_| "must not be negative".to_string())
            }
            Some(Value::String(t)) => parse_size(t.value()),
            _ => Err(format!(
                "expected a number of bytes (or a size such as \"4K\"), found {}",
                describe(item)
            )),
        };
        match n {
            Ok(n) if n <= MAX_RESULT_BYTES => Some(n),
            Ok(n) => {
                self.error(span, path, format!("{n} is more than {MAX_RESULT_BYTES}"));
                None
            }
            Err(e) => {
                self.error(span, path, e);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::parse;

    fn problems(text: &str) -> Vec<String> {
        match parse(text, None) {
            Ok(_) => vec![],
            Err(e) => e
                .problems
                .iter()
                .map(|p| format!("{}:{} {}: {}", p.line, p.col, p.key, p.message))
                .collect(),
        }
    }

    #[test]
    fn audit_keys_parse_into_the_model() {
        let p = parse(
            "name = \"x\"\n[audit]\narguments = false\nresult_bytes = \"8K\"\n\
             [audit.tools]\nread_file = \"off\"\nget = { result_bytes = 0 }\n",
            None,
        )
        .expect("valid");
        assert_eq!(p.audit.arguments, Some(false));
        assert_eq!(p.audit.result_bytes, Some(8192));
        let off = &p.audit.tools["read_file"];
        assert_eq!((off.arguments, off.result_bytes), (Some(false), Some(0)));
        let get = &p.audit.tools["get"];
        assert_eq!((get.arguments, get.result_bytes), (None, Some(0)));
    }

    #[test]
    fn audit_errors_name_line_and_key() {
        for (text, want) in [
            (
                "[audit]\nargument = true\n",
                "3:1 audit.argument: unknown key",
            ),
            (
                "[audit]\narguments = 1\n",
                "3:13 audit.arguments: expected true or false",
            ),
            (
                "[audit]\nresult_bytes = -1\n",
                "3:16 audit.result_bytes: must not be negative",
            ),
            (
                "[audit]\nresult_bytes = \"2G\"\n",
                "3:16 audit.result_bytes: 2147483648 is more",
            ),
            (
                "[audit.tools]\nread = \"on\"\n",
                "3:8 audit.tools.read: \"on\": expected \"off\"",
            ),
            (
                "[audit.tools]\nread = { result = 1 }\n",
                "3:10 audit.tools.read.result: unknown key",
            ),
            ("[audit]\ntools = 3\n", "3:9 audit.tools: expected a table"),
        ] {
            let got = problems(&format!("name = \"x\"\n{text}"));
            assert!(
                got.iter().any(|g| g.starts_with(want)),
                "{text:?}: want {want:?}, got {got:?}"
            );
        }
    }
}
