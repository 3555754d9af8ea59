//! Argument checks before a `tools/call` reaches the server: validation against the tool's own
//! `inputSchema` (as listed by the server, which the pin guard keeps unchanged) and per-tool rules.
//!
//! The schema validator is focused: `type`, `required`, `enum`, `const`, `properties`,
//! `additionalProperties`, `items`, `minLength`/`maxLength`, `minimum`/`maximum`, `pattern`,
//! `anyOf`/`oneOf`/`allOf`. Keywords it does not know are ignored (a schema may use more).

use std::collections::{BTreeMap, HashMap};

use regex::Regex;
use serde_json::Value;

use super::{
    frame::{map_get, member},
    interceptors::{Ctx, Denial, Interceptor, MsgKind, Peeked, Verdict},
};

/// One check on one argument.
#[derive(Clone, Debug, PartialEq)]
pub enum ArgCheck {
    /// The (string) value must match this regex in full.
    Regex(String),
    /// The value must be one of these.
    Enum(Vec<Value>),
    /// The (string) value, a path, must lie under one of these directories once normalized
    /// (`..` resolved lexically; relative paths are refused).
    PathPrefix(Vec<String>),
    /// The string value (or array) is at most this long (characters / elements).
    MaxLen(usize),
}

/// A rule: which argument (a top-level name) and the check.
#[derive(Clone, Debug, PartialEq)]
pub struct ArgRule {
    /// The argument name.
    pub arg: String,
    /// The check.
    pub check: ArgCheck,
}

/// Argument-check settings (plain data).
#[derive(Clone, Debug, PartialEq)]
pub struct ArgConfig {
    /// Validate arguments against the tool's listed `inputSchema`.
    pub validate_schema: bool,
    /// Per-tool rules.
    pub rules: BTreeMap<String, Vec<ArgRule>>,
}

impl Default for ArgConfig {
    fn default() -> Self {
        Self {
            validate_schema: true,
            rules: BTreeMap::new(),
        }
    }
}

/// Validates `value` against `schema`; returns the first violation as `path: what`.
pub fn validate(
    schema: &Value,
    value: &Value,
    path: &str,
    re_cache: &mut ReCache,
) -> Result<(), String> {
    check_schema(schema, value, &Path::Root(path), re_cache, false)
}

/// Where a value sits inside the arguments, rendered only when a violation is reported (the
/// happy path of a call builds no path strings).
enum Path<'a> {
    Root(&'a str),
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Root(r) => f.write_str(r),
            Path::Key(p, k) => write!(f, "{p}.{k}"),
            Path::Index(p, i) => write!(f, "{p}[{i}]"),
        }
    }
}

/// The violation message, built only when someone will read it: `quiet` checks (the branches
/// of `anyOf`/`oneOf`, which may fail on valid input) get an empty, unallocated string.
fn violation(quiet: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    Err(if quiet { String::new() } else { msg() })
}

