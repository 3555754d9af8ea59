//! The records the store keeps: plain data, field names exactly as DESIGN.md's JSON contract.
//!
//! Producers (the proxy, the kernel event reader, the correlator, the detector) convert their own
//! types into these; nothing here knows about those modules.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::timestamp::Timestamp;

use crate::audit::CallAudit;

/// The `kind` of an event that stands for kernel events the session lost (`detail` names the
/// reason and the count).
pub const LOST_KIND: &str = "lost";

/// A string that was not one of an enum's names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?} (expected one of: {expected})")]
pub struct UnknownName {
    what: &'static str,
    value: String,
    expected: &'static str,
}

/// Closed enums stored and printed as their lowercase names.
macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident, $what:literal { $($(#[$vm:meta])* $variant:ident = $s:literal,)+ }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vm])* $variant,)+
        }

        impl $name {
            /// The contract name.
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $s,)+ }
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($s => Ok(Self::$variant),)+
                    _ => Err(UnknownName {
                        what: $what,
                        value: s.to_string(),
                        expected: concat!($($s, " "),+),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named_enum!(
    /// What mcp-guard did with a tool call.
    Decision, "decision" {
        /// Forwarded unchanged.
        Allowed = "allowed",
        /// Refused; the client got a JSON-RPC error.
        Denied = "denied",
        /// Forwarded after an interceptor changed the request or the response.
        Modified = "modified",
    }
);

named_enum!(
    /// What happened to a kernel action.
    Verdict, "verdict" {
        /// It went through (in observe mode also when the policy would deny it; see `would_deny`).
        Allowed = "allowed",
        /// It was refused (EPERM/EACCES).
        Denied = "denied",
        /// The process was killed for it.
        Killed = "killed",
    }
);

named_enum!(
    /// How an event was tied to a tool call.
    Attribution, "attribution" {
        /// Exactly one call was in flight: `call_id` names it.
        Call = "call",
        /// Several calls were in flight: `candidates` lists them, `call_id` is null.
        Ambiguous = "ambiguous",
        /// No call was in flight (startup, background work).
        None = "none",
    }
);

named_enum!(
    /// How bad an alert is.
    Severity, "severity" {
        /// Worth knowing.
        Info = "info",
        /// Unusual.
        Low = "low",
        /// Suspicious.
        Medium = "medium",
        /// Likely an attack.
        High = "high",
        /// An attack in progress.
        Critical = "critical",
    }
);

/// What kind of kernel event (the contract's `kind`). Kinds a newer mcp-guard writes read back as
/// [`EventKind::Other`] rather than failing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A program executed (execve/execveat).
    Exec,
    /// A file opened.
    Open,
    /// A connect(2).
    Connect,
    /// A sendmsg/sendto with a destination.
    Sendmsg,
    /// An allowlisted host name (re)resolved by mcp-guard.
    Resolve,
    /// mcp-guard killed the process.
    Killed,
    /// Any other kind, by name.
    Other(String),
}

impl EventKind {
    /// The contract name.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Exec => "exec",
            Self::Open => "open",
            Self::Connect => "connect",
            Self::Sendmsg => "sendmsg",
            Self::Resolve => "resolve",
            Self::Killed => "killed",
            Self::Other(s) => s,
        }
    }

    /// Kind from its name; never fails (unknown names become `Other`).
    pub fn from_name(s: &str) -> Self {
        match s {
            "exec" => Self::Exec,
            "open" => Self::Open,
            "connect" => Self::Connect,
            "sendmsg" => Self::Sendmsg,
            "resolve" => Self::Resolve,
            // "kill" is accepted as a synonym: both names were in use while the contract settled.
            "killed" | "kill" => Self::Killed,
            other => Self::Other(other.to_string()),
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::from_name(&String::deserialize(d)?))
    }
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_false(b: &bool) -> bool {
    !*b
}

/// One run of one MCP server under `mcp-guard exec` (or the agent).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Session id (unique across hosts' exec processes; other ids may build on it).
    pub session: String,
    /// Server name.
    pub server: String,
    /// When the server was launched.
    pub started_at: Timestamp,
    /// When it ended; `None` while running.
    pub ended_at: Option<Timestamp>,
    /// The server command and its arguments.
    pub command: Vec<String>,
    /// The policy applied: a name, a path, or `default`.
    pub policy: String,
    /// The pid of the `mcp-guard exec` that owns the session (alive exactly while it runs).
    #[serde(default)]
    pub pid: Option<u32>,
    /// Observe mode (nothing enforced).
    #[serde(default, skip_serializing_if = "is_false")]
    pub observe: bool,
    /// Exit status (128+signal when killed by a signal); `None` while running.
    pub exit_status: Option<i32>,
    /// What the server said about itself ([`SessionFacts`] fill it in; never written with the
    /// session's own record).
    #[serde(flatten, default)]
    pub facts: ServerFacts,
}

