//! Types shared between mcp-guard's eBPF programs and its userspace agent.
//!
//! Everything here is `#[repr(C)]` plain data: the kernel side reads and writes it through maps
//! and the ring buffer, userspace through aya. Layout changes must be made on both sides at once,
//! which is why the types live in one crate.
#![no_std]
#![expect(
    clippy::inline_always,
    reason = "helpers the eBPF programs call: the BPF target wants them inlined"
)]

/// Names of the maps in the eBPF object, as userspace looks them up.
pub mod maps {
    /// `HashMap<u64 cgroup id, GuardConfig>`: the cgroups mcp-guard guards.
    pub const GUARDED: &str = "GUARDED";
    /// `LpmTrie<Ip4Key, PortSet>`: per-cgroup IPv4 egress allowlist.
    pub const ALLOW_V4: &str = "ALLOW_V4";
    /// `LpmTrie<Ip6Key, PortSet>`: per-cgroup IPv6 egress allowlist.
    pub const ALLOW_V6: &str = "ALLOW_V6";
    /// `LpmTrie<PathKey, u32>`: per-cgroup sensitive paths (exact, NUL-terminated, or prefixes).
    pub const SENSITIVE: &str = "SENSITIVE";
    /// `HashMap<NameKey, u32>`: per-cgroup sensitive file names (any directory).
    pub const SENSITIVE_NAMES: &str = "SENSITIVE_NAMES";
    /// `RingBuf`: every event of every guarded cgroup.
    pub const EVENTS: &str = "EVENTS";
    /// `PerCpuArray<u64>` indexed by `drop_reason::*`: events the kernel could not deliver whole.
    pub const DROPS: &str = "DROPS";
    /// `HashMap<UnixKey, u32>`: per-cgroup Unix sockets a server may connect or send to.
    pub const ALLOW_UNIX: &str = "ALLOW_UNIX";
    /// `Array<SockAddrKernLayout>` (one entry): where the kernel keeps the socket address the
    /// unix programs judge, read from the kernel's BTF at load.
    pub const UNIX_LAYOUT: &str = "UNIX_LAYOUT";
    /// `HashMap<u64 cgroup id, BindPorts>`: the TCP ports a guarded cgroup may bind; no entry:
    /// any.
    pub const BIND_PORTS: &str = "BIND_PORTS";
    /// `HashMap<u64 pid_tgid, ExecDoneEvent>`: execs waiting for their result (`sys_enter` to
    /// `sys_exit`).
    pub const EXEC_PENDING: &str = "EXEC_PENDING";
    /// `HashMap<u64 pid_tgid, u32>`: opens whose path is checked again at `sys_exit`.
    pub const REREAD: &str = "REREAD";
}

/// Packets to or from this port are DNS to the `dns_*` programs.
pub const DNS_PORT: u16 = 53;

/// Bytes of a DNS payload a [`DnsEvent`] carries at most (a power of two the verifier can bound;
/// more than a classic 512-byte UDP answer). Longer payloads arrive cut, and userspace ignores
/// what it cannot parse whole.
pub const DNS_PAYLOAD_LEN: usize = 1024;

/// `DnsEvent::direction` values.
pub mod dns_direction {
    /// The guarded cgroup sent the packet (egress).
    pub const SENT: u32 = 0;
    /// The guarded cgroup received it (ingress).
    pub const RECEIVED: u32 = 1;
}

/// A UDP datagram or TCP segment to or from port 53 of a guarded cgroup's socket
/// (`event_kind::DNS`), sent only up to `captured` bytes of payload.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DnsEvent {
    /// Common header (`pid_tgid` 0: an ingress packet has no task).
    pub header: EventHeader,
    /// One of `dns_direction::*`.
    pub direction: u32,
    /// `IPPROTO_UDP` or `IPPROTO_TCP`.
    pub protocol: u32,
    /// `AF_INET` or `AF_INET6`.
    pub family: u32,
    /// Source port, host order.
    pub src_port: u16,
    /// Destination port, host order.
    pub dst_port: u16,
    /// Source address, network order (4 bytes used for `AF_INET`).
    pub src: [u8; 16],
    /// Destination address, network order.
    pub dst: [u8; 16],
    /// Bytes of transport payload in the packet.
    pub payload_len: u32,
    /// Bytes of it in `payload` (at most [`DNS_PAYLOAD_LEN`]).
    pub captured: u32,
    /// The payload's first `captured` bytes.
    pub payload: [u8; DNS_PAYLOAD_LEN],
}

