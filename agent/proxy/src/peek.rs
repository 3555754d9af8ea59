//! The proxy's common path: what it needs from one JSON-RPC message (its id, method, tool and
//! arguments) read straight from the line, without building the whole message as a `Value`.
//!
//! [`Peeker::peek`] scans the line once, checking its syntax and the duplicate-key rule of
//! [`super::frame::parse_strict`] as it goes, and builds nothing but the `params.arguments` the
//! argument checks read. It is conservative: it answers only when the line is certainly one
//! `parse_strict` accepts, of a plain shape (an object with `"jsonrpc": "2.0"`, an integer or
//! string id, a string method), and says `None` at anything unusual (an escaped key, a `\u`
//! escape of a surrogate, a long or huge number, deep nesting, a batch). The proxy then takes
//! its full path, which also produces the exact error for a bad line.

use std::{borrow::Cow, collections::HashSet};

use serde_json::Value;

use super::frame::{fold_case, parse_strict, same_key};

/// A JSON-RPC id as peeked (an integer or a string; other ids take the full path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeekId<'a> {
    /// A non-negative integer.
    Unsigned(u64),
    /// A negative integer.
    Negative(i64),
    /// A string.
    Str(Cow<'a, str>),
}

impl PeekId<'_> {
    /// The id as JSON text, exactly as `Value::to_string` renders it (the session's key).
    pub fn key(&self) -> String {
        let mut key = String::with_capacity(20);
        self.write_key(&mut key);
        key
    }

    /// [`PeekId::key`] into `out` (cleared first), so that a lookup can reuse one buffer.
    pub fn write_key(&self, out: &mut String) {
        out.clear();
        match self {
            PeekId::Unsigned(n) => push_decimal(out, *n),
            PeekId::Negative(n) => {
                use std::fmt::Write as _;
                // Writing to a String cannot fail.
                let _ = write!(out, "{n}");
            }
            // Serializing a string cannot fail.
            PeekId::Str(s) => out.push_str(&serde_json::to_string(s.as_ref()).unwrap_or_default()),
        }
    }
}

/// What a peek read from a message: a request (id and method), a notification (method) or a
/// response (id, with exactly one of `result` and `error`).
#[derive(Debug, Default)]
pub struct Peek<'a> {
    /// The id (`None`: a notification).
    pub id: Option<PeekId<'a>>,
    /// The method (`None`: a response).
    pub method: Option<Cow<'a, str>>,
    /// `params.name`, when it is a string (the tool of a `tools/call`).
    pub tool: Option<Cow<'a, str>>,
    /// `params.arguments`, parsed (the argument checks read it).
    pub arguments: Option<Value>,
    /// Where `params`, `params.arguments` and `result` are in the line (the history copies
    /// their text).
    pub spans: Spans,
}

/// Where some members are in the line, as byte ranges of their values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Spans {
    /// `params`, when it is an object.
    pub params: Option<Span>,
    /// `params.arguments`.
    pub arguments: Option<Span>,
    /// `result`.
    pub result: Option<Span>,
}

/// Reads what the proxy needs from `raw` (one line, no newline), or `None` when the line is not
/// certainly a plain, well-formed JSON-RPC 2.0 message (see the module documentation).
pub fn peek(raw: &[u8]) -> Option<Peek<'_>> {
    Peeker::default().peek(raw)
}

/// Peeks at messages, keeping its scratch space from one to the next.
#[derive(Debug, Default)]
pub struct Peeker {
    /// The keys of the objects being scanned (as spans of the line), innermost object last.
    keys: Vec<(usize, usize)>,
}

/// A value's span in the line.
pub type Span = (usize, usize);

/// Deeper than this, the full path decides (`serde_json`'s own limit is 128).
const MAX_DEPTH: usize = 100;

/// Objects up to this many members are checked for duplicate keys by comparing each new key
/// with the ones before (as `parse_strict` does); larger ones by a set of folded keys.
const SCAN_KEYS: usize = 16;

