//! What a JSON line's strings say, looked at in bounded windows: the line with every escape
//! decoded, handed to a check a window at a time, so that a short pattern can be looked for in
//! a message's strings without building them (a large message is never copied whole).
//!
//! A backslash occurs in valid JSON only inside a string, as an escape, so decoding the escapes
//! of the whole line leaves every string (and object key) as it is once parsed, whole and in a
//! row, between the line's other bytes.

/// Decoded bytes handed to the check at once (beyond the overlap carried from the window before).
const WINDOW: usize = 64 * 1024;

/// Calls `check` on successive windows of `line` with its escapes decoded, until it returns
/// true (then `Some(true)`) or the line is done (`Some(false)`). Consecutive windows overlap by
/// at least `reach - 1` bytes, so every stretch of the decoded text up to `reach` bytes long is
/// whole in some window: a check that is true of such a stretch sees it. `None` when the line
/// has an escape JSON does not allow, a lone surrogate, or invalid UTF-8 (the caller then
/// decides without this).
pub fn any_window(line: &[u8], reach: usize, check: impl FnMut(&str) -> bool) -> Option<bool> {
    let window = WINDOW.max(reach.saturating_mul(2));
    let mut w = Windows {
        buf: Vec::with_capacity(window + reach + 4),
        window,
        keep: reach.saturating_sub(1),
        check,
    };
    let mut rest = line;
    loop {
        let plain = memchr::memchr(b'\\', rest).unwrap_or(rest.len());
        for piece in rest[..plain].chunks(window) {
            if w.push(piece)? {
                return Some(true);
            }
        }
        rest = &rest[plain..];
        if rest.is_empty() {
            return w.flush();
        }
        let (ch, used) = escape(rest)?;
        let mut utf8 = [0u8; 4];
        if w.push(ch.encode_utf8(&mut utf8).as_bytes())? {
            return Some(true);
        }
        rest = &rest[used..];
    }
}

struct Windows<F> {
    buf: Vec<u8>,
    window: usize,
    /// Bytes of a checked window carried into the next.
    keep: usize,
    check: F,
}

impl<F: FnMut(&str) -> bool> Windows<F> {
    /// Appends decoded bytes; checks the window once it is full.
    fn push(&mut self, bytes: &[u8]) -> Option<bool> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() < self.window + self.keep {
            return Some(false);
        }
        self.flush()
    }

    /// Checks what is buffered (up to its last whole character) and keeps the overlap.
    fn flush(&mut self) -> Option<bool> {
        let end = boundary_at_or_before(&self.buf, self.buf.len());
        let text = std::str::from_utf8(&self.buf[..end]).ok()?;
        if (self.check)(text) {
            return Some(true);
        }
        let start = boundary_at_or_before(&self.buf, end.saturating_sub(self.keep));
        self.buf.drain(..start);
        Some(false)
    }
}

/// The last character boundary of `b` at or before `i`.
fn boundary_at_or_before(b: &[u8], mut i: usize) -> usize {
    // A UTF-8 continuation byte is 0b10xx_xxxx.
    while i > 0 && i < b.len() && b[i] & 0xC0 == 0x80 {
        i -= 1;
    }
    i
}

/// The character the escape at the start of `s` stands for, and its length in the line.
fn escape(s: &[u8]) -> Option<(char, usize)> {
    let ch = match *s.get(1)? {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let hi = hex4(s.get(2..6)?)?;
            if !(0xD800..0xE000).contains(&hi) {
                return Some((char::from_u32(hi)?, 6));
            }
            // A surrogate pair: a high one, then `\u` and a low one.
            if hi >= 0xDC00 || s.get(6..8)? != b"\\u" {
                return None;
            }
            let lo = hex4(s.get(8..12)?)?;
            if !(0xDC00..0xE000).contains(&lo) {
                return None;
            }
            return Some((
                char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))?,
                12,
            ));
        }
        _ => return None,
    };
    Some((ch, 2))
}

fn hex4(h: &[u8]) -> Option<u32> {
    u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decoded text as the windows cover it, overlaps removed.
    fn decoded(line: &str) -> Option<String> {
        let mut out = String::new();
        any_window(line.as_bytes(), 1, |w| {
            out.push_str(w);
            false
        })?;
        Some(out)
    }

    #[test]
    fn escapes_are_decoded_as_json_decodes_them() {
        let v = serde_json::json!({"t": "a\nb\t\"c\"\\d/\u{8}\u{c}\r é 😀 \u{1b}"});
        let line = v.to_string();
        let expected = format!("{{\"t\":\"{}\"}}", v["t"].as_str().expect("a string"));
        assert_eq!(decoded(&line).as_deref(), Some(expected.as_str()));
        assert_eq!(
            decoded(r#"{"t":"\u0041\u00e9\ud83d\ude00\/"}"#).as_deref(),
            Some("{\"t\":\"Aé😀/\"}")
        );
        for bad in [
            r#""\ud83d""#,
            r#""\ude00x""#,
            r#""\x""#,
            r#""\u12""#,
            "\"\\",
        ] {
            assert_eq!(decoded(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_short_stretch_is_whole_in_some_window() {
        // A needle across every window boundary: at each offset around the first boundaries,
        // with escapes and multi-byte characters before it.
        let needle = "ghp_needle";
        for pad in [0, 1, 2, 3, 7, 9] {
            for at in (WINDOW - 12)..(WINDOW + 12) {
                let mut text = "é\\n".repeat(pad);
                text.push_str(&"x".repeat(at));
                text.push_str(needle);
                text.push_str(&"y".repeat(WINDOW * 2));
                let line = format!("{{\"t\":\"{text}\"}}");
                let found = any_window(line.as_bytes(), needle.len(), |w| w.contains(needle));
                assert_eq!(found, Some(true), "pad {pad}, at {at}");
            }
        }
        let line = format!("{{\"t\":\"{}\"}}", "z\\n".repeat(3 * WINDOW));
        assert_eq!(
            any_window(line.as_bytes(), 4, |w| w.contains("ghp_")),
            Some(false)
        );
    }
}
