//! The store: every session, call, kernel event and alert, in embedded SQLite at
//! `<state_dir>/mcp-guard.db`, queryable after an incident.
//!
//! Several `exec` processes and the agent write one database at once: WAL mode (readers never
//! block writers), a busy timeout, and short `BEGIN IMMEDIATE` transactions. Producers do not
//! call [`Store`] directly on a hot path; they send records to a [`StoreHandle`]
//! ([`StoreWriter::spawn`]), which never blocks and counts what it could not write.

pub mod audit;
pub mod changes;
mod lost;
pub mod query;
pub mod retention;
mod schema;
mod tail;
mod wrap;
mod writer;

use std::{
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, Row, TransactionBehavior,
    params_from_iter, types::Value,
};

pub use audit::{CallCapture, RawJson, Redact};
pub use changes::{Change, ChangeBatch, ExportLag};
pub use lost::{QUEUE_FULL as STORE_QUEUE_FULL, WRITE_FAILED as STORE_WRITE_FAILED};
use mcp_guard_model::records::{
    AlertRecord, CallRecord, EventKind, EventRecord, LOST_KIND, Record, ServerFacts, SessionFacts,
    SessionRecord, Timestamp,
};
pub use retention::Retention;
pub use tail::{Tail, TailBatch};
pub use writer::{StoreHandle, StoreWriter, WriterConfig, WriterStats};

use mcp_guard_statefs::StateDir;

/// The database file's name inside the state dir.
pub const DB_FILE: &str = "mcp-guard.db";

/// How long a writer waits for another process's transaction before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes the WAL file is cut back to after a checkpoint.
const WAL_SIZE_LIMIT: i64 = 4 << 20;

/// The store's path for a state dir.
pub fn db_path(state_dir: &Path) -> PathBuf {
    state_dir.join(DB_FILE)
}

/// What went wrong with the store. Messages name the database path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No database file where one was expected.
    #[error(
        "no store at {}: nothing has been recorded there yet, or --state-dir \
         (MCP_GUARD_STATE_DIR) points elsewhere",
        path.display()
    )]
    Missing {
        /// The database path.
        path: PathBuf,
    },
    /// The state dir or the database file could not be created.
    #[error("cannot create {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database could not be opened or is not a database.
    #[error(
        "cannot open the store {}: {source} (check --state-dir / MCP_GUARD_STATE_DIR and \
         the file's permissions)",
        path.display()
    )]
    Open {
        /// The database path.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// The database was written by a newer mcp-guard.
    #[error(
        "the store {} has schema version {found}; this mcp-guard understands up to \
         {supported}: use the newer mcp-guard that wrote it",
        path.display()
    )]
    TooNew {
        /// The database path.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest this build knows.
        supported: i64,
    },
    /// The database needs a schema upgrade but was opened read-only.
    #[error(
        "the store {} has schema version {found} and needs upgrading to {supported}, but it \
         is read-only for this user: run mcp-guard once as a user who can write it",
        path.display()
    )]
    NeedsUpgrade {
        /// The database path.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The version this build writes.
        supported: i64,
    },
    /// A statement failed (disk full, locked beyond the busy timeout, I/O error, ...).
    #[error("store {}: {source}", path.display())]
    Sql {
        /// The database path.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
}

impl StoreError {
    /// Whether the disk (or its quota) is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self.sqlite_code(), Some(ErrorCode::DiskFull))
    }

    /// Whether another writer held the lock beyond the busy timeout.
    pub fn is_busy(&self) -> bool {
        matches!(
            self.sqlite_code(),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
        )
    }

    fn sqlite_code(&self) -> Option<ErrorCode> {
        match self {
            StoreError::Open { source, .. } | StoreError::Sql { source, .. } => {
                source.sqlite_error_code()
            }
            _ => None,
        }
    }
}

/// Which calls to list. Every field narrows; the default lists everything.
#[derive(Clone, Debug, Default)]
pub struct CallFilter {
    /// Only this server.
    pub server: Option<String>,
    /// Only this tool.
    pub tool: Option<String>,
    /// Only this session.
    pub session: Option<String>,
    /// Only calls started at or after this.
    pub since: Option<Timestamp>,
    /// At most this many, the most recent.
    pub limit: Option<usize>,
}

