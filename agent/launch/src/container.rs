//! The container backend: a server in a container made through the Docker Engine API (Docker, or
//! podman's compatible service), with the jail's guarantees.
//!
//! The container runs as the server's identity ([`identity::resolve`]: the caller, `SUDO_UID`'s
//! user, the policy's `user` or the unprivileged server user), as a numeric `uid:gid` with its
//! supplementary groups, never as the image's default user; the image's files the server needs
//! must be readable by that uid.
//!
//! The container: read-only root filesystem, tmpfs `/tmp`, every capability dropped,
//! no-new-privileges, the jail's seccomp deny list as the engine's seccomp profile
//! ([`seccomp_profile`]), memory/CPU/pids limits, explicit `nofile`/`nproc` ulimits at or below
//! this process's (podman cannot raise them without `CAP_SYS_RESOURCE`), only the policy's
//! `[filesystem]` paths as bind mounts (read-only unless listed in `write`), no network at all
//! unless the policy allows some egress (then the engine's default bridge, never the host's
//! network), and an environment of only the policy's secrets and `[env] pass`. The image is
//! checked against the policy's digest and then created by its id, so a tag moved after the
//! check cannot swap the content.
//!
//! Kernel enforcement: mcp-guard makes the session's cgroup S (`<v2>/mcp-guard/<leaf>`) and
//! gives the container `CgroupParent` = S, so the runtime (runc) makes the container's cgroup
//! below S. Before the container starts, mcp-guard pre-creates the leaf directories the engines
//! name (`S/libpod-<id>` for podman, `S/<id>` for Docker; runc joins an existing directory) and
//! the kernel guard registers them as members of S ([`mcp_guard_kernel::loader::ServerHandle::
//! add_member`]): the container's first instruction already runs in a cgroup the syscall
//! tracepoints see, under S's rules, with events carrying S's id. The egress programs are attached
//! to S and so run for every descendant; one not registered (an engine naming its leaf otherwise)
//! is judged by its nearest guarded ancestor in the kernel, so egress never runs unjudged. After
//! start, the container's real cgroup (from `/proc/PID/cgroup`) must be one of the registered
//! leaves, else the session is ended (fail closed: its events would not be seen).
//!
//! Cleanup: the container is removed (forced) when the session ends however exec ends it. If
//! exec itself is `SIGKILLed` nothing runs, so every container carries the labels [`LABEL`] and
//! [`LABEL_EXEC_PID`], and the next exec removes the containers whose exec is gone
//! ([`reap_stale`]) before the stale cgroups are reaped; the container's stdin (attached, stdin
//! once) also closes with exec's death, which ends a well-behaved server at once.

mod cleanup;
mod engine;
mod lifecycle;
mod spec;

pub use cleanup::{reap_stale, reap_stale_cgroups, remove_tree};
pub use engine::{EngineInfo, connect, engine_address, engine_info, resolve_image};
pub use lifecycle::{attach, create, leaf_candidates, pid, remove, v2_cgroup_of, wait};
pub use spec::{ContainerPrepared, prepare, seccomp_profile};

use mcp_guard_policy::Policy;

/// Label every mcp-guard container carries.
pub const LABEL: &str = "io.mcp-guard.session";
/// Label with the pid of the exec that owns the container (stale when that pid is gone).
pub const LABEL_EXEC_PID: &str = "io.mcp-guard.exec-pid";

/// Whether `policy` asks for the container backend.
pub fn wanted(policy: &Policy) -> bool {
    policy.isolation.backend == mcp_guard_policy::Backend::Container
}
