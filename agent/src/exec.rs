//! `mcp-guard exec`: wires one server session together (policy → launch → kernel guard → stdio).
//!
//! Steps: load the policy (78 on error); [`launch::prepare`] checks the host and makes the cgroup
//! (77, nothing launched, when an enforcement is missing); record the session's start in the
//! store and start its [`analysis`] (correlation and detection, with or without the kernel
//! guard); start the stage-2 helper from `/proc/self/exe`; once it is in the cgroup run the
//! [`Attach`] seam (the kernel guard, [`guard::hooks`], loads the eBPF programs, attaches them to
//! [`SessionInfo::cgroup_dir`] with the policy's [`kernel_spec::server_spec`] and hands the
//! cgroup's kernel events to the analysis) and only then let the server exec; carry stdio with
//! the [`Pump`] seam (the MCP proxy, [`pump::guarded`], or raw bytes with `--passthrough`); when
//! the server exits, exec is signalled (TERM, INT, HUP) or the client closed stdin and the server
//! did not exit within [`STDIN_EOF_GRACE`], kill the whole tree through the cgroup and remove it;
//! run the [`Finish`] seam (the guard drains the events still in flight); end the analysis,
//! record the session's end, flush the store and say what was lost. Exit status: the server's
//! (signal death → 128 + signal).

use std::{
    any::Any,
    future::Future,
    io,
    os::fd::{AsRawFd, OwnedFd},
    path::{Path, PathBuf},
    pin::Pin,
    process::{ExitCode, Stdio},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
    signal::unix::{SignalKind, signal},
    sync::oneshot,
};

use crate::{
    exit_codes::{EXIT_POLICY, EXIT_UNENFORCEABLE},
    launch::{self, LaunchError, LaunchRequest, stage2},
    quarantine,
};
use mcp_guard_model::dirs::Dirs;
use mcp_guard_model::names::StateKey;
use mcp_guard_model::{SessionRecord, Timestamp};
use mcp_guard_policy::{self as policy, Policy};
use mcp_guard_store::{StoreHandle, StoreWriter, db_path};

pub mod agent_link;
pub mod analysis;
pub mod client;
pub mod client_io;
pub mod guard;
pub mod history;
pub mod kernel_spec;
pub mod proxy_sink;
pub mod pump;
pub mod stderr;
pub mod worker;

/// How long exec waits at the end for the store to commit what the session sent it.
pub const STORE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a server may run on after the client closed its stdin before it is killed.
pub const STDIN_EOF_GRACE: Duration = Duration::from_secs(5);

/// A boxed, non-Send future (the session runs on one thread).
pub type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// What exec knows about a session once the server's cgroup is populated.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    /// The server name.
    pub server: String,
    /// The policy in force.
    pub policy: Policy,
    /// The session's cgroup v2 directory: attach cgroup eBPF programs here.
    pub cgroup_dir: PathBuf,
    /// Its cgroup id (inode; what `bpf_get_current_cgroup_id` returns for the server).
    pub cgroup_id: u64,
    /// Whether enforcement is off (`--observe`).
    pub observe: bool,
    /// Pid of the stage-2 helper (its child init, the server's parent, is already in the cgroup).
    pub helper_pid: u32,
    /// The session id (in the store, events and logs).
    pub session: String,
    /// The server user's home (`~/` in the policy).
    pub home: PathBuf,
    /// The store the session is recorded in.
    pub store: StoreHandle,
    /// The state dir (tool pins live under it).
    pub state_dir: PathBuf,
    /// The session's analysis: where the proxy and the kernel guard send what they see.
    pub analysis: analysis::Link,
    /// Cgroups below `cgroup_dir` the guard registers as part of the server before it runs
    /// (a container's leaf cgroups); empty for the jail.
    pub member_cgroups: Vec<PathBuf>,
    /// The executable the MCP client runs from (`[tools.clients]` `exe`), when known.
    pub client_exe: Option<PathBuf>,
    /// What the history keeps of each call.
    pub audit: crate::mcp::audit::AuditConfig,
    /// The cgroup unix programs keep the Unix-socket promises (where they do not, the jail's
    /// mount view or network namespace does, see [`crate::promises`]).
    pub unix_programs: bool,
}

impl SessionInfo {
    /// Whose state the session uses: its policy's and its server name's.
    pub fn key(&self) -> StateKey {
        StateKey {
            policy: self.policy.name.clone(),
            server: self.server.clone(),
        }
    }
}

/// The kernel-guard seam: called once the jail's init is in the cgroup and before the server
/// execs (no server code has run yet).
/// An `Err` refuses the launch (exit 77, the server never runs). The returned value is kept alive
/// until the session ends, then dropped before the cgroup is removed (e.g. the guard's handle).
pub type Attach =
    Box<dyn FnOnce(SessionInfo) -> LocalFuture<'static, Result<Box<dyn Any>, String>>>;

/// The end seam: runs once the session is over (server and its tree dead, the attach value
/// dropped, the cgroup removed) and before exec records the session's end and flushes the store;
/// e.g. the kernel guard drains the events still in flight.
pub type Finish = Box<dyn FnOnce() -> LocalFuture<'static, ()>>;

