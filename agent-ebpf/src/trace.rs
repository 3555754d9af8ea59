//! Syscall tracing for guarded cgroups: exec and open events, and the sensitive-path kill.
//!
//! `tp_btf/sys_enter` and `tp_btf/sys_exit` fire for every syscall on the host, so both return
//! after one hash lookup for tasks outside `GUARDED`. Arguments come from the user `pt_regs`
//! (a UAPI layout on x86_64) through probe reads: no CO-RE, no kernel struct layouts.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{
            bpf_probe_read_kernel as probe_copy_kernel, bpf_probe_read_user_str, bpf_send_signal,
        },
    },
    macros::{btf_tracepoint, map},
    maps::{LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
    programs::BtfTracePointContext,
};
use mcp_guard_ebpf::{
    ARG_LEN, ARGV_ENTRIES, ExecEvent, GUARD_FLAG_KILL_SENSITIVE, GuardConfig, KillEvent, OpenEvent,
    PATH_LEN, PathKey, drop_reason, event_kind,
};

use crate::common::{EVENTS, count_drop, guard, header};

// x86_64 syscall numbers.
const SYS_OPEN: i64 = 2;
const SYS_CREAT: i64 = 85;
const SYS_OPENAT: i64 = 257;
const SYS_OPENAT2: i64 = 437;
const SYS_EXECVE: i64 = 59;
const SYS_EXECVEAT: i64 = 322;

// `struct pt_regs` u64 slots (arch/x86/include/uapi/asm/ptrace.h).
const REG_DX: usize = 12;
const REG_SI: usize = 13;
const REG_DI: usize = 14;
const REG_ORIG_AX: usize = 15;

const SIGKILL: u32 = 9;
/// O_WRONLY | O_CREAT | O_TRUNC: what creat(2) means.
const CREAT_FLAGS: u32 = 0o1 | 0o100 | 0o1000;

/// An open in flight: its path (already in LPM key form for the sensitive lookup) and flags.
#[repr(C)]
struct OpenStash {
    key: Key<PathKey>,
    flags: u32,
    syscall: u32,
}

/// Sensitive paths per cgroup; the value is unused (presence is the answer).
#[map]
static SENSITIVE: LpmTrie<PathKey, u32> = LpmTrie::with_max_entries(16384, 0);

/// Room to build an `OpenStash` (too big for the 512-byte stack next to everything else).
#[map]
static SCRATCH: PerCpuArray<OpenStash> = PerCpuArray::with_max_entries(1, 0);

/// Opens between sys_enter and sys_exit, by thread. LRU: a task killed mid-call leaks nothing.
#[map]
static OPEN_PENDING: LruHashMap<u64, OpenStash> = LruHashMap::with_max_entries(16384, 0);

#[inline(always)]
fn reg(regs: *const u64, slot: usize) -> u64 {
    // SAFETY: a probe read: a bad pointer gives an error, never a fault.
    unsafe { bpf_probe_read_kernel(regs.wrapping_add(slot)) }.unwrap_or(0)
}

#[btf_tracepoint(function = "sys_enter")]
pub fn trace_sys_enter(ctx: BtfTracePointContext) -> i32 {
    let Some((cgroup, config)) = guard() else {
        return 0;
    };
    let regs: *const u64 = ctx.arg(0);
    let id: i64 = ctx.arg(1);
    match id {
        SYS_OPEN | SYS_CREAT | SYS_OPENAT | SYS_OPENAT2 => on_open_enter(regs, id, cgroup, &config),
        SYS_EXECVE | SYS_EXECVEAT => on_exec(regs, id, cgroup, &config),
        _ => {}
    }
    0
}

#[btf_tracepoint(function = "sys_exit")]
pub fn trace_sys_exit(ctx: BtfTracePointContext) -> i32 {
    let Some((cgroup, config)) = guard() else {
        return 0;
    };
    let regs: *const u64 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    let id = reg(regs, REG_ORIG_AX) as i64;
    if !matches!(id, SYS_OPEN | SYS_CREAT | SYS_OPENAT | SYS_OPENAT2) {
        return 0;
    }
    let tid = bpf_get_current_pid_tgid();
    // SAFETY: the entry is read before it is removed, by the only thread that writes it.
    let Some(stash) = OPEN_PENDING.get_ptr(&tid) else {
        return 0;
    };
    // SAFETY: `get_ptr` returned a valid map value pointer.
    emit_open(cgroup, &config, unsafe { &*stash }, ret);
    let _ = OPEN_PENDING.remove(&tid);
    0
}

