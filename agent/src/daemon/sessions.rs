//! The agent's Unix socket: `exec` clients ask for sessions, session workers for their guard.
//!
//! An exec request is checked against who sent it (`SO_PEERCRED`, not anything the client says):
//! a non-root user gets policies from the policy dir by name only, only those whose `[access]`
//! lets them, no `--observe` unless the config allows it, with `known_only` no launch without a
//! policy of its own, and no server name (`--name`, checked here as an identifier) that belongs
//! to another policy of the policy dir. An accepted request starts a session worker
//! (`mcp-guard __session`, see `exec::worker`) with the client's stdio, connection and working
//! directory; the worker runs the server as the client's user and answers the client itself.
//! A process of a guarded server is refused whatever it asks (see `peer`).
//!
//! What one user may hold is bounded ([`admission`]): connections that have not sent their
//! request yet, and sessions at once (`max_sessions_per_user`; the worker's exit gives the place
//! back). Past either bound the caller gets a refusal with exit status 75 ([`EXIT_BUSY`]).

use std::{
    io,
    os::{
        fd::{AsFd, AsRawFd, OwnedFd},
        unix::process::CommandExt as _,
    },
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use nix::unistd::{Gid, Group, Uid, User};
use tokio::{
    io::AsyncWriteExt,
    net::{UnixListener, UnixStream},
};

use super::{
    admission::{self, Admission, Full, Slot},
    guard_service::GuardService,
    policies::{self, Loaded, PolicySet},
};
use crate::{
    exit_codes::{EXIT_BUSY, EXIT_POLICY, EXIT_UNENFORCEABLE},
    ipc::{self, ClientReply, ExecRequest, GuardReply, Request, WorkerSetup},
};
use mcp_guard_model::dirs::Dirs;

/// How long a connection may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The rules for launching, from the agent's config (reloaded on SIGHUP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchRules {
    /// Launch only servers whose policy is in the policy dir (named with `--policy`).
    pub known_only: bool,
    /// Let non-root callers use `--observe` (enforcement off for their session).
    pub allow_observe: bool,
    /// Sessions one non-root uid may run at once.
    pub max_sessions_per_user: u32,
    /// What the history keeps of calls unless a policy says otherwise (`[audit]`).
    pub audit: crate::history::AuditDefaults,
}

/// What the socket's connections share.
pub struct Launcher {
    /// Current launch rules.
    pub rules: RwLock<LaunchRules>,
    /// The policy dir's policies, as last validated (SIGHUP re-reads them).
    pub policies: Mutex<PolicySet>,
    /// The agent's state and policy dirs (the workers use the same).
    pub dirs: Dirs,
    /// The socket path (workers reconnect to it).
    pub socket: PathBuf,
    /// The kernel guard.
    pub guard: Arc<GuardService>,
    /// What each user holds of the agent (connections waiting, sessions).
    pub admission: Arc<Admission>,
    /// Whether this kernel runs the cgroup unix programs, probed once at start (the workers
    /// take it instead of parsing the kernel's BTF per session).
    pub unix_probe: Result<(), String>,
}