/// Where a [`DnsEvent`]'s payload starts.
pub const DNS_PAYLOAD_OFFSET: usize = core::mem::offset_of!(DnsEvent, payload);

/// Names of the programs in the eBPF object.
pub mod programs {
    /// `cgroup/connect4` egress verdict.
    pub const CONNECT4: &str = "connect4";
    /// `cgroup/connect6` egress verdict.
    pub const CONNECT6: &str = "connect6";
    /// `cgroup/sendmsg4` egress verdict (UDP and unconnected sockets).
    pub const SENDMSG4: &str = "sendmsg4";
    /// `cgroup/sendmsg6` egress verdict.
    pub const SENDMSG6: &str = "sendmsg6";
    /// `cgroup/bind4`: TCP binds only to the policy's ports.
    pub const BIND4: &str = "bind4";
    /// `cgroup/bind6`: the same for IPv6 sockets.
    pub const BIND6: &str = "bind6";
    /// `cgroup/connect_unix` verdict (Linux 6.7+; loaded by the agent itself, see
    /// `agent/kernel/src/unix.rs`).
    pub const CONNECT_UNIX: &str = "connect_unix";
    /// `cgroup/sendmsg_unix` verdict (datagrams with a destination).
    pub const SENDMSG_UNIX: &str = "sendmsg_unix";
    /// `cgroup_skb/egress`: DNS the server sends (a prefix to the ring buffer, never judged).
    pub const DNS_EGRESS: &str = "dns_egress";
    /// `cgroup_skb/ingress`: DNS answers the server receives.
    pub const DNS_INGRESS: &str = "dns_ingress";
    /// `tp_btf/sys_enter`: exec attempts, sensitive-path kills.
    pub const SYS_ENTER: &str = "trace_sys_enter";
    /// `tp_btf/sys_exit`: opens with their result, and connects landlock refused (never seen by
    /// the hooks).
    pub const SYS_EXIT: &str = "trace_sys_exit";
}

/// Bits of the cgroup id that prefix every allowlist key: a rule never matches another cgroup.
pub const CGROUP_PREFIX_BITS: u32 = 64;

/// How many port ranges one allowlist entry holds; userspace refuses policies that need more.
pub const MAX_PORT_RANGES: usize = 16;

/// The guard is in observe mode: verdicts are reported, never enforced.
pub const GUARD_FLAG_OBSERVE: u32 = 1;

/// Processes of the cgroup are killed (SIGKILL) when they try to open a sensitive path, even in
/// observe mode.
pub const GUARD_FLAG_KILL_SENSITIVE: u32 = 2;

/// Bytes of a path kept by the kernel side: an LPM key holds at most 256 bytes, 8 of them the
/// cgroup id. Longer paths are truncated (and never NUL-terminated in the buffer).
pub const PATH_LEN: usize = 248;
/// How many leading argv entries an exec event carries.
pub const ARGV_ENTRIES: usize = 4;
/// Bytes kept of each argv entry.
pub const ARG_LEN: usize = 64;

