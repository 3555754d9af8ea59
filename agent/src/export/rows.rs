//! Records as rows of the shipped ClickHouse tables (packaging/clickhouse/mcp-guard.sql), one
//! JSON object per line for `INSERT … FORMAT JSONEachRow`.
//!
//! Every row has the host's name and id, `version` (the record's number in the store's change
//! log: `ReplacingMergeTree(version)` keeps the latest write of a record and folds the copies
//! at-least-once delivery may send), the contract's fields as columns for SQL, each timestamp
//! twice (RFC 3339 with nanoseconds as text, and nanoseconds since the epoch as `Int64`: Debian's
//! ClickHouse has no `DateTime64`), and `record`, the whole record as `--json` prints it, which
//! `--fleet` queries read back.

use serde::Serialize;

use mcp_guard_model::{AlertRecord, CallRecord, EventRecord, Record, SessionRecord, Timestamp};
use mcp_guard_store::Change;

use super::{
    host::Host,
    pump::{Bodies, Encode},
};

/// The shipped tables, in the order [`encode`] returns their bodies.
pub const TABLES: [&str; 4] = ["sessions", "calls", "events", "alerts"];

// Absent values (`None`, an empty list) are left out of a row: ClickHouse fills a column a row
// does not name with its type's default, which for these columns is the same NULL or empty
// list, and each field left out is one less for it to parse.

/// What every row starts with.
#[derive(Serialize)]
struct Common<'a> {
    host: &'a str,
    host_id: &'a str,
    version: u64,
}

#[derive(Serialize)]
struct SessionRow<'a> {
    #[serde(flatten)]
    common: Common<'a>,
    session: &'a str,
    server: &'a str,
    started_at: Timestamp,
    started_ns: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ended_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ended_ns: Option<i64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    command: &'a [String],
    policy: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    observe: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_status: Option<i32>,
    record: &'a str,
}

#[derive(Serialize)]
struct CallRow<'a> {
    #[serde(flatten)]
    common: Common<'a>,
    call_id: &'a str,
    server: &'a str,
    session: &'a str,
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool: Option<&'a str>,
    request_id: &'a str,
    started_at: Timestamp,
    started_ns: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ended_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ended_ns: Option<i64>,
    decision: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result_bytes: Option<u64>,
    record: &'a str,
}

#[derive(Serialize)]
struct EventRow<'a> {
    #[serde(flatten)]
    common: Common<'a>,
    event_id: &'a str,
    ts: Timestamp,
    ts_ns: i64,
    server: &'a str,
    session: &'a str,
    pid: u32,
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    addr: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    /// The record's `host` (the name the server resolved `addr` from): `host` is the machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    dst_host: Option<&'a str>,
    verdict: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    call_id: Option<&'a str>,
    attribution: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    candidates: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    flags: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<i64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    argv: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    proto: Option<&'a str>,
    would_deny: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    record: &'a str,
}

#[derive(Serialize)]
struct AlertRow<'a> {
    #[serde(flatten)]
    common: Common<'a>,
    alert_id: &'a str,
    ts: Timestamp,
    ts_ns: i64,
    server: &'a str,
    session: &'a str,
    rule: &'a str,
    severity: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    call_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool: Option<&'a str>,
    summary: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    event_ids: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'a str>,
    record: &'a str,
    count: u64,
    last_seen: Timestamp,
    last_seen_ns: i64,
}

/// The `JSONEachRow` bodies for [`TABLES`] (empty where a table has no rows).
pub fn encode(changes: &[Change], host: &Host) -> Result<[Vec<u8>; 4], serde_json::Error> {
    let mut bodies: [Vec<u8>; 4] = Default::default();
    // The `record` column's text, reused from row to row.
    let mut record = Vec::with_capacity(4096);
    for change in changes {
        let common = Common {
            host: &host.name,
            host_id: &host.id,
            version: u64::try_from(change.seq).unwrap_or(0),
        };
        record.clear();
        let i = match &change.record {
            Record::Session(s) => {
                serde_json::to_writer(&mut record, s)?;
                serde_json::to_writer(&mut bodies[0], &session(common, s, text(&record)?))?;
                0
            }
            Record::Call(c) => {
                serde_json::to_writer(&mut record, c)?;
                serde_json::to_writer(&mut bodies[1], &call(common, c, text(&record)?))?;
                1
            }
            Record::Event(e) => {
                serde_json::to_writer(&mut record, e)?;
                serde_json::to_writer(&mut bodies[2], &event(common, e, text(&record)?))?;
                2
            }
            Record::Alert(a) => {
                serde_json::to_writer(&mut record, a)?;
                serde_json::to_writer(&mut bodies[3], &alert(common, a, text(&record)?))?;
                3
            }
            // In its session's row: the change log holds table rows only.
            Record::Facts(_) => continue,
        };
        bodies[i].push(b'\n');
    }
    Ok(bodies)
}

/// A ClickHouse sink's encoding: one `JSONEachRow` body per table of [`TABLES`].
#[derive(Debug)]
pub struct Rows {
    host: Host,
}

impl Rows {
    /// Rows naming `host`.
    pub fn new(host: Host) -> Self {
        Rows { host }
    }
}

