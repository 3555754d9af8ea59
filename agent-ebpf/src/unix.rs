//! Unix socket verdicts: `connect_unix` and `sendmsg_unix` (Linux 6.7+) against per-cgroup
//! lists of socket paths and abstract names. Default deny: a socket not listed gets EPERM.
//!
//! The address judged is the kernel's own copy (`bpf_sock_addr_kern::uaddr`, copied from the
//! caller before the hook runs and used by the kernel after it), not the caller's memory, so a
//! thread rewriting its buffer meanwhile changes nothing. The user-visible context has no
//! `sun_path`; the member offsets of the kernel-side context come from userspace, which reads
//! them from the kernel's BTF (`UNIX_LAYOUT`), and both reads go through
//! `bpf_probe_read_kernel`: the context pointer itself is handed to the helper as a plain
//! address, which the verifier allows for a program loaded with CAP_PERFMON.
//!
//! aya-obj 0.3 knows no `cgroup/connect_unix` section (an unknown one fails the whole
//! object's parse), so these programs sit in sections it parses as sock_addr programs; the
//! agent loads them itself with the right expected attach type (`agent/kernel/src/unix.rs`).

use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::generated::{bpf_probe_read_kernel, bpf_probe_read_kernel_str},
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use mcp_guard_ebpf::{
    GUARD_FLAG_OBSERVE, SockAddrKernLayout, UNIX_PATH_LEN, UnixEvent, UnixKey, drop_reason,
    event_kind, sock_op, verdict,
};

use crate::common::{EVENTS, count_drop, guard_or_ancestor, header, submit_flags};

const ALLOW: i32 = 1;
const DENY: i32 = 0;
/// `offsetof(struct sockaddr_un, sun_path)`.
const SUN_PATH_OFFSET: u32 = 2;

/// Per-cgroup allowed sockets; the value is unused (presence is the answer).
#[map]
static ALLOW_UNIX: HashMap<UnixKey, u32> = HashMap::with_max_entries(16384, 0);

/// Slot 0: where `bpf_sock_addr_kern` keeps the address (set by userspace at load).
#[map]
static UNIX_LAYOUT: Array<SockAddrKernLayout> = Array::with_max_entries(1, 0);

#[unsafe(no_mangle)]
#[unsafe(link_section = "cgroup/connect4/connect_unix")]
pub(crate) fn connect_unix(ctx: *mut bpf_sock_addr) -> i32 {
    judge(ctx, sock_op::CONNECT)
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "cgroup/sendmsg4/sendmsg_unix")]
pub(crate) fn sendmsg_unix(ctx: *mut bpf_sock_addr) -> i32 {
    judge(ctx, sock_op::SENDMSG)
}

/// Copies `len` bytes of kernel memory at `src` into `dst`; false when the read failed.
#[inline(always)]
fn read_kernel(dst: *mut u8, len: u32, src: u64) -> bool {
    // SAFETY: `dst` points at `len` writable bytes of this program's stack; the helper reads
    // `src` safely whatever it holds (a bad address fails the call instead of faulting).
    unsafe { bpf_probe_read_kernel(dst.cast(), len, src as *const _) == 0 }
}

/// Room for `sun_path` read as the kernel holds it, zero past the address length (where the
/// kernel itself ends a path).
#[map]
static RAW: PerCpuArray<[u8; RAW_LEN]> = PerCpuArray::with_max_entries(1, 0);
const RAW_LEN: usize = UNIX_PATH_LEN + 8;

