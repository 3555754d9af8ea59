//! `mcp-guard exec`: wires one server session together (policy → launch → kernel guard → stdio).
//!
//! Steps: load the policy (78 on error); [`launch::prepare`] checks the host and makes the cgroup
//! (77, nothing launched, when an enforcement is missing); record the session's start in the
//! store and start its [`analysis`] (correlation and detection, with or without the kernel
//! guard); start the stage-2 helper from `/proc/self/exe`; once it is in the cgroup run the
//! [`Attach`] seam (the kernel guard, [`guard::hooks`], loads the eBPF programs, attaches them to
//! [`SessionInfo::cgroup_dir`] with the policy's [`kernel_spec::server_spec`] and hands the
//! cgroup's kernel events to the analysis) and only then let the server exec; carry stdio with
//! the [`Pump`] seam (the MCP proxy, [`pump::proxied`], or raw bytes with `--passthrough`); when
//! the server exits, exec is signalled (TERM, INT, HUP) or the client closed stdin and the server
//! did not exit within [`STDIN_EOF_GRACE`], kill the whole tree through the cgroup and remove it;
//! run the [`Finish`] seam (the guard drains the events still in flight); end the analysis,
//! record the session's end, flush the store and say what was lost. Exit status: the server's
//! (signal death → 128 + signal).

use std::{
    any::Any,
    future::Future,
    io,
    path::{Path, PathBuf},
    pin::Pin,
    process::ExitCode,
    time::Duration,
};

use tokio::{
    signal::unix::{SignalKind, signal},
    sync::oneshot,
};

use crate::exit_codes::{EXIT_POLICY, EXIT_UNENFORCEABLE};
use crate::say::say_as_is;
use mcp_guard_launch as launch;
use mcp_guard_model::dirs::Dirs;
use mcp_guard_model::names::StateKey;
use mcp_guard_policy::{self as policy, Policy};
use mcp_guard_store::{StoreHandle, StoreWriter, db_path};

pub mod agent_link;
pub mod analysis;
pub mod client;
pub mod client_io;
mod container_session;
pub mod guard;
pub mod history;
mod jail_session;
pub mod kernel_spec;
pub mod proxy_sink;
pub mod pump;
mod redaction;
mod state_gate;
pub mod stderr;
mod supervise;
pub mod worker;

pub use pump::passthrough;

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
    pub audit: mcp_guard_proxy::audit::AuditConfig,
    /// The cgroup unix programs keep the Unix-socket promises (where they do not, the jail's
    /// mount view or network namespace does, see [`mcp_guard_launch::promises`]).
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
    pub fn for_session(source: guard::GuardSource, passthrough: bool) -> Hooks {
        let (attach, finish) = guard::hooks(source);
        let pump: Pump = if passthrough {
            Box::new(|io| Box::pin(pump::passthrough(io)))
        } else {
            Box::new(|io| Box::pin(pump::proxied(io)))
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
    let hooks = Hooks::for_session(guard::GuardSource::Local, args.passthrough);
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

/// A launch that could not be prepared: says why; exec's status (77, 78 or 127).
fn refused(e: &launch::LaunchError) -> i32 {
    say(&e.to_string());
    match e {
        launch::LaunchError::Unenforceable(_) => i32::from(EXIT_UNENFORCEABLE),
        launch::LaunchError::Config(_) => i32::from(EXIT_POLICY),
        launch::LaunchError::NotFound(_) => 127,
    }
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
            say_as_is(&format!("mcp-guard: policy error:\n{e}"));
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
            say_as_is(&format!("mcp-guard: cannot start the runtime: {e}"));
            return i32::from(EXIT_UNENFORCEABLE);
        }
    };
    let code = rt.block_on(session(args, policy, recording, hooks));
    // The stdin reader may be blocked in read(2) on a thread; do not wait for it.
    rt.shutdown_background();
    code
}

/// The session's messages to the user (one home for them: [`crate::say`]).
pub(crate) use crate::say::say;

/// Runs one session: checks what holds for both backends, registers the signals, then the jail
/// ([`jail_session`]) or the container backend ([`container_session`]).
async fn session(args: ExecArgs, policy: Policy, recording: Recording, hooks: Hooks) -> i32 {
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
        return container_session::run(
            args,
            policy,
            (server, observe),
            recording,
            hooks,
            (&mut term, &mut int, &mut hup),
        )
        .await;
    }
    jail_session::run(
        args,
        policy,
        (server, observe),
        recording,
        hooks,
        (&mut term, &mut int, &mut hup),
    )
    .await
}