/// `EventHeader::kind` values.
pub mod event_kind {
    /// [`super::ExecEvent`].
    pub const EXEC: u32 = 1;
    /// Retired: an open attempt at syscall entry, whose result followed in a record of kind 5.
    /// Another build's ring buffer, drained on upgrade, may still hold these.
    pub const OPEN_ATTEMPT_V1: u32 = 2;
    /// [`super::ConnectEvent`].
    pub const CONNECT: u32 = 3;
    /// [`super::KillEvent`].
    pub const KILL: u32 = 4;
    /// Retired: the result of the thread's last [`OPEN_ATTEMPT_V1`] (`kind`, pad, `pid_tgid`,
    /// result).
    pub const OPEN_RESULT_V1: u32 = 5;
    /// [`super::OpenEvent`], emitted at syscall exit: path, flags and result in one record,
    /// sent only up to the path's NUL (at least [`super::OPEN_PATH_OFFSET`] + 1 bytes).
    pub const OPEN: u32 = 6;
    /// [`super::UnixEvent`].
    pub const UNIX: u32 = 7;
    /// [`super::ExecDoneEvent`]: an exec and its result, emitted at syscall exit.
    pub const EXEC_DONE: u32 = 8;
    /// [`super::DnsEvent`], sent up to the end of its captured payload.
    pub const DNS: u32 = 9;
}

/// `ConnectEvent::verdict` values.
pub mod verdict {
    /// The allowlist allowed it.
    pub const ALLOWED: u32 = 0;
    /// The allowlist denied it (EPERM).
    pub const DENIED: u32 = 1;
    /// The allowlist would have denied it, but the cgroup is in observe mode.
    pub const OBSERVED: u32 = 2;
}

/// `ConnectEvent::op` values.
pub mod sock_op {
    /// connect(2).
    pub const CONNECT: u32 = 0;
    /// sendmsg/sendto with a destination address.
    pub const SENDMSG: u32 = 1;
}

/// Indexes of the `DROPS` per-CPU counters.
pub mod drop_reason {
    /// The ring buffer was full: the event was lost.
    pub const RINGBUF_FULL: u32 = 0;
    /// A path could not be read from user memory: the event carries an empty path (or, for
    /// an open in a cgroup that kills on sensitive paths, the check could not run at entry and
    /// could not be deferred to exit).
    pub const PATH_READ: u32 = 1;
    /// argv could not be read: the exec event carries fewer arguments.
    pub const ARGV_READ: u32 = 2;
    /// How many reasons there are (size of the `DROPS` array).
    pub const COUNT: u32 = 3;
    /// Names used in metrics (`mcp_guard_events_dropped_total{reason}`), by index.
    pub const NAMES: [&str; COUNT as usize] =
        ["ringbuf_full", "path_read_failed", "argv_read_failed"];
}

/// Start of every ring buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// One of `event_kind::*`.
    pub kind: u32,
    /// `GuardConfig::session` of the cgroup.
    pub session: u32,
    /// `bpf_ktime_get_boot_ns()`: `CLOCK_BOOTTIME`.
    pub ts_boot_ns: u64,
    /// The cgroup v2 id of the task.
    pub cgroup: u64,
    /// `bpf_get_current_pid_tgid()`: tgid in the high 32 bits, thread id in the low.
    pub pid_tgid: u64,
}

/// A process called execve/execveat. Emitted on entry (kind `EXEC`: the attempt, its outcome
/// unknown) only when it cannot be held until exit: a thread other than the leader (a successful
/// exec changes its thread id), or no room to hold it; otherwise it is the body of an
/// [`ExecDoneEvent`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEvent {
    /// Common header.
    pub header: EventHeader,
    /// How many `argv` entries were read.
    pub argc: u32,
    /// The syscall number.
    pub syscall: u32,
    /// The path passed to exec, NUL-terminated unless truncated.
    pub path: [u8; PATH_LEN],
    /// The first argv entries, each NUL-terminated unless truncated.
    pub argv: [[u8; ARG_LEN]; ARGV_ENTRIES],
}

/// An execve/execveat and its result (`event_kind::EXEC_DONE`): read at entry, while the
/// arguments are in the caller's memory, held per thread and sent at exit with the result (0:
/// the new program runs; -errno: the caller goes on).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecDoneEvent {
    /// The exec as read at entry (its header's kind is `EXEC_DONE`).
    pub exec: ExecEvent,
    /// The syscall's return value.
    pub result: i64,
}

