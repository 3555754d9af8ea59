//! Egress verdicts: `cgroup/connect{4,6}` and `cgroup/sendmsg{4,6}` against per-cgroup allowlists.
//!
//! Only cgroups in `GUARDED` and their descendants are judged (the programs are attached to
//! guarded cgroups only, so unrelated processes never run them); a descendant not registered
//! itself is judged by its nearest guarded ancestor ([`guard_or_ancestor`]). Default deny: an address/port not in the allowlist gets EPERM.
//! Every verdict in a guarded cgroup is also reported as a `ConnectEvent`.

use aya_ebpf::{
    macros::{cgroup_sock_addr, map},
    maps::{LpmTrie, lpm_trie::Key},
    programs::SockAddrContext,
};
use mcp_guard_ebpf::{
    CGROUP_PREFIX_BITS, ConnectEvent, GUARD_FLAG_OBSERVE, GuardConfig, Ip4Key, Ip6Key, PortSet,
    drop_reason, event_kind, sock_op, verdict,
};

use crate::common::{EVENTS, count_drop, guard_or_ancestor, header, submit_flags};

const ALLOW: i32 = 1;
const DENY: i32 = 0;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

#[map]
static ALLOW_V4: LpmTrie<Ip4Key, PortSet> = LpmTrie::with_max_entries(65536, 0);

#[map]
static ALLOW_V6: LpmTrie<Ip6Key, PortSet> = LpmTrie::with_max_entries(65536, 0);

#[cgroup_sock_addr(connect4)]
pub(crate) fn connect4(ctx: SockAddrContext) -> i32 {
    verdict_v4(&ctx, sock_op::CONNECT)
}

#[cgroup_sock_addr(sendmsg4)]
pub(crate) fn sendmsg4(ctx: SockAddrContext) -> i32 {
    verdict_v4(&ctx, sock_op::SENDMSG)
}

#[cgroup_sock_addr(connect6)]
pub(crate) fn connect6(ctx: SockAddrContext) -> i32 {
    verdict_v6(&ctx, sock_op::CONNECT)
}

#[cgroup_sock_addr(sendmsg6)]
pub(crate) fn sendmsg6(ctx: SockAddrContext) -> i32 {
    verdict_v6(&ctx, sock_op::SENDMSG)
}

/// Reports the verdict and turns it into the program's return value.
#[inline(always)]
fn finish(
    ctx: &SockAddrContext,
    cgroup: u64,
    config: &GuardConfig,
    op: u32,
    family: u32,
    addr: [u8; 16],
    port: u16,
    allowed: bool,
) -> i32 {
    let observe = config.flags & GUARD_FLAG_OBSERVE != 0;
    let code = if allowed {
        verdict::ALLOWED
    } else if observe {
        verdict::OBSERVED
    } else {
        verdict::DENIED
    };
    // SAFETY: the context pointer is valid for the whole program run; a 4-byte ctx load.
    let protocol = unsafe { (*ctx.sock_addr).protocol };
    let event = ConnectEvent {
        header: header(event_kind::CONNECT, cgroup, config),
        addr,
        family,
        port: u32::from(port),
        protocol,
        op,
        verdict: code,
        pad: 0,
    };
    if EVENTS
        .output::<ConnectEvent>(&event, submit_flags())
        .is_err()
    {
        count_drop(drop_reason::RINGBUF_FULL);
    }
    if code == verdict::DENIED { DENY } else { ALLOW }
}

/// `user_port` holds the port in network order in its low 16 bits.
#[inline(always)]
fn port(ctx: &SockAddrContext) -> u16 {
    // SAFETY: the context pointer is valid for the whole program run; a 4-byte ctx load.
    let raw = unsafe { (*ctx.sock_addr).user_port };
    u16::from_be(raw as u16)
}

#[inline(always)]
fn lookup_v4(cgroup: u64, addr: [u8; 4], port: u16) -> bool {
    let key = Key::new(
        CGROUP_PREFIX_BITS + 32,
        Ip4Key {
            cgroup: cgroup.to_be_bytes(),
            addr,
        },
    );
    match ALLOW_V4.get(&key) {
        Some(ports) => ports.allows(port),
        None => false,
    }
}

fn verdict_v4(ctx: &SockAddrContext, op: u32) -> i32 {
    let Some((cgroup, config)) = guard_or_ancestor() else {
        return ALLOW;
    };
    // SAFETY: as in `port`; `user_ip4` is in network order, so its in-memory bytes are the address.
    let ip = unsafe { (*ctx.sock_addr).user_ip4 }.to_ne_bytes();
    let port = port(ctx);
    let allowed = lookup_v4(cgroup, ip, port);
    let mut addr = [0u8; 16];
    addr[0] = ip[0];
    addr[1] = ip[1];
    addr[2] = ip[2];
    addr[3] = ip[3];
    finish(ctx, cgroup, &config, op, AF_INET, addr, port, allowed)
}

fn verdict_v6(ctx: &SockAddrContext, op: u32) -> i32 {
    let Some((cgroup, config)) = guard_or_ancestor() else {
        return ALLOW;
    };
    // SAFETY: as in `port`; each word is a 4-byte aligned ctx load, as the verifier requires.
    let words = unsafe {
        let p = &(*ctx.sock_addr).user_ip6;
        [p[0], p[1], p[2], p[3]]
    };
    let port = port(ctx);
    let mut addr = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let b = words[i].to_ne_bytes();
        addr[i * 4] = b[0];
        addr[i * 4 + 1] = b[1];
        addr[i * 4 + 2] = b[2];
        addr[i * 4 + 3] = b[3];
        i += 1;
    }
    // An IPv4-mapped address (::ffff:a.b.c.d) reaches an IPv4 host: judge it by the IPv4 rules.
    if words[0] == 0 && words[1] == 0 && words[2] == u32::from_be(0x0000_ffff) {
        let allowed = lookup_v4(cgroup, words[3].to_ne_bytes(), port);
        return finish(ctx, cgroup, &config, op, AF_INET6, addr, port, allowed);
    }
    let key = Key::new(
        CGROUP_PREFIX_BITS + 128,
        Ip6Key {
            cgroup: cgroup.to_be_bytes(),
            addr,
        },
    );
    let allowed = match ALLOW_V6.get(&key) {
        Some(ports) => ports.allows(port),
        None => false,
    };
    finish(ctx, cgroup, &config, op, AF_INET6, addr, port, allowed)
}
