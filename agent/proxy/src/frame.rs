//! Framing for the MCP stdio transport: newline-delimited JSON-RPC 2.0 messages.
//!
//! Lines are read as raw bytes with a size cap (an oversized line is skipped to its newline, never
//! buffered whole), parsed with a strict pass that rejects duplicate keys, and classified into
//! requests, notifications and responses. The raw bytes are kept so an untouched message can be
//! forwarded exactly as it came.

use std::{collections::HashSet, fmt};

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// Default maximum size of one message (one line), in bytes.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// JSON-RPC: invalid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC: not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC: internal error.
pub const INTERNAL_ERROR: i64 = -32603;

/// One framed unit read from a stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A line's bytes, without its trailing `\n`.
    Line(Vec<u8>),
    /// A line longer than the limit was skipped; `len` is its length and `head`/`tail` are up to
    /// [`KEEP`] bytes from each end, so the caller can still find an `id` to answer.
    Oversized {
        /// Length of the skipped line in bytes.
        len: usize,
        /// Its first bytes.
        head: Vec<u8>,
        /// Its last bytes.
        tail: Vec<u8>,
    },
}

/// How many bytes of each end of an oversized line are kept.
pub const KEEP: usize = 256;

/// Reads newline-delimited frames with a size cap from a buffered stream.
pub struct FrameReader<R> {
    inner: R,
    max: usize,
    buf: Vec<u8>,
}

impl<R: AsyncBufRead + Unpin> FrameReader<R> {
    /// A reader that skips (and reports) lines longer than `max` bytes.
    pub fn new(inner: R, max: usize) -> Self {
        Self {
            inner,
            max,
            buf: Vec::new(),
        }
    }

    /// The next frame, or `None` at end of stream. An unterminated last line is still a frame.
    pub async fn next(&mut self) -> std::io::Result<Option<Frame>> {
        self.buf.clear();
        // Some(len) once the current line is known to be over the limit.
        let mut over: Option<usize> = None;
        let mut head = Vec::new();
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let avail = self.inner.fill_buf().await?;
            if avail.is_empty() {
                return Ok(match over {
                    Some(len) => Some(Frame::Oversized { len, head, tail }),
                    None if self.buf.is_empty() => None,
                    None => Some(Frame::Line(std::mem::take(&mut self.buf))),
                });
            }
            let (chunk, done) = match memchr::memchr(b'\n', avail) {
                Some(i) => (&avail[..i], Some(i + 1)),
                None => (avail, None),
            };
            let taken = chunk.len();
            match over.as_mut() {
                None if self.buf.len() + taken <= self.max => {
                    // One more byte for the newline the proxy appends when it forwards the line,
                    // so that push never reallocates (and copies) the whole message.
                    self.buf.reserve(taken + 1);
                    self.buf.extend_from_slice(chunk);
                }
                None => {
                    head = self.buf[..self.buf.len().min(KEEP)].to_vec();
                    if head.len() < KEEP {
                        let more = (KEEP - head.len()).min(taken);
                        head.extend_from_slice(&chunk[..more]);
                    }
                    keep_tail(&mut tail, &self.buf);
                    keep_tail(&mut tail, chunk);
                    over = Some(self.buf.len() + taken);
                    self.buf.clear();
                }
                Some(len) => {
                    *len += taken;
                    keep_tail(&mut tail, chunk);
                }
            }
            let consumed = done.unwrap_or(taken);
            self.inner.consume(consumed);
            if done.is_some() {
                return Ok(Some(match over {
                    Some(len) => Frame::Oversized { len, head, tail },
                    None => Frame::Line(std::mem::take(&mut self.buf)),
                }));
            }
        }
    }
}

fn keep_tail(tail: &mut Vec<u8>, more: &[u8]) {
    tail.extend_from_slice(&more[more.len().saturating_sub(KEEP)..]);
    if tail.len() > KEEP {
        tail.drain(..tail.len() - KEEP);
    }
}

/// Why a line is not an acceptable JSON-RPC message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not JSON (→ -32700).
    Syntax(String),
    /// An object repeats a key, exactly or differing only in case (→ -32600).
    DuplicateKey(String),
    /// JSON, but not a JSON-RPC 2.0 message (→ -32600).
    Invalid(String),
}