/// An open/openat/openat2/creat and its result, emitted at syscall exit (`event_kind::OPEN`).
///
/// `key_bits` and `key` are laid out as an LPM trie key (`prefix_len` then `PathKey`), so the
/// kernel looks the path up in `SENSITIVE` straight from the record, without a copy.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OpenEvent {
    /// Common header.
    pub header: EventHeader,
    /// The syscall's return value: an fd or -errno.
    pub result: i64,
    /// The open flags.
    pub flags: u32,
    /// The syscall number.
    pub syscall: u32,
    /// LPM prefix length of `key` in bits (the whole key).
    pub key_bits: u32,
    /// The cgroup id and the path as passed, NUL-terminated unless truncated (empty when it
    /// could not be read).
    pub key: PathKey,
}

/// Where an [`OpenEvent`]'s path starts. The kernel sends an open record only up to the path's
/// NUL: most paths are short, and a full-size record would put 320 bytes through the ring
/// buffer for every open.
pub const OPEN_PATH_OFFSET: usize = core::mem::offset_of!(OpenEvent, key.path);

/// A connect or sendmsg judged by the egress programs.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnectEvent {
    /// Common header.
    pub header: EventHeader,
    /// Destination address in network order: 4 bytes used for `AF_INET`.
    pub addr: [u8; 16],
    /// `AF_INET` or `AF_INET6`.
    pub family: u32,
    /// Destination port, host order.
    pub port: u32,
    /// `IPPROTO_TCP`, `IPPROTO_UDP`...
    pub protocol: u32,
    /// One of `sock_op::*`.
    pub op: u32,
    /// One of `verdict::*`.
    pub verdict: u32,
    /// Padding, zero.
    pub pad: u32,
}

/// Bytes of `sun_path` in `struct sockaddr_un`.
pub const UNIX_PATH_LEN: usize = 108;

/// Key of the `ALLOW_UNIX` map, and the address a unix program judged.
///
/// A pathname socket is its path up to the first NUL or the address length, the rest zero,
/// with `len` 0; an abstract one is its whole name as the kernel sees it: the leading NUL, then
/// every byte up to the address length, which `len` counts (NULs in the name included).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnixKey {
    /// The server cgroup whose rules apply (`GuardConfig::rules`).
    pub cgroup: u64,
    /// Bytes of an abstract name (with its leading NUL); 0 for a path.
    pub len: u32,
    /// The path or abstract name, zero-padded.
    pub path: [u8; UNIX_PATH_LEN],
}

/// A connect or sendmsg to a Unix socket judged by the unix programs (`event_kind::UNIX`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UnixEvent {
    /// Common header.
    pub header: EventHeader,
    /// One of `sock_op::*`.
    pub op: u32,
    /// One of `verdict::*`.
    pub verdict: u32,
    /// `SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_SEQPACKET`.
    pub sock_type: u32,
    /// As in [`UnixKey::len`] (0 with an all-zero `path`: the address could not be read).
    pub len: u32,
    /// As in [`UnixKey::path`].
    pub path: [u8; UNIX_PATH_LEN],
    /// Padding to a multiple of 8 bytes, zero.
    pub pad: u32,
}

/// Offsets of the members of the kernel's `struct bpf_sock_addr_kern` (the context a
/// `cgroup_sock_addr` program really gets) that hold the address being judged: the kernel's
/// own copy of it, never the caller's memory. Userspace reads them from the kernel BTF; `valid`
/// is 0 until it has (the programs then deny, or only report under observe).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockAddrKernLayout {
    /// 1 once the offsets are set.
    pub valid: u32,
    /// Offset of `struct sockaddr *uaddr`.
    pub uaddr: u32,
    /// Offset of `u32 uaddrlen`.
    pub uaddrlen: u32,
    /// Padding, zero.
    pub pad: u32,
}

