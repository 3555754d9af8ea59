//! A kernel event as plain data: what a guarded server did (or what was done about it), parsed
//! from the eBPF ring buffer by the agent's kernel module and read by the session's analysis
//! (correlation, detection) and the store's event records.
//!
//! The payload enum is [`KernelEventKind`] (the raw kernel payload); the contract's `kind` name
//! of an event is [`EventKind`](crate::EventKind), which [`KernelEventKind::contract_kind`] gives.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use crate::{dns::DnsPacket, records::EventKind};

/// One thing a guarded server did (or that was done about it).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelEvent {
    /// `CLOCK_BOOTTIME` nanoseconds (see [`boot_ns_now`]).
    pub ts_boot_ns: u64,
    /// The cgroup v2 id of the process.
    pub cgroup_id: u64,
    /// Process id (tgid); 0 for events made in userspace (`Resolve`).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Server name.
    pub server: Arc<str>,
    /// Session id.
    pub session: Arc<str>,
    /// What happened.
    pub kind: KernelEventKind,
}

/// The kinds of kernel event.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KernelEventKind {
    /// execve/execveat and its outcome.
    Exec {
        /// The path passed to exec.
        path: String,
        /// The first arguments (at most 4, each at most 63 bytes).
        argv: Vec<String>,
        /// 0 (the program runs) or -errno (the caller goes on); `None` when the kernel could
        /// not tell (an exec by a thread other than the leader, or one reported at entry).
        result: Option<i64>,
    },
    /// A file open and its outcome.
    Open {
        /// The path as passed (possibly relative to the process's cwd or a dirfd).
        path: String,
        /// open flags.
        flags: u32,
        /// fd or -errno; `None` only for an attempt drained from an earlier build's ring
        /// buffer, which reported the result in a record of its own.
        result: Option<i64>,
    },
    /// A connect or a sendmsg with a destination, and the egress verdict.
    Connect {
        /// Destination.
        addr: SocketAddr,
        /// Transport protocol number (6 TCP, 17 UDP).
        proto: u32,
        /// connect or sendmsg.
        op: SockOp,
        /// The verdict.
        verdict: EgressVerdict,
    },
    /// A connect or a sendmsg with a destination to a Unix socket, and the `[network] unix`
    /// verdict.
    Unix {
        /// The socket's path as passed, or `@name` for an abstract socket (the kernel's copy);
        /// empty when the kernel program could not read it.
        path: String,
        /// `SOCK_STREAM` (1), `SOCK_DGRAM` (2) or `SOCK_SEQPACKET` (5).
        sock_type: u32,
        /// connect or sendmsg.
        op: SockOp,
        /// The verdict.
        verdict: EgressVerdict,
    },
    /// mcp-guard's kernel program killed the process (a sensitive path on open).
    Killed {
        /// The path it tried to open.
        path: String,
        /// The signal sent.
        signal: u32,
    },
    /// A host name in the allowlist was (re)resolved; these addresses are now allowed.
    Resolve {
        /// The name.
        name: String,
        /// The addresses now allowed for it (including still-valid earlier ones).
        addrs: Vec<IpAddr>,
        /// Seconds until the answer expires.
        ttl_secs: u64,
        /// Why resolving failed, if it did.
        error: Option<String>,
    },
    /// A DNS packet the server sent or received: the session's analysis learns from it which
    /// names the addresses it connects to have; it is not stored as an event of its own.
    Dns(Box<DnsPacket>),
}

/// Which socket operation a `Connect` event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SockOp {
    /// connect(2).
    Connect,
    /// sendmsg/sendto with a destination.
    Sendmsg,
}

/// An egress verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EgressVerdict {
    /// Allowed by the allowlist.
    Allowed,
    /// Denied (EPERM).
    Denied,
    /// Not in the allowlist, let through because the server is in observe mode.
    Observed,
}

/// `CLOCK_BOOTTIME` now, in nanoseconds: the clock kernel events are stamped with.
pub fn boot_ns_now() -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; the clock ids used are always supported on Linux.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    // Boot and monotonic clocks are never negative; 0 if one were.
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000) + nanos
}

/// Wall-clock nanoseconds since the epoch for a `CLOCK_BOOTTIME` stamp.
pub fn boot_to_unix_ns(ts_boot_ns: u64) -> u64 {
    let real = clock_ns(libc::CLOCK_REALTIME);
    let boot = clock_ns(libc::CLOCK_BOOTTIME);
    real.saturating_sub(boot.saturating_sub(ts_boot_ns))
}

impl KernelEventKind {
    /// The event's `kind` in DESIGN.md's events contract.
    pub fn contract_kind(&self) -> EventKind {
        match self {
            Self::Exec { .. } => EventKind::Exec,
            Self::Open { .. } => EventKind::Open,
            Self::Connect {
                op: SockOp::Connect,
                ..
            }
            | Self::Unix {
                op: SockOp::Connect,
                ..
            } => EventKind::Connect,
            Self::Connect {
                op: SockOp::Sendmsg,
                ..
            }
            | Self::Unix {
                op: SockOp::Sendmsg,
                ..
            } => EventKind::Sendmsg,
            Self::Killed { .. } => EventKind::Killed,
            Self::Resolve { .. } => EventKind::Resolve,
            Self::Dns(_) => EventKind::Other("dns".to_string()),
        }
    }
}
