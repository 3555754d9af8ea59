//! The batched writer: producers hand records to a [`StoreHandle`] that never blocks; one thread
//! drains the channel and commits what it holds in one transaction.
//!
//! A full queue, a full disk or a database locked beyond the busy timeout costs records, never
//! the caller's time: each lost record is counted ([`StoreHandle::dropped`]) and the last error
//! is kept for reporting. Lost records are written down as `lost` events (per session and
//! reason) as soon as the store takes writes again, which the writer tries by itself.
//!
//! The thread does the records' expensive part too: it redacts them ([`StoreHandle::redacting`])
//! and turns a call's captured arguments and result into their stored form, so a producer pays
//! for a channel send. Between batches it runs retention a step at a time.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError},
    },
    thread,
    time::{Duration, Instant},
};

use super::{
    CallRecord, Record, Store,
    audit::{CallCapture, Redact},
    lost::{self, LostLedger},
    retention::{Progress, Pruner, Retention},
};

/// How the writer batches and what it keeps.
#[derive(Clone, Copy, Debug)]
pub struct WriterConfig {
    /// Records that may wait in the queue; beyond that they are dropped and counted.
    pub capacity: usize,
    /// Records committed per transaction at most.
    pub max_batch: usize,
    /// After the database could not be opened, wait this long before trying again.
    pub reopen_after: Duration,
    /// How long a batch waits for another process's write lock before it is dropped.
    pub busy_timeout: Duration,
    /// Retention, if this writer should apply it (the agent's and a standalone `exec`'s do).
    pub retention: Option<Retention>,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            capacity: 32_768,
            max_batch: 2_048,
            reopen_after: Duration::from_secs(1),
            busy_timeout: super::BUSY_TIMEOUT,
            retention: None,
        }
    }
}

/// Counters a writer reports (for logs and `mcp_guard_events_dropped_total{reason}`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Records committed.
    pub written: u64,
    /// Records dropped because the channel was full (reason `store_queue_full`).
    pub dropped_queue_full: u64,
    /// Records dropped because writing failed or the writer was gone (reason `store_write_failed`).
    pub dropped_write_failed: u64,
    /// Lost records since accounted for by `lost` events in the store.
    pub lost_recorded: u64,
    /// The most recent error, for humans.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Shared {
    written: AtomicU64,
    queue_full: AtomicU64,
    write_failed: AtomicU64,
    lost_recorded: AtomicU64,
    /// Records in the queue (sent, not yet taken by the writer): bounded by `capacity`.
    queued: AtomicUsize,
    last_error: Mutex<Option<String>>,
    /// Records the queue had no room for, by session (the writer writes them down).
    queue_full_lost: Mutex<LostLedger>,
    /// The writer's thread: a flush wakes it from its active tick (a send does not).
    writer: std::sync::OnceLock<thread::Thread>,
}

impl Shared {
    fn set_error(&self, err: String) {
        let mut last = self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Log each distinct error once, not once per batch.
        if last.as_deref() != Some(err.as_str()) {
            tracing::warn!(error = %err, "store: records dropped");
        }
        *last = Some(err);
    }
}

/// One record on its way, with what the writer's thread does to it before it is written.
struct Queued {
    record: Record,
    /// A call's captured arguments and result.
    capture: Option<CallCapture>,
    redact: Option<Arc<dyn Redact>>,
}

impl Queued {
    /// The record as stored: the capture in its stored form, every text redacted.
    fn prepare(self) -> Record {
        let Queued {
            mut record,
            capture,
            redact,
        } = self;
        if let (Record::Call(call), Some(capture)) = (&mut record, capture) {
            let audit = capture.finish(redact.as_deref());
            if !audit.is_empty() || audit.arguments_cut + audit.result_cut > 0 {
                call.audit = Some(audit);
            }
        }
        if let Some(r) = &redact {
            let mut what = Vec::new();
            record.each_text_mut(&mut |s| r.redact(s, &mut what));
        }
        record
    }
}

/// What a handle asks of the writer. The queue is unbounded as a channel (it grows in small
/// blocks as records come, where a bounded one allocated and initialised every slot up front,
/// per session); `Shared::queued` bounds the records in it.
enum Msg {
    Record(Box<Queued>),
    Flush(mpsc::Sender<()>),
    /// Flush, then close the database (see [`StoreHandle::close`]).
    Close(mpsc::Sender<()>),
    Retention(Option<Retention>),
}

/// Starts store writer threads.
#[derive(Debug)]
pub struct StoreWriter;

