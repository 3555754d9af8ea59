//! Syscall tracing for guarded cgroups: exec and open events, connects landlock refused, and the
//! sensitive-path kill.
//!
//! `tp_btf/sys_enter` and `tp_btf/sys_exit` fire for every syscall on the host, so both look at
//! the syscall number first and return for the ones they do not trace, then after one hash
//! lookup for tasks outside `GUARDED`. Arguments come from the user `pt_regs` (a UAPI layout on
//! x86_64) through probe reads: no CO-RE, no kernel struct layouts.
//!
//! An open is reported in one record at exit: path, flags and result. The path is read then,
//! after the kernel's own copy has faulted its page in, into a per-CPU record (which doubles as
//! the sensitive-path lookup key) that goes to the ring buffer up to the path's NUL. In a
//! cgroup that kills on sensitive paths the path is also read and checked at entry, before the
//! kernel copies it (the narrowest window for a thread that rewrites the buffer); an entry read
//! that fails marks the thread in `REREAD`, and the check runs at exit instead.
//!
//! An exec is read at entry (the path and argv are gone from memory once it succeeds), held per
//! thread in `EXEC_PENDING` and reported at exit with its result, so userspace can tell the
//! programs that ran from the attempts that failed (`env` trying each `PATH` entry). What cannot
//! be held (a thread other than the leader, whose thread id a successful exec changes; a full
//! map) is reported at entry as an attempt of unknown outcome.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_user,
        generated::{
            bpf_probe_read_kernel as probe_copy_kernel, bpf_probe_read_user_str, bpf_send_signal,
        },
    },
    macros::{btf_tracepoint, map},
    maps::{HashMap, LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::BtfTracePointContext,
};
use mcp_guard_ebpf::{
    ARG_LEN, ARGV_ENTRIES, ConnectEvent, ExecDoneEvent, ExecEvent, GUARD_FLAG_KILL_SENSITIVE,
    GuardConfig, KillEvent, NAME_LEN, NameKey, OPEN_PATH_OFFSET, OpenEvent, PATH_LEN, PathKey,
    drop_reason, event_kind, last_component, sock_op, tail_window, verdict,
};

use crate::common::{EVENTS, count_drop, guard, header, submit_flags};

// x86_64 syscall numbers.
const SYS_OPEN: i64 = 2;
const SYS_CREAT: i64 = 85;
const SYS_OPENAT: i64 = 257;
const SYS_OPENAT2: i64 = 437;
const SYS_EXECVE: i64 = 59;
const SYS_EXECVEAT: i64 = 322;
const SYS_CONNECT: i64 = 42;

/// What landlock returns for a connect its TCP port rules refuse (the cgroup hook's EPERM is
/// reported by the hook itself).
const EACCES: i64 = 13;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u32 = 6;

// `struct pt_regs` u64 slots (arch/x86/include/uapi/asm/ptrace.h).
const REG_DX: usize = 12;
const REG_SI: usize = 13;
const REG_DI: usize = 14;
const REG_ORIG_AX: usize = 15;

const SIGKILL: u32 = 9;
/// O_WRONLY | O_CREAT | O_TRUNC: what creat(2) means.
const CREAT_FLAGS: u32 = 0o1 | 0o100 | 0o1000;

/// Sensitive paths per cgroup; the value is unused (presence is the answer). Besides the
/// absolute paths, userspace stores their tails (`.ssh/`, `.aws/credentials`) for relative
/// paths.
#[map]
static SENSITIVE: LpmTrie<PathKey, u32> = LpmTrie::with_max_entries(16384, 0);

/// Sensitive file names per cgroup, matched against the last component of the path as passed.
#[map]
static SENSITIVE_NAMES: HashMap<NameKey, u32> = HashMap::with_max_entries(4096, 0);

/// Room to build a `NameKey`.
#[map]
static NAME_SCRATCH: PerCpuArray<NameKey> = PerCpuArray::with_max_entries(1, 0);

/// Room for the last NAME_LEN bytes of a path, where its last component is looked for.
#[map]
static TAIL_SCRATCH: PerCpuArray<[u8; NAME_LEN]> = PerCpuArray::with_max_entries(1, 0);

/// Room to build an open record (slot 0: at entry for the sensitive check, at exit for the
/// record), and for a relative path's key once its leading `./` is stripped (slot 1).
#[map]
static SCRATCH: PerCpuArray<OpenEvent> = PerCpuArray::with_max_entries(2, 0);

