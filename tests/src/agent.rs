//! `mcp-guard agent` for tests: each test's agent has its own socket, bpffs pin directory,
//! state and policy dirs, so concurrent tests (and a real agent on the host) never meet.
//! `exec` goes through a test's agent only when given its socket.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{mcp_guard, prom::free_port, prom::http_get};

/// How a test's agent is started beyond its config file.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `--metrics` (default: a free loopback port).
    pub metrics: Option<String>,
    /// The agent's `RLIMIT_NOFILE` (soft and hard), e.g. systemd's default for services.
    pub nofile: Option<u64>,
    /// The log's name (`dir/<log>.log`; default `agent`).
    pub log: Option<String>,
    /// The `mcp-guard` binary the agent runs (default [`mcp_guard`]): its sessions run the
    /// same binary.
    pub bin: Option<PathBuf>,
}

/// The unprivileged user the tests run `exec` as (`nobody`).
pub const NOBODY: u32 = 65534;

/// A test's agent; `SIGKILLed` on drop (the pin directory goes with [`PinDir`]).
pub struct Agent {
    child: Child,
    /// Its metrics address (`host:port`).
    pub addr: String,
    /// Its Unix socket.
    pub socket: PathBuf,
    /// Its state dir.
    pub state: PathBuf,
    /// Its policy dir.
    pub policies: PathBuf,
    /// Where it pins programs and maps.
    pub bpf_dir: PathBuf,
    log: PathBuf,
}

/// Removes a test agent's bpffs pin directory when dropped (after the agents that use it).
pub struct PinDir(pub PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl PinDir {
    /// A fresh pin directory for the test named `name`.
    pub fn new(name: &str) -> PinDir {
        let dir = PathBuf::from(format!(
            "/sys/fs/bpf/mcp-guard-test-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        PinDir(dir)
    }

    /// The cgroups whose egress attachments are pinned (one directory each), all versions.
    pub fn pinned_cgroups(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for version in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            let cgroups = version.path().join("cgroups");
            out.extend(
                std::fs::read_dir(cgroups)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path()),
            );
        }
        out
    }
}

impl Agent {
    /// Starts an agent in `dir` (state, policies, socket and log there; `config` is extra agent
    /// config TOML) pinning in `pins`; waits until it serves /metrics and its socket.
    pub fn start(dir: &Path, pins: &PinDir, config: &str) -> Agent {
        Self::start_at(
            dir,
            pins,
            config,
            &format!("127.0.0.1:{}", free_port()),
            "agent",
        )
    }

    /// [`Agent::start`] on a given metrics address, logging to `dir/<log>.log` (a restart).
    pub fn start_at(dir: &Path, pins: &PinDir, config: &str, addr: &str, log: &str) -> Agent {
        Self::start_with(
            dir,
            pins,
            config,
            &Options {
                metrics: Some(addr.into()),
                log: Some(log.into()),
                ..Options::default()
            },
        )
    }

    /// [`Agent::start`] with `options`. Ready once its socket is there and its log says it serves
    /// /metrics (for a TCP address without a token in `config`, once /metrics answers 200).
    pub fn start_with(dir: &Path, pins: &PinDir, config: &str, options: &Options) -> Agent {
        let addr = options
            .metrics
            .clone()
            .unwrap_or_else(|| format!("127.0.0.1:{}", free_port()));
        let log = options.log.as_deref().unwrap_or("agent");
        let plain_http = !addr.starts_with("unix:") && !config.contains("metrics_token_file");
        let state = dir.join("state");
        let policies = dir.join("policies");
        std::fs::create_dir_all(&policies).expect("policy dir");
        let socket = dir.join("agent.sock");
        let config_path = dir.join("agent.toml");
        // Reachable by the unprivileged user the tests run exec as.
        std::fs::write(&config_path, format!("socket_mode = \"0666\"\n{config}"))
            .expect("agent config");
        let log = dir.join(format!("{log}.log"));
        let mut cmd = Command::new(options.bin.clone().unwrap_or_else(mcp_guard));
        if let Some(n) = options.nofile {
            use std::os::unix::process::CommandExt as _;
            // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .arg("--state-dir")
            .arg(&state)
            .arg("--policy-dir")
            .arg(&policies)
            .arg("agent")
            .arg("--config")
            .arg(&config_path)
            .args(["--metrics", &addr])
            .arg("--socket")
            .arg(&socket)
            .arg("--bpf-dir")
            .arg(&pins.0)
            .env("RUST_LOG", "mcp_guard=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("agent log"))
            .spawn()
            .expect("start the agent");
        let mut agent = Agent {
            child,
            addr: addr.clone(),
            socket,
            state,
            policies,
            bpf_dir: pins.0.clone(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let serving = |agent: &Agent| {
            if plain_http {
                http_get(&agent.addr, "/metrics").is_some_and(|(status, _)| status == 200)
            } else {
                agent.log().contains("mcp-guard agent: serving")
            }
        };
        while !serving(&agent) || !agent.socket.exists() {
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!("the agent exited ({status}):\n{}", agent.log());
            }
            assert!(
                Instant::now() < deadline,
                "the agent never served /metrics and its socket:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    /// The agent's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The agent's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no cleanup of any kind runs in the agent.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the agent");
        self.child.wait().expect("reap the agent");
    }

    /// SIGTERM, then waits for it to exit; its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill(1)");
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("agent status") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `mcp-guard exec` through this agent, as `uid` (root or [`NOBODY`]), with `args` after
    /// `exec` (the binary given must be executable by that user).
    pub fn exec(&self, mcp_guard: &Path, uid: u32, args: &[&str]) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .args(["--clear-groups", "--"])
            .arg(mcp_guard)
            .arg("exec")
            .arg("--agent-socket")
            .arg(&self.socket)
            .args(args);
        cmd
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory every user may enter, for what the unprivileged user must read or run (the
/// workspace may sit below a directory only root can enter, as /root in CI). Removed on drop.
pub struct Public(pub PathBuf);

impl Public {
    /// A fresh one for the test named `name` (in /var/tmp).
    pub fn new(name: &str) -> Public {
        let dir = PathBuf::from(format!(
            "/var/tmp/mcp-guard-public-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("public dir");
        chmod(&dir, "0755");
        Public(dir)
    }

    /// Copies `src` (a file or a tree; a symlink is followed, as a worktree's `node_modules`
    /// may be one) in as `name`, readable (and, where it was, runnable) by everyone; its path.
    pub fn copy(&self, src: &Path, name: &str) -> PathBuf {
        let dst = self.0.join(name);
        let status = Command::new("cp")
            .arg("-aH")
            .arg(src)
            .arg(&dst)
            .status()
            .expect("cp");
        assert!(
            status.success(),
            "cp -a {} {}",
            src.display(),
            dst.display()
        );
        chmod(&dst, "-R a+rX");
        dst
    }
}

impl Drop for Public {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn chmod(path: &Path, mode: &str) {
    let status = Command::new("chmod")
        .args(mode.split(' '))
        .arg(path)
        .status()
        .expect("chmod");
    assert!(status.success(), "chmod {mode} {}", path.display());
}
