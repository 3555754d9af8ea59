//! TCP bind verdicts: `cgroup/bind{4,6}` against the ports a guarded cgroup may bind.
//!
//! Attached next to the egress programs, so they run only for tasks in a guarded cgroup's
//! subtree; a cgroup without a `BIND_PORTS` entry binds freely (its policy does not limit TCP
//! ports). The same semantics as landlock's TCP bind rule, which the launcher builds from the
//! same ports: only TCP sockets are judged, by port alone (any address), and port 0 (an
//! ephemeral port) only where it is listed itself. A denied bind fails with EPERM. No event is
//! sent: the event stream's records and their consumers know connect and sendmsg only.

use aya_ebpf::{
    macros::{cgroup_sock_addr, map},
    maps::HashMap,
    programs::SockAddrContext,
};
use mcp_guard_ebpf::{BindPorts, GUARD_FLAG_OBSERVE};

use crate::common::guard_or_ancestor;

const ALLOW: i32 = 1;
const DENY: i32 = 0;
const IPPROTO_TCP: u32 = 6;

#[map]
static BIND_PORTS: HashMap<u64, BindPorts> = HashMap::with_max_entries(4096, 0);

#[cgroup_sock_addr(bind4)]
pub(crate) fn bind4(ctx: SockAddrContext) -> i32 {
    verdict(&ctx)
}

#[cgroup_sock_addr(bind6)]
pub(crate) fn bind6(ctx: SockAddrContext) -> i32 {
    verdict(&ctx)
}

#[inline(always)]
fn verdict(ctx: &SockAddrContext) -> i32 {
    let Some((cgroup, config)) = guard_or_ancestor() else {
        return ALLOW;
    };
    if config.flags & GUARD_FLAG_OBSERVE != 0 {
        return ALLOW;
    }
    // SAFETY: the context pointer is valid for the whole program run; 4-byte ctx loads.
    let (protocol, user_port) = unsafe { ((*ctx.sock_addr).protocol, (*ctx.sock_addr).user_port) };
    if protocol != IPPROTO_TCP {
        return ALLOW;
    }
    // SAFETY: the value is read in place at once; userspace replaces it whole.
    match unsafe { BIND_PORTS.get(&cgroup) } {
        Some(ports) if !ports.allows_raw(user_port) => DENY,
        _ => ALLOW,
    }
}
