//! Each record's OCSF class: a session or an `exec`/`killed` event as Process Activity, an
//! `open` as File System Activity, a `connect`/`sendmsg` as Network Activity, a call as API
//! Activity, an alert as a Detection Finding (other events as a Base Event): the class's own
//! fields, and what the common fields need.

use super::{
    ALERT, ALLOWED, API_ACTIVITY, APPLICATION, Actor, AlertRecord, BASE_EVENT, BLOCKED, CORRECTED,
    CRITICAL, CallRecord, Cow, DETECTION_FINDING, Decision, EventKind, EventRecord, FILE_ACTIVITY,
    FINDINGS, File, HIGH, INFORMATIONAL, LOW, MEDIUM, Mapped, NETWORK, NETWORK_ACTIVITY, Name,
    Outcome, PROCESS_ACTIVITY, Raw, SYSTEM, Serialize, SessionRecord, Severity, UNCATEGORIZED, Uid,
    Verdict, actor, file, millis, outcome,
};

#[derive(Serialize)]
pub(super) struct SessionBody<'a> {
    process: SessionProcess<'a>,
    actor: Actor<'a>,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    start_time: i64,
    #[serde(flatten)]
    outcome: Outcome<'a>,
}

#[derive(Serialize)]
pub(super) struct SessionProcess<'a> {
    cmd_line: String,
    /// `null` when the session has no command.
    file: Option<File<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
}

pub(super) fn session(s: &SessionRecord) -> Mapped<'_, SessionBody<'_>> {
    let ended = s.ended_at.is_some();
    Mapped {
        class: PROCESS_ACTIVITY,
        category: SYSTEM,
        activity: if ended {
            (2, "Terminate")
        } else {
            (1, "Launch")
        },
        severity: INFORMATIONAL,
        log_name: "sessions",
        uid: &s.session,
        time: s.started_at,
        raw: Raw::Session(s),
        body: SessionBody {
            process: SessionProcess {
                cmd_line: s.command.join(" "),
                file: s.command.first().map(|p| file(p)),
                pid: s.pid,
            },
            actor: actor(&s.server, &s.session, s.pid),
            message: format!(
                "MCP server {} {}",
                s.server,
                if ended { "ended" } else { "started" }
            ),
            end_time: s.ended_at.map(millis),
            exit_code: s.ended_at.and(s.exit_status),
            start_time: millis(s.started_at),
            outcome: outcome(s.exit_status.is_none_or(|c| c == 0), None, ALLOWED),
        },
    }
}

#[derive(Serialize)]
pub(super) struct Api<'a> {
    operation: &'a str,
    service: Name<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<Uid<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<ApiError<'a>>,
}

#[derive(Serialize)]
pub(super) struct ApiError<'a> {
    error: &'a str,
}

#[derive(Serialize)]
pub(super) struct CallBody<'a> {
    api: Api<'a>,
    actor: Actor<'a>,
    src_endpoint: Name<'static>,
    start_time: i64,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<i64>,
    #[serde(flatten)]
    outcome: Outcome<'a>,
}

pub(super) fn call(c: &CallRecord) -> Mapped<'_, CallBody<'_>> {
    let operation = c.tool.as_deref().unwrap_or(&c.method);
    let denied = c.decision == Decision::Denied;
    let (severity, disposition) = match c.decision {
        Decision::Allowed => (INFORMATIONAL, ALLOWED),
        Decision::Modified => (LOW, CORRECTED),
        Decision::Denied => (MEDIUM, BLOCKED),
    };
    Mapped {
        class: API_ACTIVITY,
        category: APPLICATION,
        activity: (99, &c.method),
        severity,
        log_name: "calls",
        uid: &c.call_id,
        time: c.started_at,
        raw: Raw::Call(c),
        body: CallBody {
            api: Api {
                operation,
                service: Name { name: &c.server },
                request: Some(Uid { uid: &c.request_id }),
                response: c.error.as_deref().map(|error| ApiError { error }),
            },
            actor: actor(&c.server, &c.session, None),
            src_endpoint: Name { name: "mcp-client" },
            start_time: millis(c.started_at),
            message: format!("{} {} on {}: {}", c.method, operation, c.server, c.decision),
            end_time: c.ended_at.map(millis),
            duration: c
                .ended_at
                .map(|end| end.nanos_since(c.started_at) / 1_000_000),
            outcome: outcome(
                !denied && c.error.is_none(),
                c.reason
                    .as_deref()
                    .or(c.error.as_deref())
                    .map(Cow::Borrowed),
                disposition,
            ),
        },
    }
}

#[derive(Serialize)]
pub(super) struct EventBody<'a> {
    actor: Actor<'a>,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    process: Option<EventProcess<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<File<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst_endpoint: Option<Endpoint<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection_info: Option<Connection<'a>>,
    #[serde(flatten)]
    outcome: Outcome<'a>,
}

#[derive(Serialize)]
pub(super) struct EventProcess<'a> {
    pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<File<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmd_line: Option<String>,
}

#[derive(Serialize)]
pub(super) struct Endpoint<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
}

#[derive(Serialize)]
pub(super) struct Connection<'a> {
    direction_id: u8,
    direction: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    protocol_name: Option<&'a str>,
}

