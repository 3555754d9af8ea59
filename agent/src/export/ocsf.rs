//! Records as OCSF 1.3 events: the JSON a syslog sink sends (README "Shipping the history"
//! documents the mapping field by field).
//!
//! | record                      | OCSF class (uid)              | activity                    |
//! |-----------------------------|-------------------------------|-----------------------------|
//! | session                     | Process Activity (1007)       | Launch (1), Terminate (2)   |
//! | event `exec`                | Process Activity (1007)       | Launch (1)                  |
//! | event `killed`              | Process Activity (1007)       | Terminate (2)               |
//! | event `open`                | File System Activity (1001)   | Open (14)                   |
//! | event `connect`, `sendmsg`  | Network Activity (4001)       | Open (1), Traffic (6)       |
//! | other events (`resolve`...) | Base Event (0)                | Other (99)                  |
//! | call                        | API Activity (6003)           | Other (99), named by method |
//! | alert                       | Detection Finding (2004)      | Create (1), Update (2)      |
//!
//! Every event carries `metadata` (product, `uid` = the record's id, `log_name` = its table),
//! `device` (host name and id), `time` (ms) and `time_dt` (RFC 3339, ns), severity, status and
//! disposition, and the whole mcp-guard record, exactly as `--json` prints it, in
//! `unmapped.mcp_guard`.
//!
//! Each class is a typed struct serialized straight into the caller's buffer: the exporter
//! writes one event per record it ships, and building a JSON tree per record first was most of
//! a syslog sink's work. The fields are declared in the order the events have always had.

use std::{
    borrow::Cow,
    fmt::{self, Display},
};

use serde::{Serialize, Serializer};

use mcp_guard_model::{
    AlertRecord, CallRecord, Decision, EventKind, EventRecord, Record, SessionRecord, Severity,
    Timestamp, Verdict,
};

use super::host::Host;

mod classes;

use classes::{alert, call, kernel_event, session};

/// The OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.3.0";

/// OCSF severity ids.
const INFORMATIONAL: u8 = 1;
const LOW: u8 = 2;
const MEDIUM: u8 = 3;
const HIGH: u8 = 4;
const CRITICAL: u8 = 5;

/// Appends one record as an OCSF event (JSON, no newline) to `out`; the OCSF severity id it got
/// (for the syslog header). `None`, and nothing written, for a session's facts: they travel in
/// their session's row (the change log holds table rows).
pub fn write_event(
    record: &Record,
    host: &Host,
    out: &mut Vec<u8>,
) -> Result<Option<u8>, serde_json::Error> {
    let severity = match record {
        Record::Session(s) => write(out, host, session(s))?,
        Record::Call(c) => write(out, host, call(c))?,
        Record::Event(e) => write(out, host, kernel_event(e))?,
        Record::Alert(a) => write(out, host, alert(a))?,
        Record::Facts(_) => return Ok(None),
    };
    Ok(Some(severity))
}

/// A class's specific part and what the common fields need.
struct Mapped<'a, B> {
    class: (u16, &'static str),
    category: (u8, &'static str),
    activity: (u8, &'a str),
    severity: u8,
    log_name: &'static str,
    uid: &'a str,
    time: Timestamp,
    raw: Raw<'a>,
    body: B,
}

fn write<B: Serialize>(
    out: &mut Vec<u8>,
    host: &Host,
    m: Mapped<'_, B>,
) -> Result<u8, serde_json::Error> {
    let (class, activity) = (m.class, m.activity);
    serde_json::to_writer(
        out,
        &Envelope {
            body: m.body,
            class_uid: class.0,
            class_name: class.1,
            category_uid: m.category.0,
            category_name: m.category.1,
            activity_id: activity.0,
            activity_name: activity.1,
            type_uid: u32::from(class.0) * 100 + u32::from(activity.0),
            type_name: Text(move |f: &mut fmt::Formatter<'_>| {
                write!(f, "{}: {}", class.1, activity.1)
            }),
            time: millis(m.time),
            time_dt: m.time,
            severity_id: m.severity,
            severity: severity_name(m.severity),
            metadata: Metadata {
                version: OCSF_VERSION,
                product: Product {
                    name: "mcp-guard",
                    vendor_name: "mcp-guard",
                    version: env!("CARGO_PKG_VERSION"),
                },
                profiles: ["host", "security_control", "datetime"],
                uid: m.uid,
                log_name: m.log_name,
            },
            device: Device {
                hostname: &host.name,
                uid: &host.id,
                type_id: 0,
            },
            unmapped: Unmapped { mcp_guard: m.raw },
        },
    )?;
    Ok(m.severity)
}

/// Text written by a closure as a JSON string, without building a `String` first.
struct Text<F>(F);

impl<F: Fn(&mut fmt::Formatter<'_>) -> fmt::Result> Display for Text<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (self.0)(f)
    }
}