/// mcp-guard's kernel program sent a signal to a task (sensitive path on open).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KillEvent {
    /// Common header.
    pub header: EventHeader,
    /// The signal sent.
    pub signal: u32,
    /// The syscall that triggered it.
    pub syscall: u32,
    /// The path that triggered it.
    pub path: [u8; PATH_LEN],
}

/// LPM key data of the `SENSITIVE` map: cgroup id (big-endian) then path bytes.
///
/// An exact path is stored with its NUL terminator inside the prefix, so it matches only itself;
/// a directory prefix (`/root/.ssh/`) is stored without one and matches everything below.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PathKey {
    /// `cgroup_id.to_be_bytes()`.
    pub cgroup: [u8; 8],
    /// Path bytes.
    pub path: [u8; PATH_LEN],
}

/// Bytes of a file name in `NameKey` (names are shorter: the rest is zero).
pub const NAME_LEN: usize = 64;

/// Where the last component of a path starts in `tail` and how long it is, if it is a possible
/// sensitive name (`1..NAME_LEN` bytes). `tail` holds the path's last `tail_len` bytes (no NUL):
/// the whole path when it is shorter than `NAME_LEN`, else its last `NAME_LEN` bytes, which is room
/// enough for the longest name and the `/` before it.
///
/// The kernel side scans a NAME_LEN-byte window rather than the path buffer itself: indexing the
/// path at `len - k` is in bounds, but 6.1's and 6.12's verifiers lose the relation between `len`
/// and `k` (the compiler checks one register and indexes with another) and reject the read. In a
/// power-of-two window, masking the index proves the bound on the register that is used.
#[inline(always)]
pub fn last_component(tail: &[u8; NAME_LEN], tail_len: usize) -> Option<(usize, usize)> {
    let tail_len = if tail_len > NAME_LEN {
        NAME_LEN
    } else {
        tail_len
    };
    let mut start = 0usize;
    let mut k = 1usize;
    while k <= NAME_LEN {
        if k > tail_len {
            break;
        }
        // `tail_len - k` is already below NAME_LEN: the mask changes nothing but the proof.
        let idx = (tail_len - k) & (NAME_LEN - 1);
        if tail[idx] == b'/' {
            start = idx + 1;
            break;
        }
        k += 1;
    }
    let name_len = tail_len - start;
    if name_len == 0 || name_len >= NAME_LEN {
        return None;
    }
    Some((start, name_len))
}

/// Where the window [`last_component`] scans starts in a path of `len` bytes, and how many of its
/// bytes are the path's (the window is `NAME_LEN` bytes from there: it never ends past the path
/// buffer).
#[inline(always)]
pub fn tail_window(len: usize) -> (usize, usize) {
    let len = if len > PATH_LEN { PATH_LEN } else { len };
    let tail_len = if len > NAME_LEN { NAME_LEN } else { len };
    (len - tail_len, tail_len)
}

/// Key of the `SENSITIVE_NAMES` map: cgroup id (big-endian) then a zero-padded file name.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NameKey {
    /// `cgroup_id.to_be_bytes()`.
    pub cgroup: [u8; 8],
    /// The last path component, zero-padded.
    pub name: [u8; NAME_LEN],
}

/// Per-cgroup settings, the value of the `GUARDED` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardConfig {
    /// `GUARD_FLAG_*` bits.
    pub flags: u32,
    /// Index of the server session in userspace, echoed in events.
    pub session: u32,
    /// The cgroup id whose rules (egress allowlists, sensitive paths) apply and that events
    /// carry: the server's own cgroup, also for a member cgroup registered under it (a
    /// container's leaf cgroup, which the engine creates below the server's).
    pub rules: u64,
}

/// How deep below the root the egress programs look for a guarded ancestor of an unregistered
/// cgroup (`bpf_get_current_ancestor_cgroup_id` levels).
pub const ANCESTOR_LEVELS: i32 = 16;

