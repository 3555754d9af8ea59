//! What the kernel enforces and reports for one server, as plain data: the loader's input.
//! Callers (exec, the agent, the launcher) build a [`ServerSpec`] from a policy; nothing here
//! touches the kernel.

use std::path::PathBuf;

use ipnet::IpNet;

/// Where a server may connect: a network, or a host name resolved and kept fresh.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Destination {
    /// A network (a single host is a /32 or /128).
    Net(IpNet),
    /// A DNS name, resolved at launch and re-resolved as its records expire.
    Host(String),
}

/// One allowed destination with an inclusive port range.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EgressRule {
    /// Where.
    pub dest: Destination,
    /// Lowest allowed port.
    pub port_lo: u16,
    /// Highest allowed port.
    pub port_hi: u16,
}

/// A sensitive path, already `~`-expanded and absolute. The kernel matches the path string a
/// process passes to open: absolute as given, and relative when it names the path from one of
/// its ancestors (see `relative_tails`); not through `..`, symlinks or a cwd inside it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SensitivePath {
    /// Exactly this path (relative: from its directory's parent or higher, `.aws/credentials`).
    Exact(PathBuf),
    /// This directory and everything below it (relative: `.ssh/...` and up).
    Under(PathBuf),
    /// A file of this name in any directory (`**/.env` → `.env`), matched on the last
    /// component of the path as the process passed it (relative paths included).
    Name(String),
}

/// What the kernel enforces and reports for one server.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ServerSpec {
    /// The server's name (echoed in events).
    pub server: String,
    /// The session id (echoed in events).
    pub session: String,
    /// Report egress verdicts instead of enforcing them.
    pub observe: bool,
    /// Allowed destinations; everything else is denied (unless `observe`).
    pub egress: Vec<EgressRule>,
    /// Paths whose open attempt is fatal when `kill_on_sensitive` (even with `observe`).
    pub sensitive: Vec<SensitivePath>,
    /// SIGKILL a process of the server at its first attempt to open a sensitive path.
    pub kill_on_sensitive: bool,
    /// Unix sockets the server may connect or send to: absolute paths and `@abstract` names;
    /// every other one is denied (unless `observe`).
    #[serde(default)]
    pub unix: Vec<String>,
    /// Guard the server even when this kernel cannot run the unix programs (observe, or a
    /// policy that accepts degraded enforcement); otherwise that refuses the guard.
    #[serde(default)]
    pub unix_optional: bool,
    /// The TCP ports (inclusive ranges) the server may bind; `None`: any. Judged by the bind
    /// programs (the launcher also gives them to landlock where it has TCP rules).
    #[serde(default)]
    pub tcp_bind: Option<Vec<(u16, u16)>>,
}
