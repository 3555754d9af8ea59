//! `mcp-guard calls|events|alerts|sessions|trace --fleet URL`: the same queries against the fleet's
//! ClickHouse, across hosts, printed the same way with the host of each record.
//!
//! Reads the `record` column (the record exactly as the host stored it) of the shipped tables
//! with `FINAL`, so a record delivered twice shows once, at its latest version. Filter values
//! travel as SQL string literals, escaped: Debian's ClickHouse predates query parameters.

use std::{
    io::{self, BufRead, Write},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use serde::de::DeserializeOwned;

use super::{
    clickhouse::ClickHouse,
    config::{self, ClickHouseTarget, DEFAULT_DATABASE},
};
use crate::say::say_as_is;
use mcp_guard_model::{AlertRecord, CallRecord, EventKind, EventRecord, SessionRecord, Timestamp};
use mcp_guard_store::{
    Trace,
    query::{self, Hosted, NoRows, Query, QueryError, TableFn},
};

/// How long one fleet query may take.
const QUERY_TIMEOUT: Duration = Duration::from_mins(5);

/// Where the fleet's history is, as the command line gives it.
#[derive(Clone, Debug, Default)]
pub struct Fleet {
    /// `--fleet`: ClickHouse's HTTP(S) interface.
    pub url: String,
    /// `--fleet-database`.
    pub database: Option<String>,
    /// `--fleet-user`.
    pub user: Option<String>,
    /// `--fleet-password-file`.
    pub password_file: Option<PathBuf>,
    /// `--fleet-ca`.
    pub ca_file: Option<PathBuf>,
}

/// A ClickHouse string literal holding `s` (quotes and backslashes escaped).
pub fn literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A WHERE clause under construction.
#[derive(Default)]
struct Where(Vec<String>);

impl Where {
    fn eq(&mut self, column: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.0.push(format!("{column} = {}", literal(v)));
        }
    }

    fn since(&mut self, column: &str, since: Option<Duration>) {
        if let Some(d) = since {
            let t = Timestamp::now().saturating_sub(d).unix_nanos();
            self.0.push(format!("{column} >= {t}"));
        }
    }

    fn push(&mut self, clause: String) {
        self.0.push(clause);
    }

    fn sql(&self) -> String {
        if self.0.is_empty() {
            "1".into()
        } else {
            self.0.join(" AND ")
        }
    }
}

/// The SQL of a list query: `host` and `record` of the matching rows, in time order.
pub fn list_sql(database: &str, query: &Query) -> Option<String> {
    let mut w = Where::default();
    let (table, order) = match query {
        Query::Calls {
            server,
            tool,
            since,
            ..
        } => {
            w.eq("server", server.as_deref());
            w.eq("tool", tool.as_deref());
            w.since("started_ns", *since);
            ("calls", "started_ns, host, call_id")
        }
        Query::Events {
            server,
            call,
            kind,
            since,
            ..
        } => {
            w.eq("server", server.as_deref());
            // By contract name, as the local query: synonyms find what was stored.
            let kind = kind
                .as_deref()
                .map(|k| EventKind::from_name(k).as_str().to_string());
            w.eq("kind", kind.as_deref());
            if let Some(c) = call {
                let c = literal(c);
                w.push(format!(
                    "(call_id = {c} OR (attribution = 'ambiguous' AND has(candidates, {c})))"
                ));
            }
            w.since("ts_ns", *since);
            ("events", "ts_ns, host, event_id")
        }
        Query::Alerts { server, since, .. } => {
            w.eq("server", server.as_deref());
            w.since("ts_ns", *since);
            ("alerts", "ts_ns, host, alert_id")
        }
        Query::Sessions { server, since, .. } => {
            w.eq("server", server.as_deref());
            w.since("started_ns", *since);
            ("sessions", "started_ns, host, session")
        }
        Query::Trace { .. } => return None,
    };
    Some(format!(
        "SELECT host, record FROM {database}.{table} FINAL WHERE {} ORDER BY {order} \
         FORMAT JSONEachRow",
        w.sql()
    ))
}

/// One row of a fleet query.
#[derive(serde::Deserialize)]
struct Row {
    host: String,
    #[serde(default)]
    host_id: String,
    record: String,
}

fn parse_row<T: DeserializeOwned>(line: &str) -> Result<(Row, T), QueryError> {
    let bad = |e: serde_json::Error| {
        QueryError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a fleet row that is not a record: {e}"),
        ))
    };
    let row: Row = serde_json::from_str(line).map_err(bad)?;
    let record = serde_json::from_str(&row.record).map_err(bad)?;
    Ok((row, record))
}