/// Accepts connections until the listener is dropped. A connection past its user's share of
/// waiting connections is refused at once (it would otherwise hold a descriptor and a task for
/// [`REQUEST_TIMEOUT`] while sending nothing).
pub async fn accept(listener: UnixListener, launcher: Arc<Launcher>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let cred = match stream.peer_cred() {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!("agent socket: no peer credentials: {e}");
                        continue;
                    }
                };
                match launcher.admission.pending(cred.uid()) {
                    Ok(slot) => {
                        tokio::spawn(handle(launcher.clone(), stream, cred, slot));
                    }
                    Err(full) => busy(&stream, cred.uid(), full),
                }
            }
            Err(e) => {
                tracing::warn!("agent socket: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A refusal: exec's exit status and the message for the user.
type Refusal = (u8, String);

/// Refuses a connection past the waiting bound without waiting for it: one non-blocking write
/// of the refusal (a small line fits the socket buffer), then it is closed.
fn busy(stream: &UnixStream, uid: u32, full: Full) {
    // At most one line a second: the refused connections are the attacker's to multiply.
    static LOGGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let message = match full {
        Full::PendingUser => format!(
            "the agent has {} connections from uid {uid} waiting for their request; refused \
             (try again once they are answered or time out)",
            admission::MAX_PENDING_PER_USER
        ),
        _ => format!(
            "the agent has {} connections waiting for their request; refused (try again \
             shortly)",
            admission::MAX_PENDING
        ),
    };
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if LOGGED.swap(second, std::sync::atomic::Ordering::Relaxed) != second {
        tracing::warn!("agent socket: uid {uid}: {message}");
    }
    let reply = ClientReply::Refused {
        code: i32::from(EXIT_BUSY),
        message,
    };
    let _ = stream.try_write(&ipc::line(&reply));
}

async fn handle(
    launcher: Arc<Launcher>,
    mut stream: UnixStream,
    cred: tokio::net::unix::UCred,
    _waiting: Slot,
) {
    let first = tokio::time::timeout(REQUEST_TIMEOUT, ipc::read_first(&stream)).await;
    let (line, fds) = match first {
        Ok(Ok(got)) => got,
        Ok(Err(e)) => {
            tracing::info!("agent socket: uid {}: {e}", cred.uid());
            return refuse(
                &mut stream,
                (EXIT_UNENFORCEABLE, format!("bad request: {e}")),
            )
            .await;
        }
        Err(_) => return,
    };
    let request = match serde_json::from_slice::<Request>(&line) {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                &mut stream,
                (EXIT_UNENFORCEABLE, format!("bad request: {e}")),
            )
            .await;
        }
    };
    // A server never becomes a client, whatever it asks (checked once the request is read, so
    // the refusal reaches the client instead of a broken pipe).
    if let Some(why) = super::peer::jailed_peer(stream.as_raw_fd(), cred.pid()) {
        tracing::warn!("agent socket: uid {}: refused: {why}", cred.uid());
        drop(fds);
        if matches!(request, Request::Guard(_)) {
            let msg = GuardReply::Error { message: why };
            let _ = stream.write_all(&ipc::line(&msg)).await;
            return;
        }
        return refuse(&mut stream, (EXIT_UNENFORCEABLE, why)).await;
    }
    match request {
        Request::Guard(req) => {
            if cred.uid() != 0 {
                let msg = GuardReply::Error {
                    message: "only the agent's session workers (root) may ask for a guard".into(),
                };
                let _ = stream.write_all(&ipc::line(&msg)).await;
                return;
            }
            launcher.guard.clone().serve(stream, req).await;
        }
        Request::Exec(req) => {
            let launched = launcher
                .authorize(cred.uid(), cred.gid(), &req)
                .and_then(|policy| launcher.session_slot(cred.uid()).map(|slot| (policy, slot)))
                .and_then(|(policy, slot)| {
                    if fds.len() != ipc::EXEC_FDS {
                        return Err((
                            EXIT_UNENFORCEABLE,
                            format!(
                                "the request carried {} descriptors, not stdin, stdout, stderr \
                                 and the working directory",
                                fds.len()
                            ),
                        ));
                    }
                    tracing::info!(
                        "uid {} (pid {:?}): session for {:?} with policy {}",
                        cred.uid(),
                        cred.pid(),
                        req.command,
                        policy
                            .as_ref()
                            .map_or_else(|| "default".into(), |p| p.path.display().to_string())
                    );
                    launcher.spawn_worker(
                        &stream,
                        fds,
                        (cred.uid(), cred.gid(), cred.pid()),
                        req,
                        policy,
                        slot,
                    )
                });
            if let Err(refusal) = launched {
                tracing::info!("uid {}: refused: {}", cred.uid(), refusal.1);
                refuse(&mut stream, refusal).await;
            }
        }
    }
}

async fn refuse(stream: &mut UnixStream, (code, message): Refusal) {
    let reply = ClientReply::Refused {
        code: i32::from(code),
        message,
    };
    let _ = stream.write_all(&ipc::line(&reply)).await;
}

impl Launcher {
    /// A place among `uid`'s sessions, or the refusal at `max_sessions_per_user`.
    fn session_slot(&self, uid: u32) -> Result<Slot, Refusal> {
        let cap = self
            .rules
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .max_sessions_per_user;
        self.admission.session(uid, cap).map_err(|_| {
            let name = User::from_uid(Uid::from_raw(uid))
                .ok()
                .flatten()
                .map_or_else(|| uid.to_string(), |u| u.name);
            (
                EXIT_BUSY,
                format!(
                    "user {name} (uid {uid}) already runs {} session(s) through this agent, its \
                     cap (max_sessions_per_user = {cap} in the agent's config): end one, or ask \
                     an administrator to raise it",
                    self.admission.sessions_of(uid)
                ),
            )
        })
    }