/// Threads of kill-on-sensitive cgroups whose open path could not be read at entry (the page
/// holding it was not faulted in yet): sys_exit checks it instead. A plain (preallocated) hash:
/// an open always reaches sys_exit, even in a task being killed, so entries do not leak.
#[map]
static REREAD: HashMap<u64, u32> = HashMap::with_max_entries(4096, 0);

/// Execs of leader threads waiting for their result, by `pid_tgid`. A plain (preallocated) hash:
/// every exec reaches sys_exit (a failed one in the caller, a successful one in the new program,
/// with the leader's thread id unchanged), so entries do not leak; a full map only means
/// attempts are reported at entry.
#[map]
static EXEC_PENDING: HashMap<u64, ExecDoneEvent> = HashMap::with_max_entries(4096, 0);

/// Room to build an exec record before it goes into `EXEC_PENDING`.
#[map]
static EXEC_SCRATCH: PerCpuArray<ExecDoneEvent> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn reg(regs: *const u64, slot: usize) -> u64 {
    // SAFETY: `regs` is the tracepoint's BTF-typed `struct pt_regs *`: the verifier checks the
    // offset against the type and turns the load into a fault-safe one (BPF_PROBE_MEM).
    unsafe { regs.wrapping_add(slot).read_volatile() }
}

// 6.1's verifier logs "reg type unsupported for arg#0 function trace_sys_enter" before it
// verifies this: it compares the function's BTF prototype with the context pointer and, for a
// program's entry function, only warns. It loads, attaches and runs there (the matrix's event
// and sensitive-path-kill cases pass on 6.1), so no raw-tracepoint fallback is needed.
#[btf_tracepoint(function = "sys_enter")]
pub(crate) fn trace_sys_enter(ctx: BtfTracePointContext) -> i32 {
    let id: i64 = ctx.arg(1);
    // The syscall number first: most syscalls are not traced, and this costs no lookup.
    if !(is_open(id) || matches!(id, SYS_EXECVE | SYS_EXECVEAT)) {
        return 0;
    }
    let Some((cgroup, config)) = guard() else {
        return 0;
    };
    let regs: *const u64 = ctx.arg(0);
    if is_open(id) {
        if config.flags & GUARD_FLAG_KILL_SENSITIVE != 0 {
            check_open_enter(regs, id, cgroup, &config);
        }
    } else {
        on_exec(regs, id, cgroup, &config);
    }
    0
}

#[btf_tracepoint(function = "sys_exit")]
pub(crate) fn trace_sys_exit(ctx: BtfTracePointContext) -> i32 {
    let regs: *const u64 = ctx.arg(0);
    let id = reg(regs, REG_ORIG_AX) as i64;
    if matches!(id, SYS_EXECVE | SYS_EXECVEAT) {
        // Before the guard check: whatever held an exec at entry, its entry goes now.
        on_exec_exit(ctx.arg(1));
        return 0;
    }
    if !(is_open(id) || id == SYS_CONNECT) {
        return 0;
    }
    let Some((cgroup, config)) = guard() else {
        return 0;
    };
    let ret: i64 = ctx.arg(1);
    if id == SYS_CONNECT {
        if ret == -EACCES {
            emit_refused_connect(regs, cgroup, &config);
        }
        return 0;
    }
    // Only a kill-on-sensitive cgroup marks threads, and only when the entry read failed.
    let check = config.flags & GUARD_FLAG_KILL_SENSITIVE != 0 && take_reread();
    on_open_exit(regs, id, cgroup, &config, ret, check);
    0
}

#[inline(always)]
fn is_open(id: i64) -> bool {
    matches!(id, SYS_OPEN | SYS_CREAT | SYS_OPENAT | SYS_OPENAT2)
}

/// Whether the current thread's open is marked for a path read at exit; clears the mark. A
/// lockless lookup that misses for almost every open; only a hit pays for the delete.
#[inline(always)]
fn take_reread() -> bool {
    let tid = bpf_get_current_pid_tgid();
    // SAFETY: only presence is tested.
    if unsafe { REREAD.get(&tid) }.is_none() {
        return false;
    }
    let _ = REREAD.remove(&tid);
    true
}

/// Marks the current thread's open for a path read at exit; false when the mark could not be
/// kept (map full).
#[inline(always)]
fn mark_reread() -> bool {
    REREAD.insert(&bpf_get_current_pid_tgid(), &0, 0).is_ok()
}

