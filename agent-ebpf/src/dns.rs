//! DNS seen on the wire of a guarded cgroup: `cgroup_skb/egress` and `cgroup_skb/ingress` copy a
//! bounded prefix of every UDP or TCP payload to or from port 53 into the ring buffer, so
//! userspace can learn which host names the server resolved, whatever resolver it uses.
//!
//! The programs never judge: they always let the packet through. They are attached to guarded
//! cgroups only; the packet's socket's cgroup (or its nearest guarded ancestor) picks the session.
//! The IP and transport headers are read from the packet (the context starts at the network
//! header), not from the socket: an unconnected UDP socket has no remote address.

use aya_ebpf::{
    bindings::__sk_buff,
    helpers::{
        bpf_ktime_get_boot_ns,
        generated::{bpf_skb_ancestor_cgroup_id, bpf_skb_cgroup_id, bpf_skb_load_bytes},
    },
    macros::{cgroup_skb, map},
    maps::PerCpuArray,
    programs::SkBuffContext,
};
use mcp_guard_ebpf::{
    ANCESTOR_LEVELS, DNS_PAYLOAD_LEN, DNS_PAYLOAD_OFFSET, DNS_PORT, DnsEvent, EventHeader,
    GuardConfig, dns_direction, drop_reason, event_kind,
};

use crate::common::{EVENTS, GUARDED, count_drop, submit_flags};

/// What a cgroup_skb program returns to let the packet through.
const PASS: i32 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// Room to build a DNS record (too big for the stack).
#[map]
static DNS_SCRATCH: PerCpuArray<DnsEvent> = PerCpuArray::with_max_entries(1, 0);

#[cgroup_skb(egress)]
pub(crate) fn dns_egress(ctx: SkBuffContext) -> i32 {
    observe(&ctx, dns_direction::SENT);
    PASS
}

#[cgroup_skb(ingress)]
pub(crate) fn dns_ingress(ctx: SkBuffContext) -> i32 {
    observe(&ctx, dns_direction::RECEIVED);
    PASS
}

/// The guard settings of the packet's socket's cgroup, or of its nearest guarded ancestor.
#[inline(always)]
fn skb_guard(skb: *mut __sk_buff) -> Option<(u64, GuardConfig)> {
    // SAFETY: a helper on the program's own context.
    let own = unsafe { bpf_skb_cgroup_id(skb) };
    // SAFETY: the value is copied out at once.
    if let Some(config) = unsafe { GUARDED.get(&own) } {
        return Some((config.rules, *config));
    }
    let mut found = None;
    let mut level = 1;
    while level <= ANCESTOR_LEVELS {
        // SAFETY: as above; 0 comes back past the socket's own level.
        let id = unsafe { bpf_skb_ancestor_cgroup_id(skb, level) };
        if id == 0 {
            break;
        }
        // SAFETY: as above.
        if let Some(config) = unsafe { GUARDED.get(&id) } {
            found = Some((config.rules, *config));
        }
        level += 1;
    }
    found
}

/// `T` at `offset` of the packet: straight from its linear part when it lies there (no helper
/// call: the common case for headers), else through `bpf_skb_load_bytes`.
#[inline(always)]
fn read<T: Copy>(skb: &aya_ebpf::programs::sk_buff::SkBuff, offset: usize) -> Option<T> {
    // SAFETY: fields of the program's own context.
    let (data, end) = unsafe { ((*skb.skb).data as usize, (*skb.skb).data_end as usize) };
    // Bounded, so the verifier can follow the pointer below (offsets here are at most 60).
    let offset = offset & 0x7f;
    if data + offset + core::mem::size_of::<T>() <= end {
        // SAFETY: the bytes lie between `data` and `data_end`, checked just above; unaligned.
        return Some(unsafe { core::ptr::read_unaligned((data + offset) as *const T) });
    }
    skb.load::<T>(offset).ok()
}