/// What a server said about itself in a session: which server, which version, which tools.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerFacts {
    /// From its `initialize` answer: `name`, `version` (and `title`) of `serverInfo`,
    /// `protocolVersion`, `capabilities`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_info: Option<serde_json::Value>,
    /// Its `tools/list` answers, each time the list changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools_listed: Vec<ToolsListing>,
}

/// One `tools/list` answer, by digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolsListing {
    /// When it reached the proxy.
    pub at: Timestamp,
    /// SHA-256 (hex) of the canonical JSON of its `tools` (keys sorted, no spaces).
    pub sha256: String,
    /// How many tools it listed.
    pub tools: u64,
}

/// An update of a session's [`ServerFacts`]: the `initialize` answer, or one more tool list
/// (added when its digest differs from the last one's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionFacts {
    /// Session id.
    pub session: String,
    /// The server's `initialize` answer, as in [`ServerFacts::server_info`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_info: Option<serde_json::Value>,
    /// A `tools/list` answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools_listed: Option<ToolsListing>,
}

/// One JSON-RPC request the client sent the server, and what became of it.
///
/// Send it when the request is seen (`ended_at: None`) and again when the response is: the store
/// keeps the latest version of each `call_id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Call id (unique in the store; e.g. built from the session id and a counter).
    pub call_id: String,
    /// Server name.
    pub server: String,
    /// Session id.
    pub session: String,
    /// JSON-RPC method, e.g. `tools/call`.
    pub method: String,
    /// Tool name for `tools/call`.
    pub tool: Option<String>,
    /// The JSON-RPC request id, as text.
    pub request_id: String,
    /// When the request was read from the client.
    pub started_at: Timestamp,
    /// When the response was written to the client; `None` while in flight.
    pub ended_at: Option<Timestamp>,
    /// What mcp-guard did with it.
    pub decision: Decision,
    /// Why it was denied or modified.
    pub reason: Option<String>,
    /// The JSON-RPC error the client got, if the response was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Size of the response's result in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_bytes: Option<u64>,
    /// Its arguments and an excerpt of its result, redacted (fields `arguments`,
    /// `arguments_cut`, `result`, `result_cut`, `redacted`), as much as the policy keeps.
    #[serde(flatten, default)]
    pub audit: Option<CallAudit>,
}

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

/// Any record, as the writer's channel carries them.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// A session started or ended.
    Session(SessionRecord),
    /// A call seen or completed.
    Call(CallRecord),
    /// A kernel event.
    Event(EventRecord),
    /// An alert.
    Alert(AlertRecord),
    /// What a session's server said about itself.
    Facts(SessionFacts),
}

impl From<SessionRecord> for Record {
    fn from(r: SessionRecord) -> Self {
        Self::Session(r)
    }
}

impl From<CallRecord> for Record {
    fn from(r: CallRecord) -> Self {
        Self::Call(r)
    }
}

impl From<EventRecord> for Record {
    fn from(r: EventRecord) -> Self {
        Self::Event(r)
    }
}

impl From<AlertRecord> for Record {
    fn from(r: AlertRecord) -> Self {
        Self::Alert(r)
    }
}

impl From<SessionFacts> for Record {
    fn from(r: SessionFacts) -> Self {
        Self::Facts(r)
    }
}

