//! cgroups for the doctor: a v2 hierarchy where a cgroup can be made, mcp-guard's own egress
//! programs refusing a real connect from one, the Unix-socket attach types, and the resource
//! controllers `[limits]` needs.

use std::{ffi::CString, path::Path};

use super::{Builder, CapabilityId, Status, errno_name, host, io_errno};
use crate::kernel_refusal::error_chain;

pub(super) fn probe_cgroups(b: &mut Builder, mounts: &[mcp_guard_launch::mounts::Mount]) {
    let Some(root) = mcp_guard_launch::mounts::cgroup2_mount(mounts) else {
        b.put(
            CapabilityId::CgroupV2,
            Status::Unavailable,
            "no cgroup2 mount in /proc/self/mountinfo".to_string(),
            "servers cannot be given their own cgroup: no egress filtering, exec refuses (77); mount cgroup2",
        );
        for id in [CapabilityId::EbpfObject, CapabilityId::CgroupSockAddr] {
            b.put(
                id,
                Status::Unavailable,
                "not probed: no cgroup v2".to_string(),
                "no egress filtering: exec refuses to launch (77) unless --observe or [enforcement] allow_degraded",
            );
        }
        probe_controllers(b, mounts, None);
        return;
    };
    let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    let subtree = std::fs::read_to_string(root.join("cgroup.subtree_control")).unwrap_or_default();
    let dir = root.join(host::temp_cgroup_name());
    match std::fs::create_dir(&dir) {
        Ok(()) => {
            b.put(
                CapabilityId::CgroupV2,
                Status::Available,
                format!(
                    "mounted at {}; controllers [{}], subtree_control [{}]; created and removed a cgroup there",
                    root.display(),
                    controllers.trim(),
                    subtree.trim()
                ),
                "each server runs in its own cgroup, which keys its egress rules and events",
            );
            probe_egress(b, &dir);
            if let Err(e) = host::remove_cgroup(&dir) {
                // Not fatal for the report, but say so: the brief is to leave nothing behind.
                crate::say::say_as_is(&format!(
                    "mcp-guard doctor: could not remove {}: {e}",
                    dir.display()
                ));
            }
        }
        Err(e) => {
            b.put(
                CapabilityId::CgroupV2,
                Status::Unavailable,
                format!("mounted at {} but creating a cgroup failed: {}", root.display(), io_errno(&e)),
                "servers cannot be given their own cgroup: exec refuses (77); run as root with a writable cgroup2 mount",
            );
            for id in [CapabilityId::EbpfObject, CapabilityId::CgroupSockAddr] {
                b.put(
                    id,
                    Status::Unavailable,
                    "not probed: no cgroup could be created".to_string(),
                    "no egress filtering: exec refuses to launch (77) unless --observe or [enforcement] allow_degraded",
                );
            }
        }
    }
    probe_controllers(b, mounts, Some((root, controllers.as_str())));
}

/// Loads mcp-guard's own embedded object (egress and `tp_btf` programs), guards the temporary
/// cgroup `dir` with an empty allowlist and checks that a connect from a child placed in it is
/// refused. Dropping the handle and the guard detaches everything before the cgroup is removed.
fn probe_egress(b: &mut Builder, dir: &Path) {
    use mcp_guard_kernel::loader::{KernelGuard, ServerSpec};
    const NO: &str = "no egress filtering: exec refuses to launch (77) unless --observe or [enforcement] allow_degraded";
    let guard = match KernelGuard::load() {
        Ok(g) => {
            b.put(
                CapabilityId::EbpfObject,
                Status::Available,
                format!(
                    "mcp-guard's embedded connect4/connect6/sendmsg4/sendmsg6, bind4/bind6 and tp_btf \
                     sys_enter/sys_exit programs loaded; the tp_btf ones attached; \
                     connect_unix/sendmsg_unix {}",
                    match g.unix_status() {
                        Ok(()) => "loaded".to_string(),
                        Err(why) => format!("skipped: {why}"),
                    }
                ),
                "mcp-guard's own programs run on this kernel",
            );
            g
        }
        Err(e) => {
            b.put(
                CapabilityId::EbpfObject,
                Status::Unavailable,
                error_chain(&e),
                "mcp-guard's kernel guard cannot load: exec refuses to launch (77) unless --observe or [enforcement] allow_degraded",
            );
            b.put(
                CapabilityId::CgroupSockAddr,
                Status::Unavailable,
                "not probed: the programs did not load".to_string(),
                NO,
            );
            return;
        }
    };
    let spec = ServerSpec {
        server: "mcp-guard-doctor".to_string(),
        session: "doctor".to_string(),
        // Egress is probed here; the unix programs have their own line (cgroup_unix).
        unix_optional: true,
        ..ServerSpec::default()
    };
    // add_server is async; its own thread and runtime keep `probe` callable from async code too
    // (a nested block_on would panic).
    let added = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("not probed: tokio runtime: {e}"))?;
                runtime
                    .block_on(guard.add_server_with(dir, spec, None))
                    .map_err(|e| {
                        format!(
                            "attaching to {} refused: {}",
                            dir.display(),
                            error_chain(&e)
                        )
                    })
            })
            .join()
            .unwrap_or_else(|_| Err("not probed: the attach thread panicked".to_string()))
    });
    let handle = match added {
        Ok(h) => h,
        Err(e) => {
            b.put(CapabilityId::CgroupSockAddr, Status::Unavailable, e, NO);
            return;
        }
    };
    let procs = match CString::new(
        dir.join("cgroup.procs")
            .into_os_string()
            .into_encoded_bytes(),
    ) {
        Ok(p) => p,
        Err(e) => {
            b.put(
                CapabilityId::CgroupSockAddr,
                Status::Unavailable,
                format!("cgroup path: {e}"),
                NO,
            );
            return;
        }
    };
    // Port 9 (discard): if the verdict let it through, the kernel answers ECONNREFUSED instead.
    let end = host::in_child(|| host::child_connect_from_cgroup(&procs, 9), |_| {});
    drop(handle);
    drop(guard);
    match end {
        Ok(host::ChildEnd::Exited(libc::EPERM)) => b.put(
            CapabilityId::CgroupSockAddr,
            Status::Available,
            "attached to a temporary cgroup under the v2 mount; a connect from a process in it got EPERM; detached and removed".to_string(),
            "per-server egress is filtered in the kernel at connect/sendmsg",
        ),
        Ok(host::ChildEnd::Exited(255)) => b.put(CapabilityId::CgroupSockAddr, Status::Unavailable, "attached, but a probe process could not join the cgroup".to_string(), NO),
        Ok(end) => b.put(
            CapabilityId::CgroupSockAddr,
            Status::Unavailable,
            format!("attached, but a denied connect from the cgroup ended as {}", match end {
                host::ChildEnd::Exited(0) => "connected".to_string(),
                host::ChildEnd::Exited(n) => errno_name(n),
                host::ChildEnd::Signaled(s) => format!("signal {s}"),
            }),
            NO,
        ),
        Err(e) => b.put(CapabilityId::CgroupSockAddr, Status::Unavailable, format!("not probed: fork failed: {e}"), NO),
    }
}

