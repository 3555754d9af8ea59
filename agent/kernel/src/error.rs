//! What can go wrong between mcp-guard's eBPF object and the kernel: one error type for the
//! loader and the modules it drives (program loading, bind ports, name resolution).

use ipnet::IpNet;
use mcp_guard_ebpf::MAX_PORT_RANGES;

use super::resolve;

/// What can go wrong between the eBPF object and the kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The object did not load (verifier, missing privileges, old kernel).
    #[error(
        "loading mcp-guard's eBPF programs failed: {0} (root or CAP_BPF+CAP_NET_ADMIN+CAP_PERFMON is needed)"
    )]
    Load(#[from] aya::EbpfError),
    /// A program is missing from the object or did not load or attach.
    #[error("eBPF program {name}: {source}")]
    Program {
        /// Program name.
        name: &'static str,
        /// Why.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A map is missing, has the wrong type or refused an update.
    #[error("eBPF map {name}: {source}")]
    Map {
        /// Map name.
        name: &'static str,
        /// Why.
        #[source]
        source: aya::maps::MapError,
    },
    /// The kernel's BTF (needed for the `tp_btf` tracepoints) could not be read.
    #[error("reading the kernel BTF from /sys/kernel/btf/vmlinux: {0}")]
    Btf(#[from] aya::BtfError),
    /// The eBPF object does not contain a map the agent needs.
    #[error("the eBPF object has no map {0}")]
    MissingMap(&'static str),
    /// The eBPF object does not contain a program the agent needs.
    #[error("the eBPF object has no program {0}")]
    MissingProgram(&'static str),
    /// The cgroup directory could not be opened.
    #[error("cgroup {path}: {source}")]
    Cgroup {
        /// The cgroup directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// One network has more distinct port ranges than a map entry holds.
    #[error(
        "{net} needs {count} port ranges; at most {MAX_PORT_RANGES} fit (merge ranges in the policy)"
    )]
    TooManyPortRanges {
        /// The network.
        net: IpNet,
        /// How many ranges it needed.
        count: usize,
    },
    /// A sensitive path the kernel cannot match.
    #[error("sensitive path {path}: {why}")]
    SensitivePath {
        /// The path.
        path: String,
        /// Why it cannot be matched.
        why: &'static str,
    },
    /// The event stream was already taken.
    #[error("the kernel event stream can be taken only once")]
    EventsTaken,
    /// Async setup (event reader, resolver) failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A DNS name could not be resolved or the resolver not configured.
    #[error("{0}")]
    Resolve(#[from] resolve::ResolveError),
    /// A server is already guarded on this cgroup.
    #[error("cgroup {0} is already guarded")]
    AlreadyGuarded(u64),
    /// The bpffs directory for pinned objects is not usable.
    #[error("pinning on bpffs at {path}: {why}")]
    Pin {
        /// The path.
        path: String,
        /// Why.
        why: String,
    },
    /// A server to adopt is not (or no longer) guarded in the pinned maps.
    #[error("cgroup {0} is not guarded in the pinned maps: its enforcement did not survive")]
    NotGuarded(u64),
    /// The kernel cannot run the unix programs, and the server's spec needs them.
    #[error(
        "connect/sendmsg to Unix sockets cannot be limited to [network] unix on this kernel \
         (cgroup connect_unix/sendmsg_unix programs, Linux 6.7+): {0}"
    )]
    UnixUnavailable(String),
    /// A `[network] unix` entry the kernel cannot match.
    #[error("unix socket {0}")]
    UnixSocket(String),
}
