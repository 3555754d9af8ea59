//! Who a server is and what it holds, tried as a hostile server would: a standalone root `exec`
//! (no `SUDO_UID`, no policy `user`) runs it as the unprivileged server user, also under
//! `--observe`; only `user = "root"` runs it as root, and then every start warns; through the
//! agent a root client gets the same and an unprivileged one runs its server as itself. Under a
//! real terminal (util-linux `script` gives exec a pty as its controlling terminal, as a user's
//! terminal would) the server's TIOCSTI does not type into it; a descriptor exec inherited
//! without close-on-exec does not reach the server. Needs root.

use std::{
    io::Write,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use mcp_guard_tests::{
    agent::{Agent, NOBODY, PinDir, Public},
    describe, mcp_guard, require_root, scratch_root, server_user, workspace_bin,
};

/// A scratch dir with a policy for the escape fixture (`more` goes above the tables).
struct Scene {
    root: PathBuf,
    policy: PathBuf,
    state: PathBuf,
}

impl Scene {
    fn new(name: &str, more: &str) -> Scene {
        require_root();
        let root = scratch_root()
            .join("trust-identity")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("scene dir");
        let policy = root.join("policy.toml");
        std::fs::write(&policy, policy_text(name, &bin_dir(), more)).expect("policy");
        Scene {
            state: root.join("state"),
            root,
            policy,
        }
    }

    /// `mcp-guard exec --standalone --passthrough` of the escape fixture with `action`, as
    /// root with no trace of sudo in its environment.
    fn exec(&self, observe: bool, action: &[&str]) -> Command {
        let mut cmd = Command::new(mcp_guard());
        cmd.arg("--state-dir")
            .arg(&self.state)
            .args(["exec", "--standalone", "--passthrough", "--policy"])
            .arg(&self.policy);
        if observe {
            cmd.arg("--observe");
        }
        cmd.arg("--")
            .arg(workspace_bin("escape"))
            .args(action)
            .env_remove("SUDO_UID")
            .env_remove("SUDO_GID")
            .env_remove("SUDO_USER")
            .stdin(Stdio::null());
        cmd
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn bin_dir() -> PathBuf {
    workspace_bin("escape")
        .parent()
        .expect("bin dir")
        .to_path_buf()
}

/// A policy for the escape fixture in `bin`, which may read /proc (to say who it is) and open
/// /dev/tty (so that only the terminal's own rules and seccomp stand between it and TIOCSTI).
fn policy_text(name: &str, bin: &Path, more: &str) -> String {
    let bin = bin.display();
    format!(
        r#"name = "{name}"
{more}
[filesystem]
read = ["/usr", "/lib", "/lib64", "/bin", "/etc/ld.so.cache", "/proc", "{bin}"]
write = ["/tmp", "/dev/null", "/dev/tty"]
exec = ["/usr", "/lib", "/lib64", "/bin", "{bin}"]
"#
    )
}

/// The `KEY=VALUE` fields of the fixture's `whoami ok ...` line.
fn whoami(out: &Output) -> std::collections::HashMap<String, String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("whoami ok "))
        .unwrap_or_else(|| panic!("no whoami line\n{}", describe(out)));
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const ROOT_WARNING: &str = "the server runs as root (uid 0)";

#[test]
fn a_standalone_root_exec_runs_the_server_as_the_unprivileged_server_user() {
    let s = Scene::new("unpriv", "");
    let (uid, gid) = server_user();
    for observe in [false, true] {
        let out = s.exec(observe, &["whoami"]).output().expect("exec");
        assert!(out.status.success(), "{}", describe(&out));
        let me = whoami(&out);
        for key in ["uid", "euid"] {
            assert_eq!(
                me[key],
                uid.to_string(),
                "observe={observe}: {key}\n{}",
                describe(&out)
            );
        }
        assert_eq!(me["gid"], gid.to_string(), "{}", describe(&out));
        // Not even under --observe, which drops nothing itself: a uid change from root clears
        // every capability.
        assert_eq!(me["capeff"], "0000000000000000", "{}", describe(&out));
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains(ROOT_WARNING),
            "{}",
            describe(&out)
        );
    }
    // sudo run by root itself names root: still the server user.
    let out = s
        .exec(false, &["whoami"])
        .env("SUDO_UID", "0")
        .env("SUDO_GID", "0")
        .output()
        .expect("exec");
    assert_eq!(whoami(&out)["uid"], uid.to_string(), "{}", describe(&out));
}

#[test]
fn only_a_policy_user_root_runs_the_server_as_root_and_every_start_says_so() {
    let s = Scene::new("asroot", "user = \"root\"");
    for start in 0..2 {
        let out = s.exec(false, &["whoami"]).output().expect("exec");
        assert!(out.status.success(), "{}", describe(&out));
        let me = whoami(&out);
        assert_eq!(me["uid"], "0", "{}", describe(&out));
        // The jail still takes root's capabilities.
        assert_eq!(me["capeff"], "0000000000000000", "{}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(ROOT_WARNING),
            "start {start}: no warning\n{}",
            describe(&out)
        );
    }
}

/// The command line for `sh -c`, each word single-quoted.
fn shell_words(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy().replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

const INJECTED: &str = "mcpguard-injected";

/// Runs exec (and after it the shell's `read` of the terminal) under `script`, which makes a
/// pty exec's controlling terminal; returns the fixture's report lines and what `read` got.
fn tiocsti_under_script(s: &Scene, observe: bool) -> (Vec<String>, String, Output) {
    let exec = s.exec(observe, &["tiocsti", &format!("{INJECTED}\n")]);
    // exec's stdin is not the terminal (its pump would read what was typed); its stdout and
    // stderr are, and the terminal is its session's. Whatever the server typed is the
    // terminal's input afterwards: the shell reads one line of it. No echo, so that typed text
    // does not interleave with the reports.
    let script = format!(
        "stty -echo; {} </dev/null; read -t 2 line; echo \"READ=[$line]\"",
        shell_words(&exec)
    );
    let mut child = Command::new("script")
        .args(["-qfec", &script, "/dev/null"])
        .env("SHELL", "/bin/bash")
        .env_remove("SUDO_UID")
        .env_remove("SUDO_GID")
        .env_remove("SUDO_USER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    // Held open until script ends: at EOF on its stdin script would type an end-of-file into
    // the terminal, which `read` would take before anything the server typed.
    let keep_open = child.stdin.take();
    let out = child.wait_with_output().expect("script");
    drop(keep_open);
    let stdout = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    let reports = stdout
        .lines()
        .filter(|l| l.starts_with("tiocsti") && *l != "tiocsti ok")
        .map(str::to_string)
        .collect();
    let read = stdout
        .lines()
        .find_map(|l| l.strip_prefix("READ=["))
        .and_then(|l| l.strip_suffix(']'))
        .unwrap_or_else(|| panic!("no READ line\n{}", describe(&out)))
        .to_string();
    (reports, read, out)
}

#[test]
fn tiocsti_from_the_server_does_not_type_into_execs_terminal() {
    let s = Scene::new("tiocsti", "");
    // Enforced: seccomp refuses the request on every descriptor (EPERM), whatever bits lie
    // above the 32 the kernel reads; /dev/tty cannot even be opened (ENXIO): the server has no
    // controlling terminal.
    let (reports, read, out) = tiocsti_under_script(&s, false);
    let mut expected = Vec::new();
    for name in ["tiocsti", "tiocsti-high"] {
        for fd in 0..3 {
            expected.push(format!("{name} fd{fd} errno {}", libc::EPERM));
        }
        expected.push(format!("{name} tty open-errno {}", libc::ENXIO));
    }
    assert_eq!(reports, expected, "{}", describe(&out));
    assert_eq!(
        read,
        "",
        "the injection reached the terminal\n{}",
        describe(&out)
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(INJECTED),
        "{}",
        describe(&out)
    );

    // Observe (no seccomp): its own session alone keeps the terminal out of reach. stdin,
    // stdout and stderr are exec's pipes (stderr goes through the redactor): ENOTTY; and
    // /dev/tty does not open without a controlling terminal.
    let (reports, read, out) = tiocsti_under_script(&s, true);
    let mut expected = Vec::new();
    for name in ["tiocsti", "tiocsti-high"] {
        for fd in 0..3 {
            expected.push(format!("{name} fd{fd} errno {}", libc::ENOTTY));
        }
        expected.push(format!("{name} tty open-errno {}", libc::ENXIO));
    }
    assert_eq!(reports, expected, "{}", describe(&out));
    assert_eq!(
        read,
        "",
        "the injection reached the terminal\n{}",
        describe(&out)
    );
}

/// A pipe's (read, write) ends, both close-on-exec here.
fn pipe() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array it is given.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just created and nothing else owns them.
    unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    }
}

#[test]
fn a_descriptor_exec_inherits_does_not_reach_the_server() {
    use std::os::unix::fs::OpenOptionsExt;
    let s = Scene::new("fds", "");
    // A root-only file the server's policy does not grant, and a pipe: whoever started exec
    // left them open without close-on-exec (as fd 7 and 8).
    let secret = s.root.join("secret");
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&secret)
        .and_then(|mut f| f.write_all(b"inherited-file-secret\n"))
        .expect("secret file");
    for (observe, action) in [
        (false, vec!["fds"]),
        (true, vec!["fds"]),
        (false, vec!["read-fd", "7"]),
        (false, vec!["read-fd", "8"]),
        (true, vec!["read-fd", "7"]),
    ] {
        let file = std::fs::File::open(&secret).expect("open the secret");
        let (rd, mut wr) = pipe();
        wr.write_all(b"inherited-pipe-secret\n")
            .expect("fill the pipe");
        drop(wr);
        let (file_fd, pipe_fd) = (file.as_raw_fd(), rd.as_raw_fd());
        let mut cmd = s.exec(observe, &action);
        // SAFETY: dup2 between fork and exec, on fds this process owns; dup2's copies are not
        // close-on-exec, which is the point.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(file_fd, 7) < 0 || libc::dup2(pipe_fd, 8) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cmd.output().expect("exec");
        drop((file, rd));
        assert!(out.status.success(), "{}", describe(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().next().unwrap_or("");
        let what = format!("observe={observe} {action:?}\n{}", describe(&out));
        match action[0] {
            "fds" => assert_eq!(line, "fds ok", "descriptors reached the server: {what}"),
            _ => assert_eq!(line, format!("read-fd errno {}", libc::EBADF), "{what}"),
        }
        assert!(!stdout.contains("inherited-"), "{what}");
    }
}

/// A policy for the escape fixture in `bin`, in the agent's policy dir.
fn agent_policy(dir: &Path, name: &str, bin: &Path, more: &str) {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).expect("policy dir");
    std::fs::write(
        policies.join(format!("{name}.toml")),
        policy_text(name, bin, more),
    )
    .expect("policy");
}

#[test]
fn through_the_agent_a_caller_runs_its_server_as_itself_and_root_as_the_server_user() {
    require_root();
    let dir = scratch_root()
        .join("trust-identity")
        .join(format!("agent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let pins = PinDir::new("trust-identity");
    // What nobody must run and read.
    let public = Public::new("trust-identity");
    let guard = public.copy(&mcp_guard(), "mcp-guard");
    let escape = public.copy(&workspace_bin("escape"), "escape");
    agent_policy(&dir, "plain", &public.0, "");
    agent_policy(&dir, "asroot", &public.0, "user = \"root\"");
    let agent = Agent::start(&dir, &pins, "");
    let run = |uid: u32, policy: &str| {
        let out = agent
            .exec(&guard, uid, &["--passthrough", "--policy", policy, "--"])
            .arg(&escape)
            .arg("whoami")
            .env_remove("SUDO_UID")
            .env_remove("SUDO_GID")
            .env_remove("SUDO_USER")
            .current_dir(&public.0)
            .stdin(Stdio::null())
            .output()
            .expect("exec through the agent");
        assert!(
            out.status.success(),
            "{}\nagent:\n{}",
            describe(&out),
            agent.log()
        );
        out
    };
    let (server_uid, _) = server_user();
    let out = run(0, "plain");
    assert_eq!(
        whoami(&out)["uid"],
        server_uid.to_string(),
        "{}",
        describe(&out)
    );
    let out = run(NOBODY, "plain");
    assert_eq!(
        whoami(&out)["uid"],
        NOBODY.to_string(),
        "{}",
        describe(&out)
    );
    // Root's own choice of root: the warning reaches the client's stderr.
    let out = run(0, "asroot");
    assert_eq!(whoami(&out)["uid"], "0", "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(ROOT_WARNING),
        "{}",
        describe(&out)
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}
