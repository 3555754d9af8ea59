//! Who this host is, on every shipped record: its name and a stable id.

use std::path::Path;

use super::config::ExportConfig;

/// Where the machine id is looked for, in order (systemd's, then D-Bus's older copy).
const MACHINE_ID_FILES: &[&str] = &["/etc/machine-id", "/var/lib/dbus/machine-id"];

/// This host as the fleet sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// The host name (`[export] host_name`, else the kernel's).
    pub name: String,
    /// A stable id (`[export] host_id`, else the machine id): two hosts may share a name, and
    /// record ids are unique only within a host.
    pub id: String,
}

impl Host {
    /// The configured name and id, or this machine's.
    pub fn detect(config: &ExportConfig) -> Result<Host, String> {
        let name = match &config.host_name {
            Some(n) => n.clone(),
            None => nix::unistd::gethostname()
                .map_err(|e| format!("cannot read the host name ({e}): set [export] host_name"))?
                .to_string_lossy()
                .into_owned(),
        };
        let id = match &config.host_id {
            Some(id) => id.clone(),
            None => machine_id(MACHINE_ID_FILES.iter().map(Path::new)).ok_or_else(|| {
                format!(
                    "no machine id in {}: set [export] host_id (e.g. `systemd-machine-id-setup` \
                     writes one)",
                    MACHINE_ID_FILES.join(" or ")
                )
            })?,
        };
        Ok(Host { name, id })
    }
}

/// The first of `files` holding a machine id (32 hex digits).
fn machine_id<'a>(files: impl Iterator<Item = &'a Path>) -> Option<String> {
    files
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|t| t.trim().to_ascii_lowercase())
        .find(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    #![expect(
        clippy::unwrap_used,
        reason = "a test: a failed unwrap is the failure, with its line"
    )]

    use super::*;

    #[test]
    fn the_machine_id_is_found_and_configured_values_win() {
        let dir = std::env::temp_dir().join(format!("mcp-guard-host-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad");
        let good = dir.join("good");
        std::fs::write(&bad, "uninitialized\n").unwrap();
        std::fs::write(&good, "0123456789ABCDEF0123456789abcdef\n").unwrap();
        let id = machine_id([bad.as_path(), good.as_path()].into_iter());
        assert_eq!(id.as_deref(), Some("0123456789abcdef0123456789abcdef"));
        assert_eq!(machine_id([bad.as_path()].into_iter()), None);
        let host = Host::detect(&ExportConfig {
            host_name: Some("vm-a".into()),
            host_id: Some("host-a".into()),
            sink: vec![],
        })
        .unwrap();
        assert_eq!(
            host,
            Host {
                name: "vm-a".into(),
                id: "host-a".into()
            }
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
