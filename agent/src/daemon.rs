//! `mcp-guard agent`: the long-running service. Loads and pins the eBPF programs once, runs
//! sessions for `exec` clients on its Unix socket ([`sessions`], [`guard_service`]), and serves
//! Prometheus metrics for every session on the host (on TCP or a Unix socket, optionally behind
//! a bearer token: [`crate::metrics::auth`], [`crate::metrics::listen`]).
//!
//! Each `mcp-guard exec` writes its calls, kernel events, alerts and lost-event counts to the
//! store in the state dir; the agent follows the store ([`Tail`]) and turns what is new into the
//! contract's counters, counts the sessions whose server is alive, and adds the kernel's own
//! per-program statistics for the mcp-guard eBPF programs. Readiness and liveness go to systemd
//! (`Type=notify`: `READY=1`, then `WATCHDOG=1` while the store is being followed); SIGTERM and
//! SIGINT stop it, SIGHUP re-reads the config file (a bad file keeps the running config and
//! says why). With sinks in `[export]`, it also ships the store to them ([`crate::export`]).

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use tokio::signal::unix::{SignalKind, signal};

pub mod admission;
pub mod config;
pub mod guard_service;
pub mod peer;
pub mod policies;
pub mod sessions;
mod socket;
mod systemd;

pub use config::{Config, DEFAULT_BPF_DIR, DEFAULT_METRICS_ADDR};

use crate::say::say_as_is;
use crate::{
    exit_codes::EXIT_POLICY,
    export::{Exporter, Prepared},
    metrics::{
        BpfStatsSource, Metrics,
        auth::Auth,
        listen::{Listener, MetricsAddr},
    },
};
use mcp_guard_kernel::loader::PROGRAM_NAMES;
use mcp_guard_model::dirs::Dirs;
use mcp_guard_store::{Store, StoreError, StoreWriter, Tail, TailBatch, WriterConfig, db_path};

