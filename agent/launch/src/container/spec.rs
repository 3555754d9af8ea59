//! What the container is made of: the checks before it, its seccomp profile, limits, mounts,
//! environment and labels, as an engine create request.

use std::{
    collections::HashMap,
    io,
    path::{Path, PathBuf},
};

use bollard::{
    Docker,
    models::{ContainerCreateBody, HostConfig, ResourcesUlimits},
};
use serde_json::json;

use super::{
    LABEL, LABEL_EXEC_PID, connect, engine_address, reap_stale, reap_stale_cgroups, resolve_image,
};
use crate::{LaunchError, LaunchRequest, cgroup, identity, seccomp};
use mcp_guard_policy::expand_home;

/// The jail's seccomp deny list plus the policy's, as an engine (OCI/Docker) seccomp profile.
pub fn seccomp_profile(extra_deny: &[String]) -> serde_json::Value {
    let mut names: Vec<String> = seccomp::BUILTIN_DENY
        .iter()
        .map(std::string::ToString::to_string)
        .chain(extra_deny.iter().cloned())
        .collect();
    names.sort();
    names.dedup();
    let mut rules =
        vec![json!({"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM})];
    // As in the jail: clone creating namespaces is refused by argument; clone3 hides its flags
    // from seccomp, so it fails with ENOSYS and libc falls back to clone.
    for flag in seccomp::clone_ns_flags() {
        rules.push(json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": libc::EPERM,
            "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
        }));
    }
    rules.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS}));
    // The terminal ioctls, on the request's low 32 bits as the kernel reads them: MASKED_EQ
    // takes the mask as `value` and the datum as `valueTwo`.
    for request in seccomp::DENIED_IOCTLS {
        rules.push(json!({
            "names": ["ioctl"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": libc::EPERM,
            "args": [{
                "index": 1,
                "value": u64::from(u32::MAX),
                "valueTwo": request,
                "op": "SCMP_CMP_MASKED_EQ",
            }],
        }));
    }
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": rules,
    })
}

/// Where content-addressed seccomp profiles are written for engines that read a path.
pub(super) const PROFILE_DIR: &str = "/run/mcp-guard/seccomp";

/// Writes `profile` to a root-only file named by its hash; returns the path. Podman's compatible
/// API reads `seccomp=` as a path where Docker takes the JSON inline.
pub(super) fn profile_file(json: &str) -> io::Result<PathBuf> {
    use sha2::Digest;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let hash = hex::encode(sha2::Sha256::digest(json.as_bytes()));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(PROFILE_DIR)?;
    let path = Path::new(PROFILE_DIR).join(format!("{hash}.json"));
    if !path.exists() {
        use std::io::Write;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(json.as_bytes())?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(path)
}

/// Caps of the explicit ulimits: the engine (not mcp-guard) sets them and cannot go above its
/// own limits without `CAP_SYS_RESOURCE`, which are unknown here (podman's service had 32768
/// processes and 20000 files on this host); the pids limit is the real process bound.
const MAX_NOFILE: u64 = 16384;
const MAX_NPROC: u64 = 4096;

/// This process's soft limit of `resource`, capped for the container's explicit ulimit.
fn host_ulimit(resource: libc::__rlimit_resource_t, cap: u64) -> i64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    let ok = unsafe { libc::getrlimit(resource, &raw mut r) } == 0;
    let v = if ok { r.rlim_cur.min(cap) } else { 1024 };
    i64::try_from(v).unwrap_or(1024)
}

/// A prepared container launch: everything checked, the cgroup made, nothing running.
#[derive(Debug)]
pub struct ContainerPrepared {
    /// The engine connection.
    pub docker: Docker,
    /// The create request.
    pub body: ContainerCreateBody,
    /// The session's cgroup S (the container's `CgroupParent`).
    pub cgroup: cgroup::Cgroup,
    /// The server user's home (for `~/` in the policy).
    pub home: PathBuf,
    /// The injected secrets (for redaction).
    pub secrets: Vec<(String, String)>,
    /// Warnings to print.
    pub warnings: Vec<String>,
    /// The per-session uid's lease, when the server runs as one: keep it until the session ends.
    pub lease: Option<crate::server_user::Lease>,
}

