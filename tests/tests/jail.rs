//! `mcp-guard exec` against the real kernel: every escape the `escape` fixture tries is blocked
//! with the errno the enforcing layer returns, and the same action succeeds under `--observe`
//! (so each assertion can fail); a real npm MCP server answers the MCP Python SDK client through
//! the jail; exit status, stdio and cleanup behave. Needs root.
//!
//! The benchmark (`bench_exec_true`, ignored) compares `mcp-guard exec -- /bin/true` with plain
//! `/bin/true`: `cargo test -p mcp-guard-tests --test jail -- --ignored --nocapture bench`.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    os::unix::{fs::PermissionsExt as _, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use mcp_guard_tests::{bench::record, median};
use mcp_guard_tests::{
    describe, fixture, give_to_server_user, mcp_guard, npm_server, python, require_root,
    server_user, workspace_bin,
};

const EACCES: i32 = libc::EACCES;
const EPERM: i32 = libc::EPERM;

/// Where these tests' sessions and kernel events are recorded (not the host's /var/lib/mcp-guard).
fn jail_state_dir() -> PathBuf {
    mcp_guard_tests::scratch_root().join("jail-tests/state")
}

/// `mcp-guard` recording in [`jail_state_dir`].
fn guard_cmd() -> Command {
    let mut cmd = Command::new(mcp_guard());
    cmd.env("MCP_GUARD_STATE_DIR", jail_state_dir());
    cmd
}

/// A scratch tree for one test, outside /tmp (the jail mounts a private /tmp): a HOME with a
/// planted SSH key, a write dir, and a policy file.
struct Sandbox {
    root: PathBuf,
    home: PathBuf,
    work: PathBuf,
    policy: PathBuf,
}

impl Sandbox {
    /// `extra` is appended to the policy (e.g. a [network] section). The server runs as the
    /// unprivileged server user, whose home and work dir these are.
    fn new(name: &str, extra: &str) -> Self {
        Self::build(name, "", extra)
    }

    /// A sandbox whose policy runs the server as root (`user = "root"`): what the jail takes
    /// away even from root.
    fn as_root(name: &str) -> Self {
        Self::build(name, "user = \"root\"\n", "")
    }

    /// `top` goes above the policy's tables, `extra` below them.
    fn build(name: &str, top: &str, extra: &str) -> Self {
        let root = mcp_guard_tests::scratch_root()
            .join("jail-tests")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let home = root.join("home");
        let work = root.join("work");
        std::fs::create_dir_all(home.join(".ssh")).expect("create home");
        std::fs::create_dir_all(&work).expect("create work dir");
        std::fs::write(home.join(".ssh/id_rsa"), "-----BEGIN FAKE KEY-----\n").expect("plant key");
        // What a user gives the server's user: its home and the dir the policy lets it write.
        give_to_server_user(&home);
        give_to_server_user(&work);
        let bin = workspace_bin("escape");
        let bindir = bin.parent().expect("bin dir").display().to_string();
        let policy = root.join("policy.toml");
        std::fs::write(
            &policy,
            format!(
                r#"name = "jail-test"
{top}[filesystem]
read = ["/usr", "/lib", "/lib64", "/bin", "/etc/ld.so.cache", "/proc", "{bindir}"]
write = ["{work}", "/tmp", "/dev/null"]
exec = ["/usr", "/lib", "/lib64", "/bin", "{bindir}"]
[limits]
memory = "64M"
pids = 16
cpu = 1.0
{extra}
"#,
                work = work.display()
            ),
        )
        .expect("write policy");
        Sandbox {
            root,
            home,
            work,
            policy,
        }
    }

    fn exec(&self, observe: bool, args: &[&str]) -> Command {
        let mut cmd = guard_cmd();
        // The escape fixture reports in plain text, not JSON-RPC.
        cmd.arg("exec")
            .arg("--passthrough")
            .arg("--policy")
            .arg(&self.policy);
        if observe {
            cmd.arg("--observe");
        }
        cmd.arg("--").args(args).env("HOME", &self.home);
        cmd
    }