/// Which events to list. Every field narrows; the default lists everything.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// Only this server.
    pub server: Option<String>,
    /// Only events attributed to this call, including ambiguous ones that list it as a candidate.
    pub call: Option<String>,
    /// Only this kind (its contract name).
    pub kind: Option<String>,
    /// Only this session.
    pub session: Option<String>,
    /// Only events at or after this.
    pub since: Option<Timestamp>,
    /// At most this many, the most recent.
    pub limit: Option<usize>,
}

/// Which alerts to list. Every field narrows; the default lists everything.
#[derive(Clone, Debug, Default)]
pub struct AlertFilter {
    /// Only this server.
    pub server: Option<String>,
    /// Only alerts about this call.
    pub call: Option<String>,
    /// Only alerts at or after this.
    pub since: Option<Timestamp>,
    /// At most this many, the most recent.
    pub limit: Option<usize>,
}

/// One call with everything recorded about it.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    /// The call.
    pub call: CallRecord,
    /// Its session, when recorded.
    pub session: Option<SessionRecord>,
    /// Its events (attributed to it, or ambiguous with it as a candidate), in time order.
    pub events: Vec<EventRecord>,
    /// Alerts about it, in time order.
    pub alerts: Vec<AlertRecord>,
}

/// Row counts per table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Sessions.
    pub sessions: u64,
    /// Calls.
    pub calls: u64,
    /// Events.
    pub events: u64,
    /// Alerts.
    pub alerts: u64,
}

/// What a [`Store::prune`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneStats {
    /// Rows deleted per table.
    pub deleted: Counts,
    /// Live database bytes before.
    pub bytes_before: u64,
    /// Live database bytes after.
    pub bytes_after: u64,
}