/// The server's stdin: a jailed child's pipe or a container's attach stream.
pub type ServerIn = Box<dyn tokio::io::AsyncWrite + Unpin + Send>;
/// The server's stdout.
pub type ServerOut = Box<dyn tokio::io::AsyncRead + Unpin + Send>;

/// The server's stdio, handed to the pump.
pub struct ServerStdio {
    /// The server's stdin (drop it to send EOF).
    pub stdin: ServerIn,
    /// The server's stdout.
    pub stdout: ServerOut,
    /// Send when the client closed exec's stdin (starts the [`STDIN_EOF_GRACE`] timer).
    pub client_eof: oneshot::Sender<()>,
    /// The session the stdio belongs to.
    pub session: SessionInfo,
    /// The injected secrets' values, which the proxy redacts from server output.
    pub secrets: SecretValues,
}

impl std::fmt::Debug for ServerStdio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerStdio")
            .field("session", &self.session.session)
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

/// Secret values by variable name; `Debug` never prints them.
#[derive(Clone, Default)]
pub struct SecretValues(pub Vec<(String, String)>);

impl std::fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| name))
            .finish()
    }
}

/// The stdio seam: carries exec's stdin/stdout to and from the server. Resolves when the
/// server's stdout reaches EOF (an `Err` means the client is gone: the session ends).
/// The server's stderr is exec's stderr (inherited, not pumped).
pub type Pump = Box<dyn FnOnce(ServerStdio) -> LocalFuture<'static, io::Result<()>>>;

/// The seams a session is wired with.
pub struct Hooks {
    /// Kernel guard attachment (`None`: none).
    pub attach: Option<Attach>,
    /// After the session (`None`: nothing to do).
    pub finish: Option<Finish>,
    /// The stdio carrier.
    pub pump: Pump,
    /// The `mcp-guard` binary re-executed as the stage-2 helper: `/proc/self/exe` by default;
    /// programs embedding exec (and tests) point it at the mcp-guard binary.
    pub helper: PathBuf,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("attach", &self.attach.is_some())
            .field("finish", &self.finish.is_some())
            .finish_non_exhaustive()
    }
}

impl Hooks {
    /// A real session's seams: the kernel guard from `source`, the MCP proxy on stdio (raw
    /// bytes with `passthrough`).
    pub fn guarded(source: guard::GuardSource, passthrough: bool) -> Hooks {
        let (attach, finish) = guard::hooks(source);
        let pump: Pump = if passthrough {
            Box::new(|io| Box::pin(self::passthrough(io)))
        } else {
            Box::new(|io| Box::pin(pump::guarded(io)))
        };
        Hooks {
            attach: Some(attach),
            finish: Some(finish),
            pump,
            ..Hooks::default()
        }
    }
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            attach: None,
            finish: None,
            pump: Box::new(|io| Box::pin(passthrough(io))),
            helper: PathBuf::from("/proc/self/exe"),
        }
    }
}

/// Byte-for-byte passthrough: exec stdin → server stdin (EOF propagated), server stdout → exec
/// stdout (flushed per read so replies are not held back).
pub async fn passthrough(io: ServerStdio) -> io::Result<()> {
    let ServerStdio {
        mut stdin,
        mut stdout,
        client_eof,
        ..
    } = io;
    let upstream = async move {
        let mut client = client_io::stdin();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    // The server closed its stdin: nothing more can be delivered, but its
                    // stdout must still be carried.
                    if stdin.write_all(&buf[..n]).await.is_err() {
                        return std::future::pending::<()>().await;
                    }
                }
            }
        }
        drop(stdin);
        let _ = client_eof.send(());
        // Never completes: the pump ends with the downstream half.
        std::future::pending::<()>().await;
    };
    let downstream = async move {
        let mut client = client_io::stdout();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = stdout.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            client.write_all(&buf[..n]).await?;
            client.flush().await?;
        }
    };
    tokio::pin!(upstream);
    tokio::select! {
        r = downstream => r,
        () = &mut upstream => Ok(()),
    }
}

/// `exec` as the CLI calls it.
#[derive(Clone, Debug)]
pub struct ExecArgs {
    /// `--policy`.
    pub policy: Option<String>,
    /// The policy's text as the agent validated it (then `policy` is its file's path).
    pub policy_text: Option<String>,
    /// `--name`.
    pub name: Option<String>,
    /// `--observe`.
    pub observe: bool,
    /// `--passthrough`: raw stdio instead of the MCP proxy.
    pub passthrough: bool,
    /// `--learn`: learning mode, whatever the policy says.
    pub learn: bool,
    /// The server command.
    pub command: Vec<String>,
    /// The agent's client the session runs for (a session worker); `None`: exec's own user.
    pub caller: Option<launch::identity::Caller>,
    /// The executable of the MCP client that started exec ([`crate::client_exe`]), when known.
    pub client_exe: Option<PathBuf>,
    /// What the history keeps of calls unless the policy says otherwise (the host config's
    /// `[audit]`).
    pub audit: crate::history::AuditDefaults,
}

/// How `exec` finds the agent.
#[derive(Clone, Debug, Default)]
pub struct AgentRoute {
    /// `--agent-socket` (else `$MCP_GUARD_AGENT_SOCKET`, else the default path).
    pub socket: Option<PathBuf>,
    /// `--standalone`: never through the agent.
    pub standalone: bool,
}

