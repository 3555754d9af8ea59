//! The batched writer: producers hand records to a [`StoreHandle`] that never blocks; one thread
//! drains the channel and commits what it holds in one transaction.
//!
//! A full queue, a full disk or a database locked beyond the busy timeout costs records, never
//! the caller's time: each lost record is counted ([`StoreHandle::dropped`]) and the last error
//! is kept for reporting.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError},
    },
    thread,
    time::{Duration, Instant},
};

use super::{Record, Store};
use mcp_guard_model::redact::TextRedactor;

/// Retention the writer applies on its own thread, between batches.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Delete records older than this.
    pub max_age: Option<Duration>,
    /// Delete the oldest records while the live data is larger than this.
    pub max_bytes: Option<u64>,
    /// How often to check.
    pub every: Duration,
}

/// How the writer batches and what it keeps.
#[derive(Clone, Copy, Debug)]
pub struct WriterConfig {
    /// Records that may wait in the channel; beyond that they are dropped and counted.
    pub capacity: usize,
    /// Records committed per transaction at most.
    pub max_batch: usize,
    /// After the database could not be opened, wait this long before trying again.
    pub reopen_after: Duration,
    /// How long a batch waits for another process's write lock before it is dropped.
    pub busy_timeout: Duration,
    /// Retention, if this writer should apply it (the agent does; `exec` processes need not).
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
    /// The most recent error, for humans.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Shared {
    written: AtomicU64,
    queue_full: AtomicU64,
    write_failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    fn set_error(&self, err: String) {
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        // Log each distinct error once, not once per batch.
        if last.as_deref() != Some(err.as_str()) {
            tracing::warn!(error = %err, "store: records dropped");
        }
        *last = Some(err);
    }
}

/// Records are boxed: a bounded channel preallocates every slot at the largest variant's size.
enum Msg {
    Record(Box<Record>),
    Flush(mpsc::Sender<()>),
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
        let (tx, rx) = mpsc::sync_channel(config.capacity.max(1));
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
            scrub: None,
        }
    }
}

/// Sends records to a writer thread. Cheap to clone; the thread ends when every clone is dropped.
#[derive(Clone)]
pub struct StoreHandle {
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
    path: Arc<Path>,
    /// The session's redactor (injected values, secret rules), applied to every record this
    /// handle sends.
    scrub: Option<Arc<dyn TextRedactor>>,
}

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHandle")
            .field("path", &self.path)
            .field("redacts", &self.scrub.is_some())
            .field("stats", &self.stats())
            .finish()
    }
}

impl StoreHandle {
    /// A handle to the same writer that redacts every text of every record it sends with
    /// `redactor`: give a session's writers this one, and no injected value or secret the rules
    /// find reaches the store whatever path a record takes (event argv, call reasons, alert
    /// summaries, ...).
    pub fn redacting(&self, redactor: Option<Arc<dyn TextRedactor>>) -> StoreHandle {
        StoreHandle {
            scrub: redactor,
            ..self.clone()
        }
    }

    /// Queues a record. Never blocks; returns false (and counts it) when it had to be dropped.
    pub fn send(&self, record: impl Into<Record>) -> bool {
        let mut record = record.into();
        if let Some(scrub) = &self.scrub {
            record.each_text_mut(&mut |s| scrub.redact_text(s));
        }
        match self.tx.try_send(Msg::Record(Box::new(record))) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.shared.queue_full.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(TrySendError::Disconnected(_)) => {
                self.shared.write_failed.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
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
            last_error: self
                .shared
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
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
        let deadline = Instant::now() + timeout;
        let (done_tx, done_rx) = mpsc::channel();
        let mut msg = Msg::Flush(done_tx);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    msg = m;
                    thread::sleep(Duration::from_millis(1));
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
        done_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

/// While records keep coming, the writer looks for more this often instead of waiting on the
/// channel. A producer whose send finds the writer waiting has to wake it, and on a VM a wakeup
/// across CPUs can cost the sender 15-20 µs (measured here): the proxy paid that between a
/// server's answer and its delivery to the client. Records reach the database up to a tick later.
const ACTIVE_TICK: Duration = Duration::from_millis(5);

/// The writer thread: take what is queued (up to a batch), commit it, repeat.
fn run(path: &Path, config: WriterConfig, rx: &Receiver<Msg>, shared: &Shared) {
    let mut store: Option<Store> = None;
    let mut next_open = Instant::now();
    let mut last_prune = Instant::now();
    let mut batch: Vec<Record> = Vec::with_capacity(config.max_batch);
    let mut flushes: Vec<mpsc::Sender<()>> = Vec::new();
    // Something arrived last time round: look again after a tick rather than wait.
    let mut active = false;
    // The last batch was cut at `max_batch`: more is waiting now.
    let mut backlog = false;
    loop {
        let first = if active {
            if !backlog {
                thread::sleep(ACTIVE_TICK);
            }
            match rx.try_recv() {
                Ok(m) => Some(m),
                // A quiet tick: wait on the channel from the next round.
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => break,
            }
        } else {
            // Wake up now and then even when idle, so retention runs on a quiet store too.
            match config.retention {
                Some(r) => match rx.recv_timeout(r.every) {
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
                Msg::Record(r) => batch.push(*r),
                Msg::Flush(done) => flushes.push(done),
            }
            next = if batch.len() < config.max_batch {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        backlog = batch.len() >= config.max_batch;
        if !batch.is_empty() {
            let n = batch.len() as u64;
            if store.is_none() && Instant::now() >= next_open {
                match Store::open(path).and_then(|s| {
                    s.set_busy_timeout(config.busy_timeout)?;
                    Ok(s)
                }) {
                    Ok(s) => store = Some(s),
                    Err(e) => {
                        shared.set_error(e.to_string());
                        next_open = Instant::now() + config.reopen_after;
                    }
                }
            }
            match store.as_mut().map(|s| s.write(&batch)) {
                Some(Ok(())) => {
                    shared.written.fetch_add(n, Ordering::Relaxed);
                }
                Some(Err(e)) => {
                    shared.write_failed.fetch_add(n, Ordering::Relaxed);
                    shared.set_error(e.to_string());
                    // Busy and full pass with time on the same connection; anything else (the
                    // file removed or replaced, an I/O error) may need a fresh one.
                    if !e.is_busy() && !e.is_disk_full() {
                        store = None;
                        next_open = Instant::now() + config.reopen_after;
                    }
                }
                None => {
                    shared.write_failed.fetch_add(n, Ordering::Relaxed);
                }
            }
            batch.clear();
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
        if let (Some(r), Some(s)) = (config.retention, store.as_mut())
            && last_prune.elapsed() >= r.every
        {
            last_prune = Instant::now();
            match s.prune(r.max_age, r.max_bytes) {
                Ok(stats) if stats.deleted != super::Counts::default() => {
                    tracing::info!(?stats, "store: retention pruned old records");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "store: retention failed"),
            }
        }
    }
    // Every handle is gone: say what was lost, once, where the operator's logs are.
    let queue_full = shared.queue_full.load(Ordering::Relaxed);
    let write_failed = shared.write_failed.load(Ordering::Relaxed);
    if queue_full + write_failed > 0 {
        let last_error = shared
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        tracing::warn!(
            path = %path.display(),
            written = shared.written.load(Ordering::Relaxed),
            queue_full,
            write_failed,
            last_error,
            "store: records were dropped"
        );
    }
}
