//! The eBPF kernel guard on exec's seams.
//!
//! [`hooks`] gives the [`Attach`] hook (load the programs, guard the session's cgroup with the
//! policy's [`ServerSpec`](mcp_guard_kernel::loader::ServerSpec), hand its events to the session's
//! analysis, see [`super::analysis`]) and the matching [`Finish`] hook (drain the events still in
//! flight, say what was lost).
//!
//! A standalone exec loads its own copy of the programs ([`GuardSource::Local`]): the syscall
//! tracepoints are host-wide but filter in the kernel to the cgroups this copy guards, so
//! concurrent sessions do not see each other's events and one exec ending detaches nothing of
//! another's. A session worker of the agent ([`GuardSource::Agent`]) asks the agent instead,
//! which guards the cgroup with the programs it loaded and pinned once, and streams the events.

use std::{any::Any, cell::RefCell, path::PathBuf, rc::Rc, time::Duration};

use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use super::{
    Attach, Finish, SessionInfo,
    agent_link::AgentLink,
    kernel_spec::{sensitive_path, server_spec},
    say,
};
use crate::{ipc::GuardRequest, kernel_refusal::explain_kernel};
use mcp_guard_analysis::InputSender;
use mcp_guard_kernel::{
    events::KernelEvent,
    loader::{KernelError, KernelGuard, ServerSpec},
};
use mcp_guard_model::EventRecord;
use mcp_guard_policy::OnSensitive;
use mcp_guard_store::StoreHandle;

/// Where a session's kernel guard comes from.
#[derive(Clone, Debug)]
pub enum GuardSource {
    /// Load the programs in this process (standalone exec).
    Local,
    /// The agent listening on this socket, with its pinned programs (a session worker).
    Agent(PathBuf),
}

/// How long the end of a session waits for an absent agent to come back and deliver the
/// session's last events.
const AGENT_FLUSH_WAIT: Duration = Duration::from_secs(10);

/// What guards a running session.
enum Guarded {
    Local(Box<KernelGuard>),
    Agent(AgentLink),
}

/// The guard of a running session, kept between attach and finish.
struct Running {
    guard: Guarded,
    stop: oneshot::Sender<()>,
    /// Hands the kernel's events to the session's analysis; the count handed.
    forwarder: JoinHandle<u64>,
    /// Where the kernel's drop counts are recorded at the end (as `lost` events).
    store: StoreHandle,
    server: String,
    session: String,
}

/// The kernel guard's attach and finish hooks for one session.
pub fn hooks(source: GuardSource) -> (Attach, Finish) {
    let state: Rc<RefCell<Option<Running>>> = Rc::default();
    let attach_state = state.clone();
    // Standalone, the programs start loading now, while the session is prepared.
    let preload = matches!(source, GuardSource::Local).then(Preload::start);
    let attach: Attach = Box::new(move |info: SessionInfo| {
        Box::pin(async move {
            let attached = match (source, preload) {
                (GuardSource::Local, Some(preload)) => local_guard(&info, preload)
                    .await
                    .map_err(|e| explain_kernel(&e)),
                (GuardSource::Local, None) => local_guard(&info, Preload::start())
                    .await
                    .map_err(|e| explain_kernel(&e)),
                (GuardSource::Agent(socket), _) => agent_guard(&info, socket).await,
            };
            match attached {
                Ok((guard, events, handle)) => {
                    *attach_state.borrow_mut() = Some(start_forwarder(&info, guard, events));
                    Ok(handle)
                }
                Err(why) => unavailable(&info, &why),
            }
        })
    });
    let finish: Finish = Box::new(move || {
        Box::pin(async move {
            let running = state.borrow_mut().take();
            if let Some(running) = running {
                finish_guard(running).await;
            }
        })
    });
    (attach, finish)
}