/// An open store (one SQLite connection). Not `Sync`: one per thread.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    read_only: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the database at `path` for writing, creating it (and its directory) if needed, and
    /// brings its schema up to date.
    ///
    /// The directory is opened through [`StateDir`] (created 0700; this user's and writable by
    /// no one else) and the file created in it 0600 (SQLite gives the -wal and -shm files the
    /// database file's mode) or found there as a regular file of this user, never through a
    /// symlink. SQLite then opens it by the directory's resolved path with
    /// `SQLITE_OPEN_NOFOLLOW`: a symlink anywhere in that path makes the open fail, and SQLite
    /// opens the database, WAL and journal files themselves with `O_NOFOLLOW`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let create_err = |source| StoreError::CreateDir {
            path: path.to_path_buf(),
            source,
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| create_err(std::io::Error::other("not a file name")))?;
        let state = StateDir::create(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        state.ensure_file(state.dir(), name).map_err(create_err)?;
        let real = state.dir().real_path().map_err(create_err)?.join(name);
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let mut store = Self::open_with(&real, flags, false)?;
        store.path = path.to_path_buf();
        Ok(store)
    }

    /// Opens an existing database for queries: fails with [`StoreError::Missing`] when there is
    /// none, and falls back to read-only when the file is not writable for this user.
    pub fn open_existing(path: &Path) -> Result<Store, StoreError> {
        if !path.exists() {
            return Err(StoreError::Missing {
                path: path.to_path_buf(),
            });
        }
        let rw = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        match Self::open_with(path, rw, false) {
            Err(StoreError::Open { source, .. })
                if matches!(
                    source.sqlite_error_code(),
                    Some(
                        ErrorCode::CannotOpen
                            | ErrorCode::ReadOnly
                            | ErrorCode::PermissionDenied
                            | ErrorCode::DiskFull
                    )
                ) =>
            {
                let ro = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                Self::open_with(path, ro, true)
            }
            other => other,
        }
    }

    fn open_with(path: &Path, flags: OpenFlags, read_only: bool) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            read_only,
        };
        if !read_only {
            // Only what needs setting is set: each of these may write the header, and an
            // existing store must open for queries even on a full disk.
            let get = |pragma: &str| -> rusqlite::Result<String> {
                store
                    .conn
                    .pragma_query_value(None, pragma, |r| r.get::<_, rusqlite::types::Value>(0))
                    .map(|v| match v {
                        Value::Text(s) => s.to_ascii_lowercase(),
                        Value::Integer(i) => i.to_string(),
                        _ => String::new(),
                    })
            };
            if get("page_count").map_err(open_err)? == "0" {
                // Must precede the first table: lets prune() give freed pages back to the disk.
                store
                    .conn
                    .pragma_update(None, "auto_vacuum", "INCREMENTAL")
                    .map_err(open_err)?;
            }
            // WAL: readers and the writer do not block each other; persistent in the file.
            if get("journal_mode").map_err(open_err)? != "wal" {
                let mode: String = store
                    .conn
                    .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
                    .map_err(open_err)?;
                if !mode.eq_ignore_ascii_case("wal") {
                    tracing::warn!(path = %path.display(), mode, "store is not in WAL mode");
                }
            }
            // Per connection, writes nothing. WAL + NORMAL stays consistent on power loss; it
            // may lose the last commits only.
            store
                .conn
                .pragma_update(None, "synchronous", "NORMAL")
                .map_err(open_err)?;
            // Per connection: a WAL that a burst or a retention pass grew is cut back to this
            // once checkpointed, so its disk space comes back too.
            store
                .conn
                .pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
                .map_err(open_err)?;
        }
        // The first statement that reads the file tells whether it is a database at all.
        schema::migrate(&mut store.conn, path, read_only)?;
        Ok(store)
    }

    /// How long a statement waits for another writer's lock (default [`BUSY_TIMEOUT`]).
    pub fn set_busy_timeout(&self, timeout: Duration) -> Result<(), StoreError> {
        self.conn.busy_timeout(timeout).map_err(self.sql_err())
    }

    /// The database path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sql_err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Sql {
            path: self.path.clone(),
            source,
        }
    }

    /// Writes records in one transaction: all or none. A record whose id is already stored
    /// replaces it (a call's response completes the record its request created).
    pub fn write(&mut self, records: &[Record]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        for record in records {
            match record {
                Record::Session(s) => schema::upsert_session(&tx, s),
                Record::Call(c) => schema::upsert_call(&tx, c),
                Record::Event(e) => schema::upsert_event(&tx, e),
                Record::Alert(a) => schema::upsert_alert(&tx, a),
                Record::Facts(f) => schema::update_facts(&tx, f),
            }
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Writes one record (its own transaction).
    pub fn insert(&mut self, record: impl Into<Record>) -> Result<(), StoreError> {
        self.write(&[record.into()])
    }

    /// Calls matching `filter`, oldest first.
    pub fn calls(&self, filter: &CallFilter) -> Result<Vec<CallRecord>, StoreError> {
        collect(|f| self.each_call(filter, f))
    }

    /// Calls matching `filter`, oldest first, handed to `f` one at a time (no list in memory).
    pub fn each_call<E: From<StoreError>>(
        &self,
        filter: &CallFilter,
        f: &mut dyn FnMut(CallRecord) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut q = Query::new();
        q.eq("server", filter.server.as_deref());
        q.eq("tool", filter.tool.as_deref());
        q.eq("session", filter.session.as_deref());
        q.since("started_at", filter.since);
        let select = Select {
            columns: schema::CALL_COLUMNS,
            table: "calls",
            order: "started_at",
            limit: filter.limit,
            from_row: schema::call_from_row,
        };
        self.select_each(&select, &q, f)
    }

    /// Events matching `filter`, oldest first.
    pub fn events(&self, filter: &EventFilter) -> Result<Vec<EventRecord>, StoreError> {
        collect(|f| self.each_event(filter, f))
    }

    /// Events matching `filter`, oldest first, handed to `f` one at a time (no list in memory).
    pub fn each_event<E: From<StoreError>>(
        &self,
        filter: &EventFilter,
        f: &mut dyn FnMut(EventRecord) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut q = Query::new();
        q.eq("server", filter.server.as_deref());
        // By contract name, so synonyms ("kill") find what was stored ("killed").
        let kind = filter
            .kind
            .as_deref()
            .map(|k| EventKind::from_name(k).as_str().to_string());
        q.eq("kind", kind.as_deref());
        q.eq("session", filter.session.as_deref());
        q.since("ts", filter.since);
        if let Some(call) = &filter.call {
            // Ambiguous events name the call among their candidates; the session narrows the
            // search to the partial index of ambiguous events.
            let n = q.push(Value::Text(call.clone()));
            q.clauses.push(format!(
                "(call_id = ?{n} OR (attribution = 'ambiguous' AND session = \
                 (SELECT session FROM calls WHERE call_id = ?{n}) AND EXISTS \
                 (SELECT 1 FROM json_each(events.candidates) WHERE value = ?{n})))"
            ));
        }
        let select = Select {
            columns: schema::EVENT_COLUMNS,
            table: "events",
            order: "ts",
            limit: filter.limit,
            from_row: schema::event_from_row,
        };
        self.select_each(&select, &q, f)
    }

    /// Alerts matching `filter`, oldest first.
    pub fn alerts(&self, filter: &AlertFilter) -> Result<Vec<AlertRecord>, StoreError> {
        collect(|f| self.each_alert(filter, f))
    }

    /// Alerts matching `filter`, oldest first, handed to `f` one at a time (no list in memory).
    pub fn each_alert<E: From<StoreError>>(
        &self,
        filter: &AlertFilter,
        f: &mut dyn FnMut(AlertRecord) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut q = Query::new();
        q.eq("server", filter.server.as_deref());
        if let Some(call) = &filter.call {
            // A repeat in a later call is counted in the session's first alert: it is about
            // this call too when it cites this call's events.
            let n = q.push(Value::Text(call.clone()));
            q.clauses.push(format!(
                "(call_id = ?{n} OR alert_id IN (SELECT ae.alert_id FROM alert_events ae \
                 JOIN events e ON e.event_id = ae.event_id WHERE e.call_id = ?{n}))"
            ));
        }
        q.since("ts", filter.since);
        let select = Select {
            columns: schema::ALERT_COLUMNS,
            table: "alerts",
            order: "ts",
            limit: filter.limit,
            from_row: schema::alert_from_row,
        };
        self.select_each(&select, &q, f)
    }

    fn select_each<T, E: From<StoreError>>(
        &self,
        select: &Select<T>,
        q: &Query,
        f: &mut dyn FnMut(T) -> Result<(), E>,
    ) -> Result<(), E> {
        let Select {
            columns,
            table,
            order,
            limit,
            from_row,
        } = select;
        let mut sql = format!("SELECT {columns} FROM {table}");
        if !q.clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&q.clauses.join(" AND "));
        }
        // With a limit, the most recent rows are wanted: take them newest first, then reverse.
        match limit {
            Some(n) => sql.push_str(&format!(" ORDER BY {order} DESC, id DESC LIMIT {n}")),
            None => sql.push_str(&format!(" ORDER BY {order}, id")),
        }
        let err = self.sql_err();
        let mut stmt = self.conn.prepare_cached(&sql).map_err(&err)?;
        let mut rows = stmt
            .query(params_from_iter(q.params.iter()))
            .map_err(&err)?;
        if limit.is_some() {
            let mut newest_first = Vec::new();
            while let Some(row) = rows.next().map_err(&err)? {
                newest_first.push(from_row(row).map_err(&err)?);
            }
            for item in newest_first.into_iter().rev() {
                f(item)?;
            }
        } else {
            while let Some(row) = rows.next().map_err(&err)? {
                f(from_row(row).map_err(&err)?)?;
            }
        }
        Ok(())
    }

    /// One call by id.
    pub fn call(&self, call_id: &str) -> Result<Option<CallRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM calls WHERE call_id = ?1",
            schema::CALL_COLUMNS
        );
        self.conn
            .query_row(&sql, [call_id], schema::call_from_row)
            .optional()
            .map_err(self.sql_err())
    }

    /// One session by id.
    pub fn session(&self, session: &str) -> Result<Option<SessionRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM sessions WHERE session = ?1",
            schema::SESSION_COLUMNS
        );
        self.conn
            .query_row(&sql, [session], schema::session_from_row)
            .optional()
            .map_err(self.sql_err())
    }

    /// Sessions started at or after `since` (all when `None`), oldest first.
    pub fn sessions(&self, since: Option<Timestamp>) -> Result<Vec<SessionRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM sessions WHERE started_at >= ?1 ORDER BY started_at, session",
            schema::SESSION_COLUMNS
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(self.sql_err())?;
        let since = since.map_or(i64::MIN, Timestamp::unix_nanos);
        let rows = stmt
            .query_map([since], schema::session_from_row)
            .map_err(self.sql_err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.sql_err())
    }

    /// A call with its session, events and alerts; `None` when the call is not recorded.
    pub fn trace(&self, call_id: &str) -> Result<Option<Trace>, StoreError> {
        let Some(call) = self.call(call_id)? else {
            return Ok(None);
        };
        let session = self.session(&call.session)?;
        let events = self.events(&EventFilter {
            call: Some(call_id.to_string()),
            ..EventFilter::default()
        })?;
        let alerts = self.alerts(&AlertFilter {
            call: Some(call_id.to_string()),
            ..AlertFilter::default()
        })?;
        Ok(Some(Trace {
            call,
            session,
            events,
            alerts,
        }))
    }

    /// Rows per table.
    pub fn counts(&self) -> Result<Counts, StoreError> {
        let count = |table: &str| -> Result<u64, StoreError> {
            let n: i64 = self
                .conn
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .map_err(self.sql_err())?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        Ok(Counts {
            sessions: count("sessions")?,
            calls: count("calls")?,
            events: count("events")?,
            alerts: count("alerts")?,
        })
    }

    /// Bytes of the database in use (pages holding data; free pages not counted).
    pub fn live_bytes(&self) -> Result<u64, StoreError> {
        let get = |pragma: &str| -> Result<i64, StoreError> {
            self.conn
                .pragma_query_value(None, pragma, |r| r.get(0))
                .map_err(self.sql_err())
        };
        let pages = get("page_count")? - get("freelist_count")?;
        Ok(u64::try_from(pages * get("page_size")?).unwrap_or(0))
    }

    /// Retention, all at once: deletes what is older than `max_age` (alerts and the events
    /// they cite too), then the oldest records until the live data fits in `max_bytes`, and gives
    /// the freed pages back to the file system. Sessions still running are kept. The writer
    /// runs the same passes a step at a time ([`retention::Pruner`]).
    pub fn prune(
        &mut self,
        max_age: Option<Duration>,
        max_bytes: Option<u64>,
    ) -> Result<PruneStats, StoreError> {
        self.prune_with(Retention {
            max_age,
            alert_max_age: max_age,
            max_bytes,
            every: Duration::ZERO,
        })
    }

    /// [`Store::prune`] with every limit of `retention`.
    pub fn prune_with(&mut self, retention: Retention) -> Result<PruneStats, StoreError> {
        retention::Pruner::new(retention).run(self)
    }
}

