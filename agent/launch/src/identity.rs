//! Who the server runs as, its home, and its scrubbed environment.
//!
//! A server never runs as uid 0 unless its policy says `user = "root"` (then every start warns,
//! [`root_warning`]). When exec runs as root the server runs as: the policy's `user` if set; else
//! the invoking user of sudo (`SUDO_UID`/`SUDO_GID`, unless that is root itself); else the
//! unprivileged identity of [`super::server_user`] (the `mcp-guard-server` system user, or a
//! per-session uid where the host has no such user). Exec that is not root runs the server as
//! itself (it cannot switch users).
//!
//! When the agent launches for an `exec` client ([`Caller`]), the server runs as that client's
//! user (its uid and gid as the kernel reported them on the socket), and the variables come
//! from the client's environment, not the agent's. Only a root client may pick another user; a
//! root client is resolved like a root exec above.

use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

use nix::unistd::{Gid, Uid, User};
use serde::{Deserialize, Serialize};

use super::server_user;

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

/// Who asked the agent for a launch: the client's credentials (`SO_PEERCRED`) and environment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Caller {
    /// The client's uid.
    pub uid: u32,
    /// The client's gid.
    pub gid: u32,
    /// The client's environment (only what [`environment`] keeps reaches the server).
    pub env: Vec<(String, String)>,
    /// The client's umask, the server's too (files it creates are the client's kind).
    pub umask: Option<u32>,
}