/// The policy's kernel spec for the session, warning about sensitive globs the kernel cannot
/// match and, where the policy lets it run without them, about missing unix programs.
fn spec_for(info: &SessionInfo) -> ServerSpec {
    let spec = server_spec(
        &info.policy,
        &info.server,
        &info.session,
        &info.home,
        info.observe,
    );
    if spec.kill_on_sensitive {
        let unmatched: Vec<&str> = info
            .policy
            .detect
            .sensitive
            .iter()
            .map(String::as_str)
            .filter(|p| sensitive_path(p, &info.home).is_none())
            .collect();
        if !unmatched.is_empty() {
            // Landlock still denies these (unless the read set grants them) and the open
            // events carry their paths; only the in-kernel kill cannot match the glob.
            say(&format!(
                "WARNING: on_sensitive = \"kill\" cannot kill in the kernel for {}: only \
                 `~/dir/**`, exact paths and `**/name` are matched there; these are denied by \
                 landlock (when enforcing) and reported",
                unmatched.join(", ")
            ));
        }
    }
    let mut spec = spec;
    if !spec.unix_optional && !info.unix_programs {
        // The launch chose the jail's mount view (and, for abstract names, its network
        // namespace or landlock's scope) to keep the Unix-socket promises: the programs are
        // used where they load, and not required.
        spec.unix_optional = true;
        if let Err(why) = mcp_guard_kernel::unix::probe() {
            tracing::info!(
                "Unix sockets: kept by the jail's own /run, /var/run, /dev/shm and /tmp, not the \
                 cgroup unix programs ({why})"
            );
        }
    } else if spec.unix_optional
        && let Err(why) = mcp_guard_kernel::unix::probe()
    {
        say(&format!(
            "WARNING: NOT ENFORCED: connect/sendmsg to Unix sockets are not limited to \
             [network] unix ({why}); the jail's own /run, /var/run, /dev/shm and /tmp still \
             hide the host's sockets there, landlock's scope still refuses abstract ones \
             unless the policy lists some, and nothing stops the rest"
        ));
    }
    spec
}

/// The session's guard, its event stream, and the value exec keeps alive for the session.
type Attached = (Guarded, mpsc::Receiver<KernelEvent>, Box<dyn Any>);

/// The programs of a standalone exec, loading in a thread of their own from the start of the
/// session: most of the load is the kernel verifying them, which need not wait for the policy,
/// the cgroup and the jail's helper. Only a root exec loads them (no one else can, and a
/// non-root session runs without the kernel guard); what is loaded for a session that never
/// attaches is freed when exec exits.
struct Preload(Option<oneshot::Receiver<Result<KernelGuard, KernelError>>>);

impl Preload {
    fn start() -> Self {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Preload(None);
        }
        // Before the launch asks whether the unix programs run here.
        mcp_guard_kernel::loader::learn_from_pool(&standalone_bpf_dir());
        let (tx, rx) = oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("ebpf-load".into())
            .spawn(move || {
                let _ = tx.send(KernelGuard::load_standalone(&standalone_bpf_dir()));
            });
        Preload(spawned.ok().map(|_| rx))
    }

    /// The loaded guard (loaded here when the thread could not run).
    async fn wait(self) -> Result<KernelGuard, KernelError> {
        match self.0 {
            Some(rx) => match rx.await {
                Ok(loaded) => loaded,
                Err(_) => Err(KernelError::Io(std::io::Error::other(
                    "loading the eBPF programs: the loading thread ended without a result",
                ))),
            },
            None => KernelGuard::load_standalone(&standalone_bpf_dir()),
        }
    }
}

/// Where a standalone exec shares verified programs with other execs: the pool of
/// [`KernelGuard::load_standalone`], moved by `MCP_GUARD_STANDALONE_BPF_DIR` (tests, or a host
/// whose bpffs is elsewhere).
pub fn standalone_bpf_dir() -> PathBuf {
    std::env::var_os("MCP_GUARD_STANDALONE_BPF_DIR").map_or_else(
        || PathBuf::from(mcp_guard_kernel::loader::DEFAULT_STANDALONE_DIR),
        PathBuf::from,
    )
}

/// Loads the programs in this process (or takes them from `preload`), starts the event stream
/// and guards the session's cgroup.
async fn local_guard(info: &SessionInfo, preload: Preload) -> Result<Attached, KernelError> {
    let spec = spec_for(info);
    let guard = preload.wait().await?;
    let events = guard.events()?;
    let handle = guard
        .add_server(&info.cgroup_dir, spec)
        .await?
        .with_members(&info.member_cgroups)?;
    tracing::info!(
        "server {}: eBPF guard attached to cgroup {} (session {})",
        info.server,
        handle.cgroup_id(),
        info.session
    );
    Ok((Guarded::Local(Box::new(guard)), events, Box::new(handle)))
}

/// Asks the agent to guard the session's cgroup with its pinned programs.
async fn agent_guard(info: &SessionInfo, socket: PathBuf) -> Result<Attached, String> {
    let request = GuardRequest {
        cgroup_dir: info.cgroup_dir.clone(),
        members: info.member_cgroups.clone(),
        spec: spec_for(info),
        adopt: false,
    };
    let (tx, events) = mpsc::channel(EVENT_QUEUE);
    let link = AgentLink::connect(socket, request, tx).await?;
    tracing::info!(
        "server {}: guarded by the agent's eBPF programs on cgroup {} (session {})",
        info.server,
        link.cgroup_id(),
        info.session
    );
    Ok((Guarded::Agent(link), events, Box::new(())))
}

/// Events from the agent that may wait for the forwarder to the analysis.
const EVENT_QUEUE: usize = 65536;