/// Where a session is recorded: its id and the store writer. Made before the hooks so a seam
/// (the kernel guard, the proxy) can record under the same session id.
#[derive(Clone, Debug)]
pub struct Recording {
    /// The session id ([`mcp_guard_model::new_session_id`]).
    pub session: String,
    /// The writer of `<state_dir>/mcp-guard.db`.
    pub store: StoreHandle,
    /// The state dir.
    pub state_dir: PathBuf,
}

impl Recording {
    /// A fresh session id and a store writer for the state dir (opened lazily: never fails here;
    /// what cannot be written is counted and reported when the session ends).
    pub fn new(state_dir: &std::path::Path) -> Self {
        Self::with_retention(state_dir, None)
    }

    /// [`Recording::new`] whose writer also applies `retention` to the store (a standalone
    /// exec does: no agent does it for the host).
    pub fn with_retention(
        state_dir: &std::path::Path,
        retention: Option<mcp_guard_store::Retention>,
    ) -> Self {
        let config = mcp_guard_store::WriterConfig {
            retention,
            ..Default::default()
        };
        Recording {
            session: mcp_guard_model::new_session_id(),
            store: StoreWriter::spawn_with(db_path(state_dir), config),
            state_dir: state_dir.to_path_buf(),
        }
    }
}

/// Runs `mcp-guard exec`: through the agent when it listens (the session then runs in the
/// agent's session worker, see [`client`]), else standalone here: the eBPF kernel guard on the
/// attach and finish seams, the MCP proxy on stdio (raw bytes with `--passthrough`).
pub fn main(mut args: ExecArgs, dirs: &Dirs, route: &AgentRoute) -> ExitCode {
    if let Some(code) = bad_name(args.name.as_deref()) {
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    if !route.standalone {
        let socket = crate::ipc::socket_path(route.socket.as_deref());
        if let Some(stream) = client::connect(&socket) {
            let request = crate::ipc::ExecRequest {
                policy: args.policy,
                name: args.name,
                observe: args.observe,
                passthrough: args.passthrough,
                learn: args.learn,
                command: args.command,
                env: std::env::vars().collect(),
                umask: Some(client::umask()),
            };
            return ExitCode::from(client::run(stream, request));
        }
    }
    // Through the agent, the agent reads it itself (the client's word is not taken).
    args.client_exe = crate::client_exe::of_own_parent();
    // Standalone, the host's history settings are this process's to apply.
    let (host, warning) = crate::history::HostHistory::for_exec();
    if let Some(w) = warning {
        say(&format!("WARNING: host config: {w}"));
    }
    args.audit = host.audit;
    let recording = Recording::with_retention(&dirs.state, host.store.retention());
    let hooks = Hooks::guarded(guard::GuardSource::Local, args.passthrough);
    run_recorded(args, dirs, recording, hooks)
}

/// Runs one session with the given seams, recorded under a fresh session id in the state dir's
/// store; returns exec's exit status.
pub fn run(args: ExecArgs, dirs: &Dirs, hooks: Hooks) -> ExitCode {
    run_recorded(args, dirs, Recording::new(&dirs.state), hooks)
}

/// [`run`] recorded under `recording`.
pub fn run_recorded(args: ExecArgs, dirs: &Dirs, recording: Recording, hooks: Hooks) -> ExitCode {
    ExitCode::from(u8::try_from(run_status(args, dirs, recording, hooks)).unwrap_or(1))
}

/// `--name` that is not a server name: says why; exec's status (78).
fn bad_name(name: Option<&str>) -> Option<i32> {
    let why = mcp_guard_model::names::check(name?).err()?;
    say(&format!(
        "--name: {why}\n(the name keys the server's state files, cgroup, records and metrics)"
    ));
    Some(i32::from(EXIT_POLICY))
}

/// [`run_recorded`], returning the status as a number.
pub fn run_status(args: ExecArgs, dirs: &Dirs, recording: Recording, hooks: Hooks) -> i32 {
    if let Some(code) = bad_name(args.name.as_deref()) {
        return code;
    }
    let loaded = match &args.policy_text {
        Some(text) => policy::parse(text, args.policy.as_deref().map(Path::new)),
        None => policy::load(args.policy.as_deref(), &dirs.policy),
    };
    let mut policy = match loaded {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mcp-guard: policy error:\n{e}");
            return i32::from(EXIT_POLICY);
        }
    };
    policy.detect.learn |= args.learn;
    // One thread: the helper's PR_SET_PDEATHSIG fires when the thread that forked it exits,
    // so it must be forked by a thread that lives as long as exec.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mcp-guard: cannot start the runtime: {e}");
            return i32::from(EXIT_UNENFORCEABLE);
        }
    };
    let code = rt.block_on(session(args, policy, recording, hooks));
    // The stdin reader may be blocked in read(2) on a thread; do not wait for it.
    rt.shutdown_background();
    code
}

