//! Types shared between mcp-guard's eBPF programs and its userspace agent.
//!
//! Everything here is `#[repr(C)]` plain data: the kernel side reads and writes it through maps
//! and the ring buffer, userspace through aya. Layout changes must be made on both sides at once,
//! which is why the types live in one crate.
#![no_std]

/// Names of the maps in the eBPF object, as userspace looks them up.
pub mod maps {
    /// `HashMap<u64 cgroup id, GuardConfig>`: the cgroups mcp-guard guards.
    pub const GUARDED: &str = "GUARDED";
    /// `LpmTrie<Ip4Key, PortSet>`: per-cgroup IPv4 egress allowlist.
    pub const ALLOW_V4: &str = "ALLOW_V4";
    /// `LpmTrie<Ip6Key, PortSet>`: per-cgroup IPv6 egress allowlist.
    pub const ALLOW_V6: &str = "ALLOW_V6";
}

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
}

/// Bits of the cgroup id that prefix every allowlist key: a rule never matches another cgroup.
pub const CGROUP_PREFIX_BITS: u32 = 64;

/// How many port ranges one allowlist entry holds; userspace refuses policies that need more.
pub const MAX_PORT_RANGES: usize = 16;

/// The guard is in observe mode: verdicts are reported, never enforced.
pub const GUARD_FLAG_OBSERVE: u32 = 1;

/// Per-cgroup settings, the value of the `GUARDED` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardConfig {
    /// `GUARD_FLAG_*` bits.
    pub flags: u32,
    /// Index of the server session in userspace, echoed in events.
    pub session: u32,
}

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
    use super::{GuardConfig, Ip4Key, Ip6Key, PortSet};

    // SAFETY: plain `#[repr(C)]` integers and arrays without padding or pointers.
    unsafe impl aya::Pod for GuardConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PortSet {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Ip4Key {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Ip6Key {}
}