    /// Whether `uid` may run `req`; the policy the worker runs it with (`None`: the built-in
    /// default).
    fn authorize(&self, uid: u32, gid: u32, req: &ExecRequest) -> Result<Option<Loaded>, Refusal> {
        let rules = self
            .rules
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let dir = self.dirs.policy.display().to_string();
        let spec = req.policy.clone();
        let is_file = spec
            .as_deref()
            .is_some_and(|s| s.contains('/') || s.ends_with(".toml"));
        if uid != 0 && is_file {
            return Err((
                EXIT_UNENFORCEABLE,
                format!(
                    "through the agent, policies are used by name from {dir}; a policy file is \
                     for root only (it could grant what the administrator did not): ask an \
                     administrator to install it there"
                ),
            ));
        }
        if rules.known_only && (spec.is_none() || spec.as_deref() == Some("default")) {
            return Err((
                EXIT_UNENFORCEABLE,
                format!(
                    "this agent launches only servers with a policy of their own in {dir} \
                     (known_only): write one (`mcp-guard policy suggest --server NAME` drafts it \
                     from a session), check it with `mcp-guard policy check`, install it as \
                     {dir}/NAME.toml and pass --policy NAME"
                ),
            ));
        }
        let loaded = match spec.as_deref() {
            None | Some("default") => None,
            Some(file) if is_file => Some(policies::read(std::path::Path::new(file))),
            Some(name) => Some(
                self.policies
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(name),
            ),
        }
        .transpose()
        .map_err(|e| (EXIT_POLICY, format!("policy error:\n{e}")))?;
        let builtin;
        let policy = if let Some(l) = &loaded {
            &l.policy
        } else {
            builtin = mcp_guard_policy::builtin_default();
            &builtin
        };
        let (name, groups) = user_and_groups(uid, gid);
        if !policy.access.permits(uid, &name, &groups) {
            return Err((
                EXIT_UNENFORCEABLE,
                format!(
                    "user {name} (uid {uid}) may not use policy {}: its [access] lists users {:?} \
                     and groups {:?}",
                    policy.name, policy.access.users, policy.access.groups
                ),
            ));
        }
        let server = match &req.name {
            Some(n) => {
                mcp_guard_model::names::check(n).map_err(|e| {
                    (
                        EXIT_POLICY,
                        format!("--name: {e}\n(the name keys the server's state and records)"),
                    )
                })?;
                n.as_str()
            }
            None => policy.name.as_str(),
        };
        if uid != 0
            && let Some(owner) = self
                .policies
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .owner_of(server)
            && owner != policy.name
        {
            // Its pins, profile, quarantine and records would be mixed with that policy's
            // server's; root may (e.g. to try a new policy on a known server).
            return Err((
                EXIT_POLICY,
                format!(
                    "--name {server}: that name belongs to policy {owner} in {dir}, and this \
                     session runs under policy {}: use --policy {owner}, or another name",
                    policy.name
                ),
            ));
        }
        if req.observe && uid != 0 && !rules.allow_observe {
            return Err((
                EXIT_UNENFORCEABLE,
                "--observe turns enforcement off; this agent allows it for root only \
                 (allow_observe in its config)"
                    .into(),
            ));
        }
        Ok(loaded)
    }