/// A connect landlock refused never reaches the cgroup connect hook: report it here. The
/// arguments are still in the saved user registers at exit (x86_64 preserves rdi/rsi/rdx), and
/// the sockaddr is still in user memory.
fn emit_refused_connect(regs: *const u64, cgroup: u64, config: &GuardConfig) {
    let sa = reg(regs, REG_SI) as *const u8;
    // sockaddr_in6 is 28 bytes, sockaddr_in 16: a short buffer at a page end only fits the latter.
    // SAFETY: probe reads of user memory; a fault returns an error.
    let raw: [u8; 28] = match unsafe { bpf_probe_read_user(sa as *const [u8; 28]) } {
        Ok(b) => b,
        // SAFETY: as above, 16 bytes.
        Err(_) => match unsafe { bpf_probe_read_user(sa as *const [u8; 16]) } {
            Ok(b) => {
                let mut full = [0u8; 28];
                full[..16].copy_from_slice(&b);
                full
            }
            Err(_) => return,
        },
    };
    let family = u16::from_ne_bytes([raw[0], raw[1]]);
    let port = u16::from_be_bytes([raw[2], raw[3]]);
    let mut addr = [0u8; 16];
    match family {
        AF_INET => addr[..4].copy_from_slice(&raw[4..8]),
        AF_INET6 => addr.copy_from_slice(&raw[8..24]),
        _ => return,
    }
    let event = ConnectEvent {
        header: header(event_kind::CONNECT, cgroup, config),
        addr,
        family: u32::from(family),
        port: u32::from(port),
        protocol: IPPROTO_TCP,
        op: sock_op::CONNECT,
        verdict: verdict::DENIED,
        pad: 0,
    };
    if EVENTS
        .output::<ConnectEvent>(&event, submit_flags())
        .is_err()
    {
        count_drop(drop_reason::RINGBUF_FULL);
    }
}

/// The path pointer and flags of an open, from the saved user registers (still intact at
/// exit: the syscall only writes the return register).
#[inline(always)]
fn open_args(regs: *const u64, id: i64) -> (u64, u32) {
    match id {
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
    }
}

/// Fills `ev` (all but the header) for an open and reads its path; returns the string length
/// with its NUL, or <= 0 when the path could not be read.
#[inline(always)]
fn fill_open(ev: &mut OpenEvent, regs: *const u64, id: i64, cgroup: u64, result: i64) -> i64 {
    let (path_ptr, flags) = open_args(regs, id);
    ev.result = result;
    ev.flags = flags;
    ev.syscall = id as u32;
    ev.key_bits = ((8 + PATH_LEN) * 8) as u32;
    ev.key.cgroup = cgroup.to_be_bytes();
    // SAFETY: the destination is the record's PATH_LEN-byte path; the source is a user
    // pointer read through the fault-safe helper.
    let n = unsafe {
        bpf_probe_read_user_str(
            ev.key.path.as_mut_ptr().cast::<c_void>(),
            PATH_LEN as u32,
            path_ptr as *const c_void,
        )
    };
    if n <= 0 {
        ev.key.path[0] = 0;
    }
    n
}

/// The sensitive-path check of a kill-on-sensitive cgroup, before the kernel copies the path:
/// the path is read into scratch space; the open itself is reported at exit.
fn check_open_enter(regs: *const u64, id: i64, cgroup: u64, config: &GuardConfig) {
    let Some(ev) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch slot, exclusively ours while this program runs.
    let ev = unsafe { &mut *ev };
    let n = fill_open(ev, regs, id, cgroup, 0);
    if n <= 0 {
        // Probably a page not faulted in yet: the kernel's own copy will fault it in, and the
        // exit checks the path it reads. Without the mark the check is skipped: counted.
        if !mark_reread() {
            count_drop(drop_reason::PATH_READ);
        }
    } else {
        // Signal now, at syscall entry: the task dies before it returns to user space and can
        // never use what it opened.
        kill_if_sensitive(ev, n as usize - 1, cgroup, config);
    }
}