impl Peeker {
    /// See [`peek`].
    pub fn peek<'a>(&mut self, raw: &'a [u8]) -> Option<Peek<'a>> {
        // Every string in the line is then valid UTF-8, as serde_json requires.
        let text = std::str::from_utf8(raw).ok()?;
        self.keys.clear();
        let mut s = Scanner {
            b: raw,
            text,
            ascii: raw.is_ascii(),
            i: 0,
            keys: &mut self.keys,
            params: [None; 2],
            params_span: None,
        };
        s.ws();
        if s.b.get(s.i) != Some(&b'{') {
            return None;
        }
        let mut top = [None; 5];
        s.object(0, &["jsonrpc", "id", "method", "result", "error"], &mut top)?;
        let [name, arguments] = s.params;
        s.ws();
        if s.i != raw.len() {
            return None;
        }
        let [jsonrpc, id, method, result, error] = top;
        if jsonrpc.map(|(a, b)| &raw[a..b]) != Some(b"\"2.0\"") {
            return None;
        }
        let mut peek = Peek {
            id: match id {
                Some(span) => Some(id_at(text, span)?),
                None => None,
            },
            method: match method {
                Some(span) => Some(plain_str(text, span)?),
                None => None,
            },
            spans: Spans {
                params: s.params_span,
                arguments,
                result,
            },
            ..Peek::default()
        };
        match (&peek.method, &peek.id) {
            (Some(_), _) => {}
            (None, Some(_)) if result.is_some() != error.is_some() => {}
            _ => return None,
        }
        // `name` only when a plain string: an escaped one takes the full path.
        if let Some((a, b)) = name
            && raw[a] == b'"'
        {
            peek.tool = Some(plain_str(text, (a, b))?);
        }
        if let Some((a, b)) = arguments {
            peek.arguments = Some(parse_strict(&raw[a..b]).ok()?);
        }
        Some(peek)
    }
}

/// The id at `span`: an integer or a string without escapes.
fn id_at(text: &str, (a, b): Span) -> Option<PeekId<'_>> {
    let t = &text[a..b];
    if t.starts_with('"') {
        return plain_str(text, (a, b)).map(PeekId::Str);
    }
    if let Some(n) = t.strip_prefix('-') {
        // "-0" is the integer 0 to serde_json: the full path renders it.
        if n.bytes().all(|c| c.is_ascii_digit()) && n != "0" {
            return t.parse().ok().map(PeekId::Negative);
        }
        return None;
    }
    if t.bytes().all(|c| c.is_ascii_digit()) {
        return t.parse().ok().map(PeekId::Unsigned);
    }
    None
}

/// The string at `span` (with its quotes) when it has no escapes.
fn plain_str(text: &str, (a, b): Span) -> Option<Cow<'_, str>> {
    let t = text[a..b].strip_prefix('"')?.strip_suffix('"')?;
    (!t.contains('\\')).then_some(Cow::Borrowed(t))
}

/// The bytes that end a plain run inside a string: the closing quote, a backslash, and the
/// control characters JSON requires escaped.
const STRING_STOP: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        table[c] = true;
        c += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

struct Scanner<'s, 'k> {
    b: &'s [u8],
    text: &'s str,
    /// The whole line is ASCII, so every key is (and compares without case folding).
    ascii: bool,
    i: usize,
    keys: &'k mut Vec<Span>,
    /// `name` and `arguments` of the top-level `params`, when it is an object.
    params: [Option<Span>; 2],
    /// The top-level `params`, when it is an object.
    params_span: Option<Span>,
}