impl ParseError {
    /// The JSON-RPC error code to answer with.
    pub fn code(&self) -> i64 {
        match self {
            ParseError::Syntax(_) => PARSE_ERROR,
            ParseError::DuplicateKey(_) | ParseError::Invalid(_) => INVALID_REQUEST,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Syntax(e) => write!(f, "parse error: {e}"),
            ParseError::DuplicateKey(k) => write!(
                f,
                "duplicate key {k:?} (keys must be unique, case-insensitively)"
            ),
            ParseError::Invalid(e) => write!(f, "invalid JSON-RPC message: {e}"),
        }
    }
}

/// Parses JSON strictly: any object with a repeated key (compared case-insensitively) is an error,
/// where `serde_json` alone would silently keep the last one.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, ParseError> {
    // One UTF-8 check of the whole line (quick on ASCII) instead of one per string, which is
    // what parsing from bytes does. Invalid UTF-8 is refused either way.
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ParseError::Syntax(format!(
            "invalid UTF-8 at byte {} of the message",
            e.valid_up_to()
        ))
    })?;
    let mut de = serde_json::Deserializer::from_str(text);
    let value = StrictSeed.deserialize(&mut de).map_err(map_err)?;
    de.end().map_err(map_err)?;
    Ok(value)
}

const DUP_PREFIX: &str = "\u{0}duplicate key:";

#[expect(
    clippy::needless_pass_by_value,
    reason = "`.map_err(map_err)` hands the error over by value"
)]
fn map_err(e: serde_json::Error) -> ParseError {
    let msg = e.to_string();
    match msg.strip_prefix(DUP_PREFIX) {
        Some(rest) => {
            // serde_json appends " at line L column C"; keep only the key.
            let key = rest.rsplit_once(" at line ").map_or(rest, |(k, _)| k);
            ParseError::DuplicateKey(key.to_string())
        }
        None => ParseError::Syntax(msg),
    }
}

/// Builds a `Value`, refusing duplicate keys (see [`parse_strict`]).
pub(crate) struct StrictSeed;

impl<'de> DeserializeSeed<'de> for StrictSeed {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(v) = seq.next_element_seed(StrictSeed)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        // Room for the usual JSON-RPC object (at most four members) from the start, so the map
        // does not grow (and rehash) while it is filled.
        let mut out = Map::with_capacity(4);
        // Folded keys, kept only for large objects; small ones are checked by a linear scan of
        // the keys already inserted (no allocation for the common case).
        let mut folded: Option<HashSet<String>> = None;
        while let Some(key) = map.next_key::<String>()? {
            let dup = if out.len() < 16 {
                out.keys().any(|k| same_key(k, &key))
            } else {
                let set = folded.get_or_insert_with(|| out.keys().map(|k| fold_case(k)).collect());
                !set.insert(fold_case(&key))
            };
            if dup {
                return Err(de::Error::custom(format_args!("{DUP_PREFIX}{key}")));
            }
            let v = map.next_value_seed(StrictSeed)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// Keys equal when case-folded (Unicode lowercase; ASCII compared without allocating).
pub(crate) fn same_key(a: &str, b: &str) -> bool {
    // Equal but for ASCII case: equal when folded too (the cheap test first, as distinct keys
    // mostly differ in length, which it checks first).
    if a.eq_ignore_ascii_case(b) {
        return true;
    }
    if a.is_ascii() && b.is_ascii() {
        return false;
    }
    fold_case(a) == fold_case(b)
}

/// Objects up to this many members are searched by comparing keys: `serde_json`'s map hashes
/// every lookup with SipHash, which costs more than a few short string comparisons.
const SCAN_MEMBERS: usize = 8;

/// `obj[key]`, by a scan of the keys for small objects (see [`SCAN_MEMBERS`]).
pub fn map_get<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if obj.len() <= SCAN_MEMBERS {
        obj.iter().find_map(|(k, v)| (k == key).then_some(v))
    } else {
        obj.get(key)
    }
}

/// `v[key]` when `v` is an object (see [`map_get`]); what `Value::get` does, faster on the small
/// objects JSON-RPC messages are made of.
pub fn member<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    map_get(v.as_object()?, key)
}

