//! Which eBPF program and map types this kernel loads and attaches: BTF, tracefs, tracepoints,
//! raw and BTF-typed tracepoints, `bpf_send_signal`, BPF LSM and the map types mcp-guard uses.

use std::{
    io::Write as _,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use super::{Builder, CapabilityId, Errno, Status, bpf, errno_name, host, io_errno};

/// Parsed kernel BTF with the type ids the BTF-typed probes attach to.
pub(super) struct KernelBtf {
    sys_enter: Option<u32>,
    lsm_file_open: Option<u32>,
}

pub(super) fn probe_btf(b: &mut Builder) -> Option<KernelBtf> {
    use aya_obj::btf::{Btf, BtfKind};
    let path = Path::new("/sys/kernel/btf/vmlinux");
    let size = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) => {
            b.put(
                CapabilityId::Btf,
                Status::Unavailable,
                format!("{}: {}", path.display(), io_errno(&e)),
                "tp_btf programs cannot load: no file-access kills; needs CONFIG_DEBUG_INFO_BTF",
            );
            return None;
        }
    };
    match Btf::from_sys_fs() {
        Ok(btf) => {
            let sys_enter = btf
                .id_by_type_name_kind("btf_trace_sys_enter", BtfKind::Typedef)
                .ok();
            let lsm_file_open = btf
                .id_by_type_name_kind("bpf_lsm_file_open", BtfKind::Func)
                .ok();
            b.put(
                CapabilityId::Btf,
                Status::Available,
                format!(
                    "{} parsed ({} KiB); btf_trace_sys_enter {}",
                    path.display(),
                    size / 1024,
                    sys_enter.map_or("not found".to_string(), |id| format!("id {id}"))
                ),
                "tp_btf programs can read typed tracepoint arguments",
            );
            Some(KernelBtf {
                sys_enter,
                lsm_file_open,
            })
        }
        Err(e) => {
            b.put(
                CapabilityId::Btf,
                Status::Unavailable,
                format!("{} present but does not parse: {e}", path.display()),
                "tp_btf programs cannot load: no file-access kills",
            );
            None
        }
    }
}

/// Finds tracefs, mounting it at /sys/kernel/tracing when it is not mounted anywhere.
pub(super) fn probe_tracefs(
    b: &mut Builder,
    mounts: &[mcp_guard_launch::mounts::Mount],
) -> Option<PathBuf> {
    const CONSEQUENCE: &str = "syscall tracepoints can be attached by name";
    if let Some(m) = mounts.iter().find(|m| m.fstype == "tracefs") {
        b.put(
            CapabilityId::Tracefs,
            Status::Available,
            format!("mounted at {}", m.mount_point.display()),
            CONSEQUENCE,
        );
        return Some(m.mount_point.clone());
    }
    let target = Path::new("/sys/kernel/tracing");
    let mounted = nix::mount::mount(
        Some("tracefs"),
        target,
        Some("tracefs"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    );
    match mounted {
        Ok(()) => {
            b.put(
                CapabilityId::Tracefs,
                Status::Available,
                format!("was not mounted; doctor mounted it at {}", target.display()),
                CONSEQUENCE,
            );
            Some(target.to_path_buf())
        }
        Err(e) => {
            b.put(
                CapabilityId::Tracefs,
                Status::Unavailable,
                format!(
                    "not mounted; mounting at {} failed: {}",
                    target.display(),
                    errno_name(e as i32)
                ),
                "tracepoint programs cannot be attached; mount tracefs (needs CAP_SYS_ADMIN)",
            );
            None
        }
    }
}

pub(super) fn probe_tracepoint(b: &mut Builder, tracefs: Option<&Path>) {
    const CONSEQUENCE_OK: &str =
        "syscall tracepoints feed exec/open/connect events to the ring buffer";
    const CONSEQUENCE_NO: &str =
        "no tracepoint-fed kernel events; exec refuses policies that need them (77)";
    let Some(tracefs) = tracefs else {
        b.put(
            CapabilityId::Tracepoint,
            Status::Unavailable,
            "not probed: tracefs is unavailable".to_string(),
            CONSEQUENCE_NO,
        );
        return;
    };
    let candidates = ["syscalls/sys_enter_openat", "sched/sched_process_exec"];
    let mut errors = Vec::new();
    let found = candidates.iter().find_map(|ev| {
        let path = tracefs.join("events").join(ev).join("id");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                if let Ok(id) = text.trim().parse::<u64>() {
                    Some((*ev, id))
                } else {
                    errors.push(format!("{}: not a number", path.display()));
                    None
                }
            }
            Err(e) => {
                errors.push(format!("{}: {}", path.display(), io_errno(&e)));
                None
            }
        }
    });
    let Some((event, id)) = found else {
        b.put(
            CapabilityId::Tracepoint,
            Status::Unavailable,
            format!("no tracepoint id readable: {}", errors.join("; ")),
            CONSEQUENCE_NO,
        );
        return;
    };
    let result = bpf::load("doctor_tp", bpf::PROG_TRACEPOINT, 0, 0, &bpf::TRIVIAL)
        .map_err(|e| format!("load refused: {e}"))
        .and_then(|prog| {
            bpf::attach_tracepoint(&prog, id).map_err(|e| format!("attach to {event} refused: {e}"))
        });
    match result {
        Ok(_attached) => b.put(
            CapabilityId::Tracepoint,
            Status::Available,
            format!("loaded and attached to {event} (id {id}), then detached"),
            CONSEQUENCE_OK,
        ),
        Err(e) => b.put(
            CapabilityId::Tracepoint,
            Status::Unavailable,
            e,
            CONSEQUENCE_NO,
        ),
    }
}

