//! What mcp-guard's eBPF object needs from the kernel, since which mainline release, and what
//! mcp-guard does on a kernel without it; and [`probe_programs`], which tries each program here.
//!
//! [`NEEDS`] is the one list: every program type, attach type, map type, helper and kernel
//! interface the programs in `agent-ebpf` use, with the first release that has it for the
//! programs that use it (a helper can exist for one program type releases before another may
//! call it: `bpf_get_current_pid_tgid` is 4.2, but `cgroup_sock_addr` programs may call it from
//! 5.7). The README's "Supported kernels" table is rendered from it ([`markdown_table`]; a test
//! keeps the two the same).
//!
//! mcp-guard supports kernels from [`OLDEST`] on. Everything the egress, bind and syscall-tracing
//! programs need is older than that, so on a supported kernel they load or the guard is refused
//! as a whole (exec exits 77 naming the kernel guard). What is newer (the `connect_unix` and
//! `sendmsg_unix` programs, Linux 6.7) is loaded on its own and, where the kernel lacks it,
//! skipped: the loader says why, `doctor` reports it (`cgroup_unix`), and a launch whose policy
//! needs it refuses (77) naming the promise, unless it runs under `--observe` or the policy sets
//! `allow_degraded`.
//!
//! No CO-RE: the programs read only stable layouts (the `bpf_sock_addr` context, `x86_64`'s UAPI
//! `struct pt_regs`, syscall arguments); the one kernel-internal layout the unix programs read
//! (`struct bpf_sock_addr_kern`) comes from the kernel's own BTF at load.

use aya::{
    Btf, Ebpf,
    programs::{BtfTracePoint, CgroupSockAddr},
};
use mcp_guard_ebpf::programs;

use super::{
    loader::{EBPF_OBJECT, KernelError, PROGRAM_NAMES},
    program_load::TRACE_PROGRAMS,
    unix::UnixPrograms,
};

/// A mainline kernel release, `major.minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Release(pub u32, pub u32);

impl std::fmt::Display for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// The oldest kernel mcp-guard supports (Ubuntu 22.04's): every program it cannot do without
/// needs nothing newer.
pub const OLDEST: Release = Release(5, 15);

/// The syscall tracepoints.
const TRACE: &[&str] = &[programs::SYS_ENTER, programs::SYS_EXIT];
/// The Unix socket verdicts.
const UNIX: &[&str] = &[programs::CONNECT_UNIX, programs::SENDMSG_UNIX];
/// The DNS capture programs.
const DNS: &[&str] = &[programs::DNS_EGRESS, programs::DNS_INGRESS];
/// The TCP bind verdicts.
const BIND: &[&str] = &[programs::BIND4, programs::BIND6];
/// Every program.
const ALL: &[&str] = &PROGRAM_NAMES;
/// Every program that writes to the ring buffer or stamps a record: all but the bind ones.
const RECORDING: &[&str] = &[
    programs::CONNECT4,
    programs::CONNECT6,
    programs::SENDMSG4,
    programs::SENDMSG6,
    programs::SYS_ENTER,
    programs::SYS_EXIT,
    programs::CONNECT_UNIX,
    programs::SENDMSG_UNIX,
    programs::DNS_EGRESS,
    programs::DNS_INGRESS,
];
/// The `cgroup_sock_addr` programs.
const SOCK_ADDR: &[&str] = &[
    programs::CONNECT4,
    programs::CONNECT6,
    programs::SENDMSG4,
    programs::SENDMSG6,
    programs::BIND4,
    programs::BIND6,
    programs::CONNECT_UNIX,
    programs::SENDMSG_UNIX,
];

/// One thing the object uses and the first release that has it for its users.
#[derive(Clone, Copy, Debug)]
pub struct Need {
    /// What it is, as the kernel names it.
    pub what: &'static str,
    /// The first mainline release that has it for `programs`.
    pub since: Release,
    /// The programs that use it.
    pub programs: &'static [&'static str],
}