fn check_schema(
    schema: &Value,
    value: &Value,
    path: &Path<'_>,
    re_cache: &mut ReCache,
    quiet: bool,
) -> Result<(), String> {
    let Some(s) = schema.as_object() else {
        // `true`/absent accepts everything; `false` nothing.
        return if schema == &Value::Bool(false) {
            violation(quiet, || format!("{path}: no value is allowed here"))
        } else {
            Ok(())
        };
    };
    if let Some(t) = map_get(s, "type") {
        let ok = match t {
            Value::String(t) => type_ok(t, value),
            Value::Array(ts) => ts
                .iter()
                .filter_map(Value::as_str)
                .any(|t| type_ok(t, value)),
            _ => true,
        };
        if !ok {
            return violation(quiet, || {
                format!("{path}: expected type {t}, got {}", type_name(value))
            });
        }
    }
    if let Some(Value::Array(e)) = map_get(s, "enum")
        && !e.contains(value)
    {
        return violation(quiet, || {
            format!("{path}: must be one of {}", Value::Array(e.clone()))
        });
    }
    if let Some(c) = map_get(s, "const")
        && c != value
    {
        return violation(quiet, || format!("{path}: must be {c}"));
    }
    match value {
        Value::Object(obj) => {
            if let Some(Value::Array(req)) = map_get(s, "required") {
                for r in req.iter().filter_map(Value::as_str) {
                    if map_get(obj, r).is_none() {
                        return violation(quiet, || {
                            format!("{path}: missing required property {r:?}")
                        });
                    }
                }
            }
            let props = map_get(s, "properties").and_then(Value::as_object);
            for (k, v) in obj {
                let sub = Path::Key(path, k);
                match props.and_then(|p| map_get(p, k)) {
                    Some(ps) => check_schema(ps, v, &sub, re_cache, quiet)?,
                    None => match map_get(s, "additionalProperties") {
                        Some(Value::Bool(false)) => {
                            return violation(quiet, || {
                                format!("{path}: unexpected property {k:?}")
                            });
                        }
                        Some(ap @ Value::Object(_)) => check_schema(ap, v, &sub, re_cache, quiet)?,
                        _ => {}
                    },
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = map_get(s, "items") {
                for (i, v) in items.iter().enumerate() {
                    check_schema(is, v, &Path::Index(path, i), re_cache, quiet)?;
                }
            }
            check_len(s, || items.len(), "minItems", "maxItems", path, quiet)?;
        }
        Value::String(st) => {
            check_len(
                s,
                || st.chars().count(),
                "minLength",
                "maxLength",
                path,
                quiet,
            )?;
            if let Some(Value::String(p)) = map_get(s, "pattern") {
                match re_cache.get(p) {
                    Some(re) if !re.is_match(st) => {
                        return violation(quiet, || {
                            format!("{path}: does not match pattern {p:?}")
                        });
                    }
                    _ => {}
                }
            }
        }
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                if let Some(min) = map_get(s, "minimum").and_then(Value::as_f64)
                    && x < min
                {
                    return violation(quiet, || format!("{path}: must be >= {min}"));
                }
                if let Some(max) = map_get(s, "maximum").and_then(Value::as_f64)
                    && x > max
                {
                    return violation(quiet, || format!("{path}: must be <= {max}"));
                }
            }
        }
        _ => {}
    }
    if let Some(Value::Array(all)) = map_get(s, "allOf") {
        for sub in all {
            check_schema(sub, value, path, re_cache, quiet)?;
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(any)) = map_get(s, key) {
            let n = any
                .iter()
                .filter(|sub| check_schema(sub, value, path, re_cache, true).is_ok())
                .count();
            if n == 0 || (key == "oneOf" && n > 1) {
                return violation(quiet, || format!("{path}: does not match {key}"));
            }
        }
    }
    Ok(())
}

/// `lo`/`hi` bounds on a length, which is counted only when the schema has a bound.
fn check_len(
    s: &serde_json::Map<String, Value>,
    len: impl FnOnce() -> usize,
    lo: &str,
    hi: &str,
    path: &Path<'_>,
    quiet: bool,
) -> Result<(), String> {
    let (min, max) = (
        map_get(s, lo).and_then(Value::as_u64),
        map_get(s, hi).and_then(Value::as_u64),
    );
    if min.is_none() && max.is_none() {
        return Ok(());
    }
    let len = len() as u64;
    if let Some(min) = min
        && len < min
    {
        return violation(quiet, || format!("{path}: shorter than {min}"));
    }
    if let Some(max) = max
        && len > max
    {
        return violation(quiet, || format!("{path}: longer than {max}"));
    }
    Ok(())
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "number" => v.is_number(),
        "integer" => {
            v.as_i64().is_some()
                || v.as_u64().is_some()
                || v.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => true,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Compiled `pattern`s, by source (a pattern that does not compile is ignored).
#[derive(Default)]
pub struct ReCache(HashMap<String, Option<Regex>>);

impl ReCache {
    fn get(&mut self, p: &str) -> Option<&Regex> {
        // Look up before inserting: `entry` would need an owned key (an allocation) every time.
        if !self.0.contains_key(p) {
            self.0.insert(p.to_string(), Regex::new(p).ok());
        }
        self.0.get(p).and_then(Option::as_ref)
    }
}

/// Lexically normalizes an absolute path (`.`, `..`, repeated `/`); `None` for relative paths.
pub fn normalize(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

fn under(path: &str, prefix: &str) -> bool {
    let Some(prefix) = normalize(prefix) else {
        return false;
    };
    path == prefix || prefix == "/" || path.starts_with(&format!("{prefix}/"))
}

/// `argument "name"` in a refusal, rendered only when there is one.
struct Arg<'a>(&'a str);

impl std::fmt::Display for Arg<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "argument {:?}", self.0)
    }
}