pub(super) fn kernel_event(e: &EventRecord) -> Mapped<'_, EventBody<'_>> {
    let target = match (&e.path, &e.addr) {
        (Some(p), _) => p.clone(),
        (None, Some(a)) => match &e.host {
            Some(h) => format!("{h}:{} ({a})", e.port.unwrap_or(0)),
            None => format!("{a}:{}", e.port.unwrap_or(0)),
        },
        (None, None) => "-".to_string(),
    };
    let message = if e.would_deny {
        format!(
            "{} {} {target} (observe mode: the policy would deny it)",
            e.server, e.kind
        )
    } else {
        format!("{} {} {target}: {}", e.server, e.kind, e.verdict)
    };
    let mut body = EventBody {
        actor: actor(&e.server, &e.session, Some(e.pid)),
        message,
        process: None,
        file: None,
        dst_endpoint: None,
        connection_info: None,
        outcome: outcome(
            e.verdict == Verdict::Allowed,
            e.result
                .filter(|r| *r < 0)
                .map(|r| Cow::Owned(format!("errno {}", -r))),
            match e.verdict {
                Verdict::Allowed => ALLOWED,
                Verdict::Denied | Verdict::Killed => BLOCKED,
            },
        ),
    };
    let (class, category, activity) = match &e.kind {
        EventKind::Exec | EventKind::Killed => {
            let exec = e.kind == EventKind::Exec;
            body.process = Some(EventProcess {
                pid: e.pid,
                file: e.path.as_deref().map(file),
                cmd_line: e.argv.as_ref().filter(|_| exec).map(|a| a.join(" ")),
            });
            let activity = if exec {
                (1, "Launch")
            } else {
                (2, "Terminate")
            };
            (PROCESS_ACTIVITY, SYSTEM, activity)
        }
        EventKind::Open => {
            body.file = e.path.as_deref().map(file);
            (FILE_ACTIVITY, SYSTEM, (14, "Open"))
        }
        EventKind::Connect | EventKind::Sendmsg => {
            body.dst_endpoint = Some(Endpoint {
                hostname: e.host.as_deref(),
                ip: e.addr.as_deref(),
                port: e.port,
            });
            body.connection_info = Some(Connection {
                direction_id: 2,
                direction: "Outbound",
                protocol_name: e.proto.as_deref(),
            });
            let activity = if e.kind == EventKind::Connect {
                (1, "Open")
            } else {
                (6, "Traffic")
            };
            (NETWORK_ACTIVITY, NETWORK, activity)
        }
        other => (BASE_EVENT, UNCATEGORIZED, (99, other.as_str())),
    };
    let severity = match e.verdict {
        Verdict::Allowed if e.would_deny => LOW,
        Verdict::Allowed => INFORMATIONAL,
        Verdict::Denied => MEDIUM,
        Verdict::Killed => HIGH,
    };
    Mapped {
        class,
        category,
        activity,
        severity,
        log_name: "events",
        uid: &e.event_id,
        time: e.ts,
        raw: Raw::Event(e),
        body,
    }
}

#[derive(Serialize)]
pub(super) struct AlertBody<'a> {
    finding_info: FindingInfo<'a>,
    count: u64,
    actor: Actor<'a>,
    message: &'a str,
    status_id: u8,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    api: Option<Api<'a>>,
    disposition_id: u8,
    disposition: &'static str,
}

#[derive(Serialize)]
pub(super) struct FindingInfo<'a> {
    uid: &'a str,
    title: &'a str,
    desc: &'a str,
    types: [&'static str; 1],
    analytic: Analytic<'a>,
    related_events: Vec<Uid<'a>>,
    first_seen_time: i64,
    last_seen_time: i64,
}

#[derive(Serialize)]
pub(super) struct Analytic<'a> {
    name: &'a str,
    type_id: u8,
    r#type: &'static str,
}

pub(super) fn alert(a: &AlertRecord) -> Mapped<'_, AlertBody<'_>> {
    let disposition = match a.action.as_deref() {
        Some("deny-call" | "kill") => BLOCKED,
        _ => ALERT,
    };
    let severity = match a.severity {
        Severity::Info => INFORMATIONAL,
        Severity::Low => LOW,
        Severity::Medium => MEDIUM,
        Severity::High => HIGH,
        Severity::Critical => CRITICAL,
    };
    // A repeat in the session is the same finding again: an Update with its count and span.
    let activity = if a.count > 1 {
        (2, "Update")
    } else {
        (1, "Create")
    };
    Mapped {
        class: DETECTION_FINDING,
        category: FINDINGS,
        activity,
        severity,
        log_name: "alerts",
        uid: &a.alert_id,
        time: a.ts,
        raw: Raw::Alert(a),
        body: AlertBody {
            finding_info: FindingInfo {
                uid: &a.alert_id,
                title: &a.rule,
                desc: &a.summary,
                types: ["mcp-guard"],
                analytic: Analytic {
                    name: &a.rule,
                    type_id: 1,
                    r#type: "Rule",
                },
                related_events: a.event_ids.iter().map(|uid| Uid { uid }).collect(),
                first_seen_time: millis(a.ts),
                last_seen_time: millis(a.last_seen),
            },
            count: a.count,
            actor: actor(&a.server, &a.session, None),
            message: &a.summary,
            status_id: 1,
            status: "New",
            api: a.tool.as_deref().map(|operation| Api {
                operation,
                service: Name { name: &a.server },
                request: None,
                response: None,
            }),
            disposition_id: disposition.0,
            disposition: disposition.1,
        },
    }
}