const fn need(what: &'static str, since: Release, programs: &'static [&'static str]) -> Need {
    Need {
        what,
        since,
        programs,
    }
}

/// Everything the programs use, by kind, oldest first within a kind.
pub const NEEDS: &[Need] = &[
    // Program and attach types, and how they are attached.
    need(
        "program type `cgroup_sock_addr`, attach types `cgroup_inet4_connect`, `cgroup_inet6_connect`",
        Release(4, 17),
        &[programs::CONNECT4, programs::CONNECT6],
    ),
    need(
        "attach types `cgroup_inet4_bind`, `cgroup_inet6_bind`",
        Release(4, 17),
        BIND,
    ),
    need(
        "attach types `cgroup_udp4_sendmsg`, `cgroup_udp6_sendmsg`",
        Release(4, 18),
        &[programs::SENDMSG4, programs::SENDMSG6],
    ),
    need(
        "program type `cgroup_skb`, attach types `cgroup_inet_egress`, `cgroup_inet_ingress`; `bpf_skb_load_bytes`",
        Release(4, 10),
        DNS,
    ),
    need(
        "kernel BTF in /sys/kernel/btf/vmlinux",
        Release(5, 4),
        &[
            programs::SYS_ENTER,
            programs::SYS_EXIT,
            programs::CONNECT_UNIX,
            programs::SENDMSG_UNIX,
        ],
    ),
    need(
        "program type `tracing`, attach type `trace_raw_tp` (`tp_btf`: BTF-typed `sys_enter`/`sys_exit` arguments)",
        Release(5, 5),
        TRACE,
    ),
    need(
        "`bpf_link` attachments (`BPF_LINK_CREATE` on cgroups, pinned links)",
        Release(5, 7),
        ALL,
    ),
    need(
        "attach types `cgroup_unix_connect`, `cgroup_unix_sendmsg`; `bpf_sock_addr_kern.uaddrlen` in BTF",
        Release(6, 7),
        UNIX,
    ),
    // Verifier features.
    need("BPF-to-BPF calls", Release(4, 16), ALL),
    need("bounded loops", Release(5, 3), ALL),
    // Map types.
    need("map type `hash`", Release(3, 19), ALL),
    need("map type `array`", Release(3, 19), UNIX),
    need("map type `percpu_array`", Release(4, 6), RECORDING),
    need(
        "map type `lpm_trie`",
        Release(4, 11),
        &[
            programs::CONNECT4,
            programs::CONNECT6,
            programs::SENDMSG4,
            programs::SENDMSG6,
            programs::SYS_ENTER,
            programs::SYS_EXIT,
        ],
    ),
    need("map type `ringbuf`", Release(5, 8), RECORDING),
    // Helpers.
    need(
        "`bpf_map_lookup_elem`, `bpf_map_update_elem`, `bpf_map_delete_elem`",
        Release(3, 19),
        ALL,
    ),
    need(
        "`bpf_get_current_pid_tgid`, `bpf_get_current_cgroup_id` in `tracing` programs",
        Release(5, 5),
        TRACE,
    ),
    need(
        "`bpf_get_current_pid_tgid`, `bpf_get_current_cgroup_id`, `bpf_get_current_ancestor_cgroup_id` in `cgroup_sock_addr` programs",
        Release(5, 7),
        SOCK_ADDR,
    ),
    need(
        "`bpf_skb_cgroup_id`, `bpf_skb_ancestor_cgroup_id` in `cgroup_skb` programs",
        Release(5, 7),
        DNS,
    ),
    need(
        "`bpf_probe_read_user`, `bpf_probe_read_user_str`, `bpf_probe_read_kernel`",
        Release(5, 5),
        TRACE,
    ),
    need(
        "`bpf_send_signal`",
        Release(5, 3),
        &[programs::SYS_ENTER, programs::SYS_EXIT],
    ),
    need(
        "`bpf_ktime_get_boot_ns`; `bpf_ringbuf_output`, `bpf_ringbuf_reserve`, `bpf_ringbuf_submit`, `bpf_ringbuf_query`",
        Release(5, 8),
        RECORDING,
    ),
    need(
        "`bpf_probe_read_kernel`, `bpf_probe_read_kernel_str` in `cgroup_sock_addr` programs (CAP_PERFMON)",
        Release(5, 8),
        UNIX,
    ),
];

/// The first release that has everything `program` needs.
pub fn since(program: &str) -> Release {
    NEEDS
        .iter()
        .filter(|n| n.programs.contains(&program))
        .map(|n| n.since)
        .max()
        .unwrap_or(Release(0, 0))
}

/// The README's table: each need, its release and its programs.
pub fn markdown_table() -> String {
    let mut out =
        String::from("| what the programs use | since Linux | programs |\n|---|---|---|\n");
    for n in NEEDS {
        let users = if n.programs == ALL {
            "all".to_string()
        } else if n.programs == RECORDING {
            format!("all but {}", BIND.join(", "))
        } else {
            n.programs.join(", ")
        };
        out.push_str(&format!("| {} | {} | {users} |\n", n.what, n.since));
    }
    out
}

/// Whether one program of the object loads (and, for the tracepoints, attaches) here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramStatus {
    /// Program name in the object.
    pub name: &'static str,
    /// What it does, for people.
    pub role: &'static str,
    /// The first release that has everything it needs.
    pub since: Release,
    /// `Ok` with the instructions the verifier processed (`None` where the kernel does not say,
    /// before 5.16) when it works here, else why not.
    pub result: Result<Option<u32>, String>,
}