/// The argument-check interceptor.
pub struct ArgGuard {
    config: ArgConfig,
    rules: HashMap<String, Vec<(String, CompiledCheck)>>,
    schemas: HashMap<String, Value>,
    re_cache: ReCache,
}

enum CompiledCheck {
    Regex(Option<Regex>, String),
    Other(ArgCheck),
}

impl ArgGuard {
    /// Compiles the rules (a regex that does not compile refuses every call of its tool).
    pub fn new(config: ArgConfig) -> Self {
        let mut rules = HashMap::new();
        for (tool, rs) in &config.rules {
            let compiled = rs
                .iter()
                .map(|r| {
                    let c = match &r.check {
                        ArgCheck::Regex(p) => {
                            CompiledCheck::Regex(Regex::new(&format!("^(?:{p})$")).ok(), p.clone())
                        }
                        other => CompiledCheck::Other(other.clone()),
                    };
                    (r.arg.clone(), c)
                })
                .collect();
            rules.insert(tool.clone(), compiled);
        }
        Self {
            config,
            rules,
            schemas: HashMap::new(),
            re_cache: ReCache::default(),
        }
    }

    fn check(&mut self, tool: &str, args: &Value) -> Result<(), String> {
        if self.config.validate_schema
            && let Some(schema) = self.schemas.get(tool)
        {
            validate(schema, args, "arguments", &mut self.re_cache)?;
        }
        let Some(rules) = self.rules.get(tool) else {
            return Ok(());
        };
        for (arg, check) in rules {
            let Some(v) = member(args, arg) else { continue };
            let what = Arg(arg);
            match check {
                CompiledCheck::Regex(re, p) => {
                    let ok = re
                        .as_ref()
                        .is_some_and(|re| v.as_str().is_some_and(|s| re.is_match(s)));
                    if !ok {
                        return Err(format!("{what} does not match {p:?}"));
                    }
                }
                CompiledCheck::Other(ArgCheck::Enum(allowed)) => {
                    if !allowed.contains(v) {
                        return Err(format!(
                            "{what} must be one of {}",
                            Value::Array(allowed.clone())
                        ));
                    }
                }
                CompiledCheck::Other(ArgCheck::PathPrefix(prefixes)) => {
                    let norm = v.as_str().and_then(normalize);
                    let ok = norm
                        .as_deref()
                        .is_some_and(|p| prefixes.iter().any(|pre| under(p, pre)));
                    if !ok {
                        return Err(format!(
                            "{what} must be an absolute path under {}",
                            prefixes.join(", ")
                        ));
                    }
                }
                CompiledCheck::Other(ArgCheck::MaxLen(max)) => {
                    let len = match v {
                        Value::String(s) => s.chars().count(),
                        Value::Array(a) => a.len(),
                        other => other.to_string().len(),
                    };
                    if len > *max {
                        return Err(format!("{what} is longer than {max}"));
                    }
                }
                CompiledCheck::Other(ArgCheck::Regex(_)) => {}
            }
        }
        Ok(())
    }
}