    /// Runs the escape fixture with one action; returns its report line and exit status.
    fn escape(&self, observe: bool, action: &[&str]) -> (String, Output) {
        let bin = workspace_bin("escape");
        let mut args = vec![bin.to_str().expect("utf-8 path")];
        args.extend_from_slice(action);
        let out = self
            .exec(observe, &args)
            .stdin(Stdio::null())
            .output()
            .expect("run mcp-guard exec");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = stdout
            .lines()
            .find(|l| l.starts_with(action[0]) && !l.starts_with("fork forked"))
            .unwrap_or("")
            .to_string();
        (line, out)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Asserts the action is refused with `errno` when enforced and succeeds under --observe.
fn blocked_but_observable(sb: &Sandbox, action: &[&str], errno: i32) {
    let (line, out) = sb.escape(false, action);
    assert_eq!(
        line,
        format!("{} errno {errno}", action[0]),
        "enforced {action:?}: expected errno {errno}\n{}",
        describe(&out)
    );
    let (line, out) = sb.escape(true, action);
    assert!(
        line.starts_with(&format!("{} ok", action[0])),
        "--observe {action:?} should succeed (proves the enforced run could fail)\n{}",
        describe(&out)
    );
}

#[test]
fn filesystem_escapes_are_denied_by_landlock() {
    require_root();
    let sb = Sandbox::new("fs", "");
    let key = sb.home.join(".ssh/id_rsa");
    blocked_but_observable(&sb, &["read", key.to_str().expect("utf-8")], EACCES);
    let outside = sb.home.join("outside.txt");
    blocked_but_observable(&sb, &["write", outside.to_str().expect("utf-8")], EACCES);
    // Writing inside the write set works under enforcement.
    let inside = sb.work.join("inside.txt");
    let (line, out) = sb.escape(false, &["write", inside.to_str().expect("utf-8")]);
    assert_eq!(
        line,
        "write ok",
        "write inside the write set\n{}",
        describe(&out)
    );
    // A binary the server wrote (outside the exec set) does not run.
    let dropped = sb.work.join("dropped");
    blocked_but_observable(
        &sb,
        &["exec", "/usr/bin/true", dropped.to_str().expect("utf-8")],
        EACCES,
    );
    // A symlink planted in the write dir does not lead out of it.
    std::os::unix::fs::symlink(sb.home.join(".ssh"), sb.work.join("link")).expect("symlink");
    let through = sb.work.join("link/planted");
    blocked_but_observable(&sb, &["write", through.to_str().expect("utf-8")], EACCES);
    let through = sb.work.join("link/id_rsa");
    blocked_but_observable(&sb, &["read", through.to_str().expect("utf-8")], EACCES);
}

/// The kernel's landlock ABI (0 without landlock).
fn landlock_abi() -> i64 {
    // SAFETY: with a null attr, size 0 and the VERSION flag (1) the kernel reads no memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32,
        )
    };
    r.max(0)
}