/// Runs an `each_*` query into a list.
fn collect<T>(
    each: impl FnOnce(&mut dyn FnMut(T) -> Result<(), StoreError>) -> Result<(), StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    each(&mut |t| {
        out.push(t);
        Ok(())
    })?;
    Ok(out)
}

/// One table's query shape.
struct Select<T> {
    columns: &'static str,
    table: &'static str,
    order: &'static str,
    limit: Option<usize>,
    from_row: fn(&Row<'_>) -> rusqlite::Result<T>,
}

/// A WHERE clause under construction, with numbered parameters.
struct Query {
    clauses: Vec<String>,
    params: Vec<Value>,
}

impl Query {
    fn new() -> Self {
        Query {
            clauses: Vec::new(),
            params: Vec::new(),
        }
    }

    fn push(&mut self, v: Value) -> usize {
        self.params.push(v);
        self.params.len()
    }

    fn eq(&mut self, column: &str, value: Option<&str>) {
        if let Some(v) = value {
            let n = self.push(Value::Text(v.to_string()));
            self.clauses.push(format!("{column} = ?{n}"));
        }
    }

    fn since(&mut self, column: &str, since: Option<Timestamp>) {
        if let Some(t) = since {
            let n = self.push(Value::Integer(t.unix_nanos()));
            self.clauses.push(format!("{column} >= ?{n}"));
        }
    }
}

/// Parses a column holding an enum's name, as a conversion error rusqlite reports with the column.
fn parse_col<T>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let s: String = row.get(idx)?;
    s.parse().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_alerts;
#[cfg(test)]
mod tests_history;
