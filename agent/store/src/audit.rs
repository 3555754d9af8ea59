//! A call's arguments and result as the store keeps them: redacted, then cut to a bound.
//!
//! The proxy hands over the raw JSON text of `params.arguments` and of `result` as the server
//! sent it (all of it, or its first bytes when it is long: [`RawJson`]); the writer's thread
//! turns that into the stored form ([`CallAudit`]), so the proxy pays for a copy and nothing
//! else. The order matters: the text is parsed (a prefix is closed into valid JSON first), every
//! string in it (keys too, decoded, so an escaped secret is found as well; a member's value with
//! its key as the rules' context) goes through the session's [`Redact`], and only then is the result cut to its bound. A prefix may end inside a
//! secret, whose start no pattern recognises: the end of the string that was cut open is dropped
//! before redaction, by as much as the redactor says could begin a secret.

pub use mcp_guard_model::audit::CallAudit;
use serde_json::Value;

/// Bytes dropped from the end of a string that a capture cut open, at least: the longest secret
/// shape with a fixed length ends within this many bytes of its start (unbounded shapes are
/// recognised from their first bytes, exact values by [`Redact::unfinished_tail`]).
pub const OPEN_TAIL: usize = 512;

/// What a session's records are redacted with before they are written: the session's record
/// redactor (injected secret values, what the secret rules find).
pub trait Redact: Send + Sync {
    /// Replaces every secret in `s` by a marker; notes what was redacted in `what` (once each).
    fn redact(&self, s: &mut String, what: &mut Vec<String>);
    /// [`Redact::redact`] for `s`, the value of the object member `key`: rules that need an
    /// assignment's name (`"password": "..."`) see the key as its context.
    fn redact_member(&self, key: &str, s: &mut String, what: &mut Vec<String>) {
        let _ = key;
        self.redact(s, what);
    }
    /// How many bytes at the end of `s` could be the beginning of an injected value that
    /// continues past it.
    fn unfinished_tail(&self, s: &str) -> usize;
}

impl Redact for mcp_guard_model::redact::Scrubber {
    fn redact(&self, s: &mut String, what: &mut Vec<String>) {
        mcp_guard_model::redact::Scrubber::redact(self, s, what);
    }

    fn unfinished_tail(&self, s: &str) -> usize {
        mcp_guard_model::redact::Scrubber::unfinished_tail(self, s.as_bytes())
    }
}

/// The JSON text of one value as captured: `text` is all of it when `text.len() == total`,
/// else its first bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawJson {
    /// The text (a prefix when cut).
    pub text: Vec<u8>,
    /// The whole value's length in bytes.
    pub total: u64,
}

impl RawJson {
    /// Whether `text` is the whole value.
    pub fn is_whole(&self) -> bool {
        self.text.len() as u64 >= self.total
    }
}

/// What the proxy captured of one call, with how much of each part to keep.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallCapture {
    /// `params.arguments` of a `tools/call` (`params` of other methods), and its bound in bytes.
    pub arguments: Option<(RawJson, usize)>,
    /// The response's `result`, and its bound in bytes.
    pub result: Option<(RawJson, usize)>,
}

impl CallCapture {
    /// The stored form: each part parsed, redacted with `redact`, then cut to its bound.
    pub fn finish(&self, redact: Option<&dyn Redact>) -> CallAudit {
        let mut audit = CallAudit::default();
        if let Some((raw, limit)) = &self.arguments {
            let (v, cut) = keep(raw, *limit, redact, &mut audit.redacted);
            audit.arguments = v;
            audit.arguments_cut = cut;
        }
        if let Some((raw, limit)) = &self.result {
            let (v, cut) = keep(raw, *limit, redact, &mut audit.redacted);
            audit.result = v;
            audit.result_cut = cut;
        }
        audit
    }
}

/// One captured value: parsed (closed first when only its beginning was captured), redacted,
/// cut to `limit` bytes of JSON text; with the bytes of the original it lacks.
fn keep(
    raw: &RawJson,
    limit: usize,
    redact: Option<&dyn Redact>,
    what: &mut Vec<String>,
) -> (Option<Value>, u64) {
    if limit == 0 {
        return (None, 0);
    }
    let whole = raw.is_whole();
    let parsed = if whole {
        serde_json::from_slice::<Value>(&raw.text).ok()
    } else {
        close_prefix(&raw.text).and_then(|(text, open)| {
            let mut v: Value = serde_json::from_slice(&text).ok()?;
            if open {
                drop_open_tail(&mut v, redact);
            }
            Some(v)
        })
    };
    let Some(mut v) = parsed else {
        // Not JSON after all (the proxy forwarded it as such, so this is a capture gone wrong):
        // nothing of it is kept, and all of it is counted as cut.
        return (None, raw.total);
    };
    if let Some(r) = redact {
        redact_all(&mut v, r, what);
    }
    let text = v.to_string();
    if whole && text.len() <= limit {
        return (Some(v), 0);
    }
    let kept = cut_to(&text, limit);
    let len = kept.as_ref().map_or(0, |(_, n)| *n) as u64;
    (kept.map(|(v, _)| v), raw.total.saturating_sub(len).max(1))
}

