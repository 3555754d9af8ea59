//! Who the server runs as, its home, and its scrubbed environment.
//!
//! When exec runs as root the server runs as: the policy's `user` if set; else the invoking user
//! of sudo (`SUDO_UID`/`SUDO_GID`); else root itself, but with every capability dropped,
//! no_new_privs and the landlock/seccomp jail (plain root is then only a uid that owns files, and
//! landlock decides which of them it may touch). Exec refuses to run as non-root (it needs root
//! for cgroups and namespaces).

use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

use nix::unistd::{Gid, Uid, User};
use serde::{Deserialize, Serialize};

/// The server's identity, resolved before launch.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Identity {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Login name (USER, LOGNAME).
    pub name: String,
    /// Home directory (HOME, `~/` in the policy).
    pub home: PathBuf,
    /// How it was chosen, for the log.
    pub why: String,
}

/// Resolves the server's identity. `configured` is the policy's `user` (name or uid).
pub fn resolve(configured: Option<&str>) -> Result<Identity, String> {
    let lookup_err = |what: &str, e: nix::Error| format!("looking up user {what}: {e}");
    let (user, why) = if let Some(spec) = configured {
        let user = match spec.parse::<u32>() {
            Ok(uid) => User::from_uid(Uid::from_raw(uid)).map_err(|e| lookup_err(spec, e))?,
            Err(_) => User::from_name(spec).map_err(|e| lookup_err(spec, e))?,
        }
        .ok_or_else(|| format!("the policy's user {spec:?} does not exist on this host"))?;
        (user, format!("the policy's user = {spec:?}"))
    } else if let Some(uid) = std::env::var("SUDO_UID")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
    {
        let mut user = User::from_uid(Uid::from_raw(uid))
            .map_err(|e| lookup_err(&uid.to_string(), e))?
            .ok_or_else(|| format!("SUDO_UID={uid} names no user on this host"))?;
        if let Some(gid) = std::env::var("SUDO_GID")
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
        {
            user.gid = Gid::from_raw(gid);
        }
        (user, "the invoking user (SUDO_UID)".to_string())
    } else {
        let user = User::from_uid(Uid::current())
            .map_err(|e| lookup_err("root", e))?
            .ok_or("the current uid has no passwd entry")?;
        let mut user = user;
        // Plain root keeps its own HOME (e.g. a service's or a test's) when it is set.
        if let Some(home) = std::env::var_os("HOME").filter(|h| Path::new(h).is_absolute()) {
            user.dir = PathBuf::from(home);
        }
        (
            user,
            "root (no SUDO_UID and no policy user): all capabilities dropped".to_string(),
        )
    };
    let groups = match CString::new(user.name.clone()) {
        Ok(name) => nix::unistd::getgrouplist(&name, user.gid)
            .map(|g| g.into_iter().map(Gid::as_raw).collect())
            .unwrap_or_else(|_| vec![user.gid.as_raw()]),
        Err(_) => vec![user.gid.as_raw()],
    };
    Ok(Identity {
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups,
        name: user.name,
        home: user.dir,
        why,
    })
}

/// Variables kept from exec's environment (plus `LC_*` and the policy's `[env] pass`). Not
/// `NODE_OPTIONS`/`PYTHONPATH`-style variables: they load code into the server; not proxies or
/// tokens: a policy passes those by name.
pub const ENV_ALLOW: &[&str] = &["PATH", "LANG", "LANGUAGE", "TERM", "TZ"];

/// Builds the server's environment: the allowlist, `pass`, identity variables and the secrets
/// (which win over anything of the same name).
pub fn environment(
    id: &Identity,
    pass: &[String],
    secrets: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| {
            ENV_ALLOW.contains(&k.as_str()) || k.starts_with("LC_") || pass.iter().any(|p| p == k)
        })
        .collect();
    let mut set = |k: &str, v: String| {
        env.retain(|(have, _)| have != k);
        env.push((k.to_string(), v));
    };
    if std::env::var_os("PATH").is_none() {
        set("PATH", "/usr/local/bin:/usr/bin:/bin".to_string());
    }
    set("HOME", id.home.display().to_string());
    set("USER", id.name.clone());
    set("LOGNAME", id.name.clone());
    set("TMPDIR", "/tmp".to_string());
    for (k, v) in secrets {
        set(k, v.clone());
    }
    env.sort();
    env
}

/// Resolves the command like execvp would, with the server's PATH; returns an absolute path.
pub fn resolve_program(cmd: &str, env: &[(String, String)]) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if cmd.contains('/') {
        let p = std::env::current_dir().ok()?.join(cmd);
        return executable(&p).then_some(p);
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("/usr/local/bin:/usr/bin:/bin");
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(cmd))
        .find(|p| executable(p))
}