/// Checks the host and the engine, verifies the image, makes the session cgroup and builds the
/// create request. On error nothing is left behind.
pub async fn prepare(
    req: &LaunchRequest<'_>,
    session: &str,
) -> Result<ContainerPrepared, LaunchError> {
    use LaunchError::{Config, Unenforceable};
    let policy = req.policy;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Unenforceable(
            "mcp-guard exec needs root (it creates the session's cgroup and guards it with eBPF)"
                .into(),
        ));
    }
    let Some(image) = &policy.isolation.image else {
        return Err(Config("[isolation] image is missing".into()));
    };
    let identity::Resolved {
        identity: id,
        lease,
    } = identity::resolve(policy.user.as_deref(), req.caller).map_err(Config)?;
    let passed: Vec<(String, String)> = identity::source_vars(req.caller)
        .into_iter()
        .filter(|(k, _)| policy.env.pass.iter().any(|p| p == k))
        .collect();
    // The secrets go only to the command the policy fixes: the image's own or its `command`.
    // The container's engine runs no jail of mcp-guard's: its capabilities are always dropped.
    let mut warnings: Vec<String> = identity::root_warning(&id, false).into_iter().collect();
    let secrets = match crate::secret_gate::container(policy, req.command, &passed) {
        Ok(()) => crate::read_secrets(policy)?,
        Err(why) => {
            if !policy.secrets.is_empty() {
                warnings.push(crate::secret_gate::withheld(policy, &why));
            }
            Vec::new()
        }
    };
    let command = if req.command.is_empty() {
        policy.command.clone()
    } else {
        Some(req.command.to_vec())
    };
    let address = engine_address(policy.isolation.engine.as_deref());
    let docker = connect(&address).await.map_err(Unenforceable)?;
    for stale in reap_stale(&docker).await {
        tracing::info!("removed stale container {stale}");
    }
    let image_id = resolve_image(&docker, image).await?;

    let mounts = cgroup::Mounts::discover()
        .map_err(|e| Unenforceable(format!("cannot read /proc/self/mountinfo: {e}")))?;
    for stale in reap_stale_cgroups(&mounts) {
        tracing::info!("removed stale container cgroup {}", stale.display());
    }
    for stale in cgroup::reap_stale(&mounts) {
        tracing::info!("removed stale cgroup {}", stale.display());
    }
    let v2root = mounts.v2.clone().ok_or_else(|| {
        Unenforceable("no cgroup v2 hierarchy is mounted: the eBPF guard needs one".into())
    })?;
    let cg = cgroup::Cgroup::create(&mounts, &cgroup::leaf_name(req.server, &req.policy.name))
        .map_err(|e| Unenforceable(format!("cannot create the server's cgroup: {e}")))?;
    let Ok(rel) = cg.v2_dir().strip_prefix(&v2root) else {
        let _ = cg.kill_and_remove();
        return Err(Unenforceable(
            "the session cgroup is outside the v2 mount".into(),
        ));
    };
    let parent = format!("/{}", rel.display());

    let mut env: Vec<String> = passed.iter().map(|(k, v)| format!("{k}={v}")).collect();
    // `[env] set`, `~/` below the same home the binds below use.
    env.extend(
        policy
            .env
            .set
            .iter()
            .map(|(k, v)| match v.strip_prefix("~/") {
                Some(_) => format!("{k}={}", expand_home(v, &id.home).display()),
                None => format!("{k}={v}"),
            }),
    );
    env.extend(secrets.iter().map(|(k, v)| format!("{k}={v}")));

    let mut binds = Vec::new();
    let fs = &policy.filesystem;
    let mut seen = std::collections::BTreeSet::new();
    for (list, mode) in [(&fs.write, "rw"), (&fs.read, "ro"), (&fs.exec, "ro")] {
        for p in list {
            let path = expand_home(p, &id.home);
            // Globs cannot be bind-mounted; only existing paths are.
            if p.contains('*') || !path.exists() || !seen.insert(path.clone()) {
                continue;
            }
            let s = path.display().to_string();
            binds.push(format!("{s}:{s}:{mode}"));
        }
    }

    let l = &policy.limits;
    let no_network = policy.network.allow.is_empty();
    let host_config = HostConfig {
        cgroup_parent: Some(parent),
        readonly_rootfs: Some(true),
        tmpfs: Some(HashMap::from([(
            "/tmp".to_string(),
            "rw,nosuid,nodev,size=64m".to_string(),
        )])),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec![
            "no-new-privileges".into(),
            format!("seccomp={}", seccomp_profile(&policy.syscalls.deny)),
        ]),
        memory: l.memory.and_then(|m| i64::try_from(m).ok()),
        memory_swap: l.memory.and_then(|m| i64::try_from(m).ok()),
        nano_cpus: l.cpu.map(nano_cpus),
        pids_limit: l.pids.and_then(|p| i64::try_from(p).ok()),
        ulimits: Some(vec![
            ResourcesUlimits {
                name: Some("nofile".into()),
                soft: Some(host_ulimit(libc::RLIMIT_NOFILE, MAX_NOFILE)),
                hard: Some(host_ulimit(libc::RLIMIT_NOFILE, MAX_NOFILE)),
            },
            ResourcesUlimits {
                name: Some("nproc".into()),
                soft: Some(host_ulimit(libc::RLIMIT_NPROC, MAX_NPROC)),
                hard: Some(host_ulimit(libc::RLIMIT_NPROC, MAX_NPROC)),
            },
        ]),
        binds: Some(binds),
        group_add: Some(
            id.groups
                .iter()
                .filter(|&&g| g != id.gid)
                .map(u32::to_string)
                .collect(),
        ),
        network_mode: Some(if no_network { "none" } else { "bridge" }.into()),
        ..Default::default()
    };
    let body = ContainerCreateBody {
        image: Some(image_id),
        cmd: command,
        env: Some(env),
        // Numeric, so the image's /etc/passwd cannot map a name elsewhere, and always set: an
        // image's default user is often root, and the `~/` bind mounts are the server user's.
        user: Some(format!("{}:{}", id.uid, id.gid)),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        stdin_once: Some(true),
        tty: Some(false),
        network_disabled: Some(no_network),
        labels: Some(HashMap::from([
            (LABEL.to_string(), session.to_string()),
            (LABEL_EXEC_PID.to_string(), std::process::id().to_string()),
        ])),
        host_config: Some(host_config),
        ..Default::default()
    };
    Ok(ContainerPrepared {
        docker,
        body,
        cgroup: cg,
        home: id.home,
        secrets,
        warnings,
        lease,
    })
}

