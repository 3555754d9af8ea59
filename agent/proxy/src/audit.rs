//! What the proxy keeps of each call for the history: the text of its arguments and of the
//! beginning of its result, copied as the bytes went by, and what the server said about itself
//! (its `initialize` answer, a digest of each `tools/list` answer).
//!
//! The proxy only copies here (a bounded slice of a line it has already scanned); parsing,
//! redaction and cutting to the bound happen on the store writer's thread. Nothing is copied
//! for a call whose tool the policy keeps out of the history.

use std::{collections::HashMap, io::Write};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::peek::{Span, Spans};

/// Arguments longer than this are cut (their excerpt is kept).
pub const ARGUMENTS_BYTES: usize = 16 << 10;

/// Bytes copied past a bound: what a redaction must see beyond the cut so that a secret that
/// the cut would split is still recognised (and a string's end cut open can be dropped).
pub const MARGIN: usize = 8 << 10;

/// How much of one tool's calls the history keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keep {
    /// Its arguments (up to [`ARGUMENTS_BYTES`]).
    pub arguments: bool,
    /// Bytes of its result (0: none).
    pub result_bytes: usize,
}

impl Keep {
    /// Nothing.
    pub const OFF: Keep = Keep {
        arguments: false,
        result_bytes: 0,
    };

    fn is_off(self) -> bool {
        !self.arguments && self.result_bytes == 0
    }
}

/// What the history keeps of calls: a default, and per tool (plain data from the policy and the
/// host's config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    /// For calls of tools not listed, and other methods.
    pub default: Keep,
    /// Per tool name.
    pub tools: HashMap<String, Keep>,
}

impl Default for AuditConfig {
    /// Nothing kept (a proxy embedded without a policy).
    fn default() -> Self {
        AuditConfig {
            default: Keep::OFF,
            tools: HashMap::new(),
        }
    }
}

impl AuditConfig {
    /// What to keep of a call of `method` (with `tool` for `tools/call`).
    pub fn keep(&self, method: &str, tool: Option<&str>) -> Keep {
        match tool {
            Some(t) if method == "tools/call" && !self.tools.is_empty() => {
                self.tools.get(t).copied().unwrap_or(self.default)
            }
            _ => self.default,
        }
    }
}

/// The JSON text of one value as copied: all of it, or its first bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Captured {
    /// The text (a prefix when `text.len() < total`).
    pub text: Vec<u8>,
    /// The whole value's length.
    pub total: u64,
}

/// What the history gets of one call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallCapture {
    /// The arguments (`params.arguments` of a `tools/call`, `params` of other methods), and
    /// their bound.
    pub arguments: Option<(Captured, usize)>,
    /// Bytes of the result to keep (0: none).
    pub result_bytes: usize,
    /// The result (copied when the response comes).
    pub result: Option<Captured>,
}

/// `text[span]`, at most `bound` + [`MARGIN`] bytes of it.
fn copy(text: &[u8], (a, b): Span, bound: usize) -> Captured {
    let end = b.min(a.saturating_add(bound.saturating_add(MARGIN)));
    Captured {
        text: text[a..end].to_vec(),
        total: (b - a) as u64,
    }
}