impl Encode for Rows {
    fn encode(&mut self, changes: &[Change]) -> Result<Bodies, String> {
        encode(changes, &self.host)
            .map(Vec::from)
            .map_err(|e| format!("encoding: {e}"))
    }
}

/// `serde_json` writes UTF-8; this only turns the bytes back into text.
fn text(json: &[u8]) -> Result<&str, serde_json::Error> {
    std::str::from_utf8(json).map_err(|e| serde::ser::Error::custom(e.to_string()))
}

fn session<'a>(common: Common<'a>, s: &'a SessionRecord, record: &'a str) -> SessionRow<'a> {
    SessionRow {
        common,
        session: &s.session,
        server: &s.server,
        started_at: s.started_at,
        started_ns: s.started_at.unix_nanos(),
        ended_at: s.ended_at,
        ended_ns: s.ended_at.map(Timestamp::unix_nanos),
        command: &s.command,
        policy: &s.policy,
        pid: s.pid,
        observe: u8::from(s.observe),
        exit_status: s.exit_status,
        record,
    }
}

fn call<'a>(common: Common<'a>, c: &'a CallRecord, record: &'a str) -> CallRow<'a> {
    CallRow {
        common,
        call_id: &c.call_id,
        server: &c.server,
        session: &c.session,
        method: &c.method,
        tool: c.tool.as_deref(),
        request_id: &c.request_id,
        started_at: c.started_at,
        started_ns: c.started_at.unix_nanos(),
        ended_at: c.ended_at,
        ended_ns: c.ended_at.map(Timestamp::unix_nanos),
        decision: c.decision.as_str(),
        reason: c.reason.as_deref(),
        error: c.error.as_deref(),
        result_bytes: c.result_bytes,
        record,
    }
}

fn event<'a>(common: Common<'a>, e: &'a EventRecord, record: &'a str) -> EventRow<'a> {
    EventRow {
        common,
        event_id: &e.event_id,
        ts: e.ts,
        ts_ns: e.ts.unix_nanos(),
        server: &e.server,
        session: &e.session,
        pid: e.pid,
        kind: e.kind.as_str(),
        path: e.path.as_deref(),
        addr: e.addr.as_deref(),
        port: e.port,
        dst_host: e.host.as_deref(),
        verdict: e.verdict.as_str(),
        call_id: e.call_id.as_deref(),
        attribution: e.attribution.as_str(),
        candidates: &e.candidates,
        flags: e.flags,
        result: e.result,
        argv: e.argv.as_deref().unwrap_or_default(),
        proto: e.proto.as_deref(),
        would_deny: u8::from(e.would_deny),
        detail: e.detail.as_ref().map(ToString::to_string),
        record,
    }
}

fn alert<'a>(common: Common<'a>, a: &'a AlertRecord, record: &'a str) -> AlertRow<'a> {
    AlertRow {
        common,
        alert_id: &a.alert_id,
        ts: a.ts,
        ts_ns: a.ts.unix_nanos(),
        server: &a.server,
        session: &a.session,
        rule: &a.rule,
        severity: a.severity.as_str(),
        call_id: a.call_id.as_deref(),
        tool: a.tool.as_deref(),
        summary: &a.summary,
        event_ids: &a.event_ids,
        action: a.action.as_deref(),
        record,
        count: a.count,
        last_seen: a.last_seen,
        last_seen_ns: a.last_seen.unix_nanos(),
    }
}

#[cfg(test)]
mod tests {
    #![expect(
        clippy::unwrap_used,
        reason = "a test: a failed unwrap is the failure, with its line"
    )]

    use super::*;
    use mcp_guard_model::EventKind;

    #[test]
    fn rows_carry_the_host_the_version_and_the_record() {
        let host = Host {
            name: "vm-a".into(),
            id: "id-a".into(),
        };
        let t = Timestamp::from_unix_nanos(1_795_464_903_123_456_789);
        let mut e = EventRecord::new("e1".into(), t, "fs", "s1", 42, EventKind::Open);
        e.path = Some("/etc/\"quoted\"\nname".into());
        e.host = Some("api.example.test".into());
        let bodies = encode(
            &[Change {
                seq: 7,
                record: Record::Event(e.clone()),
            }],
            &host,
        )
        .unwrap();
        assert!(bodies[0].is_empty() && bodies[1].is_empty() && bodies[3].is_empty());
        let text = String::from_utf8(bodies[2].clone()).unwrap();
        assert_eq!(text.matches('\n').count(), 1, "one line per row: {text}");
        let row: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(row["host"], "vm-a");
        assert_eq!(row["host_id"], "id-a");
        assert_eq!(row["dst_host"], "api.example.test");
        assert_eq!(row["version"], 7);
        assert_eq!(row["ts"], "2026-11-23T20:15:03.123456789Z");
        assert_eq!(row["ts_ns"], 1_795_464_903_123_456_789_i64);
        // Absent values are left for ClickHouse's defaults (NULL, an empty list).
        assert_eq!(row["path"], "/etc/\"quoted\"\nname");
        for absent in ["argv", "candidates", "addr", "port", "proto", "detail"] {
            assert!(row.get(absent).is_none(), "{absent} in {text}");
        }
        let back: EventRecord = serde_json::from_str(row["record"].as_str().unwrap()).unwrap();
        assert_eq!(back, e);
    }
}
