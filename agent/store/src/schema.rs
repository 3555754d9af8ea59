//! The SQL side of the store: schema migrations, and records to and from rows.
//!
//! Timestamps are INTEGER nanoseconds since the epoch (UTC): compact, indexable, exact. Lists
//! (command, argv, candidates, `event_ids`) and free-form detail are JSON text.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};

use super::{
    AlertRecord, CallRecord, EventKind, EventRecord, ServerFacts, SessionFacts, SessionRecord,
    StoreError, Timestamp, audit::CallAudit,
};

/// Migrations in order; the schema version is the number applied. Never edit one that shipped:
/// append a new one.
pub(super) const MIGRATIONS: &[&str] = &[
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
    // 2: what a call was asked and answered (redacted, bounded), what the server said about
    // itself, and the events alerts cite (retention keeps those as long as their alerts).
    "
    ALTER TABLE calls ADD COLUMN arguments TEXT;
    ALTER TABLE calls ADD COLUMN arguments_cut INTEGER;
    ALTER TABLE calls ADD COLUMN result TEXT;
    ALTER TABLE calls ADD COLUMN result_cut INTEGER;
    ALTER TABLE calls ADD COLUMN redacted TEXT;
    ALTER TABLE sessions ADD COLUMN server_info TEXT;
    ALTER TABLE sessions ADD COLUMN tools_listed TEXT;

    CREATE TABLE alert_events (
        event_id TEXT NOT NULL,
        alert_id TEXT NOT NULL,
        PRIMARY KEY (event_id, alert_id)
    ) WITHOUT ROWID;
    CREATE INDEX alert_events_alert ON alert_events(alert_id);
    INSERT OR IGNORE INTO alert_events (event_id, alert_id)
        SELECT j.value, a.alert_id FROM alerts a, json_each(a.event_ids) j
        WHERE j.type = 'text';
    CREATE TRIGGER alerts_cite AFTER INSERT ON alerts BEGIN
        INSERT OR IGNORE INTO alert_events (event_id, alert_id)
            SELECT value, new.alert_id FROM json_each(new.event_ids) WHERE type = 'text';
    END;
    CREATE TRIGGER alerts_recite AFTER UPDATE OF alert_id, event_ids ON alerts BEGIN
        DELETE FROM alert_events WHERE alert_id = old.alert_id;
        INSERT OR IGNORE INTO alert_events (event_id, alert_id)
            SELECT value, new.alert_id FROM json_each(new.event_ids) WHERE type = 'text';
    END;
    CREATE TRIGGER alerts_uncite AFTER DELETE ON alerts BEGIN
        DELETE FROM alert_events WHERE alert_id = old.alert_id;
    END;
    ",
    // 3: one alert per session, rule, tool and summary, counted, with the last time it fired.
    // The repeats stored before are folded into the first of each (their events stay cited
    // by the first's `event_ids` only as far as it had them). `repeat_seq` numbers the rows in
    // the order they were last repeated, so the agent's tail counts every occurrence.
    "
    ALTER TABLE alerts ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE alerts ADD COLUMN last_seen INTEGER;
    UPDATE alerts SET last_seen = ts;
    CREATE INDEX alerts_repeat ON alerts(session, rule, summary);
    UPDATE alerts SET
        count = (SELECT count(*) FROM alerts b WHERE b.session = alerts.session
                 AND b.rule = alerts.rule AND b.summary = alerts.summary AND b.tool IS alerts.tool),
        last_seen = (SELECT max(b.ts) FROM alerts b WHERE b.session = alerts.session
                 AND b.rule = alerts.rule AND b.summary = alerts.summary AND b.tool IS alerts.tool)
    WHERE EXISTS (SELECT 1 FROM alerts b WHERE b.session = alerts.session
                  AND b.rule = alerts.rule AND b.summary = alerts.summary
                  AND b.tool IS alerts.tool AND b.id <> alerts.id);
    DELETE FROM alerts WHERE id <> (SELECT min(b.id) FROM alerts b WHERE b.session = alerts.session
        AND b.rule = alerts.rule AND b.summary = alerts.summary AND b.tool IS alerts.tool);
    ALTER TABLE alerts ADD COLUMN repeat_seq INTEGER;
    CREATE INDEX alerts_repeated ON alerts(repeat_seq) WHERE repeat_seq IS NOT NULL;
    ",
    // 4: the host name a connect's address was resolved from, per the server's own DNS.
    "
    ALTER TABLE events ADD COLUMN host TEXT;
    ",
];

/// Event ids an alert cites at most: a repeat adds its events until then, after that it
/// replaces the last one (the first ones and the latest stay).
const MAX_ALERT_EVENTS: usize = 64;

