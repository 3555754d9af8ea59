//! One sink's loop: read a batch after the sink's cursor, deliver it, move the cursor; on a
//! failure, wait (exponential backoff with jitter, capped) and deliver the same batch again.
//!
//! The cursor moves only after a delivery succeeded, and it is kept in the store: a sink that
//! is down, or an agent killed at any point, costs at most a batch sent twice, never a record.
//!
//! Reading and encoding run one batch ahead, on a thread of their own: while a batch is on the
//! wire (or the sink is still taking it in), the next one is read from the store and encoded, so
//! a sink waits neither for SQLite nor for JSON. The read-ahead starts from the cursor and never
//! moves it.

use std::{
    hash::{BuildHasher as _, Hasher as _},
    path::PathBuf,
    sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError},
    time::{Duration, Instant},
};

use mcp_guard_model::Timestamp;
use mcp_guard_store::{Change, Store};

use crate::metrics::export::ExportMetrics;

/// A batch in a sink's wire form: one body per destination (ClickHouse: one per table).
pub type Bodies = Vec<Vec<u8>>;

/// How a sink encodes a batch (CPU only; runs on the read-ahead thread).
pub trait Encode: Send {
    /// Every change in the sink's wire form.
    fn encode(&mut self, changes: &[Change]) -> Result<Bodies, String>;
}

/// How a sink ships an encoded batch.
pub trait Deliver: Send {
    /// Delivers every body, or fails (then the same bodies come again).
    fn deliver(&mut self, bodies: &Bodies) -> Result<(), String>;
}

/// The first wait after a failure, and the longest.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_mins(1);

/// How often the lag gauges are refreshed while records flow (counting the backlog is a scan).
const LAG_EVERY: Duration = Duration::from_secs(1);

/// How long the delivering loop waits for the read-ahead before it looks at `stop` again.
const POLL: Duration = Duration::from_millis(100);

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
    /// The encoding.
    pub encode: Box<dyn Encode>,
    /// The delivery.
    pub deliver: Box<dyn Deliver>,
    /// Its metrics.
    pub metrics: ExportMetrics,
}

impl std::fmt::Debug for Pump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pump")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Waits `d`; true when told to stop (the sender is gone).
fn sleep(stop: &Receiver<()>, d: Duration) -> bool {
    !matches!(stop.recv_timeout(d), Err(RecvTimeoutError::Timeout))
}

/// Opens the store, retrying with backoff; `None` when told to stop first.
fn open(name: &str, db: &std::path::Path, stop: &Receiver<()>) -> Option<Store> {
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    loop {
        match Store::open(db) {
            Ok(s) => return Some(s),
            Err(e) => {
                tracing::warn!(sink = %name, "export: store: {e}; retrying");
                if sleep(stop, backoff.next_wait()) {
                    return None;
                }
            }
        }
    }
}

/// A batch read and encoded, waiting for its delivery.
struct Ready {
    /// Records in it (0: the numbers it covers hold no record any more).
    records: usize,
    /// The cursor once it is delivered.
    last_seq: i64,
    bodies: Bodies,
    /// Fewer records than a batch: nothing more was there when it was read.
    caught_up: bool,
}

/// The read-ahead: batches after `after`, encoded, one at a time into a channel of one.
struct ReadAhead {
    name: String,
    db: PathBuf,
    batch: usize,
    interval: Duration,
    encode: Box<dyn Encode>,
    after: i64,
}

impl ReadAhead {
    /// Runs until `stop`'s sender or `out`'s receiver is dropped.
    fn run(mut self, out: &SyncSender<Ready>, stop: &Receiver<()>) {
        let Some(store) = open(&self.name, &self.db, stop) else {
            return;
        };
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        loop {
            let batch = match store.changes_after(self.after, self.batch) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(sink = %self.name, "export: reading the store: {e}; retrying");
                    if sleep(stop, backoff.next_wait()) {
                        return;
                    }
                    continue;
                }
            };
            let caught_up = batch.changes.len() < self.batch;
            if batch.last_seq != self.after {
                let bodies = match self.encode.encode(&batch.changes) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(sink = %self.name, "export: encoding: {e}; retrying");
                        if sleep(stop, backoff.next_wait()) {
                            return;
                        }
                        continue;
                    }
                };
                backoff.reset();
                let ready = Ready {
                    records: batch.changes.len(),
                    last_seq: batch.last_seq,
                    bodies,
                    caught_up,
                };
                if out.send(ready).is_err() {
                    return;
                }
                self.after = batch.last_seq;
            }
            if caught_up && sleep(stop, self.interval) {
                return;
            }
        }
    }
}