impl<F: Fn(&mut fmt::Formatter<'_>) -> fmt::Result> Serialize for Text<F> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Serialize)]
struct Envelope<'a, B, T> {
    #[serde(flatten)]
    body: B,
    class_uid: u16,
    class_name: &'static str,
    category_uid: u8,
    category_name: &'static str,
    activity_id: u8,
    activity_name: &'a str,
    type_uid: u32,
    type_name: T,
    time: i64,
    time_dt: Timestamp,
    severity_id: u8,
    severity: &'static str,
    metadata: Metadata<'a>,
    device: Device<'a>,
    unmapped: Unmapped<'a>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    version: &'static str,
    product: Product,
    profiles: [&'static str; 3],
    uid: &'a str,
    log_name: &'static str,
}

#[derive(Serialize)]
struct Product {
    name: &'static str,
    vendor_name: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
struct Device<'a> {
    hostname: &'a str,
    uid: &'a str,
    type_id: u8,
}

#[derive(Serialize)]
struct Unmapped<'a> {
    mcp_guard: Raw<'a>,
}

/// The record as `--json` prints it.
#[derive(Serialize)]
#[serde(untagged)]
enum Raw<'a> {
    Session(&'a SessionRecord),
    Call(&'a CallRecord),
    Event(&'a EventRecord),
    Alert(&'a AlertRecord),
}

#[derive(Serialize)]
struct File<'a> {
    path: &'a str,
    name: &'a str,
    type_id: u8,
    r#type: &'static str,
}

fn file(path: &str) -> File<'_> {
    File {
        path,
        name: base_name(path),
        type_id: 1,
        r#type: "Regular File",
    }
}

#[derive(Serialize)]
struct Uid<'a> {
    uid: &'a str,
}

#[derive(Serialize)]
struct Name<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct Pid {
    pid: u32,
}

/// Who acted: the guarded server's process in its session.
#[derive(Serialize)]
struct Actor<'a> {
    app_name: &'a str,
    session: Uid<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    process: Option<Pid>,
}

fn actor<'a>(server: &'a str, session: &'a str, pid: Option<u32>) -> Actor<'a> {
    Actor {
        app_name: server,
        session: Uid { uid: session },
        process: pid.map(|pid| Pid { pid }),
    }
}

/// `status_id`, `status`, `status_detail`, `disposition_id` and `disposition`, in that order.
#[derive(Serialize)]
struct Outcome<'a> {
    status_id: u8,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_detail: Option<Cow<'a, str>>,
    disposition_id: u8,
    disposition: &'static str,
}

fn outcome<'a>(
    ok: bool,
    detail: Option<Cow<'a, str>>,
    disposition: (u8, &'static str),
) -> Outcome<'a> {
    Outcome {
        status_id: if ok { 1 } else { 2 },
        status: if ok { "Success" } else { "Failure" },
        status_detail: detail,
        disposition_id: disposition.0,
        disposition: disposition.1,
    }
}

const ALLOWED: (u8, &str) = (1, "Allowed");
const BLOCKED: (u8, &str) = (2, "Blocked");
const CORRECTED: (u8, &str) = (11, "Corrected");
const ALERT: (u8, &str) = (19, "Alert");

const PROCESS_ACTIVITY: (u16, &str) = (1007, "Process Activity");
const FILE_ACTIVITY: (u16, &str) = (1001, "File System Activity");
const NETWORK_ACTIVITY: (u16, &str) = (4001, "Network Activity");
const BASE_EVENT: (u16, &str) = (0, "Base Event");
const API_ACTIVITY: (u16, &str) = (6003, "API Activity");
const DETECTION_FINDING: (u16, &str) = (2004, "Detection Finding");

const SYSTEM: (u8, &str) = (1, "System Activity");
const NETWORK: (u8, &str) = (4, "Network Activity");
const FINDINGS: (u8, &str) = (2, "Findings");
const APPLICATION: (u8, &str) = (6, "Application Activity");
const UNCATEGORIZED: (u8, &str) = (0, "Uncategorized");

fn millis(t: Timestamp) -> i64 {
    t.unix_nanos().div_euclid(1_000_000)
}

fn severity_name(id: u8) -> &'static str {
    match id {
        INFORMATIONAL => "Informational",
        LOW => "Low",
        MEDIUM => "Medium",
        HIGH => "High",
        CRITICAL => "Critical",
        _ => "Unknown",
    }
}

