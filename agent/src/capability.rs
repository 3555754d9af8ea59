//! The host capabilities mcp-guard needs, by the stable names that `mcp-guard doctor` reports
//! and that refusals elsewhere cite ("`mcp-guard doctor` reports this as btf: unavailable").

/// Everything the doctor checks. The JSON `capability` field is [`CapabilityId::name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CapabilityId {
    /// Running as root / the effective capabilities mcp-guard uses.
    Privileges,
    /// Kernel BTF at /sys/kernel/btf/vmlinux.
    Btf,
    /// tracefs mounted (mounted by the doctor when it was not).
    Tracefs,
    /// mcp-guard's own embedded eBPF programs load.
    EbpfObject,
    /// `cgroup_sock_addr` programs load, attach to a cgroup and judge a connect.
    CgroupSockAddr,
    /// The `connect_unix`/`sendmsg_unix` attach types (Linux 6.7+) for Unix socket verdicts.
    CgroupUnix,
    /// Tracepoint programs load and attach.
    Tracepoint,
    /// Raw tracepoint programs load and attach.
    RawTracepoint,
    /// BTF-typed raw tracepoints (`tp_btf`) load and attach.
    TpBtf,
    /// `bpf_send_signal` from `tp_btf/sys_enter` really kills a task.
    SendSignal,
    /// BPF LSM programs load and attach.
    Lsm,
    /// Ring buffer maps.
    Ringbuf,
    /// LPM trie maps.
    LpmTrie,
    /// Hash maps.
    HashMap,
    /// Landlock.
    Landlock,
    /// seccomp filter mode.
    Seccomp,
    /// A cgroup v2 hierarchy where cgroups can be created.
    CgroupV2,
    /// memory, pids and cpu controllers (v2 or v1) for `[limits]`.
    CgroupControllers,
    /// mount, pid, ipc and uts namespaces can be created.
    Namespaces,
    /// User namespaces can be created.
    UserNamespaces,
    /// A Docker-Engine-API endpoint answers (for the container backend).
    ContainerEngine,
    /// An mcp-guard agent listens on its socket (exec then hands sessions to it).
    Agent,
    /// The bpffs pool where standalone execs share verified eBPF programs.
    StandaloneSlots,
}

impl CapabilityId {
    /// Every capability, in report order.
    pub const ALL: [CapabilityId; 23] = [
        Self::Privileges,
        Self::Btf,
        Self::Tracefs,
        Self::EbpfObject,
        Self::CgroupSockAddr,
        Self::CgroupUnix,
        Self::Tracepoint,
        Self::RawTracepoint,
        Self::TpBtf,
        Self::SendSignal,
        Self::Lsm,
        Self::Ringbuf,
        Self::LpmTrie,
        Self::HashMap,
        Self::Landlock,
        Self::Seccomp,
        Self::CgroupV2,
        Self::CgroupControllers,
        Self::Namespaces,
        Self::UserNamespaces,
        Self::ContainerEngine,
        Self::Agent,
        Self::StandaloneSlots,
    ];

    /// The stable name used in output and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Privileges => "privileges",
            Self::Btf => "btf",
            Self::Tracefs => "tracefs",
            Self::EbpfObject => "ebpf_object",
            Self::CgroupSockAddr => "cgroup_sock_addr",
            Self::CgroupUnix => "cgroup_unix",
            Self::Tracepoint => "tracepoint",
            Self::RawTracepoint => "raw_tracepoint",
            Self::TpBtf => "tp_btf",
            Self::SendSignal => "send_signal",
            Self::Lsm => "lsm",
            Self::Ringbuf => "ringbuf",
            Self::LpmTrie => "lpm_trie",
            Self::HashMap => "hash_map",
            Self::Landlock => "landlock",
            Self::Seccomp => "seccomp",
            Self::CgroupV2 => "cgroup_v2",
            Self::CgroupControllers => "cgroup_controllers",
            Self::Namespaces => "namespaces",
            Self::UserNamespaces => "user_namespaces",
            Self::ContainerEngine => "container_engine",
            Self::Agent => "agent",
            Self::StandaloneSlots => "standalone_slots",
        }
    }

    /// Whether full enforcement needs it (the others only add to it or enable a backend).
    /// `cgroup_unix` is not: without it, what `[network] unix` promises is refused per launch.
    pub fn required(self) -> bool {
        !matches!(
            self,
            Self::Lsm
                | Self::CgroupUnix
                | Self::UserNamespaces
                | Self::ContainerEngine
                | Self::Agent
                | Self::StandaloneSlots
        )
    }
}
