//! Retention: what the store keeps and for how long, applied in small steps.
//!
//! A pass deletes by age, then by size, then gives the freed pages back to the file system:
//! - Alerts older than their own limit go; then plain events older than theirs (an event an
//!   alert cites is not plain: it stays as long as the alert), then calls no alert and no event
//!   left refers to, then sessions ended before the longer of the two limits.
//! - While the live data is larger than the size limit, the oldest plain records go first; only
//!   when nothing else is left do the oldest alerts go (their events then with them), so a flood
//!   of noise cannot push the evidence out.
//! - `PRAGMA incremental_vacuum` hands the free pages back a few at a time and a checkpoint
//!   truncates the file.
//!
//! Every step is one short statement (a chunk of rows, a few pages), so the writer thread that
//! runs the pass between its batches keeps writing, and other processes' writers wait at most a
//! few milliseconds for the lock. A store made before it had incremental auto-vacuum is converted
//! once (`VACUUM`), when the disk has room for the copy.

use std::{
    collections::VecDeque,
    path::Path,
    time::{Duration, Instant},
};

use rusqlite::{OptionalExtension, params};

use super::{Counts, PruneStats, Store, StoreError, Timestamp};

/// Rows deleted per statement.
const CHUNK: i64 = 1_000;
/// Alerts deleted per statement when the size limit reaches them.
const ALERT_CHUNK: i64 = 100;
/// Pages handed back per `incremental_vacuum` statement.
const VACUUM_PAGES: i64 = 256;
/// Size rounds per pass at most (each moves the cutoff forward or deletes alerts).
const MAX_SIZE_ROUNDS: u32 = 256;
/// Events a size round plans to delete at most, before it measures again.
const MAX_ROUND_ROWS: i64 = 50_000;
/// How long a checkpoint that would truncate the WAL waits for readers.
const CHECKPOINT_WAIT: Duration = Duration::from_millis(50);
/// Room the disk must have besides twice the store before the one-time conversion copies it.
const CONVERT_HEADROOM: u64 = 64 << 20;

/// What the store keeps (limits left `None` do not apply).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Calls, plain events and sessions older than this go.
    pub max_age: Option<Duration>,
    /// Alerts (and the events they cite) older than this go.
    pub alert_max_age: Option<Duration>,
    /// While the live data is larger than this, the oldest records go.
    pub max_bytes: Option<u64>,
    /// How often a pass starts (the first one right away).
    pub every: Duration,
}

impl Retention {
    /// Whether any limit is set.
    pub fn limits_anything(&self) -> bool {
        self.max_age.is_some() || self.alert_max_age.is_some() || self.max_bytes.is_some()
    }
}

/// What a delete step removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// Alerts older than the cutoff.
    Alerts,
    /// The oldest alerts, whatever their age (the size limit reached them).
    OldestAlerts,
    /// Events no alert cites.
    PlainEvents,
    /// Calls no alert or event refers to.
    Calls,
    /// Ended sessions.
    Sessions,
}

/// One unit of work of a pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// A store without incremental auto-vacuum is converted (once, if the disk has room).
    Convert,
    /// Delete a chunk of `Target` older than the cutoff (nanoseconds); again while a full chunk
    /// went.
    Delete(Target, i64),
    /// Check the size; plan the next deletions while it is too large.
    Size,
    /// Hand a few free pages back; again while there are more.
    Vacuum,
    /// Checkpoint the WAL into the (now shorter) database file and truncate the WAL.
    Checkpoint,
}

/// A pass in progress.
#[derive(Debug)]
struct Pass {
    phases: VecDeque<Phase>,
    stats: PruneStats,
    size_rounds: u32,
}

/// Runs retention passes one step at a time (the store writer's thread calls [`Pruner::step`]
/// between batches).
#[derive(Debug)]
pub struct Pruner {
    retention: Retention,
    pass: Option<Pass>,
    next: Instant,
    converted: bool,
}

/// What a step did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// More of this pass is left: step again soon.
    More,
    /// The pass ended (or none was due), with what it removed.
    Done(Option<PruneStats>),
}

impl Pruner {
    /// A pruner whose first pass is due now.
    pub fn new(retention: Retention) -> Self {
        Pruner {
            retention,
            pass: None,
            next: Instant::now(),
            converted: false,
        }
    }

    /// New limits; a pass in progress finishes with the old ones.
    pub fn set(&mut self, retention: Retention) {
        self.retention = retention;
        self.next = Instant::now();
    }

