//! Following the store as sessions write it: what the agent turns into Prometheus counters.
//!
//! Every `exec` (standalone or not) writes its calls, events and alerts to the one store in the
//! state dir, so the store is the place where all sessions' activity meets. [`Tail`] keeps a
//! cursor per table and returns, on each poll, only what is new: events and alerts once each
//! (they are written once), calls once each when they have ended (a call row is written when
//! the request is seen and updated when it is answered). A call that never ends (its exec was
//! killed) stops holding the cursor back after [`ABANDONED_AFTER`].

use std::{collections::BTreeSet, time::Duration};

use rusqlite::params;

use super::{LOST_KIND, Store, StoreError, Timestamp};

/// Rows read per table and poll, so a large backlog is taken in bounded steps.
const BATCH: i64 = 20_000;

/// A call without an end this long after its start no longer holds the call cursor back.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

/// One ended `tools/call`.
#[derive(Clone, Debug, PartialEq)]
pub struct TailCall {
    /// Server name.
    pub server: String,
    /// Tool name (`""` when the request had none).
    pub tool: String,
    /// `allowed|denied|modified`.
    pub decision: String,
    /// Request to response.
    pub duration: Option<Duration>,
}

/// One kernel event, or one `lost` record (then `lost` holds the reason and count).
#[derive(Clone, Debug, PartialEq)]
pub struct TailEvent {
    /// Server name.
    pub server: String,
    /// `exec|open|connect|...`.
    pub kind: String,
    /// `allowed|denied|killed`.
    pub verdict: String,
    /// For a `lost` record: (reason, count).
    pub lost: Option<(String, u64)>,
}

/// One alert.
#[derive(Clone, Debug, PartialEq)]
pub struct TailAlert {
    /// Server name.
    pub server: String,
    /// Rule name.
    pub rule: String,
    /// Severity name.
    pub severity: String,
}

/// What was new in the store since the previous poll.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TailBatch {
    /// Tool calls that ended.
    pub calls: Vec<TailCall>,
    /// Events written.
    pub events: Vec<TailEvent>,
    /// Alerts written.
    pub alerts: Vec<TailAlert>,
    /// Sessions not ended whose server process is alive: one entry per session, its server.
    pub running: Vec<String>,
}

/// Cursors over the store's tables.
#[derive(Clone, Debug, Default)]
pub struct Tail {
    /// Every call row at or below this id is counted or abandoned.
    calls_low: i64,
    /// Call rows above `calls_low` already counted.
    calls_counted: BTreeSet<i64>,
    events_after: i64,
    alerts_after: i64,
}

impl Tail {
    /// Cursors at the store's current end: only what is written from now on is returned (a
    /// restarted agent's counters start at zero, which Prometheus reads as a counter reset).
    pub fn from_now(store: &Store) -> Result<Tail, StoreError> {
        let max = |table: &str| -> Result<i64, StoreError> {
            store
                .conn
                .query_row(
                    &format!("SELECT coalesce(max(id), 0) FROM {table}"),
                    [],
                    |r| r.get(0),
                )
                .map_err(store.sql_err())
        };
        Ok(Tail {
            calls_low: max("calls")?,
            calls_counted: BTreeSet::new(),
            events_after: max("events")?,
            alerts_after: max("alerts")?,
        })
    }

    /// What is new since the last poll.
    pub fn poll(&mut self, store: &Store) -> Result<TailBatch, StoreError> {
        self.poll_sql(store).map_err(store.sql_err())
    }

    fn poll_sql(&mut self, store: &Store) -> rusqlite::Result<TailBatch> {
        let mut batch = TailBatch {
            calls: self.poll_calls(store)?,
            ..TailBatch::default()
        };
        let mut stmt = store.conn.prepare_cached(
            "SELECT id, server, kind, verdict, detail FROM events WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let mut rows = stmt.query(params![self.events_after, BATCH])?;
        while let Some(row) = rows.next()? {
            self.events_after = row.get(0)?;
            let kind: String = row.get(2)?;
            let lost = if kind == LOST_KIND {
                let detail: Option<String> = row.get(4)?;
                detail
                    .and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok())
                    .and_then(|d| Some((d["reason"].as_str()?.to_string(), d["count"].as_u64()?)))
            } else {
                None
            };
            batch.events.push(TailEvent {
                server: row.get(1)?,
                kind,
                verdict: row.get(3)?,
                lost,
            });
        }
        let mut stmt = store.conn.prepare_cached(
            "SELECT id, server, rule, severity FROM alerts WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let mut rows = stmt.query(params![self.alerts_after, BATCH])?;
        while let Some(row) = rows.next()? {
            self.alerts_after = row.get(0)?;
            batch.alerts.push(TailAlert {
                server: row.get(1)?,
                rule: row.get(2)?,
                severity: row.get(3)?,
            });
        }
        let mut stmt = store
            .conn
            .prepare_cached("SELECT server, pid FROM sessions WHERE ended_at IS NULL")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let pid: Option<i64> = row.get(1)?;
            if pid.is_some_and(alive) {
                batch.running.push(row.get(0)?);
            }
        }
        Ok(batch)
    }

    fn poll_calls(&mut self, store: &Store) -> rusqlite::Result<Vec<TailCall>> {
        let abandoned = Timestamp::now().unix_nanos()
            - i64::try_from(ABANDONED_AFTER.as_nanos()).unwrap_or(i64::MAX);
        let mut stmt = store.conn.prepare_cached(
            "SELECT id, server, tool, decision, started_at, ended_at FROM calls
             WHERE id > ?1 AND method = 'tools/call' ORDER BY id LIMIT ?2",
        )?;
        let mut rows = stmt.query(params![self.calls_low, BATCH])?;
        let mut out = Vec::new();
        // The lowest id still waiting for its end; everything below it is settled.
        let mut waiting: Option<i64> = None;
        let mut last = self.calls_low;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            last = id;
            let started: i64 = row.get(4)?;
            let ended: Option<i64> = row.get(5)?;
            match ended {
                Some(ended) if self.calls_counted.insert(id) => out.push(TailCall {
                    server: row.get(1)?,
                    tool: row.get::<_, Option<String>>(2)?.unwrap_or_default(),
                    decision: row.get(3)?,
                    duration: u64::try_from(ended - started)
                        .ok()
                        .map(Duration::from_nanos),
                }),
                Some(_) => {}
                None if started < abandoned => {}
                None => {
                    waiting.get_or_insert(id);
                }
            }
        }
        self.calls_low = waiting.map_or(last, |w| w - 1);
        let low = self.calls_low;
        self.calls_counted.retain(|id| *id > low);
        Ok(out)
    }
}

/// Whether a process with this pid exists (signal 0 checks without sending).
fn alive(pid: i64) -> bool {
    i32::try_from(pid).is_ok_and(|pid| {
        pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
    })
}
