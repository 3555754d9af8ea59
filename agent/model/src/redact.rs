//! Exact secret values → `[REDACTED:secret NAME]`: the one place that knows how an injected
//! value is found and replaced, wherever text leaves a session (the proxy's results, the
//! server's stderr, records for the store, mcp-guard's own log lines).
//!
//! Values shorter than [`MIN_SECRET_LEN`] are not redacted: they would shred ordinary text.

use std::borrow::Cow;

use aho_corasick::AhoCorasick;

/// Secret values shorter than this are not redacted (they would shred ordinary text).
pub const MIN_SECRET_LEN: usize = 6;

/// The compiled set of one session's injected values.
#[derive(Clone, Debug)]
pub struct Scrubber {
    ac: AhoCorasick,
    names: Vec<String>,
    values: Vec<Vec<u8>>,
}

impl Scrubber {
    /// Compiles `(name, value)` pairs; `None` when no value is long enough to redact (those
    /// too short are named in the log, never their value).
    pub fn new(values: &[(String, String)]) -> Option<Scrubber> {
        let mut names = Vec::new();
        let mut kept = Vec::new();
        for (name, value) in values {
            if value.len() < MIN_SECRET_LEN {
                tracing::warn!(
                    "secret {name} is shorter than {MIN_SECRET_LEN} bytes and cannot be redacted safely"
                );
                continue;
            }
            names.push(name.clone());
            kept.push(value.as_bytes().to_vec());
        }
        if kept.is_empty() {
            return None;
        }
        // Only a failure to build the automaton (size limits) ends here; the values are then
        // refused rather than carried unredacted.
        match AhoCorasick::new(&kept) {
            Ok(ac) => Some(Scrubber {
                ac,
                names,
                values: kept,
            }),
            Err(e) => {
                tracing::error!("cannot compile the secrets' redactor: {e}");
                None
            }
        }
    }

    /// Whether any value occurs in `text`.
    pub fn is_match(&self, text: &[u8]) -> bool {
        self.ac.is_match(text)
    }

    /// The longest value's length.
    pub fn max_len(&self) -> usize {
        self.values.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// Replaces every value in `s` by its marker; notes `secret NAME` in `what` once per name.
    pub fn redact(&self, s: &mut String, what: &mut Vec<String>) {
        if !self.ac.is_match(s.as_str()) {
            return;
        }
        let mut out = String::with_capacity(s.len());
        let mut last = 0;
        for m in self.ac.find_iter(s.as_str()) {
            out.push_str(&s[last..m.start()]);
            let name = &self.names[m.pattern().as_usize()];
            out.push_str(&marker(name));
            let item = format!("secret {name}");
            if !what.contains(&item) {
                what.push(item);
            }
            last = m.end();
        }
        out.push_str(&s[last..]);
        *s = out;
    }

    /// [`Scrubber::redact`] on bytes (which need not be UTF-8).
    pub fn redact_bytes<'a>(&self, b: &'a [u8]) -> Cow<'a, [u8]> {
        if !self.ac.is_match(b) {
            return Cow::Borrowed(b);
        }
        let mut out = Vec::with_capacity(b.len());
        let mut last = 0;
        for m in self.ac.find_iter(b) {
            out.extend_from_slice(&b[last..m.start()]);
            out.extend_from_slice(marker(&self.names[m.pattern().as_usize()]).as_bytes());
            last = m.end();
        }
        out.extend_from_slice(&b[last..]);
        Cow::Owned(out)
    }

    /// How many bytes at the end of `b` could be the start of a value that continues in what
    /// comes next: the longest suffix of `b` that is a proper prefix of some value. Output held
    /// back by that much cannot leak a value split across two writes.
    pub fn unfinished_tail(&self, b: &[u8]) -> usize {
        let longest = self.max_len().saturating_sub(1).min(b.len());
        (1..=longest)
            .rev()
            .find(|&n| {
                let tail = &b[b.len() - n..];
                self.values
                    .iter()
                    .any(|v| v.len() > n && v.starts_with(tail))
            })
            .unwrap_or(0)
    }
}

/// Redacts secrets from a text in place: what a store handle applies to every text of every
/// record (see `StoreHandle::redacting`).
pub trait TextRedactor: Send + Sync {
    /// Replaces the secrets in `text` by markers.
    fn redact_text(&self, text: &mut String);
}

impl TextRedactor for Scrubber {
    fn redact_text(&self, text: &mut String) {
        let mut what = Vec::new();
        self.redact(text, &mut what);
    }
}

/// What replaces a value named `name`.
pub fn marker(name: &str) -> String {
    format!("[REDACTED:secret {name}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrubber() -> Scrubber {
        Scrubber::new(&[
            ("TOKEN".into(), "s3cr3t-value-42".into()),
            ("OTHER".into(), "another-secret".into()),
            ("SHORT".into(), "abc".into()),
        ])
        .expect("values long enough")
    }

    #[test]
    fn values_become_markers_in_text_and_bytes() {
        let s = scrubber();
        let mut text = "a s3cr3t-value-42 b another-secret abc".to_string();
        let mut what = Vec::new();
        s.redact(&mut text, &mut what);
        assert_eq!(
            text,
            "a [REDACTED:secret TOKEN] b [REDACTED:secret OTHER] abc"
        );
        assert_eq!(what, vec!["secret TOKEN", "secret OTHER"]);
        let bytes = b"\xffs3cr3t-value-42\xfe";
        assert_eq!(
            &*s.redact_bytes(bytes),
            b"\xff[REDACTED:secret TOKEN]\xfe".as_slice()
        );
        assert!(matches!(s.redact_bytes(b"clean"), Cow::Borrowed(_)));
        assert!(Scrubber::new(&[("S".into(), "abc".into())]).is_none());
    }

    #[test]
    fn an_unfinished_value_at_the_end_is_measured() {
        let s = scrubber();
        assert_eq!(s.unfinished_tail(b"hello s3cr3t-val"), "s3cr3t-val".len());
        assert_eq!(s.unfinished_tail(b"hello another-"), "another-".len());
        assert_eq!(s.unfinished_tail(b"hello s"), 1);
        assert_eq!(s.unfinished_tail(b"hello world"), 0);
        // A whole value is not unfinished (the redaction of this chunk catches it).
        assert_eq!(s.unfinished_tail(b"x s3cr3t-value-42"), 0);
        assert_eq!(s.unfinished_tail(b""), 0);
    }
}