    /// Whether a pass is running or due.
    pub fn due(&self) -> bool {
        self.pass.is_some() || (self.retention.limits_anything() && Instant::now() >= self.next)
    }

    /// Whether a pass is running (the writer then steps it without waiting for records).
    pub fn running(&self) -> bool {
        self.pass.is_some()
    }

    /// How long until the next pass is due (for an idle writer's wait).
    pub fn wait(&self) -> Duration {
        if self.pass.is_some() {
            Duration::ZERO
        } else {
            self.next.saturating_duration_since(Instant::now())
        }
    }

    /// Does one step of the current pass, starting one when due. An error ends the pass (the
    /// next one starts after the usual interval).
    pub fn step(&mut self, store: &mut Store) -> Result<Progress, StoreError> {
        if self.pass.is_none() {
            if !self.due() {
                return Ok(Progress::Done(None));
            }
            self.pass = Some(self.plan(store)?);
        }
        let Some(pass) = self.pass.as_mut() else {
            return Ok(Progress::Done(None));
        };
        let result = step_pass(pass, &self.retention, store, &mut self.converted);
        if let Ok(true) = result {
            Ok(Progress::More)
        } else {
            self.next = Instant::now() + self.retention.every;
            let pass = self.pass.take();
            result?;
            let mut stats = pass.map(|p| p.stats).unwrap_or_default();
            stats.bytes_after = store.live_bytes()?;
            Ok(Progress::Done(Some(stats)))
        }
    }

    /// Runs a whole pass now (tests, and `Store::prune`).
    pub fn run(&mut self, store: &mut Store) -> Result<PruneStats, StoreError> {
        self.next = Instant::now();
        loop {
            if let Progress::Done(stats) = self.step(store)? {
                return Ok(stats.unwrap_or_default());
            }
        }
    }

    fn plan(&self, store: &Store) -> Result<Pass, StoreError> {
        let r = &self.retention;
        let now = Timestamp::now();
        let cutoff = |age: Duration| now.saturating_sub(age).unix_nanos();
        let mut phases = VecDeque::new();
        if !self.converted {
            phases.push_back(Phase::Convert);
        }
        if let Some(age) = r.alert_max_age {
            phases.push_back(Phase::Delete(Target::Alerts, cutoff(age)));
        }
        if let Some(age) = r.max_age {
            let t = cutoff(age);
            phases.push_back(Phase::Delete(Target::PlainEvents, t));
            phases.push_back(Phase::Delete(Target::Calls, t));
        }
        // A session row is kept while anything of it may be: as long as the longer limit.
        if let (Some(a), Some(b)) = (r.max_age, r.alert_max_age) {
            phases.push_back(Phase::Delete(Target::Sessions, cutoff(a.max(b))));
        }
        if r.max_bytes.is_some() {
            phases.push_back(Phase::Size);
        }
        phases.push_back(Phase::Vacuum);
        phases.push_back(Phase::Checkpoint);
        Ok(Pass {
            phases,
            stats: PruneStats {
                bytes_before: store.live_bytes()?,
                ..PruneStats::default()
            },
            size_rounds: 0,
        })
    }
}

/// One step of `pass`; false when it is over.
fn step_pass(
    pass: &mut Pass,
    r: &Retention,
    store: &mut Store,
    converted: &mut bool,
) -> Result<bool, StoreError> {
    let Some(phase) = pass.phases.pop_front() else {
        return Ok(false);
    };
    match phase {
        Phase::Convert => {
            *converted = true;
            convert(store)?;
        }
        Phase::Delete(target, t) => {
            let n = delete_chunk(store, target, t)?;
            let d = &mut pass.stats.deleted;
            match target {
                Target::Alerts | Target::OldestAlerts => d.alerts += n,
                Target::PlainEvents => d.events += n,
                Target::Calls => d.calls += n,
                Target::Sessions => d.sessions += n,
            }
            let chunk = if target == Target::OldestAlerts {
                ALERT_CHUNK
            } else {
                CHUNK
            };
            if i64::try_from(n).unwrap_or(i64::MAX) >= chunk && target != Target::OldestAlerts {
                pass.phases.push_front(phase);
            }
        }
        Phase::Size => size_round(pass, r, store)?,
        Phase::Vacuum => {
            if pass.stats.deleted != Counts::default() && vacuum_step(store)? {
                pass.phases.push_front(Phase::Vacuum);
            }
        }
        Phase::Checkpoint => {
            if pass.stats.deleted != Counts::default() {
                checkpoint(store);
            }
        }
    }
    Ok(!pass.phases.is_empty())
}

