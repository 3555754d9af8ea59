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

use serde_json::{Map, Value, json};

use mcp_guard_model::{
    AlertRecord, CallRecord, Decision, EventKind, EventRecord, Record, SessionRecord, Severity,
    Timestamp, Verdict,
};

use super::host::Host;

/// The OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.3.0";

/// OCSF severity ids.
const INFORMATIONAL: u8 = 1;
const LOW: u8 = 2;
const MEDIUM: u8 = 3;
const HIGH: u8 = 4;
const CRITICAL: u8 = 5;

/// One record as an OCSF event, and the OCSF severity id it got (for the syslog header). `None`
/// for a session's facts: they travel in their session's row (the change log holds table rows).
pub fn event(record: &Record, host: &Host) -> Option<(Value, u8)> {
    let mut out = match record {
        Record::Session(s) => session(s),
        Record::Call(c) => call(c),
        Record::Event(e) => kernel_event(e),
        Record::Alert(a) => alert(a),
        Record::Facts(_) => return None,
    };
    let severity = out.severity;
    let (log_name, uid, time, raw) = match record {
        Record::Session(s) => (
            "sessions",
            &s.session,
            s.started_at,
            serde_json::to_value(s),
        ),
        Record::Call(c) => ("calls", &c.call_id, c.started_at, serde_json::to_value(c)),
        Record::Event(e) => ("events", &e.event_id, e.ts, serde_json::to_value(e)),
        Record::Alert(a) => ("alerts", &a.alert_id, a.ts, serde_json::to_value(a)),
        Record::Facts(_) => return None,
    };
    let m = &mut out.fields;
    m.insert("class_uid".into(), out.class.0.into());
    m.insert("class_name".into(), out.class.1.into());
    m.insert("category_uid".into(), out.category.0.into());
    m.insert("category_name".into(), out.category.1.into());
    m.insert("activity_id".into(), out.activity.0.into());
    m.insert("activity_name".into(), out.activity.1.clone().into());
    m.insert(
        "type_uid".into(),
        (u32::from(out.class.0) * 100 + u32::from(out.activity.0)).into(),
    );
    m.insert(
        "type_name".into(),
        format!("{}: {}", out.class.1, out.activity.1).into(),
    );
    m.insert("time".into(), millis(time).into());
    m.insert("time_dt".into(), time.rfc3339().into());
    m.insert("severity_id".into(), severity.into());
    m.insert("severity".into(), severity_name(severity).into());
    m.insert(
        "metadata".into(),
        json!({
            "version": OCSF_VERSION,
            "product": {
                "name": "mcp-guard",
                "vendor_name": "mcp-guard",
                "version": env!("CARGO_PKG_VERSION"),
            },
            "profiles": ["host", "security_control", "datetime"],
            "uid": uid,
            "log_name": log_name,
        }),
    );
    m.insert(
        "device".into(),
        json!({ "hostname": host.name, "uid": host.id, "type_id": 0 }),
    );
    m.insert(
        "unmapped".into(),
        json!({ "mcp_guard": raw.unwrap_or(Value::Null) }),
    );
    Some((Value::Object(out.fields), severity))
}

