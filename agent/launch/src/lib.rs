//! Turning a policy into a jailed server process: cgroup → namespaces → landlock → caps → seccomp.
//!
//! Two halves. [`prepare`] runs in the (multithreaded) launcher: it checks what this host can
//! enforce (fail closed), resolves the user, environment, secrets and program, compiles the
//! seccomp filters, creates the cgroup and writes its limits, and returns a [`JailSpec`] of plain
//! data. The jail itself is applied by a stage-2 helper, `mcp-guard` re-executed from
//! `/proc/self/exe` with a hidden subcommand ([`stage2::main`]): a fresh single-threaded process
//! may run ordinary code after its forks, where a child forked from a tokio process could only
//! make raw async-signal-safe syscalls. The helper joins the v1 cgroups (hybrid hosts) and
//! clone3()s a small init straight into the v2 cgroup and new mount, PID, IPC and UTS
//! namespaces; init (pid 1) tells the launcher it is in the cgroup, waits for its go (the kernel
//! guard attaches then), mounts the private /tmp and /proc, builds the landlock ruleset (rules
//! are inode-based, so after the mounts) and forks the server child, which only restricts
//! itself, drops privileges, installs the precompiled seccomp filters and execs.

pub mod cgroup;
pub mod container;
pub mod devices;
pub mod elf_deps;
pub mod identity;
pub mod image_lookup;
pub mod landlock;
mod limits;
pub mod mount_view;
pub mod mounts;
pub mod netns;
mod pin_check;
mod prepare;
pub mod promises;
pub mod seccomp;
pub mod secret_gate;
pub mod server_user;
pub mod stage2;
mod tcp_ports;
pub mod usage;

pub use prepare::prepare;
pub use tcp_ports::tcp_port_ranges;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use mcp_guard_policy::{Policy, read_secret};

/// Everything the stage-2 helper needs, as plain data (sent over a socket, never on disk).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JailSpec {
    /// Server name (logs).
    pub server: String,
    /// Absolute path of the program to execve.
    pub program: PathBuf,
    /// argv, argv[0] as the user wrote it.
    pub argv: Vec<String>,
    /// The complete, scrubbed environment.
    pub env: Vec<(String, String)>,
    /// cgroup directories (v2 first, then v1) the helper puts itself in.
    pub cgroup_dirs: Vec<PathBuf>,
    /// Who the server runs as.
    pub identity: identity::Identity,
    /// `None` under observe: no namespaces, landlock, capability drop or seccomp.
    pub enforce: Option<Enforce>,
    /// The pinned `sha256:<hex>` of the program: the server process hashes the fd it opens and
    /// execs that same fd (`fexecve`), so what runs is what was checked.
    pub program_digest: Option<String>,
    /// The server's umask (`None`: the launcher's own, inherited).
    #[serde(default)]
    pub umask: Option<u32>,
    /// exec is not root (and no agent listens): no cgroup, namespaces or user switch; only
    /// what an unprivileged process can do to itself (landlock, seccomp, `no_new_privs`).
    #[serde(default)]
    pub unprivileged: bool,
}

/// The enforcing parts of a jail.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Enforce {
    /// Landlock rules (`None` only when degraded on a kernel without landlock).
    pub landlock: Option<landlock::LandlockSpec>,
    /// seccomp programs, installed in order (empty only when degraded).
    pub seccomp: Vec<seccomp::Program>,
    /// rlimits set as a last resort for limits no cgroup controller could carry: (resource, value).
    pub rlimits: Vec<(u32, u64)>,
    /// The pathname sockets of `[network] unix`, carried into the jail's own /run (and the
    /// like) by [`mount_view`].
    #[serde(default)]
    pub unix_sockets: Vec<PathBuf>,
    /// A network namespace of its own (only a loopback): chosen where it is what keeps the
    /// abstract-socket or TCP-bind promise of a policy without egress.
    #[serde(default)]
    pub net_namespace: bool,
}

/// What `exec` asked for.
#[derive(Clone, Debug)]
pub struct LaunchRequest<'a> {
    /// The validated policy.
    pub policy: &'a Policy,
    /// Server name (cgroup name, logs).
    pub server: &'a str,
    /// Command and arguments (empty: the policy's `command`).
    pub command: &'a [String],
    /// `--observe` (or the policy's `enforcement.observe`).
    pub observe: bool,
    /// mcp-guard's state dir: the bytecode cache of pinned Python packages lives there
    /// (`None`: no cache; Python compiles the pinned sources at every start).
    pub state_dir: Option<&'a std::path::Path>,
    /// The agent's client the server is launched for (`None`: exec's own user and environment).
    pub caller: Option<&'a identity::Caller>,
}

/// A prepared launch: the spec for the helper and the cgroup already made and limited.
#[derive(Debug)]
pub struct Prepared {
    /// For the stage-2 helper.
    pub spec: JailSpec,
    /// The session's cgroup (kill and remove it when the session ends); `None` when exec is
    /// not root ([`JailSpec::unprivileged`]).
    pub cgroup: Option<cgroup::Cgroup>,
    /// What is not enforced (degraded or observe) and fallbacks used: say these loudly.
    pub warnings: Vec<String>,
    /// The secrets injected into the server's environment, (name, value): none unless the
    /// command is the one the policy fixes ([`secret_gate`]).
    pub secrets: Vec<(String, String)>,
    /// The per-session uid's lease, when the server runs as one: keep it until the session ends.
    pub lease: Option<server_user::Lease>,
    /// Which mechanism keeps each promise (empty under observe).
    pub promises: Vec<promises::Choice>,
}

/// Why a launch was refused before anything ran.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// Something the policy asks for cannot be enforced on this host (exit 77).
    #[error("{0}")]
    Unenforceable(String),
    /// The policy's inputs are wrong at launch, e.g. a secret file is missing (exit 78).
    #[error("{0}")]
    Config(String),
    /// The command is not found or not executable (exit 127).
    #[error("{0}")]
    NotFound(String),
}

/// Reads the policy's secrets (exit 78 when one cannot be read, naming it, never its value).
pub fn read_secrets(policy: &Policy) -> Result<Vec<(String, String)>, LaunchError> {
    let mut secrets = Vec::new();
    for (name, secret) in &policy.secrets {
        let value =
            read_secret(secret).map_err(|e| LaunchError::Config(format!("secrets.{name}: {e}")))?;
        if value.contains('\0') {
            return Err(LaunchError::Config(format!(
                "secrets.{name}: the value contains a NUL byte, which an environment variable \
                 cannot carry"
            )));
        }
        secrets.push((name.clone(), value));
    }
    Ok(secrets)
}
