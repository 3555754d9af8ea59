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
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use serde::Deserialize;
use tokio::signal::unix::{SignalKind, signal};

pub mod admission;
pub mod guard_service;
pub mod peer;
pub mod policies;
pub mod sessions;

use crate::{
    exit_codes::EXIT_POLICY,
    export::{Exporter, Prepared, config::ExportConfig},
    history::DEFAULT_CONFIG,
    ipc,
    kernel::loader::PROGRAM_NAMES,
    metrics::{
        BpfStatsSource, Metrics,
        auth::{Auth, Token},
        listen::{Listener, MetricsAddr},
    },
};
use mcp_guard_model::dirs::Dirs;
use mcp_guard_store::{Store, StoreError, StoreWriter, Tail, TailBatch, WriterConfig, db_path};

/// Where the programs and maps are pinned unless configured otherwise.
pub const DEFAULT_BPF_DIR: &str = "/sys/fs/bpf/mcp-guard";

/// Where `/metrics` is served unless the config or `--metrics` says otherwise (loopback only:
/// the counters name servers and tools).
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";

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

/// The agent's config file (TOML; unknown keys are errors).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where `/metrics` is served: `host:port` or `unix:/path`.
    #[serde(default = "default_metrics")]
    pub metrics: MetricsAddr,
    /// A file only root may read holding the bearer token every `/metrics` request must carry.
    #[serde(default)]
    pub metrics_token_file: Option<PathBuf>,
    /// The group of a `unix:` metrics socket (mode 0660); `None`: root's.
    #[serde(default)]
    pub metrics_socket_group: Option<String>,
    /// How often the store is followed, in milliseconds.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// The Unix socket `exec` clients connect to.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// The socket's permission bits, in octal (`"0660"`: owner and group).
    #[serde(default = "default_socket_mode")]
    pub socket_mode: String,
    /// The group that owns the socket (its members may run sessions); `None`: root's.
    #[serde(default)]
    pub socket_group: Option<String>,
    /// The bpffs directory the programs and maps are pinned in.
    #[serde(default = "default_bpf_dir")]
    pub bpf_dir: PathBuf,
    /// Launch only servers that have a policy in the policy dir.
    #[serde(default)]
    pub known_only: bool,
    /// Let non-root callers use `--observe`.
    #[serde(default)]
    pub allow_observe: bool,
    /// Sessions one non-root user may run at once (by `SO_PEERCRED` uid).
    #[serde(default = "default_max_sessions")]
    pub max_sessions_per_user: u32,
    /// `[store]`: retention.
    #[serde(default)]
    pub store: crate::history::StoreConfig,
    /// `[audit]`: what the history keeps of calls unless a policy says otherwise.
    #[serde(default)]
    pub audit: crate::history::AuditDefaults,
    /// `[export]`: the sinks the history is shipped to.
    #[serde(default)]
    pub export: ExportConfig,
}

fn default_max_sessions() -> u32 {
    admission::DEFAULT_MAX_SESSIONS_PER_USER
}

/// The largest `max_sessions_per_user` (each session is a root worker and a jailed server).
const MAX_SESSIONS_PER_USER: u32 = 65_536;

fn default_socket() -> PathBuf {
    PathBuf::from(ipc::DEFAULT_SOCKET)
}

fn default_socket_mode() -> String {
    "0660".into()
}

fn default_bpf_dir() -> PathBuf {
    PathBuf::from(DEFAULT_BPF_DIR)
}

fn default_metrics() -> MetricsAddr {
    DEFAULT_METRICS_ADDR
        .parse()
        .unwrap_or_else(|_| MetricsAddr::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], 9464))))
}

fn default_poll_ms() -> u64 {
    1000
}

impl Default for Config {
    fn default() -> Self {
        Config {
            metrics: default_metrics(),
            metrics_token_file: None,
            metrics_socket_group: None,
            poll_ms: default_poll_ms(),
            socket: default_socket(),
            socket_mode: default_socket_mode(),
            socket_group: None,
            bpf_dir: default_bpf_dir(),
            known_only: false,
            allow_observe: false,
            max_sessions_per_user: default_max_sessions(),
            store: crate::history::StoreConfig::default(),
            audit: crate::history::AuditDefaults::default(),
            export: ExportConfig::default(),
        }
    }
}