impl Record {
    /// Calls `f` on every piece of text the record holds (ids, names, paths, arguments,
    /// reasons, summaries, the strings inside `detail`): what a redaction must see before the
    /// record is written. Destructured field by field, so a new field cannot be forgotten.
    pub fn each_text_mut(&mut self, f: &mut dyn FnMut(&mut String)) {
        let opt = |o: &mut Option<String>, f: &mut dyn FnMut(&mut String)| {
            if let Some(s) = o {
                f(s);
            }
        };
        match self {
            Record::Session(SessionRecord {
                session,
                server,
                started_at: _,
                ended_at: _,
                command,
                policy,
                pid: _,
                observe: _,
                exit_status: _,
                facts:
                    ServerFacts {
                        server_info,
                        tools_listed,
                    },
            }) => {
                f(session);
                f(server);
                command.iter_mut().for_each(&mut *f);
                f(policy);
                if let Some(v) = server_info {
                    each_json_text(v, f);
                }
                for t in tools_listed {
                    f(&mut t.sha256);
                }
            }
            Record::Facts(SessionFacts {
                session,
                server_info,
                tools_listed,
            }) => {
                f(session);
                if let Some(v) = server_info {
                    each_json_text(v, f);
                }
                if let Some(t) = tools_listed {
                    f(&mut t.sha256);
                }
            }
            Record::Call(CallRecord {
                call_id,
                server,
                session,
                method,
                tool,
                request_id,
                started_at: _,
                ended_at: _,
                decision: _,
                reason,
                error,
                result_bytes: _,
                audit,
            }) => {
                for s in [call_id, server, session, method, request_id] {
                    f(s);
                }
                for o in [tool, reason, error] {
                    opt(o, f);
                }
                if let Some(CallAudit {
                    arguments,
                    arguments_cut: _,
                    result,
                    result_cut: _,
                    redacted,
                }) = audit
                {
                    for v in arguments.iter_mut() {
                        each_json_text(v, f);
                    }
                    for v in result.iter_mut() {
                        each_json_text(v, f);
                    }
                    redacted.iter_mut().for_each(&mut *f);
                }
            }
            Record::Event(EventRecord {
                event_id,
                ts: _,
                server,
                session,
                pid: _,
                kind,
                path,
                addr,
                port: _,
                verdict: _,
                call_id,
                attribution: _,
                candidates,
                flags: _,
                result: _,
                argv,
                proto,
                would_deny: _,
                detail,
            }) => {
                for s in [event_id, server, session] {
                    f(s);
                }
                if let EventKind::Other(k) = kind {
                    f(k);
                }
                for o in [path, addr, call_id, proto] {
                    opt(o, f);
                }
                candidates.iter_mut().for_each(&mut *f);
                argv.iter_mut().flatten().for_each(&mut *f);
                if let Some(d) = detail {
                    each_json_text(d, f);
                }
            }
            Record::Alert(AlertRecord {
                alert_id,
                ts: _,
                server,
                session,
                rule,
                severity: _,
                call_id,
                tool,
                summary,
                event_ids,
                action,
                count: _,
                last_seen: _,
            }) => {
                for s in [alert_id, server, session, rule, summary] {
                    f(s);
                }
                for o in [call_id, tool, action] {
                    opt(o, f);
                }
                event_ids.iter_mut().for_each(&mut *f);
            }
        }
    }
}