impl Pump {
    /// Runs until `stop`'s sender is dropped.
    pub fn run(self, stop: &Receiver<()>) {
        let Pump {
            name,
            batch,
            interval,
            db,
            encode,
            mut deliver,
            metrics,
        } = self;
        let Some(mut store) = open(&name, &db, stop) else {
            return;
        };
        let mut cursor = match store.export_cursor(&name) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(sink = %name, "export: reading the cursor: {e}");
                0
            }
        };
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let (reader_stop, reader_stopped) = mpsc::channel::<()>();
        let reader = ReadAhead {
            name: name.clone(),
            db,
            batch,
            interval,
            encode,
            after: cursor,
        };
        let reader = match std::thread::Builder::new()
            .name(format!("export-{name}-read"))
            .spawn(move || reader.run(&ready_tx, &reader_stopped))
        {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(sink = %name, "export: cannot start its read-ahead: {e}");
                return;
            }
        };
        let mut last_lag: Option<Instant> = None;
        let sink = Sink {
            name: &name,
            metrics: &metrics,
        };
        loop {
            if !matches!(stop.try_recv(), Err(TryRecvError::Empty)) {
                break;
            }
            let ready = match ready_rx.recv_timeout(POLL.min(interval)) {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout) => {
                    // Idle: the gauges still follow what other writers add.
                    if last_lag.is_none_or(|t| t.elapsed() >= interval) {
                        sink.update_lag(&store, cursor);
                        last_lag = Some(Instant::now());
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if ready.records > 0 {
                let Some(()) =
                    sink.deliver_until_done(&mut *deliver, &store, &ready.bodies, cursor, stop)
                else {
                    break;
                };
                metrics.delivered(&name, ready.records as u64);
            }
            let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
            let saved = loop {
                match store.set_export_cursor(&name, ready.last_seq) {
                    Ok(()) => break true,
                    Err(e) => {
                        tracing::warn!(sink = %name, "export: saving the cursor: {e}");
                        if sleep(stop, backoff.next_wait()) {
                            break false;
                        }
                    }
                }
            };
            if !saved {
                break;
            }
            cursor = ready.last_seq;
            if ready.caught_up || last_lag.is_none_or(|t| t.elapsed() >= LAG_EVERY) {
                sink.update_lag(&store, cursor);
                last_lag = Some(Instant::now());
            }
        }
        // The read-ahead may wait to hand over a batch, or sleep: both end now.
        drop(ready_rx);
        drop(reader_stop);
        let _ = reader.join();
    }
}

/// A sink's name and metrics, for its delivering loop.
struct Sink<'a> {
    name: &'a str,
    metrics: &'a ExportMetrics,
}

impl Sink<'_> {
    /// Delivers `bodies`, retrying with backoff; `None` when told to stop first.
    fn deliver_until_done(
        &self,
        deliver: &mut dyn Deliver,
        store: &Store,
        bodies: &Bodies,
        cursor: i64,
        stop: &Receiver<()>,
    ) -> Option<()> {
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        let mut failures = 0u64;
        let mut last_error = String::new();
        loop {
            match deliver.deliver(bodies) {
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
                    self.metrics.failed(self.name);
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
                #[expect(clippy::cast_precision_loss, reason = "a lag in seconds, for a gauge")]
                let seconds = lag
                    .oldest
                    .map_or(0.0, |t| Timestamp::now().nanos_since(t).max(0) as f64 / 1e9);
                self.metrics.set_lag(self.name, lag.records, seconds);
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