impl Scanner<'_, '_> {
    /// Skips JSON whitespace.
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.b.get(self.i) == Some(&c)).then(|| self.i += 1)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.b[self.i..]
            .starts_with(word)
            .then(|| self.i += word.len())
    }

    /// One value; returns its span.
    fn value(&mut self, depth: usize) -> Option<Span> {
        let start = self.i;
        match self.b.get(self.i)? {
            b'{' => self.object(depth + 1, &[], &mut [])?,
            b'[' => self.array(depth + 1)?,
            b'"' => {
                self.string()?;
            }
            b't' => self.literal(b"true")?,
            b'f' => self.literal(b"false")?,
            b'n' => self.literal(b"null")?,
            b'-' | b'0'..=b'9' => self.number()?,
            _ => return None,
        }
        Some((start, self.i))
    }

    /// A string (at its opening quote); returns whether it has escapes.
    fn string(&mut self) -> Option<bool> {
        self.eat(b'"')?;
        let mut escaped = false;
        loop {
            // To the next byte that needs a look, one table load per byte: the strings of a
            // message are short, and a memchr call per string measured dearer than this.
            // None: the line ends inside the string.
            let rest = self.b.get(self.i..)?;
            self.i += rest.iter().position(|&c| STRING_STOP[usize::from(c)])?;
            match self.b[self.i] {
                b'"' => {
                    self.i += 1;
                    return Some(escaped);
                }
                b'\\' => {
                    escaped = true;
                    match *self.b.get(self.i + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                        b'u' => {
                            let hex = self.text.get(self.i + 2..self.i + 6)?;
                            let code = u16::from_str_radix(hex, 16).ok()?;
                            // A surrogate must pair up: the full path checks that.
                            if (0xD800..=0xDFFF).contains(&code)
                                || !hex.bytes().all(|c| c.is_ascii_hexdigit())
                            {
                                return None;
                            }
                            self.i += 6;
                        }
                        _ => return None,
                    }
                }
                // Control characters must be escaped.
                _ => return None,
            }
        }
    }

    /// A number: integers of up to 18 digits, and decimals with up to 17 digits and a two-digit
    /// exponent (certainly finite); anything longer takes the full path.
    fn number(&mut self) -> Option<()> {
        self.eat(b'-');
        let digits = |s: &mut Self| {
            let from = s.i;
            while s.b.get(s.i).is_some_and(u8::is_ascii_digit) {
                s.i += 1;
            }
            s.i - from
        };
        let int = match self.b.get(self.i)? {
            b'0' => {
                self.i += 1;
                1
            }
            b'1'..=b'9' => digits(self),
            _ => return None,
        };
        let mut frac = 0;
        if self.eat(b'.').is_some() {
            frac = digits(self);
            if frac == 0 {
                return None;
            }
        }
        let mut exp = None;
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            exp = Some(digits(self));
        }
        match exp {
            None if frac == 0 => (int <= 18).then_some(()),
            None => (int + frac <= 17).then_some(()),
            Some(e) => ((1..=2).contains(&e) && int + frac <= 17).then_some(()),
        }
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.eat(b'[')?;
        self.ws();
        if self.eat(b']').is_some() {
            return Some(());
        }
        loop {
            self.ws();
            self.value(depth)?;
            self.ws();
            match *self.b.get(self.i)? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// An object; the spans of the members named in `names` go to `found` (same order).
    fn object(&mut self, depth: usize, names: &[&str], found: &mut [Option<Span>]) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.eat(b'{')?;
        self.ws();
        if self.eat(b'}').is_some() {
            return Some(());
        }
        let base = self.keys.len();
        let mut folded: Option<HashSet<String>> = None;
        loop {
            self.ws();
            let from = self.i;
            // An escaped key is compared decoded by the full path.
            if self.string()? {
                return None;
            }
            let key = (from + 1, self.i - 1);
            let text = self.text;
            let k = &text[key.0..key.1];
            let seen = &self.keys[base..];
            let dup = if seen.len() < SCAN_KEYS {
                seen.iter().any(|&(a, b)| {
                    // Only outside ASCII can folding change a key's length (and need more).
                    if self.ascii {
                        text[a..b].eq_ignore_ascii_case(k)
                    } else {
                        same_key(&text[a..b], k)
                    }
                })
            } else {
                let set = folded.get_or_insert_with(|| {
                    seen.iter().map(|&(a, b)| fold_case(&text[a..b])).collect()
                });
                !set.insert(fold_case(k))
            };
            if dup {
                return None;
            }
            self.keys.push(key);
            self.ws();
            self.eat(b':')?;
            self.ws();
            if depth == 0 && k == "params" && self.b.get(self.i) == Some(&b'{') {
                // Read in the same pass, not scanned again afterwards.
                let mut params = [None; 2];
                let start = self.i;
                self.object(1, &["name", "arguments"], &mut params)?;
                self.params = params;
                self.params_span = Some((start, self.i));
            } else {
                let span = self.value(depth)?;
                if let Some(slot) = names.iter().position(|n| *n == k) {
                    found[slot] = Some(span);
                }
            }
            self.ws();
            match *self.b.get(self.i)? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    self.keys.truncate(base);
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

/// Appends `n` in decimal: `format!` costs more than the rest of opening a call.
pub(crate) fn push_decimal(s: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        // A digit: n % 10 < 10.
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits: always UTF-8.
    s.push_str(std::str::from_utf8(&digits[i..]).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Kind, classify, parse_strict};

    /// `peek` answers exactly when the full path would classify the line, and agrees with it.
    fn agrees(line: &str) {
        let full = parse_strict(line.as_bytes())
            .ok()
            .and_then(|v| classify(&v).ok().map(|k| (k, v)));
        let Some(p) = peek(line.as_bytes()) else {
            return;
        };
        let (kind, v) =
            full.unwrap_or_else(|| panic!("peek accepted what parse_strict refuses: {line}"));
        let method = p.method.as_deref();
        match kind {
            Kind::Request { id, method: m } => {
                assert_eq!(method, Some(m.as_str()), "{line}");
                assert_eq!(
                    p.id.as_ref().map(PeekId::key),
                    Some(id.to_string()),
                    "{line}"
                );
            }
            Kind::Notification { method: m } => {
                assert_eq!(method, Some(m.as_str()), "{line}");
                assert!(p.id.is_none(), "{line}");
            }
            Kind::Response { id } => {
                assert!(method.is_none(), "{line}");
                assert_eq!(
                    p.id.as_ref().map(PeekId::key),
                    Some(id.to_string()),
                    "{line}"
                );
            }
        }
        let params = v.get("params");
        assert_eq!(
            p.tool.as_deref(),
            params.and_then(|p| p.get("name")).and_then(Value::as_str),
            "{line}"
        );
        assert_eq!(
            p.arguments.as_ref(),
            params.and_then(|p| p.get("arguments")),
            "{line}"
        );
        // The spans hold exactly the members' values.
        let at = |span: Option<Span>| {
            span.map(|(a, b)| parse_strict(&line.as_bytes()[a..b]).expect("a value"))
        };
        assert_eq!(
            at(p.spans.arguments).as_ref(),
            params.and_then(|p| p.get("arguments"))
        );
        assert_eq!(at(p.spans.result).as_ref(), v.get("result"), "{line}");
        if params.is_some_and(Value::is_object) {
            assert_eq!(at(p.spans.params).as_ref(), params, "{line}");
        }
    }

    #[test]
    fn peeks_the_plain_shapes_like_the_full_path() {
        let call = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}"#;
        let p = peek(call.as_bytes()).expect("a plain request");
        assert_eq!(p.id, Some(PeekId::Unsigned(7)));
        assert_eq!(p.method.as_deref(), Some("tools/call"));
        assert_eq!(p.tool.as_deref(), Some("echo"));
        assert_eq!(p.arguments, Some(serde_json::json!({"message": "hi"})));
        for line in [
            call,
            r#"{"jsonrpc":"2.0","id":"a-b","result":{"t":"x\ny\u00e9\"","n":[1.5,-2e10,0,true,false,null]}}"#,
            r#" { "id" : -3 , "error" : {"code":1,"message":"x"}, "jsonrpc" : "2.0" } "#,
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":[1,2]}"#,
            r#"{"jsonrpc":"2.0","id":"x","method":"m","params":{"name":1}}"#,
            r#"{"jsonrpc":"2.0","id":999999999999999999,"result":"é"}"#,
        ] {
            assert!(peek(line.as_bytes()).is_some(), "{line}");
            agrees(line);
        }
    }

    #[test]
    fn leaves_the_unusual_to_the_full_path() {
        // Lines parse_strict accepts, but where the peek would have to decode or convert more
        // than it does: it declines, and the full path handles them.
        for line in [
            r#"{"jsonrpc":"2.0","id":"a\"b","result":{}}"#,
            r#"{"jsonrpc":"2.0","id":"\u0041","method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"name":"e\u0063ho"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"\u0061":1}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":"\ud83d\ude00"}"#,
            r#"{"jsonrpc":"2.0","id":18446744073709551615,"result":null}"#,
            r#"{"jsonrpc":"2.0","id":-0,"result":null}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":12345678901234567890123}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":1.5e300}"#,
        ] {
            assert!(parse_strict(line.as_bytes()).is_ok(), "{line}");
            assert!(peek(line.as_bytes()).is_none(), "{line}");
        }
    }

    #[test]
    #[expect(
        clippy::unicode_not_nfc,
        reason = "the Kelvin sign, not its NFC form `K`, is the case"
    )]
    fn leaves_everything_else_to_the_full_path() {
        for line in [
            // Duplicate keys, at any depth, also differing in case or spelled with escapes.
            r#"{"jsonrpc":"2.0","id":1,"id":2,"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"a":1,"A":2}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"arguments":{"x":1,"\u0078":2}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"name":"a","Name":"b"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":[{"k":1,"K":1}]}"#,
            // Outside ASCII, where folding can change a key's length (the Kelvin sign is `k`).
            r#"{"jsonrpc":"2.0","id":1,"result":{"Été":1,"étÉ":2}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"K":1,"k":2}}"#,
            // Not plain JSON-RPC.
            r#"[{"jsonrpc":"2.0","id":1,"result":{}}]"#,
            r#"{"jsonrpc":"2.0","id":1.5,"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":null,"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":{},"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
            r#"{"jsonrpc":"1.0","id":1,"result":{}}"#,
            r#"{"jsonrpc":"2.0","method":7}"#,
            r#"{"jsonrpc":"2.0"}"#,
            // Not JSON.
            r#"{"jsonrpc":"2.0","id":1,"result":{}} x"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{]}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":[1,]}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"a":1,}}"#,
            r#"{"jsonrpc":"2.0","id":01,"result":1}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":1.}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":-}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":tru}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":"\x"}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":"\u12"}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":"\u+123"}"#,
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"a\tb\"}",
            r#"{"jsonrpc":"2.0","id":1,"result":{}"#,
            "\u{1}",
        ] {
            assert!(peek(line.as_bytes()).is_none(), "{line}");
        }
        assert!(peek(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"\xff\"}").is_none());
        // Deeper than serde_json's recursion limit, as parse_strict refuses it too.
        let deep = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(parse_strict(deep.as_bytes()).is_err());
        assert!(peek(deep.as_bytes()).is_none());
    }

    #[test]
    fn large_objects_are_checked_for_duplicates_too() {
        let members: Vec<String> = (0..40).map(|i| format!(r#""k{i}":{i}"#)).collect();
        let ok = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{{}}}}}"#,
            members.join(",")
        );
        assert!(peek(ok.as_bytes()).is_some());
        let dup = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{{},"K39":0}}}}"#,
            members.join(",")
        );
        assert!(peek(dup.as_bytes()).is_none());
        assert!(parse_strict(dup.as_bytes()).is_err());
    }

    #[test]
    fn decimals() {
        for n in [0, 7, 10, 12345, u64::MAX] {
            let mut s = String::from("x-");
            push_decimal(&mut s, n);
            assert_eq!(s, format!("x-{n}"));
        }
    }
}