/// Tool lists kept per session at most: a server that changes its tools at every call cannot
/// grow its session's row without bound (the last entry is replaced instead).
const MAX_TOOLS_LISTED: i64 = 256;

/// The schema version this build writes.
#[expect(clippy::cast_possible_wrap, reason = "a handful of migrations")]
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
    // A negative version is not one this build (or any) wrote.
    let done = usize::try_from(found)
        .map_err(|_| open_err(rusqlite::Error::IntegralValueOutOfRange(0, found)))?;
    for (version, sql) in (1i64..).zip(MIGRATIONS.iter()).skip(done) {
        tx.execute_batch(sql).map_err(open_err)?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
            params![version, Timestamp::now().unix_nanos()],
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
    // Borrowed from SQLite's row, not copied into a `String` first.
    let Some(text) = row.get_ref(idx)?.as_str_or_null()? else {
        return Ok(None);
    };
    serde_json::from_str(text).map(Some).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// Parses a column holding an enum's name, as a conversion error rusqlite reports with the column.
fn parse_col<T>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    row.get_ref(idx)?.as_str()?.parse().map_err(|e| {
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

pub(super) const SESSION_COLUMNS: &str = "session, server, started_at, ended_at, command, policy, \
     pid, observe, exit_status, server_info, tools_listed";

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
        facts: ServerFacts {
            server_info: from_json(row, 9)?,
            tools_listed: from_json(row, 10)?.unwrap_or_default(),
        },
    })
}

/// Adds what the server said about itself to its session's row (nothing when the row is not
/// there: its session's own record was lost).
pub(super) fn update_facts(tx: &Transaction<'_>, f: &SessionFacts) -> rusqlite::Result<()> {
    if let Some(info) = &f.server_info {
        let mut stmt =
            tx.prepare_cached("UPDATE sessions SET server_info = ?2 WHERE session = ?1")?;
        stmt.execute(params![f.session, json_text(info)])?;
    }
    if let Some(listing) = &f.tools_listed {
        // Appended when it differs from the last one; past the cap, it replaces the last one.
        let mut stmt = tx.prepare_cached(
            "UPDATE sessions SET tools_listed = CASE
                 WHEN json_array_length(coalesce(tools_listed, '[]')) >= ?4
                 THEN json_set(tools_listed, '$[#-1]', json(?2))
                 ELSE json_insert(coalesce(tools_listed, '[]'), '$[#]', json(?2)) END
             WHERE session = ?1
               AND json_extract(coalesce(tools_listed, '[]'), '$[#-1].sha256') IS NOT ?3",
        )?;
        stmt.execute(params![
            f.session,
            json_text(listing),
            listing.sha256,
            MAX_TOOLS_LISTED
        ])?;
    }
    Ok(())
}

pub(super) const CALL_COLUMNS: &str = "call_id, server, session, method, tool, request_id, \
     started_at, ended_at, decision, reason, error, result_bytes, arguments, arguments_cut, \
     result, result_cut, redacted";

pub(super) fn upsert_call(tx: &Transaction<'_>, c: &CallRecord) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO calls (call_id, server, session, method, tool, request_id, started_at,
                            ended_at, decision, reason, error, result_bytes, arguments,
                            arguments_cut, result, result_cut, redacted)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
         ON CONFLICT(call_id) DO UPDATE SET
             server = excluded.server, session = excluded.session, method = excluded.method,
             tool = coalesce(excluded.tool, tool), request_id = excluded.request_id,
             started_at = excluded.started_at, ended_at = coalesce(excluded.ended_at, ended_at),
             decision = excluded.decision, reason = coalesce(excluded.reason, reason),
             error = coalesce(excluded.error, error),
             result_bytes = coalesce(excluded.result_bytes, result_bytes),
             arguments = coalesce(excluded.arguments, arguments),
             arguments_cut = coalesce(excluded.arguments_cut, arguments_cut),
             result = coalesce(excluded.result, result),
             result_cut = coalesce(excluded.result_cut, result_cut),
             redacted = coalesce(excluded.redacted, redacted)",
    )?;
    let audit = c.audit.as_ref();
    let cut = |n: u64| (n > 0).then(|| i64::try_from(n).unwrap_or(i64::MAX));
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
        audit.and_then(|a| a.arguments.as_ref()).map(json_text),
        audit.and_then(|a| cut(a.arguments_cut)),
        audit.and_then(|a| a.result.as_ref()).map(json_text),
        audit.and_then(|a| cut(a.result_cut)),
        audit
            .filter(|a| !a.redacted.is_empty())
            .map(|a| json_text(&a.redacted)),
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
        audit: {
            let cut = |idx| -> rusqlite::Result<u64> {
                Ok(row
                    .get::<_, Option<i64>>(idx)?
                    .map_or(0, |n| u64::try_from(n).unwrap_or(0)))
            };
            let audit = CallAudit {
                arguments: from_json(row, 12)?,
                arguments_cut: cut(13)?,
                result: from_json(row, 14)?,
                result_cut: cut(15)?,
                redacted: from_json(row, 16)?.unwrap_or_default(),
            };
            (audit != CallAudit::default()).then_some(audit)
        },
    })
}