/// A file outside every set that the server's user may write by its mode (as a file it made
/// in an earlier session would be) keeps its bytes: landlock's truncate right from ABI 3 on
/// (EACCES), the jail's seccomp rule before (EPERM). Under --observe the truncation works.
#[test]
fn truncation_outside_the_write_set_is_denied_on_every_kernel() {
    require_root();
    let sb = Sandbox::new("trunc", "");
    let victim = sb.home.join("notes.txt");
    std::fs::write(&victim, "the user's notes\n").expect("plant victim");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let errno = if landlock_abi() >= 3 { EACCES } else { EPERM };
    let (line, out) = sb.escape(false, &["truncate", victim.to_str().expect("utf-8")]);
    assert_eq!(
        line,
        format!("truncate errno {errno}"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "the user's notes\n"
    );
    let (line, out) = sb.escape(true, &["truncate", victim.to_str().expect("utf-8")]);
    assert!(line.starts_with("truncate ok"), "{}", describe(&out));
    assert_eq!(std::fs::metadata(&victim).expect("victim").len(), 0);
}

#[test]
fn dangerous_syscalls_are_denied_by_seccomp_and_caps() {
    require_root();
    // What the jail takes away even from a server its policy runs as root (under --observe
    // root keeps all of it, so each refusal is the jail's).
    let root = Sandbox::as_root("sys-root");
    let root_mnt = root.work.join("mnt");
    let sb = Sandbox::new("sys", "");
    let mnt = sb.work.join("mnt");
    for (action, in_sb) in [
        (vec!["ptrace"], vec!["ptrace"]),
        (
            vec!["mount", root_mnt.to_str().expect("utf-8")],
            vec!["mount", mnt.to_str().expect("utf-8")],
        ),
        (vec!["unshare-user"], vec!["unshare-user"]),
        (vec!["clone-newuser"], vec!["clone-newuser"]),
        (vec!["bpf"], vec!["bpf"]),
        (vec!["io-uring"], vec!["io-uring"]),
        // No CAP_NET_RAW.
        (vec!["raw-socket"], vec!["raw-socket"]),
    ] {
        blocked_but_observable(&root, &action, EPERM);
        // The unprivileged server user, as root's exec runs servers by default, is refused the
        // same.
        let (line, out) = sb.escape(false, &in_sb);
        assert_eq!(
            line,
            format!("{} errno {EPERM}", in_sb[0]),
            "{}",
            describe(&out)
        );
    }

    // The policy's own [syscalls] deny comes on top of the built-in list.
    let sb = Sandbox::new("sys-policy", "[syscalls]\ndeny = [\"uname\"]\n");
    let out = sb.exec(false, &["/bin/uname"]).output().expect("run");
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{}",
        describe(&out)
    );
    let out = sb.exec(true, &["/bin/uname"]).output().expect("run");
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn tcp_connect_only_to_allowed_ports() {
    require_root();
    let allowed = TcpListener::bind("127.0.0.1:0").expect("listen");
    let denied = TcpListener::bind("127.0.0.1:0").expect("listen");
    let allowed_port = allowed.local_addr().expect("addr").port();
    let denied_port = denied.local_addr().expect("addr").port();
    let sb = Sandbox::new(
        "net",
        &format!("[network]\nallow = [\"127.0.0.1:{allowed_port}\"]\n"),
    );
    // Landlock's TCP rule where the kernel has one (ABI 4, EACCES), else the kernel guard's
    // egress programs (EPERM).
    let errno = if mcp_guard_launch::landlock::kernel_abi() >= mcp_guard_launch::landlock::NET_ABI {
        EACCES
    } else {
        EPERM
    };
    blocked_but_observable(&sb, &["connect", &denied_port.to_string()], errno);
    let (line, out) = sb.escape(false, &["connect", &allowed_port.to_string()]);
    assert_eq!(line, "connect ok", "allowed port\n{}", describe(&out));
}

/// A server without egress binds a TCP port for whoever finds it: refused by landlock's TCP
/// rule where the kernel has one (ABI 4, EACCES), else by the kernel guard's bind programs
/// (EPERM); before those, only the jail's network namespace left such a listener unreachable.
#[test]
fn tcp_bind_outside_the_policy_is_denied_on_every_kernel() {
    require_root();
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let sb = Sandbox::new("bind", "");
    let errno = if mcp_guard_launch::landlock::kernel_abi() >= mcp_guard_launch::landlock::NET_ABI {
        EACCES
    } else {
        EPERM
    };
    blocked_but_observable(&sb, &["bind", &port.to_string()], errno);
    // The same listener over MPTCP: landlock's TCP rule judges only `IPPROTO_TCP` sockets on
    // newer kernels (6.15+), so there the bind programs deny it (they see its TCP subflow).
    let (line, out) = sb.escape(false, &["mptcp-bind", &port.to_string()]);
    assert!(
        line == format!("mptcp-bind errno {EPERM}") || line == format!("mptcp-bind errno {EACCES}"),
        "enforced MPTCP bind: expected EPERM or EACCES\n{}",
        describe(&out)
    );
    let (line, out) = sb.escape(true, &["mptcp-bind", &port.to_string()]);
    assert_eq!(
        line,
        "mptcp-bind ok",
        "--observe MPTCP bind\n{}",
        describe(&out)
    );
}

#[test]
fn signals_do_not_leave_the_jail() {
    require_root();
    let sb = Sandbox::new("sig", "");
    // A process outside the jail, of the server's own uid (as another server of root's exec
    // would be): invisible in the jail's PID namespace.
    let (uid, gid) = server_user();
    let mut victim = Command::new("sleep")
        .arg("60")
        .uid(uid)
        .gid(gid)
        .spawn()
        .expect("spawn sleep");
    let pid = victim.id().to_string();
    let (line, out) = sb.escape(false, &["kill", &pid]);
    assert_eq!(
        line,
        format!("kill errno {}", libc::ESRCH),
        "{}",
        describe(&out)
    );
    assert!(
        victim.try_wait().expect("wait").is_none(),
        "victim survived"
    );
    // The jail's own init is outside the server's landlock domain: signal scoping refuses it.
    let (line, out) = sb.escape(false, &["kill", "1", "0"]);
    assert_eq!(line, format!("kill errno {EPERM}"), "{}", describe(&out));
    // Under --observe the same kill reaches the victim.
    let (line, out) = sb.escape(true, &["kill", &pid]);
    assert_eq!(line, "kill ok", "{}", describe(&out));
    let status = victim.wait().expect("wait victim");
    assert!(
        status.code().is_none(),
        "victim was killed by the signal: {status:?}"
    );
}

#[test]
fn limits_stop_fork_bombs_and_memory_hogs() {
    require_root();
    let sb = Sandbox::new("limits", "");
    let (line, out) = sb.escape(false, &["fork", "64"]);
    assert_eq!(
        line,
        format!("fork errno {}", libc::EAGAIN),
        "{}",
        describe(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let forked: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("fork forked "))
        .and_then(|n| n.trim().parse().ok())
        .expect("fork count reported");
    // pids = 16 counts the helper, init and the server too.
    assert!(forked < 16, "forked {forked} with pids = 16");
    let (line, out) = sb.escape(true, &["fork", "64"]);
    assert_eq!(line, "fork ok 64", "{}", describe(&out));

    // Past memory = 64M the v1 memory controller's OOM killer SIGKILLs the server (no ENOMEM:
    // Linux overcommits, the charge fails at page-fault time): exec reports 128 + 9.
    let (line, out) = sb.escape(false, &["alloc", "256"]);
    assert_eq!(
        line,
        "",
        "allocation should not complete\n{}",
        describe(&out)
    );
    assert_eq!(out.status.code(), Some(128 + 9), "{}", describe(&out));
    let (line, out) = sb.escape(true, &["alloc", "256"]);
    assert_eq!(
        line,
        format!("alloc ok {}", 256 << 20),
        "{}",
        describe(&out)
    );
}

/// The server's cgroups as `/proc/self/cgroup` lists them: its v2 path, and the v1 path of each
/// hierarchy carrying memory, pids or cpu (the ones a session's limits and peaks use).
fn session_cgroups(text: &str) -> (String, Vec<(String, String)>) {
    let mut v2 = String::new();
    let mut v1 = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.is_empty() {
            v2 = path.to_string();
        } else if controllers
            .split(',')
            .any(|c| ["memory", "pids", "cpu"].contains(&c))
        {
            v1.push((controllers.to_string(), path.to_string()));
        }
    }
    (v2, v1)
}

#[test]
fn the_server_is_in_every_cgroup_of_its_session() {
    require_root();
    // Where limits (and the peaks `policy suggest` reads) live: on a hybrid host the v1
    // memory, pids and cpu hierarchies, which the jail joins itself (init inherits them).
    let sb = Sandbox::new("cgroups", "");
    let out = sb
        .exec(false, &["/bin/cat", "/proc/self/cgroup"])
        .stdin(Stdio::null())
        .output()
        .expect("run mcp-guard exec");
    assert!(out.status.success(), "{}", describe(&out));
    let (v2, v1) = session_cgroups(&String::from_utf8_lossy(&out.stdout));
    assert!(
        v2.starts_with("/mcp-guard/"),
        "v2: {v2:?}\n{}",
        describe(&out)
    );
    let hybrid = std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .any(|l| l.contains(" - cgroup cgroup ") && (l.contains(",memory") || l.contains(",pids")));
    if hybrid {
        assert!(!v1.is_empty(), "no v1 cgroup\n{}", describe(&out));
    }
    for (controllers, path) in &v1 {
        assert_eq!(path, &v2, "v1 {controllers}\n{}", describe(&out));
    }
}

#[test]
fn exit_status_is_the_servers() {
    require_root();
    let sb = Sandbox::new("status", "");
    let out = sb
        .exec(false, &["/bin/sh", "-c", "exit 3"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let out = sb
        .exec(false, &["/bin/sh", "-c", "kill -TERM $$"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(128 + 15), "{}", describe(&out));
    let out = sb
        .exec(false, &["/nonexistent/server"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(127), "{}", describe(&out));
}

#[test]
fn stdio_passes_through_byte_identical_with_eof() {
    require_root();
    let sb = Sandbox::new("stdio", "");
    let mut payload = vec![0u8; 8 << 20];
    let mut urandom = std::fs::File::open("/dev/urandom").expect("urandom");
    urandom.read_exact(&mut payload).expect("random payload");
    let mut child = sb
        .exec(false, &["/bin/cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = {
        let payload = payload.clone();
        std::thread::spawn(move || {
            stdin.write_all(&payload).expect("write payload");
            // Dropping stdin is the EOF cat must see to exit.
        })
    };
    let mut echoed = Vec::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut echoed)
        .expect("read");
    writer.join().expect("writer");
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status:?}");
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "echoed bytes differ");

    // A server that closes its stdin while the client keeps writing still gets its output out.
    let mut child = sb
        .exec(false, &["/bin/sh", "-c", "exec 0<&-; sleep 0.3; echo late"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let chunk = [b'y'; 4096];
        // Until exec exits and the pipe breaks.
        while stdin.write_all(&chunk).is_ok() {}
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("writer");
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "late\n");
}

/// exec's stdio as the client hands it over: one socket for both (driven by the reactor, like a
/// pipe), or a file (read through tokio's blocking stdio, left in blocking mode). Through the
/// MCP proxy too, whose writer shuts the socket's sending side down at the end.
#[test]
fn stdio_works_as_a_socket_and_as_a_file() {
    require_root();
    let sb = Sandbox::new("stdio-kinds", "");
    let line = "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n";
    for passthrough in [true, false] {
        let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let theirs_out = theirs.try_clone().expect("dup");
        let mut cmd = guard_cmd();
        cmd.arg("exec");
        if passthrough {
            cmd.arg("--passthrough");
        }
        let mut child = cmd
            .arg("--policy")
            .arg(&sb.policy)
            .args(["--", "/bin/cat"])
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs_out)))
            .spawn()
            .expect("spawn");
        // The command holds the socket's other end until dropped: exec's must be the last.
        drop(cmd);
        ours.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .expect("timeout");
        ours.write_all(line.as_bytes()).expect("write");
        ours.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let mut echoed = String::new();
        ours.read_to_string(&mut echoed)
            .expect("read until exec's EOF");
        let status = child.wait().expect("wait");
        assert!(status.success(), "passthrough {passthrough}: {status:?}");
        assert_eq!(echoed, line, "passthrough {passthrough}");
    }

    let input = sb.root.join("input");
    std::fs::write(&input, line).expect("input file");
    let out = sb
        .exec(false, &["/bin/cat"])
        .stdin(std::fs::File::open(&input).expect("open input"))
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), line);
}

