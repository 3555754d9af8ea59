//! The agent's Unix socket for `exec` clients: bound with the configured mode and group.

use super::Config;
use crate::say::say_as_is;

/// Binds the Unix socket (replacing a stale one), with the configured mode and group.
pub(super) fn bind(config: &Config) -> Result<tokio::net::UnixListener, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = &config.socket;
    let err =
        |what: &str, e: &dyn std::fmt::Display| format!("socket {}: {what}: {e}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err("creating its directory", &e))?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(err("in use", &"another agent listens there"));
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("removing the stale socket", &e)),
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(|e| err("bind", &e))?;
    if let Some(group) = &config.socket_group {
        let gid = nix::unistd::Group::from_name(group)
            .map_err(|e| err("looking up socket_group", &e))?
            .ok_or_else(|| err("socket_group", &format!("no group {group:?}")))?
            .gid;
        nix::unistd::chown(path, None, Some(gid)).map_err(|e| err("chown", &e))?;
    }
    let mode = config.mode()?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| err("chmod", &e))?;
    say_as_is(&format!(
        "mcp-guard agent: exec clients connect to {} (mode {:o}{})",
        path.display(),
        mode,
        config
            .socket_group
            .as_ref()
            .map(|g| format!(", group {g}"))
            .unwrap_or_default()
    ));
    Ok(listener)
}