impl Interceptor for ArgGuard {
    fn name(&self) -> &'static str {
        "arguments"
    }

    fn pre_passes(&mut self, ctx: &Ctx<'_>, msg: &Peeked<'_>) -> bool {
        if ctx.kind != MsgKind::Request || ctx.method != "tools/call" {
            return true;
        }
        // The same check `pre_call` makes (on the same arguments, parsed by the peek); a
        // refusal is made again there, with the parsed message, to be reported.
        let empty = Value::Object(serde_json::Map::new());
        self.check(ctx.tool.unwrap_or(""), msg.arguments.unwrap_or(&empty))
            .is_ok()
    }

    fn post_passes(&mut self, ctx: &Ctx<'_>, _msg: &Peeked<'_>) -> bool {
        ctx.kind != MsgKind::Response || ctx.method != "tools/list"
    }

    fn pre_call(&mut self, ctx: &mut Ctx<'_>, msg: &mut Value) -> Verdict {
        if ctx.kind != MsgKind::Request || ctx.method != "tools/call" {
            return Verdict::Pass;
        }
        let tool = ctx.tool.unwrap_or("");
        let empty = Value::Object(serde_json::Map::new());
        // Two lookups, not `pointer()`, which splits and unescapes the path on every call.
        let args = member(msg, "params")
            .and_then(|p| member(p, "arguments"))
            .unwrap_or(&empty);
        match self.check(tool, args) {
            Ok(()) => Verdict::Pass,
            Err(why) => Verdict::Deny(Denial {
                code: super::interceptors::POLICY_DENIED,
                message: format!("mcp-guard: refused call of {tool:?}: {why}"),
            }),
        }
    }

    fn post_call(&mut self, ctx: &mut Ctx<'_>, msg: &mut Value) -> Verdict {
        if ctx.kind == MsgKind::Response
            && ctx.method == "tools/list"
            && let Some(tools) = msg.pointer("/result/tools").and_then(Value::as_array)
        {
            for t in tools {
                if let (Some(name), Some(schema)) =
                    (t.get("name").and_then(Value::as_str), t.get("inputSchema"))
                {
                    self.schemas.insert(name.to_string(), schema.clone());
                }
            }
        }
        Verdict::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schema_validation() {
        let schema = json!({"type":"object","required":["path"],"additionalProperties":false,
            "properties":{"path":{"type":"string","maxLength":10},"n":{"type":"integer","minimum":1},
            "mode":{"enum":["r","w"]},"tags":{"type":"array","items":{"type":"string"}}}});
        let mut c = ReCache::default();
        let v = |x: Value, c: &mut ReCache| validate(&schema, &x, "arguments", c);
        assert_eq!(
            v(json!({"path":"/a","n":2,"mode":"r","tags":["x"]}), &mut c),
            Ok(())
        );
        assert!(
            v(json!({}), &mut c)
                .expect_err("missing")
                .contains("required")
        );
        assert!(
            v(json!({"path":1}), &mut c)
                .expect_err("type")
                .contains("expected type")
        );
        assert!(
            v(json!({"path":"/a","x":1}), &mut c)
                .expect_err("extra")
                .contains("unexpected")
        );
        assert!(v(json!({"path":"/aaaaaaaaaaaa"}), &mut c).is_err());
        assert!(v(json!({"path":"/a","n":0}), &mut c).is_err());
        assert!(v(json!({"path":"/a","n":1.5}), &mut c).is_err());
        assert!(v(json!({"path":"/a","mode":"x"}), &mut c).is_err());
        assert!(
            v(json!({"path":"/a","tags":[1]}), &mut c)
                .expect_err("items")
                .contains("tags[0]")
        );
    }

    #[test]
    fn per_tool_rules() {
        let rules = vec![
            ArgRule {
                arg: "path".into(),
                check: ArgCheck::PathPrefix(vec!["/srv/data".into()]),
            },
            ArgRule {
                arg: "name".into(),
                check: ArgCheck::Regex("[a-z]+".into()),
            },
            ArgRule {
                arg: "mode".into(),
                check: ArgCheck::Enum(vec![json!("r")]),
            },
            ArgRule {
                arg: "q".into(),
                check: ArgCheck::MaxLen(3),
            },
        ];
        let mut g = ArgGuard::new(ArgConfig {
            validate_schema: true,
            rules: [("read".to_string(), rules)].into(),
        });
        assert_eq!(
            g.check(
                "read",
                &json!({"path":"/srv/data/x/../y","name":"abc","mode":"r","q":"abc"})
            ),
            Ok(())
        );
        assert!(
            g.check("read", &json!({"path":"/srv/data/../../etc/passwd"}))
                .is_err()
        );
        assert!(g.check("read", &json!({"path":"/srv/database"})).is_err());
        assert!(g.check("read", &json!({"path":"data/x"})).is_err());
        assert!(g.check("read", &json!({"name":"abc1"})).is_err());
        assert!(g.check("read", &json!({"mode":"w"})).is_err());
        assert!(g.check("read", &json!({"q":"abcd"})).is_err());
        assert_eq!(g.check("other", &json!({"q":"abcd"})), Ok(()));
    }
}