/// Loads a fresh copy of the object and tries every program on its own: unlike
/// [`KernelGuard::load`](super::loader::KernelGuard::load), one failure does not hide the others.
pub fn probe_programs() -> Vec<ProgramStatus> {
    let roles = [
        (programs::CONNECT4, "egress verdicts for IPv4 connect"),
        (programs::CONNECT6, "egress verdicts for IPv6 connect"),
        (programs::SENDMSG4, "egress verdicts for IPv4 sendmsg (UDP)"),
        (programs::SENDMSG6, "egress verdicts for IPv6 sendmsg (UDP)"),
        (programs::BIND4, "TCP bind verdicts for IPv4"),
        (programs::BIND6, "TCP bind verdicts for IPv6"),
        (
            programs::SYS_ENTER,
            "exec/open events and sensitive-path kill (tp_btf/sys_enter)",
        ),
        (programs::SYS_EXIT, "open results (tp_btf/sys_exit)"),
        (programs::CONNECT_UNIX, "Unix socket verdicts for connect"),
        (programs::SENDMSG_UNIX, "Unix socket verdicts for sendmsg"),
        (
            programs::DNS_EGRESS,
            "DNS queries the server sends (host names)",
        ),
        (
            programs::DNS_INGRESS,
            "DNS answers the server receives (host names)",
        ),
    ];
    let status = |name, role, result| ProgramStatus {
        name,
        role,
        since: since(name),
        result,
    };
    let mut ebpf = match Ebpf::load(EBPF_OBJECT) {
        Ok(ebpf) => ebpf,
        Err(e) => {
            let why = KernelError::Load(e).to_string();
            return roles
                .iter()
                .map(|(n, r)| status(*n, *r, Err(why.clone())))
                .collect();
        }
    };
    // Loaded by mcp-guard itself, both at once (see `unix`).
    let unix = UnixPrograms::load(&mut ebpf, EBPF_OBJECT);
    let btf = Btf::from_sys_fs().map_err(|e| KernelError::Btf(e).to_string());
    let mut out = Vec::new();
    for (name, role) in roles {
        if UNIX.contains(&name) {
            let result = match &unix {
                Ok(progs) => Ok(progs.verified_insns(name)),
                Err(why) => Err(why.clone()),
            };
            out.push(status(name, role, result));
            continue;
        }
        let result = match ebpf.program_mut(name) {
            None => Err(KernelError::MissingProgram(name).to_string()),
            Some(program) => match TRACE_PROGRAMS.iter().find(|(n, _)| *n == name) {
                Some((_, target)) => try_tracepoint(program, target, &btf),
                None if DNS.contains(&name) => try_skb(program),
                None => try_sock_addr(program),
            },
        };
        out.push(status(name, role, result));
    }
    out
}

/// The verifier's count for a loaded program.
fn verified(program: &aya::programs::Program) -> Option<u32> {
    program.info().ok()?.verified_instruction_count()
}

fn try_tracepoint(
    program: &mut aya::programs::Program,
    target: &str,
    btf: &Result<Btf, String>,
) -> Result<Option<u32>, String> {
    let btf = btf.as_ref().map_err(Clone::clone)?;
    let p: &mut BtfTracePoint = program
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())?;
    p.load(target, btf).map_err(|e| e.to_string())?;
    p.attach().map_err(|e| e.to_string())?;
    Ok(verified(program))
}

fn try_skb(program: &mut aya::programs::Program) -> Result<Option<u32>, String> {
    let p: &mut aya::programs::CgroupSkb = program
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())?;
    p.load().map_err(|e| e.to_string())?;
    Ok(verified(program))
}

fn try_sock_addr(program: &mut aya::programs::Program) -> Result<Option<u32>, String> {
    let p: &mut CgroupSockAddr = program
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())?;
    p.load().map_err(|e| e.to_string())?;
    Ok(verified(program))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program_load::EGRESS_PROGRAMS;

    #[test]
    fn every_program_is_listed_and_the_ones_the_guard_needs_are_old_enough() {
        for name in PROGRAM_NAMES {
            assert!(
                NEEDS.iter().any(|n| n.programs.contains(&name)),
                "{name} has no entry in NEEDS"
            );
        }
        // What the guard cannot run without must exist on every supported kernel; anything
        // newer has to be loaded on its own with a fallback, as the unix programs are.
        for name in EGRESS_PROGRAMS
            .iter()
            .chain(TRACE_PROGRAMS.iter().map(|(n, _)| n))
            .chain(DNS)
        {
            assert!(since(name) <= OLDEST, "{name} needs Linux {}", since(name));
        }
        for name in UNIX {
            assert_eq!(since(name), Release(6, 7));
        }
        assert_eq!(since(programs::SYS_ENTER), Release(5, 8));
        assert_eq!(since(programs::CONNECT4), Release(5, 8));
        // The bind programs use no ring buffer: the cgroup helpers (5.7) are their newest need.
        assert_eq!(since(programs::BIND4), Release(5, 7));
    }

    #[test]
    fn the_readme_shows_the_table() {
        let readme = include_str!("../../../README.md");
        let table = markdown_table();
        assert!(
            readme.contains(&table),
            "README.md's supported-kernels table differs from kernel::compat::NEEDS; put this \
             there:\n{table}"
        );
    }
}
