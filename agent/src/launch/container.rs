//! The container backend: a server in a container made through the Docker Engine API (Docker, or
//! podman's compatible service), with the jail's guarantees.
//!
//! The container runs as the server's identity ([`identity::resolve`]: the caller, `SUDO_UID`'s
//! user, the policy's `user` or the unprivileged server user), as a numeric `uid:gid` with its
//! supplementary groups, never as the image's default user; the image's files the server needs
//! must be readable by that uid.
//!
//! The container: read-only root filesystem, tmpfs `/tmp`, every capability dropped,
//! no-new-privileges, the jail's seccomp deny list as the engine's seccomp profile
//! ([`seccomp_profile`]), memory/CPU/pids limits, explicit `nofile`/`nproc` ulimits at or below
//! this process's (podman cannot raise them without `CAP_SYS_RESOURCE`), only the policy's
//! `[filesystem]` paths as bind mounts (read-only unless listed in `write`), no network at all
//! unless the policy allows some egress (then the engine's default bridge, never the host's
//! network), and an environment of only the policy's secrets and `[env] pass`. The image is
//! checked against the policy's digest and then created by its id, so a tag moved after the
//! check cannot swap the content.
//!
//! Kernel enforcement: mcp-guard makes the session's cgroup S (`<v2>/mcp-guard/<leaf>`) and
//! gives the container `CgroupParent` = S, so the runtime (runc) makes the container's cgroup
//! below S. Before the container starts, mcp-guard pre-creates the leaf directories the engines
//! name (`S/libpod-<id>` for podman, `S/<id>` for Docker; runc joins an existing directory) and
//! the kernel guard registers them as members of S ([`crate::kernel::loader::ServerHandle::
//! add_member`]): the container's first instruction already runs in a cgroup the syscall
//! tracepoints see, under S's rules, with events carrying S's id. The egress programs are attached
//! to S and so run for every descendant; one not registered (an engine naming its leaf otherwise)
//! is judged by its nearest guarded ancestor in the kernel, so egress never runs unjudged. After
//! start, the container's real cgroup (from `/proc/PID/cgroup`) must be one of the registered
//! leaves, else the session is ended (fail closed: its events would not be seen).
//!
//! Cleanup: the container is removed (forced) when the session ends however exec ends it. If
//! exec itself is `SIGKILLed` nothing runs, so every container carries the labels [`LABEL`] and
//! [`LABEL_EXEC_PID`], and the next exec removes the containers whose exec is gone
//! ([`reap_stale`]) before the stale cgroups are reaped; the container's stdin (attached, stdin
//! once) also closes with exec's death, which ends a well-behaved server at once.