#[inline(always)]
fn observe(ctx: &SkBuffContext, direction: u32) {
    let skb = &ctx.skb;
    // Every packet of the server passes here, so a packet that is not DNS costs two reads and
    // nothing else: the IP header (40 bytes: all of IPv6's fixed one, IPv4's and more; a DNS
    // packet is never shorter) and the ports. Only DNS goes on to the scratch record.
    let Some(ip) = read::<[u8; 40]>(skb, 0) else {
        return;
    };
    let (family, proto, l4) = match ip[0] >> 4 {
        4 => (2u32, ip[9], usize::from(ip[0] & 0x0f) * 4),
        // Only a transport header right after the fixed header: DNS does not use extension
        // headers in practice.
        6 => (10u32, ip[6], 40usize),
        _ => return,
    };
    if proto != IPPROTO_UDP && proto != IPPROTO_TCP {
        return;
    }
    let Some(ports) = read::<[u8; 4]>(skb, l4) else {
        return;
    };
    let src_port = u16::from_be_bytes([ports[0], ports[1]]);
    let dst_port = u16::from_be_bytes([ports[2], ports[3]]);
    if src_port != DNS_PORT && dst_port != DNS_PORT {
        return;
    }
    let Some(ev) = DNS_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch slot, exclusively ours while this program runs.
    let ev = unsafe { &mut *ev };
    if family == 2 {
        ev.src = [0; 16];
        ev.dst = [0; 16];
        ev.src[..4].copy_from_slice(&ip[12..16]);
        ev.dst[..4].copy_from_slice(&ip[16..20]);
    } else {
        ev.src.copy_from_slice(&ip[8..24]);
        ev.dst.copy_from_slice(&ip[24..40]);
    }
    let payload = if proto == IPPROTO_UDP {
        l4 + 8
    } else {
        let Ok(off) = skb.load::<u8>(l4 + 12) else {
            return;
        };
        l4 + usize::from(off >> 4) * 4
    };
    let total = skb.len() as usize;
    if payload >= total {
        // A bare TCP segment (handshake, ack): nothing to read.
        return;
    }
    let Some((cgroup, config)) = skb_guard(skb.skb) else {
        return;
    };
    // No task here (an ingress packet is handled in softirq): pid_tgid stays 0, and only
    // helpers every cgroup_skb program may call are used.
    ev.header = EventHeader {
        kind: event_kind::DNS,
        session: config.session,
        // SAFETY: a helper without arguments.
        ts_boot_ns: unsafe { bpf_ktime_get_boot_ns() },
        cgroup,
        pid_tgid: 0,
    };
    ev.direction = direction;
    ev.protocol = u32::from(proto);
    ev.family = family;
    ev.src_port = src_port;
    ev.dst_port = dst_port;
    let len = total - payload;
    ev.payload_len = len as u32;
    // 1..=DNS_PAYLOAD_LEN bytes (`len` is at least 1 here), written so the verifier sees the
    // bounds on the register the helper gets: the mask keeps it below the buffer, the +1 above 0.
    let capped = if len > DNS_PAYLOAD_LEN {
        DNS_PAYLOAD_LEN
    } else {
        len
    };
    let copied = ((capped - 1) & (DNS_PAYLOAD_LEN - 1)) + 1;
    // SAFETY: the destination is the record's DNS_PAYLOAD_LEN-byte payload and `copied` is at
    // most that; the helper reads the packet, failing (not faulting) past its end.
    let ret = unsafe {
        bpf_skb_load_bytes(
            skb.skb.cast(),
            payload as u32,
            ev.payload.as_mut_ptr().cast(),
            copied as u32,
        )
    };
    if ret != 0 {
        return;
    }
    ev.captured = copied as u32;
    // SAFETY: `copied` is at most the payload buffer: the slice ends inside the record.
    let record = unsafe {
        core::slice::from_raw_parts(
            (ev as *const DnsEvent).cast::<u8>(),
            DNS_PAYLOAD_OFFSET + copied,
        )
    };
    if EVENTS.output::<[u8]>(record, submit_flags()).is_err() {
        count_drop(drop_reason::RINGBUF_FULL);
    }
}
