//! Where `/metrics` listens: a TCP address, or a Unix socket only root and one group may reach.
//!
//! `host:port` or `unix:/path` (in the config's `metrics` and in `--metrics`). The Unix socket
//! is created with mode 0660, owner root, group `metrics_socket_group` (root's when unset): the
//! kernel's permission check on `connect(2)` keeps every other local user out, so no secret is
//! needed for a scraper that runs in that group.

use std::{
    fmt,
    net::SocketAddr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    str::FromStr,
};

use serde::{Deserialize, Deserializer};
use tokio::net::{TcpListener, UnixListener};

/// The Unix socket's permission bits: owner (root) and group.
pub const SOCKET_MODE: u32 = 0o660;

/// The prefix that makes an address a Unix socket path.
const UNIX_PREFIX: &str = "unix:";

/// A `/metrics` listen address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricsAddr {
    /// TCP `host:port`.
    Tcp(SocketAddr),
    /// A Unix socket at this absolute path.
    Unix(PathBuf),
}

impl FromStr for MetricsAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix(UNIX_PREFIX) {
            let path = Path::new(path);
            if !path.is_absolute() || path.file_name().is_none() {
                return Err(format!(
                    "{s:?}: a Unix socket for /metrics is an absolute path, e.g. \
                     \"unix:/run/mcp-guard/metrics.sock\""
                ));
            }
            return Ok(MetricsAddr::Unix(path.to_path_buf()));
        }
        s.parse().map(MetricsAddr::Tcp).map_err(|_| {
            format!(
                "{s:?}: expected host:port (e.g. \"127.0.0.1:9464\") or unix:/path (e.g. \
                 \"unix:/run/mcp-guard/metrics.sock\")"
            )
        })
    }
}

impl fmt::Display for MetricsAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricsAddr::Tcp(a) => write!(f, "{a}"),
            MetricsAddr::Unix(p) => write!(f, "{UNIX_PREFIX}{}", p.display()),
        }
    }
}

impl<'de> Deserialize<'de> for MetricsAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A bound `/metrics` listener.
#[derive(Debug)]
pub enum Listener {
    /// On TCP.
    Tcp(TcpListener),
    /// On a Unix socket (removed when the agent stops).
    Unix(UnixListener),
}

impl Listener {
    /// Binds `addr`; a Unix socket gets [`SOCKET_MODE`] and `group` (root's when `None`), a stale
    /// socket file there is replaced, a live one (another agent) is an error.
    pub async fn bind(addr: &MetricsAddr, group: Option<&str>) -> Result<Listener, String> {
        match addr {
            MetricsAddr::Tcp(a) => TcpListener::bind(a)
                .await
                .map(Listener::Tcp)
                .map_err(|e| format!("cannot listen on {a} for /metrics: {e}")),
            MetricsAddr::Unix(path) => bind_unix(path, group).map(Listener::Unix),
        }
    }

    /// What it listens on, for the log.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map_or_else(|e| format!("tcp ({e})"), |a| format!("http://{a}/metrics")),
            Listener::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(Path::to_path_buf))
                .map_or_else(
                    || "a Unix socket".into(),
                    |p| format!("/metrics on {UNIX_PREFIX}{}", p.display()),
                ),
        }
    }
}

fn bind_unix(path: &Path, group: Option<&str>) -> Result<UnixListener, String> {
    let err = |what: &str, e: &dyn fmt::Display| {
        format!("metrics socket {}: {what}: {e}", path.display())
    };
    let gid = match group {
        None => None,
        Some(name) => Some(
            nix::unistd::Group::from_name(name)
                .map_err(|e| err("looking up metrics_socket_group", &e))?
                .ok_or_else(|| err("metrics_socket_group", &format!("no group {name:?}")))?
                .gid,
        ),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err("creating its directory", &e))?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(err("in use", &"another agent listens there"));
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if !std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            return Err(err("exists", &"and is not a socket (not removed)"));
        }
        Ok(_) => std::fs::remove_file(path).map_err(|e| err("removing the stale socket", &e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("stat", &e)),
    }
    let socket = socket2_unix().map_err(|e| err("socket", &e))?;
    // The socket file is created with the socket inode's mode (less the umask): set before bind,
    // no other user can connect in the moment before the chmod below.
    // SAFETY: fchmod on a descriptor this function owns; no memory is passed.
    if unsafe { libc::fchmod(std::os::fd::AsRawFd::as_raw_fd(&socket), 0o600) } != 0 {
        return Err(err("fchmod", &std::io::Error::last_os_error()));
    }
    let addr = nix::sys::socket::UnixAddr::new(path).map_err(|e| err("address", &e))?;
    nix::sys::socket::bind(std::os::fd::AsRawFd::as_raw_fd(&socket), &addr)
        .map_err(|e| err("bind", &e))?;
    nix::sys::socket::listen(&socket, nix::sys::socket::Backlog::MAXCONN)
        .map_err(|e| err("listen", &e))?;
    if let Some(gid) = gid {
        nix::unistd::chown(path, None, Some(gid)).map_err(|e| err("chown", &e))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(|e| err("chmod", &e))?;
    let std_listener = std::os::unix::net::UnixListener::from(socket);
    std_listener
        .set_nonblocking(true)
        .map_err(|e| err("nonblocking", &e))?;
    UnixListener::from_std(std_listener).map_err(|e| err("register", &e))
}

/// A new `AF_UNIX` stream socket (close-on-exec).
fn socket2_unix() -> nix::Result<std::os::fd::OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_print_back() {
        for s in [
            "127.0.0.1:9464",
            "[::1]:9000",
            "unix:/run/mcp-guard/metrics.sock",
        ] {
            let a: MetricsAddr = s.parse().expect(s);
            assert_eq!(a.to_string(), s);
        }
        for bad in ["unix:relative.sock", "unix:", "localhost", "9464", "unix:/"] {
            let e = bad.parse::<MetricsAddr>().expect_err(bad);
            assert!(e.contains(bad), "{e}");
        }
    }

    #[tokio::test]
    async fn the_unix_socket_is_root_and_group_only_from_the_start() {
        let dir = std::env::temp_dir().join(format!("mcp-guard-metrics-{}", std::process::id()));
        let path = dir.join("m.sock");
        let l = Listener::bind(&MetricsAddr::Unix(path.clone()), None)
            .await
            .expect("bind");
        let mode = std::fs::metadata(&path)
            .expect("socket")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, SOCKET_MODE);
        // Binding again while it listens is refused; after it is gone, the stale file is replaced.
        assert!(
            Listener::bind(&MetricsAddr::Unix(path.clone()), None)
                .await
                .is_err()
        );
        drop(l);
        Listener::bind(&MetricsAddr::Unix(path.clone()), None)
            .await
            .expect("rebind over a stale socket");
        // Anything else at the path is left alone.
        let file = dir.join("not-a-socket");
        std::fs::write(&file, "keep").expect("file");
        let e = Listener::bind(&MetricsAddr::Unix(file.clone()), None)
            .await
            .expect_err("a regular file");
        assert!(e.contains("not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&file).expect("kept"), "keep");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