/// A writer that keeps the first `cap` bytes and counts the rest.
struct Bounded {
    text: Vec<u8>,
    cap: usize,
    total: u64,
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = self.cap.saturating_sub(self.text.len());
        self.text.extend_from_slice(&buf[..buf.len().min(room)]);
        self.total += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `v` serialized, at most `bound` + [`MARGIN`] bytes of it kept.
fn serialize(v: &Value, bound: usize) -> Captured {
    let mut w = Bounded {
        text: Vec::new(),
        cap: bound.saturating_add(MARGIN),
        total: 0,
    };
    // Writing to memory cannot fail.
    let _ = serde_json::to_writer(&mut w, v);
    Captured {
        text: w.text,
        total: w.total,
    }
}

/// What to capture of a request of `method` (`tool` for `tools/call`) that the proxy read
/// without parsing: the span of its arguments in `raw`. `None` when the history keeps nothing
/// of it.
pub fn request(
    config: &AuditConfig,
    method: &str,
    tool: Option<&str>,
    raw: &[u8],
    spans: &Spans,
) -> Option<CallCapture> {
    let keep = config.keep(method, tool);
    if keep.is_off() {
        return None;
    }
    let span = if method == "tools/call" {
        spans.arguments
    } else {
        spans.params
    };
    Some(CallCapture {
        arguments: keep
            .arguments
            .then(|| span.map(|s| (copy(raw, s, ARGUMENTS_BYTES), ARGUMENTS_BYTES)))
            .flatten(),
        result_bytes: keep.result_bytes,
        result: None,
    })
}

/// [`request`] for a request the proxy parsed (`msg` as the client sent it).
pub fn request_value(
    config: &AuditConfig,
    method: &str,
    tool: Option<&str>,
    msg: &Value,
) -> Option<CallCapture> {
    let keep = config.keep(method, tool);
    if keep.is_off() {
        return None;
    }
    let params = msg.get("params");
    let arguments = if method == "tools/call" {
        params.and_then(|p| p.get("arguments"))
    } else {
        params
    };
    Some(CallCapture {
        arguments: keep
            .arguments
            .then(|| arguments.map(|a| (serialize(a, ARGUMENTS_BYTES), ARGUMENTS_BYTES)))
            .flatten(),
        result_bytes: keep.result_bytes,
        result: None,
    })
}

/// Copies the result of a response the proxy read without parsing (its span in `raw`).
pub fn response(capture: &mut Option<CallCapture>, raw: &[u8], span: Option<Span>) {
    if let (Some(c), Some(span)) = (capture.as_mut(), span)
        && c.result_bytes > 0
    {
        c.result = Some(copy(raw, span, c.result_bytes));
    }
}

/// [`response`] for a response the proxy parsed.
pub fn response_value(capture: &mut Option<CallCapture>, msg: &Value) {
    if let (Some(c), Some(result)) = (capture.as_mut(), msg.get("result"))
        && c.result_bytes > 0
    {
        c.result = Some(serialize(result, c.result_bytes));
    }
}

/// Something a server said about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerFact {
    /// Its `initialize` answer: `serverInfo`'s `name`, `version` and `title`,
    /// `protocolVersion`, and `capabilities` (each bounded).
    Info(Value),
    /// A `tools/list` answer: the SHA-256 (hex) of the canonical JSON of its `tools`, and how
    /// many it listed.
    Tools {
        /// The digest.
        sha256: String,
        /// The number of tools.
        tools: u64,
    },
}

/// Longest string kept of `serverInfo` and `protocolVersion`.
const INFO_STRING: usize = 256;
/// Largest `capabilities` kept whole (beyond, only its top-level names).
const CAPABILITIES_BYTES: usize = 4 << 10;

/// What a response to `method` says about the server, if anything (`initialize`, `tools/list`).
pub fn server_fact(method: &str, msg: &Value) -> Option<ServerFact> {
    let result = msg.get("result")?;
    match method {
        "initialize" => {
            let short = |v: Option<&Value>| -> Option<Value> {
                let s = v?.as_str()?;
                let mut end = s.len().min(INFO_STRING);
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                Some(Value::String(s[..end].to_string()))
            };
            let info = result.get("serverInfo");
            let mut out = serde_json::Map::new();
            for key in ["name", "version", "title"] {
                if let Some(v) = short(info.and_then(|i| i.get(key))) {
                    out.insert(key.into(), v);
                }
            }
            if let Some(v) = short(result.get("protocolVersion")) {
                out.insert("protocolVersion".into(), v);
            }
            if let Some(caps) = result.get("capabilities") {
                let text = serialize(caps, 0);
                let caps = match caps {
                    Value::Object(m) if text.total > CAPABILITIES_BYTES as u64 => {
                        Value::Array(m.keys().take(64).map(|k| short_key(k)).collect())
                    }
                    other => other.clone(),
                };
                out.insert("capabilities".into(), caps);
            }
            Some(ServerFact::Info(Value::Object(out)))
        }
        "tools/list" => {
            let tools = result.get("tools")?;
            let mut canon = Vec::new();
            canonical(tools, &mut canon);
            let sha256 = Sha256::digest(&canon)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let n = tools.as_array().map_or(0, Vec::len) as u64;
            Some(ServerFact::Tools { sha256, tools: n })
        }
        _ => None,
    }
}

