//! Landlock: the filesystem sets (read, write, exec; everything else denied), TCP connect/bind
//! limited to the policy's ports (ABI ≥ 4) and scoping of abstract unix sockets and signals to
//! the jail (ABI ≥ 6).
//!
//! Rules are inode-based, so the ruleset is built inside the jail's mount namespace after the
//! private /tmp and /proc are mounted, and applied by the server child with `restrict_self`.

use std::path::PathBuf;

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, Ruleset, RulesetAttr,
    RulesetCreated, RulesetCreatedAttr, Scope, path_beneath_rules,
};
use serde::{Deserialize, Serialize};

/// The newest ABI whose rights mcp-guard asks for (tested on a 6.18 kernel, ABI 7).
pub const MAX_ABI: i32 = 7;
/// The first ABI with TCP rules.
pub const NET_ABI: i32 = 4;
/// The first ABI with scopes (abstract unix sockets, signals).
pub const SCOPE_ABI: i32 = 6;

/// The landlock part of a jail, as plain data.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LandlockSpec {
    /// The ABI to build rights for (≤ the kernel's).
    pub abi: i32,
    /// Readable trees (absolute, `~/` already expanded).
    pub read: Vec<PathBuf>,
    /// Writable trees.
    pub write: Vec<PathBuf>,
    /// Executable trees.
    pub exec: Vec<PathBuf>,
    /// TCP ports allowed for connect and bind; `None`: TCP not restricted by landlock.
    pub tcp_ports: Option<Vec<u16>>,
    /// Scope abstract unix sockets and signals to the jail.
    pub scope: bool,
    /// Leave abstract unix sockets out of the scope: the policy lists abstract names, which
    /// the kernel guard's unix programs let through (and deny every other one).
    #[serde(default)]
    pub abstract_unscoped: bool,
}

/// The kernel's landlock ABI version (0 when landlock is unavailable or disabled).
pub fn kernel_abi() -> i32 {
    abi().unwrap_or(0)
}

/// The kernel's landlock ABI version, or why the kernel refused to say (ENOSYS, EOPNOTSUPP).
pub fn abi() -> std::io::Result<i32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attr and size 0 and the VERSION flag the kernel reads no memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(i32::try_from(r).unwrap_or(i32::MAX))
}

/// Builds the ruleset (opening each path that exists; missing ones are skipped).
pub fn build(spec: &LandlockSpec) -> Result<RulesetCreated, String> {
    let abi = ABI::from(spec.abi);
    let err = |e: landlock::RulesetError| format!("landlock: {e}");
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let exec = AccessFs::Execute | AccessFs::ReadFile | AccessFs::ReadDir;
    let write = AccessFs::from_all(abi) & !AccessFs::Execute;

    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(abi))
        .map_err(err)?;
    if spec.tcp_ports.is_some() {
        ruleset = ruleset
            .handle_access(AccessNet::from_all(abi))
            .map_err(err)?;
    }
    if spec.scope {
        let mut scopes = Scope::from_all(abi);
        if spec.abstract_unscoped {
            scopes.remove(Scope::AbstractUnixSocket);
        }
        ruleset = ruleset.scope(scopes).map_err(err)?;
    }
    let mut created = ruleset
        .create()
        .map_err(err)?
        .add_rules(path_beneath_rules(&spec.read, read))
        .map_err(err)?
        .add_rules(path_beneath_rules(&spec.write, write))
        .map_err(err)?
        .add_rules(path_beneath_rules(&spec.exec, exec))
        .map_err(err)?;
    for &port in spec.tcp_ports.iter().flatten() {
        created = created
            .add_rule(NetPort::new(port, AccessNet::from_all(abi)))
            .map_err(err)?;
    }
    Ok(created)
}

/// Applies a built ruleset to the calling thread (sets `no_new_privs` first).
pub fn restrict(ruleset: RulesetCreated) -> Result<(), String> {
    let status = ruleset
        .restrict_self()
        .map_err(|e| format!("landlock restrict_self: {e}"))?;
    match status.ruleset {
        landlock::RulesetStatus::FullyEnforced => Ok(()),
        other => Err(format!("landlock ruleset not fully enforced: {other:?}")),
    }
}