impl StoreWriter {
    /// A writer for the database at `path` with the default configuration.
    pub fn spawn(path: impl Into<PathBuf>) -> StoreHandle {
        Self::spawn_with(path, WriterConfig::default())
    }

    /// A writer for the database at `path`. Never fails: if the database cannot be opened, the
    /// writer keeps trying and counts the records it cannot write.
    pub fn spawn_with(path: impl Into<PathBuf>, config: WriterConfig) -> StoreHandle {
        let path = path.into();
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared::default());
        let thread_shared = Arc::clone(&shared);
        let thread_path = path.clone();
        let spawned = thread::Builder::new()
            .name("mcp-guard-store".into())
            .spawn(move || run(&thread_path, config, &rx, &thread_shared));
        if let Err(e) = spawned {
            // The receiver is gone with the closure: every send will count as a failed write.
            shared.set_error(format!("cannot start the store writer thread: {e}"));
        }
        StoreHandle {
            tx,
            shared,
            path: path.into(),
            redact: None,
            capacity: config.capacity.max(1),
        }
    }
}

/// Sends records to a writer thread. Cheap to clone; the thread ends when every clone is dropped.
#[derive(Clone)]
pub struct StoreHandle {
    tx: Sender<Msg>,
    shared: Arc<Shared>,
    path: Arc<Path>,
    /// The session's redactor, applied to every record this handle sends.
    redact: Option<Arc<dyn Redact>>,
    /// Records the queue holds at most.
    capacity: usize,
}

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHandle")
            .field("path", &self.path)
            .field("redacts", &self.redact.is_some())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl StoreHandle {
    /// A handle to the same writer that redacts every text of every record it sends with
    /// `redact` (on the writer's thread, before anything is written): give a session's writers
    /// this one, and no injected value or secret shape reaches the store whatever path a record
    /// takes (event argv, call arguments and results, reasons, alert summaries, ...).
    #[must_use]
    pub fn redacting(&self, redact: Option<Arc<dyn Redact>>) -> StoreHandle {
        StoreHandle {
            redact,
            ..self.clone()
        }
    }

    /// Queues a record. Never blocks; returns false (and counts it) when it had to be dropped.
    pub fn send(&self, record: impl Into<Record>) -> bool {
        self.queue(record.into(), None)
    }

    /// Queues a call with what the proxy captured of its arguments and result, which the
    /// writer's thread redacts and bounds into [`CallRecord::audit`]. Never blocks.
    pub fn send_call(&self, call: CallRecord, capture: CallCapture) -> bool {
        self.queue(Record::Call(call), Some(capture))
    }

    fn queue(&self, record: Record, capture: Option<CallCapture>) -> bool {
        if self.shared.queued.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            self.shared.queue_full.fetch_add(1, Ordering::Relaxed);
            lock(&self.shared.queue_full_lost).add(&record, lost::QUEUE_FULL);
            return false;
        }
        let queued = Queued {
            record,
            capture,
            redact: self.redact.clone(),
        };
        if self.tx.send(Msg::Record(Box::new(queued))).is_err() {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            self.shared.write_failed.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// New retention limits for this writer (`None`: none), from its next pass on.
    pub fn set_retention(&self, retention: Option<Retention>) -> bool {
        self.tx.send(Msg::Retention(retention)).is_ok()
    }

    /// Records dropped so far, for any reason.
    pub fn dropped(&self) -> u64 {
        self.shared.queue_full.load(Ordering::Relaxed)
            + self.shared.write_failed.load(Ordering::Relaxed)
    }

    /// Records committed so far.
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }

    /// All counters and the last error.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            written: self.written(),
            dropped_queue_full: self.shared.queue_full.load(Ordering::Relaxed),
            dropped_write_failed: self.shared.write_failed.load(Ordering::Relaxed),
            lost_recorded: self.shared.lost_recorded.load(Ordering::Relaxed),
            last_error: self
                .shared
                .last_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        }
    }

    /// The database path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits until every record sent before this call is committed or counted as dropped, at
    /// most `timeout`; true if it got there. For shutdown and tests, not for a hot path.
    pub fn flush(&self, timeout: Duration) -> bool {
        self.ask(Msg::Flush, timeout)
    }

    /// [`StoreHandle::flush`], then closes the database, at most `timeout`; true if it got
    /// there. For the end of a process's use of the store: SQLite's last connection to close
    /// moves the write-ahead log into the database and removes it, so the next process to open
    /// the store does not read the whole log back first (which it must when the last writer
    /// exited with it open). A record sent afterwards opens the database again.
    pub fn close(&self, timeout: Duration) -> bool {
        self.ask(Msg::Close, timeout)
    }

    fn ask(&self, msg: impl FnOnce(mpsc::Sender<()>) -> Msg, timeout: Duration) -> bool {
        let (done_tx, done_rx) = mpsc::channel();
        if self.tx.send(msg(done_tx)).is_err() {
            return false;
        }
        if let Some(writer) = self.shared.writer.get() {
            writer.unpark();
        }
        done_rx.recv_timeout(timeout).is_ok()
    }
}