/// Why the session may not start, from the state dir: exec's status (and says why), `None`
/// when it may. Checked once the session's cgroup exists (a quarantine writes its marker before
/// it sweeps the cgroups, so a launch racing with it is refused here or killed by the sweep).
/// - The state dir holds pins, profiles, quarantine markers and the store: one this user cannot
///   use, or another user could plant files or symlinks in, is a configuration error (78).
/// - A quarantine of the server's name or of its policy refuses it (77), saying how to lift it.
fn refused_by_state(state_dir: &std::path::Path, key: &StateKey) -> Option<i32> {
    if let Err(e) = mcp_guard_statefs::StateDir::create(state_dir) {
        say(&format!(
            "state dir: {e}\n(--state-dir / MCP_GUARD_STATE_DIR: it must be this user's or \
             root's, and writable by no one else)"
        ));
        return Some(i32::from(EXIT_POLICY));
    }
    let q = quarantine::check(state_dir, key)?;
    let what = if q.server == key.server {
        format!("server {} is quarantined", key.server)
    } else {
        format!(
            "policy {} is quarantined with server {}, which ran under it",
            key.policy, q.server
        )
    };
    say(&format!(
        "{what} since {}{}: refusing to launch; `mcp-guard release {}` lifts it",
        q.since,
        q.reason.map(|r| format!(" ({r})")).unwrap_or_default(),
        q.server
    ));
    Some(i32::from(EXIT_UNENFORCEABLE))
}

/// Writes `msg` to stderr, each line prefixed `mcp-guard: `, with the session's injected
/// values redacted ([`crate::say::for_logs`]).
pub(crate) fn say(msg: &str) {
    let msg = crate::say::for_logs(msg.as_bytes());
    for line in String::from_utf8_lossy(&msg).lines() {
        eprintln!("mcp-guard: {line}");
    }
}

/// With `--passthrough` nothing reads the server's stdout: say so when secrets were injected
/// (its stderr is still redacted).
fn warn_passthrough(passthrough: bool, secrets: &[(String, String)]) {
    if passthrough && !secrets.is_empty() {
        say(
            "WARNING: --passthrough: the server's output is not read, so injected secrets are NOT \
             redacted from its stdout",
        );
    }
}

/// What a session's secrets are redacted with: its writers' store handle from now on (values
/// and secret rules), its log lines (values), and the server's stderr (values, the policy's PII
/// kinds and secret rules).
fn redaction(
    policy: &Policy,
    secrets: &[(String, String)],
    store: StoreHandle,
) -> (StoreHandle, Option<stderr::LineRedactor>) {
    if let Some(s) = mcp_guard_model::redact::Scrubber::new(secrets) {
        crate::say::install_for_logs(s);
    }
    let config = crate::mcp::secrets::SecretConfig::for_policy(&policy.mcp, secrets.to_vec());
    let lines = match stderr::LineRedactor::new(&config) {
        Ok(l) => Some(l),
        Err(e) => {
            say(&format!("cannot compile the stderr redactor: {e}"));
            None
        }
    };
    let for_store = match history::store_redactor(&config) {
        Ok(r) => Some(r),
        Err(e) => {
            // Nothing is recorded unredacted: the session is refused (as without `lines`).
            say(&format!("cannot compile the records' secret rules: {e}"));
            return (store, None);
        }
    };
    (store.redacting(for_store), lines)
}