/// The longest prefix of the JSON text `text` that, closed, is at most `limit` bytes; with its
/// length.
fn cut_to(text: &str, limit: usize) -> Option<(Value, usize)> {
    let mut at = limit.min(text.len());
    // Closing adds a few bytes (a quote, the brackets): cut that much earlier and try again.
    for _ in 0..4 {
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let (closed, _) = close_prefix(&text.as_bytes()[..at])?;
        if closed.len() <= limit || at == 0 {
            let len = closed.len();
            return serde_json::from_slice(&closed).ok().map(|v| (v, len));
        }
        at = at.saturating_sub(closed.len() - limit);
    }
    None
}

/// Every string in `v`, keys and values, through `r`.
fn redact_all(v: &mut Value, r: &dyn Redact, what: &mut Vec<String>) {
    match v {
        Value::String(s) => r.redact(s, what),
        Value::Array(a) => a.iter_mut().for_each(|x| redact_all(x, r, what)),
        Value::Object(m) => {
            let old = std::mem::take(m);
            for (k, mut x) in old {
                // Each string alone would lose its name: `{"password": "..."}` is an
                // assignment only with its key.
                match &mut x {
                    Value::String(s) => r.redact_member(&k, s, what),
                    _ => redact_all(&mut x, r, what),
                }
                let mut k = k;
                r.redact(&mut k, what);
                m.insert(k, x);
            }
        }
        _ => {}
    }
}

/// The string a capture cut open is the last one in the document: its end may be the start of
/// a secret that no pattern can recognise any more, so that end is dropped.
fn drop_open_tail(v: &mut Value, redact: Option<&dyn Redact>) {
    let mut at = v;
    loop {
        at = match at {
            Value::Array(a) => match a.last_mut() {
                Some(x) => x,
                None => return,
            },
            Value::Object(m) => match m.values_mut().next_back() {
                Some(x) => x,
                None => return,
            },
            Value::String(s) => {
                let exact = redact.map_or(0, |r| r.unfinished_tail(s));
                let mut keep = s.len().saturating_sub(OPEN_TAIL.max(exact));
                while !s.is_char_boundary(keep) {
                    keep -= 1;
                }
                s.truncate(keep);
                return;
            }
            _ => return,
        };
    }
}

/// Where a scan of a JSON text is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// A value may start (after `[`, `:`, a `,` in an array, or at the very beginning).
    Value,
    /// A key or `}` (after `{`), or a key (after a `,` in an object).
    Key,
    /// A `:` after a key.
    Colon,
    /// A `,` or the container's end, after a value.
    After,
    /// Inside a string (a key when `key`), which began at byte `start` (its quote).
    Str { key: bool, start: usize },
    /// Inside a number or a literal (`true`, `false`, `null`).
    Word,
}