/// While records keep coming, the writer looks for more this often instead of waiting on the
/// channel. A producer whose send finds the writer waiting has to wake it, and on a VM a wakeup
/// across CPUs costs the sender many microseconds: the proxy paid that between a
/// server's answer and its delivery to the client. Records reach the database up to a tick later.
const ACTIVE_TICK: Duration = Duration::from_millis(5);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The writer thread's state.
struct Writer<'a> {
    path: &'a Path,
    config: WriterConfig,
    shared: &'a Shared,
    store: Option<Store>,
    next_open: Instant,
    pruner: Option<Pruner>,
    /// Records lost and not yet written down.
    lost: LostLedger,
    /// Tells this writer's `lost` events apart from other writers' of the same store.
    #[expect(
        clippy::struct_field_names,
        reason = "the name `lost` records carry it under"
    )]
    writer_id: String,
    lost_seq: u64,
    /// A handle closed the store and no record came since: it is not opened again for
    /// retention alone.
    closed: bool,
}

impl Writer<'_> {
    /// The store, opened when it is not (at most every `reopen_after`).
    fn store(&mut self) -> Option<&mut Store> {
        if self.store.is_none() && Instant::now() >= self.next_open {
            match Store::open(self.path).and_then(|s| {
                s.set_busy_timeout(self.config.busy_timeout)?;
                Ok(s)
            }) {
                Ok(s) => self.store = Some(s),
                Err(e) => {
                    self.shared.set_error(e.to_string());
                    self.next_open = Instant::now() + self.config.reopen_after;
                }
            }
        }
        self.store.as_mut()
    }

    /// Writes `batch` (prepared); what cannot be written is counted as lost.
    fn write(&mut self, batch: &[Record]) {
        let n = batch.len() as u64;
        match self.store().map(|s| s.write(batch)) {
            Some(Ok(())) => {
                self.shared.written.fetch_add(n, Ordering::Relaxed);
            }
            Some(Err(e)) => {
                self.shared.write_failed.fetch_add(n, Ordering::Relaxed);
                self.shared.set_error(e.to_string());
                for r in batch {
                    self.lost.add(r, lost::WRITE_FAILED);
                }
                // Busy and full pass with time on the same connection; anything else (the
                // file removed or replaced, an I/O error) may need a fresh one.
                if !e.is_busy() && !e.is_disk_full() {
                    self.store = None;
                    self.next_open = Instant::now() + self.config.reopen_after;
                }
            }
            None => {
                self.shared.write_failed.fetch_add(n, Ordering::Relaxed);
                for r in batch {
                    self.lost.add(r, lost::WRITE_FAILED);
                }
            }
        }
    }

    /// Whether lost records wait to be written down (this writer's, or the queue's).
    fn lost_pending(&self) -> bool {
        !self.lost.is_empty() || !lock(&self.shared.queue_full_lost).is_empty()
    }

    /// Writes the lost records down as `lost` events, if the store takes writes now; they stay
    /// counted for the next try otherwise.
    fn write_lost(&mut self) {
        self.lost.take_from(&mut lock(&self.shared.queue_full_lost));
        if self.lost.is_empty() {
            return;
        }
        let events = self.lost.events(&self.writer_id, &mut self.lost_seq);
        let total = self.lost.total();
        let Some(store) = self.store() else { return };
        match store.write(&events) {
            Ok(()) => {
                tracing::warn!(
                    records = total,
                    "store: writing again; the records lost meanwhile are recorded as lost events"
                );
                self.shared
                    .lost_recorded
                    .fetch_add(total, Ordering::Relaxed);
                self.lost.clear();
            }
            Err(e) => {
                if !e.is_busy() && !e.is_disk_full() {
                    self.store = None;
                    self.next_open = Instant::now() + self.config.reopen_after;
                }
            }
        }
    }

    /// One step of retention, when a pass is running or due (opening the store for it: a
    /// writer with nothing to write still keeps the store within its limits).
    fn prune_step(&mut self) {
        if self.closed || !self.pruner.as_ref().is_some_and(Pruner::due) {
            return;
        }
        if self.store().is_none() {
            return;
        }
        let (Some(pruner), Some(store)) = (self.pruner.as_mut(), self.store.as_mut()) else {
            return;
        };
        match pruner.step(store) {
            Ok(Progress::Done(Some(stats))) if stats.deleted != super::Counts::default() => {
                tracing::info!(?stats, "store: retention pruned old records");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "store: retention failed"),
        }
    }

    /// How long an idle writer may wait for records before it has something else to do.
    fn idle_wait(&self) -> Option<Duration> {
        // A store that would not open is tried again no sooner than planned.
        let reopen = match self.store {
            Some(_) => Duration::ZERO,
            None => self.next_open.saturating_duration_since(Instant::now()),
        };
        let prune = self
            .pruner
            .as_ref()
            .filter(|_| !self.closed)
            .map(|p| p.wait().max(reopen));
        let lost = self.lost_pending().then_some(self.config.reopen_after);
        match (prune, lost) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The writer thread: take what is queued (up to a batch), commit it, repeat; between batches,
/// write down what was lost and run retention.
fn run(path: &Path, config: WriterConfig, rx: &Receiver<Msg>, shared: &Shared) {
    let _ = shared.writer.set(thread::current());
    let mut w = Writer {
        path,
        config,
        shared,
        store: None,
        next_open: Instant::now(),
        pruner: config.retention.map(Pruner::new),
        lost: LostLedger::default(),
        writer_id: format!(
            "{}-{}",
            std::process::id(),
            super::Timestamp::now().unix_nanos()
        ),
        lost_seq: 0,
        closed: false,
    };
    let mut batch: Vec<Record> = Vec::with_capacity(config.max_batch);
    let mut flushes: Vec<mpsc::Sender<()>> = Vec::new();
    // A handle asked to close the database once what came before is written.
    let mut close = false;
    // Something arrived last time round: look again after a tick rather than wait.
    let mut active = false;
    // The last batch was cut at `max_batch`: more is waiting now.
    let mut backlog = false;
    loop {
        let pruning = w.store.is_some() && w.pruner.as_ref().is_some_and(Pruner::running);
        let first = if active || pruning {
            if !backlog && !pruning {
                // Parked rather than asleep: a flush (whoever waits for the store, e.g. a
                // session's end) unparks it at once.
                thread::park_timeout(ACTIVE_TICK);
            }
            match rx.try_recv() {
                Ok(m) => Some(m),
                // A quiet tick: wait on the channel from the next round.
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => break,
            }
        } else {
            // Wake up now and then even when idle: retention runs on a quiet store too, and
            // lost records are written down once the disk has room again.
            match w.idle_wait() {
                Some(wait) => match rx.recv_timeout(wait) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match rx.recv() {
                    Ok(m) => Some(m),
                    Err(_) => break,
                },
            }
        };
        active = first.is_some();
        let mut next = first;
        while let Some(msg) = next {
            match msg {
                Msg::Record(q) => {
                    shared.queued.fetch_sub(1, Ordering::AcqRel);
                    w.closed = false;
                    batch.push(q.prepare());
                }
                Msg::Flush(done) => flushes.push(done),
                Msg::Close(done) => {
                    flushes.push(done);
                    close = true;
                }
                Msg::Retention(r) => match (&mut w.pruner, r) {
                    (Some(p), Some(r)) => p.set(r),
                    (p, r) => *p = r.map(Pruner::new),
                },
            }
            next = if batch.len() < config.max_batch {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        backlog = batch.len() >= config.max_batch;
        if !batch.is_empty() {
            w.write(&batch);
            batch.clear();
        }
        if w.lost_pending() {
            w.write_lost();
        }
        if std::mem::take(&mut close) {
            // Dropping the connection closes it; retention waits for the next record.
            w.store = None;
            w.closed = true;
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
        w.prune_step();
    }
    if w.lost_pending() {
        w.write_lost();
    }
    // Every handle is gone: say what was lost, once, where the operator's logs are.
    let queue_full = shared.queue_full.load(Ordering::Relaxed);
    let write_failed = shared.write_failed.load(Ordering::Relaxed);
    if queue_full + write_failed > 0 {
        let last_error = lock(&shared.last_error).clone().unwrap_or_default();
        tracing::warn!(
            path = %path.display(),
            written = shared.written.load(Ordering::Relaxed),
            queue_full,
            write_failed,
            recorded_as_lost = shared.lost_recorded.load(Ordering::Relaxed),
            last_error,
            "store: records were dropped"
        );
    }
}