async fn session(args: ExecArgs, policy: Policy, recording: Recording, mut hooks: Hooks) -> i32 {
    let server = args.name.clone().unwrap_or_else(|| policy.name.clone());
    let observe = args.observe || policy.enforcement.observe;
    if args.passthrough && policy.has_mcp_rules() {
        say(&format!(
            "policy {} has [tools] or [mcp] rules, which only the MCP proxy can apply: \
             refusing --passthrough (fail closed); drop --passthrough or those rules",
            policy.name
        ));
        return i32::from(EXIT_UNENFORCEABLE);
    }
    // Registered before anything starts so a signal during launch is not lost.
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        say("cannot install signal handlers");
        return i32::from(EXIT_UNENFORCEABLE);
    };
    if launch::container::wanted(&policy) {
        return container_session(
            args,
            policy,
            server,
            observe,
            recording,
            hooks,
            (&mut term, &mut int, &mut hup),
        )
        .await;
    }
    let prepared = match launch::prepare(&LaunchRequest {
        policy: &policy,
        server: &server,
        command: &args.command,
        observe,
        state_dir: Some(&recording.state_dir),
        caller: args.caller.as_ref(),
    }) {
        Ok(p) => p,
        Err(e) => {
            say(&e.to_string());
            return match e {
                LaunchError::Unenforceable(_) => i32::from(EXIT_UNENFORCEABLE),
                LaunchError::Config(_) => i32::from(EXIT_POLICY),
                LaunchError::NotFound(_) => 127,
            };
        }
    };
    for w in &prepared.warnings {
        say(&format!("WARNING: {w}"));
    }
    tracing::info!(
        "server {server}: cgroup {}, running as {} ({})",
        prepared.cgroup.as_ref().map_or_else(
            || "none (not root)".into(),
            |c| c.v2_dir().display().to_string()
        ),
        prepared.spec.identity.name,
        prepared.spec.identity.why
    );
    let cgroup = prepared.cgroup;
    // A per-session uid stays this session's until exec returns.
    let _lease = prepared.lease;
    let remove = |cgroup: &Option<launch::cgroup::Cgroup>| {
        if let Some(Err(e)) = cgroup.as_ref().map(launch::cgroup::Cgroup::kill_and_remove) {
            say(&format!("cleanup: {e}"));
        }
    };
    let key = StateKey {
        policy: policy.name.clone(),
        server: server.clone(),
    };
    if let Some(code) = refused_by_state(&recording.state_dir, &key) {
        remove(&cgroup);
        return code;
    }
    if cgroup.is_none() {
        // Not root: no cgroup to guard, nothing of the kernel guard can run (said above).
        hooks.attach = None;
        hooks.finish = None;
    }
    let Recording {
        session,
        store,
        state_dir,
    } = recording;
    warn_passthrough(args.passthrough, &prepared.secrets);
    let (store, stderr_lines) = redaction(&policy, &prepared.secrets, store);
    let Some(stderr_lines) = stderr_lines else {
        remove(&cgroup);
        return i32::from(EXIT_UNENFORCEABLE);
    };
    let started = SessionRecord {
        session: session.clone(),
        server: server.clone(),
        started_at: Timestamp::now(),
        ended_at: None,
        command: prepared.spec.argv.clone(),
        policy: policy
            .source
            .as_ref()
            .map_or_else(|| policy.name.clone(), |p| p.display().to_string()),
        // exec owns the session and lives exactly as long: what `servers_running` checks.
        pid: Some(std::process::id()),
        observe,
        exit_status: None,
        facts: mcp_guard_model::ServerFacts::default(),
    };
    store.send(started.clone());
    let audit = crate::history::audit_config(&policy.audit, &args.audit);
    let cgroup_dir = cgroup
        .as_ref()
        .map(|c| c.v2_dir().to_path_buf())
        .unwrap_or_default();
    let (analysis, link) = analysis::start(analysis::Setup {
        policy: &policy,
        server: &server,
        session: &session,
        home: &prepared.spec.identity.home,
        state_dir: &state_dir,
        store: store.clone(),
        cgroup_dir: cgroup_dir.clone(),
        observe,
    });
    let mut info = SessionInfo {
        server,
        policy,
        cgroup_dir,
        cgroup_id: cgroup.as_ref().and_then(|c| c.id().ok()).unwrap_or(0),
        observe,
        helper_pid: 0,
        session,
        home: prepared.spec.identity.home.clone(),
        store: store.clone(),
        state_dir,
        analysis: link,
        member_cgroups: Vec::new(),
        client_exe: args.client_exe.clone(),
        audit,
        unix_programs: crate::promises::uses(
            &prepared.promises,
            crate::promises::Mechanism::CgroupUnix,
        ),
    };
    let finish = hooks.finish.take();
    let mut stderr_task = None;
    let code = drive(
        &prepared.spec,
        &mut info,
        hooks,
        (
            SecretValues(prepared.secrets.clone()),
            stderr_lines,
            &mut stderr_task,
        ),
        (&mut term, &mut int, &mut hup),
    )
    .await;
    drain_stderr(stderr_task).await;
    if let Some(cg) = cgroup.as_ref() {
        let peaks = launch::usage::peaks(cg);
        if let Some(e) = launch::usage::event(peaks, &started.server, &started.session) {
            store.send(e);
        }
    }
    remove(&cgroup);
    if let Some(finish) = finish {
        finish().await;
    }
    analysis.finish().await;
    store.send(SessionRecord {
        ended_at: Some(Timestamp::now()),
        exit_status: Some(code),
        ..started
    });
    report_store(&store);
    code
}