    /// Starts the session worker with the client's descriptors; it answers the client.
    /// `slot` is the session's place in its user's count, held until the worker exits.
    /// The setup follows once the worker runs: it names the MCP client (exec's parent, read
    /// by the agent from `/proc`, not taken from exec), looked up while the worker starts.
    fn spawn_worker(
        &self,
        stream: &UnixStream,
        fds: Vec<OwnedFd>,
        (uid, gid, pid): (u32, u32, Option<libc::pid_t>),
        mut req: ExecRequest,
        policy: Option<Loaded>,
        slot: Slot,
    ) -> Result<(), Refusal> {
        let fail = |what: &str, e: io::Error| {
            (
                EXIT_UNENFORCEABLE,
                format!("the agent could not start the session ({what}: {e})"),
            )
        };
        req.policy = policy.as_ref().map(|p| p.path.display().to_string());
        let mut setup = WorkerSetup {
            request: req,
            policy_text: policy.map(|p| p.text),
            uid,
            gid,
            state_dir: self.dirs.state.clone(),
            policy_dir: self.dirs.policy.clone(),
            socket: self.socket.clone(),
            client_exe: None,
            audit: self
                .rules
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .audit,
            unix_probe: Some(self.unix_probe.clone()),
        };
        // The worker reads it blocking (the flag is the connection's: the agent only writes a
        // refusal on it from here on).
        let conn = stream
            .as_fd()
            .try_clone_to_owned()
            .map(std::os::unix::net::UnixStream::from)
            .and_then(|s| s.set_nonblocking(false).map(|()| s))
            .map_err(|e| fail("client connection", e))?;
        // The client's end, for its pidfd while the MCP client is looked up.
        let peer = stream
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| fail("client connection", e))?;
        let (setup_ours, setup_theirs) =
            std::os::unix::net::UnixStream::pair().map_err(|e| fail("socketpair", e))?;
        let mut fds = fds.into_iter();
        let (Some(stdin), Some(stdout), Some(stderr), Some(cwd)) =
            (fds.next(), fds.next(), fds.next(), fds.next())
        else {
            return Err((EXIT_UNENFORCEABLE, "descriptors missing".into()));
        };
        let moves = [
            (conn.as_raw_fd(), ipc::WORKER_CLIENT_FD),
            (cwd.as_raw_fd(), ipc::WORKER_CWD_FD),
            (setup_theirs.as_raw_fd(), ipc::WORKER_SETUP_FD),
        ];
        let mut cmd = std::process::Command::new("/proc/self/exe");
        cmd.arg(crate::exec::worker::SUBCOMMAND)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr));
        if let Some(log) = std::env::var_os("RUST_LOG") {
            cmd.env("RUST_LOG", log);
        }
        // SAFETY: between fork and exec only async-signal-safe calls (fcntl, dup2, close,
        // setsid) on descriptor numbers captured before the fork.
        unsafe {
            cmd.pre_exec(move || {
                // Through numbers >= 10 first, so no target clobbers a source still needed.
                let mut temps = [0; 3];
                for (temp, (src, _)) in temps.iter_mut().zip(moves) {
                    *temp = libc::fcntl(src, libc::F_DUPFD, 10);
                    if *temp < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                for (temp, (_, target)) in temps.into_iter().zip(moves) {
                    if libc::dup2(temp, target) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    libc::close(temp);
                }
                // Its own session: the agent's terminal or process group signals are not its.
                libc::setsid();
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| fail("starting the worker", e))?;
        drop((conn, cwd, setup_theirs));
        std::thread::spawn(move || {
            use std::io::Write as _;
            setup.client_exe = pid.and_then(|pid| {
                crate::client_exe::of_peer_parent(peer.as_fd(), u32::try_from(pid).ok()?, uid, gid)
            });
            drop(peer);
            tracing::info!("uid {uid}: client executable {:?}", setup.client_exe);
            let mut ours = setup_ours;
            // Unwritten, the worker reads a truncated setup and ends the session (exit 77).
            match serde_json::to_vec(&setup) {
                Ok(json) => {
                    if let Err(e) = ours.write_all(&json) {
                        tracing::warn!("session worker setup: {e}");
                    }
                }
                Err(e) => tracing::warn!("session worker setup: {e}"),
            }
            drop(ours);
            // Reaped here; it outlives the agent if the agent restarts (then init reaps it).
            match child.wait() {
                Ok(status) => tracing::info!("session worker {} ended: {status}", child.id()),
                Err(e) => tracing::warn!("session worker {}: {e}", child.id()),
            }
            // The session is over: its user may start another.
            drop(slot);
        });
        Ok(())
    }
}

/// The login name and groups (gid, name) of `uid` (gid from the socket, plus the group
/// database's supplementary groups).
fn user_and_groups(uid: u32, gid: u32) -> (String, Vec<(u32, String)>) {
    let user = User::from_uid(Uid::from_raw(uid)).ok().flatten();
    let name = user
        .as_ref()
        .map_or_else(|| uid.to_string(), |u| u.name.clone());
    let mut gids = vec![Gid::from_raw(gid)];
    if let Some(u) = &user
        && let Ok(cname) = std::ffi::CString::new(u.name.clone())
        && let Ok(more) = nix::unistd::getgrouplist(&cname, Gid::from_raw(gid))
    {
        gids.extend(more);
    }
    gids.sort_by_key(|g| g.as_raw());
    gids.dedup();
    let groups = gids
        .into_iter()
        .map(|g| {
            let gname = Group::from_gid(g)
                .ok()
                .flatten()
                .map_or_else(|| g.as_raw().to_string(), |gr| gr.name);
            (g.as_raw(), gname)
        })
        .collect();
    (name, groups)
}