/// Reports an open with its result; `check` runs the sensitive-path check the entry could not.
///
/// The record is built in scratch space and copied into the ring buffer only up to the path's
/// NUL (a reserved record has a fixed size: the whole path buffer).
fn on_open_exit(
    regs: *const u64,
    id: i64,
    cgroup: u64,
    config: &GuardConfig,
    ret: i64,
    check: bool,
) {
    let Some(ev) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch slot, exclusively ours while this program runs.
    let ev = unsafe { &mut *ev };
    ev.header = header(event_kind::OPEN, cgroup, config);
    let n = fill_open(ev, regs, id, cgroup, ret);
    if n <= 0 {
        count_drop(drop_reason::PATH_READ);
    }
    // The path's bytes with their NUL (an unread path is one NUL); `fill_open` never returns
    // more than PATH_LEN, and the bound tells the verifier so.
    let path_bytes = if n <= 0 { 1 } else { n as usize };
    let len = OPEN_PATH_OFFSET
        + if path_bytes > PATH_LEN {
            PATH_LEN
        } else {
            path_bytes
        };
    // SAFETY: `len` is at most the offset of the path plus the path buffer, inside the record.
    let record = unsafe { core::slice::from_raw_parts((ev as *const OpenEvent).cast::<u8>(), len) };
    if EVENTS.output::<[u8]>(record, submit_flags()).is_err() {
        count_drop(drop_reason::RINGBUF_FULL);
    }
    if n > 0 && check {
        // Still in time: the signal is delivered before the task returns to user space, so it
        // never runs with the new fd.
        kill_if_sensitive(ev, n as usize - 1, cgroup, config);
    }
}

/// SIGKILLs the current task and reports it when the cgroup kills on sensitive paths and the
/// open's path (`len` bytes without the NUL) is one.
#[inline(always)]
fn kill_if_sensitive(ev: &OpenEvent, len: usize, cgroup: u64, config: &GuardConfig) {
    if config.flags & GUARD_FLAG_KILL_SENSITIVE == 0 {
        return;
    }
    // SAFETY: `key_bits` and `key` are laid out as `Key<PathKey>` (a packed u32 then the key
    // data), inside the record.
    let key = unsafe { &*(&ev.key_bits as *const u32).cast::<Key<PathKey>>() };
    if SENSITIVE.get(key).is_some()
        || name_is_sensitive(cgroup, &ev.key.path, len)
        || dot_relative_is_sensitive(&ev.key)
    {
        // SAFETY: a helper acting on the current task.
        unsafe { bpf_send_signal(SIGKILL) };
        emit_kill(cgroup, config, ev.syscall, &ev.key.path);
    }
}

/// How many leading `./` (and slashes after one) are stripped from a relative path.
const MAX_DOT_SLASH: usize = 8;

/// For a relative path starting with `./`: whether it is sensitive once those are stripped
/// (`./.ssh/id_rsa` is `.ssh/id_rsa`, whose tail key userspace stored).
#[inline(always)]
fn dot_relative_is_sensitive(key: &PathKey) -> bool {
    if key.path[0] != b'.' || key.path[1] != b'/' {
        return false;
    }
    let mut skip = 0usize;
    let mut i = 0;
    while i < MAX_DOT_SLASH {
        match (key.path.get(skip), key.path.get(skip + 1)) {
            (Some(b'.'), Some(b'/')) => skip += 2,
            (Some(b'/'), _) => skip += 1,
            _ => break,
        }
        i += 1;
    }
    // `skip` is at most 2 * MAX_DOT_SLASH; the mask tells the verifier so.
    let skip = skip & (4 * MAX_DOT_SLASH - 1);
    let Some(stripped) = SCRATCH.get_ptr_mut(1) else {
        return false;
    };
    // SAFETY: this CPU's second scratch slot, used by nothing else while this program runs.
    let stripped = unsafe { &mut *stripped };
    stripped.key_bits = ((8 + PATH_LEN) * 8) as u32;
    stripped.key.cgroup = key.cgroup;
    // A helper copy: the verifier can bound its size argument, not a variable index.
    // SAFETY: `skip + (PATH_LEN - skip)` stays inside the source path and the copy fits the
    // destination.
    unsafe {
        probe_copy_kernel(
            stripped.key.path.as_mut_ptr().cast::<c_void>(),
            (PATH_LEN - skip) as u32,
            key.path.as_ptr().wrapping_add(skip).cast::<c_void>(),
        )
    };
    // SAFETY: as in `kill_if_sensitive`.
    let lookup = unsafe { &*(&stripped.key_bits as *const u32).cast::<Key<PathKey>>() };
    SENSITIVE.get(lookup).is_some()
}

