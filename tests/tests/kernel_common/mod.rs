//! Shared by the kernel tests: throwaway cgroups and fixture processes placed in them.
#![allow(
    dead_code,
    reason = "each test binary that includes this module uses a different part of it"
)]

use std::{
    fs::File,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
};

/// The cgroup v2 mount point, from /proc/self/mountinfo.
pub(crate) fn cgroup2_root() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split_whitespace().next() == Some("cgroup2") {
            let mount = left.split_whitespace().nth(4).expect("mount point field");
            return PathBuf::from(mount);
        }
    }
    panic!("no cgroup2 mount in /proc/self/mountinfo: these tests need cgroup v2");
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A fresh cgroup, removed (after killing what is left in it) on drop.
pub(crate) struct TestCgroup {
    /// Its directory.
    pub dir: PathBuf,
    procs: File,
}

impl TestCgroup {
    /// Creates `<v2 root>/mcp-guard-test-<tag>-<pid>-<n>`.
    pub(crate) fn new(tag: &str) -> Self {
        let dir = cgroup2_root().join(format!(
            "mcp-guard-test-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let procs = File::options()
            .write(true)
            .open(dir.join("cgroup.procs"))
            .expect("open cgroup.procs");
        Self { dir, procs }
    }

    /// A command whose process moves itself into this cgroup before exec.
    pub(crate) fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        let fd = self.procs.as_raw_fd();
        // SAFETY: the hook only calls write(2) on an fd inherited from the parent: async-signal
        // safe, no allocation.
        unsafe {
            cmd.pre_exec(move || {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs `program args` inside the cgroup and returns its output.
    pub(crate) fn run(&self, program: &Path, args: &[String]) -> Output {
        self.command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", program.display()))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Ok(pids) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in pids.lines().filter_map(|p| p.parse::<i32>().ok()) {
                // SAFETY: kill(2) with a pid read from our own test cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Runs `program args` outside any test cgroup.
pub(crate) fn run_outside(program: &Path, args: &[String]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()))
}

/// The result lines a fixture printed.
pub(crate) fn lines(output: &Output) -> Vec<String> {
    assert!(
        output.status.success(),
        "fixture failed: {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// A fixture binary of this package.
pub(crate) fn fixture_bin(name: &str) -> PathBuf {
    mcp_guard_tests::workspace_bin(name)
}

/// A listener on `addr` (port 0 for any) accepting in the background; returns its port.
pub(crate) fn listen(addr: &str) -> u16 {
    let listener = std::net::TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let port = listener.local_addr().expect("local addr").port();
    // A deep accept queue: benchmark connect bursts must not overflow it (an overflow drops the
    // SYN and the client retries a second later, which would swamp the measurement).
    // SAFETY: listen(2) again on our own listening socket only changes its backlog.
    unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&listener), 4096) };
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    port
}

/// A port with nothing listening on it (bound then released).
pub(crate) fn free_port() -> u16 {
    mcp_guard_tests::prom::free_port()
}

/// The network probe fixture (`tests/src/bin/netprobe.rs`).
pub(crate) fn netprobe() -> PathBuf {
    env!("CARGO_BIN_EXE_netprobe").into()
}

/// A single-threaded runtime for the async parts of a kernel test (event streams, resolvers).
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// How netprobe reports a refusal with EPERM.
pub(crate) const EPERM: &str = "errno 1";

/// A temporary directory removed on drop (also when a test panics).
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates a fresh `/tmp/mcp-guard-<tag>-<pid>-<n>`.
    pub(crate) fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "mcp-guard-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
