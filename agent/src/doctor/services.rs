//! What runs beside mcp-guard: its own agent on the socket, and a container engine for the
//! container backend.

use super::{Builder, CapabilityId, Status, host, io_errno};

/// Whether `exec` here would hand its session to an agent (the socket `exec` uses by default).
pub(super) fn probe_agent(b: &mut Builder) {
    let socket = crate::ipc::socket_path(None);
    match std::os::unix::net::UnixStream::connect(&socket) {
        Ok(_) => b.put(
            CapabilityId::Agent,
            Status::Available,
            format!("an agent listens on {}", socket.display()),
            "exec hands its sessions to the agent: they run as the calling user with the \
             agent's pinned eBPF programs, and exec needs no privilege",
        ),
        Err(e) => b.put(
            CapabilityId::Agent,
            Status::Unavailable,
            format!("no agent listens on {}: {}", socket.display(), io_errno(&e)),
            "exec runs each session itself: it needs root for full enforcement (start \
             `mcp-guard agent`, e.g. systemctl start mcp-guard, to serve unprivileged users)",
        ),
    }
}

/// Where standalone execs share verified programs, and what is there: slots of this build or
/// of others, free or in use, or why the pool is not used.
pub(super) fn probe_standalone_slots(b: &mut Builder) {
    let base = crate::exec::guard::standalone_bpf_dir();
    match mcp_guard_kernel::loader::survey_standalone(&base) {
        Ok(found) => b.put(
            CapabilityId::StandaloneSlots,
            Status::Available,
            found.join("; "),
            "a standalone exec as root reuses programs an earlier one verified (remove the \
             directory to drop them: running sessions keep theirs)",
        ),
        Err(why) => b.put(
            CapabilityId::StandaloneSlots,
            Status::Degraded,
            format!("{}: {why}", base.display()),
            "each standalone exec verifies its own programs (slower start; enforcement is the \
             same); remove the directory as root to let mcp-guard make it again",
        ),
    }
}

pub(super) fn probe_container_engine(b: &mut Builder) {
    let docker_host = std::env::var("DOCKER_HOST").ok();
    let mut tried = Vec::new();
    if let Some(h) = docker_host.as_deref().filter(|h| !h.starts_with("unix://")) {
        tried.push(format!("DOCKER_HOST={h} (only unix:// is supported)"));
    }
    for socket in host::engine_sockets(docker_host.as_deref()) {
        match host::engine_ping(&socket) {
            Ok(answer) => {
                let address = format!("unix://{}", socket.display());
                // Its own thread and runtime: probe() may be called from async code.
                let about = std::thread::scope(|scope| {
                    scope
                        .spawn(|| {
                            tokio::runtime::Builder::new_current_thread()
                                .enable_all()
                                .build()
                                .map_err(|e| e.to_string())
                                .and_then(|rt| {
                                    rt.block_on(mcp_guard_launch::container::engine_info(&address))
                                })
                        })
                        .join()
                        .unwrap_or_else(|_| Err("the engine probe panicked".into()))
                });
                let detail = match about {
                    Ok(i) => format!(
                        "{}: reachable ({}), cgroup manager {}, runtime {}",
                        i.address, i.version, i.cgroup_driver, i.runtime
                    ),
                    Err(e) => format!(
                        "GET /_ping on {}: {answer}; /version: {e}",
                        socket.display()
                    ),
                };
                b.put(
                    CapabilityId::ContainerEngine,
                    Status::Available,
                    detail,
                    "the container backend can run servers through the Docker Engine API",
                );
                return;
            }
            Err(e) => tried.push(format!("{}: {}", socket.display(), io_errno(&e))),
        }
    }
    b.put(
        CapabilityId::ContainerEngine,
        Status::Unavailable,
        format!("no engine answered: {}", tried.join("; ")),
        "only the container backend is unavailable; jailed servers are unaffected",
    );
}
