//! Test fixture: opens each path given (read-only) and prints `ok` or `errno N` per path.
//!
//! `--loop N PATH` opens and closes PATH N times (for benchmarks) and prints the elapsed ns,
//! then on a second line the CPU time the loop's thread used (ns): its own cost, without the
//! time other tasks or the hypervisor took the CPU from it.
//!
//! `--unfaulted PATH...` passes each path to open(2) from a page the process has never
//! touched: the path is written to a scratch file, which is mapped and handed to the kernel
//! without being read. A tracer's fault-free read of it (`bpf_probe_read_user_str`) then fails,
//! while the kernel's own copy faults the page in and opens the file.
#![expect(
    clippy::cast_sign_loss,
    reason = "clock_gettime never returns negative fields"
)]
use std::{ffi::CString, fs::File, io::Write as _, time::Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut out = std::io::stdout().lock();
    if args.first().map(String::as_str) == Some("--loop") {
        let n: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(0);
        let path = args.get(2).cloned().unwrap_or_default();
        let (start, cpu_start) = (Instant::now(), thread_cpu_ns());
        for _ in 0..n {
            drop(File::open(&path));
        }
        let (elapsed, cpu) = (start.elapsed().as_nanos(), thread_cpu_ns() - cpu_start);
        let _ = writeln!(out, "{elapsed}\n{cpu}");
        return;
    }
    let unfaulted = args.first().map(String::as_str) == Some("--unfaulted");
    for path in args.iter().skip(usize::from(unfaulted)) {
        let result = if unfaulted {
            open_unfaulted(path)
        } else {
            File::open(path).map(drop)
        };
        let line = match result {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("errno {}", e.raw_os_error().unwrap_or(-1)),
        };
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// The calling thread's CPU time in ns (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given; this clock always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

/// open(2) of `path` with the string on a freshly mapped, never touched file page.
fn open_unfaulted(path: &str) -> std::io::Result<()> {
    let c = CString::new(path).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let scratch = std::env::temp_dir().join(format!("opener-path-{}", std::process::id()));
    std::fs::write(&scratch, c.as_bytes_with_nul())?;
    let file = File::open(&scratch)?;
    let _ = std::fs::remove_file(&scratch);
    // A read of the file just written would leave its page in the page cache, but the mapping
    // below has no page table entry until the first access.
    // SAFETY: a fresh private read-only mapping of an open file; nothing aliases it.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `map` holds the NUL-terminated path; only the kernel reads it.
    let fd = unsafe { libc::open(map.cast::<libc::c_char>(), libc::O_RDONLY | libc::O_CLOEXEC) };
    let result = if fd < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        // SAFETY: `fd` was just opened here and is closed once.
        unsafe { libc::close(fd) };
        Ok(())
    };
    // SAFETY: unmapping the mapping made above.
    unsafe { libc::munmap(map, 4096) };
    result
}
