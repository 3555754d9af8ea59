//! What went wrong with the store, and how callers tell a full disk or a busy lock apart.

use std::path::PathBuf;

use rusqlite::ErrorCode;

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