/// `mcp-guard agent` as the CLI calls it.
#[derive(Clone, Debug)]
pub struct AgentArgs {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--metrics` (overrides the config).
    pub metrics: Option<MetricsAddr>,
    /// `--socket` (overrides the config).
    pub socket: Option<PathBuf>,
    /// `--bpf-dir` (overrides the config).
    pub bpf_dir: Option<PathBuf>,
}

/// Runs the agent until SIGTERM/SIGINT.
pub fn main(args: AgentArgs, dirs: &Dirs) -> ExitCode {
    let mut config = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            say_as_is(&format!("mcp-guard agent: config error: {e}"));
            return ExitCode::from(EXIT_POLICY);
        }
    };
    if let Some(addr) = &args.metrics {
        config.metrics = addr.clone();
    }
    // Before anything is loaded or bound: a token others can read is refused (fail closed).
    let auth = Arc::new(Auth::default());
    match config
        .check_effective()
        .and_then(|()| config.metrics_token())
    {
        Ok(token) => auth.set(token),
        Err(e) => {
            say_as_is(&format!("mcp-guard agent: config error: {e}"));
            return ExitCode::from(EXIT_POLICY);
        }
    }
    // Credentials, CA files and the host id: a sink that cannot work stops the start here.
    let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    let export = match Prepared::new(&config.export, credentials.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            say_as_is(&format!("mcp-guard agent: config error: {e}"));
            return ExitCode::from(EXIT_POLICY);
        }
    };
    if let Some(socket) = &args.socket {
        config.socket.clone_from(socket);
    }
    if let Some(dir) = &args.bpf_dir {
        config.bpf_dir.clone_from(dir);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say_as_is(&format!("mcp-guard agent: cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args, config, auth, export, dirs.clone())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say_as_is(&format!("mcp-guard agent: {e}"));
            ExitCode::FAILURE
        }
    }
}

async fn run(
    args: AgentArgs,
    mut config: Config,
    auth: Arc<Auth>,
    export: Prepared,
    dirs: Dirs,
) -> Result<(), String> {
    let state_dir = dirs.state.clone();
    // The agent applies the host's retention; its sessions' writers do not.
    let writer = StoreWriter::spawn_with(
        db_path(&state_dir),
        WriterConfig {
            retention: config.store.retention(),
            ..WriterConfig::default()
        },
    );
    let guard = guard_service::GuardService::start(&config.bpf_dir, writer.clone())
        .map_err(|e| format!("{e}\nthe agent cannot guard sessions without its eBPF programs"))?;
    // Loading parsed the kernel's BTF and the object (tens of MB, freed since): hand the pages
    // back, or the idle agent keeps them for good.
    // SAFETY: malloc_trim only releases free heap memory; it has no other preconditions.
    unsafe { libc::malloc_trim(0) };
    say_as_is(&format!(
        "mcp-guard agent: eBPF programs pinned in {} ({} server(s) guarded from before)",
        config.bpf_dir.display(),
        guard.guarded()
    ));
    let (policies, problems) = policies::PolicySet::load(&dirs.policy);
    for p in problems {
        say_as_is(&format!("mcp-guard agent: policy not loaded: {p}"));
    }
    let listener = socket::bind(&config)?;
    let launcher = Arc::new(sessions::Launcher {
        rules: std::sync::RwLock::new(config.rules()),
        policies: std::sync::Mutex::new(policies),
        dirs: dirs.clone(),
        socket: config.socket.clone(),
        guard: guard.clone(),
        admission: Arc::default(),
        unix_probe: mcp_guard_kernel::unix::probe(),
    });
    let accepting = tokio::spawn(sessions::accept(listener, launcher.clone()));
    let metrics = Arc::new(Metrics::new().map_err(|e| format!("metrics: {e}"))?);
    match metrics.enable_bpf_stats(&PROGRAM_NAMES) {
        Ok(BpfStatsSource::Off) => tracing::warn!(
            "eBPF run statistics are off (no CAP_SYS_ADMIN?): per-program counts stay flat"
        ),
        Ok(source) => tracing::info!("eBPF run statistics: {source:?}"),
        Err(e) => tracing::warn!("eBPF run statistics unavailable: {e}"),
    }
    let listener = Listener::bind(&config.metrics, config.metrics_socket_group.as_deref()).await?;
    say_as_is(&format!(
        "mcp-guard agent: serving {}{}, following {}",
        listener.describe(),
        if auth.required() {
            " (bearer token required)"
        } else {
            ""
        },
        db_path(&state_dir).display()
    ));
    tokio::spawn(crate::metrics::serve(
        listener,
        metrics.clone(),
        auth.clone(),
    ));

    let store = open_store(&state_dir)?;
    let mut tail = Tail::from_now(&store).map_err(|e| format!("store: {e}"))?;
    let export_metrics = metrics
        .export_metrics()
        .map_err(|e| format!("metrics: {e}"))?;
    let exporter = Exporter::start(export, &db_path(&state_dir), export_metrics);
    if !exporter.sinks().is_empty() {
        say_as_is(&format!(
            "mcp-guard agent: shipping the history to {}",
            exporter.sinks().join(", ")
        ));
    }
    let store = Arc::new(std::sync::Mutex::new(store));
    systemd::notify("READY=1");

    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        return Err("cannot install signal handlers".into());
    };
    let mut own_failures = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(config.poll_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let store = store.clone();
                let mut cursor = std::mem::take(&mut tail);
                let (cursor, polled) = tokio::task::spawn_blocking(move || {
                    let store = store.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let polled = cursor.poll(&store);
                    (cursor, polled)
                })
                .await
                .map_err(|e| format!("store follower: {e}"))?;
                tail = cursor;
                guard.record_drops();
                guard.collect_orphans();
                // The agent's own writer's failures as they happen (its `lost` events are
                // skipped below); other processes' once their `lost` events are written.
                let failed = writer.stats().dropped_write_failed;
                metrics.add_store_write_failures(failed.saturating_sub(own_failures));
                own_failures = failed;
                match polled {
                    Ok(batch) => {
                        count(&metrics, &batch);
                        // Alive only while the store is followed: a wedged store stops the pings.
                        systemd::notify("WATCHDOG=1");
                    }
                    Err(e) => tracing::warn!("store: {e}; retrying"),
                }
            }
            _ = hup.recv() => {
                let problems = launcher.policies.lock().unwrap_or_else(std::sync::PoisonError::into_inner).reload();
                for p in &problems {
                    say_as_is(&format!("mcp-guard agent: SIGHUP: {p}"));
                }
                say_as_is(&format!("mcp-guard agent: policies reloaded ({} problem(s))", problems.len()));
                match Config::load(args.config.as_deref())
                    .and_then(|new| new.metrics_token().map(|token| (new, token)))
                {
                Ok((new, token)) => {
                    if (new.metrics != config.metrics && args.metrics.is_none())
                        || new.metrics_socket_group != config.metrics_socket_group {
                        tracing::warn!("SIGHUP: a new metrics address or group takes a restart; keeping {}", config.metrics);
                    }
                    auth.set(token);
                    if new.export != config.export {
                        tracing::warn!("SIGHUP: [export] changes take a restart; keeping the running sinks");
                    }
                    if new.socket != config.socket || new.bpf_dir != config.bpf_dir
                        || new.socket_mode != config.socket_mode
                        || new.socket_group != config.socket_group {
                        tracing::warn!("SIGHUP: socket and bpf_dir changes take a restart");
                    }
                    tick = tokio::time::interval(Duration::from_millis(new.poll_ms));
                    if new.store != config.store && !writer.set_retention(new.store.retention()) {
                        tracing::warn!("SIGHUP: the store writer is busy; [store] takes effect at the next reload");
                    }
                    *launcher.rules.write().unwrap_or_else(std::sync::PoisonError::into_inner) = new.rules();
                    config = Config {
                        metrics: config.metrics,
                        metrics_socket_group: config.metrics_socket_group,
                        socket: config.socket,
                        socket_mode: config.socket_mode,
                        socket_group: config.socket_group,
                        bpf_dir: config.bpf_dir,
                        export: config.export,
                        ..new
                    };
                    say_as_is("mcp-guard agent: config reloaded");
                }
                Err(e) => say_as_is(&format!("mcp-guard agent: SIGHUP: keeping the running config: {e}")),
            }},
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    systemd::notify("STOPPING=1");
    say_as_is("mcp-guard agent: stopping");
    // No new sessions; running ones keep their worker and their pinned guard, and reconnect to
    // the next agent.
    accepting.abort();
    let _ = std::fs::remove_file(&config.socket);
    if let MetricsAddr::Unix(path) = &config.metrics {
        let _ = std::fs::remove_file(path);
    }
    guard.keep_all();
    guard.record_drops();
    writer.flush(Duration::from_secs(5));
    // A delivery cut short here is sent again by the next agent (the cursor did not move).
    exporter.stop(Duration::from_secs(5));
    Ok(())
}

/// The store, created if this host has none yet (the agent may start before any exec).
fn open_store(state_dir: &Path) -> Result<Store, String> {
    let path = db_path(state_dir);
    let store = Store::open(&path).map_err(|e| format!("store {}: {e}", path.display()))?;
    // Execs write while the agent reads; a short wait beats a failed poll.
    store
        .set_busy_timeout(Duration::from_millis(500))
        .map_err(|e: StoreError| format!("store {}: {e}", path.display()))?;
    Ok(store)
}

/// Adds what was new in the store to the counters.
fn count(metrics: &Metrics, batch: &TailBatch) {
    for c in &batch.calls {
        metrics.tool_call(&c.server, &c.tool, &c.decision, c.duration);
    }
    for e in &batch.events {
        if let Some((reason, n)) = &e.lost
            && reason == mcp_guard_store::STORE_WRITE_FAILED
            && e.lost_by != Some(std::process::id())
        {
            metrics.add_store_write_failures(*n);
        }
        match &e.lost {
            Some((reason, n)) => metrics.add_dropped(reason, *n),
            // Operator actions (quarantine, release) are history, not kernel events.
            None if crate::quarantine::KINDS.contains(&e.kind.as_str()) => {}
            // A session's resource peaks, recorded at its end, are not a kernel event either.
            None if e.kind == mcp_guard_launch::usage::USAGE => {}
            None => metrics.kernel_event(&e.server, &e.kind, &e.verdict),
        }
    }
    // Every occurrence: a repeat in a session is one stored alert with a higher count.
    for a in &batch.alerts {
        for _ in 0..a.count {
            metrics.alert(&a.server, &a.rule, &a.severity);
        }
    }
    metrics.set_servers_running(batch.running.len());
}
