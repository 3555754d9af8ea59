//! One boot: virtiofsd exports this machine's root read-only, QEMU boots the kernel under
//! software emulation with the serial console in a log file, and the host watches the log
//! until the guest powers off or the time limit passes.
//!
//! The export is a non-recursive bind mount of `/`, remounted read-only, in a private mount
//! namespace of virtiofsd's own: the guest (root, running tests) cannot write to the host
//! whatever it mounts, and sees none of the host's proc, sys, dev or other mounts.

use std::{
    fs::{self, File},
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use super::initramfs::ROOT_TAG;
use crate::Result;

pub(super) const QEMU: &str = "qemu-system-x86_64";
/// QEMU 7.2's virtiofsd, as Debian bookworm ships it in qemu-system-common.
pub(super) const VIRTIOFSD: &str = "/usr/lib/qemu/virtiofsd";

/// The emulated machine, for the report.
pub(super) const MACHINE: &str = "2 vCPUs, 4 GiB";

/// Guest memory (MiB): the tests start several node and Python servers at once.
const MEMORY_MIB: u32 = 4096;

/// What to boot and where to keep its files.
pub(super) struct Boot<'a> {
    pub vmlinuz: &'a Path,
    pub initramfs: &'a Path,
    /// The guest's run script (on this machine's root, which the guest sees at the same path).
    pub run_script: &'a Path,
    /// The virtiofsd socket, its mount point and its log go here.
    pub workdir: &'a Path,
    pub serial_log: &'a Path,
    pub timeout: Duration,
    /// One emulator thread for both vCPUs (`tcg,thread=single`): slower, but the vCPUs never
    /// run at once, so a static branch patched on one is never seen half-done by the other.
    pub single_thread: bool,
}

pub(super) struct Outcome {
    pub elapsed: Duration,
    pub timed_out: bool,
}

/// Kills and reaps a child of ours when dropped (also on early returns).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Starts virtiofsd on `socket`, exporting a read-only bind of `/` mounted at `mountpoint`.
fn virtiofsd(workdir: &Path) -> Result<(Reaped, PathBuf)> {
    let socket = workdir.join("virtiofsd.sock");
    let mountpoint = workdir.join("hostroot");
    let log = workdir.join("virtiofsd.log");
    let _ = fs::remove_file(&socket);
    fs::create_dir_all(&mountpoint).map_err(|e| format!("{}: {e}", mountpoint.display()))?;
    let log_file = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let log_err = log_file
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    // unshare execs sh, which execs virtiofsd: the child we hold is virtiofsd itself.
    let script = r#"mount --bind / "$1" && mount -o remount,bind,ro "$1" && exec "$3" --socket-path="$2" -o source="$1" -o cache=always"#;
    let child = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .args([path_str(&mountpoint), path_str(&socket), VIRTIOFSD.into()])
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .spawn()
        .map_err(|e| format!("cannot start virtiofsd through unshare: {e}"))?;
    let mut child = Reaped(child);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !socket.exists() {
        if let Ok(Some(status)) = child.0.try_wait() {
            return Err(format!(
                "virtiofsd exited ({status}) before opening its socket:\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "virtiofsd did not open {} within 15 s (log: {})",
                socket.display(),
                log.display()
            ));
        }
        sleep(Duration::from_millis(50));
    }
    Ok((child, socket))
}

/// Boots, calls `on_line` with each complete serial line as it arrives, and returns when QEMU
/// exits (the guest powered off or panicked: `-no-reboot`), the time limit passes, or `on_line`
/// returns true (stop now).
pub(super) fn boot(b: &Boot<'_>, on_line: &mut dyn FnMut(&str) -> bool) -> Result<Outcome> {
    let (mut fsd, socket) = virtiofsd(b.workdir)?;
    let mem = format!("{MEMORY_MIB}M");
    let append = format!(
        "console=ttyS0 panic=-1 loglevel=4 mcpg.run={}",
        b.run_script.display()
    );
    let _ = fs::remove_file(b.serial_log);
    let qemu_log = b.workdir.join("qemu.log");
    let qemu_out = File::create(&qemu_log).map_err(|e| format!("{}: {e}", qemu_log.display()))?;
    let qemu_err = qemu_out
        .try_clone()
        .map_err(|e| format!("{}: {e}", qemu_log.display()))?;
    let started = Instant::now();
    let child = Command::new(QEMU)
        .args([
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-no-reboot",
            "-accel",
            if b.single_thread {
                "tcg,thread=single"
            } else {
                "tcg,thread=multi"
            },
            "-cpu",
            "max",
            "-smp",
            "2",
            "-m",
            &mem,
            "-object",
            &format!("memory-backend-memfd,id=mem,size={mem},share=on"),
            "-numa",
            "node,memdev=mem",
            "-chardev",
            &format!("socket,id=vfs,path={}", socket.display()),
            "-device",
            &format!("vhost-user-fs-pci,chardev=vfs,tag={ROOT_TAG}"),
            "-kernel",
            &path_str(b.vmlinuz),
            "-initrd",
            &path_str(b.initramfs),
            "-append",
            &append,
            "-serial",
            &format!("file:{}", b.serial_log.display()),
            "-monitor",
            "none",
        ])
        .stdin(Stdio::null())
        .stdout(qemu_out)
        .stderr(qemu_err)
        .spawn()
        .map_err(|e| format!("cannot start {QEMU}: {e} (cargo xtask setup installs it)"))?;
    let mut qemu = Reaped(child);

    let mut pos = 0u64;
    let mut partial = Vec::new();
    let (mut timed_out, mut stopped) = (false, false);
    loop {
        let exited = qemu
            .0
            .try_wait()
            .map_err(|e| format!("waiting for {QEMU}: {e}"))?;
        pos = feed(b.serial_log, pos, &mut partial, &mut stopped, on_line);
        if stopped {
            break;
        }
        if let Some(status) = exited {
            if !status.success() {
                let log = fs::read_to_string(&qemu_log).unwrap_or_default();
                if !log.trim().is_empty() {
                    let _ = on_line(&format!("(qemu exited {status}: {})", log.trim()));
                }
            }
            break;
        }
        if started.elapsed() > b.timeout {
            timed_out = true;
            break;
        }
        sleep(Duration::from_millis(200));
    }
    drop(qemu);
    let elapsed = started.elapsed();
    feed(b.serial_log, pos, &mut partial, &mut stopped, on_line);
    if !partial.is_empty() {
        // The last words before QEMU ended; nothing is left to stop.
        let _ = on_line(&String::from_utf8_lossy(&partial));
    }
    // virtiofsd ends when QEMU disconnects; make sure of it.
    let _ = fsd.0.kill();
    let _ = fsd.0.wait();
    Ok(Outcome { elapsed, timed_out })
}

/// Reads what the serial log gained since `pos` and hands over its complete lines (all of them,
/// also after one asked to stop: they are the crash report).
fn feed(
    log: &Path,
    pos: u64,
    partial: &mut Vec<u8>,
    stop: &mut bool,
    on_line: &mut dyn FnMut(&str) -> bool,
) -> u64 {
    let Ok(mut f) = File::open(log) else {
        return pos;
    };
    if f.seek(SeekFrom::Start(pos)).is_err() {
        return pos;
    }
    let mut buf = Vec::new();
    let Ok(n) = f.read_to_end(&mut buf) else {
        return pos;
    };
    partial.extend_from_slice(&buf);
    while let Some(nl) = partial.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = partial.drain(..=nl).collect();
        let text = String::from_utf8_lossy(&line);
        *stop |= on_line(text.trim_end_matches(['\n', '\r']));
    }
    pos + n as u64
}