fn short_key(k: &str) -> Value {
    let mut end = k.len().min(INFO_STRING);
    while !k.is_char_boundary(end) {
        end -= 1;
    }
    Value::String(k[..end].to_string())
}

/// `v` as canonical JSON: object keys sorted, no spaces (the same server answer gives the same
/// bytes whatever order its keys came in).
fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Serializing a string cannot fail.
                let _ = serde_json::to_writer(&mut *out, k);
                out.push(b':');
                canonical(&m[k], out);
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(x, out);
            }
            out.push(b']');
        }
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peek::peek;

    fn config() -> AuditConfig {
        AuditConfig {
            default: Keep {
                arguments: true,
                result_bytes: 16,
            },
            tools: [("secret_tool".to_string(), Keep::OFF)].into(),
        }
    }

    #[test]
    fn the_peeked_and_the_parsed_path_copy_the_same_text() {
        let line = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read","arguments":{"path":"/etc/hosts"}}}"#;
        let p = peek(line.as_bytes()).expect("plain");
        let c = request(
            &config(),
            "tools/call",
            Some("read"),
            line.as_bytes(),
            &p.spans,
        )
        .expect("kept");
        let v: Value = serde_json::from_str(line).expect("JSON");
        let d = request_value(&config(), "tools/call", Some("read"), &v).expect("kept");
        assert_eq!(c, d);
        let (args, bound) = c.arguments.expect("arguments");
        assert_eq!(args.text, br#"{"path":"/etc/hosts"}"#);
        assert_eq!(bound, ARGUMENTS_BYTES);
        // A tool kept out of the history: nothing copied at all.
        assert!(
            request(
                &config(),
                "tools/call",
                Some("secret_tool"),
                line.as_bytes(),
                &p.spans
            )
            .is_none()
        );
        // A long result: its beginning, the bound plus the margin.
        let answer = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"text":"{}"}}}}"#,
            "y".repeat(3 * MARGIN)
        );
        let p = peek(answer.as_bytes()).expect("plain");
        let mut capture = Some(d);
        response(&mut capture, answer.as_bytes(), p.spans.result);
        let peeked = capture
            .as_ref()
            .and_then(|c| c.result.clone())
            .expect("copied");
        assert_eq!(peeked.text.len(), 16 + MARGIN);
        assert_eq!(peeked.total, (3 * MARGIN + r#"{"text":""}"#.len()) as u64);
        let v: Value = serde_json::from_str(&answer).expect("JSON");
        response_value(&mut capture, &v);
        assert_eq!(capture.and_then(|c| c.result), Some(peeked));
    }

    #[test]
    fn the_tools_digest_ignores_key_order_and_initialize_is_bounded() {
        let a = serde_json::json!({"result": {"tools": [{"name": "x", "inputSchema": {"type": "object", "a": 1}}]}});
        let b = serde_json::json!({"result": {"tools": [{"inputSchema": {"a": 1, "type": "object"}, "name": "x"}]}});
        let fa = server_fact("tools/list", &a).expect("a digest");
        assert_eq!(Some(fa.clone()), server_fact("tools/list", &b));
        let ServerFact::Tools { sha256, tools } = fa else {
            panic!("a digest")
        };
        assert_eq!((sha256.len(), tools), (64, 1));
        let init = serde_json::json!({"result": {"serverInfo": {"name": "n".repeat(1000), "version": "1.2"},
            "protocolVersion": "2025-06-18", "capabilities": {"tools": {}, "big": "z".repeat(10_000)},
            "instructions": "not kept"}});
        let Some(ServerFact::Info(info)) = server_fact("initialize", &init) else {
            panic!("info")
        };
        assert_eq!(info["name"].as_str().map(str::len), Some(INFO_STRING));
        assert_eq!(info["version"], "1.2");
        assert_eq!(info["capabilities"], serde_json::json!(["tools", "big"]));
        assert!(info.get("instructions").is_none());
    }
}