use std::{
    collections::HashMap,
    io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use bollard::{
    Docker,
    models::{ContainerCreateBody, HostConfig, ResourcesUlimits},
    query_parameters::{
        AttachContainerOptions, CreateContainerOptions, ListContainersOptions,
        RemoveContainerOptions, WaitContainerOptions,
    },
};
use futures_util::StreamExt;
use serde_json::json;

use super::{LaunchError, LaunchRequest, cgroup, identity, seccomp};
use mcp_guard_policy::{ImageRef, Policy, expand_home};

/// Label every mcp-guard container carries.
pub const LABEL: &str = "io.mcp-guard.session";
/// Label with the pid of the exec that owns the container (stale when that pid is gone).
pub const LABEL_EXEC_PID: &str = "io.mcp-guard.exec-pid";

/// Engine API timeout for one request (seconds).
const API_TIMEOUT: u64 = 120;

/// The engine address: the policy's `engine`, else `DOCKER_HOST`, else the first default socket
/// that exists (Docker's, then podman's), else Docker's.
pub fn engine_address(policy_engine: Option<&str>) -> String {
    if let Some(e) = policy_engine {
        return e.to_string();
    }
    if let Ok(h) = std::env::var("DOCKER_HOST")
        && !h.is_empty()
    {
        return h;
    }
    for sock in ["/var/run/docker.sock", "/run/podman/podman.sock"] {
        if Path::new(sock).exists() {
            return format!("unix://{sock}");
        }
    }
    "unix:///var/run/docker.sock".into()
}

/// What the engine says about itself (`doctor`).
#[derive(Clone, Debug)]
pub struct EngineInfo {
    /// The address used.
    pub address: String,
    /// Product and version, e.g. "Podman Engine 4.3.1".
    pub version: String,
    /// `cgroupfs` or `systemd`.
    pub cgroup_driver: String,
    /// The default OCI runtime.
    pub runtime: String,
}

/// Connects to the engine at `address` and checks that it answers.
pub async fn connect(address: &str) -> Result<Docker, String> {
    let unreachable = |e: &dyn std::fmt::Display| {
        format!(
            "the container engine at {address} is not reachable: {e}\nstart it (Docker: \
             `systemctl start docker`; podman: `podman system service --time=0 \
             unix:///run/podman/podman.sock`), or point DOCKER_HOST or [isolation] engine at it"
        )
    };
    let docker = if let Some(path) = address.strip_prefix("unix://") {
        Docker::connect_with_unix(path, API_TIMEOUT, bollard::API_DEFAULT_VERSION)
    } else {
        return Err(unreachable(&"only unix:// engine sockets are supported"));
    }
    .map_err(|e| unreachable(&e))?;
    docker.ping().await.map_err(|e| unreachable(&e))?;
    Ok(docker)
}

/// The engine's version, cgroup driver and runtime.
pub async fn engine_info(address: &str) -> Result<EngineInfo, String> {
    let docker = connect(address).await?;
    let version = docker.version().await.map_err(|e| e.to_string())?;
    let info = docker.info().await.map_err(|e| e.to_string())?;
    let product = version
        .components
        .as_ref()
        .and_then(|c| c.first())
        .map_or_else(|| "Docker Engine".into(), |c| c.name.clone());
    Ok(EngineInfo {
        address: address.to_string(),
        version: format!("{product} {}", version.version.unwrap_or_default()),
        cgroup_driver: info
            .cgroup_driver
            .map(|d| d.to_string())
            .unwrap_or_default(),
        runtime: info.default_runtime.unwrap_or_default(),
    })
}

/// Finds the local image the policy's reference names ([`super::image_lookup`]) and checks it;
/// returns the image id to create from. A digest must equal the image id or one of its repo
/// digests.
pub async fn resolve_image(docker: &Docker, image: &ImageRef) -> Result<String, LaunchError> {
    let mut missing = Vec::new();
    let mut found = None;
    for lookup in super::image_lookup::candidates(image) {
        match docker.inspect_image(&lookup).await {
            Ok(f) => {
                found = Some((lookup, f));
                break;
            }
            Err(e) => missing.push(format!("{lookup}: {e}")),
        }
    }
    let Some((lookup, found)) = found else {
        return Err(LaunchError::Config(format!(
            "image {image}: not found in the engine ({}); mcp-guard does not pull: load or pull \
             it first",
            missing.join("; ")
        )));
    };
    let id = found.id.clone().unwrap_or_default();
    let Some(want) = &image.digest else {
        return Ok(id);
    };
    let repo_digests: Vec<String> = found
        .repo_digests
        .unwrap_or_default()
        .iter()
        .filter_map(|d| d.rsplit_once('@').map(|(_, d)| d.to_string()))
        .collect();
    let id_digest = if id.starts_with("sha256:") {
        id.clone()
    } else {
        format!("sha256:{id}")
    };
    if *want == id_digest || repo_digests.contains(want) {
        Ok(id)
    } else {
        Err(LaunchError::Unenforceable(format!(
            "image {image}: the local image {lookup} does not match the pinned digest: it is id \
             {id_digest}, repo digests [{}]; refusing to launch (the image changed, or the pin \
             is wrong)",
            repo_digests.join(", ")
        )))
    }
}

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
const PROFILE_DIR: &str = "/run/mcp-guard/seccomp";

/// Writes `profile` to a root-only file named by its hash; returns the path. Podman's compatible
/// API reads `seccomp=` as a path where Docker takes the JSON inline.
fn profile_file(json: &str) -> io::Result<PathBuf> {
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
    pub lease: Option<super::server_user::Lease>,
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
    let secrets = match super::secret_gate::container(policy, req.command, &passed) {
        Ok(()) => super::read_secrets(policy)?,
        Err(why) => {
            if !policy.secrets.is_empty() {
                warnings.push(super::secret_gate::withheld(policy, &why));
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
    let parent = if let Ok(rel) = cg.v2_dir().strip_prefix(&v2root) {
        format!("/{}", rel.display())
    } else {
        let _ = cg.kill_and_remove();
        return Err(Unenforceable(
            "the session cgroup is outside the v2 mount".into(),
        ));
    };

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

/// Removes mcp-guard containers whose exec process is gone; returns their ids.
pub async fn reap_stale(docker: &Docker) -> Vec<String> {
    let mut removed = Vec::new();
    let opts = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![LABEL.to_string()],
        )])),
        ..Default::default()
    };
    // podman refuses the whole list while a container is mid-teardown: retry for a moment.
    let mut attempt = 0;
    let list = loop {
        match docker.list_containers(Some(opts.clone())).await {
            Ok(list) => break list,
            Err(e) if attempt >= 20 => {
                tracing::warn!("listing stale mcp-guard containers: {e}");
                return removed;
            }
            Err(e) => {
                tracing::debug!("listing containers (attempt {attempt}): {e}");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    for c in list {
        let pid: Option<i32> = c
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_EXEC_PID))
            .and_then(|p| p.parse().ok());
        tracing::debug!(
            "mcp-guard container {:?} of exec {pid:?}: {:?}",
            c.id,
            c.state
        );
        if pid.is_some_and(alive) {
            continue;
        }
        let Some(id) = c.id else { continue };
        match remove(docker, &id).await {
            Ok(()) => removed.push(id),
            Err(e) => tracing::warn!("stale container: {e}"),
        }
    }
    removed
}

/// Removes the session cgroups (with the container leaves below them, in v2 and v1) of execs
/// that are gone and whose cgroups are empty: what a `SIGKILLed` exec leaves. Run after
/// [`reap_stale`] removed their containers.
pub fn reap_stale_cgroups(mounts: &cgroup::Mounts) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Some(v2) = &mounts.v2 else {
        return removed;
    };
    let Ok(entries) = std::fs::read_dir(v2.join(cgroup::PARENT)) else {
        return removed;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = cgroup::exec_pid(&name) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        // Only trees with container leaves (the jail's own reaper handles flat leaves), and
        // only when nothing runs there any more.
        let has_children =
            std::fs::read_dir(&path).is_ok_and(|d| d.flatten().any(|e| e.path().is_dir()));
        let populated = std::fs::read_to_string(path.join("cgroup.events"))
            .map_or(true, |t| t.lines().any(|l| l == "populated 1"));
        if has_children && !populated && remove_tree(mounts, &path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// Whether `pid` runs (a zombie does not: it is a dead exec its parent has not reaped yet).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the parenthesised command name, which may contain anything.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Force-removes a container (killing it). Retried for a moment: the engine may be cleaning the
/// container up itself right then (it just exited) and refuse in the meantime.
pub async fn remove(docker: &Docker, id: &str) -> Result<(), String> {
    let opts = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    let mut attempt = 0;
    loop {
        match docker.remove_container(id, Some(opts.clone())).await {
            // Gone already counts as removed.
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(()),
            Err(e) if attempt >= 20 => return Err(format!("removing container {id}: {e}")),
            Err(e) => {
                tracing::debug!("removing container {id} (attempt {attempt}): {e}");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Creates the container; returns its id. The seccomp profile goes inline (Docker); when the
/// engine reads it as a file name instead (podman), it is written to a file and the create
/// retried with its path.
pub async fn create(
    docker: &Docker,
    mut body: ContainerCreateBody,
    name: &str,
) -> Result<String, String> {
    let opts = CreateContainerOptions {
        name: Some(name.to_string()),
        ..Default::default()
    };
    let first = docker
        .create_container(Some(opts.clone()), body.clone())
        .await;
    let err = match first {
        Ok(r) => return Ok(r.id),
        Err(e) => e.to_string(),
    };
    if !err.contains("seccomp profile") {
        return Err(format!("creating the container: {err}"));
    }
    let Some(opts_list) = body
        .host_config
        .as_mut()
        .and_then(|h| h.security_opt.as_mut())
    else {
        return Err(format!("creating the container: {err}"));
    };
    for opt in opts_list.iter_mut() {
        if let Some(json) = opt.strip_prefix("seccomp=") {
            let path = profile_file(json)
                .map_err(|e| format!("writing the seccomp profile under {PROFILE_DIR}: {e}"))?;
            *opt = format!("seccomp={}", path.display());
        }
    }
    docker
        .create_container(Some(opts), body)
        .await
        .map(|r| r.id)
        .map_err(|e| format!("creating the container: {e}"))
}

/// The leaf cgroups the engines make for container `id` below `parent` (podman, Docker).
pub fn leaf_candidates(parent: &Path, id: &str) -> Vec<PathBuf> {
    vec![parent.join(format!("libpod-{id}")), parent.join(id)]
}

/// Attaches to the container's stdio: (stdin writer, stdout reader, stderr reader, closed when
/// the output ends); exec carries stderr through its redactor.
/// Two attach connections: stdout/stderr on one, stdin alone on the other, so that closing the
/// stdin writer closes its whole connection and the engine closes the container's stdin
/// (`StdinOnce`); podman does not pass a half-close of a shared connection on as EOF.
pub async fn attach(
    docker: &Docker,
    id: &str,
) -> Result<
    (
        std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
        tokio::io::DuplexStream,
        tokio::io::DuplexStream,
        tokio::sync::oneshot::Receiver<()>,
    ),
    String,
> {
    let out_opts = AttachContainerOptions {
        stream: true,
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let out = docker
        .attach_container(id, Some(out_opts))
        .await
        .map_err(|e| format!("attaching to the container's output: {e}"))?;
    let in_opts = AttachContainerOptions {
        stream: true,
        stdin: true,
        ..Default::default()
    };
    let input = docker
        .attach_container(id, Some(in_opts))
        .await
        .map_err(|e| format!("attaching to the container's stdin: {e}"))?;
    // Only the writer is kept: when it is dropped the connection closes.
    drop(input.output);
    let (mut writer, reader) = tokio::io::duplex(256 * 1024);
    let (mut stderr, errors) = tokio::io::duplex(64 * 1024);
    let mut output = out.output;
    let (closed_tx, closed) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Some(Ok(chunk)) = output.next().await {
            match chunk {
                bollard::container::LogOutput::StdOut { message }
                | bollard::container::LogOutput::Console { message } => {
                    if writer.write_all(&message).await.is_err() {
                        break;
                    }
                }
                bollard::container::LogOutput::StdErr { message } => {
                    let _ = stderr.write_all(&message).await;
                }
                bollard::container::LogOutput::StdIn { .. } => {}
            }
        }
        let _ = writer.shutdown().await;
        let _ = stderr.shutdown().await;
        let _ = closed_tx.send(());
    });
    Ok((input.input, reader, errors, closed))
}

/// The container's main pid (host namespace).
pub async fn pid(docker: &Docker, id: &str) -> Result<u32, String> {
    let c = docker
        .inspect_container(id, None)
        .await
        .map_err(|e| format!("inspecting the container: {e}"))?;
    c.state
        .and_then(|s| s.pid)
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| "the container has no running process".to_string())
}

/// The v2 cgroup of `pid`, below `v2root`.
pub fn v2_cgroup_of(pid: u32, v2root: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(v2root.join(rel.trim_start_matches('/')))
}

/// Waits for the container to exit; its exit code. `output_closed` fires when its output
/// stream ends (normally: it exited); the engine's state is read then, which is quicker than
/// podman's polling wait, and the wait endpoint is the fallback.
pub async fn wait(
    docker: Docker,
    id: String,
    output_closed: tokio::sync::oneshot::Receiver<()>,
) -> Option<i32> {
    if output_closed.await.is_ok() {
        for _ in 0..50 {
            let Ok(c) = docker.inspect_container(&id, None).await else {
                break;
            };
            let state = c.state.unwrap_or_default();
            if state.running != Some(true) {
                return state.exit_code.and_then(|c| i32::try_from(c).ok());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let opts = WaitContainerOptions {
        condition: "not-running".into(),
    };
    let mut s = docker.wait_container(&id, Some(opts));
    match s.next().await {
        Some(Ok(r)) => i32::try_from(r.status_code).ok(),
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
            i32::try_from(code).ok()
        }
        _ => None,
    }
}

/// Removes a cgroup directory and everything below it (deepest first), in the v2 hierarchy and
/// in every v1 hierarchy at the same relative path (runc makes those for the container).
pub fn remove_tree(mounts: &cgroup::Mounts, v2_dir: &Path) -> io::Result<()> {
    let mut dirs = vec![v2_dir.to_path_buf()];
    if let Some(v2root) = &mounts.v2
        && let Ok(rel) = v2_dir.strip_prefix(v2root)
    {
        for (_, m) in &mounts.v1 {
            dirs.push(m.join(rel));
        }
    }
    let mut first_err = None;
    for d in dirs {
        if let Err(e) = remove_below(&d)
            && first_err.is_none()
        {
            first_err = Some(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

fn remove_below(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_below(&entry.path())?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("removing cgroup {}: {e}", dir.display()),
                ));
            }
        }
    }
}

/// Whether `policy` asks for the container backend.
pub fn wanted(policy: &Policy) -> bool {
    policy.isolation.backend == mcp_guard_policy::Backend::Container
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

    #[test]
    fn engine_address_prefers_the_policy() {
        assert_eq!(engine_address(Some("unix:///x.sock")), "unix:///x.sock");
    }
}