/// The mutable counterpart of [`member`].
pub fn member_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    let obj = v.as_object_mut()?;
    if obj.len() <= SCAN_MEMBERS {
        obj.iter_mut().find_map(|(k, v)| (k == key).then_some(v))
    } else {
        obj.get_mut(key)
    }
}

/// Case folding for key comparison: Unicode lowercase, so `Name`, `NAME` and `name` collide.
pub(crate) fn fold_case(key: &str) -> String {
    key.to_lowercase()
}

/// What a single JSON-RPC message is.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A call that expects a response.
    Request {
        /// Its id (string or number).
        id: Value,
        /// The method.
        method: String,
    },
    /// A call without an id.
    Notification {
        /// The method.
        method: String,
    },
    /// A result or error for an earlier request.
    Response {
        /// The id it answers (may be null for errors about unparseable input).
        id: Value,
    },
}

/// Classifies one JSON-RPC 2.0 message object.
pub fn classify(v: &Value) -> Result<Kind, ParseError> {
    let obj = v
        .as_object()
        .ok_or_else(|| ParseError::Invalid("a message must be an object".into()))?;
    if map_get(obj, "jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(ParseError::Invalid("\"jsonrpc\" must be \"2.0\"".into()));
    }
    let id = map_get(obj, "id");
    if let Some(id) = id
        && !(id.is_string() || id.is_number() || id.is_null())
    {
        return Err(ParseError::Invalid(
            "\"id\" must be a string or number".into(),
        ));
    }
    match map_get(obj, "method") {
        Some(Value::String(m)) => Ok(match id {
            Some(id) if !id.is_null() => Kind::Request {
                id: id.clone(),
                method: m.clone(),
            },
            Some(_) => return Err(ParseError::Invalid("a request id must not be null".into())),
            None => Kind::Notification { method: m.clone() },
        }),
        Some(_) => Err(ParseError::Invalid("\"method\" must be a string".into())),
        None => {
            let id = id.ok_or_else(|| {
                ParseError::Invalid("neither a request (method) nor a response (id)".into())
            })?;
            match (
                map_get(obj, "result").is_some(),
                map_get(obj, "error").is_some(),
            ) {
                (true, false) | (false, true) => Ok(Kind::Response { id: id.clone() }),
                _ => Err(ParseError::Invalid(
                    "a response has exactly one of \"result\" and \"error\"".into(),
                )),
            }
        }
    }
}