/// The address the kernel is about to use, as a key for `cgroup`; `None` when it could not be
/// read.
#[inline(always)]
fn address(ctx: *mut bpf_sock_addr, key: &mut UnixKey) -> bool {
    let Some(layout) = UNIX_LAYOUT.get(0) else {
        return false;
    };
    if layout.valid == 0 {
        return false;
    }
    // The run-time context is the kernel's `struct bpf_sock_addr_kern`; the offsets are masked
    // so the verifier sees them bounded (the struct is a few dozen bytes).
    let base = ctx as u64;
    let mut uaddr: u64 = 0;
    let mut uaddrlen: u32 = 0;
    if !read_kernel(
        (&mut uaddr as *mut u64).cast(),
        8,
        base + u64::from(layout.uaddr & 0xff),
    ) || !read_kernel(
        (&mut uaddrlen as *mut u32).cast(),
        4,
        base + u64::from(layout.uaddrlen & 0xff),
    ) || uaddr == 0
        || uaddrlen <= SUN_PATH_OFFSET
    {
        return false;
    }
    let n = uaddrlen - SUN_PATH_OFFSET;
    let n = if n > UNIX_PATH_LEN as u32 {
        UNIX_PATH_LEN as u32
    } else {
        n
    };
    let Some(raw) = RAW.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a per-CPU slot: no other program touches it while this one runs on this CPU.
    let raw = unsafe { &mut *raw };
    *raw = [0; RAW_LEN];
    // Exactly the address's bytes: what lies past its length is not part of it.
    if !read_kernel(raw.as_mut_ptr(), n, uaddr + u64::from(SUN_PATH_OFFSET)) {
        return false;
    }
    if raw[0] == 0 {
        // Abstract: every byte up to the length counts, NULs included.
        key.len = n;
        key.path.copy_from_slice(&raw[..UNIX_PATH_LEN]);
        return true;
    }
    // A path ends at its first NUL, or at the length (the zero after it in `raw`).
    key.len = 0;
    // SAFETY: `key.path` has room for UNIX_PATH_LEN bytes; the source is this program's
    // per-CPU buffer, which holds a NUL by then or at the end.
    let copied = unsafe {
        bpf_probe_read_kernel_str(
            key.path.as_mut_ptr().cast(),
            UNIX_PATH_LEN as u32,
            raw.as_ptr().cast(),
        )
    };
    if copied < 0 {
        return false;
    }
    // A path of all 108 bytes (no NUL): the string copy kept 107; take them all.
    if raw[UNIX_PATH_LEN - 1] != 0 {
        key.path.copy_from_slice(&raw[..UNIX_PATH_LEN]);
    }
    true
}

fn judge(ctx: *mut bpf_sock_addr, op: u32) -> i32 {
    let Some((cgroup, config)) = guard_or_ancestor() else {
        return ALLOW;
    };
    let mut key = UnixKey {
        cgroup,
        len: 0,
        path: [0; UNIX_PATH_LEN],
    };
    let read = address(ctx, &mut key);
    if !read {
        count_drop(drop_reason::PATH_READ);
        key.len = 0;
        key.path = [0; UNIX_PATH_LEN];
    }
    // SAFETY: a lookup by a stack key; presence is all that is read.
    let listed = read && unsafe { ALLOW_UNIX.get(&key) }.is_some();
    let observe = config.flags & GUARD_FLAG_OBSERVE != 0;
    let code = if listed {
        verdict::ALLOWED
    } else if observe {
        verdict::OBSERVED
    } else {
        verdict::DENIED
    };
    match EVENTS.reserve::<UnixEvent>(0) {
        Some(mut slot) => {
            // SAFETY: the context pointer is valid for the whole program run; a 4-byte ctx load.
            let sock_type = unsafe { (*ctx).type_ };
            let ev = slot.as_mut_ptr();
            // SAFETY: `ev` points at a reserved record of the right size; every field is
            // written before it is submitted.
            unsafe {
                (*ev).header = header(event_kind::UNIX, cgroup, &config);
                (*ev).op = op;
                (*ev).verdict = code;
                (*ev).sock_type = sock_type;
                (*ev).len = key.len;
                (*ev).path = key.path;
                (*ev).pad = 0;
            }
            slot.submit(submit_flags());
        }
        None => count_drop(drop_reason::RINGBUF_FULL),
    }
    if code == verdict::DENIED { DENY } else { ALLOW }
}