/// CPU cores → Docker's `NanoCpus`.
#[expect(
    clippy::cast_possible_truncation,
    reason = "the policy holds `cpu` to MIN_CPU..=MAX_CPU cores, and `as` saturates besides"
)]
fn nano_cpus(cores: f64) -> i64 {
    (cores * 1e9) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seccomp_profile_carries_the_jail_deny_list() {
        let p = seccomp_profile(&["chown".to_string()]);
        let names = p["syscalls"][0]["names"].as_array().expect("names");
        for n in ["ptrace", "bpf", "mount", "chown"] {
            assert!(names.iter().any(|x| x == n), "{n} missing from {p}");
        }
        assert_eq!(p["defaultAction"], "SCMP_ACT_ALLOW");
        assert!(p["syscalls"].as_array().expect("rules").len() > 2);
        let ioctl: Vec<&serde_json::Value> = p["syscalls"]
            .as_array()
            .expect("rules")
            .iter()
            .filter(|r| r["names"] == json!(["ioctl"]))
            .collect();
        for request in [libc::TIOCSTI, libc::TIOCLINUX] {
            assert!(
                ioctl.iter().any(|r| r["args"][0]["valueTwo"] == request
                    && r["args"][0]["value"] == 0xffff_ffffu64
                    && r["args"][0]["op"] == "SCMP_CMP_MASKED_EQ"),
                "{request:#x} is not denied on its low 32 bits: {p}"
            );
        }
    }
}
