//! What the user is told when the kernel refuses a session's kernel guard: the kernel error with
//! the doctor capability that reports the same thing and how to fix it. The agent's kernel guard
//! service and a standalone `exec` say it alike; `doctor` names the same capabilities.

use mcp_guard_ebpf::programs;

use crate::capability::CapabilityId;
use mcp_guard_kernel::loader::KernelError;

/// The kernel error with the doctor capability that reports the same thing and how to fix it.
pub fn explain_kernel(e: &KernelError) -> String {
    let (cap, fix) = match e {
        KernelError::Btf(_) => (
            CapabilityId::Btf,
            "a kernel built with CONFIG_DEBUG_INFO_BTF=y is needed",
        ),
        KernelError::Program { name, .. }
            if [programs::SYS_ENTER, programs::SYS_EXIT].contains(name) =>
        {
            (
                CapabilityId::TpBtf,
                "tp_btf programs need Linux 5.5+ with BTF, and root (CAP_BPF + CAP_PERFMON)",
            )
        }
        KernelError::Program { .. } | KernelError::Cgroup { .. } => (
            CapabilityId::CgroupSockAddr,
            "cgroup_sock_addr programs need a cgroup v2 hierarchy and root (CAP_BPF + \
             CAP_NET_ADMIN)",
        ),
        KernelError::UnixUnavailable(_) => (
            CapabilityId::CgroupUnix,
            "the cgroup connect_unix/sendmsg_unix programs need Linux 6.7+; on an older kernel \
             run under --observe, or set [enforcement] allow_degraded = true to run without them",
        ),
        KernelError::Resolve(_) => {
            return format!(
                "eBPF kernel guard: {e} (a host name in [network] allow could not be resolved: \
                 check /etc/resolv.conf and the name)"
            );
        }
        _ => (
            CapabilityId::EbpfObject,
            "run as root (or with CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON) on Linux 5.8+ with BTF",
        ),
    };
    format!(
        "eBPF kernel guard unavailable: {} (`mcp-guard doctor` reports this as {}: unavailable); \
         {fix}",
        error_chain(e),
        cap.name()
    )
}

/// `e` with its sources, so an aya error shows the syscall's errno (a source whose text is
/// already in the message is not repeated).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_refusals_name_the_doctor_capability_that_reports_them() {
        let cases = [
            (KernelError::MissingMap("EVENTS"), CapabilityId::EbpfObject),
            (
                KernelError::Cgroup {
                    path: "/sys/fs/cgroup/x".into(),
                    source: std::io::Error::from_raw_os_error(libc::ENOENT),
                },
                CapabilityId::CgroupSockAddr,
            ),
            (
                KernelError::UnixUnavailable("no attach type".into()),
                CapabilityId::CgroupUnix,
            ),
        ];
        for (e, cap) in cases {
            let text = explain_kernel(&e);
            assert!(
                text.contains(&format!("reports this as {}: unavailable", cap.name())),
                "{text}"
            );
        }
    }
}
