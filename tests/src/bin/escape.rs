//! Fixture "server" for the jail tests: tries one escape named on its command line and prints
//! `ACTION ok [detail]` or `ACTION errno N [detail]` on stdout (exit 0 either way), so a test can
//! assert exactly which errno the kernel returned.
//!
//! Actions: `read PATH`, `write PATH`, `exec SRC DST` (copy SRC to DST, make it executable and
//! execve it in a child), `ptrace`, `mount DIR`, `unshare-user`, `clone-newuser`, `bpf`,
//! `io-uring`, `raw-socket`, `connect PORT` (127.0.0.1), `kill PID [SIGNAL]` (default SIGTERM), `fork N`, `alloc MIB`.

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
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> &str { args.get(i).map(String::as_str).unwrap_or("") };
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
            Ok(blocks.iter().map(|b| b.len()).sum::<usize>().to_string())
        }
        other => {
            eprintln!("escape: unknown action {other:?}");
            std::process::exit(2);
        }
    };
    report(action, result);
}