pub(super) fn probe_raw_tracepoint(b: &mut Builder) {
    let result = bpf::load(
        "doctor_rawtp",
        bpf::PROG_RAW_TRACEPOINT,
        0,
        0,
        &bpf::TRIVIAL,
    )
    .map_err(|e| format!("load refused: {e}"))
    .and_then(|prog| {
        bpf::raw_tracepoint_open(Some(c"sys_enter"), &prog)
            .map_err(|e| format!("attach to sys_enter refused: {e}"))
    });
    match result {
        Ok(_link) => b.put(
            CapabilityId::RawTracepoint,
            Status::Available,
            "loaded and attached to sys_enter, then detached".to_string(),
            "raw syscall hooks are available",
        ),
        Err(e) => b.put(
            CapabilityId::RawTracepoint,
            Status::Unavailable,
            e,
            "no raw syscall hooks; exec refuses policies that need them (77)",
        ),
    }
}

pub(super) fn probe_tp_btf(b: &mut Builder, btf: Option<&KernelBtf>) {
    const CONSEQUENCE_NO: &str = "no sys_enter hook with readable arguments: mcp-guard's event and kill programs cannot attach; exec refuses to launch (77) unless --observe or [enforcement] allow_degraded";
    let Some(id) = btf.and_then(|k| k.sys_enter) else {
        b.put(
            CapabilityId::TpBtf,
            Status::Unavailable,
            "not probed: no BTF type btf_trace_sys_enter".to_string(),
            CONSEQUENCE_NO,
        );
        return;
    };
    let result = bpf::load(
        "doctor_tpbtf",
        bpf::PROG_TRACING,
        bpf::ATTACH_TRACE_RAW_TP,
        id,
        &bpf::TRIVIAL,
    )
    .map_err(|e| format!("load refused: {e}"))
    .and_then(|prog| {
        bpf::raw_tracepoint_open(None, &prog).map_err(|e| format!("attach refused: {e}"))
    });
    match result {
        Ok(_link) => b.put(
            CapabilityId::TpBtf,
            Status::Available,
            "tp_btf/sys_enter loaded and attached, then detached".to_string(),
            "file opens are seen at sys_enter with their path, and can be killed there",
        ),
        Err(e) => b.put(CapabilityId::TpBtf, Status::Unavailable, e, CONSEQUENCE_NO),
    }
}

/// Attaches a `tp_btf/sys_enter` program that sends SIGUSR2 to one forked child only, lets the
/// child make a syscall, and checks that the signal killed it.
pub(super) fn probe_send_signal(b: &mut Builder, btf: Option<&KernelBtf>) {
    const CONSEQUENCE_NO: &str = "no in-kernel kill: mcp-guard's sys_enter program calls bpf_send_signal; exec refuses to launch (77) unless --observe or [enforcement] allow_degraded";
    let Some(id) = btf.and_then(|k| k.sys_enter) else {
        b.put(
            CapabilityId::SendSignal,
            Status::Unavailable,
            "not probed: no BTF type btf_trace_sys_enter".to_string(),
            CONSEQUENCE_NO,
        );
        return;
    };
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        b.put(
            CapabilityId::SendSignal,
            Status::Unavailable,
            format!("not probed: pipe2 failed: {}", Errno::last()),
            CONSEQUENCE_NO,
        );
        return;
    }
    // SAFETY: pipe2 succeeded, so both are new fds owned by nobody else; owning them closes them
    // on every path.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let (rfd, wfd) = (read_end.as_raw_fd(), write_end.as_raw_fd());
    let mut write_end = Some(write_end);
    let mut attach: Option<Result<(), String>> = None;
    let mut links = Vec::new();
    let end = host::in_child(
        || {
            let mut byte = 0u8;
            // SAFETY: read/getppid are async-signal-safe; the byte buffer is live.
            unsafe {
                libc::close(wfd);
                libc::read(rfd, std::ptr::from_mut(&mut byte).cast(), 1);
                // The first syscall after the go-ahead: the program must kill us on entry.
                libc::getppid();
            }
            0
        },
        |pid| {
            let r = bpf::load(
                "doctor_signal",
                bpf::PROG_TRACING,
                bpf::ATTACH_TRACE_RAW_TP,
                id,
                &bpf::send_signal_to(pid.cast_unsigned(), libc::SIGUSR2),
            )
            .map_err(|e| format!("load refused: {e}"))
            .and_then(|prog| {
                bpf::raw_tracepoint_open(None, &prog).map_err(|e| format!("attach refused: {e}"))
            })
            .map(|link| links.push(link));
            attach = Some(r);
            // The go-ahead: the child's read returns (on the byte, or on EOF if the write failed).
            if let Some(w) = write_end.take() {
                let _ = std::fs::File::from(w).write_all(b"x");
            }
        },
    );
    drop(links);
    drop(read_end);
    let attach = attach.unwrap_or_else(|| Err("fork failed".to_string()));
    match (attach, end) {
        (Ok(()), Ok(host::ChildEnd::Signaled(sig))) if sig == libc::SIGUSR2 => b.put(
            CapabilityId::SendSignal,
            Status::Available,
            "a tp_btf/sys_enter program's bpf_send_signal killed a probe child with SIGUSR2 at its next syscall"
                .to_string(),
            "sensitive-file access is killed in the kernel before the syscall runs",
        ),
        (Ok(()), end) => b.put(
            CapabilityId::SendSignal,
            Status::Unavailable,
            format!("program attached but the probe child was not killed by it: {end:?}"),
            CONSEQUENCE_NO,
        ),
        (Err(e), _) => b.put(CapabilityId::SendSignal, Status::Unavailable, e, CONSEQUENCE_NO),
    }
}