impl Caller {
    fn var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A variable of the environment the launch is for: the caller's, else exec's own.
fn var(caller: Option<&Caller>, name: &str) -> Option<String> {
    match caller {
        Some(c) => c.var(name).map(str::to_string),
        None => std::env::var(name).ok(),
    }
}

/// The variables of the environment the launch is for.
pub fn source_vars(caller: Option<&Caller>) -> Vec<(String, String)> {
    match caller {
        Some(c) => c.env.clone(),
        None => std::env::vars().collect(),
    }
}

/// A resolved identity and, for a per-session uid, the lease that keeps it the session's.
#[derive(Debug)]
pub struct Resolved {
    /// Who the server runs as.
    pub identity: Identity,
    /// Held for the session's lifetime when the uid is leased ([`server_user::Lease`]).
    pub lease: Option<server_user::Lease>,
}

impl From<Identity> for Resolved {
    fn from(identity: Identity) -> Self {
        Resolved {
            identity,
            lease: None,
        }
    }
}

/// Resolves the server's identity. `configured` is the policy's `user` (name or uid); `caller`
/// the agent's client, if the agent launches.
pub fn resolve(configured: Option<&str>, caller: Option<&Caller>) -> Result<Resolved, String> {
    let lookup_err = |what: &str, e: nix::Error| format!("looking up user {what}: {e}");
    if let Some(c) = caller.filter(|c| c.uid != 0) {
        let user = User::from_uid(Uid::from_raw(c.uid))
            .map_err(|e| lookup_err(&c.uid.to_string(), e))?
            .ok_or_else(|| format!("uid {} has no passwd entry on this host", c.uid))?;
        if let Some(spec) = configured {
            let wanted = match spec.parse::<u32>() {
                Ok(uid) => uid,
                Err(_) => User::from_name(spec)
                    .map_err(|e| lookup_err(spec, e))?
                    .map_or(u32::MAX, |u| u.uid.as_raw()),
            };
            if wanted != c.uid {
                return Err(format!(
                    "the policy runs the server as user {spec:?}, but you are {} (uid {}): only \
                     root may launch a server as another user",
                    user.name, c.uid
                ));
            }
        }
        return Ok(with_groups(
            User {
                gid: Gid::from_raw(c.gid),
                ..user
            },
            "the caller of exec (through the agent)".into(),
        )
        .into());
    }
    // exec's HOME (or the agent's root client's), when it names one.
    let own_home = || var(caller, "HOME").filter(|h| Path::new(h).is_absolute());
    if let Some(spec) = configured {
        let user = match spec.parse::<u32>() {
            Ok(uid) => User::from_uid(Uid::from_raw(uid)).map_err(|e| lookup_err(spec, e))?,
            Err(_) => User::from_name(spec).map_err(|e| lookup_err(spec, e))?,
        }
        .ok_or_else(|| format!("the policy's user {spec:?} does not exist on this host"))?;
        return Ok(with_groups(user, format!("the policy's user = {spec:?}")).into());
    }
    if caller.is_none() && !Uid::effective().is_root() {
        let mut user = User::from_uid(Uid::effective())
            .map_err(|e| lookup_err("of exec", e))?
            .ok_or("the current uid has no passwd entry")?;
        if let Some(home) = own_home() {
            user.dir = PathBuf::from(home);
        }
        return Ok(with_groups(user, "the invoking user (exec is not root)".into()).into());
    }
    let sudo = var(caller, "SUDO_UID")
        .and_then(|s| s.parse::<u32>().ok())
        .filter(|&uid| uid != 0);
    if let Some(uid) = sudo {
        let mut user = User::from_uid(Uid::from_raw(uid))
            .map_err(|e| lookup_err(&uid.to_string(), e))?
            .ok_or_else(|| format!("SUDO_UID={uid} names no user on this host"))?;
        if let Some(gid) = var(caller, "SUDO_GID").and_then(|s| s.parse::<u32>().ok()) {
            user.gid = Gid::from_raw(gid);
        }
        return Ok(with_groups(user, "the invoking user (SUDO_UID)".into()).into());
    }
    // exec's HOME is the server's, unless it is root's own home: that one is private to root,
    // and a server given it would only meet EACCES there.
    let root_home = User::from_uid(Uid::from_raw(0))
        .ok()
        .flatten()
        .map(|u| u.dir);
    let home = own_home()
        .map(PathBuf::from)
        .filter(|h| Some(h) != root_home.as_ref());
    match server_user::choose()? {
        server_user::ServerUser::System(mut user) => {
            if let Some(home) = home {
                user.dir = home;
            }
            let why = format!(
                "root's unprivileged server user {} (no SUDO_UID and no policy user)",
                server_user::SYSTEM_USER
            );
            Ok(with_groups(user, why).into())
        }
        server_user::ServerUser::Leased(lease) => {
            let uid = lease.uid();
            let identity = Identity {
                uid,
                gid: uid,
                groups: vec![uid],
                name: uid.to_string(),
                // As the system user's: no home.
                home: home.unwrap_or_else(|| PathBuf::from("/nonexistent")),
                why: format!(
                    "a per-session uid (no SUDO_UID and no policy user, and this host has no \
                     {} user)",
                    server_user::SYSTEM_USER
                ),
            };
            Ok(Resolved {
                identity,
                lease: Some(lease),
            })
        }
    }
}

/// What to say on every start of a server that runs as root (only a policy's `user` does that).
pub fn root_warning(id: &Identity, observe: bool) -> Option<String> {
    (id.uid == 0).then(|| {
        let caps = if observe {
            "under observe it keeps every capability and no jail applies"
        } else {
            "its capabilities are dropped and the jail applies, but it owns and may change every \
             root-owned file the policy's paths reach"
        };
        format!(
            "the server runs as root (uid 0) because {}: {caps}; run it as an unprivileged user \
             unless it cannot work otherwise",
            id.why
        )
    })
}

/// The identity of `user`, with its supplementary groups from the group database.
fn with_groups(user: User, why: String) -> Identity {
    let groups = match CString::new(user.name.clone()) {
        Ok(name) => nix::unistd::getgrouplist(&name, user.gid).map_or_else(
            |_| vec![user.gid.as_raw()],
            |g| g.into_iter().map(Gid::as_raw).collect(),
        ),
        Err(_) => vec![user.gid.as_raw()],
    };
    Identity {
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups,
        name: user.name,
        home: user.dir,
        why,
    }
}

/// Variables kept from exec's environment (plus `LC_*` and the policy's `[env] pass`). Not
/// `NODE_OPTIONS`/`PYTHONPATH`-style variables: they load code into the server; not proxies or
/// tokens: a policy passes those by name.
pub const ENV_ALLOW: &[&str] = &["PATH", "LANG", "LANGUAGE", "TERM", "TZ"];

/// Variables [`environment`] sets for the user the server runs as, whatever the caller had or
/// `[env] pass` names; only `[env] set` (and `[secrets]`) replace them.
pub const IDENTITY_VARS: &[&str] = &["HOME", "USER", "LOGNAME", "TMPDIR"];

/// Builds the server's environment: the allowlist, `[env] pass`, identity variables, `[env] set`
/// (`~/` values below the server's home) and the secrets (which win over anything of the same
/// name).
pub fn environment(
    id: &Identity,
    policy_env: &mcp_guard_policy::Env,
    secrets: &[(String, String)],
    caller: Option<&Caller>,
) -> Vec<(String, String)> {
    let pass = &policy_env.pass;
    let mut env: Vec<(String, String)> = source_vars(caller)
        .into_iter()
        .filter(|(k, _)| {
            ENV_ALLOW.contains(&k.as_str()) || k.starts_with("LC_") || pass.iter().any(|p| p == k)
        })
        .collect();
    let mut set = |k: &str, v: String| {
        env.retain(|(have, _)| have != k);
        env.push((k.to_string(), v));
    };
    if var(caller, "PATH").is_none() {
        set("PATH", "/usr/local/bin:/usr/bin:/bin".to_string());
    }
    set("HOME", id.home.display().to_string());
    set("USER", id.name.clone());
    set("LOGNAME", id.name.clone());
    set("TMPDIR", "/tmp".to_string());
    for (k, v) in &policy_env.set {
        let v = if v.starts_with("~/") {
            mcp_guard_policy::expand_home(v, &id.home)
                .display()
                .to_string()
        } else {
            v.clone()
        };
        set(k, v);
    }
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
        .map_or("/usr/local/bin:/usr/bin:/bin", |(_, v)| v.as_str());
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(cmd))
        .find(|p| executable(p))
}