/// An inclusive range of destination ports, in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortRange {
    /// Lowest allowed port.
    pub lo: u16,
    /// Highest allowed port.
    pub hi: u16,
}

/// The ports allowed for one address prefix of one cgroup.
///
/// Userspace stores in each prefix the ports of every rule whose network contains that prefix,
/// so the longest-prefix match alone decides.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortSet {
    /// How many entries of `ranges` are in use.
    pub len: u32,
    /// The allowed ranges; only the first `len` count.
    pub ranges: [PortRange; MAX_PORT_RANGES],
}

impl PortSet {
    /// Whether `port` (host byte order) falls in one of the ranges.
    #[inline(always)]
    #[expect(
        clippy::cast_possible_truncation,
        reason = "i < MAX_PORT_RANGES, a handful"
    )]
    pub fn allows(&self, port: u16) -> bool {
        let mut i = 0;
        // A fixed bound keeps the eBPF verifier happy; `len` is checked inside.
        while i < MAX_PORT_RANGES {
            if i as u32 >= self.len {
                return false;
            }
            let r = self.ranges[i];
            if r.lo <= port && port <= r.hi {
                return true;
            }
            i += 1;
        }
        false
    }
}

/// Words of a [`BindPorts`] bitmap: one bit per 16-bit port value.
pub const BIND_PORT_WORDS: usize = 65536 / 64;

/// The TCP ports a cgroup may bind, as a bitmap indexed by the port *as the `cgroup/bind*`
/// context holds it*: the low 16 bits of `user_port`, network byte order read as a native
/// integer ([`BindPorts::index`]). Indexing by the raw value spares the kernel side a byte swap,
/// whose result the verifier does not bound (it would reject the index).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindPorts {
    /// Bit `i % 64` of word `i / 64` is set when raw value `i` may be bound.
    pub bits: [u64; BIND_PORT_WORDS],
}

impl BindPorts {
    /// No port.
    pub const NONE: Self = Self {
        bits: [0; BIND_PORT_WORDS],
    };

    /// The raw `user_port` value (low 16 bits) of `port` (host order).
    #[inline(always)]
    pub fn index(port: u16) -> u32 {
        u32::from(u16::from_ne_bytes(port.to_be_bytes()))
    }

    /// Allows `port` (host order).
    pub fn allow(&mut self, port: u16) {
        let i = Self::index(port) as usize;
        self.bits[i / 64] |= 1 << (i % 64);
    }

    /// Whether the raw `user_port` context value may be bound (only its low 16 bits count).
    #[inline(always)]
    pub fn allows_raw(&self, user_port: u32) -> bool {
        let raw = user_port & 0xffff;
        let word = self.bits[(raw >> 6) as usize & (BIND_PORT_WORDS - 1)];
        (word >> (raw & 63)) & 1 == 1
    }
}

/// LPM key data for IPv4: cgroup id (big-endian) then the address in network order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ip4Key {
    /// `cgroup_id.to_be_bytes()`.
    pub cgroup: [u8; 8],
    /// The address, network order.
    pub addr: [u8; 4],
}

/// LPM key data for IPv6: cgroup id (big-endian) then the address in network order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ip6Key {
    /// `cgroup_id.to_be_bytes()`.
    pub cgroup: [u8; 8],
    /// The address, network order.
    pub addr: [u8; 16],
}

#[cfg(feature = "user")]
mod pod {
    use super::{
        BindPorts, GuardConfig, Ip4Key, Ip6Key, NameKey, PathKey, PortSet, SockAddrKernLayout,
        UnixKey,
    };

    // SAFETY: plain `#[repr(C)]` integers and arrays without padding or pointers.
    unsafe impl aya::Pod for GuardConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PortSet {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Ip4Key {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Ip6Key {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PathKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for NameKey {}
    // SAFETY: as above (8 + 4 + 108 bytes: no padding).
    unsafe impl aya::Pod for UnixKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SockAddrKernLayout {}
    // SAFETY: as above (an array of u64).
    unsafe impl aya::Pod for BindPorts {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{format, string::String};

