//! The query commands (`calls`, `events`, `alerts`, `trace`): read the store, render tables for
//! humans (local time, 80 columns) or JSON lines for scripts (DESIGN.md field names, RFC 3339).
//!
//! `trace --json` prints the call, then its events and alerts in time order, one object per
//! line; each carries a `type` field (`call`, `event`, `alert`) next to the contract fields.
//!
//! The same renderers print the fleet's history (`--fleet`, mcp-guard's `export::fleet`): each record
//! then comes with its host, a `HOST` column first in tables and a `host` field in JSON.

use std::{
    io::{self, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Serialize;

mod history;

use mcp_guard_model::{AlertRecord, Attribution, CallRecord, EventRecord, Timestamp};

use crate::{AlertFilter, CallFilter, EventFilter, Store, StoreError, Trace};

/// One query command, as parsed from the command line.
#[derive(Clone, Debug)]
pub enum Query {
    /// `mcp-guard calls`.
    Calls {
        /// `--server`.
        server: Option<String>,
        /// `--tool`.
        tool: Option<String>,
        /// `--since`.
        since: Option<Duration>,
        /// `--json`.
        json: bool,
    },
    /// `mcp-guard events`.
    Events {
        /// `--server`.
        server: Option<String>,
        /// `--call`.
        call: Option<String>,
        /// `--kind`.
        kind: Option<String>,
        /// `--since`.
        since: Option<Duration>,
        /// `--json`.
        json: bool,
    },
    /// `mcp-guard alerts`.
    Alerts {
        /// `--server`.
        server: Option<String>,
        /// `--since`.
        since: Option<Duration>,
        /// `--json`.
        json: bool,
    },
    /// `mcp-guard sessions`.
    Sessions {
        /// `--server`.
        server: Option<String>,
        /// `--since`.
        since: Option<Duration>,
        /// `--json`.
        json: bool,
    },
    /// `mcp-guard trace CALL_ID`.
    Trace {
        /// The call.
        call_id: String,
        /// `--json`.
        json: bool,
    },
}

/// A record from the fleet, with the name of the host it came from (JSON: `host`, then the
/// record's own fields).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hosted<T> {
    /// The host's name.
    pub host: String,
    /// The record.
    #[serde(flatten)]
    pub record: T,
}

/// Why a query printed nothing useful.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `trace` of a call that is not recorded.
    #[error("no call {call_id:?} recorded (state dir: {})", state_dir.display())]
    NoSuchCall {
        /// The id asked for.
        call_id: String,
        /// Where we looked.
        state_dir: PathBuf,
    },
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Io(#[from] io::Error),
}

/// Parses a duration such as `30s`, `15m`, `1h`, `2d`, `1w` or `1h30m` (for `--since`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    // humantime also reads `90min`, `1h 30m`, `2days`; the error names the units we document.
    humantime::parse_duration(s.trim()).map_err(|_| {
        format!(
            "invalid duration {s:?}: expected a number and a unit (s, m, h, d, w), e.g. 30s, 15m, 1h, 2d"
        )
    })
}

