//! Following the store as sessions write it: what the agent turns into Prometheus counters.
//!
//! Every `exec` (standalone or not) writes its calls, events and alerts to the one store in the
//! state dir, so the store is the place where all sessions' activity meets. [`Tail`] keeps a
//! cursor per table and returns, on each poll, only what is new: events once each (they are
//! written once), alerts once per occurrence (a repeat in a session raises the stored alert's
//! count instead of adding a row), calls once each when they have ended (a call row is written when
//! the request is seen and updated when it is answered). A call that never ends (its exec was
//! killed) stops holding the cursor back after [`ABANDONED_AFTER`].

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use rusqlite::params;

use super::{LOST_KIND, Store, StoreError, Timestamp};

/// Rows read per table and poll, so a large backlog is taken in bounded steps.
const BATCH: i64 = 20_000;

/// A call without an end this long after its start no longer holds the call cursor back.
pub(crate) const ABANDONED_AFTER: Duration = Duration::from_hours(1);

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
    /// For a `lost` record a store writer wrote: the pid of the process whose writer lost them.
    pub lost_by: Option<u32>,
}

/// One alert, and how many times it fired since the previous poll.
#[derive(Clone, Debug, PartialEq)]
pub struct TailAlert {
    /// Server name.
    pub server: String,
    /// Rule name.
    pub rule: String,
    /// Severity name.
    pub severity: String,
    /// Occurrences new since the previous poll (at least 1).
    pub count: u64,
}

/// Alert rows whose count the tail remembers at most (the most recent ids); a row repeated
/// after it was forgotten counts one occurrence per poll it is seen in.
const REMEMBERED_ALERTS: usize = 65_536;

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
    /// Every alert repeated at or below this `repeat_seq` is counted.
    repeats_after: i64,
    /// The count last counted of alert rows, by id.
    alert_counts: BTreeMap<i64, u64>,
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
        let repeats_after = store
            .conn
            .query_row("SELECT coalesce(max(repeat_seq), 0) FROM alerts", [], |r| {
                r.get(0)
            })
            .map_err(store.sql_err())?;
        // The counts so far of the latest alerts (those that may still repeat).
        let mut alert_counts = BTreeMap::new();
        let mut stmt = store
            .conn
            .prepare("SELECT id, count FROM alerts ORDER BY id DESC LIMIT ?1")
            .map_err(store.sql_err())?;
        #[expect(clippy::cast_possible_wrap, reason = "a small constant")]
        let rows = stmt
            .query_map([REMEMBERED_ALERTS as i64], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(store.sql_err())?;
        for row in rows {
            let (id, n) = row.map_err(store.sql_err())?;
            alert_counts.insert(id, u64::try_from(n).unwrap_or(1));
        }
        Ok(Tail {
            calls_low: max("calls")?,
            calls_counted: BTreeSet::new(),
            events_after: max("events")?,
            alerts_after: max("alerts")?,
            repeats_after,
            alert_counts,
        })
    }

    /// Occurrences of alert row `id` (now counted `count`) not yet counted.
    fn new_occurrences(&mut self, id: i64, count: u64, new_row: bool) -> u64 {
        let before = self.alert_counts.insert(id, count).unwrap_or(if new_row {
            0
        } else {
            count.saturating_sub(1)
        });
        while self.alert_counts.len() > REMEMBERED_ALERTS {
            self.alert_counts.pop_first();
        }
        count.saturating_sub(before)
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
            let detail = if kind == LOST_KIND {
                let detail: Option<String> = row.get(4)?;
                detail.and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok())
            } else {
                None
            };
            let lost = detail
                .as_ref()
                .and_then(|d| Some((d["reason"].as_str()?.to_string(), d["count"].as_u64()?)));
            let lost_by = detail
                .as_ref()
                .and_then(|d| d["pid"].as_u64())
                .and_then(|p| u32::try_from(p).ok());
            batch.events.push(TailEvent {
                server: row.get(1)?,
                kind,
                verdict: row.get(3)?,
                lost,
                lost_by,
            });
        }
        let mut stmt = store.conn.prepare_cached(
            "SELECT id, server, rule, severity, count FROM alerts WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let mut rows = stmt.query(params![self.alerts_after, BATCH])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            self.alerts_after = id;
            let count = u64::try_from(row.get::<_, i64>(4)?).unwrap_or(1);
            let count = self.new_occurrences(id, count, true);
            batch.alerts.push(TailAlert {
                server: row.get(1)?,
                rule: row.get(2)?,
                severity: row.get(3)?,
                count: count.max(1),
            });
        }
        // Repeats of rows already there: the count they gained since it was last counted.
        let mut stmt = store.conn.prepare_cached(
            "SELECT id, server, rule, severity, count, repeat_seq FROM alerts
             WHERE repeat_seq > ?1 ORDER BY repeat_seq LIMIT ?2",
        )?;
        let mut rows = stmt.query(params![self.repeats_after, BATCH])?;
        while let Some(row) = rows.next()? {
            self.repeats_after = row.get(5)?;
            let id: i64 = row.get(0)?;
            let count = u64::try_from(row.get::<_, i64>(4)?).unwrap_or(1);
            let new = self.new_occurrences(id, count, false);
            if new > 0 {
                batch.alerts.push(TailAlert {
                    server: row.get(1)?,
                    rule: row.get(2)?,
                    severity: row.get(3)?,
                    count: new,
                });
            }
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