/// [`session`] with the container backend ([`launch::container`]): the same recording, guard,
/// pump and supervision, the server in a container whose cgroup is below the session's.
async fn container_session(
    args: ExecArgs,
    policy: Policy,
    server: String,
    observe: bool,
    recording: Recording,
    mut hooks: Hooks,
    signals: Signals<'_>,
) -> i32 {
    use launch::container as ctr;
    let Recording {
        session,
        store,
        state_dir,
    } = recording;
    if !policy.pin.is_empty() || policy.pin.signature.is_some() {
        // The pins name host files; a container's content is pinned by its image digest.
        say(
            "[pin] applies to the jail; with backend = \"container\" the image digest pins \
             what runs: remove [pin] from the policy (refusing to launch rather than ignore it)",
        );
        return i32::from(EXIT_POLICY);
    }
    let req = LaunchRequest {
        policy: &policy,
        server: &server,
        command: &args.command,
        observe,
        state_dir: None,
        caller: args.caller.as_ref(),
    };
    let prepared = match ctr::prepare(&req, &session).await {
        Ok(p) => p,
        Err(e) => {
            say(&e.to_string());
            return match e {
                LaunchError::Unenforceable(_) => i32::from(EXIT_UNENFORCEABLE),
                LaunchError::Config(_) => i32::from(EXIT_POLICY),
                LaunchError::NotFound(_) => 127,
            };
        }
    };
    for w in &prepared.warnings {
        say(&format!("WARNING: {w}"));
    }
    let key = StateKey {
        policy: policy.name.clone(),
        server: server.clone(),
    };
    warn_passthrough(args.passthrough, &prepared.secrets);
    let (store, stderr_lines) = redaction(&policy, &prepared.secrets, store);
    let refused = refused_by_state(&state_dir, &key).or_else(|| {
        stderr_lines
            .is_none()
            .then_some(i32::from(EXIT_UNENFORCEABLE))
    });
    if let Some(code) = refused {
        let cleaned = launch::cgroup::Mounts::discover()
            .and_then(|mounts| ctr::remove_tree(&mounts, prepared.cgroup.v2_dir()));
        if let Err(e) = cleaned {
            say(&format!("cleanup: {e}"));
        }
        return code;
    }
    let started = SessionRecord {
        session: session.clone(),
        server: server.clone(),
        started_at: Timestamp::now(),
        ended_at: None,
        command: prepared.body.cmd.clone().unwrap_or_default(),
        policy: policy
            .source
            .as_ref()
            .map_or_else(|| policy.name.clone(), |p| p.display().to_string()),
        pid: Some(std::process::id()),
        observe,
        exit_status: None,
        facts: mcp_guard_model::ServerFacts::default(),
    };
    store.send(started.clone());
    let audit = crate::history::audit_config(&policy.audit, &args.audit);
    let (analysis, link) = analysis::start(analysis::Setup {
        policy: &policy,
        server: &server,
        session: &session,
        home: &prepared.home,
        state_dir: &state_dir,
        store: store.clone(),
        cgroup_dir: prepared.cgroup.v2_dir().to_path_buf(),
        observe,
    });
    let mut info = SessionInfo {
        server,
        policy,
        cgroup_dir: prepared.cgroup.v2_dir().to_path_buf(),
        cgroup_id: prepared.cgroup.id().unwrap_or(0),
        observe,
        helper_pid: 0,
        session: session.clone(),
        home: prepared.home.clone(),
        store: store.clone(),
        state_dir,
        analysis: link,
        member_cgroups: Vec::new(),
        client_exe: args.client_exe.clone(),
        audit,
        // The container's own network namespace and mounts are not the jail's: as before, the
        // unix programs are what judge its sockets.
        unix_programs: true,
    };
    let finish = hooks.finish.take();
    let name = format!("mcp-guard-{session}");
    let (code, id) =
        drive_container(&prepared, &mut info, hooks, (&name, stderr_lines), signals).await;
    if let Some(id) = id
        && let Err(e) = ctr::remove(&prepared.docker, &id).await
    {
        say(&format!("cleanup: {e}"));
    }
    let cleaned = launch::cgroup::kill_all(&info.cgroup_dir).and_then(|()| {
        let mounts = launch::cgroup::Mounts::discover()?;
        ctr::remove_tree(&mounts, &info.cgroup_dir)
    });
    if let Err(e) = cleaned {
        say(&format!("cleanup: {e}"));
    }
    if let Some(finish) = finish {
        finish().await;
    }
    analysis.finish().await;
    store.send(SessionRecord {
        ended_at: Some(Timestamp::now()),
        exit_status: Some(code),
        ..started
    });
    report_store(&store);
    code
}