/// Plans the deletions that bring the live data under the size limit: the oldest plain records
/// (events no alert cites, calls nothing refers to) up to the time of the k-th oldest plain
/// event, k in proportion to the excess (records are not spread evenly over time, their count
/// is what the size follows); when no plain record is left, the oldest alerts.
fn size_round(pass: &mut Pass, r: &Retention, store: &mut Store) -> Result<(), StoreError> {
    let Some(max) = r.max_bytes else {
        return Ok(());
    };
    let live = store.live_bytes()?;
    if live <= max || pass.size_rounds >= MAX_SIZE_ROUNDS {
        return Ok(());
    }
    pass.size_rounds += 1;
    pass.phases.push_front(Phase::Size);
    let Some(oldest) = oldest_plain(store)? else {
        // Everything left is evidence: the oldest alerts go, and their events after them.
        pass.phases
            .push_front(Phase::Delete(Target::OldestAlerts, i64::MAX));
        return Ok(());
    };
    #[expect(
        clippy::cast_precision_loss,
        reason = "a fraction of the rows, roughly"
    )]
    let excess = (live - max) as f64 / live as f64;
    #[expect(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        reason = "a row count, roughly, clamped to 1..=MAX_ROUND_ROWS (`as` saturates)"
    )]
    let k = ((event_rows(store)? as f64 * (excess + 0.02)) as i64).clamp(1, MAX_ROUND_ROWS);
    // Just past the k-th oldest plain event (past the oldest plain record at least, so every
    // round deletes something); past everything when fewer are left.
    let cutoff = match kth_plain_event(store, k)? {
        Some(t) => t.max(oldest).saturating_add(1),
        None => newest_record(store)?.unwrap_or(oldest).saturating_add(1),
    };
    pass.phases.push_front(Phase::Delete(Target::Calls, cutoff));
    pass.phases
        .push_front(Phase::Delete(Target::PlainEvents, cutoff));
    Ok(())
}

/// About how many events there are (ids are handed out in order; deletions leave gaps).
fn event_rows(store: &Store) -> Result<i64, StoreError> {
    store
        .conn
        .query_row(
            "SELECT coalesce(max(id) - min(id) + 1, 0) FROM events",
            [],
            |row| row.get(0),
        )
        .map_err(store.sql_err())
}

/// The time of the `k`-th oldest event no alert cites.
fn kth_plain_event(store: &Store, k: i64) -> Result<Option<i64>, StoreError> {
    store
        .conn
        .query_row(
            "SELECT ts FROM events WHERE NOT EXISTS \
               (SELECT 1 FROM alert_events c WHERE c.event_id = events.event_id) \
             ORDER BY ts LIMIT 1 OFFSET ?1",
            params![k - 1],
            |row| row.get(0),
        )
        .optional()
        .map_err(store.sql_err())
}

/// The time of the newest event or call.
fn newest_record(store: &Store) -> Result<Option<i64>, StoreError> {
    store
        .conn
        .query_row(
            "SELECT max(t) FROM (SELECT max(ts) AS t FROM events \
             UNION ALL SELECT max(started_at) FROM calls)",
            [],
            |row| row.get(0),
        )
        .map_err(store.sql_err())
}

