//! The store: every session, call, kernel event and alert, in embedded SQLite at
//! `<state_dir>/mcp-guard.db`, queryable after an incident.
//!
//! Several `exec` processes and the agent write one database at once: WAL mode (readers never
//! block writers), a busy timeout, and short `BEGIN IMMEDIATE` transactions. Producers do not
//! call [`Store`] directly on a hot path; they send records to a [`StoreHandle`]
//! ([`StoreWriter::spawn`]), which never blocks and counts what it could not write.

pub mod audit;
pub mod changes;
mod error;
mod lost;
pub mod query;
mod read;
pub mod retention;
mod schema;
mod tail;
mod wrap;
mod writer;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior, types::Value};

pub use audit::{CallCapture, RawJson, Redact};
pub use changes::{Change, ChangeBatch, ExportLag};
pub use error::StoreError;
pub use lost::{QUEUE_FULL as STORE_QUEUE_FULL, WRITE_FAILED as STORE_WRITE_FAILED};
use mcp_guard_model::records::{
    AlertRecord, CallRecord, EventKind, EventRecord, LOST_KIND, Record, ServerFacts, SessionFacts,
    SessionRecord, Timestamp,
};
pub use read::{AlertFilter, CallFilter, Counts, EventFilter, Trace};
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

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_alerts;
#[cfg(test)]
mod tests_history;
