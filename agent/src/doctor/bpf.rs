//! Tiny hand-assembled BPF programs for the probes that need a program of a given type attached
//! to a real hook, which aya can only do for programs found in an object file.
//!
//! Every program here is a handful of instructions (`mov r0, 0; exit`, or a `send_signal` aimed at
//! one probe child); each is attached only for the duration of its probe and released by closing
//! its file descriptors.

use std::{
    ffi::CStr,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use super::Errno;
use mcp_guard_kernel::bpf_sys::ProgLoadAttr;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;

/// `BPF_PROG_TYPE_TRACEPOINT`.
pub(super) const PROG_TRACEPOINT: u32 = 5;
/// `BPF_PROG_TYPE_RAW_TRACEPOINT`.
pub(super) const PROG_RAW_TRACEPOINT: u32 = 17;
/// `BPF_PROG_TYPE_TRACING` (`tp_btf`, fentry, ...).
pub(super) const PROG_TRACING: u32 = 26;
/// `BPF_PROG_TYPE_LSM`.
pub(super) const PROG_LSM: u32 = 29;
/// `BPF_TRACE_RAW_TP`: a tracing program on a BTF-typed raw tracepoint (`tp_btf`).
pub(super) const ATTACH_TRACE_RAW_TP: u32 = 23;
/// `BPF_LSM_MAC`.
pub(super) const ATTACH_LSM_MAC: u32 = 27;

const FUNC_GET_CURRENT_PID_TGID: i32 = 14;
const FUNC_SEND_SIGNAL: i32 = 109;

/// One eBPF instruction as the kernel reads it (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct Insn {
    code: u8,
    /// dst register in the low nibble, src in the high nibble.
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst & 0x0f,
        off,
        imm,
    }
}

/// `BPF_ALU64 | BPF_MOV | BPF_K`: dst = imm.
const fn mov_imm(dst: u8, imm: i32) -> Insn {
    insn(0xb7, dst, 0, imm)
}
/// `BPF_JMP | BPF_CALL`: r0 = helper(r1..r5).
const fn call(helper: i32) -> Insn {
    insn(0x85, 0, 0, helper)
}
/// `BPF_JMP | BPF_EXIT`.
const fn exit() -> Insn {
    insn(0x95, 0, 0, 0)
}

/// `r0 = 0; exit`: loads for every program type and, for LSM, means "allow".
pub(super) const TRIVIAL: [Insn; 2] = [mov_imm(0, 0), exit()];

/// A program that sends `signal` to the current task when its tgid is `tgid`, and does nothing
/// for any other task.
pub(super) fn send_signal_to(tgid: u32, signal: i32) -> [Insn; 7] {
    [
        call(FUNC_GET_CURRENT_PID_TGID),
        // BPF_ALU64 | BPF_RSH | BPF_K: r0 >>= 32 leaves the tgid.
        insn(0x77, 0, 0, 32),
        // BPF_JMP | BPF_JNE | BPF_K: any other process skips to `r0 = 0; exit`.
        insn(0x55, 0, 2, tgid.cast_signed()),
        mov_imm(1, signal),
        call(FUNC_SEND_SIGNAL),
        mov_imm(0, 0),
        exit(),
    ]
}

/// `union bpf_attr` for `BPF_RAW_TRACEPOINT_OPEN` (without the optional cookie).
#[repr(C)]
#[derive(Default)]
struct RawTracepointAttr {
    name: u64,
    prog_fd: u32,
    _pad: u32,
}

fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> Result<OwnedFd, i32> {
    // SAFETY: `attr` is a live, fully initialised #[repr(C)] prefix of `union bpf_attr` for `cmd`
    // and we pass its exact size; every pointer inside it outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<T>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "bpf(2) returns an fd, an int, in a long"
    )]
    // SAFETY: on success these commands return a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
}

/// Loads `insns` as a program of `prog_type`; the error carries the errno and the verifier log.
pub(super) fn load(
    name: &str,
    prog_type: u32,
    expected_attach_type: u32,
    attach_btf_id: u32,
    insns: &[Insn],
) -> Result<OwnedFd, Errno> {
    let license = c"GPL";
    let mut log = vec![0u8; 16 * 1024];
    let mut prog_name = [0u8; 16];
    for (dst, src) in prog_name.iter_mut().zip(name.bytes().take(15)) {
        *dst = src;
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the probes' own programs (a few instructions) and log buffer, in __u32 fields"
    )]
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name,
        expected_attach_type,
        attach_btf_id,
        ..ProgLoadAttr::default()
    };
    sys_bpf(BPF_PROG_LOAD, &mut attr).map_err(|errno| {
        let text = CStr::from_bytes_until_nul(&log)
            .map(|c| c.to_string_lossy().trim().to_string())
            .unwrap_or_default();
        Errno {
            errno,
            log: Some(text),
        }
    })
}

/// Attaches a `raw_tracepoint` program to tracepoint `name`, or a `tp_btf` / LSM program (`None`) to
/// the hook it was loaded for. Closing the returned fd detaches it.
pub(super) fn raw_tracepoint_open(name: Option<&CStr>, prog: &OwnedFd) -> Result<OwnedFd, Errno> {
    let mut attr = RawTracepointAttr {
        name: name.map_or(0, |n| n.as_ptr() as u64),
        prog_fd: prog.as_raw_fd().cast_unsigned(),
        _pad: 0,
    };
    sys_bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr).map_err(Errno::bare)
}

/// `struct perf_event_attr` in its first published size (`PERF_ATTR_SIZE_VER0`, 64 bytes).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
/// `_IOW('$', 8, __u32)`.
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;

/// Attaches a tracepoint program to the tracepoint with tracefs id `tracepoint_id` on CPU 0.
/// Closing the returned perf event fd detaches it.
pub(super) fn attach_tracepoint(prog: &OwnedFd, tracepoint_id: u64) -> Result<OwnedFd, Errno> {
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the size of a kernel struct, a __u32"
    )]
    let attr = PerfEventAttr {
        type_: PERF_TYPE_TRACEPOINT,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: tracepoint_id,
        sample_period: 1,
        wakeup_events: 1,
        ..PerfEventAttr::default()
    };
    // SAFETY: `attr` is a fully initialised perf_event_attr of the size it declares; pid -1 with
    // cpu 0 asks for a system-wide event and group_fd -1 for no group.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            std::ptr::from_ref(&attr),
            -1 as libc::pid_t,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if ret < 0 {
        return Err(Errno::last());
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "perf_event_open(2) returns an fd, an int, in a long"
    )]
    // SAFETY: perf_event_open returned a new fd that nothing else owns.
    let event = unsafe { OwnedFd::from_raw_fd(ret as i32) };
    // SAFETY: both fds are open for the duration of the call; SET_BPF takes the program fd by value.
    let ret = unsafe {
        libc::ioctl(
            event.as_raw_fd(),
            PERF_EVENT_IOC_SET_BPF as _,
            prog.as_raw_fd(),
        )
    };
    if ret < 0 {
        return Err(Errno::last());
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_have_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<Insn>(), 8);
        assert_eq!(std::mem::size_of::<PerfEventAttr>(), 64);
        let prog = send_signal_to(42, 12);
        // The jump lands on `r0 = 0; exit`, skipping the signal for any other tgid.
        assert_eq!(prog[2].off, 2);
        assert_eq!(prog[2 + 1 + 2].code, 0xb7);
        assert_eq!(prog[2].imm, 42);
    }
}