/// Closes the beginning of a JSON text into a valid JSON text: what cannot be completed (a
/// partial key, number, literal or escape, a dangling comma or colon) is dropped, an open string
/// value is ended, and the open arrays and objects are closed. Also returns whether a string
/// value was cut open (it ends the result). `None` when `prefix` is not the beginning of a JSON
/// value.
pub fn close_prefix(prefix: &[u8]) -> Option<(Vec<u8>, bool)> {
    // A multi-byte character cut in two: its first bytes go.
    let prefix = match std::str::from_utf8(prefix) {
        Ok(_) => prefix,
        Err(e) if e.error_len().is_none() => &prefix[..e.valid_up_to()],
        Err(_) => return None,
    };
    // Open containers (`[` or `{`), innermost last.
    let mut stack: Vec<u8> = Vec::new();
    // The last place the text can end, and how many containers are open there.
    let mut safe: Option<(usize, usize)> = None;
    let mut state = State::Value;
    let mut i = 0;
    let b = prefix;
    while i < b.len() {
        let c = b[i];
        match state {
            State::Str { key, .. } => match c {
                b'\\' => {
                    i += 1;
                }
                b'"' => {
                    state = if key { State::Colon } else { State::After };
                    if !key {
                        safe = Some((i + 1, stack.len()));
                    }
                }
                _ => {}
            },
            State::Word => {
                if matches!(c, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r') {
                    safe = Some((i, stack.len()));
                    state = State::After;
                    continue;
                }
            }
            _ if matches!(c, b' ' | b'\t' | b'\n' | b'\r') => {}
            State::Value => match c {
                b'{' | b'[' => {
                    stack.push(c);
                    safe = Some((i + 1, stack.len()));
                    state = if c == b'{' { State::Key } else { State::Value };
                }
                b']' if stack.last() == Some(&b'[') => {
                    // An empty array.
                    stack.pop();
                    safe = Some((i + 1, stack.len()));
                    state = State::After;
                }
                b'"' => {
                    state = State::Str {
                        key: false,
                        start: i,
                    }
                }
                b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => state = State::Word,
                _ => return None,
            },
            State::Key => match c {
                b'"' => {
                    state = State::Str {
                        key: true,
                        start: i,
                    }
                }
                b'}' if stack.last() == Some(&b'{') => {
                    stack.pop();
                    safe = Some((i + 1, stack.len()));
                    state = State::After;
                }
                _ => return None,
            },
            State::Colon => match c {
                b':' => state = State::Value,
                _ => return None,
            },
            State::After => match (c, stack.last()) {
                (b',', Some(b'{')) => state = State::Key,
                (b',', Some(b'[')) => state = State::Value,
                (b']', Some(b'[')) | (b'}', Some(b'{')) => {
                    stack.pop();
                    safe = Some((i + 1, stack.len()));
                }
                _ => return None,
            },
        }
        i += 1;
    }
    let closers = |open: &[u8]| -> Vec<u8> {
        open.iter()
            .rev()
            .map(|&o| if o == b'{' { b'}' } else { b']' })
            .collect()
    };
    if let State::Str { key: false, start } = state {
        // A string value cut open: end it where its last whole character (or escape) ends.
        let mut end = escape_safe_end(&b[start + 1..]) + start + 1;
        end = end.max(start + 1);
        let mut out = b[..end].to_vec();
        out.push(b'"');
        out.extend(closers(&stack));
        return Some((out, true));
    }
    if state == State::Word && stack.is_empty() && safe.is_none() {
        // A lone number or literal, cut: nothing can be said of it.
        return None;
    }
    let (end, depth) = safe?;
    let mut out = b[..end].to_vec();
    out.extend(closers(&stack[..depth]));
    Some((out, false))
}

