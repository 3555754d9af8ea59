//! Shipping the history to the fleet: the agent streams every session, call, event and alert
//! from the store to the sinks in `agent.toml`'s `[export]` ([`config`]) — ClickHouse
//! ([`clickhouse`], the fleet's queryable history, read back by `--fleet`: [`fleet`]) and
//! syslog receivers ([`syslog`], OCSF JSON: [`ocsf`]).
//!
//! Each sink has its own thread ([`pump`]) and its own cursor in the store's change log
//! ([`mcp_guard_store::changes`]), so a slow or broken sink holds no other back. Delivery is at
//! least once: the cursor moves only after a batch was delivered, and it survives restarts.

pub mod clickhouse;
pub mod config;
pub mod fleet;
pub mod host;
pub mod ocsf;
pub mod pump;
pub mod rows;
pub mod syslog;
pub mod tls;

use std::{
    path::Path,
    sync::mpsc::{self, Receiver, RecvTimeoutError, Sender},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use config::{ExportConfig, Target};
use host::Host;
use pump::{Backoff, Deliver, Encode, Pump};

use mcp_guard_store::Store;

use crate::metrics::export::ExportMetrics;

/// How often the supervisor checks that the change log's triggers are all still there (a
/// table rebuilt by a migration loses its triggers).
const CHECK_EVERY: Duration = Duration::from_mins(1);

/// The running exporter; [`stop`](Self::stop) ends it.
#[derive(Debug)]
pub struct Exporter {
    stop: Option<Sender<()>>,
    supervisor: Option<JoinHandle<()>>,
    sinks: Vec<String>,
}

/// Sinks ready to start: everything that can be wrong with the config found before the agent
/// serves (a password file others can read, a missing CA file, no machine id).
pub struct Prepared {
    host: Host,
    pumps: Vec<SinkPump>,
}

/// One sink's settings, encoding and delivery, before its thread starts.
struct SinkPump {
    name: String,
    batch: usize,
    interval: Duration,
    encode: Box<dyn Encode>,
    deliver: Box<dyn Deliver>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("host", &self.host)
            .field(
                "sinks",
                &self.pumps.iter().map(|p| &p.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Prepared {
    /// Reads credentials and CA files and builds each sink's client. `credentials_dir` is
    /// systemd's `$CREDENTIALS_DIRECTORY`.
    pub fn new(config: &ExportConfig, credentials_dir: Option<&Path>) -> Result<Self, String> {
        let sinks = config.sinks(credentials_dir)?;
        if sinks.is_empty() {
            return Ok(Prepared {
                host: Host {
                    name: String::new(),
                    id: String::new(),
                },
                pumps: Vec::new(),
            });
        }
        let host = Host::detect(config)?;
        let mut pumps = Vec::new();
        for sink in sinks {
            let bad = |e: String| format!("[[export.sink]] {:?}: {e}", sink.name);
            let (encode, deliver): (Box<dyn Encode>, Box<dyn Deliver>) = match &sink.target {
                Target::ClickHouse(t) => (
                    Box::new(rows::Rows::new(host.clone())),
                    Box::new(clickhouse::ClickHouseSink::new(t, sink.timeout).map_err(bad)?),
                ),
                Target::Syslog(t) => (
                    Box::new(syslog::Frames::new(t, host.clone())),
                    Box::new(syslog::SyslogSink::new(t, sink.timeout).map_err(bad)?),
                ),
            };
            pumps.push(SinkPump {
                name: sink.name,
                batch: sink.batch,
                interval: sink.interval,
                encode,
                deliver,
            });
        }
        Ok(Prepared { host, pumps })
    }

    /// The sinks' names.
    pub fn names(&self) -> Vec<String> {
        self.pumps.iter().map(|p| p.name.clone()).collect()
    }

    /// This host, as the sinks see it.
    pub fn host(&self) -> &Host {
        &self.host
    }
}

impl Exporter {
    /// Starts shipping from the store at `db`: turns the change log on for the sinks (or off,
    /// when there are none), then runs one thread per sink. Returns at once; the first numbering
    /// of a large store happens on the exporter's own thread.
    pub fn start(prepared: Prepared, db: &Path, metrics: ExportMetrics) -> Exporter {
        let names = prepared.names();
        for n in &names {
            metrics.add_sink(n);
        }
        let (tx, rx) = mpsc::channel();
        let db = db.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("mcp-guard-export".into())
            .spawn(move || supervise(prepared, &db, &metrics, &rx));
        let supervisor = match spawned {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!("export: cannot start its thread: {e}; nothing is shipped");
                None
            }
        };
        Exporter {
            stop: Some(tx),
            supervisor,
            sinks: names,
        }
    }

    /// The sinks being shipped to.
    pub fn sinks(&self) -> &[String] {
        &self.sinks
    }

    /// Stops every sink, waiting at most `timeout` (a delivery in flight may be cut short: its
    /// batch is sent again by the next agent).
    pub fn stop(mut self, timeout: Duration) {
        drop(self.stop.take());
        if let Some(h) = self.supervisor.take() {
            let deadline = Instant::now() + timeout;
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
}

/// Waits `d`; true when told to stop.
fn stopped(stop: &Receiver<()>, d: Duration) -> bool {
    !matches!(stop.recv_timeout(d), Err(RecvTimeoutError::Timeout))
}

fn supervise(prepared: Prepared, db: &Path, metrics: &ExportMetrics, stop: &Receiver<()>) {
    let names = prepared.names();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    // The change log first: without it there is nothing to follow.
    loop {
        let done = Store::open(db).and_then(|mut store| {
            if refs.is_empty() {
                store.disable_export().map(|()| 0)
            } else {
                store.enable_export(&refs)
            }
        });
        match done {
            Ok(n) if n > 0 => {
                tracing::info!("export: {n} stored record(s) numbered for shipping");
                break;
            }
            Ok(_) => break,
            Err(e) => {
                tracing::warn!("export: preparing the store: {e}; retrying");
                if stopped(stop, backoff.next_wait()) {
                    return;
                }
            }
        }
    }
    if refs.is_empty() {
        return;
    }
    let mut threads = Vec::new();
    // Each sink stops when its sender goes; all go when the supervisor returns.
    let mut senders = Vec::new();
    for SinkPump {
        name,
        batch,
        interval,
        encode,
        deliver,
    } in prepared.pumps
    {
        let (tx, rx) = mpsc::channel::<()>();
        senders.push(tx);
        let pump = Pump {
            name: name.clone(),
            batch,
            interval,
            db: db.to_path_buf(),
            encode,
            deliver,
            metrics: metrics.clone(),
        };
        match std::thread::Builder::new()
            .name(format!("export-{name}"))
            .spawn(move || pump.run(&rx))
        {
            Ok(h) => threads.push(h),
            Err(e) => tracing::warn!(sink = %name, "export: cannot start its thread: {e}"),
        }
    }
    while !stopped(stop, CHECK_EVERY) {
        let healed = Store::open(db).and_then(|mut store| {
            if store.export_enabled()? {
                Ok(0)
            } else {
                store.enable_export(&refs)
            }
        });
        match healed {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                "export: the change log's triggers were missing; {n} record(s) written \
                 meanwhile numbered for shipping"
            ),
            Err(e) => tracing::warn!("export: checking the change log: {e}"),
        }
    }
    drop(senders);
    for h in threads {
        let _ = h.join();
    }
}