impl Config {
    /// Reads `path`; `None` when the default file is absent. Errors name the file, line and key.
    pub fn load(path: Option<&Path>) -> Result<Config, String> {
        let (path, required) = match path {
            Some(p) => (p, true),
            None => (Path::new(DEFAULT_CONFIG), false),
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Config::default());
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses a config file's text.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        if config.poll_ms == 0 || config.poll_ms > 60_000 {
            return Err(format!(
                "poll_ms = {}: must be between 1 and 60000",
                config.poll_ms
            ));
        }
        config.mode()?;
        if !(1..=MAX_SESSIONS_PER_USER).contains(&config.max_sessions_per_user) {
            return Err(format!(
                "max_sessions_per_user = {}: must be between 1 and {MAX_SESSIONS_PER_USER}",
                config.max_sessions_per_user
            ));
        }
        crate::history::HostHistory {
            store: config.store.clone(),
            audit: config.audit,
        }
        .check()?;
        config.export.check(text)?;
        if let Some(file) = &config.metrics_token_file
            && !file.is_absolute()
        {
            return Err(format!(
                "metrics_token_file = {:?}: an absolute path",
                file.display()
            ));
        }
        Ok(config)
    }

    /// Checks what only the whole configuration (file and flags) can tell.
    fn check_effective(&self) -> Result<(), String> {
        if self.metrics_socket_group.is_some() && !matches!(self.metrics, MetricsAddr::Unix(_)) {
            return Err(format!(
                "metrics_socket_group is the group of a unix: metrics socket; /metrics is served \
                 on TCP {} (protect that with metrics_token_file)",
                self.metrics
            ));
        }
        Ok(())
    }

    /// The `/metrics` token from `metrics_token_file` (`None` when not set); an error when the
    /// file is not root's alone (the agent then refuses to start, or a reload keeps the old one).
    pub fn metrics_token(&self) -> Result<Option<(Token, PathBuf)>, String> {
        self.metrics_token_file
            .as_ref()
            .map(|f| Token::from_file(f).map(|t| (t, f.clone())))
            .transpose()
    }

    /// `socket_mode` as permission bits.
    pub fn mode(&self) -> Result<u32, String> {
        u32::from_str_radix(&self.socket_mode, 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                format!(
                    "socket_mode = {:?}: permission bits in octal, e.g. \"0660\"",
                    self.socket_mode
                )
            })
    }

    fn rules(&self) -> sessions::LaunchRules {
        sessions::LaunchRules {
            known_only: self.known_only,
            allow_observe: self.allow_observe,
            max_sessions_per_user: self.max_sessions_per_user,
            audit: self.audit,
        }
    }
}

/// Runs the agent until SIGTERM/SIGINT.
pub fn main(args: AgentArgs, dirs: &Dirs) -> ExitCode {
    let mut config = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mcp-guard agent: config error: {e}");
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
            eprintln!("mcp-guard agent: config error: {e}");
            return ExitCode::from(EXIT_POLICY);
        }
    }
    // Credentials, CA files and the host id: a sink that cannot work stops the start here.
    let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    let export = match Prepared::new(&config.export, credentials.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mcp-guard agent: config error: {e}");
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
            eprintln!("mcp-guard agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args, config, auth, export, dirs.clone())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-guard agent: {e}");
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
    eprintln!(
        "mcp-guard agent: eBPF programs pinned in {} ({} server(s) guarded from before)",
        config.bpf_dir.display(),
        guard.guarded()
    );
    let (policies, problems) = policies::PolicySet::load(&dirs.policy);
    for p in problems {
        eprintln!("mcp-guard agent: policy not loaded: {p}");
    }
    let listener = bind_socket(&config)?;
    let launcher = Arc::new(sessions::Launcher {
        rules: std::sync::RwLock::new(config.rules()),
        policies: std::sync::Mutex::new(policies),
        dirs: dirs.clone(),
        socket: config.socket.clone(),
        guard: guard.clone(),
        admission: Arc::default(),
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
    eprintln!(
        "mcp-guard agent: serving {}{}, following {}",
        listener.describe(),
        if auth.required() {
            " (bearer token required)"
        } else {
            ""
        },
        db_path(&state_dir).display()
    );
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
        eprintln!(
            "mcp-guard agent: shipping the history to {}",
            exporter.sinks().join(", ")
        );
    }
    let store = Arc::new(std::sync::Mutex::new(store));
    notify("READY=1");

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
                        notify("WATCHDOG=1");
                    }
                    Err(e) => tracing::warn!("store: {e}; retrying"),
                }
            }
            _ = hup.recv() => {
                let problems = launcher.policies.lock().unwrap_or_else(std::sync::PoisonError::into_inner).reload();
                for p in &problems {
                    eprintln!("mcp-guard agent: SIGHUP: {p}");
                }
                eprintln!("mcp-guard agent: policies reloaded ({} problem(s))", problems.len());
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
                    eprintln!("mcp-guard agent: config reloaded");
                }
                Err(e) => eprintln!("mcp-guard agent: SIGHUP: keeping the running config: {e}"),
            }},
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    notify("STOPPING=1");
    eprintln!("mcp-guard agent: stopping");
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