/// Processes whose command line contains `marker` (exec, the shell and the sleeps).
fn processes_with(marker: &str) -> Vec<i32> {
    processes_where(|cmdline| cmdline.contains(marker))
}

/// `sleep MARKER` processes.
fn sleeps(marker: &str) -> usize {
    processes_where(|cmdline| cmdline == format!("sleep\0{marker}\0")).len()
}

fn processes_where(pred: impl Fn(&str) -> bool) -> Vec<i32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(e.path().join("cmdline"))
            && pred(&String::from_utf8_lossy(&cmdline))
        {
            found.push(pid);
        }
    }
    found
}

/// cgroup directories (v2 and v1) whose name starts with `server-`.
fn cgroups_of(server: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for h in ["unified", "memory", "pids", "cpu"] {
        for base in [
            Path::new("/sys/fs/cgroup").join(h),
            PathBuf::from("/sys/fs/cgroup"),
        ] {
            let Ok(entries) = std::fs::read_dir(base.join("mcp-guard")) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{server}-"))
                {
                    found.push(e.path());
                }
            }
        }
    }
    found
}

/// Starts a server that leaves background children and prints `ready`.
fn start_tree(sb: &Sandbox, server: &str, marker: &str) -> (std::process::Child, impl BufRead) {
    let script = format!("sleep {marker} & sleep {marker} & echo ready; wait");
    let mut child = guard_cmd()
        .args(["exec", "--passthrough", "--name", server, "--policy"])
        .arg(&sb.policy)
        .args(["--", "/bin/sh", "-c", &script])
        .env("HOME", &sb.home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read ready");
    assert_eq!(line.trim(), "ready");
    // `sleep &` may not have exec'd yet when the shell prints.
    wait_until("both sleeps run", || sleeps(marker) == 2);
    assert_eq!(
        cgroups_of(server).len(),
        4,
        "v2 + memory, pids, cpu v1 cgroups exist"
    );
    (child, out)
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn nothing_is_left_after_exit_or_sigterm_or_sigkill() {
    require_root();
    let sb = Sandbox::new("cleanup", "");
    let pid = std::process::id();

    // The server exits on its own while its children still run: they are killed too.
    let server = format!("cleanup-exit-{pid}");
    let marker = format!("{}.5", 3000 + pid % 1000);
    let out = guard_cmd()
        .args(["exec", "--passthrough", "--name", &server, "--policy"])
        .arg(&sb.policy)
        .args([
            "--",
            "/bin/sh",
            "-c",
            &format!("sleep {marker} & echo started"),
        ])
        .env("HOME", &sb.home)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        processes_with(&marker).is_empty(),
        "background child killed"
    );
    assert!(cgroups_of(&server).is_empty(), "cgroups removed");

    // exec is SIGTERMed mid-run.
    let server = format!("cleanup-term-{pid}");
    let marker = format!("{}.25", 3000 + pid % 1000);
    let (mut child, _out) = start_tree(&sb, &server, &marker);
    // SAFETY: signalling the exec we spawned.
    unsafe { libc::kill(child.id().cast_signed(), libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(128 + 15));
    assert!(processes_with(&marker).is_empty(), "tree killed");
    assert!(cgroups_of(&server).is_empty(), "cgroups removed");

    // The client closes stdin and the server ignores it: killed after the grace period (5 s).
    let server = format!("cleanup-eof-{pid}");
    let marker = format!("{}.75", 3000 + pid % 1000);
    let started = Instant::now();
    let out = guard_cmd()
        .args(["exec", "--passthrough", "--name", &server, "--policy"])
        .arg(&sb.policy)
        .args(["--", "/bin/sleep", &marker])
        .env("HOME", &sb.home)
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "killed after the grace period"
    );
    assert_eq!(out.status.code(), Some(128 + 9), "{}", describe(&out));
    assert!(processes_with(&marker).is_empty(), "server killed");
    assert!(cgroups_of(&server).is_empty(), "cgroups removed");

    // exec is SIGKILLed: parent-death signals take the tree down; the next exec reaps the cgroup.
    let server = format!("cleanup-kill-{pid}");
    let marker = format!("{}.125", 3000 + pid % 1000);
    let (mut child, _out) = start_tree(&sb, &server, &marker);
    child.kill().expect("SIGKILL exec");
    child.wait().expect("wait");
    wait_until("the tree is gone", || processes_with(&marker).is_empty());
    let out = sb.exec(false, &["/bin/true"]).output().expect("run");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        cgroups_of(&server).is_empty(),
        "a later exec removed the stale cgroups: {:?}",
        cgroups_of(&server)
    );
}

