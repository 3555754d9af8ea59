//! One kernel event of a guarded server, attributed to a call.

use serde::{Deserialize, Serialize};

use super::{Attribution, EventKind, Timestamp, Verdict, is_false};

/// The `kind` of an event that stands for kernel events the session lost (`detail` names the
/// reason and the count).
pub const LOST_KIND: &str = "lost";

/// One thing a guarded server did in the kernel (or that was done about it), attributed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Event id (unique in the store).
    pub event_id: String,
    /// When it happened (wall clock).
    pub ts: Timestamp,
    /// Server name.
    pub server: String,
    /// Session id.
    pub session: String,
    /// Process id (0 for events made by mcp-guard itself, such as `resolve`).
    pub pid: u32,
    /// What happened.
    pub kind: EventKind,
    /// File or program path (`open`, `exec`, `killed`).
    pub path: Option<String>,
    /// Destination IP address (`connect`, `sendmsg`).
    pub addr: Option<String>,
    /// Destination port (`connect`, `sendmsg`).
    pub port: Option<u16>,
    /// The host name the server resolved `addr` from, per its own DNS (`connect`, `sendmsg`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The outcome.
    pub verdict: Verdict,
    /// The call it is attributed to; `None` unless `attribution` is `call`.
    pub call_id: Option<String>,
    /// How it was attributed.
    pub attribution: Attribution,
    /// With `ambiguous`: every call that was in flight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<String>,
    /// open(2) flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<u32>,
    /// The syscall's result: an fd or count, or `-errno`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<i64>,
    /// exec arguments (possibly truncated by the kernel program).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    /// Transport (`tcp`, `udp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    /// Observe mode let it through, but the policy would have denied it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub would_deny: bool,
    /// Anything else kind-specific (a resolve's name and addresses, a kill's signal), as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

impl EventRecord {
    /// An event with what every event has; the kind-specific fields empty, `allowed`, not
    /// attributed.
    pub fn new(
        event_id: String,
        ts: Timestamp,
        server: &str,
        session: &str,
        pid: u32,
        kind: EventKind,
    ) -> Self {
        EventRecord {
            event_id,
            ts,
            server: server.to_string(),
            session: session.to_string(),
            pid,
            kind,
            path: None,
            addr: None,
            port: None,
            host: None,
            verdict: Verdict::Allowed,
            call_id: None,
            attribution: Attribution::None,
            candidates: Vec::new(),
            flags: None,
            result: None,
            argv: None,
            proto: None,
            would_deny: false,
            detail: None,
        }
    }

    /// A `lost` event: `n` kernel events of `session` (or, from the agent, of all its sessions)
    /// were lost or incomplete for `reason` (kept in `detail` as `{"reason": .., "count": ..}`);
    /// what the agent counts as `mcp_guard_events_dropped_total{reason}`.
    pub fn lost(event_id: String, server: &str, session: &str, reason: &str, n: u64) -> Self {
        EventRecord {
            result: i64::try_from(n).ok(),
            detail: Some(serde_json::json!({ "reason": reason, "count": n })),
            ..Self::new(
                event_id,
                Timestamp::now(),
                server,
                session,
                0,
                EventKind::Other(LOST_KIND.to_string()),
            )
        }
    }
}
