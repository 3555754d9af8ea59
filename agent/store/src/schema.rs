//! The SQL side of the store: schema migrations, and records to and from rows.
//!
//! Timestamps are INTEGER nanoseconds since the epoch (UTC): compact, indexable, exact. Lists
//! (command, argv, candidates, event_ids) and free-form detail are JSON text.

use std::path::Path;

use rusqlite::{Connection, Row, Transaction, TransactionBehavior, params};

use super::{
    AlertRecord, CallRecord, EventKind, EventRecord, SessionRecord, StoreError, Timestamp,
    parse_col,
};

/// Migrations in order; the schema version is the number applied. Never edit one that shipped:
/// append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: sessions, calls, events, alerts with the indexes the query commands use.
    "
    CREATE TABLE sessions (
        session     TEXT PRIMARY KEY NOT NULL,
        server      TEXT NOT NULL,
        started_at  INTEGER NOT NULL,
        ended_at    INTEGER,
        command     TEXT NOT NULL,
        policy      TEXT NOT NULL,
        pid         INTEGER,
        observe     INTEGER NOT NULL DEFAULT 0,
        exit_status INTEGER
    );
    CREATE INDEX sessions_started ON sessions(started_at);

    CREATE TABLE calls (
        id           INTEGER PRIMARY KEY,
        call_id      TEXT NOT NULL UNIQUE,
        server       TEXT NOT NULL,
        session      TEXT NOT NULL,
        method       TEXT NOT NULL,
        tool         TEXT,
        request_id   TEXT NOT NULL,
        started_at   INTEGER NOT NULL,
        ended_at     INTEGER,
        decision     TEXT NOT NULL,
        reason       TEXT,
        error        TEXT,
        result_bytes INTEGER
    );
    CREATE INDEX calls_server_started ON calls(server, started_at);
    CREATE INDEX calls_started ON calls(started_at);

    CREATE TABLE events (
        id          INTEGER PRIMARY KEY,
        event_id    TEXT NOT NULL UNIQUE,
        ts          INTEGER NOT NULL,
        server      TEXT NOT NULL,
        session     TEXT NOT NULL,
        pid         INTEGER NOT NULL,
        kind        TEXT NOT NULL,
        path        TEXT,
        addr        TEXT,
        port        INTEGER,
        verdict     TEXT NOT NULL,
        call_id     TEXT,
        attribution TEXT NOT NULL,
        candidates  TEXT,
        flags       INTEGER,
        result      INTEGER,
        argv        TEXT,
        proto       TEXT,
        would_deny  INTEGER NOT NULL DEFAULT 0,
        detail      TEXT
    );
    CREATE INDEX events_server_ts ON events(server, ts);
    CREATE INDEX events_ts ON events(ts);
    CREATE INDEX events_kind_ts ON events(kind, ts);
    CREATE INDEX events_call ON events(call_id) WHERE call_id IS NOT NULL;
    CREATE INDEX events_ambiguous ON events(session, ts) WHERE attribution = 'ambiguous';

    CREATE TABLE alerts (
        id        INTEGER PRIMARY KEY,
        alert_id  TEXT NOT NULL UNIQUE,
        ts        INTEGER NOT NULL,
        server    TEXT NOT NULL,
        session   TEXT NOT NULL,
        rule      TEXT NOT NULL,
        severity  TEXT NOT NULL,
        call_id   TEXT,
        tool      TEXT,
        summary   TEXT NOT NULL,
        event_ids TEXT NOT NULL,
        action    TEXT
    );
    CREATE INDEX alerts_server_ts ON alerts(server, ts);
    CREATE INDEX alerts_ts ON alerts(ts);
    CREATE INDEX alerts_call ON alerts(call_id) WHERE call_id IS NOT NULL;
    ",
];

/// The schema version this build writes.
pub(super) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the schema to [`SCHEMA_VERSION`]; one process migrates while the others wait on the
/// write lock and then find nothing to do.
pub(super) fn migrate(
    conn: &mut Connection,
    path: &Path,
    read_only: bool,
) -> Result<(), StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    if read_only {
        let found = current_version(conn).map_err(open_err)?;
        return match found {
            v if v > SCHEMA_VERSION => Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found: v,
                supported: SCHEMA_VERSION,
            }),
            v if v < SCHEMA_VERSION => Err(StoreError::NeedsUpgrade {
                path: path.to_path_buf(),
                found: v,
                supported: SCHEMA_VERSION,
            }),
            _ => Ok(()),
        };
    }
    // Already current (the common case): no write lock, so opening never queues behind writers.
    if current_version(conn).map_err(open_err)? == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(open_err)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version    INTEGER PRIMARY KEY,
             applied_at INTEGER NOT NULL
         );",
    )
    .map_err(open_err)?;
    let found = current_version(&tx).map_err(open_err)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.execute_batch(sql).map_err(open_err)?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
            params![i as i64 + 1, Timestamp::now().unix_nanos()],
        )
        .map_err(open_err)?;
    }
    tx.commit().map_err(open_err)
}