#[test]
fn environment_is_scrubbed_and_secrets_injected() {
    require_root();
    let sb = Sandbox::new("env", "");
    let secret = sb.root.join("token");
    std::fs::write(&secret, "s3cret\n").expect("write secret");
    // Secrets go only to the command the policy fixes (trust_secrets.rs: any other gets none).
    let policy = std::fs::read_to_string(&sb.policy)
        .expect("policy")
        .replacen(
            "name = \"jail-test\"\n",
            "name = \"jail-test\"\ncommand = [\"/usr/bin/env\"]\n",
            1,
        );
    std::fs::write(
        &sb.policy,
        format!(
            "{policy}\n[secrets]\nAPI_TOKEN = {{ file = \"{}\" }}\n[env]\npass = [\"KEEP_ME\"]\n",
            secret.display()
        ),
    )
    .expect("policy");
    let out = sb
        .exec(false, &["/usr/bin/env"])
        .env("AWS_SECRET_ACCESS_KEY", "leak")
        .env("NODE_OPTIONS", "--require /tmp/evil.js")
        .env("KEEP_ME", "kept")
        .env("LC_ALL", "C")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", describe(&out));
    let env = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, _)| k)
        .collect();
    assert!(env.lines().any(|l| l == "API_TOKEN=s3cret"), "{env}");
    assert!(env.lines().any(|l| l == "KEEP_ME=kept"), "{env}");
    assert!(env.lines().any(|l| l == "LC_ALL=C"), "{env}");
    assert!(
        env.lines()
            .any(|l| l == format!("HOME={}", sb.home.display())),
        "{env}"
    );
    assert!(!names.contains(&"AWS_SECRET_ACCESS_KEY"), "{env}");
    assert!(!names.contains(&"NODE_OPTIONS"), "{env}");
    for name in &names {
        assert!(
            [
                "PATH",
                "HOME",
                "USER",
                "LOGNAME",
                "TMPDIR",
                "LANG",
                "LANGUAGE",
                "TERM",
                "TZ",
                "API_TOKEN",
                "KEEP_ME"
            ]
            .contains(name)
                || name.starts_with("LC_"),
            "unexpected variable {name} in\n{env}"
        );
    }
}

