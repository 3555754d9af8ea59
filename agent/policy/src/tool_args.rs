//! `[tools.args.<tool>]`: per-tool argument rules (regex, enum, path prefixes, maximum length),
//! as the model has them and as the checker reads them. `mcp::args` in the binary enforces them.

use std::collections::BTreeMap;

use toml_edit::{Item, Value};

use crate::check::{Checker, Span, describe, describe_value, entry, join};
use crate::values::{has_dot_dot, is_tool_name};

/// One per-tool argument rule (`[tools.args.<tool>] <arg> = { ... }`), one check each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgRule {
    /// The top-level argument name.
    pub arg: String,
    /// The check.
    pub check: ArgCheck,
}

/// A check on one argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgCheck {
    /// `regex = "..."`: the string must match in full (validated at load).
    Regex(String),
    /// `enum = [...]`: the value must be one of these (strings, numbers, booleans).
    Enum(Vec<serde_json::Value>),
    /// `path_prefix = ["/dir", ...]`: an absolute path lying under one of these.
    PathPrefix(Vec<String>),
    /// `max_length = N`: at most N characters (or array elements).
    MaxLength(usize),
}

impl Checker<'_> {
    /// `[tools.args]`: tool → argument → checks.
    pub(super) fn tool_args(&mut self, item: &Item, span: &Span) -> BTreeMap<String, Vec<ArgRule>> {
        let mut out = BTreeMap::new();
        let Some(table) = item.as_table_like() else {
            self.error(
                span,
                "tools.args",
                format!(
                    "expected a table of [tools.args.TOOL], found {}",
                    describe(item)
                ),
            );
            return out;
        };
        for (tool, value) in table.iter() {
            let (key_span, value_span) = entry(table, tool, span);
            let path = join("tools.args", tool);
            if !is_tool_name(tool) {
                self.error(&key_span, &path, format!("{tool:?} is not a tool name"));
                continue;
            }
            let Some(args) = value.as_table_like() else {
                self.error(
                    &value_span,
                    &path,
                    format!(
                        "expected a table of argument = {{ regex, enum, path_prefix, max_length }}, found {}",
                        describe(value)
                    ),
                );
                continue;
            };
            let mut rules = Vec::new();
            for (arg, checks) in args.iter() {
                let (_, c_span) = entry(args, arg, &value_span);
                let c_path = join(&path, arg);
                rules.extend(self.arg_checks(arg, checks, &c_span, &c_path));
            }
            out.insert(tool.to_string(), rules);
        }
        out
    }

    fn arg_checks(&mut self, arg: &str, item: &Item, span: &Span, path: &str) -> Vec<ArgRule> {
        const KEYS: &[&str] = &["regex", "enum", "path_prefix", "max_length"];
        let mut rules = Vec::new();
        let Some(table) = self.table(item, span, path, KEYS) else {
            return rules;
        };
        if table.iter().next().is_none() {
            self.error(
                span,
                path,
                format!("no check given (one or more of: {})", KEYS.join(", ")),
            );
        }
        let mut push = |check| {
            rules.push(ArgRule {
                arg: arg.to_string(),
                check,
            });
        };
        if let Some(v) = table.get("regex") {
            let (_, s) = entry(table, "regex", span);
            let key = join(path, "regex");
            if let Some(re) = self.string(v, &s, &key) {
                // The argument interceptor (mcp/args.rs) anchors it the same way.
                match regex::Regex::new(&format!("^(?:{re})$")) {
                    Ok(_) => push(ArgCheck::Regex(re.to_string())),
                    Err(e) => self.error(&s, &key, format!("not a valid regex: {e}")),
                }
            }
        }
        if let Some(v) = table.get("enum") {
            let (_, s) = entry(table, "enum", span);
            let key = join(path, "enum");
            match v.as_array() {
                Some(a) if !a.is_empty() => {
                    let mut values = Vec::new();
                    for (i, x) in a.iter().enumerate() {
                        match toml_to_json(x) {
                            Some(j) => values.push(j),
                            None => self.error(
                                &x.span().or_else(|| s.clone()),
                                &format!("{key}[{i}]"),
                                format!(
                                    "expected a string, number or boolean, found {}",
                                    describe_value(x)
                                ),
                            ),
                        }
                    }
                    push(ArgCheck::Enum(values));
                }
                _ => self.error(
                    &s,
                    &key,
                    format!(
                        "expected a non-empty array of values, found {}",
                        describe(v)
                    ),
                ),
            }
        }
        if let Some(v) = table.get("path_prefix") {
            let (_, s) = entry(table, "path_prefix", span);
            let key = join(path, "path_prefix");
            let mut prefixes = Vec::new();
            let given = self.strings(v, &s, &key);
            let any_given = !given.is_empty();
            for (p, p_span, p_path) in given {
                if p.starts_with('/') && !has_dot_dot(p) {
                    prefixes.push(p.to_string());
                } else {
                    self.error(
                        &p_span,
                        &p_path,
                        format!("{p:?} must be an absolute path without '..'"),
                    );
                }
            }
            if !any_given {
                self.error(&s, &key, "expected at least one absolute directory");
            } else if !prefixes.is_empty() {
                push(ArgCheck::PathPrefix(prefixes));
            }
        }
        if let Some(v) = table.get("max_length") {
            let (_, s) = entry(table, "max_length", span);
            match v.as_integer().and_then(|n| usize::try_from(n).ok()) {
                Some(n) if n > 0 => push(ArgCheck::MaxLength(n)),
                _ => self.error(
                    &s,
                    &join(path, "max_length"),
                    format!("expected a positive whole number, found {}", describe(v)),
                ),
            }
        }
        rules
    }
}

/// A TOML scalar as JSON (for `enum` values); `None` for tables, arrays and dates.
fn toml_to_json(v: &Value) -> Option<serde_json::Value> {
    match v {
        Value::String(s) => Some(serde_json::Value::from(s.value().as_str())),
        Value::Integer(n) => Some(serde_json::Value::from(*n.value())),
        Value::Float(f) => serde_json::Number::from_f64(*f.value()).map(serde_json::Value::Number),
        Value::Boolean(b) => Some(serde_json::Value::from(*b.value())),
        _ => None,
    }
}
