//! The records the store keeps: plain data, field names exactly as DESIGN.md's JSON contract.
//!
//! Producers (the proxy, the kernel event reader, the correlator, the detector) convert their own
//! types into these; nothing here knows about those modules.

mod alert;
mod call;
mod event;
mod session;
mod vocabulary;

pub use crate::timestamp::Timestamp;
pub use alert::AlertRecord;
pub use call::CallRecord;
pub use event::{EventRecord, LOST_KIND};
pub use session::{ServerFacts, SessionFacts, SessionRecord, ToolsListing};
pub use vocabulary::{Attribution, Decision, EventKind, Severity, UnknownName, Verdict};

use crate::audit::CallAudit;

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_false(b: &bool) -> bool {
    !*b
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
                host,
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
                for o in [path, addr, host, call_id, proto] {
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
