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
mod layout;
mod tables;
mod trace;

use layout::{Col, table, truncate_end, truncate_middle};
use tables::{
    alerts_table, calls_table, duration_text, events_table, hosted_table, list_time, target,
    verdict_text,
};
pub use tables::{fleet_alerts_table, fleet_calls_table, fleet_events_table, fleet_sessions_table};
pub use trace::print_trace;
use trace::{trace_json, trace_text};

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

/// Runs a query, writing its output to `out` (tables `width` columns wide); a `--json` list
/// that matched nothing returns its line for stderr ([`NoRows`]).
pub fn execute(
    state_dir: &Path,
    query: &Query,
    out: &mut dyn Write,
    width: usize,
) -> Result<Option<NoRows>, QueryError> {
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
                trace_json(out, &trace, None)?;
            } else {
                trace_text(out, &trace, None, width)?;
            }
            Ok(None)
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

/// A `--json` list that matched nothing: the line saying so, for the caller to write on stderr
/// (stdout stays JSON lines). A table's empty line goes to the output like the table would.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoRows(pub String);

/// No rows: say so in the table's place, or hand the line back under `--json`; either way the
/// query succeeded.
fn empty(
    out: &mut dyn Write,
    json: bool,
    what: &str,
    state_dir: &dyn std::fmt::Display,
) -> Result<Option<NoRows>, QueryError> {
    let line = format!("no {what} ({})", source_text(state_dir));
    if json {
        return Ok(Some(NoRows(line)));
    }
    writeln!(out, "{line}")?;
    Ok(None)
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
/// `source` is the state dir, or `fleet <url>`. Under `--json` the empty-result line is returned
/// ([`NoRows`]), not written.
pub fn list<T: Serialize>(
    out: &mut dyn Write,
    json: bool,
    each: impl FnOnce(&mut dyn FnMut(T) -> Result<(), QueryError>) -> Result<(), QueryError>,
    table: TableFn<T>,
    width: usize,
    what: &str,
    state_dir: &dyn std::fmt::Display,
) -> Result<Option<NoRows>, QueryError> {
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
        return empty(out, json, what, state_dir);
    }
    Ok(None)
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
                host: None,
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
