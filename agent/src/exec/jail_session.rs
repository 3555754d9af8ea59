//! One session in the jail ([`launch::prepare`] and the stage-2 helper): the cgroup, the
//! recording and analysis, the kernel guard on the attach seam once the jail's init is in the
//! cgroup, then supervision until the server is gone and the cgroup removed.

use std::{
    any::Any,
    io,
    os::fd::{AsRawFd, OwnedFd},
    path::Path,
    process::Stdio,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
};

use super::{
    ExecArgs, Hooks, Recording, SecretValues, SessionInfo, analysis,
    history::{report_store, started_record},
    redaction::{redaction, warn_passthrough},
    refused, say,
    state_gate::refused_by_state,
    stderr,
    supervise::{KillTree, Signals, drain_stderr, supervise},
};
use crate::exit_codes::EXIT_UNENFORCEABLE;
use mcp_guard_launch::{self as launch, LaunchRequest, stage2};
use mcp_guard_model::names::StateKey;
use mcp_guard_model::{SessionRecord, Timestamp};
use mcp_guard_policy::Policy;

/// Runs the session in the jail; exec's status.
pub(super) async fn run(
    args: ExecArgs,
    policy: Policy,
    (server, observe): (String, bool),
    recording: Recording,
    mut hooks: Hooks,
    signals: Signals<'_>,
) -> i32 {
    // Forked by this thread, which lives as long as exec (the helper's PR_SET_PDEATHSIG).
    let helper = start_helper(&hooks.helper);
    let prepared = match launch::prepare(&LaunchRequest {
        policy: &policy,
        server: &server,
        command: &args.command,
        observe,
        state_dir: Some(&recording.state_dir),
        caller: args.caller.as_ref(),
    }) {
        Ok(p) => p,
        Err(e) => return refused(&e),
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
    let started = started_record(
        &session,
        &server,
        prepared.spec.argv.clone(),
        &policy,
        observe,
    );
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
        unix_programs: mcp_guard_launch::promises::uses(
            &prepared.promises,
            mcp_guard_launch::promises::Mechanism::CgroupUnix,
        ),
    };
    let finish = hooks.finish.take();
    let mut stderr_task = None;
    let code = drive(
        &prepared.spec,
        helper,
        &mut info,
        hooks,
        (
            SecretValues(prepared.secrets.clone()),
            stderr_lines,
            &mut stderr_task,
        ),
        signals,
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

/// The stage-2 helper, started and waiting for its jail spec on `ctl`.
struct Helper {
    child: tokio::process::Child,
    ctl: std::os::unix::net::UnixStream,
}

/// Whether the jail is an unprivileged one (exec not root): what [`launch::prepare`] decides,
/// known before it runs.
fn helper_unprivileged() -> bool {
    !nix::unistd::geteuid().is_root()
}

/// Starts the stage-2 helper from `path`: it waits for its spec on the control socket, so it
/// starts while the session is prepared instead of after (its exec and dynamic loading are off
/// the launch's path). Dropped unused, it is killed (and, its control socket closed, it would
/// exit anyway without doing anything).
fn start_helper(path: &Path) -> Result<Helper, String> {
    let (ours, theirs) =
        std::os::unix::net::UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let theirs: OwnedFd = theirs.into();
    let theirs_raw = theirs.as_raw_fd();
    let parent_pid = std::process::id().cast_signed();
    let mut cmd = tokio::process::Command::new(path);
    cmd.arg(stage2::SUBCOMMAND)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let unprivileged = helper_unprivileged();
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
    let child = cmd
        .spawn()
        .map_err(|e| format!("starting the jail helper: {e}"))?;
    drop(theirs);
    Ok(Helper { child, ctl: ours })
}

/// Runs the session with the started helper until it ends; the caller removes the cgroup.
async fn drive(
    spec: &launch::JailSpec,
    helper: Result<Helper, String>,
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
    let Helper {
        mut child,
        ctl: ours,
    } = match helper {
        Ok(h) => h,
        Err(e) => return fail(e),
    };
    if spec.unprivileged != helper_unprivileged() {
        return fail("jail helper: started for another privilege than the jail's".into());
    }
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