/// Runs `query` against the fleet, printing to stdout like the local query does.
pub fn run(fleet: &Fleet, query: &Query) -> ExitCode {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let result = connect(fleet).and_then(|ch| {
        execute(
            &ch,
            &fleet.url,
            query,
            &mut out,
            crate::commands::query::width(),
        )
        .map_err(|e| e.to_string())
        .and_then(|empty| {
            out.flush().map_err(|e| e.to_string())?;
            Ok(empty)
        })
    });
    match result {
        Ok(empty) => {
            crate::commands::query::say_no_rows(empty);
            ExitCode::SUCCESS
        }
        Err(e) if e.contains("Broken pipe") => ExitCode::SUCCESS,
        Err(e) => {
            drop(out);
            say_as_is(&format!("mcp-guard: --fleet: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// A client for `fleet` (the URL checked, the password read from its file).
pub fn connect(fleet: &Fleet) -> Result<ClickHouse, String> {
    config::check_url(&fleet.url).map_err(|e| format!("--fleet {e}"))?;
    if fleet.ca_file.is_some() && !fleet.url.starts_with("https://") {
        return Err("--fleet-ca is only for an https:// URL".into());
    }
    let database = fleet
        .database
        .clone()
        .unwrap_or_else(|| DEFAULT_DATABASE.to_string());
    if !config::valid_database(&database) {
        return Err(format!(
            "--fleet-database {database:?}: letters, digits and '_'"
        ));
    }
    let password = fleet
        .password_file
        .as_deref()
        .map(config::read_secret)
        .transpose()
        .map_err(|e| format!("--fleet-password-file {e}"))?;
    let url = fleet.url.strip_suffix('/').unwrap_or(&fleet.url);
    ClickHouse::new(
        &ClickHouseTarget {
            url: url.to_string(),
            database,
            user: fleet.user.clone(),
            password,
            ca_file: fleet.ca_file.clone(),
        },
        QUERY_TIMEOUT,
    )
}

/// Runs `query` on `ch`, writing what the local query would, with hosts.
pub fn execute(
    ch: &ClickHouse,
    url: &str,
    query: &Query,
    out: &mut dyn Write,
    width: usize,
) -> Result<Option<NoRows>, QueryError> {
    let source = format!("fleet {url}");
    let db = ch.database().to_string();
    let fetch = |sql: String| -> Result<Box<dyn BufRead>, QueryError> {
        ch.query_lines(&sql)
            .map(|r| Box::new(r) as Box<dyn BufRead>)
            .map_err(|e| QueryError::Io(io::Error::other(e)))
    };
    match query {
        Query::Calls {
            server,
            tool,
            since,
            json,
        } => {
            let what = query::describe("calls", &[("server", server), ("tool", tool)], *since);
            let lines = fetch(list_sql(&db, query).unwrap_or_default())?;
            let table: TableFn<Hosted<CallRecord>> = query::fleet_calls_table;
            query::list(out, *json, each(lines), table, width, &what, &source)
        }
        Query::Events {
            server,
            call,
            kind,
            since,
            json,
        } => {
            let what = query::describe(
                "events",
                &[("server", server), ("call", call), ("kind", kind)],
                *since,
            );
            let lines = fetch(list_sql(&db, query).unwrap_or_default())?;
            let table: TableFn<Hosted<EventRecord>> = query::fleet_events_table;
            query::list(out, *json, each(lines), table, width, &what, &source)
        }
        Query::Alerts {
            server,
            since,
            json,
        } => {
            let what = query::describe("alerts", &[("server", server)], *since);
            let lines = fetch(list_sql(&db, query).unwrap_or_default())?;
            let table: TableFn<Hosted<AlertRecord>> = query::fleet_alerts_table;
            query::list(out, *json, each(lines), table, width, &what, &source)
        }
        Query::Trace { call_id, json } => {
            let (host, trace) = trace(ch, call_id)?.ok_or_else(|| {
                QueryError::Io(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no call {call_id:?} in the fleet ({url})"),
                ))
            })?;
            query::print_trace(out, &trace, Some(&host), *json, width)?;
            Ok(None)
        }
        Query::Sessions {
            server,
            since,
            json,
        } => {
            let what = query::describe("sessions", &[("server", server)], *since);
            let lines = fetch(list_sql(&db, query).unwrap_or_default())?;
            let table: TableFn<Hosted<SessionRecord>> = query::fleet_sessions_table;
            query::list(out, *json, each(lines), table, width, &what, &source)
        }
    }
}

/// A list's per-row callback.
type Sink<'a, T> = &'a mut dyn FnMut(Hosted<T>) -> Result<(), QueryError>;

/// Hands each row of `lines` to the list's callback.
fn each<T: DeserializeOwned>(
    lines: Box<dyn BufRead>,
) -> impl FnOnce(Sink<'_, T>) -> Result<(), QueryError> {
    move |f| {
        for line in lines.lines() {
            let line = line?;
            if line.is_empty() {
                continue;
            }
            let (row, record) = parse_row::<T>(&line)?;
            f(Hosted {
                host: row.host,
                record,
            })?;
        }
        Ok(())
    }
}

/// All rows of `sql` as records with their host ids.
fn collect<T: DeserializeOwned>(ch: &ClickHouse, sql: &str) -> Result<Vec<(Row, T)>, QueryError> {
    let lines = ch
        .query_lines(sql)
        .map_err(|e| QueryError::Io(io::Error::other(e)))?;
    let mut out = Vec::new();
    for line in lines.lines() {
        let line = line?;
        if !line.is_empty() {
            out.push(parse_row(&line)?);
        }
    }
    Ok(out)
}

/// A call with its session, events and alerts, all from the host that recorded it.
fn trace(ch: &ClickHouse, call_id: &str) -> Result<Option<(String, Trace)>, QueryError> {
    let db = ch.database();
    let id = literal(call_id);
    let calls: Vec<(Row, CallRecord)> = collect(
        ch,
        &format!(
            "SELECT host, host_id, record FROM {db}.calls FINAL WHERE call_id = {id} \
             ORDER BY host_id LIMIT 1 FORMAT JSONEachRow"
        ),
    )?;
    let Some((row, call)) = calls.into_iter().next() else {
        return Ok(None);
    };
    let host_id = literal(&row.host_id);
    let session: Option<SessionRecord> = collect::<SessionRecord>(
        ch,
        &format!(
            "SELECT host, record FROM {db}.sessions FINAL WHERE host_id = {host_id} AND \
             session = {} LIMIT 1 FORMAT JSONEachRow",
            literal(&call.session)
        ),
    )?
    .into_iter()
    .next()
    .map(|(_, s)| s);
    let events = collect::<EventRecord>(
        ch,
        &format!(
            "SELECT host, record FROM {db}.events FINAL WHERE host_id = {host_id} AND \
             (call_id = {id} OR (attribution = 'ambiguous' AND session = {} AND \
             has(candidates, {id}))) ORDER BY ts_ns, event_id FORMAT JSONEachRow",
            literal(&call.session)
        ),
    )?
    .into_iter()
    .map(|(_, e)| e)
    .collect();
    let alerts = collect::<AlertRecord>(
        ch,
        &format!(
            "SELECT host, record FROM {db}.alerts FINAL WHERE host_id = {host_id} AND \
             call_id = {id} ORDER BY ts_ns, alert_id FORMAT JSONEachRow"
        ),
    )?
    .into_iter()
    .map(|(_, a)| a)
    .collect();
    Ok(Some((
        row.host,
        Trace {
            call,
            session,
            events,
            alerts,
        },
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_values_cannot_break_out_of_their_literal() {
        assert_eq!(literal("plain"), "'plain'");
        assert_eq!(literal("a'b"), "'a\\'b'");
        assert_eq!(literal("a\\'b"), "'a\\\\\\'b'");
        let sql = list_sql(
            "mcp_guard",
            &Query::Calls {
                server: None,
                tool: Some("x' OR 1=1 --".into()),
                since: None,
                json: false,
            },
        )
        .unwrap_or_default();
        assert!(sql.contains("tool = 'x\\' OR 1=1 --'"), "{sql}");
        let sql = list_sql(
            "mcp_guard",
            &Query::Events {
                server: Some("fs".into()),
                call: Some("c1".into()),
                kind: Some("kill".into()),
                since: Some(Duration::from_mins(1)),
                json: true,
            },
        )
        .unwrap_or_default();
        assert!(
            sql.starts_with("SELECT host, record FROM mcp_guard.events FINAL WHERE "),
            "{sql}"
        );
        assert!(
            sql.contains("kind = 'killed'") && sql.contains("has(candidates, 'c1')"),
            "{sql}"
        );
        assert!(sql.contains("ts_ns >= "), "{sql}");
    }
}
