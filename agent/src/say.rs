//! What mcp-guard itself writes to stderr: its messages to the user ([`say`], [`say_as_is`]) and
//! its log lines ([`LogWriter`], for `tracing`), with the session's injected secret values
//! redacted.
//!
//! The rule (ARCHITECTURE.md, "Talking to the user"): stdout carries a command's result; a
//! message for the user goes through this module; a diagnostic goes through `tracing`; library
//! crates never print.

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

/// Writes `msg` to stderr, each line prefixed `mcp-guard: `, with the session's injected values
/// redacted ([`for_logs`]).
pub fn say(msg: &str) {
    let msg = for_logs(msg.as_bytes());
    for line in String::from_utf8_lossy(&msg).lines() {
        eprintln!("mcp-guard: {line}");
    }
}

/// Writes `msg` to stderr as it is, redacted like [`say`]: for text that names its own source
/// (a policy error's `FILE:LINE:`, `mcp-guard doctor:`) or reports on stderr what a command
/// did while its stdout holds the result.
pub fn say_as_is(msg: &str) {
    let msg = for_logs(msg.as_bytes());
    eprintln!("{}", String::from_utf8_lossy(&msg));
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