/// Runs a query, writing its output to `out` (tables `width` columns wide).
pub fn execute(
    state_dir: &Path,
    query: &Query,
    out: &mut dyn Write,
    width: usize,
) -> Result<(), QueryError> {
    let store = Store::open_existing(&crate::db_path(state_dir))?;
    let since = |d: &Option<Duration>| d.map(|d| Timestamp::now().saturating_sub(d));
    match query {
        Query::Calls {
            server,
            tool,
            since: s,
            json,
        } => {
            let filter = CallFilter {
                server: server.clone(),
                tool: tool.clone(),
                since: since(s),
                ..Default::default()
            };
            let what = describe("calls", &[("server", server), ("tool", tool)], *s);
            let each = |f: &mut dyn FnMut(CallRecord) -> Result<(), QueryError>| {
                store.each_call(&filter, f)
            };
            let table: TableFn<CallRecord> = |o, rows, w| calls_table(o, &rows, None, w);
            list(out, *json, each, table, width, &what, &state_dir.display())
        }
        Query::Events {
            server,
            call,
            kind,
            since: s,
            json,
        } => {
            let filter = EventFilter {
                server: server.clone(),
                call: call.clone(),
                kind: kind.clone(),
                since: since(s),
                ..Default::default()
            };
            let what = describe(
                "events",
                &[("server", server), ("call", call), ("kind", kind)],
                *s,
            );
            let each = |f: &mut dyn FnMut(EventRecord) -> Result<(), QueryError>| {
                store.each_event(&filter, f)
            };
            let table: TableFn<EventRecord> = |o, rows, w| events_table(o, &rows, None, w);
            list(out, *json, each, table, width, &what, &state_dir.display())
        }
        Query::Alerts {
            server,
            since: s,
            json,
        } => {
            let filter = AlertFilter {
                server: server.clone(),
                since: since(s),
                ..Default::default()
            };
            let what = describe("alerts", &[("server", server)], *s);
            let each = |f: &mut dyn FnMut(AlertRecord) -> Result<(), QueryError>| {
                store.each_alert(&filter, f)
            };
            let table: TableFn<AlertRecord> = |o, rows, w| alerts_table(o, &rows, None, w);
            list(out, *json, each, table, width, &what, &state_dir.display())
        }
        Query::Sessions {
            server,
            since: s,
            json,
        } => {
            let sessions = history::sessions_of(&store, server.as_deref(), since(s))?;
            let what = describe("sessions", &[("server", server)], *s);
            let each =
                |f: &mut dyn FnMut(mcp_guard_model::SessionRecord) -> Result<(), QueryError>| {
                    sessions.into_iter().try_for_each(f)
                };
            let table: TableFn<mcp_guard_model::SessionRecord> =
                |o, rows, w| history::sessions_table(o, &rows, None, w);
            list(out, *json, each, table, width, &what, &state_dir.display())
        }
        Query::Trace { call_id, json } => {
            let trace = store
                .trace(call_id)?
                .ok_or_else(|| QueryError::NoSuchCall {
                    call_id: call_id.clone(),
                    state_dir: state_dir.to_path_buf(),
                })?;
            if *json {
                trace_json(out, &trace, None)
            } else {
                trace_text(out, &trace, None, width)
            }
        }
    }
}

/// "calls recorded for server a, tool b in the last 1h".
pub fn describe(
    what: &str,
    filters: &[(&str, &Option<String>)],
    since: Option<Duration>,
) -> String {
    let parts: Vec<String> = filters
        .iter()
        .filter_map(|(name, v)| v.as_ref().map(|v| format!("{name} {v}")))
        .collect();
    let mut s = format!("{what} recorded");
    if !parts.is_empty() {
        s.push_str(" for ");
        s.push_str(&parts.join(", "));
    }
    if let Some(d) = since {
        s.push_str(&format!(" in the last {}", human_duration(d)));
    }
    s
}

fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        _ if s > 0 && s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        _ if s > 0 && s.is_multiple_of(3_600) => format!("{}h", s / 3_600),
        _ if s > 0 && s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// No rows: say so (on stderr with `--json`, so stdout stays JSON lines), and succeed.
