//! The jail's mechanisms: privileges (root, capabilities), Landlock, seccomp and namespaces.

use super::{Builder, CapabilityId, Errno, Status, errno_name, host, programs::active_lsms};

pub(super) fn probe_privileges(b: &mut Builder) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let eff = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| host::parse_cap_eff(&s));
    let Some(eff) = eff else {
        b.put(
            CapabilityId::Privileges,
            Status::Unavailable,
            format!("euid {euid}; CapEff unreadable in /proc/self/status"),
            "cannot tell whether eBPF, cgroups and namespaces are permitted; run as root",
        );
        return;
    };
    let has = |bit: u32| eff & (1u64 << bit) != 0;
    let present: Vec<&str> = host::CAPS
        .iter()
        .filter(|(_, bit)| has(*bit))
        .map(|(n, _)| *n)
        .collect();
    let missing: Vec<&str> = host::CAPS
        .iter()
        .filter(|(_, bit)| !has(*bit))
        .map(|(n, _)| *n)
        .collect();
    let detail = format!(
        "euid {euid}, CapEff {eff:#x}: {}{}",
        present.join(" "),
        if missing.is_empty() {
            String::new()
        } else {
            format!("; missing {}", missing.join(" "))
        }
    );
    if missing.is_empty() {
        b.put(
            CapabilityId::Privileges,
            Status::Available,
            detail,
            "can load eBPF, manage cgroups, create namespaces and drop privileges for servers",
        );
    } else if present.is_empty() {
        b.put(
            CapabilityId::Privileges,
            Status::Unavailable,
            detail,
            "exec refuses to launch enforced servers (77); run mcp-guard as root",
        );
    } else {
        b.put(
            CapabilityId::Privileges,
            Status::Degraded,
            detail,
            "enforcements needing the missing capabilities are refused (77); run as root",
        );
    }
}

pub(super) fn probe_landlock(b: &mut Builder) {
    const NO: &str = "no filesystem confinement: [filesystem] policies are refused (77)";
    let active = active_lsms();
    let abi = mcp_guard_launch::landlock::abi()
        .map(i64::from)
        .map_err(|e| Errno::bare(e.raw_os_error().unwrap_or(0)));
    match abi {
        Ok(abi) => match host::landlock_ruleset_works() {
            Ok(()) => b.put(
                CapabilityId::Landlock,
                Status::Available,
                format!("ABI {abi}, a ruleset was created: covers {}", host::landlock_coverage(abi)),
                if abi >= 4 {
                    "servers are confined to their [filesystem] paths; TCP is also restrictable by landlock"
                } else {
                    "servers are confined to their [filesystem] paths (egress is eBPF's job)"
                },
            ),
            Err(e) => b.put(CapabilityId::Landlock, Status::Unavailable, format!("ABI {abi} but creating a ruleset failed: {e}"), NO),
        },
        Err(e) => b.put(
            CapabilityId::Landlock,
            Status::Unavailable,
            format!(
                "landlock_create_ruleset(VERSION) failed: {} (active LSMs: {}; add landlock to lsm= on the kernel command line)",
                errno_name(e.errno),
                active
            ),
            NO,
        ),
    }
}

pub(super) fn probe_seccomp(b: &mut Builder) {
    const NO: &str = "no syscall filter: exec refuses to run enforced (77)";
    let actions = [
        ("kill_process", 0x8000_0000u32),
        ("errno", 0x0005_0000),
        ("user_notif", 0x7fc0_0000),
        ("log", 0x7ffc_0000),
    ];
    let avail: Vec<&str> = actions
        .iter()
        .filter(|(_, a)| host::seccomp_action_available(*a))
        .map(|(n, _)| *n)
        .collect();
    match host::in_child(host::child_seccomp_filter, |_| {}) {
        Ok(host::ChildEnd::Exited(0)) => b.put(
            CapabilityId::Seccomp,
            Status::Available,
            format!(
                "a child installed a filter (SECCOMP_SET_MODE_FILTER); actions: {}",
                avail.join(" ")
            ),
            "servers run under the built-in syscall deny list plus [syscalls]",
        ),
        Ok(host::ChildEnd::Exited(n)) => b.put(
            CapabilityId::Seccomp,
            Status::Unavailable,
            format!("installing a filter failed: {}", errno_name(n)),
            NO,
        ),
        Ok(host::ChildEnd::Signaled(s)) => b.put(
            CapabilityId::Seccomp,
            Status::Unavailable,
            format!("probe child died of signal {s}"),
            NO,
        ),
        Err(e) => b.put(
            CapabilityId::Seccomp,
            Status::Unavailable,
            format!("not probed: fork failed: {e}"),
            NO,
        ),
    }
}

pub(super) fn probe_namespaces(b: &mut Builder) {
    let kinds = [
        ("mount", libc::CLONE_NEWNS),
        ("pid", libc::CLONE_NEWPID),
        ("ipc", libc::CLONE_NEWIPC),
        ("uts", libc::CLONE_NEWUTS),
    ];
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    for (name, flag) in kinds {
        match host::in_child(|| host::child_unshare(flag), |_| {}) {
            Ok(host::ChildEnd::Exited(0)) => ok.push(name),
            Ok(host::ChildEnd::Exited(n)) => refused.push(format!("{name} ({})", errno_name(n))),
            Ok(host::ChildEnd::Signaled(s)) => refused.push(format!("{name} (signal {s})")),
            Err(e) => refused.push(format!("{name} (fork: {e})")),
        }
    }
    let detail = if refused.is_empty() {
        format!("a child unshared each of {}", ok.join(", "))
    } else {
        format!(
            "unshared [{}]; refused {}",
            ok.join(", "),
            refused.join(", ")
        )
    };
    let (status, consequence) = match (ok.is_empty(), refused.is_empty()) {
        (_, true) => (
            Status::Available,
            "servers get private mount, pid, ipc and uts namespaces",
        ),
        (false, false) => (
            Status::Degraded,
            "the jail cannot isolate the refused namespaces: exec refuses (77)",
        ),
        (true, false) => (
            Status::Unavailable,
            "no namespace isolation: exec refuses (77)",
        ),
    };
    b.put(CapabilityId::Namespaces, status, detail, consequence);

    let sysctls: Vec<String> = [
        "/proc/sys/user/max_user_namespaces",
        "/proc/sys/kernel/unprivileged_userns_clone",
        "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
    ]
    .iter()
    .filter_map(|p| {
        let v = std::fs::read_to_string(p).ok()?;
        let name = p.trim_start_matches("/proc/sys/").replace('/', ".");
        Some(format!("{name}={}", v.trim()))
    })
    .collect();
    let sysctls = sysctls.join(" ");
    match host::in_child(|| host::child_unshare(libc::CLONE_NEWUSER), |_| {}) {
        Ok(host::ChildEnd::Exited(0)) => b.put(
            CapabilityId::UserNamespaces,
            Status::Available,
            format!("a child unshared CLONE_NEWUSER; {sysctls}"),
            "available to the jail; as root it does not depend on them",
        ),
        other => b.put(
            CapabilityId::UserNamespaces,
            Status::Unavailable,
            format!(
                "unshare(CLONE_NEWUSER) in a child: {}; {sysctls}",
                match other {
                    Ok(host::ChildEnd::Exited(n)) => errno_name(n),
                    Ok(host::ChildEnd::Signaled(s)) => format!("signal {s}"),
                    Err(e) => format!("fork failed: {e}"),
                }
            ),
            "servers get no user namespace; as root the jail still drops to the policy's user and capabilities",
        ),
    }
}