/// Starts handing the session's kernel events to its analysis.
fn start_forwarder(
    info: &SessionInfo,
    guard: Guarded,
    events: mpsc::Receiver<KernelEvent>,
) -> Running {
    let (stop, stopped) = oneshot::channel();
    let forwarder = tokio::spawn(forward(events, info.analysis.inputs(), stopped));
    Running {
        guard,
        stop,
        forwarder,
        store: info.store.clone(),
        server: info.server.clone(),
        session: info.session.clone(),
    }
}

/// Hands `events` to the session's analysis (waiting while its queue is full: the ring buffer
/// holds the rest meanwhile) until `stop` fires, then what is already queued: the guard fires
/// `stop` after its flush, once the server's processes are gone, so nothing more can come.
/// Returns how many were handed.
async fn forward(
    mut events: mpsc::Receiver<KernelEvent>,
    inputs: InputSender,
    stop: oneshot::Receiver<()>,
) -> u64 {
    let mut handed = 0;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => {
                    if !inputs.kernel(event).await {
                        return handed;
                    }
                    handed += 1;
                }
                None => break,
            },
            _ = &mut stop => break,
        }
    }
    while let Ok(event) = events.try_recv() {
        if !inputs.kernel(event).await {
            break;
        }
        handed += 1;
    }
    handed
}

/// Refuses (fail closed) or, under `--observe` / `allow_degraded`, says loudly what is lost
/// and lets the server run without the guard.
fn unavailable(info: &SessionInfo, why: &str) -> Result<Box<dyn Any>, String> {
    if !(info.observe || info.policy.enforcement.allow_degraded) {
        return Err(format!(
            "{why}\nwithout the kernel guard, egress cannot be limited to the policy's [network] \
             lists and no kernel events are recorded; refusing to launch (fail closed): fix the \
             host (see `mcp-guard doctor`), or set [enforcement] allow_degraded = true in the \
             policy, or use --observe"
        ));
    }
    let mode = if info.observe {
        "--observe"
    } else {
        "enforcement.allow_degraded"
    };
    let kill = if info.policy.detect.on_sensitive == OnSensitive::Kill {
        ", no kill on sensitive-path access"
    } else {
        ""
    };
    say(&format!(
        "WARNING: NOT ENFORCED ({mode}): {why}\nWARNING: running WITHOUT the eBPF kernel \
         guard: no egress filtering by address, no kernel events recorded{kill}"
    ));
    Ok(Box::new(()))
}

/// What a kernel drop counter means for the record.
fn drop_meaning(reason: &str) -> &'static str {
    match reason {
        "ringbuf_full" => "events lost: the ring buffer was full",
        "path_read_failed" => {
            "events recorded without their path, or opens not checked against [detect] \
             sensitive at entry or exit"
        }
        "argv_read_failed" => "execs recorded without some arguments",
        _ => "events incomplete",
    }
}

/// Drains the events still in flight into the store and reports what the kernel could not
/// deliver. The server's processes are gone and its handle dropped by now.
async fn finish_guard(running: Running) {
    let Running {
        guard,
        stop,
        forwarder,
        store,
        server,
        session,
    } = running;
    // The server's processes are gone: after the flush the channel holds all it ever produced.
    let guard = match guard {
        Guarded::Local(guard) => {
            guard.flush().await;
            guard
        }
        Guarded::Agent(link) => {
            if !link.flush(AGENT_FLUSH_WAIT).await {
                say(&format!(
                    "WARNING: the agent did not come back within {}s: the session's last kernel \
                     events stay in its ring buffer and are not attributed to this session",
                    AGENT_FLUSH_WAIT.as_secs()
                ));
            }
            let _ = stop.send(());
            let _ = forwarder.await;
            // The agent accounts for the kernel's drops of all its sessions.
            link.release().await;
            return;
        }
    };
    let _ = stop.send(());
    match forwarder.await {
        Ok(handed) => tracing::debug!("kernel events handed to the analysis: {handed}"),
        Err(e) => say(&format!("kernel event forwarder failed: {e}")),
    }
    match guard.dropped() {
        Ok(drops) => {
            let lost: Vec<String> = drops
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(reason, n)| format!("{reason} {n} ({})", drop_meaning(reason)))
                .collect();
            if !lost.is_empty() {
                say(&format!(
                    "WARNING: kernel events lost or incomplete: {}",
                    lost.join(", ")
                ));
            }
            // The gap is part of the session's history (`events --kind lost`) and what the
            // agent counts as mcp_guard_events_dropped_total{reason}.
            for (reason, n) in drops.iter().filter(|(_, n)| **n > 0) {
                store.send(EventRecord::lost(
                    format!("{session}-lost-{reason}"),
                    &server,
                    &session,
                    reason,
                    *n,
                ));
            }
        }
        Err(e) => say(&format!("cannot read the kernel drop counters: {e}")),
    }
}
