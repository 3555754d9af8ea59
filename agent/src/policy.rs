//! The policy model: one TOML file per server (format in DESIGN.md), loaded by name from the
//! policy dir or by path, validated with errors that name file, line and key.
//!
//! Everything else reads the validated [`Policy`]; nothing else parses TOML.

use std::{collections::BTreeMap, path::PathBuf};

use ipnet::IpNet;

/// A validated policy for one server.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// The server name this policy is for.
    pub name: String,
    /// The file it came from (`None` for the built-in default).
    pub source: Option<PathBuf>,
    /// Landlock filesystem sets. Entries may start with `~/` (the server user's home).
    pub filesystem: Filesystem,
    /// eBPF egress allowlist.
    pub network: Network,
    /// Extra seccomp denials on top of the built-in list.
    pub syscalls: Syscalls,
    /// Resource limits.
    pub limits: Limits,
    /// MCP-layer tool rules.
    pub tools: Tools,
    /// Secrets injected into the server's environment, by variable name.
    pub secrets: BTreeMap<String, Secret>,
    /// Detection settings.
    pub detect: Detect,
    /// How strictly enforcement is applied.
    pub enforcement: Enforcement,
}

/// `[filesystem]`: paths the server may read, write and execute; everything else is denied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filesystem {
    /// Readable trees.
    pub read: Vec<String>,
    /// Writable (and readable) trees.
    pub write: Vec<String>,
    /// Executable files or trees.
    pub exec: Vec<String>,
}

/// `[network]`: default-deny egress allowlist.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Network {
    /// Allowed destinations.
    pub allow: Vec<NetAllow>,
}

/// One `allow` entry: `host:port`, `cidr:port`, `[v6]:port`, ports may be `lo-hi`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetAllow {
    /// The destination.
    pub target: NetTarget,
    /// Lowest allowed port.
    pub port_lo: u16,
    /// Highest allowed port.
    pub port_hi: u16,
}

/// A destination: an address or network, or a name resolved at launch and kept fresh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetTarget {
    /// An address (as a /32 or /128) or a network.
    Net(IpNet),
    /// A DNS name.
    Host(String),
}

/// `[syscalls]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Syscalls {
    /// Syscall names to deny in addition to the built-in list.
    pub deny: Vec<String>,
}

/// `[limits]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Limits {
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// Maximum number of tasks.
    pub pids: Option<u64>,
    /// CPU limit in cores.
    pub cpu: Option<f64>,
}

/// `[tools]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tools {
    /// If set, only these tools are visible and callable.
    pub allow: Option<Vec<String>>,
    /// Tools hidden and refused.
    pub deny: Vec<String>,
}

/// Where a secret's value comes from at launch (never the policy itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Secret {
    /// A file, read at launch; one trailing newline is dropped.
    File(PathBuf),
    /// A systemd credential name, read from `$CREDENTIALS_DIRECTORY/NAME`.
    Credential(String),
}

/// `[detect]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Detect {
    /// Glob patterns of sensitive paths (`~/`, `**` allowed).
    pub sensitive: Vec<String>,
    /// What to do on an access to one.
    pub on_sensitive: OnSensitive,
}

/// The action on a sensitive access.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnSensitive {
    /// Record an alert only.
    #[default]
    Alert,
    /// Fail the tool call in flight.
    DenyCall,
    /// Kill the server.
    Kill,
}

/// `[enforcement]`: what to do when the host cannot apply something.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Enforcement {
    /// Run without enforcing, reporting only (as `--observe`).
    pub observe: bool,
    /// Launch with what this host can enforce instead of refusing (exit 77) when a requested
    /// enforcement is unavailable. Off by default: fail closed.
    pub allow_degraded: bool,
}
