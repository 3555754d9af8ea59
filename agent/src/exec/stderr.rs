//! The server's stderr on its way to exec's: through the same redactor as its stdout (the
//! injected values, the policy's PII kinds and secret shapes), a line at a time.
//!
//! Memory is bounded per line: a line longer than [`MAX_LINE`] is written in parts. A partial
//! line is written once the server has been quiet for [`IDLE_FLUSH`] (a prompt without a
//! newline still shows). Neither cut ever splits an injected value: the bytes at the end that
//! could be the start of one are held back until what follows decides ([`Scrubber::unfinished_tail`]),
//! so a value written in two pieces, however far apart in time, is still caught. Secret shapes
//! and PII are heuristics and are matched within a line or part.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use mcp_guard_model::redact::Scrubber;
use mcp_guard_proxy::secrets::{Redactor, SecretConfig, ShapeAction};

/// The longest line held in memory before a part of it is written.
pub const MAX_LINE: usize = 64 * 1024;

/// How long a partial line waits for its end before it is written.
pub const IDLE_FLUSH: Duration = Duration::from_millis(200);

/// Line-buffered redaction of one byte stream.
pub struct LineRedactor {
    redactor: Redactor,
    exact: Option<Scrubber>,
    shapes: bool,
    buf: Vec<u8>,
}

impl std::fmt::Debug for LineRedactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineRedactor")
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

impl LineRedactor {
    /// The stdout redactor's settings: values and PII always; secret shapes unless the policy
    /// only alerts on them in results (stderr cannot be refused, so `deny` redacts).
    pub fn new(config: &SecretConfig) -> anyhow::Result<Self> {
        Ok(Self {
            redactor: Redactor::new(config)?,
            exact: Scrubber::new(&config.values),
            shapes: config.shapes && config.in_results != ShapeAction::Alert,
            buf: Vec::new(),
        })
    }