/// Creates, guards, attaches and starts the container, then supervises it. Returns exec's status
/// and the container id when one was created (the caller removes it).
async fn drive_container(
    prepared: &launch::container::ContainerPrepared,
    info: &mut SessionInfo,
    hooks: Hooks,
    (name, stderr_lines): (&str, Option<stderr::LineRedactor>),
    signals: Signals<'_>,
) -> (i32, Option<String>) {
    use launch::container as ctr;
    let fail = |msg: String| {
        say(&msg);
        i32::from(EXIT_UNENFORCEABLE)
    };
    let docker = &prepared.docker;
    let id = match ctr::create(docker, prepared.body.clone(), name).await {
        Ok(id) => id,
        Err(e) => return (fail(e), None),
    };
    let leaves = ctr::leaf_candidates(&info.cgroup_dir, &id);
    for leaf in &leaves {
        if let Err(e) = std::fs::create_dir(leaf)
            && e.kind() != io::ErrorKind::AlreadyExists
        {
            return (
                fail(format!("creating cgroup {}: {e}", leaf.display())),
                Some(id),
            );
        }
    }
    info.member_cgroups.clone_from(&leaves);
    // The seam: the cgroups exist, nothing of the server runs yet.
    let _guard: Option<Box<dyn Any>> = match hooks.attach {
        Some(attach) => match attach(info.clone()).await {
            Ok(g) => Some(g),
            Err(e) => {
                return (
                    fail(format!(
                        "kernel guard: {e}\nrefusing to launch (fail closed)"
                    )),
                    Some(id),
                );
            }
        },
        None => None,
    };
    let (input, output, errors, output_closed) = match ctr::attach(docker, &id).await {
        Ok(io) => io,
        Err(e) => return (fail(e), Some(id)),
    };
    let stderr_task =
        stderr_lines.map(|lines| tokio::spawn(stderr::carry(errors, tokio::io::stderr(), lines)));
    // podman's attach already starts a created container: 304 (already started) is fine.
    match docker.start_container(&id, None).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 304, ..
        }) => {}
        Err(e) => return (fail(format!("starting the container: {e}")), Some(id)),
    }
    // The container must be where the guard looks (a short-lived server may be gone already).
    if let Ok(pid) = ctr::pid(docker, &id).await {
        info.helper_pid = pid;
        let v2root = info
            .cgroup_dir
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        match ctr::v2_cgroup_of(pid, &v2root) {
            Some(cg) if leaves.contains(&cg) => {}
            Some(cg) => {
                return (
                    fail(format!(
                        "the engine put the container in cgroup {}, not one mcp-guard registered \
                         ({}): its events would not be seen; refusing to run it (fail closed)",
                        cg.display(),
                        leaves
                            .iter()
                            .map(|l| l.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                    Some(id),
                );
            }
            None => {}
        }
    }
    let secrets = SecretValues(prepared.secrets.clone());
    let exit = Box::pin(ctr::wait(docker.clone(), id.clone(), output_closed));
    let (kill_docker, kill_id) = (docker.clone(), id.clone());
    let kill: KillTree = Box::new(move || {
        Box::pin(async move {
            if let Err(e) = ctr::remove(&kill_docker, &kill_id).await {
                say(&format!("cleanup: {e}"));
            }
        })
    });
    let code = supervise(
        info,
        hooks.pump,
        (Box::new(input), Box::new(output)),
        secrets,
        exit,
        kill,
        signals,
    )
    .await;
    drain_stderr(stderr_task).await;
    (code, Some(id))
}

/// Waits for the store to commit the session and says on stderr what it could not keep.
fn report_store(store: &StoreHandle) {
    let flushed = store.flush(STORE_FLUSH_TIMEOUT);
    let stats = store.stats();
    let lost = stats.dropped_queue_full + stats.dropped_write_failed;
    if lost > 0 || !flushed {
        let recorded = if stats.lost_recorded >= lost {
            "; all of them are recorded as lost events".to_string()
        } else {
            format!(
                "; {} of them are recorded as lost events (the store refused the rest)",
                stats.lost_recorded
            )
        };
        say(&format!(
            "WARNING: the store {} did not keep everything: {} records dropped (queue full {}, \
             write failed {}){recorded}{}{}",
            store.path().display(),
            lost,
            stats.dropped_queue_full,
            stats.dropped_write_failed,
            stats
                .last_error
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default(),
            if flushed {
                String::new()
            } else {
                format!("; not flushed within {}s", STORE_FLUSH_TIMEOUT.as_secs())
            }
        ));
    }
}

type Signals<'a> = (
    &'a mut tokio::signal::unix::Signal,
    &'a mut tokio::signal::unix::Signal,
    &'a mut tokio::signal::unix::Signal,
);

/// Starts the helper and runs the session until it ends; the caller removes the cgroup.
async fn drive(
    spec: &launch::JailSpec,
    info: &mut SessionInfo,
    hooks: Hooks,
    (secrets, stderr_lines, stderr_task): (
        SecretValues,
        stderr::LineRedactor,
        &mut Option<tokio::task::JoinHandle<()>>,
    ),
    (term, int, hup): Signals<'_>,
) -> i32 {
    let fail = |msg: String| {
        say(&msg);
        i32::from(EXIT_UNENFORCEABLE)
    };
    let (ours, theirs) = match std::os::unix::net::UnixStream::pair() {
        Ok(p) => p,
        Err(e) => return fail(format!("socketpair: {e}")),
    };
    let theirs: OwnedFd = theirs.into();
    let theirs_raw = theirs.as_raw_fd();
    let parent_pid = std::process::id().cast_signed();
    let mut cmd = tokio::process::Command::new(&hooks.helper);
    cmd.arg(stage2::SUBCOMMAND)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let unprivileged = spec.unprivileged;
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe raw
    // syscalls (setsid, dup2, prctl, getppid) on values captured before the fork.
    unsafe {
        cmd.pre_exec(move || {
            // No cgroup: the server's tree is this process group, in a session of its own
            // without exec's terminal (the server stays in it; see stage2's `server`).
            if unprivileged && libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::dup2(theirs_raw, stage2::CONTROL_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // exec died between fork and prctl: do not outlive it.
            if libc::getppid() != parent_pid {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail(format!("starting the jail helper: {e}")),
    };
    drop(theirs);
    info.helper_pid = child.id().unwrap_or(0);
    // The helper's and the server's stderr, redacted on its way to exec's (the caller drains
    // it once the session is over).
    *stderr_task = child
        .stderr
        .take()
        .map(|from| tokio::spawn(stderr::carry(from, tokio::io::stderr(), stderr_lines)));
    let mut ctl = match ours
        .set_nonblocking(true)
        .and_then(|()| UnixStream::from_std(ours))
    {
        Ok(s) => s,
        Err(e) => return fail(format!("control socket: {e}")),
    };
    let json = match serde_json::to_vec(spec) {
        Ok(j) => j,
        Err(e) => return fail(format!("encoding the jail spec: {e}")),
    };
    let mut msg = u32::try_from(json.len())
        .unwrap_or(u32::MAX)
        .to_le_bytes()
        .to_vec();
    msg.extend_from_slice(&json);
    let mut ready = [0u8; 1];
    if let Err(e) = async {
        ctl.write_all(&msg).await?;
        ctl.read_exact(&mut ready).await
    }
    .await
    {
        let mut rest = Vec::new();
        let _ = ctl.read_to_end(&mut rest).await;
        return match stage2::outcome(&rest) {
            stage2::Outcome::Failed(code, m) => {
                say(&m);
                code
            }
            stage2::Outcome::Started => fail(format!("jail helper: {e}")),
        };
    }
    if ready[0] != stage2::READY {
        let mut rest = ready.to_vec();
        let _ = ctl.read_to_end(&mut rest).await;
        if let stage2::Outcome::Failed(code, m) = stage2::outcome(&rest) {
            say(&m);
            return code;
        }
        return fail("jail helper: unexpected reply".into());
    }

    // The seam: the helper (and so everything the server will be) is in the cgroup.
    let _guard: Option<Box<dyn Any>> = match hooks.attach {
        Some(attach) => match attach(info.clone()).await {
            Ok(g) => Some(g),
            Err(e) => {
                return fail(format!(
                    "kernel guard: {e}\nrefusing to launch (fail closed)"
                ));
            }
        },
        None => None,
    };
    let mut rest = Vec::new();
    let launched = async {
        ctl.write_all(&[stage2::GO]).await?;
        ctl.read_to_end(&mut rest).await
    }
    .await;
    match (launched, stage2::outcome(&rest)) {
        (Ok(_), stage2::Outcome::Started) => {}
        (_, stage2::Outcome::Failed(code, m)) => {
            say(&m);
            return code;
        }
        (Err(e), _) => return fail(format!("jail helper: {e}")),
    }

    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return fail("server stdio missing".into());
    };
    let exit = Box::pin(async move {
        use std::os::unix::process::ExitStatusExt;
        child.wait().await.ok().map(|s| {
            s.code()
                .or_else(|| s.signal().map(|sig| 128 + sig))
                .unwrap_or(1)
        })
    });
    let cgroup_dir = info.cgroup_dir.clone();
    let group = (spec.unprivileged && info.helper_pid != 0)
        .then(|| nix::unistd::Pid::from_raw(i32::try_from(info.helper_pid).unwrap_or(0)));
    let kill: KillTree = Box::new(move || {
        Box::pin(async move {
            // Whatever is left (daemonized grandchildren, or everything when exec ends it).
            let killed = match group {
                Some(pgid) => nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL)
                    .or_else(|e| {
                        if e == nix::errno::Errno::ESRCH {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                    .map_err(std::io::Error::from),
                None => launch::cgroup::kill_all(&cgroup_dir),
            };
            if let Err(e) = killed {
                say(&format!("cleanup: {e}"));
            }
        })
    });
    supervise(
        info,
        hooks.pump,
        (Box::new(stdin), Box::new(stdout)),
        secrets,
        exit,
        kill,
        (term, int, hup),
    )
    .await
}

/// Waits (briefly: every writer is dead by now) for the server's stderr to be written out.
async fn drain_stderr(task: Option<tokio::task::JoinHandle<()>>) {
    if let Some(task) = task {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
}

/// Kills everything the server is (called once, when the session ends).
type KillTree = Box<dyn FnOnce() -> LocalFuture<'static, ()>>;

/// Runs the pump and waits until the session ends: the server exits (`exit` resolves to its
/// status), the client goes away, exec is signalled, or the client closed stdin and the server
/// outlived [`STDIN_EOF_GRACE`]. Then kills the server's tree, drains the pump and returns exec's
/// status. Shared by the jail and the container backend.
async fn supervise(
    info: &SessionInfo,
    pump: Pump,
    (stdin, stdout): (ServerIn, ServerOut),
    secrets: SecretValues,
    mut exit: LocalFuture<'static, Option<i32>>,
    kill: KillTree,
    (term, int, hup): Signals<'_>,
) -> i32 {
    let (eof_tx, mut eof_rx) = oneshot::channel();
    let mut pump = pump(ServerStdio {
        stdin,
        stdout,
        client_eof: eof_tx,
        session: info.clone(),
        secrets,
    });
    let mut pump_done = false;
    let mut eof_seen = false;
    let grace = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(grace);
    // Why the session ended, if exec ended it: the status to report.
    let mut ended_by: Option<i32> = None;
    let mut exited = false;
    let status = loop {
        tokio::select! {
            s = &mut exit => { exited = true; break s }
            r = &mut pump, if !pump_done => {
                pump_done = true;
                if let Err(e) = r {
                    // The client went away (stdout closed): nobody can use the server.
                    tracing::info!("client gone: {e}");
                    ended_by = Some(128 + libc::SIGPIPE);
                    break None;
                }
            }
            _ = &mut eof_rx, if !eof_seen => {
                eof_seen = true;
                grace.as_mut().reset(tokio::time::Instant::now() + STDIN_EOF_GRACE);
            }
            () = &mut grace, if eof_seen => {
                say(&format!(
                    "the client closed stdin and the server did not exit within {}s: killing it",
                    STDIN_EOF_GRACE.as_secs()
                ));
                ended_by = Some(128 + libc::SIGKILL);
                break None;
            }
            _ = term.recv() => { ended_by = Some(128 + libc::SIGTERM); break None; }
            _ = int.recv() => { ended_by = Some(128 + libc::SIGINT); break None; }
            _ = hup.recv() => { ended_by = Some(128 + libc::SIGHUP); break None; }
        }
    };
    kill().await;
    let status = match status {
        Some(s) => Some(s),
        None if !exited => exit.await,
        None => None,
    };
    // All writers are dead now: the pump drains what the server wrote and sees EOF.
    if !pump_done {
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut pump).await;
    }
    drop(pump);
    ended_by.or(status).unwrap_or(1)
}
