//! An alert: a detection rule fired.

use serde::{Deserialize, Serialize};

use super::{Severity, Timestamp};

/// A detection rule fired. The store keeps one per session, rule, tool and evidence (the
/// summary, which names what was seen): a repeat raises its `count` and `last_seen`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "AlertWire")]
pub struct AlertRecord {
    /// Alert id (unique in the store).
    pub alert_id: String,
    /// When it first fired.
    pub ts: Timestamp,
    /// Server name.
    pub server: String,
    /// Session id.
    pub session: String,
    /// Rule name, e.g. `sensitive-read`.
    pub rule: String,
    /// How bad.
    pub severity: Severity,
    /// The call it concerns, if any.
    pub call_id: Option<String>,
    /// That call's tool, if any.
    pub tool: Option<String>,
    /// One line for humans.
    pub summary: String,
    /// The events that made it fire.
    pub event_ids: Vec<String>,
    /// What mcp-guard did about it (`alert`, `deny-call`, `kill`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// How many times it fired in its session (1 for a producer's new alert).
    pub count: u64,
    /// When it last fired (`ts` for a producer's new alert).
    pub last_seen: Timestamp,
}

/// An alert as JSON may hold it: records written before alerts were counted lack `count` and
/// `last_seen` (they fired once, at `ts`).
#[derive(Deserialize)]
struct AlertWire {
    alert_id: String,
    ts: Timestamp,
    server: String,
    session: String,
    rule: String,
    severity: Severity,
    call_id: Option<String>,
    tool: Option<String>,
    summary: String,
    event_ids: Vec<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    count: Option<u64>,
    #[serde(default)]
    last_seen: Option<Timestamp>,
}

impl From<AlertWire> for AlertRecord {
    fn from(w: AlertWire) -> Self {
        AlertRecord {
            last_seen: w.last_seen.unwrap_or(w.ts),
            count: w.count.unwrap_or(1).max(1),
            alert_id: w.alert_id,
            ts: w.ts,
            server: w.server,
            session: w.session,
            rule: w.rule,
            severity: w.severity,
            call_id: w.call_id,
            tool: w.tool,
            summary: w.summary,
            event_ids: w.event_ids,
            action: w.action,
        }
    }
}