pub(super) const EVENT_COLUMNS: &str = "event_id, ts, server, session, pid, kind, path, addr, \
     port, verdict, call_id, attribution, candidates, flags, result, argv, proto, would_deny, detail, \
     host";

pub(super) fn upsert_event(tx: &Transaction<'_>, e: &EventRecord) -> rusqlite::Result<()> {
    // Last write wins: the correlator may re-send an event once its call becomes known.
    let mut stmt = tx.prepare_cached(
        "INSERT INTO events (event_id, ts, server, session, pid, kind, path, addr, port, verdict,
                             call_id, attribution, candidates, flags, result, argv, proto,
                             would_deny, detail, host)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                 ?18, ?19, ?20)
         ON CONFLICT(event_id) DO UPDATE SET
             ts = excluded.ts, server = excluded.server, session = excluded.session,
             pid = excluded.pid, kind = excluded.kind, path = excluded.path, addr = excluded.addr,
             port = excluded.port, verdict = excluded.verdict, call_id = excluded.call_id,
             attribution = excluded.attribution, candidates = excluded.candidates,
             flags = excluded.flags, result = excluded.result, argv = excluded.argv,
             proto = excluded.proto, would_deny = excluded.would_deny, detail = excluded.detail,
             host = excluded.host",
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
        e.host,
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
        kind: EventKind::from_name(row.get_ref(5)?.as_str()?),
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
        host: row.get(19)?,
    })
}

pub(super) const ALERT_COLUMNS: &str = "alert_id, ts, server, session, rule, severity, call_id, \
     tool, summary, event_ids, action, count, last_seen";

/// Writes an alert. The same alert written again (its id is stored) replaces it, keeping its
/// count; a repeat in its session (same rule, tool and summary under another id) is counted in
/// the stored one instead: its count grows, `last_seen` moves on, its events are cited too.
pub(super) fn upsert_alert(tx: &Transaction<'_>, a: &AlertRecord) -> rusqlite::Result<()> {
    let mut known = tx.prepare_cached("SELECT 1 FROM alerts WHERE alert_id = ?1")?;
    if !known.exists([&a.alert_id])? {
        let mut repeat = tx.prepare_cached(
            "SELECT id, event_ids FROM alerts
             WHERE session = ?1 AND rule = ?2 AND summary = ?3 AND tool IS ?4
             ORDER BY id LIMIT 1",
        )?;
        let found: Option<(i64, Option<String>)> = repeat
            .query_row(params![a.session, a.rule, a.summary, a.tool], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        if let Some((id, cited)) = found {
            let mut events: Vec<String> = cited
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            for e in &a.event_ids {
                if events.contains(e) {
                    continue;
                }
                if events.len() >= MAX_ALERT_EVENTS {
                    events.pop();
                }
                events.push(e.clone());
            }
            let mut stmt = tx.prepare_cached(
                "UPDATE alerts SET count = count + ?2, last_seen = max(coalesce(last_seen, ts), ?3),
                     event_ids = ?4,
                     repeat_seq = (SELECT coalesce(max(repeat_seq), 0) + 1 FROM alerts)
                 WHERE id = ?1",
            )?;
            stmt.execute(params![
                id,
                i64::try_from(a.count.max(1)).unwrap_or(i64::MAX),
                a.last_seen.max(a.ts).unix_nanos(),
                json_text(&events),
            ])?;
            return Ok(());
        }
    }
    let mut stmt = tx.prepare_cached(
        "INSERT INTO alerts (alert_id, ts, server, session, rule, severity, call_id, tool,
                             summary, event_ids, action, count, last_seen)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT(alert_id) DO UPDATE SET
             ts = excluded.ts, server = excluded.server, session = excluded.session,
             rule = excluded.rule, severity = excluded.severity, call_id = excluded.call_id,
             tool = excluded.tool, summary = excluded.summary, event_ids = excluded.event_ids,
             action = excluded.action, count = max(count, excluded.count),
             last_seen = max(coalesce(last_seen, ts), excluded.last_seen)",
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
        i64::try_from(a.count.max(1)).unwrap_or(i64::MAX),
        a.last_seen.max(a.ts).unix_nanos(),
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
        count: row
            .get::<_, Option<i64>>(11)?
            .map_or(1, |n| u64::try_from(n).unwrap_or(1).max(1)),
        last_seen: opt_ts(row, 12)?.unwrap_or(ts(row, 1)?),
    })
}
