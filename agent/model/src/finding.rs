//! What the proxy's interceptors report: a finding, which the session's analysis turns into an
//! alert (severity, id) the way it does the detection rules' own.

use serde::Serialize;

/// Something an interceptor noticed that is worth an alert (a poisoned description, a changed pin).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// Server name.
    pub server: String,
    /// Session id.
    pub session: String,
    /// RFC 3339 with nanoseconds.
    pub ts: String,
    /// Short rule name, e.g. `tool-poisoning`, `tool-changed`, `secret-in-result`.
    pub rule: String,
    /// The tool concerned, if any.
    pub tool: Option<String>,
    /// What was found and what was done.
    pub summary: String,
}