    use super::*;

    /// The window of `s` the kernel scans for the last component, and its length.
    fn tail(s: &str) -> ([u8; NAME_LEN], usize) {
        let (start, len) = tail_window(s.len());
        let mut t = [0u8; NAME_LEN];
        t[..len].copy_from_slice(&s.as_bytes()[start..start + len]);
        (t, len)
    }

    /// The last component of `s` as the kernel finds it.
    fn name(s: &str) -> Option<String> {
        let (t, len) = tail(s);
        last_component(&t, len).map(|(start, n)| {
            String::from_utf8(t[start..start + n].to_vec()).expect("utf-8 test path")
        })
    }

    #[test]
    fn unix_records_have_the_sizes_both_sides_assume() {
        // No padding in the map key (its bytes are hashed whole) and 8-byte records.
        assert_eq!(core::mem::size_of::<UnixKey>(), 8 + 4 + UNIX_PATH_LEN);
        assert_eq!(core::mem::size_of::<UnixEvent>(), 160);
        assert_eq!(DNS_PAYLOAD_OFFSET, 88);
        assert!(DNS_PAYLOAD_LEN.is_power_of_two());
    }

    #[test]
    fn bind_ports_match_the_raw_context_port_only() {
        let mut p = BindPorts::NONE;
        p.allow(8080);
        p.allow(0);
        p.allow(65535);
        // What `user_port` holds for a bind to port P: P in network order in its low 16 bits.
        let raw = |port: u16| u32::from(u16::from_ne_bytes(port.to_be_bytes()));
        assert!(p.allows_raw(raw(8080)) && p.allows_raw(raw(0)) && p.allows_raw(raw(65535)));
        assert!(!p.allows_raw(raw(8081)) && !p.allows_raw(raw(36895)));
        // Bits above the port do not change the answer.
        assert!(p.allows_raw(raw(8080) | 0xdead_0000));
        assert!(!BindPorts::NONE.allows_raw(raw(8080)));
        assert_eq!(core::mem::size_of::<BindPorts>(), 8192);
    }

    #[test]
    fn last_component_of_absolute_relative_and_odd_paths() {
        assert_eq!(name("/a/b/.env").as_deref(), Some(".env"));
        assert_eq!(name(".env").as_deref(), Some(".env"));
        assert_eq!(name("dir/.env").as_deref(), Some(".env"));
        assert_eq!(name("/a/"), None);
        assert_eq!(name(""), None);
        let long = "x".repeat(NAME_LEN);
        assert_eq!(name(&long), None, "a name of NAME_LEN bytes is never a key");
        let longest = "y".repeat(NAME_LEN - 1);
        assert_eq!(name(&longest).as_deref(), Some(longest.as_str()));
        assert_eq!(
            name(&format!("/{longest}")).as_deref(),
            Some(longest.as_str())
        );
        assert_eq!(
            name(&format!("/deep/{longest}")).as_deref(),
            Some(longest.as_str())
        );
        assert_eq!(
            name(&format!("/deep/z{longest}")),
            None,
            "64 bytes after the last slash"
        );
    }

    #[test]
    fn the_window_is_the_path_tail_within_the_path_buffer() {
        assert_eq!(tail_window(0), (0, 0));
        assert_eq!(tail_window(10), (0, 10));
        assert_eq!(tail_window(NAME_LEN), (0, NAME_LEN));
        assert_eq!(tail_window(NAME_LEN + 1), (1, NAME_LEN));
        assert_eq!(tail_window(PATH_LEN), (PATH_LEN - NAME_LEN, NAME_LEN));
        assert_eq!(tail_window(usize::MAX), (PATH_LEN - NAME_LEN, NAME_LEN));
        // A long path: the name is found in the last NAME_LEN bytes.
        let p = format!("/{}/.aws/credentials", "d".repeat(150));
        assert_eq!(name(&p).as_deref(), Some("credentials"));
    }
}
