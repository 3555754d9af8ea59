//! One sink's loop: read a batch after the sink's cursor, deliver it, move the cursor; on a
//! failure, wait (exponential backoff with jitter, capped) and deliver the same batch again.
//!
//! The cursor moves only after a delivery succeeded, and it is kept in the store: a sink that
//! is down, or an agent killed at any point, costs at most a batch sent twice, never a record.

use std::{
    hash::{BuildHasher as _, Hasher as _},
    path::PathBuf,
    sync::mpsc::{Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

use mcp_guard_model::Timestamp;
use mcp_guard_store::{Change, Store};

use crate::metrics::export::ExportMetrics;

/// How a sink ships a batch.
pub trait Deliver: Send {
    /// Delivers every change, or fails (then the same batch comes again).
    fn deliver(&mut self, changes: &[Change]) -> Result<(), String>;
}

/// The first wait after a failure, and the longest.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// How often the lag gauges are refreshed while records flow (counting the backlog is a scan).
const LAG_EVERY: Duration = Duration::from_secs(1);

/// Exponential backoff with "equal jitter": each wait is between half and all of the current
/// step, so sinks and hosts that failed together do not retry together.
#[derive(Debug)]
pub struct Backoff {
    step: Duration,
    min: Duration,
    max: Duration,
    random: std::hash::RandomState,
    n: u64,
}

impl Backoff {
    /// Steps from `min`, doubling up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            step: min,
            min,
            max,
            random: std::hash::RandomState::new(),
            n: 0,
        }
    }

    /// The next wait.
    pub fn next_wait(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        self.n += 1;
        let mut h = self.random.build_hasher();
        h.write_u64(self.n);
        let half = step / 2;
        let jitter = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
        half + Duration::from_nanos(h.finish() % jitter)
    }

    /// Back to the first step (after a success).
    pub fn reset(&mut self) {
        self.step = self.min;
    }
}

/// What a sink's thread needs.
pub struct Pump {
    /// The sink's name (its cursor and metrics label).
    pub name: String,
    /// Records per batch.
    pub batch: usize,
    /// Idle poll interval.
    pub interval: Duration,
    /// The store.
    pub db: PathBuf,
    /// The delivery.
    pub deliver: Box<dyn Deliver>,
    /// Its metrics.
    pub metrics: ExportMetrics,
}

impl std::fmt::Debug for Pump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pump").field("name", &self.name).finish()
    }
}

/// Waits `d`; true when told to stop (the sender is gone).
fn sleep(stop: &Receiver<()>, d: Duration) -> bool {
    !matches!(stop.recv_timeout(d), Err(RecvTimeoutError::Timeout))
}

impl Pump {
    /// Runs until `stop`'s sender is dropped.
    pub fn run(mut self, stop: &Receiver<()>) {
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        let mut store = loop {
            match Store::open(&self.db) {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(sink = %self.name, "export: store: {e}; retrying");
                    if sleep(stop, backoff.next_wait()) {
                        return;
                    }
                }
            }
        };
        backoff.reset();
        let mut cursor = match store.export_cursor(&self.name) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(sink = %self.name, "export: reading the cursor: {e}");
                0
            }
        };
        let mut last_lag: Option<Instant> = None;
        loop {
            let batch = match store.changes_after(cursor, self.batch) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(sink = %self.name, "export: reading the store: {e}; retrying");
                    if sleep(stop, backoff.next_wait()) {
                        return;
                    }
                    continue;
                }
            };
            if !batch.changes.is_empty() {
                let Some(()) = self.deliver_until_done(&store, &batch.changes, cursor, stop) else {
                    return;
                };
                self.metrics
                    .delivered(&self.name, batch.changes.len() as u64);
            }
            if batch.last_seq != cursor {
                loop {
                    match store.set_export_cursor(&self.name, batch.last_seq) {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!(sink = %self.name, "export: saving the cursor: {e}");
                            if sleep(stop, backoff.next_wait()) {
                                return;
                            }
                        }
                    }
                }
                backoff.reset();
                cursor = batch.last_seq;
            }
            let caught_up = batch.changes.len() < self.batch;
            if caught_up || last_lag.is_none_or(|t| t.elapsed() >= LAG_EVERY) {
                self.update_lag(&store, cursor);
                last_lag = Some(Instant::now());
            }
            if caught_up && sleep(stop, self.interval) {
                return;
            }
        }
    }

    /// Delivers `changes`, retrying with backoff; `None` when told to stop first.
    fn deliver_until_done(
        &mut self,
        store: &Store,
        changes: &[Change],
        cursor: i64,
        stop: &Receiver<()>,
    ) -> Option<()> {
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        let mut failures = 0u64;
        let mut last_error = String::new();
        loop {
            match self.deliver.deliver(changes) {
                Ok(()) => {
                    if failures > 0 {
                        tracing::warn!(
                            sink = %self.name,
                            "export: delivering again after {failures} failed attempt(s)"
                        );
                    }
                    return Some(());
                }
                Err(e) => {
                    self.metrics.failed(&self.name);
                    failures += 1;
                    // Once per distinct error, not once per retry.
                    if e != last_error {
                        tracing::warn!(sink = %self.name, "export: delivery failed: {e}; retrying");
                        last_error = e;
                    }
                    self.update_lag(store, cursor);
                    if sleep(stop, backoff.next_wait()) {
                        return None;
                    }
                }
            }
        }
    }

    fn update_lag(&self, store: &Store, cursor: i64) {
        match store.export_lag(cursor) {
            Ok(lag) => {
                let seconds = lag
                    .oldest
                    .map_or(0.0, |t| Timestamp::now().nanos_since(t).max(0) as f64 / 1e9);
                self.metrics.set_lag(&self.name, lag.records, seconds);
            }
            Err(e) => tracing::warn!(sink = %self.name, "export: measuring the lag: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let waits: Vec<Duration> = (0..6).map(|_| b.next_wait()).collect();
        for (w, step) in waits.iter().zip([100u64, 200, 400, 800, 800, 800]) {
            let step = Duration::from_millis(step);
            assert!(
                *w >= step / 2 && *w <= step,
                "{w:?} outside [{:?}, {step:?}]",
                step / 2
            );
        }
        b.reset();
        assert!(b.next_wait() <= Duration::from_millis(100));
        // Jitter: not every wait of one step is the same.
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let first = b.next_wait();
        assert!((0..20).any(|_| b.next_wait() != first));
    }
}