fn current_version(conn: &Connection) -> rusqlite::Result<i64> {
    let exists: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(0);
    }
    conn.query_row(
        "SELECT coalesce(max(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )
}

fn json_text<T: serde::Serialize>(v: &T) -> String {
    // Serializing strings and plain values to JSON cannot fail.
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_string())
}

fn from_json<T: serde::de::DeserializeOwned>(
    row: &Row<'_>,
    idx: usize,
) -> rusqlite::Result<Option<T>> {
    let Some(text): Option<String> = row.get(idx)? else {
        return Ok(None);
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn ts(row: &Row<'_>, idx: usize) -> rusqlite::Result<Timestamp> {
    Ok(Timestamp::from_unix_nanos(row.get(idx)?))
}

fn opt_ts(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<Timestamp>> {
    Ok(row
        .get::<_, Option<i64>>(idx)?
        .map(Timestamp::from_unix_nanos))
}

pub(super) const SESSION_COLUMNS: &str =
    "session, server, started_at, ended_at, command, policy, pid, observe, exit_status";

pub(super) fn upsert_session(tx: &Transaction<'_>, s: &SessionRecord) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO sessions (session, server, started_at, ended_at, command, policy, pid,
                               observe, exit_status)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT(session) DO UPDATE SET
             server = excluded.server, started_at = excluded.started_at,
             ended_at = coalesce(excluded.ended_at, ended_at), command = excluded.command,
             policy = excluded.policy, pid = coalesce(excluded.pid, pid),
             observe = excluded.observe, exit_status = coalesce(excluded.exit_status, exit_status)",
    )?;
    stmt.execute(params![
        s.session,
        s.server,
        s.started_at.unix_nanos(),
        s.ended_at.map(Timestamp::unix_nanos),
        json_text(&s.command),
        s.policy,
        s.pid,
        s.observe,
        s.exit_status,
    ])?;
    Ok(())
}

pub(super) fn session_from_row(row: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        session: row.get(0)?,
        server: row.get(1)?,
        started_at: ts(row, 2)?,
        ended_at: opt_ts(row, 3)?,
        command: from_json(row, 4)?.unwrap_or_default(),
        policy: row.get(5)?,
        pid: row.get(6)?,
        observe: row.get(7)?,
        exit_status: row.get(8)?,
    })
}

pub(super) const CALL_COLUMNS: &str = "call_id, server, session, method, tool, request_id, \
     started_at, ended_at, decision, reason, error, result_bytes";

pub(super) fn upsert_call(tx: &Transaction<'_>, c: &CallRecord) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO calls (call_id, server, session, method, tool, request_id, started_at,
                            ended_at, decision, reason, error, result_bytes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT(call_id) DO UPDATE SET
             server = excluded.server, session = excluded.session, method = excluded.method,
             tool = coalesce(excluded.tool, tool), request_id = excluded.request_id,
             started_at = excluded.started_at, ended_at = coalesce(excluded.ended_at, ended_at),
             decision = excluded.decision, reason = coalesce(excluded.reason, reason),
             error = coalesce(excluded.error, error),
             result_bytes = coalesce(excluded.result_bytes, result_bytes)",
    )?;
    stmt.execute(params![
        c.call_id,
        c.server,
        c.session,
        c.method,
        c.tool,
        c.request_id,
        c.started_at.unix_nanos(),
        c.ended_at.map(Timestamp::unix_nanos),
        c.decision.as_str(),
        c.reason,
        c.error,
        c.result_bytes.map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
    ])?;
    Ok(())
}

pub(super) fn call_from_row(row: &Row<'_>) -> rusqlite::Result<CallRecord> {
    Ok(CallRecord {
        call_id: row.get(0)?,
        server: row.get(1)?,
        session: row.get(2)?,
        method: row.get(3)?,
        tool: row.get(4)?,
        request_id: row.get(5)?,
        started_at: ts(row, 6)?,
        ended_at: opt_ts(row, 7)?,
        decision: parse_col(row, 8)?,
        reason: row.get(9)?,
        error: row.get(10)?,
        result_bytes: row
            .get::<_, Option<i64>>(11)?
            .map(|b| u64::try_from(b).unwrap_or(0)),
    })
}