/// Every string in a JSON value: keys (rebuilt when one changes) and values.
fn each_json_text(v: &mut serde_json::Value, f: &mut dyn FnMut(&mut String)) {
    use serde_json::Value;
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter_mut().for_each(|x| each_json_text(x, f)),
        Value::Object(m) => {
            let old = std::mem::take(m);
            for (mut k, mut x) in old {
                f(&mut k);
                each_json_text(&mut x, f);
                m.insert(k, x);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_text_of_every_record_is_visited() {
        const V: &str = "value-0123456789";
        let v = || V.to_string();
        let t = Timestamp::from_unix_nanos(1);
        let mut event = EventRecord::new(v(), t, V, V, 1, EventKind::Other(v()));
        event.path = Some(v());
        event.addr = Some(v());
        event.call_id = Some(v());
        event.candidates = vec![v()];
        event.argv = Some(vec![v(), format!("x{V}x")]);
        event.proto = Some(v());
        event.detail = Some(serde_json::json!({ V: [V, { "k": V }] }));
        let records: Vec<Record> = vec![
            SessionRecord {
                session: v(),
                server: v(),
                started_at: t,
                ended_at: None,
                command: vec![v()],
                policy: v(),
                pid: None,
                observe: false,
                exit_status: None,
                facts: ServerFacts {
                    server_info: Some(serde_json::json!({ V: V })),
                    tools_listed: vec![ToolsListing {
                        at: t,
                        sha256: v(),
                        tools: 1,
                    }],
                },
            }
            .into(),
            CallRecord {
                call_id: v(),
                server: v(),
                session: v(),
                method: v(),
                tool: Some(v()),
                request_id: v(),
                started_at: t,
                ended_at: None,
                decision: Decision::Allowed,
                reason: Some(v()),
                error: Some(v()),
                result_bytes: None,
                audit: Some(CallAudit {
                    arguments: Some(serde_json::json!({ V: [V] })),
                    arguments_cut: 0,
                    result: Some(serde_json::json!({ "text": V })),
                    result_cut: 1,
                    redacted: vec![v()],
                }),
            }
            .into(),
            event.into(),
            SessionFacts {
                session: v(),
                server_info: Some(serde_json::json!([V])),
                tools_listed: Some(ToolsListing {
                    at: t,
                    sha256: v(),
                    tools: 0,
                }),
            }
            .into(),
            AlertRecord {
                alert_id: v(),
                ts: t,
                server: v(),
                session: v(),
                rule: v(),
                severity: Severity::High,
                call_id: Some(v()),
                tool: Some(v()),
                summary: v(),
                event_ids: vec![v()],
                action: Some(v()),
                count: 1,
                last_seen: t,
            }
            .into(),
        ];
        for mut r in records {
            r.each_text_mut(&mut |s| *s = s.replace(V, "*"));
            let json = match &r {
                Record::Session(x) => serde_json::to_string(x),
                Record::Call(x) => serde_json::to_string(x),
                Record::Event(x) => serde_json::to_string(x),
                Record::Alert(x) => serde_json::to_string(x),
                Record::Facts(x) => serde_json::to_string(x),
            }
            .expect("serializes");
            assert!(!json.contains(V), "{json}");
        }
    }

    #[test]
    fn timestamps_are_rfc3339_with_nanoseconds_utc() {
        let t = Timestamp::from_unix_nanos(1_795_464_903_123_456_789);
        assert_eq!(t.rfc3339(), "2026-11-23T20:15:03.123456789Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.rfc3339()), Some(t));
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-23T21:15:03.123456789+01:00"),
            Some(t)
        );
        assert_eq!(
            serde_json::to_string(&t).expect("serializes"),
            "\"2026-11-23T20:15:03.123456789Z\""
        );
        // Whole seconds keep all nine digits: scripts can parse a fixed format.
        assert_eq!(
            Timestamp::from_unix_nanos(0).rfc3339(),
            "1970-01-01T00:00:00.000000000Z"
        );
    }

    #[test]
    fn enums_use_contract_names() {
        assert_eq!("modified".parse(), Ok(Decision::Modified));
        assert_eq!(Verdict::Killed.as_str(), "killed");
        assert_eq!(
            serde_json::to_string(&Attribution::None).expect("serializes"),
            "\"none\""
        );
        let err = "maybe".parse::<Decision>().expect_err("unknown name");
        assert!(err.to_string().contains("allowed denied modified"), "{err}");
        assert_eq!(EventKind::from_name("sendmsg"), EventKind::Sendmsg);
        assert_eq!(
            EventKind::from_name("ptrace"),
            EventKind::Other("ptrace".into())
        );
        assert_eq!(EventKind::from_name("ptrace").as_str(), "ptrace");
    }
}