    /// Takes what the server wrote; returns what may be written now: its complete lines,
    /// redacted, and the head of a line grown past [`MAX_LINE`].
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        if let Some(nl) = memchr::memrchr(b'\n', &self.buf) {
            let rest = self.buf.split_off(nl + 1);
            let lines = std::mem::replace(&mut self.buf, rest);
            out.extend(self.redact(&lines));
        }
        if self.buf.len() > MAX_LINE {
            out.extend(self.take_settled());
        }
        out
    }

    /// The server is quiet: the partial line, but for a tail that may start a secret value.
    pub fn flush_idle(&mut self) -> Vec<u8> {
        self.take_settled()
    }

    /// The stream ended: everything left.
    pub fn finish(&mut self) -> Vec<u8> {
        let rest = std::mem::take(&mut self.buf);
        self.redact(&rest)
    }

    /// Whether bytes are held.
    pub fn holding(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Redacts and takes the buffer up to the tail that could be the start of a value (cut at
    /// a character boundary).
    fn take_settled(&mut self) -> Vec<u8> {
        let hold = self
            .exact
            .as_ref()
            .map_or(0, |s| s.unfinished_tail(&self.buf));
        let mut cut = self.buf.len() - hold;
        while cut > 0 && cut < self.buf.len() && (self.buf[cut] & 0xC0) == 0x80 {
            cut -= 1;
        }
        let rest = self.buf.split_off(cut);
        let head = std::mem::replace(&mut self.buf, rest);
        self.redact(&head)
    }

    fn redact(&self, bytes: &[u8]) -> Vec<u8> {
        if bytes.is_empty() || self.redactor.redacts_nothing(self.shapes) {
            return bytes.to_vec();
        }
        let mut text = match std::str::from_utf8(bytes) {
            Ok(s) => s.to_string(),
            // Values are replaced on the bytes first: the lossy text keeps no piece of one.
            Err(_) => match &self.exact {
                Some(exact) => String::from_utf8_lossy(&exact.redact_bytes(bytes)).into_owned(),
                None => String::from_utf8_lossy(bytes).into_owned(),
            },
        };
        let mut what = Vec::new();
        self.redactor.redact(&mut text, self.shapes, &mut what);
        text.into_bytes()
    }
}

/// Carries `from` (the server's stderr) to `to` (exec's) through `lines` until `from` ends.
pub async fn carry(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut lines: LineRedactor,
) {
    let mut buf = vec![0u8; 16 * 1024];
    // Set once a quiet spell wrote what it could: the next wait is for more bytes only.
    let mut flushed = false;
    loop {
        let read = if lines.holding() && !flushed {
            tokio::time::timeout(IDLE_FLUSH, from.read(&mut buf))
                .await
                .ok()
        } else {
            Some(from.read(&mut buf).await)
        };
        let out = match read {
            None => {
                flushed = true;
                lines.flush_idle()
            }
            Some(Ok(0) | Err(_)) => {
                let rest = lines.finish();
                let _ = to.write_all(&rest).await;
                let _ = to.flush().await;
                return;
            }
            Some(Ok(n)) => {
                flushed = false;
                lines.push(&buf[..n])
            }
        };
        if !out.is_empty() && (to.write_all(&out).await.is_err() || to.flush().await.is_err()) {
            // exec's stderr is gone: keep draining so the server never blocks on a full pipe.
            while matches!(from.read(&mut buf).await, Ok(n) if n > 0) {}
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "tok-0123456789abcdef";

    fn lines() -> LineRedactor {
        LineRedactor::new(&SecretConfig {
            values: vec![("TOKEN".into(), TOKEN.into())],
            ..SecretConfig::default()
        })
        .expect("compiles")
    }

    fn text(v: Vec<u8>) -> String {
        String::from_utf8(v).expect("UTF-8")
    }

    #[test]
    fn whole_lines_are_redacted_and_written_at_once() {
        let mut l = lines();
        let out = text(l.push(format!("a {TOKEN} b\nkey AKIAIOSFODNN7EXAMPLE\npart").as_bytes()));
        assert_eq!(
            out,
            "a [REDACTED:secret TOKEN] b\nkey [REDACTED:aws-access-key]\n"
        );
        assert_eq!(text(l.finish()), "part");
    }

    #[test]
    fn a_value_split_across_writes_and_quiet_spells_is_still_caught() {
        let mut l = lines();
        let (a, b) = TOKEN.split_at(7);
        assert_eq!(text(l.push(format!("x {a}").as_bytes())), "");
        // Quiet: what cannot be the start of a value goes out, the possible start stays.
        assert_eq!(text(l.flush_idle()), "x ");
        assert_eq!(text(l.flush_idle()), "");
        assert_eq!(text(l.push(b.as_bytes())), "");
        assert_eq!(text(l.flush_idle()), "[REDACTED:secret TOKEN]");
        // A prompt without a newline is written when quiet.
        assert_eq!(text(l.push(b"password: ")), "");
        assert_eq!(text(l.flush_idle()), "password: ");
        assert!(!l.holding());
    }

    #[test]
    fn an_endless_line_is_written_in_bounded_parts() {
        let mut l = lines();
        let mut out = Vec::new();
        let chunk = vec![b'y'; 8192];
        for _ in 0..40 {
            out.extend(l.push(&chunk));
            assert!(l.buf.len() <= MAX_LINE + chunk.len());
        }
        // A value across a part boundary: the tail is held, never half written.
        let (a, b) = TOKEN.split_at(5);
        let mut big = vec![b'z'; MAX_LINE];
        big.extend_from_slice(a.as_bytes());
        out.extend(l.push(&big));
        out.extend(l.push(format!("{b}\n").as_bytes()));
        out.extend(l.finish());
        let s = text(out);
        assert!(!s.contains(a), "half a value was written");
        assert!(
            s.ends_with("z[REDACTED:secret TOKEN]\n"),
            "{}",
            &s[s.len() - 40..]
        );
        assert_eq!(
            s.len(),
            40 * 8192 + MAX_LINE + "[REDACTED:secret TOKEN]\n".len()
        );
    }

    #[tokio::test]
    async fn carry_writes_partial_lines_after_a_quiet_spell() {
        let (mut server, from) = tokio::io::duplex(1024);
        let (to, mut client) = tokio::io::duplex(1024);
        let task = tokio::spawn(carry(from, to, lines()));
        server.write_all(b"ready> ").await.expect("write");
        let mut got = [0u8; 7];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut got))
            .await
            .expect("written within the idle flush")
            .expect("read");
        assert_eq!(&got, b"ready> ");
        server
            .write_all(format!("{TOKEN}\n").as_bytes())
            .await
            .expect("write");
        drop(server);
        let mut rest = String::new();
        client.read_to_string(&mut rest).await.expect("read");
        assert_eq!(rest, "[REDACTED:secret TOKEN]\n");
        task.await.expect("carry ends at EOF");
    }
}