#[test]
fn exec_without_root_refuses_with_77() {
    require_root();
    let sb = Sandbox::new("nonroot", "");
    let marker = sb.work.join("ran");
    std::fs::set_permissions(
        &sb.root,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let out = guard_cmd()
        .args(["exec", "--", "/usr/bin/touch"])
        .arg(&marker)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run as nobody");
    assert_eq!(out.status.code(), Some(77), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not root") && err.contains("refusing to launch"),
        "{err}"
    );
    assert!(!marker.exists(), "nothing was launched");
}

#[test]
fn unenforceable_policy_launches_nothing() {
    require_root();
    let sb = Sandbox::new("failclosed", "");
    // A syscall name that does not exist is a policy error (78) and nothing runs.
    let bad = sb.root.join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"bad\"\n[syscalls]\ndeny = [\"no_such_syscall\"]\n",
    )
    .expect("write");
    let marker = sb.work.join("ran");
    let out = guard_cmd()
        .args(["exec", "--policy"])
        .arg(&bad)
        .args(["--", "/usr/bin/touch"])
        .arg(&marker)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(78), "{}", describe(&out));
    assert!(!marker.exists(), "nothing was launched");
}

#[test]
fn real_filesystem_server_answers_through_the_jail() {
    require_root();
    let sb = Sandbox::new("npmfs", "");
    let data = sb.root.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    std::fs::write(data.join("hello.txt"), "hello from the jail\n").expect("write");
    // The built-in default policy plus the directory the server may use.
    let default =
        std::fs::read_to_string(mcp_guard_tests::workspace_root().join("policies/default.toml"))
            .expect("policies/default.toml");
    let dir = data.display().to_string();
    // The npm package lives in the workspace's node_modules (a symlink in worktrees).
    let modules = mcp_guard_tests::workspace_root()
        .join("tests/node_modules")
        .canonicalize()
        .expect("tests/node_modules");
    let policy_text = default
        .replacen("name = \"default\"", "name = \"filesystem\"", 1)
        .replacen(
            "read = [",
            &format!("read = [\"{}\", ", modules.display()),
            1,
        )
        .replacen("write = [", &format!("write = [\"{dir}\", "), 1);
    let policy = sb.root.join("filesystem.toml");
    std::fs::write(&policy, policy_text).expect("write policy");
    let entry = npm_server("@modelcontextprotocol/server-filesystem");
    let out = Command::new(python())
        .arg(fixture("mcp_client.py"))
        .arg("--call")
        .arg("read_file")
        .arg(format!(
            "{{\"path\": \"{}\"}}",
            data.join("hello.txt").display()
        ))
        .arg("--")
        .arg(mcp_guard())
        .env("MCP_GUARD_STATE_DIR", jail_state_dir())
        .args(["exec", "--policy"])
        .arg(&policy)
        .args(["--", "node"])
        .arg(&entry)
        .arg(&data)
        .env("HOME", &sb.home)
        .output()
        .expect("run the MCP client");
    assert!(out.status.success(), "{}", describe(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("client JSON");
    let tools: Vec<&str> = v["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    assert!(
        tools.contains(&"read_file") || tools.contains(&"read_text_file"),
        "{tools:?}"
    );
    assert_eq!(v["call"]["is_error"], false, "{v}");
    assert!(
        v["call"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("hello from the jail")),
        "{v}"
    );
}

#[test]
#[ignore = "benchmark: cargo xtask bench (root, release)"]
fn bench_exec_true() {
    const RUNS: usize = 50;
    require_root();
    let time = |cmd: &mut Command| {
        let start = Instant::now();
        let status = cmd.status().expect("run");
        assert!(status.success());
        start.elapsed()
    };
    // Interleaved, so load from other processes on this shared host hits all three alike.
    let (mut plain, mut jailed, mut observed) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        plain.push(time(&mut Command::new("/bin/true")));
        jailed.push(time(guard_cmd().args(["exec", "--", "/bin/true"])));
        observed.push(time(guard_cmd().args([
            "exec",
            "--observe",
            "--",
            "/bin/true",
        ])));
    }
    let (p, j, o) = (median(plain), median(jailed), median(observed));
    println!(
        "median of {RUNS} runs: /bin/true {p:?}; mcp-guard exec -- /bin/true {j:?} (x{:.1}); \
              exec --observe {o:?} (x{:.1})",
        j.as_secs_f64() / p.as_secs_f64(),
        o.as_secs_f64() / p.as_secs_f64()
    );
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    record("exec_true", "exec -- /bin/true", ms(j), "ms");
    record("exec_true", "exec --observe -- /bin/true", ms(o), "ms");
    record("exec_true", "exec/plain", ms(j) / ms(p), "ratio");
}

/// The seams exec leaves for the kernel guard and the JSON-RPC proxy, driven in-process.
#[test]
fn kernel_guard_and_pump_seams() {
    use std::{cell::RefCell, rc::Rc};

    use mcp_guard::exec::{self, ExecArgs, Hooks, ServerStdio, SessionInfo};
    use mcp_guard_model::dirs::Dirs;

    // What the attach hook saw, and when its returned guard was dropped.
    #[derive(Default, Debug)]
    struct Seen {
        procs: String,
        id_matches: bool,
        server_had_run: bool,
        dropped_with_cgroup_present: Option<bool>,
        echoed: Vec<u8>,
    }
    struct Guard(Rc<RefCell<Seen>>, PathBuf);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.borrow_mut().dropped_with_cgroup_present = Some(self.1.exists());
        }
    }
    require_root();
    let sb = Sandbox::new("seams", "");
    let marker = sb.work.join("server-ran");
    let dirs = Dirs {
        state: sb.root.join("state"),
        policy: sb.root.clone(),
    };
    let args = |cmd: &[&str]| ExecArgs {
        passthrough: true,
        policy: Some(sb.policy.display().to_string()),
        policy_text: None,
        name: Some(format!("seams-{}", std::process::id())),
        observe: false,
        learn: false,
        command: cmd.iter().map(std::string::ToString::to_string).collect(),
        caller: None,
        client_exe: None,
        audit: mcp_guard::history::AuditDefaults::default(),
    };

    let seen = Rc::new(RefCell::new(Seen::default()));
    let touch = format!("echo hi; touch {}; cat", marker.display());
    let hooks = Hooks {
        attach: Some({
            let seen = seen.clone();
            let marker = marker.clone();
            Box::new(move |info: SessionInfo| {
                Box::pin(async move {
                    use std::os::unix::fs::MetadataExt;
                    let mut s = seen.borrow_mut();
                    s.procs = std::fs::read_to_string(info.cgroup_dir.join("cgroup.procs"))
                        .unwrap_or_default();
                    s.id_matches = std::fs::metadata(&info.cgroup_dir)
                        .is_ok_and(|m| m.ino() == info.cgroup_id);
                    s.server_had_run = marker.exists();
                    drop(s);
                    Ok(Box::new(Guard(seen.clone(), info.cgroup_dir.clone()))
                        as Box<dyn std::any::Any>)
                })
            })
        }),
        pump: {
            let seen = seen.clone();
            Box::new(move |io: ServerStdio| {
                Box::pin(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let ServerStdio {
                        mut stdin,
                        mut stdout,
                        ..
                    } = io;
                    stdin.write_all(b"via the pump\n").await?;
                    drop(stdin);
                    let mut out = Vec::new();
                    stdout.read_to_end(&mut out).await?;
                    seen.borrow_mut().echoed = out;
                    Ok(())
                })
            })
        },
        finish: None,
        helper: mcp_guard(),
    };
    let code = exec::run(args(&["/bin/sh", "-c", &touch]), &dirs, hooks);
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    let s = seen.borrow();
    assert!(
        !s.procs.trim().is_empty(),
        "the jail's init was in the cgroup: {s:?}"
    );
    assert!(s.id_matches, "cgroup_id is the directory's inode: {s:?}");
    assert!(!s.server_had_run, "attach ran before the server: {s:?}");
    assert!(marker.exists(), "then the server ran");
    assert_eq!(
        s.dropped_with_cgroup_present,
        Some(true),
        "guard dropped before cgroup removal"
    );
    assert_eq!(String::from_utf8_lossy(&s.echoed), "hi\nvia the pump\n");
    drop(s);

    // A failing attach refuses the launch: 77 and the server never runs.
    std::fs::remove_file(&marker).expect("remove marker");
    let hooks = Hooks {
        attach: Some(Box::new(|_info: SessionInfo| {
            Box::pin(async { Err("no eBPF here".to_string()) })
        })),
        helper: mcp_guard(),
        ..Hooks::default()
    };
    let code = exec::run(args(&["/bin/sh", "-c", &touch]), &dirs, hooks);
    assert_eq!(code, std::process::ExitCode::from(77));
    assert!(!marker.exists(), "nothing launched");
}