/// Binds the Unix socket (replacing a stale one), with the configured mode and group.
fn bind_socket(config: &Config) -> Result<tokio::net::UnixListener, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = &config.socket;
    let err =
        |what: &str, e: &dyn std::fmt::Display| format!("socket {}: {what}: {e}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err("creating its directory", &e))?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(err("in use", &"another agent listens there"));
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("removing the stale socket", &e)),
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(|e| err("bind", &e))?;
    if let Some(group) = &config.socket_group {
        let gid = nix::unistd::Group::from_name(group)
            .map_err(|e| err("looking up socket_group", &e))?
            .ok_or_else(|| err("socket_group", &format!("no group {group:?}")))?
            .gid;
        nix::unistd::chown(path, None, Some(gid)).map_err(|e| err("chown", &e))?;
    }
    let mode = config.mode()?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| err("chmod", &e))?;
    eprintln!(
        "mcp-guard agent: exec clients connect to {} (mode {:o}{})",
        path.display(),
        mode,
        config
            .socket_group
            .as_ref()
            .map(|g| format!(", group {g}"))
            .unwrap_or_default()
    );
    Ok(listener)
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
            None if e.kind == crate::launch::usage::USAGE => {}
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

/// Tells systemd (`$NOTIFY_SOCKET`, `Type=notify`) a state; nothing when not under systemd.
// Hand-written: the sd-notify crate (0.5) connects an `@name` socket as a file path, not abstract.
fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|sock| {
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            // An abstract socket: the name after '@'.
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)
        } else {
            sock.send_to(state.as_bytes(), &path)
        }
    });
    if let Err(e) = sent {
        tracing::warn!("sd_notify {state}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_unknown_keys() {
        assert_eq!(Config::parse("").expect("empty"), Config::default());
        let c = Config::parse("metrics = \"0.0.0.0:9000\"\npoll_ms = 250\n").expect("valid");
        assert_eq!(c.metrics, MetricsAddr::Tcp(([0, 0, 0, 0], 9000).into()));
        assert_eq!(c.poll_ms, 250);
        let e = Config::parse("metric = \"0.0.0.0:9000\"\n").expect_err("unknown key");
        assert!(e.contains("metric") && e.contains("line 1"), "{e}");
        let e = Config::parse("poll_ms = 0\n").expect_err("zero");
        assert!(e.contains("poll_ms"), "{e}");
    }

    #[test]
    fn metrics_and_session_keys_are_checked() {
        let c = Config::parse(
            "metrics = \"unix:/run/mcp-guard/metrics.sock\"\nmetrics_socket_group = \"adm\"\n\
             metrics_token_file = \"/etc/mcp-guard/metrics.token\"\nmax_sessions_per_user = 4\n",
        )
        .expect("valid");
        assert_eq!(
            c.metrics,
            MetricsAddr::Unix("/run/mcp-guard/metrics.sock".into())
        );
        assert_eq!(c.rules().max_sessions_per_user, 4);
        assert_eq!(Config::default().max_sessions_per_user, 32);
        let tcp_group = Config::parse("metrics_socket_group = \"adm\"\n").expect("parses");
        let e = tcp_group.check_effective().expect_err("a group for TCP");
        assert!(e.contains("metrics_socket_group"), "{e}");
        for (bad, key) in [
            ("max_sessions_per_user = 0\n", "max_sessions_per_user"),
            ("max_sessions_per_user = -1\n", "max_sessions_per_user"),
            ("metrics_token_file = \"token\"\n", "metrics_token_file"),
            ("metrics = \"unix:metrics.sock\"\n", "metrics"),
        ] {
            let e = Config::parse(bad).expect_err(bad);
            assert!(e.contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn the_shipped_sample_config_is_valid() {
        let sample = include_str!("../../packaging/mcp-guard.toml");
        assert_eq!(Config::parse(sample).expect("sample"), Config::default());
    }
}
