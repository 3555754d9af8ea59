//! [`prepare`]: what this host can enforce of a policy (fail closed), the server's user,
//! environment, secrets and program, the seccomp filters and the cgroup with its limits, as a
//! [`JailSpec`] of plain data for the stage-2 helper.

use std::path::PathBuf;

use super::{
    Enforce, JailSpec, LaunchError, LaunchRequest, Prepared, cgroup, devices, elf_deps, identity,
    landlock,
    limits::apply_limits,
    pin_check::{check_pinned_argv, check_pins},
    read_secrets, seccomp, secret_gate,
    tcp_ports::tcp_ports,
    usage,
};
use crate::promises::{self, Mechanism, Promise};
use mcp_guard_policy::{Policy, expand_home};

/// Mechanisms used only where a stronger one is missing (logged when chosen).
const FALLBACKS: &[Mechanism] = &[
    Mechanism::SeccompTruncate,
    Mechanism::SeccompUnix,
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
        unix_sockets: !net.unix.is_empty(),
        device_files: fs
            .read
            .iter()
            .chain(&fs.exec)
            .any(|p| promises::reaches_devices(&expand_home(p, home))),
    }
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
        None if !secrets.is_empty() => mcp_guard_supply::argv::hardening(&program, &argv, &env),
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
            Some(state) => mcp_guard_supply::python_cache(&policy.pin, &program, state)
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
            // The kernel guard loads once the cgroup exists; where it cannot, it refuses then,
            // naming what failed (exec/guard.rs).
            cgroup_sock_addr: !unprivileged,
            cgroup_unix: !unprivileged && mcp_guard_kernel::unix::probe().is_ok(),
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
        let fallbacks = seccomp::Fallbacks {
            truncate: promises::uses(&choices, Mechanism::SeccompTruncate),
            no_unix: promises::uses(&choices, Mechanism::SeccompUnix),
        };
        let seccomp = if seccomp::available() {
            seccomp::build(&policy.syscalls.deny, fallbacks).map_err(|e| Config(e.to_string()))?
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
