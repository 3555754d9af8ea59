//! What mcp-guard itself writes to stderr: its log lines and messages, with the session's
//! injected secret values redacted.

use std::{borrow::Cow, sync::OnceLock};

use mcp_guard_model::redact::Scrubber;

/// The values of this process's session, for its log lines (one session per exec process or
/// session worker). Set once, when the launcher has read them.
static FOR_LOGS: OnceLock<Scrubber> = OnceLock::new();

/// Makes [`for_logs`] redact `scrubber`'s values from now on (the first call wins: a process
/// runs one session).
pub fn install_for_logs(scrubber: Scrubber) {
    let _ = FOR_LOGS.set(scrubber);
}

/// `text` with this process's session's values redacted (as is when none are installed).
pub fn for_logs(text: &[u8]) -> Cow<'_, [u8]> {
    match FOR_LOGS.get() {
        Some(s) => s.redact_bytes(text),
        None => Cow::Borrowed(text),
    }
}

/// A writer for log lines that redacts [`for_logs`] from each write: the log formatter writes
/// one whole event per call, so a value is never split between two writes.
#[derive(Debug)]
pub struct LogWriter<W>(pub W);

impl<W: std::io::Write> std::io::Write for LogWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(&for_logs(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