/// A JSON-RPC error response line (without the newline).
pub fn error_response(id: &Value, code: i64, message: &str, data: Option<Value>) -> Vec<u8> {
    let mut err = Map::new();
    err.insert("code".into(), Value::from(code));
    err.insert("message".into(), Value::from(message));
    if let Some(d) = data {
        err.insert("data".into(), d);
    }
    let msg = serde_json::json!({"jsonrpc": "2.0", "id": id, "error": Value::Object(err)});
    serde_json::to_vec(&msg).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frames(input: &[u8], max: usize) -> Vec<Frame> {
        let mut r = FrameReader::new(tokio::io::BufReader::with_capacity(7, input), max);
        let mut out = Vec::new();
        while let Some(f) = r.next().await.expect("reading a slice cannot fail") {
            out.push(f);
        }
        out
    }

    #[tokio::test]
    async fn splits_lines_and_keeps_unterminated_tail() {
        let f = frames(b"{\"a\":1}\n\n{\"b\":2}\r\nlast", 100).await;
        assert_eq!(
            f,
            vec![
                Frame::Line(b"{\"a\":1}".to_vec()),
                Frame::Line(vec![]),
                Frame::Line(b"{\"b\":2}\r".to_vec()),
                Frame::Line(b"last".to_vec()),
            ]
        );
    }

    #[tokio::test]
    async fn oversized_line_is_skipped_and_reading_continues() {
        let mut input = b"{\"id\":7,\"x\":\"".to_vec();
        input.extend(std::iter::repeat_n(b'a', 1000));
        input.extend_from_slice(b"\"}\nok\n");
        let f = frames(&input, 100).await;
        assert_eq!(f.len(), 2);
        match &f[0] {
            Frame::Oversized { len, head, tail } => {
                assert_eq!(*len, input.len() - 4);
                assert!(head.starts_with(b"{\"id\":7"));
                assert!(tail.ends_with(b"a\"}"));
                assert_eq!(crate::ids::oversized_id(head, tail), Some(Value::from(7)));
            }
            other @ Frame::Line(_) => panic!("expected oversized, got {other:?}"),
        }
        assert_eq!(f[1], Frame::Line(b"ok".to_vec()));
    }

    #[test]
    fn duplicate_keys_rejected_exact_and_case_variant() {
        assert_eq!(
            parse_strict(br#"{"name":"a","name":"b"}"#),
            Err(ParseError::DuplicateKey("name".into()))
        );
        assert_eq!(
            parse_strict(br#"{"params":{"name":"a","Name":"b"}}"#),
            Err(ParseError::DuplicateKey("Name".into()))
        );
        assert!(matches!(
            parse_strict(r#"[{"x":1},{"y":{"ÄB":1,"äb":2}}]"#.as_bytes()),
            Err(ParseError::DuplicateKey(_))
        ));
        assert!(parse_strict(br#"{"a":{"x":1},"b":{"x":1}}"#).is_ok());
    }

    #[test]
    fn strict_parse_matches_serde_json_on_valid_input() {
        let s = br#"{"jsonrpc":"2.0","id":1.5,"params":{"a":[1,-2,3e5,null,true,"\u00e9"]}}"#;
        assert_eq!(
            parse_strict(s).expect("valid"),
            serde_json::from_slice::<Value>(s).expect("valid")
        );
        assert!(matches!(parse_strict(b"{} x"), Err(ParseError::Syntax(_))));
        assert!(matches!(
            parse_strict(b"{\"a\":"),
            Err(ParseError::Syntax(_))
        ));
    }

    #[test]
    fn member_lookup_matches_get_on_small_and_large_objects() {
        let small = serde_json::json!({"a": 1, "b": {"c": 2}});
        assert_eq!(member(&small, "b"), small.get("b"));
        assert_eq!(member(&small, "z"), None);
        assert_eq!(member(&Value::from(3), "a"), None);
        let large: Map<String, Value> =
            (0..20).map(|i| (format!("k{i}"), Value::from(i))).collect();
        let mut large = Value::Object(large);
        assert_eq!(member(&large, "k17"), Some(&Value::from(17)));
        if let Some(v) = member_mut(&mut large, "k3") {
            *v = Value::from("three");
        }
        assert_eq!(large["k3"], "three");
        assert!(same_key("Name", "nAME") && !same_key("name", "named"));
        assert!(same_key("ÄB", "äb") && !same_key("ÄB", "äc"));
    }

    #[test]
    fn invalid_utf8_is_a_parse_error() {
        assert!(matches!(
            parse_strict(b"{\"a\":\"\xff\"}"),
            Err(ParseError::Syntax(_))
        ));
    }

    #[test]
    fn classifies_messages() {
        let p = |s: &str| classify(&parse_strict(s.as_bytes()).expect("json"));
        assert_eq!(
            p(r#"{"jsonrpc":"2.0","id":"x","method":"tools/list"}"#),
            Ok(Kind::Request {
                id: "x".into(),
                method: "tools/list".into()
            })
        );
        assert_eq!(
            p(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Ok(Kind::Notification {
                method: "notifications/initialized".into()
            })
        );
        assert_eq!(
            p(r#"{"jsonrpc":"2.0","id":3,"result":{}}"#),
            Ok(Kind::Response { id: 3.into() })
        );
        assert!(p(r#"{"jsonrpc":"1.0","id":3,"result":{}}"#).is_err());
        assert!(p(r#"{"jsonrpc":"2.0","id":3,"result":{},"error":{}}"#).is_err());
        assert!(p(r#"{"jsonrpc":"2.0","id":{},"method":"x"}"#).is_err());
        assert!(p(r"[1]").is_err());
    }
}