fn empty(
    out: &mut dyn Write,
    json: bool,
    what: &str,
    state_dir: &dyn std::fmt::Display,
) -> Result<(), QueryError> {
    let line = format!("no {what} ({})", source_text(state_dir));
    if json {
        eprintln!("{line}");
    } else {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// Where records came from, for the empty-result line: a state dir, or `fleet <url>`.
fn source_text(source: &dyn std::fmt::Display) -> String {
    let s = source.to_string();
    if s.starts_with("fleet ") {
        s
    } else {
        format!("state dir: {s}")
    }
}

/// A table renderer over owned rows.
pub type TableFn<T> = fn(&mut dyn Write, Vec<T>, usize) -> Result<(), QueryError>;

/// A list command: JSON lines streamed straight from the source (any size), or a table
/// (which needs every row to size its columns); the empty-result line when nothing matched.
/// `source` is the state dir, or `fleet <url>`.
pub fn list<T: Serialize>(
    out: &mut dyn Write,
    json: bool,
    each: impl FnOnce(&mut dyn FnMut(T) -> Result<(), QueryError>) -> Result<(), QueryError>,
    table: TableFn<T>,
    width: usize,
    what: &str,
    state_dir: &dyn std::fmt::Display,
) -> Result<(), QueryError> {
    let mut n = 0usize;
    if json {
        each(&mut |row| {
            n += 1;
            serde_json::to_writer(&mut *out, &row).map_err(io::Error::from)?;
            Ok(out.write_all(b"\n")?)
        })?;
    } else {
        let mut rows = Vec::new();
        each(&mut |row| {
            rows.push(row);
            Ok(())
        })?;
        n = rows.len();
        if n > 0 {
            table(out, rows, width)?;
        }
    }
    if n == 0 {
        empty(out, json, what, state_dir)?;
    }
    Ok(())
}

/// Local time for list tables: month-day and seconds (the header says it is local).
fn list_time(t: Timestamp) -> String {
    t.local().format("%m-%d %H:%M:%S").to_string()
}

#[expect(clippy::cast_precision_loss, reason = "shown to three digits")]
fn duration_text(nanos: i64) -> String {
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

fn calls_table(
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

/// What an event touched: a path, or an address and port.
fn target(e: &EventRecord) -> String {
    match (&e.path, &e.addr) {
        (Some(p), _) => p.clone(),
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

fn verdict_text(e: &EventRecord) -> String {
    if e.would_deny {
        // Observe mode: it went through, but enforcing would have stopped it.
        "allowed*".to_string()
    } else {
        e.verdict.to_string()
    }
}

fn events_table(
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

fn alerts_table(
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
fn hosted_table(
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
type RecordTable<T> = fn(&mut dyn Write, &[T], Option<&[String]>, usize) -> Result<(), QueryError>;

/// Fleet rows as a table: the records' own columns after `HOST`.
fn fleet_table<T>(
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

/// `trace` of a call: JSON lines (each with `host` when it is given) or the timeline.
pub fn print_trace(
    out: &mut dyn Write,
    trace: &Trace,
    host: Option<&str>,
    json: bool,
    width: usize,
) -> Result<(), QueryError> {
    if json {
        trace_json(out, trace, host)
    } else {
        trace_text(out, trace, host, width)
    }
}

/// One entry of a trace's timeline.
enum Step<'a> {
    Request,
    Event(&'a EventRecord),
    Alert(&'a AlertRecord),
    Response,
}

/// The timeline: request, events and alerts by time, response last among equals.
fn timeline(trace: &Trace) -> Vec<(Timestamp, Step<'_>)> {
    let mut steps: Vec<(Timestamp, u8, Step<'_>)> = vec![(trace.call.started_at, 0, Step::Request)];
    steps.extend(trace.events.iter().map(|e| (e.ts, 1, Step::Event(e))));
    steps.extend(trace.alerts.iter().map(|a| (a.ts, 2, Step::Alert(a))));
    if let Some(end) = trace.call.ended_at {
        steps.push((end, 3, Step::Response));
    }
    // Stable: same-time events keep the store's order.
    steps.sort_by_key(|(t, rank, _)| (*t, *rank));
    steps.into_iter().map(|(t, _, s)| (t, s)).collect()
}

fn trace_json(out: &mut dyn Write, trace: &Trace, host: Option<&str>) -> Result<(), QueryError> {
    let line = |out: &mut dyn Write, kind: &str, v: serde_json::Result<serde_json::Value>| {
        let mut v = v.map_err(io::Error::from)?;
        if let serde_json::Value::Object(m) = &mut v {
            m.insert("type".into(), kind.into());
            if let Some(h) = host {
                m.insert("host".into(), h.into());
            }
        }
        serde_json::to_writer(&mut *out, &v).map_err(io::Error::from)?;
        out.write_all(b"\n")
    };
    line(out, "call", serde_json::to_value(&trace.call))?;
    for (_, step) in timeline(trace) {
        match step {
            Step::Event(e) => line(out, "event", serde_json::to_value(e))?,
            Step::Alert(a) => line(out, "alert", serde_json::to_value(a))?,
            Step::Request | Step::Response => {}
        }
    }
    Ok(())
}

fn trace_text(
    out: &mut dyn Write,
    trace: &Trace,
    host: Option<&str>,
    width: usize,
) -> Result<(), QueryError> {
    let c = &trace.call;
    let start = c.started_at.local();
    let what = c.tool.as_deref().unwrap_or(&c.method);
    match host {
        Some(h) => writeln!(
            out,
            "call {}  {}  on {}  host {h}",
            c.call_id, what, c.server
        )?,
        None => writeln!(out, "call {}  {}  on {}", c.call_id, what, c.server)?,
    }
    let mut facts = vec![
        format!("session {}", c.session),
        format!("{} id {}", c.method, c.request_id),
    ];
    match c.ended_at {
        Some(end) => facts.push(format!(
            "took {}",
            duration_text(end.nanos_since(c.started_at))
        )),
        None => facts.push("no response recorded".into()),
    }
    writeln!(out, "  {}", facts.join(" · "))?;
    if let Some(s) = &trace.session {
        let line = format!("  server command: {}", s.command.join(" "));
        writeln!(out, "{}", truncate_end(&line, width))?;
        writeln!(
            out,
            "  policy: {}{}",
            s.policy,
            if s.observe { " (observe mode)" } else { "" }
        )?;
        history::server_lines(out, s, width)?;
    }
    writeln!(
        out,
        "  started {} (local time, UTC{})",
        start.format("%Y-%m-%d %H:%M:%S%.3f"),
        start.format("%:z")
    )?;
    history::call_lines(out, trace, width)?;
    writeln!(out)?;
    let mut notes = Vec::new();
    for (t, step) in timeline(trace) {
        // Milliseconds with microsecond digits: kernel events within a call are that close.
        #[expect(clippy::cast_precision_loss, reason = "shown to the microsecond")]
        let offset = t.nanos_since(c.started_at) as f64 / 1e6;
        let lead = format!("{offset:>+11.3}ms  ");
        let body = match step {
            Step::Request => {
                let id = format!("(id {})", c.request_id);
                format!("→ request   {} {what} {id}", c.method)
            }
            Step::Event(e) => {
                let mut tail = String::new();
                if e.attribution == Attribution::Ambiguous {
                    let others: Vec<&str> = e
                        .candidates
                        .iter()
                        .map(String::as_str)
                        .filter(|id| *id != c.call_id)
                        .collect();
                    tail = format!("  (ambiguous, also {})", others.join(", "));
                }
                if let Some(r) = e.result.filter(|r| *r < 0) {
                    tail.push_str(&format!("  errno {}", -r));
                }
                if e.would_deny {
                    notes.push("* observe mode: the policy would have denied this");
                }
                let head = format!(
                    "  {:<9} {:<8} pid {:<6} ",
                    e.kind.as_str(),
                    verdict_text(e),
                    e.pid
                );
                let room = width
                    .saturating_sub(
                        lead.chars().count() + head.chars().count() + tail.chars().count(),
                    )
                    .max(12);
                format!("{head}{}{tail}", truncate_middle(&target(e), room))
            }
            Step::Alert(a) => {
                let head = format!("! alert     {:<8} {}: ", a.severity.as_str(), a.rule);
                // A repeat in the session: how often, and when last.
                let tail = if a.count > 1 {
                    format!(" (x{}, last {})", a.count, list_time(a.last_seen))
                } else {
                    String::new()
                };
                let room = width
                    .saturating_sub(
                        lead.chars().count() + head.chars().count() + tail.chars().count(),
                    )
                    .max(12);
                format!("{head}{}{tail}", truncate_end(&a.summary, room))
            }
            Step::Response => {
                let mut s = format!("← response  {}", c.decision);
                if let Some(r) = &c.reason {
                    s.push_str(&format!(": {r}"));
                }
                if let Some(err) = &c.error {
                    s.push_str(&format!(" (error: {err})"));
                }
                truncate_end(&s, width.saturating_sub(lead.chars().count()))
            }
        };
        writeln!(out, "{lead}{body}")?;
    }
    if trace.events.is_empty() {
        writeln!(out, "\n  no kernel events were attributed to this call")?;
    }
    notes.dedup();
    for n in notes {
        writeln!(out, "{n}")?;
    }
    Ok(())
}

/// How a column gives way when the table is too wide.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trunc {
    /// Never (ids, times, short words).
    Keep,
    /// Cut the middle (paths: both ends carry meaning).
    Middle,
    /// Cut the end (names, prose).
    End,
}

struct Col {
    header: &'static str,
    min: usize,
    /// Width worth leaving droppable columns out for (at least `min`).
    want: usize,
    trunc: Trunc,
    /// Left out when even the narrowest table is too wide; lower ranks go first.
    drop: Option<u8>,
}

impl Col {
    const fn keep(header: &'static str) -> Self {
        Col {
            header,
            min: 0,
            want: 0,
            trunc: Trunc::Keep,
            drop: None,
        }
    }
    const fn end(header: &'static str, min: usize) -> Self {
        Col {
            header,
            min,
            want: min,
            trunc: Trunc::End,
            drop: None,
        }
    }
    const fn middle(header: &'static str, min: usize) -> Self {
        Col {
            header,
            min,
            want: min,
            trunc: Trunc::Middle,
            drop: None,
        }
    }
    const fn wants(self, want: usize) -> Self {
        Col { want, ..self }
    }
    const fn droppable(self, rank: u8) -> Self {
        Col {
            drop: Some(rank),
            ..self
        }
    }
}

/// Columns two spaces apart fitting `width`: leave out droppable columns while the narrowest
/// layout is too wide, then shrink the truncatable ones (widest first). Ids never shrink.
fn table(
    out: &mut dyn Write,
    cols: &[Col],
    rows: Vec<Vec<String>>,
    width: usize,
) -> Result<(), QueryError> {
    let len = |s: &str| s.chars().count();
    let mut widths: Vec<usize> = cols.iter().map(|c| len(c.header)).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(len(cell));
        }
    }
    // The narrowest each column may get, and the width worth dropping other columns for.
    let floor_of = |i: usize, n: usize| match cols[i].trunc {
        Trunc::Keep => widths[i],
        _ => widths[i].min(n.max(len(cols[i].header))),
    };
    let floors: Vec<usize> = (0..cols.len()).map(|i| floor_of(i, cols[i].min)).collect();
    let wants: Vec<usize> = (0..cols.len())
        .map(|i| floor_of(i, cols[i].want.max(cols[i].min)))
        .collect();
    let floor = |i: usize| floors[i];
    let want = |i: usize| wants[i];
    let mut shown: Vec<bool> = vec![true; cols.len()];
    let total = |w: &dyn Fn(usize) -> usize, shown: &[bool]| {
        let idx: Vec<usize> = (0..cols.len()).filter(|&i| shown[i]).collect();
        idx.iter().map(|&i| w(i)).sum::<usize>() + 2 * idx.len().saturating_sub(1)
    };
    while total(&want, &shown) > width {
        let next = (0..cols.len())
            .filter(|&i| shown[i])
            .filter_map(|i| cols[i].drop.map(|rank| (rank, i)))
            .min();
        let Some((_, i)) = next else { break };
        shown[i] = false;
    }
    loop {
        let current = widths.clone();
        if total(&|i| current[i], &shown) <= width {
            break;
        }
        // Columns above the width they want give way first, then all down to their floor.
        let above = |limit: &dyn Fn(usize) -> usize| {
            (0..cols.len())
                .filter(|&i| shown[i] && cols[i].trunc != Trunc::Keep && widths[i] > limit(i))
                .max_by_key(|&i| widths[i])
        };
        let shrinkable = above(&want).or_else(|| above(&floor));
        let Some(i) = shrinkable else { break };
        widths[i] -= 1;
    }
    // The last column, when it is prose (a summary, a reason), wraps rather than being cut.
    let last = (0..cols.len()).rev().find(|&i| shown[i]);
    let mut line = |cells: Vec<String>| -> io::Result<()> {
        let mut s = String::new();
        let mut more: Vec<String> = Vec::new();
        for (i, (cell, col)) in cells.into_iter().zip(cols).enumerate() {
            if !shown[i] {
                continue;
            }
            if !s.is_empty() {
                s.push_str("  ");
            }
            let cell = match col.trunc {
                Trunc::Keep => cell,
                Trunc::Middle => truncate_middle(&cell, widths[i]),
                Trunc::End if Some(i) == last => {
                    let mut parts = crate::wrap::wrap(&cell, widths[i]).into_iter();
                    let first = parts.next().unwrap_or_default();
                    let indent = " ".repeat(len(&s));
                    more = parts.map(|p| format!("{indent}{p}")).collect();
                    first
                }
                Trunc::End => truncate_end(&cell, widths[i]),
            };
            let pad = widths[i].saturating_sub(len(&cell));
            s.push_str(&cell);
            s.extend(std::iter::repeat_n(' ', pad));
        }
        writeln!(out, "{}", s.trim_end())?;
        for m in more {
            writeln!(out, "{m}")?;
        }
        Ok(())
    };
    line(cols.iter().map(|c| c.header.to_string()).collect())?;
    for row in rows {
        line(row)?;
    }
    Ok(())
}

/// `s` in at most `max` characters, the middle replaced by `…`.
fn truncate_middle(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let chars: Vec<char> = s.chars().collect();
    let keep = max - 1;
    let mut tail = keep / 2 + keep % 2;
    // Paths: start the kept end at a '/' when one is a few characters back, so the last
    // components survive whole ("…/.aws/credentials" rather than "…aws/credentials").
    let slack = (keep - tail) / 2;
    if let Some(k) = (0..=slack).find(|k| chars[n - tail - k] == '/') {
        tail += k;
    }
    let head = keep - tail;
    let mut out: String = chars[..head].iter().collect();
    out.push('…');
    out.extend(&chars[n - tail..]);
    out
}

/// `s` in at most `max` characters, the end replaced by `…`.
fn truncate_end(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_guard_model::{Decision, EventKind, Severity, Verdict};

    #[test]
    fn durations_parse_in_the_documented_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_mins(15)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_hours(1)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_hours(48)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_mins(90)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_mins(90)));
        for bad in ["", "h", "10", "1x", "-1h", "99999999999999999999d"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains("e.g. 30s, 15m, 1h, 2d"), "{err}");
        }
    }

    #[test]
    fn truncation_keeps_both_ends_of_paths() {
        assert_eq!(
            truncate_middle("/home/user/.aws/credentials", 15),
            "/home/u…entials"
        );
        assert_eq!(
            truncate_middle("/home/user/.aws/credentials", 20),
            "/home/u…/credentials"
        );
        assert_eq!(truncate_middle("/etc/hosts", 15), "/etc/hosts");
        assert_eq!(truncate_end("a long summary", 6), "a lon…");
    }

    fn sample_trace() -> Trace {
        let t0 = Timestamp::from_unix_nanos(1_795_464_903_000_000_000);
        let at = |ms: u64| t0.saturating_add(Duration::from_millis(ms));
        let call = CallRecord {
            call_id: "c-42".into(),
            server: "weather".into(),
            session: "s1".into(),
            method: "tools/call".into(),
            tool: Some("get_weather".into()),
            request_id: "7".into(),
            started_at: t0,
            ended_at: Some(at(30)),
            decision: Decision::Allowed,
            reason: None,
            error: None,
            result_bytes: None,
            audit: None,
        };
        let event =
            |id: &str, ms, kind, path: Option<&str>, addr: Option<&str>, verdict| EventRecord {
                event_id: id.into(),
                ts: at(ms),
                server: "weather".into(),
                session: "s1".into(),
                pid: 4242,
                kind,
                path: path.map(Into::into),
                addr: addr.map(Into::into),
                port: addr.map(|_| 443),
                verdict,
                call_id: Some("c-42".into()),
                attribution: Attribution::Call,
                candidates: vec![],
                flags: None,
                result: None,
                argv: None,
                proto: None,
                would_deny: false,
                detail: None,
            };
        let long = "/home/someone/with/a/very/long/directory/name/that/goes/on/.aws/credentials";
        Trace {
            call,
            session: None,
            // Stored order is by time; the connect came after the open.
            events: vec![
                event(
                    "e1",
                    10,
                    EventKind::Open,
                    Some(long),
                    None,
                    Verdict::Allowed,
                ),
                event(
                    "e2",
                    20,
                    EventKind::Connect,
                    None,
                    Some("203.0.113.9"),
                    Verdict::Denied,
                ),
            ],
            alerts: vec![AlertRecord {
                alert_id: "a1".into(),
                ts: at(11),
                server: "weather".into(),
                session: "s1".into(),
                rule: "sensitive-read".into(),
                severity: Severity::High,
                call_id: Some("c-42".into()),
                tool: Some("get_weather".into()),
                summary: "get_weather read ~/.aws/credentials".into(),
                event_ids: vec!["e1".into()],
                action: None,
                count: 1,
                last_seen: at(11),
            }],
        }
    }

    #[test]
    fn trace_text_is_a_timeline_within_the_width() {
        let mut out = Vec::new();
        trace_text(&mut out, &sample_trace(), None, 80).expect("renders");
        let text = String::from_utf8(out).expect("utf-8");
        for line in text.lines() {
            assert!(line.chars().count() <= 80, "too wide: {line:?}");
        }
        let pos = |needle: &str| {
            text.find(needle)
                .unwrap_or_else(|| panic!("{needle:?} missing in:\n{text}"))
        };
        assert!(pos("→ request") < pos("open"));
        assert!(pos("open") < pos("! alert"));
        assert!(pos("! alert") < pos("203.0.113.9:443"));
        assert!(pos("203.0.113.9:443") < pos("← response"));
        assert!(text.contains("…/.aws/credentials"), "{text}");
        assert!(text.contains("+20.000ms    connect   denied"), "{text}");
    }

    #[test]
    fn trace_json_is_the_call_then_its_timeline() {
        let mut out = Vec::new();
        trace_json(&mut out, &sample_trace(), None).expect("renders");
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        let types: Vec<&str> = lines
            .iter()
            .map(|l| l["type"].as_str().expect("type"))
            .collect();
        assert_eq!(types, ["call", "event", "alert", "event"]);
        assert_eq!(lines[0]["call_id"], "c-42");
        assert_eq!(lines[0]["started_at"], "2026-11-23T20:15:03.000000000Z");
        assert_eq!(lines[3]["port"], 443);
    }

    #[test]
    fn tables_fit_80_columns_and_keep_ids_whole() {
        // Ids as the proxy makes them: `<nanos hex>-<pid hex>-<n>`.
        let id = "187a3f9c2b4d5e6f-1a2b-42";
        let mut trace = sample_trace();
        for e in &mut trace.events {
            e.call_id = Some(id.into());
        }
        trace.alerts[0].call_id = Some(id.into());
        let mut out = Vec::new();
        events_table(&mut out, &trace.events, None, 80).expect("renders");
        let text = String::from_utf8(out).expect("utf-8");
        for line in text.lines() {
            assert!(line.chars().count() <= 80, "too wide: {line:?}");
            // A wrapped summary's continuation lines start blank.
            assert!(
                line.contains(id) || line.starts_with("LOCAL TIME") || line.starts_with("  "),
                "{line}"
            );
        }
        assert!(text.contains("…/credentials"), "{text}");
        let mut out = Vec::new();
        let mut call = trace.call.clone();
        call.call_id = id.into();
        call.reason = Some("tool is on the deny list of this server's policy".into());
        calls_table(&mut out, &[call], None, 80).expect("renders");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.contains(id), "{text}");
        for line in text.lines() {
            assert!(line.chars().count() <= 80, "too wide: {line:?}");
        }
        let mut out = Vec::new();
        alerts_table(&mut out, &trace.alerts, None, 80).expect("renders");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.contains(id), "{text}");
        for line in text.lines() {
            assert!(line.chars().count() <= 80, "too wide: {line:?}");
        }
        // Wider terminals get every column.
        let mut out = Vec::new();
        events_table(&mut out, &trace.events, None, 160).expect("renders");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.starts_with("LOCAL TIME      SERVER   KIND"), "{text}");
        assert!(text.contains(&trace.events[0].path.clone().expect("path")));
    }
}
