//! The list tables of `calls`, `events` and `alerts`, local and from the fleet (a `HOST`
//! column first).

use super::{
    AlertRecord, Attribution, CallRecord, Col, EventRecord, Hosted, QueryError, Timestamp, Write,
    history, table,
};

/// Local time for list tables: month-day and seconds (the header says it is local).
pub(super) fn list_time(t: Timestamp) -> String {
    t.local().format("%m-%d %H:%M:%S").to_string()
}

#[expect(clippy::cast_precision_loss, reason = "shown to three digits")]
pub(super) fn duration_text(nanos: i64) -> String {
    let ms = nanos as f64 / 1e6;
    if ms < 1.0 {
        format!("{:.0}µs", nanos as f64 / 1e3)
    } else if ms < 1_000.0 {
        format!("{ms:.0}ms")
    } else if ms < 60_000.0 {
        format!("{:.1}s", ms / 1e3)
    } else {
        format!("{:.0}m", ms / 60_000.0)
    }
}

pub(super) fn calls_table(
    out: &mut dyn Write,
    calls: &[CallRecord],
    hosts: Option<&[String]>,
    width: usize,
) -> Result<(), QueryError> {
    let cols = vec![
        Col::keep("LOCAL TIME"),
        Col::keep("CALL"),
        Col::end("SERVER", 6).droppable(2),
        Col::end("TOOL", 8),
        Col::keep("DECISION"),
        Col::keep("TOOK"),
        Col::end("ARGUMENTS", 9).droppable(1),
        Col::end("REASON", 6).droppable(0),
    ];
    let rows = calls
        .iter()
        .map(|c| {
            vec![
                list_time(c.started_at),
                c.call_id.clone(),
                c.server.clone(),
                c.tool.clone().unwrap_or_else(|| c.method.clone()),
                c.decision.to_string(),
                c.ended_at.map_or_else(
                    || "running".to_string(),
                    |e| duration_text(e.nanos_since(c.started_at)),
                ),
                history::arguments_cell(c),
                c.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    hosted_table(out, cols, rows, hosts, width)
}

/// What an event touched: a path, or an address and port (`host:port (address)` when the
/// server's DNS named the address).
pub(super) fn target(e: &EventRecord) -> String {
    match (&e.path, &e.addr) {
        (Some(p), _) => p.clone(),
        (None, Some(a)) if e.host.is_some() => {
            format!(
                "{}:{} ({a})",
                e.host.as_deref().unwrap_or(""),
                e.port.unwrap_or(0)
            )
        }
        (None, Some(a)) if a.contains(':') => format!("[{a}]:{}", e.port.unwrap_or(0)),
        (None, Some(a)) => format!("{a}:{}", e.port.unwrap_or(0)),
        (None, None) => e
            .detail
            .as_ref()
            .and_then(|d| d.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or("")
            .to_string(),
    }
}

pub(super) fn verdict_text(e: &EventRecord) -> String {
    if e.would_deny {
        // Observe mode: it went through, but enforcing would have stopped it.
        "allowed*".to_string()
    } else {
        e.verdict.to_string()
    }
}

pub(super) fn events_table(
    out: &mut dyn Write,
    events: &[EventRecord],
    hosts: Option<&[String]>,
    width: usize,
) -> Result<(), QueryError> {
    let cols = vec![
        Col::keep("LOCAL TIME"),
        Col::end("SERVER", 6).droppable(1),
        Col::keep("KIND"),
        Col::keep("VERDICT"),
        Col::keep("PID").droppable(0),
        Col::keep("CALL"),
        Col::middle("TARGET", 12).wants(28),
    ];
    let rows = events
        .iter()
        .map(|e| {
            let call = match e.attribution {
                Attribution::Call => e.call_id.clone().unwrap_or_else(|| "-".into()),
                Attribution::Ambiguous => format!("ambiguous({})", e.candidates.len()),
                Attribution::None => "-".into(),
            };
            vec![
                list_time(e.ts),
                e.server.clone(),
                e.kind.to_string(),
                verdict_text(e),
                e.pid.to_string(),
                call,
                target(e),
            ]
        })
        .collect();
    hosted_table(out, cols, rows, hosts, width)?;
    if events.iter().any(|e| e.would_deny) {
        writeln!(out, "* observe mode: the policy would have denied this")?;
    }
    Ok(())
}

pub(super) fn alerts_table(
    out: &mut dyn Write,
    alerts: &[AlertRecord],
    hosts: Option<&[String]>,
    width: usize,
) -> Result<(), QueryError> {
    let cols = vec![
        Col::keep("LOCAL TIME"),
        Col::keep("SEVERITY"),
        // Wide enough for every rule name: a cut rule is worse than leaving the count out.
        Col::end("RULE", 18),
        Col::end("SERVER", 6).droppable(3),
        Col::keep("CALL"),
        Col::end("TOOL", 6).droppable(2),
        Col::keep("COUNT").droppable(1),
        Col::keep("LAST SEEN").droppable(0),
        Col::end("SUMMARY", 12).wants(24),
    ];
    let rows = alerts
        .iter()
        .map(|a| {
            vec![
                list_time(a.ts),
                a.severity.to_string(),
                a.rule.clone(),
                a.server.clone(),
                a.call_id.clone().unwrap_or_else(|| "-".into()),
                a.tool.clone().unwrap_or_else(|| "-".into()),
                a.count.to_string(),
                list_time(a.last_seen),
                a.summary.clone(),
            ]
        })
        .collect();
    hosted_table(out, cols, rows, hosts, width)
}

/// A table with a `HOST` column first when the rows come from the fleet.
pub(super) fn hosted_table(
    out: &mut dyn Write,
    mut cols: Vec<Col>,
    mut rows: Vec<Vec<String>>,
    hosts: Option<&[String]>,
    width: usize,
) -> Result<(), QueryError> {
    if let Some(hosts) = hosts {
        cols.insert(0, Col::end("HOST", 8));
        for (row, host) in rows.iter_mut().zip(hosts) {
            row.insert(0, host.clone());
        }
    }
    table(out, &cols, rows, width)
}

/// A table renderer over records, with their hosts when they come from the fleet.
pub(super) type RecordTable<T> =
    fn(&mut dyn Write, &[T], Option<&[String]>, usize) -> Result<(), QueryError>;

/// Fleet rows as a table: the records' own columns after `HOST`.
pub(super) fn fleet_table<T>(
    out: &mut dyn Write,
    rows: Vec<Hosted<T>>,
    width: usize,
    table: RecordTable<T>,
) -> Result<(), QueryError> {
    let (hosts, records): (Vec<String>, Vec<T>) =
        rows.into_iter().map(|h| (h.host, h.record)).unzip();
    table(out, &records, Some(&hosts), width)
}

/// `calls --fleet` as a table.
pub fn fleet_calls_table(
    out: &mut dyn Write,
    rows: Vec<Hosted<CallRecord>>,
    width: usize,
) -> Result<(), QueryError> {
    fleet_table(out, rows, width, calls_table)
}

/// `events --fleet` as a table.
pub fn fleet_events_table(
    out: &mut dyn Write,
    rows: Vec<Hosted<EventRecord>>,
    width: usize,
) -> Result<(), QueryError> {
    fleet_table(out, rows, width, events_table)
}

/// `alerts --fleet` as a table.
pub fn fleet_alerts_table(
    out: &mut dyn Write,
    rows: Vec<Hosted<AlertRecord>>,
    width: usize,
) -> Result<(), QueryError> {
    fleet_table(out, rows, width, alerts_table)
}

/// `sessions --fleet` as a table.
pub fn fleet_sessions_table(
    out: &mut dyn Write,
    rows: Vec<Hosted<mcp_guard_model::SessionRecord>>,
    width: usize,
) -> Result<(), QueryError> {
    fleet_table(out, rows, width, history::sessions_table)
}