pub(super) const EVENT_COLUMNS: &str = "event_id, ts, server, session, pid, kind, path, addr, \
     port, verdict, call_id, attribution, candidates, flags, result, argv, proto, would_deny, detail";

pub(super) fn upsert_event(tx: &Transaction<'_>, e: &EventRecord) -> rusqlite::Result<()> {
    // Last write wins: the correlator may re-send an event once its call becomes known.
    let mut stmt = tx.prepare_cached(
        "INSERT INTO events (event_id, ts, server, session, pid, kind, path, addr, port, verdict,
                             call_id, attribution, candidates, flags, result, argv, proto,
                             would_deny, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                 ?18, ?19)
         ON CONFLICT(event_id) DO UPDATE SET
             ts = excluded.ts, server = excluded.server, session = excluded.session,
             pid = excluded.pid, kind = excluded.kind, path = excluded.path, addr = excluded.addr,
             port = excluded.port, verdict = excluded.verdict, call_id = excluded.call_id,
             attribution = excluded.attribution, candidates = excluded.candidates,
             flags = excluded.flags, result = excluded.result, argv = excluded.argv,
             proto = excluded.proto, would_deny = excluded.would_deny, detail = excluded.detail",
    )?;
    stmt.execute(params![
        e.event_id,
        e.ts.unix_nanos(),
        e.server,
        e.session,
        e.pid,
        e.kind.as_str(),
        e.path,
        e.addr,
        e.port,
        e.verdict.as_str(),
        e.call_id,
        e.attribution.as_str(),
        (!e.candidates.is_empty()).then(|| json_text(&e.candidates)),
        e.flags,
        e.result,
        e.argv.as_ref().map(json_text),
        e.proto,
        e.would_deny,
        e.detail.as_ref().map(json_text),
    ])?;
    Ok(())
}

pub(super) fn event_from_row(row: &Row<'_>) -> rusqlite::Result<EventRecord> {
    Ok(EventRecord {
        event_id: row.get(0)?,
        ts: ts(row, 1)?,
        server: row.get(2)?,
        session: row.get(3)?,
        pid: row.get(4)?,
        kind: EventKind::from_name(&row.get::<_, String>(5)?),
        path: row.get(6)?,
        addr: row.get(7)?,
        port: row.get(8)?,
        verdict: parse_col(row, 9)?,
        call_id: row.get(10)?,
        attribution: parse_col(row, 11)?,
        candidates: from_json(row, 12)?.unwrap_or_default(),
        flags: row.get(13)?,
        result: row.get(14)?,
        argv: from_json(row, 15)?,
        proto: row.get(16)?,
        would_deny: row.get(17)?,
        detail: from_json(row, 18)?,
    })
}

pub(super) const ALERT_COLUMNS: &str =
    "alert_id, ts, server, session, rule, severity, call_id, tool, summary, event_ids, action";

pub(super) fn upsert_alert(tx: &Transaction<'_>, a: &AlertRecord) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO alerts (alert_id, ts, server, session, rule, severity, call_id, tool,
                             summary, event_ids, action)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT(alert_id) DO UPDATE SET
             ts = excluded.ts, server = excluded.server, session = excluded.session,
             rule = excluded.rule, severity = excluded.severity, call_id = excluded.call_id,
             tool = excluded.tool, summary = excluded.summary, event_ids = excluded.event_ids,
             action = excluded.action",
    )?;
    stmt.execute(params![
        a.alert_id,
        a.ts.unix_nanos(),
        a.server,
        a.session,
        a.rule,
        a.severity.as_str(),
        a.call_id,
        a.tool,
        a.summary,
        json_text(&a.event_ids),
        a.action,
    ])?;
    Ok(())
}

pub(super) fn alert_from_row(row: &Row<'_>) -> rusqlite::Result<AlertRecord> {
    Ok(AlertRecord {
        alert_id: row.get(0)?,
        ts: ts(row, 1)?,
        server: row.get(2)?,
        session: row.get(3)?,
        rule: row.get(4)?,
        severity: parse_col(row, 5)?,
        call_id: row.get(6)?,
        tool: row.get(7)?,
        summary: row.get(8)?,
        event_ids: from_json(row, 9)?.unwrap_or_default(),
        action: row.get(10)?,
    })
}
