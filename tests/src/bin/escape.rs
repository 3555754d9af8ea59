//! Fixture "server" for the jail tests: tries one escape named on its command line and prints
//! `ACTION ok [detail]` or `ACTION errno N [detail]` on stdout (exit 0 either way), so a test can
//! assert exactly which errno the kernel returned.
//!
//! Actions: `read PATH`, `write PATH`, `exec SRC DST` (copy SRC to DST, make it executable and
//! execve it in a child), `ptrace`, `mount DIR`, `unshare-user`, `clone-newuser`, `bpf`,
//! `io-uring`, `raw-socket`, `connect PORT` (127.0.0.1), `bind PORT` (a TCP listener on
//! 127.0.0.1), `mptcp-bind PORT` (the same with an MPTCP socket), `kill PID [SIGNAL]` (default SIGTERM),
//! `fork N`, `alloc MIB`.
//!
//! Who it is and what it holds: `whoami` (`uid= euid= gid= groups= capeff= sid= pid= tty=`, from
//! /proc/self), `fds` (the descriptors above stderr: `N=TARGET ...`), `read-fd N` (what fd N
//! reads). `tiocsti TEXT` types TEXT into a terminal the way a hostile server would: one line
//! `tiocsti TARGET ok|errno N` for each of fd 0, 1, 2 and /dev/tty (`tty` ... `open-errno N` when
//! it cannot be opened), with the request as the plain TIOCSTI and again (`tiocsti-high`) with
//! bits set above the 32 the kernel reads.
#![expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "socket address families and sizes, pids and byte counts, in the widths the syscall ABI gives them"
)]

use std::{
    ffi::CString,
    io::{Read, Write},
    os::unix::fs::PermissionsExt,
};

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

fn report(action: &str, result: Result<String, i32>) {
    let line = match result {
        Ok(detail) => format!("{action} ok {detail}"),
        Err(e) => format!("{action} errno {e}"),
    };
    println!("{}", line.trim_end());
    let _ = std::io::stdout().flush();
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "`.map_err(io_err)` hands the error over by value"
)]
fn io_err(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("arguments have no NUL")
}

/// Runs `f` in a forked child and returns its exit status (the child reports an errno as status).
fn in_child(f: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the fixture is single-threaded, the child runs ordinary code and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = f();
        // SAFETY: ends the child without running the parent's exit hooks.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: status is a valid out pointer.
    unsafe { libc::waitpid(pid, &raw mut status, 0) };
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    }
}