fn on_open_enter(regs: *const u64, id: i64, cgroup: u64, config: &GuardConfig) {
    let (path_ptr, flags) = match id {
        SYS_OPEN => (reg(regs, REG_DI), reg(regs, REG_SI) as u32),
        SYS_CREAT => (reg(regs, REG_DI), CREAT_FLAGS),
        SYS_OPENAT => (reg(regs, REG_SI), reg(regs, REG_DX) as u32),
        _ => {
            // openat2(dirfd, path, struct open_how *how, size): flags is how's first u64.
            let how = reg(regs, REG_DX) as *const u64;
            // SAFETY: a probe read of user memory.
            let flags = unsafe { bpf_probe_read_user(how) }.unwrap_or(0);
            (reg(regs, REG_SI), flags as u32)
        }
    };
    let Some(stash) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch slot, used by nothing else while this program runs.
    let stash = unsafe { &mut *stash };
    stash.flags = flags;
    stash.syscall = id as u32;
    stash.key.prefix_len = ((8 + PATH_LEN) * 8) as u32;
    stash.key.data.cgroup = cgroup.to_be_bytes();
    // SAFETY: the destination is the scratch path buffer of PATH_LEN bytes; the source is a
    // user pointer read through the fault-safe helper.
    let n = unsafe {
        bpf_probe_read_user_str(
            stash.key.data.path.as_mut_ptr().cast::<c_void>(),
            PATH_LEN as u32,
            path_ptr as *const c_void,
        )
    };
    if n <= 0 {
        stash.key.data.path[0] = 0;
        count_drop(drop_reason::PATH_READ);
    } else if config.flags & GUARD_FLAG_KILL_SENSITIVE != 0 && SENSITIVE.get(&stash.key).is_some() {
        // Signal now, at syscall entry: the task dies before it returns to user space and can
        // never use what it opened.
        // SAFETY: a helper acting on the current task.
        unsafe { bpf_send_signal(SIGKILL) };
        emit_kill(cgroup, config, stash);
    }
    let tid = bpf_get_current_pid_tgid();
    if OPEN_PENDING.insert(&tid, &*stash, 0).is_err() {
        // Report the attempt without its result rather than lose it.
        count_drop(drop_reason::STASH_FULL);
        emit_open(cgroup, config, stash, i64::MIN);
    }
}

fn emit_open(cgroup: u64, config: &GuardConfig, stash: &OpenStash, result: i64) {
    let Some(mut entry) = EVENTS.reserve::<OpenEvent>(0) else {
        count_drop(drop_reason::RINGBUF_FULL);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved, exclusively owned record of the right size.
    unsafe {
        (*ev).header = header(event_kind::OPEN, cgroup, config);
        (*ev).result = result;
        (*ev).flags = stash.flags;
        (*ev).syscall = stash.syscall;
        probe_copy_kernel(
            (*ev).path.as_mut_ptr().cast::<c_void>(),
            PATH_LEN as u32,
            stash.key.data.path.as_ptr().cast::<c_void>(),
        );
    }
    entry.submit(0);
}

fn emit_kill(cgroup: u64, config: &GuardConfig, stash: &OpenStash) {
    let Some(mut entry) = EVENTS.reserve::<KillEvent>(0) else {
        count_drop(drop_reason::RINGBUF_FULL);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: as in `emit_open`.
    unsafe {
        (*ev).header = header(event_kind::KILL, cgroup, config);
        (*ev).signal = SIGKILL;
        (*ev).syscall = stash.syscall;
        probe_copy_kernel(
            (*ev).path.as_mut_ptr().cast::<c_void>(),
            PATH_LEN as u32,
            stash.key.data.path.as_ptr().cast::<c_void>(),
        );
    }
    entry.submit(0);
}

fn on_exec(regs: *const u64, id: i64, cgroup: u64, config: &GuardConfig) {
    let (path_ptr, argv_ptr) = if id == SYS_EXECVE {
        (reg(regs, REG_DI), reg(regs, REG_SI))
    } else {
        (reg(regs, REG_SI), reg(regs, REG_DX))
    };
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count_drop(drop_reason::RINGBUF_FULL);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is a reserved record; the user pointers are only touched by probe reads.
    unsafe {
        (*ev).header = header(event_kind::EXEC, cgroup, config);
        (*ev).syscall = id as u32;
        let n = bpf_probe_read_user_str(
            (*ev).path.as_mut_ptr().cast::<c_void>(),
            PATH_LEN as u32,
            path_ptr as *const c_void,
        );
        if n <= 0 {
            (*ev).path[0] = 0;
            count_drop(drop_reason::PATH_READ);
        }
        let mut argc = 0u32;
        let mut i = 0usize;
        while i < ARGV_ENTRIES {
            let slot = (argv_ptr as *const u64).wrapping_add(i);
            match bpf_probe_read_user(slot) {
                Ok(0) => break,
                Ok(arg) => {
                    let n = bpf_probe_read_user_str(
                        (*ev).argv[i].as_mut_ptr().cast::<c_void>(),
                        ARG_LEN as u32,
                        arg as *const c_void,
                    );
                    if n <= 0 {
                        (*ev).argv[i][0] = 0;
                        count_drop(drop_reason::ARGV_READ);
                    }
                    argc += 1;
                }
                Err(_) => {
                    count_drop(drop_reason::ARGV_READ);
                    break;
                }
            }
            i += 1;
        }
        (*ev).argc = argc;
    }
    entry.submit(0);
}