/// The file name of a path (OCSF `file.name`).
fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    #![expect(
        clippy::unwrap_used,
        reason = "a test: a failed unwrap is the failure, with its line"
    )]

    use super::*;
    use mcp_guard_model::{Attribution, EventRecord};
    use serde_json::Value;

    /// The event parsed back, and its severity.
    fn event(record: &Record, host: &Host) -> Option<(Value, u8)> {
        let mut out = Vec::new();
        let severity = write_event(record, host, &mut out).unwrap()?;
        Some((serde_json::from_slice(&out).unwrap(), severity))
    }

    fn host() -> Host {
        Host {
            name: "vm-a".into(),
            id: "0123456789abcdef0123456789abcdef".into(),
        }
    }

    #[test]
    fn kernel_events_map_to_their_ocsf_classes() {
        let t = Timestamp::from_unix_nanos(1_795_464_903_123_456_789);
        let mut open = EventRecord::new("e1".into(), t, "fs", "s1", 42, EventKind::Open);
        open.path = Some("/home/u/.ssh/id_rsa".into());
        open.verdict = Verdict::Denied;
        open.result = Some(-13);
        let (v, sev) = event(&Record::Event(open.clone()), &host()).expect("a table row");
        assert_eq!(v["class_uid"], 1001);
        assert_eq!(v["activity_id"], 14);
        assert_eq!(v["type_uid"], 1001 * 100 + 14);
        assert_eq!(v["file"]["name"], "id_rsa");
        assert_eq!(v["disposition"], "Blocked");
        assert_eq!(v["status_detail"], "errno 13");
        assert_eq!(v["time"], 1_795_464_903_123_i64);
        assert_eq!(v["time_dt"], "2026-11-23T20:15:03.123456789Z");
        assert_eq!(v["device"]["hostname"], "vm-a");
        assert_eq!(v["metadata"]["uid"], "e1");
        assert_eq!(
            v["unmapped"]["mcp_guard"],
            serde_json::to_value(&open).unwrap()
        );
        assert_eq!(sev, MEDIUM);

        let mut connect = EventRecord::new("e2".into(), t, "fs", "s1", 42, EventKind::Connect);
        connect.addr = Some("203.0.113.9".into());
        connect.port = Some(443);
        connect.proto = Some("tcp".into());
        connect.call_id = Some("c1".into());
        connect.attribution = Attribution::Call;
        let (v, _) = event(&Record::Event(connect), &host()).expect("a table row");
        assert_eq!(
            (v["class_uid"].clone(), v["activity_id"].clone()),
            (4001.into(), 1.into())
        );
        assert_eq!(v["dst_endpoint"]["port"], 443);
        assert_eq!(v["connection_info"]["protocol_name"], "tcp");

        let mut exec = EventRecord::new("e3".into(), t, "fs", "s1", 43, EventKind::Exec);
        exec.path = Some("/bin/sh".into());
        exec.argv = Some(vec!["sh".into(), "-c".into(), "id".into()]);
        let (v, _) = event(&Record::Event(exec), &host()).expect("a table row");
        assert_eq!(v["class_uid"], 1007);
        assert_eq!(v["process"]["cmd_line"], "sh -c id");

        let other = EventRecord::new("e4".into(), t, "fs", "s1", 0, EventKind::Resolve);
        let (v, _) = event(&Record::Event(other), &host()).expect("a table row");
        assert_eq!(
            (v["class_uid"].clone(), v["activity_name"].clone()),
            (0.into(), "resolve".into())
        );
    }

    #[test]
    fn alerts_are_detection_findings_and_calls_api_activity() {
        let t = Timestamp::from_unix_nanos(1_000_000_000);
        let a = AlertRecord {
            alert_id: "a1".into(),
            ts: t,
            server: "weather".into(),
            session: "s1".into(),
            rule: "sensitive-read".into(),
            severity: Severity::Critical,
            call_id: Some("c1".into()),
            tool: Some("get_weather".into()),
            summary: "get_weather read ~/.aws/credentials".into(),
            event_ids: vec!["e1".into()],
            action: Some("kill".into()),
            count: 1,
            last_seen: t,
        };
        let (v, sev) = event(&Record::Alert(a.clone()), &host()).expect("a table row");
        assert_eq!(v["class_uid"], 2004);
        assert_eq!(v["finding_info"]["analytic"]["name"], "sensitive-read");
        assert_eq!(v["finding_info"]["related_events"][0]["uid"], "e1");
        assert_eq!(v["disposition"], "Blocked");
        assert_eq!(
            (v["activity_id"].clone(), v["count"].clone()),
            (1.into(), 1.into())
        );
        assert_eq!(sev, CRITICAL);
        // Repeated in its session: the same finding, updated.
        let again = AlertRecord {
            count: 3,
            last_seen: Timestamp::from_unix_nanos(5_000_000_000),
            ..a
        };
        let (v, _) = event(&Record::Alert(again), &host()).expect("a table row");
        assert_eq!(
            (v["activity_id"].clone(), v["type_uid"].clone()),
            (2.into(), (2004 * 100 + 2).into())
        );
        assert_eq!(v["count"], 3);
        assert_eq!(v["finding_info"]["first_seen_time"], 1_000);
        assert_eq!(v["finding_info"]["last_seen_time"], 5_000);
        let c = CallRecord {
            call_id: "c1".into(),
            server: "weather".into(),
            session: "s1".into(),
            method: "tools/call".into(),
            tool: Some("get_weather".into()),
            request_id: "7".into(),
            started_at: t,
            ended_at: Some(Timestamp::from_unix_nanos(1_250_000_000)),
            decision: Decision::Denied,
            reason: Some("not on the allow list".into()),
            error: None,
            result_bytes: None,
            audit: None,
        };
        let (v, _) = event(&Record::Call(c), &host()).expect("a table row");
        assert_eq!(v["class_uid"], 6003);
        assert_eq!(v["activity_name"], "tools/call");
        assert_eq!(v["api"]["operation"], "get_weather");
        assert_eq!(v["duration"], 250);
        assert_eq!(v["status_detail"], "not on the allow list");
    }
}