/// A field of /proc/self/status, e.g. `CapEff`.
fn status_field(name: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

/// Binds an MPTCP stream socket to 127.0.0.1:`port`: a TCP listener by another protocol number,
/// which a rule that looks only at `IPPROTO_TCP` sockets would miss.
fn mptcp_bind(port: u16) -> Result<String, i32> {
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_MPTCP) };
    if fd < 0 {
        return Err(errno());
    }
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `addr` is a valid sockaddr_in of the size given; `fd` is ours.
    let r = unsafe {
        libc::bind(
            fd,
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    let result = if r == 0 {
        Ok(String::new())
    } else {
        Err(errno())
    };
    // SAFETY: closes the descriptor opened above.
    unsafe { libc::close(fd) };
    result
}

fn whoami() -> String {
    // SAFETY: the get*id calls have no preconditions.
    let (uid, euid, gid, sid) = unsafe {
        (
            libc::getuid(),
            libc::geteuid(),
            libc::getgid(),
            libc::getsid(0),
        )
    };
    // tty_nr is the 7th field of /proc/self/stat, after the parenthesised command name.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let tty = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(4))
        .unwrap_or("?")
        .to_string();
    format!(
        "uid={uid} euid={euid} gid={gid} groups={} capeff={} sid={sid} pid={} tty={tty}",
        status_field("Groups").replace(' ', ","),
        status_field("CapEff"),
        std::process::id()
    )
}

/// TIOCSTI of each byte of `text` on `fd`, `request` as the whole 64-bit register.
fn tiocsti(fd: i32, request: u64, text: &str) -> Result<String, i32> {
    for b in text.bytes() {
        // SAFETY: a raw ioctl with a pointer to a live byte.
        let r = unsafe { libc::syscall(libc::SYS_ioctl, fd, request, &raw const b) };
        if r != 0 {
            return Err(errno());
        }
    }
    Ok(String::new())
}

fn tiocsti_all(text: &str) {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty");
    // TIOCSTI (asm-generic/ioctls.h).
    let sti: u64 = 0x5412;
    for (name, request) in [("tiocsti", sti), ("tiocsti-high", sti | 0x1_0000_0000)] {
        for fd in 0..3 {
            report(&format!("{name} fd{fd}"), tiocsti(fd, request, text));
        }
        match &tty {
            Ok(f) => {
                use std::os::fd::AsRawFd;
                report(
                    &format!("{name} tty"),
                    tiocsti(f.as_raw_fd(), request, text),
                );
            }
            Err(e) => println!("{name} tty open-errno {}", e.raw_os_error().unwrap_or(-1)),
        }
    }
}

/// The descriptors above stderr, each with what it points at.
fn fds() -> String {
    let names: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    names
        .into_iter()
        .filter(|&fd| fd > 2)
        .filter_map(|fd| {
            // The listing's own descriptor is closed by now.
            let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
            Some(format!("{fd}={}", target.display()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> &str { args.get(i).map_or("", String::as_str) };
    let action = arg(0);
    let result: Result<String, i32> = match action {
        "read" => std::fs::File::open(arg(1))
            .and_then(|mut f| {
                let mut s = String::new();
                f.read_to_string(&mut s).map(|_| s.len().to_string())
            })
            .map_err(io_err),
        "write" => std::fs::write(arg(1), b"escaped\n")
            .map(|()| String::new())
            .map_err(io_err),
        // truncate(2): landlock checks it from ABI 3 on; before, the jail's seccomp rule.
        "truncate" => {
            let path = cstr(arg(1));
            // SAFETY: a NUL-terminated path that lives across the call.
            if unsafe { libc::truncate(path.as_ptr(), 0) } == 0 {
                Ok(String::new())
            } else {
                Err(io_err(std::io::Error::last_os_error()))
            }
        }
        "exec" => std::fs::copy(arg(1), arg(2))
            .and_then(|_| std::fs::set_permissions(arg(2), std::fs::Permissions::from_mode(0o755)))
            .map_err(|e| -1000 - io_err(e))
            .and_then(|()| {
                let path = cstr(arg(2));
                let status = in_child(|| {
                    let argv = [path.as_ptr(), std::ptr::null()];
                    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
                    // SAFETY: argv and envp are null-terminated arrays of valid C strings.
                    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
                    errno()
                });
                if status == 0 {
                    Ok(String::new())
                } else {
                    Err(status)
                }
            }),
        "ptrace" => {
            // SAFETY: the child only pauses until it is killed.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                loop {
                    // SAFETY: pause has no preconditions.
                    unsafe { libc::pause() };
                }
            }
            // SAFETY: PTRACE_ATTACH takes a pid; no memory is passed.
            let r = unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) };
            let e = errno();
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            if r == 0 { Ok(String::new()) } else { Err(e) }
        }
        "mount" => {
            let dir = cstr(arg(1));
            let _ = std::fs::create_dir_all(arg(1));
            let tmpfs = cstr("tmpfs");
            // SAFETY: all pointers are valid C strings; data is null.
            let r = unsafe {
                libc::mount(
                    tmpfs.as_ptr(),
                    dir.as_ptr(),
                    tmpfs.as_ptr(),
                    0,
                    std::ptr::null(),
                )
            };
            let e = errno();
            if r == 0 {
                // SAFETY: unmounting what we just mounted.
                unsafe { libc::umount2(dir.as_ptr(), libc::MNT_DETACH) };
                Ok(String::new())
            } else {
                Err(e)
            }
        }
        "unshare-user" => {
            let status = in_child(|| {
                // SAFETY: unshare takes flags only.
                if unsafe { libc::unshare(libc::CLONE_NEWUSER) } == 0 {
                    0
                } else {
                    errno()
                }
            });
            if status == 0 {
                Ok(String::new())
            } else {
                Err(status)
            }
        }
        "clone-newuser" => {
            // SAFETY: a fork-like raw clone (no stack argument); the child exits at once.
            let pid = unsafe {
                libc::syscall(
                    libc::SYS_clone,
                    (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong,
                    0usize,
                    0usize,
                    0usize,
                    0usize,
                )
            };
            if pid == 0 {
                // SAFETY: ends the clone child.
                unsafe { libc::_exit(0) };
            }
            let e = errno();
            if pid > 0 {
                // SAFETY: reaping our own child.
                unsafe { libc::waitpid(pid as i32, std::ptr::null_mut(), 0) };
                Ok(String::new())
            } else {
                Err(e)
            }
        }
        "bpf" => {
            // union bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size, max_entries.
            let mut attr = [0u32; 32];
            attr[0] = 2; // BPF_MAP_TYPE_ARRAY
            attr[1] = 4;
            attr[2] = 4;
            attr[3] = 1;
            // SAFETY: attr is a zeroed bpf_attr-sized buffer valid for the call.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    0, // BPF_MAP_CREATE
                    attr.as_mut_ptr(),
                    std::mem::size_of_val(&attr),
                )
            };
            if fd >= 0 {
                Ok(String::new())
            } else {
                Err(errno())
            }
        }
        "io-uring" => {
            let mut params = [0u8; 120]; // struct io_uring_params
            // SAFETY: params is a zeroed io_uring_params-sized buffer valid for the call.
            let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
            if fd >= 0 {
                Ok(String::new())
            } else {
                Err(errno())
            }
        }
        "raw-socket" => {
            // SAFETY: socket takes integers only.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
            if fd >= 0 {
                Ok(String::new())
            } else {
                Err(errno())
            }
        }
        "connect" => std::net::TcpStream::connect(("127.0.0.1", arg(1).parse().unwrap_or(1)))
            .map(|_| String::new())
            .map_err(io_err),
        "bind" => std::net::TcpListener::bind(("127.0.0.1", arg(1).parse().unwrap_or(1)))
            .map(|_| String::new())
            .map_err(io_err),
        "mptcp-bind" => mptcp_bind(arg(1).parse().unwrap_or(1)),
        "kill" => {
            let pid: i32 = arg(1).parse().unwrap_or(0);
            let sig: i32 = arg(2).parse().unwrap_or(libc::SIGTERM);
            // SAFETY: kill takes integers only.
            if unsafe { libc::kill(pid, sig) } == 0 {
                Ok(String::new())
            } else {
                Err(errno())
            }
        }
        "fork" => {
            let n: usize = arg(1).parse().unwrap_or(1);
            let mut children = Vec::new();
            let mut failed = None;
            for _ in 0..n {
                // SAFETY: the child only pauses until killed.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    loop {
                        // SAFETY: pause has no preconditions.
                        unsafe { libc::pause() };
                    }
                }
                if pid < 0 {
                    failed = Some(errno());
                    break;
                }
                children.push(pid);
            }
            for &pid in &children {
                // SAFETY: killing and reaping our own children.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
            }
            match failed {
                None => Ok(children.len().to_string()),
                Some(e) => {
                    println!("fork forked {}", children.len());
                    Err(e)
                }
            }
        }
        "alloc" => {
            let mib: usize = arg(1).parse().unwrap_or(1);
            let mut blocks: Vec<Vec<u8>> = Vec::new();
            for _ in 0..mib {
                // Touch every page so it is really charged.
                blocks.push(vec![1u8; 1 << 20]);
            }
            Ok(blocks
                .iter()
                .map(std::vec::Vec::len)
                .sum::<usize>()
                .to_string())
        }
        "whoami" => Ok(whoami()),
        "fds" => Ok(fds()),
        "read-fd" => {
            let fd: i32 = arg(1).parse().unwrap_or(-1);
            let mut buf = [0u8; 256];
            // SAFETY: a read into a live buffer of its length; fd is only read.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                Err(errno())
            } else {
                Ok(String::from_utf8_lossy(&buf[..n as usize])
                    .trim()
                    .to_string())
            }
        }
        "tiocsti" => {
            tiocsti_all(arg(1));
            Ok(String::new())
        }
        other => {
            eprintln!("escape: unknown action {other:?}");
            std::process::exit(2);
        }
    };
    report(action, result);
}