/// The time of the oldest record the size limit may delete before any alert.
fn oldest_plain(store: &Store) -> Result<Option<i64>, StoreError> {
    // In time order by the indexes, stopping at the first one found.
    let first = |sql: &str| -> Result<Option<i64>, StoreError> {
        store
            .conn
            .query_row(sql, [], |row| row.get(0))
            .optional()
            .map_err(store.sql_err())
    };
    let event = first(
        "SELECT ts FROM events WHERE NOT EXISTS \
           (SELECT 1 FROM alert_events c WHERE c.event_id = events.event_id) \
         ORDER BY ts LIMIT 1",
    )?;
    let call = first(
        "SELECT started_at FROM calls \
         WHERE NOT EXISTS (SELECT 1 FROM alerts a WHERE a.call_id = calls.call_id) \
           AND NOT EXISTS (SELECT 1 FROM events e WHERE e.call_id = calls.call_id) \
         ORDER BY started_at LIMIT 1",
    )?;
    Ok(match (event, call) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

/// Deletes one chunk of `target` older than `t`; how many rows went.
fn delete_chunk(store: &mut Store, target: Target, t: i64) -> Result<u64, StoreError> {
    let sql = match target {
        // An alert that still repeats is as old as its last occurrence.
        Target::Alerts => format!(
            "DELETE FROM alerts WHERE id IN \
             (SELECT id FROM alerts WHERE ts < ?1 AND coalesce(last_seen, ts) < ?1 \
              ORDER BY ts LIMIT {CHUNK})"
        ),
        Target::OldestAlerts => format!(
            "DELETE FROM alerts WHERE id IN \
             (SELECT id FROM alerts WHERE ts < ?1 ORDER BY ts LIMIT {ALERT_CHUNK})"
        ),
        Target::PlainEvents => format!(
            "DELETE FROM events WHERE id IN \
             (SELECT id FROM events WHERE ts < ?1 AND NOT EXISTS \
                (SELECT 1 FROM alert_events c WHERE c.event_id = events.event_id) \
              ORDER BY ts LIMIT {CHUNK})"
        ),
        Target::Calls => format!(
            "DELETE FROM calls WHERE id IN \
             (SELECT id FROM calls WHERE started_at < ?1 \
                AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.call_id = calls.call_id) \
                AND NOT EXISTS (SELECT 1 FROM events e WHERE e.call_id = calls.call_id) \
              ORDER BY started_at LIMIT {CHUNK})"
        ),
        Target::Sessions => format!(
            "DELETE FROM sessions WHERE rowid IN \
             (SELECT rowid FROM sessions WHERE ended_at IS NOT NULL AND ended_at < ?1 \
              ORDER BY ended_at LIMIT {CHUNK})"
        ),
    };
    let n = store
        .conn
        .execute(&sql, params![t])
        .map_err(store.sql_err())?;
    Ok(n as u64)
}

/// Hands up to [`VACUUM_PAGES`] free pages back; whether more are left.
fn vacuum_step(store: &mut Store) -> Result<bool, StoreError> {
    let err = store.sql_err();
    // Each step of the statement frees one page.
    let mut stmt = store
        .conn
        .prepare(&format!("PRAGMA incremental_vacuum({VACUUM_PAGES})"))
        .map_err(&err)?;
    let mut rows = stmt.query([]).map_err(&err)?;
    while rows.next().map_err(&err)?.is_some() {}
    drop(rows);
    drop(stmt);
    let free: i64 = store
        .conn
        .pragma_query_value(None, "freelist_count", |r| r.get(0))
        .map_err(&err)?;
    Ok(free > 0 && auto_vacuum(store)? == 2)
}

/// The store's auto-vacuum mode (0 none, 1 full, 2 incremental).
fn auto_vacuum(store: &Store) -> Result<i64, StoreError> {
    store
        .conn
        .pragma_query_value(None, "auto_vacuum", |r| r.get(0))
        .map_err(store.sql_err())
}

/// Moves the WAL into the database file (which shrinks by the pages vacuumed) and truncates it,
/// waiting only briefly for readers: a reader in the way leaves it for the next pass.
fn checkpoint(store: &Store) {
    let _ = store.conn.busy_timeout(CHECKPOINT_WAIT);
    let _: rusqlite::Result<()> =
        store
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    let _ = store.conn.busy_timeout(super::BUSY_TIMEOUT);
}

/// Converts a store made without incremental auto-vacuum, once: `VACUUM` rewrites the whole
/// file, so it runs only when the disk holds twice the store and some room besides. SQLite makes
/// it all or nothing: on any failure the store is as it was.
fn convert(store: &mut Store) -> Result<(), StoreError> {
    if auto_vacuum(store)? == 2 {
        return Ok(());
    }
    let path = store.path.clone();
    let size = file_len(&path) + file_len(&wal_path(&path));
    let free = free_bytes(path.parent().unwrap_or(Path::new(".")));
    if free < size.saturating_mul(2).saturating_add(CONVERT_HEADROOM) {
        tracing::warn!(
            path = %path.display(),
            size,
            free,
            "store: not converted to incremental vacuum (the disk lacks room for the copy): \
             deleted records free pages inside the file but do not shrink it"
        );
        return Ok(());
    }
    let t = Instant::now();
    store
        .conn
        .execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")
        .map_err(store.sql_err())?;
    tracing::info!(
        path = %path.display(),
        took_ms = u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX),
        "store: converted to incremental vacuum (one-time VACUUM)"
    );
    Ok(())
}

fn wal_path(db: &Path) -> std::path::PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-wal");
    p.into()
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

/// Bytes an unprivileged writer may still use on the file system holding `dir`.
fn free_bytes(dir: &Path) -> u64 {
    nix::sys::statvfs::statvfs(dir).map_or(0, |s| {
        s.blocks_available().saturating_mul(s.fragment_size())
    })
}