/// A class's specific part, before the common fields are added.
struct Mapped {
    class: (u16, &'static str),
    category: (u8, &'static str),
    activity: (u8, String),
    severity: u8,
    fields: Map<String, Value>,
}

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

fn file(path: &str) -> Value {
    json!({ "path": path, "name": base_name(path), "type_id": 1, "type": "Regular File" })
}

/// Who acted: the guarded server's process in its session.
fn actor(server: &str, session: &str, pid: Option<u32>) -> Value {
    let mut a = json!({ "app_name": server, "session": { "uid": session } });
    if let Some(pid) = pid {
        a["process"] = json!({ "pid": pid });
    }
    a
}

fn status(m: &mut Map<String, Value>, ok: bool, detail: Option<&str>) {
    m.insert("status_id".into(), if ok { 1 } else { 2 }.into());
    m.insert(
        "status".into(),
        if ok { "Success" } else { "Failure" }.into(),
    );
    if let Some(d) = detail {
        m.insert("status_detail".into(), d.into());
    }
}

fn disposition(m: &mut Map<String, Value>, id: u8, name: &str) {
    m.insert("disposition_id".into(), id.into());
    m.insert("disposition".into(), name.into());
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn session(s: &SessionRecord) -> Mapped {
    let mut process = json!({
        "cmd_line": s.command.join(" "),
        "file": s.command.first().map(|p| file(p)).unwrap_or(Value::Null),
    });
    if let Some(pid) = s.pid {
        process["pid"] = pid.into();
    }
    let mut fields = object(json!({
        "process": process,
        "actor": actor(&s.server, &s.session, s.pid),
        "message": format!("MCP server {} {}", s.server,
            if s.ended_at.is_some() { "ended" } else { "started" }),
    }));
    let activity = match s.ended_at {
        Some(end) => {
            fields.insert("end_time".into(), millis(end).into());
            if let Some(code) = s.exit_status {
                fields.insert("exit_code".into(), code.into());
            }
            (2, "Terminate".to_string())
        }
        None => (1, "Launch".to_string()),
    };
    fields.insert("start_time".into(), millis(s.started_at).into());
    status(&mut fields, s.exit_status.is_none_or(|c| c == 0), None);
    disposition(&mut fields, 1, "Allowed");
    Mapped {
        class: PROCESS_ACTIVITY,
        category: SYSTEM,
        activity,
        severity: INFORMATIONAL,
        fields,
    }
}

fn call(c: &CallRecord) -> Mapped {
    let operation = c.tool.clone().unwrap_or_else(|| c.method.clone());
    let mut api = json!({
        "operation": operation,
        "service": { "name": c.server },
        "request": { "uid": c.request_id },
    });
    if let Some(err) = &c.error {
        api["response"] = json!({ "error": err });
    }
    let mut fields = object(json!({
        "api": api,
        "actor": actor(&c.server, &c.session, None),
        "src_endpoint": { "name": "mcp-client" },
        "start_time": millis(c.started_at),
        "message": format!("{} {} on {}: {}", c.method, operation, c.server, c.decision),
    }));
    if let Some(end) = c.ended_at {
        fields.insert("end_time".into(), millis(end).into());
        fields.insert(
            "duration".into(),
            (end.nanos_since(c.started_at) / 1_000_000).into(),
        );
    }
    let denied = c.decision == Decision::Denied;
    status(
        &mut fields,
        !denied && c.error.is_none(),
        c.reason.as_deref().or(c.error.as_deref()),
    );
    let severity = match c.decision {
        Decision::Allowed => INFORMATIONAL,
        Decision::Modified => LOW,
        Decision::Denied => MEDIUM,
    };
    match c.decision {
        Decision::Allowed => disposition(&mut fields, 1, "Allowed"),
        Decision::Denied => disposition(&mut fields, 2, "Blocked"),
        Decision::Modified => disposition(&mut fields, 11, "Corrected"),
    }
    Mapped {
        class: API_ACTIVITY,
        category: APPLICATION,
        activity: (99, c.method.clone()),
        severity,
        fields,
    }
}

fn kernel_event(e: &EventRecord) -> Mapped {
    let mut fields = object(json!({ "actor": actor(&e.server, &e.session, Some(e.pid)) }));
    let target = e.path.clone().or_else(|| {
        e.addr
            .as_ref()
            .map(|a| format!("{a}:{}", e.port.unwrap_or(0)))
    });
    fields.insert(
        "message".into(),
        format!(
            "{} {} {}{}",
            e.server,
            e.kind,
            target.as_deref().unwrap_or("-"),
            if e.would_deny {
                " (observe mode: the policy would deny it)".to_string()
            } else {
                format!(": {}", e.verdict)
            }
        )
        .into(),
    );
    let (class, category, activity) = match &e.kind {
        EventKind::Exec => {
            let mut process = json!({ "pid": e.pid });
            if let Some(p) = &e.path {
                process["file"] = file(p);
            }
            if let Some(argv) = &e.argv {
                process["cmd_line"] = argv.join(" ").into();
            }
            fields.insert("process".into(), process);
            (PROCESS_ACTIVITY, SYSTEM, (1, "Launch"))
        }
        EventKind::Killed => {
            let mut process = json!({ "pid": e.pid });
            if let Some(p) = &e.path {
                process["file"] = file(p);
            }
            fields.insert("process".into(), process);
            (PROCESS_ACTIVITY, SYSTEM, (2, "Terminate"))
        }
        EventKind::Open => {
            if let Some(p) = &e.path {
                fields.insert("file".into(), file(p));
            }
            (FILE_ACTIVITY, SYSTEM, (14, "Open"))
        }
        EventKind::Connect | EventKind::Sendmsg => {
            let mut dst = json!({});
            if let Some(a) = &e.addr {
                dst["ip"] = a.as_str().into();
            }
            if let Some(p) = e.port {
                dst["port"] = p.into();
            }
            fields.insert("dst_endpoint".into(), dst);
            let mut conn = json!({ "direction_id": 2, "direction": "Outbound" });
            if let Some(p) = &e.proto {
                conn["protocol_name"] = p.as_str().into();
            }
            fields.insert("connection_info".into(), conn);
            let activity = if e.kind == EventKind::Connect {
                (1, "Open")
            } else {
                (6, "Traffic")
            };
            (NETWORK_ACTIVITY, NETWORK, activity)
        }
        _ => (BASE_EVENT, UNCATEGORIZED, (99, "Other")),
    };
    let activity = if activity.0 == 99 {
        (99, e.kind.as_str().to_string())
    } else {
        (activity.0, activity.1.to_string())
    };
    let errno = e.result.filter(|r| *r < 0).map(|r| format!("errno {}", -r));
    status(&mut fields, e.verdict == Verdict::Allowed, errno.as_deref());
    let severity = match e.verdict {
        Verdict::Allowed if e.would_deny => LOW,
        Verdict::Allowed => INFORMATIONAL,
        Verdict::Denied => MEDIUM,
        Verdict::Killed => HIGH,
    };
    match e.verdict {
        Verdict::Allowed => disposition(&mut fields, 1, "Allowed"),
        Verdict::Denied | Verdict::Killed => disposition(&mut fields, 2, "Blocked"),
    }
    Mapped {
        class,
        category,
        activity,
        severity,
        fields,
    }
}

fn alert(a: &AlertRecord) -> Mapped {
    let related: Vec<Value> = a.event_ids.iter().map(|id| json!({ "uid": id })).collect();
    let mut fields = object(json!({
        "finding_info": {
            "uid": a.alert_id,
            "title": a.rule,
            "desc": a.summary,
            "types": ["mcp-guard"],
            "analytic": { "name": a.rule, "type_id": 1, "type": "Rule" },
            "related_events": related,
        },
        "actor": actor(&a.server, &a.session, None),
        "message": a.summary,
        "status_id": 1,
        "status": "New",
    }));
    if let Some(tool) = &a.tool {
        fields.insert(
            "api".into(),
            json!({ "operation": tool, "service": { "name": a.server } }),
        );
    }
    match a.action.as_deref() {
        Some("deny-call" | "kill") => disposition(&mut fields, 2, "Blocked"),
        _ => disposition(&mut fields, 19, "Alert"),
    }
    let severity = match a.severity {
        Severity::Info => INFORMATIONAL,
        Severity::Low => LOW,
        Severity::Medium => MEDIUM,
        Severity::High => HIGH,
        Severity::Critical => CRITICAL,
    };
    // A repeat in the session is the same finding again: an Update with its count and span.
    fields.insert("count".into(), a.count.into());
    if let Some(info) = fields
        .get_mut("finding_info")
        .and_then(Value::as_object_mut)
    {
        info.insert("first_seen_time".into(), millis(a.ts).into());
        info.insert("last_seen_time".into(), millis(a.last_seen).into());
    }
    let activity = if a.count > 1 {
        (2, "Update".into())
    } else {
        (1, "Create".into())
    };
    Mapped {
        class: DETECTION_FINDING,
        category: FINDINGS,
        activity,
        severity,
        fields,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use mcp_guard_model::{Attribution, EventRecord};

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
        assert_eq!(v["type_uid"], 100114);
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
            (2.into(), 200402.into())
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