/// Whether this kernel runs the Unix socket programs (`kernel::unix::probe`).
pub(super) fn probe_cgroup_unix(b: &mut Builder) {
    match mcp_guard_kernel::unix::probe() {
        Ok(()) => b.put(
            CapabilityId::CgroupUnix,
            Status::Available,
            "connect_unix and sendmsg_unix programs load, and the kernel BTF describes the \
             address they judge"
                .to_string(),
            "connect/sendmsg to Unix sockets are limited to [network] unix in the kernel",
        ),
        Err(why) => b.put(
            CapabilityId::CgroupUnix,
            Status::Unavailable,
            why,
            "connect/sendmsg to Unix sockets are not judged in the kernel: the jail's own /run, \
             /var/run, /dev/shm and /tmp keep pathname sockets, and abstract ones are kept or \
             refused as the promises below say",
        ),
    }
}

/// Where the memory, pids and cpu controllers are, and whether a cgroup can be made there.
fn probe_controllers(
    b: &mut Builder,
    mounts: &[mcp_guard_launch::mounts::Mount],
    v2: Option<(&Path, &str)>,
) {
    let mut found = Vec::new();
    let mut lacking = Vec::new();
    for controller in ["memory", "pids", "cpu"] {
        let in_v2 = v2.filter(|(_, list)| list.split_whitespace().any(|c| c == controller));
        let place = match in_v2 {
            Some((root, _)) => Some((root, "v2")),
            None => mcp_guard_launch::mounts::cgroup1_mount(mounts, controller).map(|p| (p, "v1")),
        };
        let Some((mount, version)) = place else {
            lacking.push(format!("{controller} (not mounted)"));
            continue;
        };
        // The file a limit is written to: its presence in a fresh cgroup proves the controller
        // is active there (on v2 that needs it in the parent's cgroup.subtree_control).
        let limit_file = match (version, controller) {
            ("v2", c) => format!("{c}.max"),
            (_, "memory") => "memory.limit_in_bytes".to_string(),
            (_, "pids") => "pids.max".to_string(),
            _ => "cpu.cfs_quota_us".to_string(),
        };
        let dir = mount.join(host::temp_cgroup_name());
        if let Err(e) = std::fs::create_dir(&dir) {
            lacking.push(format!(
                "{controller}: {version} {} (mkdir: {})",
                mount.display(),
                io_errno(&e)
            ));
            continue;
        }
        let active = dir.join(&limit_file).exists();
        let removed = host::remove_cgroup(&dir);
        match (active, removed) {
            (true, Ok(())) => found.push(format!("{controller}: {version} {}", mount.display())),
            (false, _) => lacking.push(format!(
                "{controller}: {version} {} has no {limit_file} in a new cgroup (add +{controller} to its cgroup.subtree_control)",
                mount.display()
            )),
            (true, Err(e)) => lacking.push(format!(
                "{controller}: {version} {} (rmdir: {})",
                mount.display(),
                io_errno(&e)
            )),
        }
    }
    let detail = if lacking.is_empty() {
        format!(
            "{}; a new cgroup in each had its limit file",
            found.join(", ")
        )
    } else {
        format!(
            "{}{}missing {}",
            found.join(", "),
            if found.is_empty() { "" } else { "; " },
            lacking.join(", ")
        )
    };
    let (status, consequence) = match (found.is_empty(), lacking.is_empty()) {
        (_, true) => (
            Status::Available,
            "[limits] memory, pids and cpu are applied through these controllers",
        ),
        (false, false) => (
            Status::Degraded,
            "[limits] on a missing controller are refused (77)",
        ),
        (true, false) => (Status::Unavailable, "[limits] are refused (77)"),
    };
    b.put(CapabilityId::CgroupControllers, status, detail, consequence);
}