/// Whether the last component of `path` (`len` bytes, without the NUL) is a sensitive name.
#[inline(always)]
fn name_is_sensitive(cgroup: u64, path: &[u8; PATH_LEN], len: usize) -> bool {
    let Some(tail) = TAIL_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's scratch slot, used by nothing else while this program runs.
    let tail = unsafe { &mut *tail };
    // The path's last bytes go to a power-of-two window that `last_component` can index with a
    // masked, provably bounded index (see there). Always a whole window, so the copy's size is
    // a constant: a computed one is bounded on one register and passed in another, which 6.1's
    // and 6.12's verifiers reject; what lies past `tail_len` is never read.
    let (from, tail_len) = tail_window(len);
    // SAFETY: `from <= PATH_LEN - NAME_LEN`, so the NAME_LEN bytes from there are inside `path`,
    // and they fit `tail`.
    unsafe {
        probe_copy_kernel(
            tail.as_mut_ptr().cast::<c_void>(),
            NAME_LEN as u32,
            path.as_ptr().wrapping_add(from).cast::<c_void>(),
        )
    };
    let Some((start, name_len)) = last_component(tail, tail_len) else {
        return false;
    };
    let Some(key) = NAME_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's scratch slot, used by nothing else while this program runs.
    let key = unsafe { &mut *key };
    key.cgroup = cgroup.to_be_bytes();
    let mut j = 0usize;
    while j < NAME_LEN {
        key.name[j] = 0;
        j += 1;
    }
    // A helper copy: the verifier cannot relate a variable `start + j` index to the bounds
    // checked on another register, but it can bound a helper's size argument.
    // SAFETY: `start + name_len <= tail_len <= NAME_LEN`, so the source stays inside `tail`, and
    // `name_len < NAME_LEN` fits the destination.
    unsafe {
        probe_copy_kernel(
            key.name.as_mut_ptr().cast::<c_void>(),
            (name_len & (NAME_LEN - 1)) as u32,
            tail.as_ptr().wrapping_add(start).cast::<c_void>(),
        )
    };
    // SAFETY: the value is only tested for presence.
    unsafe { SENSITIVE_NAMES.get(&*key) }.is_some()
}

fn emit_kill(cgroup: u64, config: &GuardConfig, syscall: u32, path: &[u8; PATH_LEN]) {
    let Some(mut entry) = EVENTS.reserve::<KillEvent>(0) else {
        count_drop(drop_reason::RINGBUF_FULL);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved, exclusively owned record of the right size.
    unsafe {
        (*ev).header = header(event_kind::KILL, cgroup, config);
        (*ev).signal = SIGKILL;
        (*ev).syscall = syscall;
        probe_copy_kernel(
            (*ev).path.as_mut_ptr().cast::<c_void>(),
            PATH_LEN as u32,
            path.as_ptr().cast::<c_void>(),
        );
    }
    entry.submit(submit_flags());
}

fn on_exec(regs: *const u64, id: i64, cgroup: u64, config: &GuardConfig) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if pid_tgid >> 32 == pid_tgid & 0xffff_ffff
        && let Some(held) = EXEC_SCRATCH.get_ptr_mut(0)
    {
        // SAFETY: a per-CPU slot: no other program touches it while this one runs on this CPU.
        let held = unsafe {
            read_exec(
                &raw mut (*held).exec,
                event_kind::EXEC_DONE,
                regs,
                id,
                cgroup,
                config,
            );
            (*held).result = 0;
            &*held
        };
        if EXEC_PENDING.insert(&pid_tgid, held, 0).is_ok() {
            return;
        }
    }
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count_drop(drop_reason::RINGBUF_FULL);
        return;
    };
    read_exec(
        entry.as_mut_ptr(),
        event_kind::EXEC,
        regs,
        id,
        cgroup,
        config,
    );
    entry.submit(submit_flags());
}

/// Reports the exec the current thread held at entry, with its result.
fn on_exec_exit(result: i64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(held) = EXEC_PENDING.get_ptr_mut(&pid_tgid) else {
        return;
    };
    // SAFETY: the thread's own entry: only this thread's exit touches it.
    let sent = unsafe {
        (*held).result = result;
        EVENTS.output::<ExecDoneEvent>(&*held, submit_flags())
    };
    if sent.is_err() {
        count_drop(drop_reason::RINGBUF_FULL);
    }
    let _ = EXEC_PENDING.remove(&pid_tgid);
}

/// Fills `ev` (a reserved record or a map value) with the exec's header, path and first argv
/// entries.
#[inline(always)]
fn read_exec(
    ev: *mut ExecEvent,
    kind: u32,
    regs: *const u64,
    id: i64,
    cgroup: u64,
    config: &GuardConfig,
) {
    let (path_ptr, argv_ptr) = if id == SYS_EXECVE {
        (reg(regs, REG_DI), reg(regs, REG_SI))
    } else {
        (reg(regs, REG_SI), reg(regs, REG_DX))
    };
    // SAFETY: `ev` is a reserved record or a map value; the user pointers are only touched by
    // probe reads.
    unsafe {
        (*ev).header = header(kind, cgroup, config);
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
}
