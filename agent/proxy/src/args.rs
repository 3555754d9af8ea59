//! Argument checks before a `tools/call` reaches the server: validation against the tool's own
//! `inputSchema` (as listed by the server, which the pin interceptor keeps unchanged) and per-tool rules.
//!
//! The schema is checked by the `jsonschema` crate, the whole of JSON Schema (`$ref`/`$defs`,
//! `format`, …); a schema (or a `pattern` in it) that does not compile refuses its tool's calls.

use std::collections::{BTreeMap, HashMap};

use jsonschema::{Validator, paths::LocationSegment};
use regex::Regex;
use serde_json::Value;

use super::{
    frame::member,
    interceptors::{Ctx, Denial, InterceptOutcome, Interceptor, MsgKind, Peeked},
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

/// A tool's listed `inputSchema`, compiled once per `tools/list`, or why it did not compile.
pub struct ToolSchema(Result<Validator, String>);

impl ToolSchema {
    /// Compiles `schema` (any JSON Schema draft; 2020-12 when it names none), validating
    /// `format`s too. References resolve only inside the schema: a server's schema never makes
    /// the proxy fetch a URL or read a file.
    pub fn compile(schema: &Value) -> Self {
        let compiled = jsonschema::options()
            .should_validate_formats(true)
            .offline()
            .build(schema)
            .map_err(|e| e.to_string());
        Self(compiled)
    }

    /// Checks `value`; the first violation as `path: what`, with `path` starting at `root`. A
    /// schema that did not compile refuses everything (an argument that cannot be checked does
    /// not pass). Argument values are not quoted in the message, which is stored and logged.
    pub fn check(&self, value: &Value, root: &str) -> Result<(), String> {
        let v = match &self.0 {
            Ok(v) => v,
            Err(why) => return Err(format!("its inputSchema does not compile ({why})")),
        };
        match v.validate(value) {
            Ok(()) => Ok(()),
            Err(e) => {
                let mut path = root.to_string();
                for seg in e.instance_path().segments() {
                    match seg {
                        LocationSegment::Property(k) => {
                            path.push('.');
                            path.push_str(&k);
                        }
                        LocationSegment::Index(i) => path.push_str(&format!("[{i}]")),
                    }
                }
                Err(format!("{path}: {}", e.masked()))
            }
        }
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
pub struct ArgInterceptor {
    config: ArgConfig,
    rules: HashMap<String, Vec<(String, CompiledCheck)>>,
    schemas: HashMap<String, ToolSchema>,
}

enum CompiledCheck {
    Regex(Option<Regex>, String),
    Other(ArgCheck),
}

impl ArgInterceptor {
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
        }
    }

    fn check(&mut self, tool: &str, args: &Value) -> Result<(), String> {
        if self.config.validate_schema
            && let Some(schema) = self.schemas.get(tool)
        {
            schema.check(args, "arguments")?;
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

impl Interceptor for ArgInterceptor {
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

    fn pre_call(&mut self, ctx: &mut Ctx<'_>, msg: &mut Value) -> InterceptOutcome {
        if ctx.kind != MsgKind::Request || ctx.method != "tools/call" {
            return InterceptOutcome::Pass;
        }
        let tool = ctx.tool.unwrap_or("");
        let empty = Value::Object(serde_json::Map::new());
        // Two lookups, not `pointer()`, which splits and unescapes the path on every call.
        let args = member(msg, "params")
            .and_then(|p| member(p, "arguments"))
            .unwrap_or(&empty);
        match self.check(tool, args) {
            Ok(()) => InterceptOutcome::Pass,
            Err(why) => InterceptOutcome::Deny(Denial {
                code: super::interceptors::POLICY_DENIED,
                message: format!("mcp-guard: refused call of {tool:?}: {why}"),
            }),
        }
    }

    fn post_call(&mut self, ctx: &mut Ctx<'_>, msg: &mut Value) -> InterceptOutcome {
        if ctx.kind == MsgKind::Response
            && ctx.method == "tools/list"
            && let Some(tools) = msg.pointer("/result/tools").and_then(Value::as_array)
        {
            for t in tools {
                if let (Some(name), Some(schema)) =
                    (t.get("name").and_then(Value::as_str), t.get("inputSchema"))
                {
                    self.schemas
                        .insert(name.to_string(), ToolSchema::compile(schema));
                }
            }
        }
        InterceptOutcome::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schema_validation() {
        let schema = ToolSchema::compile(&json!({"type":"object","required":["path"],
            "additionalProperties":false,
            "properties":{"path":{"type":"string","maxLength":10},"n":{"type":"integer","minimum":1},
            "mode":{"enum":["r","w"]},"tags":{"type":"array","items":{"type":"string"}}}}));
        let v = |x: Value| schema.check(&x, "arguments");
        assert_eq!(
            v(json!({"path":"/a","n":2,"mode":"r","tags":["x"]})),
            Ok(())
        );
        assert!(v(json!({})).expect_err("missing").contains("required"));
        let why = v(json!({"path":1})).expect_err("type");
        assert!(
            why.starts_with("arguments.path: ") && why.contains("string"),
            "{why}"
        );
        assert!(
            v(json!({"path":"/a","x":1}))
                .expect_err("extra")
                .contains("Additional properties")
        );
        assert!(v(json!({"path":"/aaaaaaaaaaaa"})).is_err());
        assert!(v(json!({"path":"/a","n":0})).is_err());
        assert!(v(json!({"path":"/a","n":1.5})).is_err());
        assert!(v(json!({"path":"/a","mode":"x"})).is_err());
        let why = v(json!({"path":"/a","tags":["ok", 1]})).expect_err("items");
        assert!(why.starts_with("arguments.tags[1]: "), "{why}");
        // The arguments' values are not quoted back (the reason is stored and logged).
        let why = v(json!({"path":"SECRET-VALUE-0123456789"})).expect_err("long");
        assert!(!why.contains("SECRET-VALUE"), "{why}");
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
        let mut g = ArgInterceptor::new(ArgConfig {
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

    /// An `ArgInterceptor` that has seen `tool` listed with `schema`, as the proxy feeds it.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "callers build the JSON in place with json!"
    )]
    fn listed(tool: &str, schema: Value) -> ArgInterceptor {
        let mut g = ArgInterceptor::new(ArgConfig::default());
        let mut ctx = Ctx {
            server: "s",
            client_name: None,
            method: "tools/list",
            tool: None,
            kind: MsgKind::Response,
            findings: Vec::new(),
        };
        let mut list = json!({"jsonrpc":"2.0","id":1,"result":{"tools":[
            {"name": tool, "inputSchema": schema}]}});
        assert_eq!(g.post_call(&mut ctx, &mut list), InterceptOutcome::Pass);
        g
    }

    /// What pydantic (FastMCP, the MCP Python SDK) lists for a tool taking a nested model: the
    /// models under `$defs`, each use a `$ref`.
    fn pydantic_trip() -> Value {
        json!({"type":"object","title":"bookArguments","required":["trip"],
            "properties":{"trip":{"$ref":"#/$defs/Trip"}},
            "$defs":{
                "Traveler":{"type":"object","title":"Traveler","required":["name","age"],
                    "properties":{"name":{"type":"string","pattern":"^[A-Z][a-z]+$"},
                        "age":{"type":"integer","minimum":0,"maximum":150}}},
                "Trip":{"type":"object","title":"Trip","required":["traveler","leaves","stops"],
                    "properties":{"traveler":{"$ref":"#/$defs/Traveler"},
                        "leaves":{"type":"string","format":"date-time"},
                        "stops":{"type":"array","items":{"type":"string"},
                            "minItems":1,"uniqueItems":true}}}}})
    }

    #[test]
    fn nested_models_behind_ref_and_defs_are_checked() {
        let g = listed("book", pydantic_trip());
        let trip = |traveler: Value, leaves: &str, stops: Value| json!({"trip":{"traveler":traveler,"leaves":leaves,"stops":stops}});
        let ok = json!({"name":"Ann","age":30});
        let mut g = g;
        assert_eq!(
            g.check(
                "book",
                &trip(ok.clone(), "2026-01-01T10:00:00Z", json!(["x"]))
            ),
            Ok(())
        );
        let why = g
            .check(
                "book",
                &trip(
                    json!({"name":"Ann","age":-5}),
                    "2026-01-01T10:00:00Z",
                    json!(["x"]),
                ),
            )
            .expect_err("a nested field out of range");
        assert!(why.contains("arguments.trip.traveler.age"), "{why}");
        assert!(
            g.check(
                "book",
                &trip(
                    json!({"name":"ann; rm -rf /","age":5}),
                    "2026-01-01T10:00:00Z",
                    json!(["x"])
                )
            )
            .is_err(),
            "a nested pattern"
        );
        assert!(
            g.check(
                "book",
                &trip(json!({"age":5}), "2026-01-01T10:00:00Z", json!(["x"]))
            )
            .is_err(),
            "a nested required field"
        );
        assert!(
            g.check("book", &trip(ok.clone(), "next tuesday", json!(["x"])))
                .is_err(),
            "format"
        );
        assert!(
            g.check("book", &trip(ok.clone(), "2026-01-01T10:00:00Z", json!([])))
                .is_err(),
            "minItems"
        );
        let why = g
            .check("book", &trip(ok, "2026-01-01T10:00:00Z", json!(["x", "x"])))
            .expect_err("uniqueItems");
        assert!(why.contains("arguments.trip.stops"), "{why}");
    }

    #[test]
    fn pattern_properties_are_checked() {
        let mut g = listed(
            "env",
            json!({"type":"object","properties":{"vars":{"type":"object",
                "patternProperties":{"^[A-Z_]+$":{"type":"string","maxLength":8}},
                "additionalProperties":false}}}),
        );
        assert_eq!(g.check("env", &json!({"vars":{"HOME":"/root"}})), Ok(()));
        assert!(
            g.check("env", &json!({"vars":{"HOME":"/a/long/path"}}))
                .is_err()
        );
        assert!(g.check("env", &json!({"vars":{"LD_PRELOAD":1}})).is_err());
        assert!(g.check("env", &json!({"vars":{"lower":"x"}})).is_err());
    }

    #[test]
    fn a_schema_that_does_not_compile_refuses_its_tool() {
        // A `pattern` the regex engine rejects, a type that does not exist, and references the
        // proxy will not follow (a file on this host, a URL): each refuses the tool's calls,
        // whatever the arguments, instead of letting them through unchecked.
        for schema in [
            json!({"type":"object","properties":{"q":{"type":"string","pattern":"(unclosed"}}}),
            json!({"type":"object","properties":{"q":{"type":"strnig"}}}),
            json!({"type":"object","properties":{"q":{"$ref":"file:///etc/passwd"}}}),
            json!({"type":"object","properties":{"q":{"$ref":"https://example.invalid/s.json"}}}),
        ] {
            let mut g = listed("t", schema.clone());
            let why = g.check("t", &json!({"q":"anything"})).expect_err("refused");
            assert!(
                why.contains("inputSchema does not compile"),
                "{schema}: {why}"
            );
            assert!(g.check("t", &json!({})).is_err(), "{schema}");
        }
        // The refusal is a JSON-RPC error for the request it answers.
        let mut g = listed("t", json!({"properties":{"q":{"pattern":"(unclosed"}}}));
        let mut ctx = Ctx {
            server: "s",
            client_name: None,
            method: "tools/call",
            tool: Some("t"),
            kind: MsgKind::Request,
            findings: Vec::new(),
        };
        let mut call = json!({"jsonrpc":"2.0","id":"req-7","method":"tools/call",
            "params":{"name":"t","arguments":{"q":"x"}}});
        match g.pre_call(&mut ctx, &mut call) {
            InterceptOutcome::Deny(d) => assert!(
                d.message.contains("refused call of \"t\"")
                    && d.message.contains("inputSchema does not compile"),
                "{}",
                d.message
            ),
            other => panic!("not refused: {other:?}"),
        }
    }
}
