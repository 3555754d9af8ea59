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
pub mod mount_view;
pub mod netns;
pub mod seccomp;
pub mod secret_gate;
pub mod server_user;
pub mod stage2;
pub mod usage;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::promises::{self, Mechanism, Promise};
use mcp_guard_policy::{Policy, expand_home, read_secret};

/// Mechanisms used only where a stronger one is missing (logged when chosen).
const FALLBACKS: &[Mechanism] = &[
    Mechanism::SeccompTruncate,
    Mechanism::NetNamespace,
    Mechanism::MountView,
    Mechanism::PidNamespace,
];

/// What `policy` asks of the kernel beyond what every launch promises.
fn needs(policy: &Policy, home: &std::path::Path) -> promises::Needs {
    let net = &policy.network;
    let fs = &policy.filesystem;
    promises::Needs {
        tcp_ports_limited: tcp_ports(policy).is_some(),
        egress: !net.allow.is_empty(),
        abstract_names: net.unix.iter().any(|u| u.starts_with('@')),
        device_files: fs
            .read
            .iter()
            .chain(&fs.exec)
            .any(|p| promises::reaches_devices(&expand_home(p, home))),
    }
}

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

/// Checks the host, resolves everything and creates the cgroup. Nothing is launched; on error
/// nothing is left behind.
pub fn prepare(req: &LaunchRequest<'_>) -> Result<Prepared, LaunchError> {
    use LaunchError::{Config, NotFound, Unenforceable};
    let policy = req.policy;
    let degraded_ok = policy.enforcement.allow_degraded;
    let mut warnings = Vec::new();
    // Either refuse (fail closed) or, when the policy allows it, run without and say so.
    let mut missing = |what: String, warnings: &mut Vec<String>| -> Result<(), LaunchError> {
        if degraded_ok {
            warnings.push(format!("NOT ENFORCED (enforcement.allow_degraded): {what}"));
            Ok(())
        } else {
            Err(Unenforceable(format!(
                "{what}\nrefusing to launch (fail closed); fix the host, or set \
                 [enforcement] allow_degraded = true in the policy, or use --observe"
            )))
        }
    };

    let unprivileged = !nix::unistd::geteuid().is_root();
    if unprivileged {
        let gaps = unprivileged_gaps(policy);
        let what = format!(
            "mcp-guard exec runs as uid {}, not root, and no mcp-guard agent listens (see \
             --agent-socket); without root it cannot enforce:\n{}\nit can: landlock (files, TCP \
             ports), seccomp, no_new_privs and the MCP proxy's rules",
            nix::unistd::geteuid(),
            gaps.iter()
                .map(|g| format!("  - {g}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        if req.observe {
            warnings.push(format!("NOT ENFORCED (not root): {what}"));
        } else if degraded_ok {
            warnings.push(format!(
                "NOT ENFORCED (enforcement.allow_degraded, not root): {what}"
            ));
        } else {
            return Err(Unenforceable(format!(
                "{what}\nrefusing to launch (fail closed): start the agent (systemctl start \
                 mcp-guard) so that exec hands the session to it, or run exec as root, or set \
                 [enforcement] allow_degraded = true in the policy to run with landlock, \
                 seccomp and the MCP proxy only"
            )));
        }
        if let Some(user) = &policy.user {
            return Err(Config(format!(
                "the policy runs the server as user {user:?}: only root can switch users \
                 (exec runs as uid {})",
                nix::unistd::geteuid()
            )));
        }
    }

    let identity::Resolved {
        identity: id,
        lease,
    } = identity::resolve(policy.user.as_deref(), req.caller).map_err(Config)?;
    warnings.extend(identity::root_warning(&id, req.observe));
    let command = match (req.command.is_empty(), &policy.command) {
        (false, _) => req.command.to_vec(),
        (true, Some(cmd)) => cmd.clone(),
        (true, None) => {
            return Err(NotFound(format!(
                "no command given after -- and policy {} has no `command`",
                policy.name
            )));
        }
    };
    let env = identity::environment(&id, &policy.env, &[], req.caller);
    let Some(cmd) = command.first() else {
        return Err(NotFound("no command given after --".into()));
    };
    let program = identity::resolve_program(cmd, &env).ok_or_else(|| {
        NotFound(format!(
            "{cmd}: command not found or not executable (searched the server's PATH)"
        ))
    })?;
    let program_digest = check_pins(policy, &program, req, &mut warnings)?;
    let pinned_env = check_pinned_argv(policy, &program, &command, &env, req, &mut warnings)?;
    // The secrets go only to the command the policy fixes; any other runs without them.
    let pinned = program_digest.is_some() && pinned_env.is_some();
    let (argv, secrets) = match secret_gate::jail(policy, &program, &command, pinned, &env) {
        Ok(argv) => (argv, read_secrets(policy)?),
        Err(why) => {
            if !policy.secrets.is_empty() {
                warnings.push(secret_gate::withheld(policy, &why));
            }
            (command, Vec::new())
        }
    };
    // The policy's command runs by its own path (a caller's spelling only found the same file).
    let program = match (&policy.command, argv.first()) {
        (Some(cmd), Some(first)) if argv == *cmd => PathBuf::from(first),
        _ => program,
    };
    let mut env = if secrets.is_empty() {
        env
    } else {
        identity::environment(&id, &policy.env, &secrets, req.caller)
    };
    let protect = match pinned_env {
        Some(env) => env,
        None if !secrets.is_empty() => crate::supply::argv::hardening(&program, &argv, &env),
        None => Vec::new(),
    };
    for (k, v) in protect {
        env.retain(|(have, _)| *have != k);
        env.push((k, v));
    }
    // RECORD lists no bytecode: Python must not read the __pycache__ dirs next to the pinned
    // sources (a planted .pyc would run instead of them), but a cache mcp-guard compiled itself.
    let pycache = if policy.pin.pypi.is_empty() || req.observe {
        None
    } else {
        // A shared cache only where the server cannot write (else its own private /tmp, where
        // it is compiled at every start).
        let state = req.state_dir.filter(|s| {
            let s = std::path::absolute(s).unwrap_or_else(|_| s.to_path_buf());
            !s.starts_with("/tmp")
                && !policy
                    .filesystem
                    .write
                    .iter()
                    .any(|w| s.starts_with(expand_home(w, &id.home)))
        });
        let dir = match state {
            Some(state) => crate::supply::python_cache(&policy.pin, &program, state)
                .map_err(|e| Unenforceable(format!("the pinned packages' bytecode cache: {e}")))?,
            None => PathBuf::from("/tmp/.mcp-guard-pycache"),
        };
        env.retain(|(k, _)| k != PYCACHE);
        env.push((PYCACHE.into(), dir.display().to_string()));
        Some(dir)
    };

    let mut promises_kept = Vec::new();
    let enforce = if req.observe {
        warnings.push(
            "OBSERVE MODE: nothing is enforced (no landlock, seccomp, namespaces, capability \
             drop or limits); the server only runs in its own cgroup"
                .into(),
        );
        None
    } else {
        let kabi = landlock::kernel_abi();
        let abi = kabi.min(landlock::MAX_ABI);
        let landlock = if abi < 1 {
            missing(
                "landlock is not available (kernel without CONFIG_SECURITY_LANDLOCK or `landlock` \
                 missing from the lsm= boot parameter): the filesystem rules cannot be enforced"
                    .into(),
                &mut warnings,
            )?;
            None
        } else {
            // Landlock's TCP rules and scopes wherever the kernel has them (the promises table
            // below decides what else keeps those promises where it has not).
            let tcp_ports = tcp_ports(policy).filter(|_| abi >= landlock::NET_ABI);
            let scope = abi >= landlock::SCOPE_ABI;
            let expand = |v: &[String]| -> Vec<PathBuf> {
                v.iter().map(|p| expand_home(p, &id.home)).collect()
            };
            let mut exec = expand(&policy.filesystem.exec);
            // A listed program runs: its loader and libraries come with it.
            exec.extend(elf_deps::for_exec_set(&exec, &program));
            Some(landlock::LandlockSpec {
                abi,
                read: expand(&policy.filesystem.read),
                write: expand(&policy.filesystem.write),
                exec,
                tcp_ports,
                scope,
                // Landlock cannot make exceptions to its abstract socket scope: with abstract
                // names listed, the kernel guard's unix programs are what deny the others (the
                // launch refuses where they cannot run).
                abstract_unscoped: policy.network.unix.iter().any(|u| u.starts_with('@')),
            })
        };
        let features = promises::Features {
            landlock_abi: abi.max(0),
            seccomp: seccomp::available(),
            namespaces: !unprivileged,
            // The eBPF guard loads once the cgroup exists; where it cannot, it refuses then,
            // naming what failed (exec/guard.rs).
            cgroup_sock_addr: !unprivileged,
            cgroup_unix: !unprivileged && crate::kernel::unix::probe().is_ok(),
            tracing: !unprivileged,
        };
        let choices = promises::choose(&features, &needs(policy, &id.home));
        let unkept: Vec<String> = choices
            .iter()
            // Their own messages below (and above, for landlock) say more.
            .filter(|c| !matches!(c.promise, Promise::Filesystem | Promise::Syscalls))
            // Without root these are in the list of what an unprivileged exec cannot do.
            .filter(|c| {
                !unprivileged
                    || !matches!(
                        c.promise,
                        Promise::Egress | Promise::UnixPathname | Promise::Events
                    )
            })
            .filter_map(promises::unkept_message)
            .collect();
        if !unkept.is_empty() {
            missing(unkept.join("\n"), &mut warnings)?;
        }
        for c in &choices {
            if let promises::Holder::Kept { mechanism } = c.holder
                && FALLBACKS.contains(&mechanism)
            {
                tracing::info!(
                    "promise {} kept by {} on this kernel",
                    c.promise.name(),
                    mechanism.name()
                );
            }
        }
        let seccomp_truncate = promises::uses(&choices, Mechanism::SeccompTruncate);
        let seccomp = if seccomp::available() {
            seccomp::build(&policy.syscalls.deny, seccomp_truncate)
                .map_err(|e| Config(e.to_string()))?
        } else {
            missing(
                "seccomp filtering is not available (kernel without CONFIG_SECCOMP_FILTER): the \
                 syscall deny list cannot be enforced"
                    .into(),
                &mut warnings,
            )?;
            Vec::new()
        };
        let mut landlock = landlock;
        let sockets: Vec<PathBuf> = policy.network.unix.iter().map(PathBuf::from).collect();
        if let Some(l) = landlock.as_mut() {
            // Without root there is no mount namespace, hence no private /dev.
            devices::grant(l, !unprivileged, &sockets);
        }
        if let (Some(l), Some(dir)) = (landlock.as_mut(), &pycache) {
            // Read-only: the server uses the cache and cannot poison it.
            l.read.push(dir.clone());
        }
        promises_kept = choices;
        Some(Enforce {
            landlock,
            seccomp,
            net_namespace: promises::uses(&promises_kept, Mechanism::NetNamespace),
            rlimits: Vec::new(),
            unix_sockets: policy
                .network
                .unix
                .iter()
                .filter(|u| u.starts_with('/'))
                .map(PathBuf::from)
                .collect(),
        })
    };

    if unprivileged {
        let spec = JailSpec {
            server: req.server.to_string(),
            program,
            argv,
            env,
            cgroup_dirs: Vec::new(),
            identity: id,
            enforce,
            program_digest,
            umask: req.caller.and_then(|c| c.umask),
            unprivileged: true,
        };
        return Ok(Prepared {
            spec,
            cgroup: None,
            warnings,
            secrets,
            lease,
            promises: promises_kept,
        });
    }
    let mounts = cgroup::Mounts::discover()
        .map_err(|e| Unenforceable(format!("cannot read /proc/self/mountinfo: {e}")))?;
    for stale in cgroup::reap_stale(&mounts) {
        tracing::info!("removed stale cgroup {}", stale.display());
    }
    let mut cg = cgroup::Cgroup::create(&mounts, &cgroup::leaf_name(req.server, &req.policy.name))
        .map_err(|e| {
            Unenforceable(format!(
                "cannot create the server's cgroup: {e}\nmcp-guard needs a writable cgroup v2 \
             hierarchy (found from /proc/self/mountinfo)"
            ))
        })?;
    let result = apply_limits(
        &mut cg,
        &mounts,
        policy,
        enforce,
        &mut warnings,
        &mut missing,
    );
    match result {
        Ok(enforce) => {
            usage::track(&mut cg, &mounts);
            let spec = JailSpec {
                server: req.server.to_string(),
                program,
                argv,
                env,
                cgroup_dirs: cg.dirs(),
                identity: id,
                enforce,
                program_digest,
                umask: req.caller.and_then(|c| c.umask),
                unprivileged: false,
            };
            Ok(Prepared {
                spec,
                cgroup: Some(cg),
                warnings,
                secrets,
                lease,
                promises: promises_kept,
            })
        }
        Err(e) => {
            if let Err(rm) = cg.kill_and_remove() {
                tracing::warn!("{rm}");
            }
            Err(e)
        }
    }
}

/// What an unprivileged exec cannot enforce of `policy`, for people.
fn unprivileged_gaps(policy: &Policy) -> Vec<String> {
    let mut gaps = vec![
        "eBPF egress filtering by address: [network] allow is enforced by port only \
         (landlock), any host on an allowed port is reachable"
            .to_string(),
        "the kernel event stream: no exec/open/connect history, no detection rules over it, \
         no in-kernel kill on [detect] sensitive (landlock still denies what [filesystem] does \
         not grant)"
            .to_string(),
        "the session cgroup: the server's process tree is killed by process group only (a \
         server that starts its own session escapes), and quarantine cannot find it"
            .to_string(),
        "mount, PID, IPC and UTS namespaces: no private /tmp or /proc, the server sees the \
         host's processes"
            .to_string(),
    ];
    let l = &policy.limits;
    if l.memory.is_some() || l.pids.is_some() || l.cpu.is_some() {
        gaps.push("[limits] (memory, pids, cpu need a cgroup)".to_string());
    }
    gaps
}

/// Python's variable for a bytecode cache outside the source tree.
const PYCACHE: &str = "PYTHONPYCACHEPREFIX";

/// Verifies the policy's `[pin]` table before anything runs; a mismatch refuses the launch
/// (exit 77) naming each changed file, or under observe is only said. Returns the executable's
/// pinned digest for the jail to check again on the fd it execs.
fn check_pins(
    policy: &Policy,
    program: &std::path::Path,
    req: &LaunchRequest<'_>,
    warnings: &mut Vec<String>,
) -> Result<Option<String>, LaunchError> {
    let pins = &policy.pin;
    if pins.is_empty() && pins.signature.is_none() {
        return Ok(None);
    }
    let observe = req.observe;
    let Err(problems) = crate::supply::verify(pins, program, req.state_dir) else {
        return Ok(pins.executable.clone());
    };
    let list: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
    let msg = format!(
        "supply-chain pins of policy {} do not verify:\n{}",
        policy.name,
        list.join("\n")
    );
    if observe {
        warnings.push(format!("NOT ENFORCED (observe): {msg}"));
        Ok(None)
    } else {
        Err(LaunchError::Unenforceable(format!(
            "{msg}\nrefusing to launch (nothing ran); if the change is intended, re-pin with \
             `mcp-guard policy pin -- COMMAND` and update [pin]"
        )))
    }
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

/// With `[pin]`, checks that the pinned program runs the pinned script and nothing else
/// ([`crate::supply::argv`]): refused (exit 77) naming what, or under observe only said.
/// `Some(variables to add)` when it passed; `None` without pins or when it failed under
/// observe.
fn check_pinned_argv(
    policy: &Policy,
    program: &std::path::Path,
    argv: &[String],
    env: &[(String, String)],
    req: &LaunchRequest<'_>,
    warnings: &mut Vec<String>,
) -> Result<Option<Vec<(String, String)>>, LaunchError> {
    use crate::supply::argv;
    if policy.pin.is_empty() {
        return Ok(None);
    }
    match argv::check(&policy.pin, &argv::Launch { program, argv, env }) {
        Ok(checked) => Ok(Some(checked.env)),
        Err(refused) => {
            let msg = format!(
                "policy {} pins what runs, and this launch would run something else:\n{}",
                policy.name,
                refused
                    .iter()
                    .map(|r| format!("  {r}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            if req.observe {
                warnings.push(format!("NOT ENFORCED (observe): {msg}"));
                Ok(None)
            } else {
                Err(LaunchError::Unenforceable(format!(
                    "{msg}\nrefusing to launch (nothing ran): run the pinned entry script \
                     itself, without inline code or preloads"
                )))
            }
        }
    }
}

type Missing<'a> = dyn FnMut(String, &mut Vec<String>) -> Result<(), LaunchError> + 'a;

/// Writes each limit through v2, else v1, else an rlimit (said in the log), else refuses.
fn apply_limits(
    cg: &mut cgroup::Cgroup,
    mounts: &cgroup::Mounts,
    policy: &Policy,
    mut enforce: Option<Enforce>,
    warnings: &mut Vec<String>,
    missing: &mut Missing<'_>,
) -> Result<Option<Enforce>, LaunchError> {
    use cgroup::{Applied, Controller};
    let Some(enf) = enforce.as_mut() else {
        return Ok(None);
    };
    let l = &policy.limits;
    let limits = cgroup::Limits {
        memory: l.memory,
        pids: l.pids,
        cpu: l.cpu,
    };
    for (c, wanted) in [
        (Controller::Memory, l.memory.is_some()),
        (Controller::Pids, l.pids.is_some()),
        (Controller::Cpu, l.cpu.is_some()),
    ] {
        if !wanted {
            continue;
        }
        let applied = cg
            .apply(mounts, c, &limits)
            .map_err(|e| format!("cannot apply the {} limit: {e}", c.name()));
        match applied {
            Ok(Applied::V2) => tracing::debug!("{} limit: cgroup v2", c.name()),
            Ok(Applied::V1(dir)) => {
                tracing::debug!("{} limit: cgroup v1 {}", c.name(), dir.display());
            }
            Ok(Applied::Unavailable) => match (c, l.memory, l.pids) {
                (Controller::Memory, Some(m), _) => {
                    warnings.push(format!(
                        "no memory cgroup controller (v2 or v1): memory limited by RLIMIT_AS = \
                         {m} bytes per process instead (a last resort: address space, not RSS)"
                    ));
                    enf.rlimits.push((libc::RLIMIT_AS, m));
                }
                (Controller::Pids, _, Some(p)) => {
                    warnings.push(format!(
                        "no pids cgroup controller (v2 or v1): tasks limited by RLIMIT_NPROC = {p} \
                         instead (a last resort: it counts every process of the server's user)"
                    ));
                    enf.rlimits.push((libc::RLIMIT_NPROC, p));
                }
                _ => missing(
                    format!(
                        "no {} cgroup controller (v2 or v1) and no rlimit equivalent: the limit \
                         cannot be applied",
                        c.name()
                    ),
                    warnings,
                )?,
            },
            Err(e) => missing(e, warnings)?,
        }
    }
    Ok(enforce)
}

/// The TCP ports the policy's network allow list names; `None` when an entry covers all ports.
fn tcp_ports(policy: &Policy) -> Option<Vec<u16>> {
    let mut ports: Vec<u16> = tcp_port_ranges(policy)?
        .into_iter()
        .flat_map(|(lo, hi)| lo..=hi)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    Some(ports)
}

/// [`tcp_ports`] as inclusive ranges, one per allow entry: the ports landlock's TCP rules and
/// the kernel guard's bind programs allow (the same ports, so both keep the same promise).
pub fn tcp_port_ranges(policy: &Policy) -> Option<Vec<(u16, u16)>> {
    policy
        .network
        .allow
        .iter()
        .map(|a| (!(a.port_lo <= 1 && a.port_hi == u16::MAX)).then_some((a.port_lo, a.port_hi)))
        .collect()
}