pub(super) fn probe_lsm(b: &mut Builder, btf: Option<&KernelBtf>) {
    const FALLBACK: &str =
        "file-access kills use tp_btf sys_enter + bpf_send_signal instead; landlock still denies";
    let active = active_lsms();
    let active = active.as_str();
    let Some(id) = btf.and_then(|k| k.lsm_file_open) else {
        b.put(
            CapabilityId::Lsm,
            Status::Unavailable,
            format!("no BTF function bpf_lsm_file_open (active LSMs: {active:?})"),
            &format!("LSM BPF unavailable: {FALLBACK}"),
        );
        return;
    };
    let loaded = bpf::load(
        "doctor_lsm",
        bpf::PROG_LSM,
        bpf::ATTACH_LSM_MAC,
        id,
        &bpf::TRIVIAL,
    );
    match loaded {
        Err(e) => b.put(
            CapabilityId::Lsm,
            Status::Unavailable,
            format!("lsm/file_open load refused: {e} (active LSMs: {active})"),
            &format!("LSM BPF refused ({}): {FALLBACK}", errno_name(e.errno)),
        ),
        // `r0 = 0` allows every open, so the moment it is attached changes nothing.
        Ok(prog) => match bpf::raw_tracepoint_open(None, &prog) {
            Ok(_link) => b.put(
                CapabilityId::Lsm,
                Status::Available,
                format!("lsm/file_open loaded and attached, then detached (active LSMs: {active})"),
                "LSM hooks could deny file access in the kernel; enforcement does not depend on them",
            ),
            Err(e) => b.put(
                CapabilityId::Lsm,
                Status::Unavailable,
                format!("lsm/file_open loaded but attach refused: {e} (active LSMs: {active})"),
                &format!("LSM BPF refused ({}): {FALLBACK}", errno_name(e.errno)),
            ),
        },
    }
}

/// The active LSMs from securityfs, or why they are unknown.
pub(super) fn active_lsms() -> String {
    match std::fs::read_to_string("/sys/kernel/security/lsm") {
        Ok(list) => list.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "unknown, securityfs is not mounted".to_string()
        }
        Err(e) => format!("unknown, /sys/kernel/security/lsm: {}", io_errno(&e)),
    }
}

pub(super) fn probe_maps(b: &mut Builder) {
    use aya::maps::MapType;
    let maps = [
        (
            CapabilityId::Ringbuf,
            MapType::RingBuf,
            "kernel events reach userspace through a ring buffer",
            "no event stream: exec refuses to launch (77) unless --observe or [enforcement] allow_degraded",
        ),
        (
            CapabilityId::LpmTrie,
            MapType::LpmTrie,
            "egress allowlists match networks by prefix",
            "no egress allowlists: exec refuses to launch (77) unless --observe or [enforcement] allow_degraded",
        ),
        (
            CapabilityId::HashMap,
            MapType::Hash,
            "per-server state (guarded cgroups, sensitive paths) is kept in the kernel",
            "no per-server kernel state: exec refuses to launch (77) unless --observe or [enforcement] allow_degraded",
        ),
    ];
    for (id, map_type, ok, no) in maps {
        match aya::sys::is_map_supported(map_type) {
            Ok(true) => b.put(
                id,
                Status::Available,
                format!("created and freed a {map_type:?} map"),
                ok,
            ),
            Ok(false) => b.put(
                id,
                Status::Unavailable,
                format!("the kernel does not know {map_type:?} maps (EINVAL)"),
                no,
            ),
            Err(e) => b.put(
                id,
                Status::Unavailable,
                format!(
                    "creating a {map_type:?} map refused: {}",
                    io_errno(&e.io_error)
                ),
                no,
            ),
        }
    }
}