/// The length of the longest prefix of a string's content (no quotes) that ends on a whole
/// character: no lone backslash, no partial `\u` escape, no high surrogate waiting for its pair.
fn escape_safe_end(content: &[u8]) -> usize {
    let mut i = 0;
    let mut end = 0;
    while i < content.len() {
        if content[i] != b'\\' {
            i += 1;
            end = i;
            continue;
        }
        match content.get(i + 1) {
            None => break,
            Some(b'u') => {
                let Some(hex) = content.get(i + 2..i + 6) else {
                    break;
                };
                let code = std::str::from_utf8(hex)
                    .ok()
                    .and_then(|h| u16::from_str_radix(h, 16).ok())
                    .unwrap_or(0);
                if (0xD800..0xDC00).contains(&code) {
                    // A high surrogate: whole only with the low one after it.
                    if content.get(i + 6..i + 8) != Some(b"\\u") || content.len() < i + 12 {
                        break;
                    }
                    i += 12;
                } else {
                    i += 6;
                }
            }
            Some(_) => i += 2,
        }
        end = i;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(s: &str) -> String {
        let (text, _) = close_prefix(s.as_bytes()).expect("closes");
        let text = String::from_utf8(text).expect("UTF-8");
        serde_json::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{s:?} -> {text:?}: {e}"));
        text
    }

    #[test]
    fn every_prefix_of_a_json_text_closes_into_valid_json() {
        let doc = r#"{"content":[{"type":"text","text":"line \"one\"\n\u00e9\ud83d\ude00 tail"},{"n":-12.5e3,"ok":true,"no":null,"e":[],"o":{}}],"isError":false}"#;
        for at in 1..=doc.len() {
            if doc.is_char_boundary(at) {
                closed(&doc[..at]);
            }
        }
        assert_eq!(closed(r#"{"a":"xy"#), r#"{"a":"xy"}"#);
        assert_eq!(closed(r#"{"a":[1,2,"#), r#"{"a":[1,2]}"#);
        // A number may have been longer: it goes.
        assert_eq!(closed(r#"{"a":1,"b":12"#), r#"{"a":1}"#);
        assert_eq!(closed(r#"{"a":1,"ke"#), r#"{"a":1}"#);
        assert_eq!(closed(r#"{"a":"x\"#), r#"{"a":"x"}"#);
        assert_eq!(closed(r#"{"a":"x\u00"#), r#"{"a":"x"}"#);
        assert_eq!(closed(r#"{"a":"x\ud83d"#), r#"{"a":"x"}"#);
        assert_eq!(closed(r"["), r"[]");
        assert!(close_prefix(b"12").is_none());
        assert!(close_prefix(b"}").is_none());
        // A character cut in two.
        let e = "\"é".as_bytes();
        assert_eq!(
            close_prefix(&e[..2]).expect("closes").0,
            b"\"\"".to_vec(),
            "the first byte of é goes"
        );
    }

    struct Token(&'static str);

    impl Redact for Token {
        fn redact(&self, s: &mut String, what: &mut Vec<String>) {
            if s.contains(self.0) {
                *s = s.replace(self.0, "[REDACTED:secret T]");
                if !what.iter().any(|w| w == "secret T") {
                    what.push("secret T".into());
                }
            }
        }
        fn unfinished_tail(&self, s: &str) -> usize {
            (1..self.0.len())
                .rev()
                .find(|&n| s.len() >= n && self.0.starts_with(&s[s.len() - n..]))
                .unwrap_or(0)
        }
    }

    fn raw(text: &str, cap: usize) -> RawJson {
        RawJson {
            text: text.as_bytes()[..cap.min(text.len())].to_vec(),
            total: text.len() as u64,
        }
    }

    #[test]
    fn values_are_redacted_before_they_are_cut_and_escapes_do_not_hide_them() {
        let secret = "s3cr3t-value-0123456789";
        let r = Token(secret);
        // An escaped spelling of the value, in a key and in a value.
        let escaped = secret.replace('s', "\\u0073");
        let text = format!(r#"{{"{escaped}":"x {escaped} y","n":1}}"#);
        let capture = CallCapture {
            arguments: Some((raw(&text, usize::MAX), 4096)),
            result: None,
        };
        let audit = capture.finish(Some(&r));
        let json = serde_json::to_string(&audit).expect("serializes");
        assert!(!json.contains(secret) && !json.contains("s3cr3t"), "{json}");
        assert_eq!(audit.redacted, vec!["secret T"]);
        assert_eq!(audit.arguments_cut, 0);
        // A value whose first bytes end the capture is not kept in part.
        let long = format!(r#"{{"text":"{}{}"}}"#, "a".repeat(9000), secret);
        let cap = long.find(secret).expect("there") + 10;
        let audit = CallCapture {
            arguments: None,
            result: Some((raw(&long, cap), 20_000)),
        }
        .finish(Some(&r));
        let json = serde_json::to_string(&audit).expect("serializes");
        assert!(!json.contains(&secret[..10]), "{json}");
        assert!(audit.result_cut > 0, "{audit:?}");
    }

    #[test]
    fn a_long_result_is_cut_to_its_bound_as_valid_json_and_the_cut_is_counted() {
        let text = format!(
            r#"{{"content":[{{"type":"text","text":"{}"}}],"isError":false}}"#,
            "x".repeat(100_000)
        );
        let audit = CallCapture {
            arguments: None,
            result: Some((raw(&text, 4096 + 8192), 4096)),
        }
        .finish(None);
        let result = audit.result.expect("an excerpt");
        let kept = result.to_string().len();
        assert!(kept <= 4096 && kept > 4000, "{kept}");
        assert_eq!(result["content"][0]["type"], "text");
        assert_eq!(audit.result_cut, text.len() as u64 - kept as u64);
        // Small enough: whole, nothing cut.
        let small = r#"{"content":[{"type":"text","text":"hi"}]}"#;
        let audit = CallCapture {
            arguments: None,
            result: Some((raw(small, usize::MAX), 4096)),
        }
        .finish(None);
        assert_eq!(audit.result_cut, 0);
        assert_eq!(audit.result.expect("kept").to_string(), small);
        // A bound of zero keeps nothing.
        let audit = CallCapture {
            arguments: None,
            result: Some((raw(small, usize::MAX), 0)),
        }
        .finish(None);
        assert!(audit.is_empty(), "{audit:?}");
    }
}
