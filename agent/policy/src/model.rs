//! The validated policy: plain data that the rest of mcp-guard reads (the launcher, the kernel
//! guard's spec, the proxy, detection). Built only by the checker ([`crate::parse`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use crate::clients::ClientRule;
use crate::image::ImageRef;
use crate::network::NetAllow;
use crate::pins::Pins;
use crate::secrets::Secret;
use crate::{mcp::Mcp, tool_args::ArgRule};

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
    /// `user = "NAME"` or a numeric uid: who the server runs as when exec runs as root
    /// (`None`: the invoking user of sudo, else the unprivileged server user; see
    /// `launch::identity`).
    pub user: Option<String>,
    /// `[env]`: what the server's scrubbed environment keeps.
    pub env: Env,
    /// `[isolation]`: the jail (default) or a container.
    pub isolation: Isolation,
    /// `[pin]`: what the server may run, by content (checked before launch; see `supply`).
    pub pin: Pins,
    /// `[mcp]`: the MCP proxy's settings (message size, poisoned descriptions, secret shapes,
    /// PII, external hook).
    pub mcp: Mcp,
    /// `[access]`: who may launch this policy through the agent.
    pub access: Access,
    /// `[audit]`: what the history keeps of its calls (over the host's defaults).
    pub audit: crate::audit::Audit,
    /// `command = [...]`: the argv the policy fixes; only it (or the program `[pin]` pins) gets
    /// the `[secrets]`, and `exec` with no command runs it.
    pub command: Option<Vec<String>>,
}

impl Policy {
    /// True when the policy asks for something only the MCP proxy can do (tool rules, argument
    /// checks, client scoping, PII scrubbing, an external hook).
    pub fn has_mcp_rules(&self) -> bool {
        let t = &self.tools;
        t.allow.is_some()
            || !t.deny.is_empty()
            || !t.clients.is_empty()
            || !t.args.is_empty()
            || !self.mcp.pii.is_empty()
            || self.mcp.hook.is_some()
    }
}

/// `[access]`: the users and groups the agent launches this policy for (an unprivileged `exec`
/// through the agent's socket). Empty lists: everyone who may reach the socket. Root always may.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// `users`: login names or numeric uids.
    pub users: Vec<String>,
    /// `groups`: group names or numeric gids (primary or supplementary).
    pub groups: Vec<String>,
}

impl Access {
    /// Whether a caller with `uid`, login `name` and `groups` (names and gids) may use the
    /// policy.
    pub fn permits(&self, uid: u32, name: &str, groups: &[(u32, String)]) -> bool {
        if uid == 0 || (self.users.is_empty() && self.groups.is_empty()) {
            return true;
        }
        self.users
            .iter()
            .any(|u| u == name || *u == uid.to_string())
            || self.groups.iter().any(|g| {
                groups
                    .iter()
                    .any(|(gid, gname)| g == gname || *g == gid.to_string())
            })
    }
}

/// `[isolation]`: how the server is isolated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Isolation {
    /// `backend = "jail" | "container"`.
    pub backend: Backend,
    /// `image`: the container image (required with the container backend).
    pub image: Option<ImageRef>,
    /// `allow_tag = true`: accept an image named by tag only (no digest pin).
    pub allow_tag: bool,
    /// `engine`: the Docker Engine API address (`unix:///path`); else `DOCKER_HOST`, else the
    /// default sockets.
    pub engine: Option<String>,
}

/// Which launcher runs the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// namespaces + landlock + seccomp (`launch::prepare`).
    #[default]
    Jail,
    /// A container through the Docker Engine API (`launch::container`).
    Container,
}

/// `[env]`: the server gets a scrubbed environment (the launcher's built-in allowlist plus the
/// secrets); `pass` keeps more of exec's own environment, e.g. variables an MCP client sets;
/// `set` fixes values whatever the caller's environment holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Env {
    /// Names of variables passed through from exec's environment when set there.
    pub pass: Vec<String>,
    /// Variables the policy sets, by name. A value starting with `~/` is below the server
    /// user's home (expand with [`crate::expand_home`] at launch).
    pub set: BTreeMap<String, String>,
}

/// `[filesystem]`: paths the server may read, write and execute; everything else is denied.
///
/// Entries are absolute or start with `~/` (expand with [`crate::expand_home`]), contain no `..`
/// and no glob; a directory grants its whole tree. The launcher skips entries that do not exist on
/// the host (the default policy lists install locations of several distributions and toolchains).
/// An entry written `?PATH` is PATH, marked as one that may be absent on a host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filesystem {
    /// Readable trees.
    pub read: Vec<String>,
    /// Writable (and readable) trees.
    pub write: Vec<String>,
    /// Executable files or trees.
    pub exec: Vec<String>,
    /// The entries of `read`, `write` or `exec` written `?PATH` (stored without the `?`): other
    /// hosts' alternatives (a distribution's trust store, a toolchain's install dir) that
    /// `policy check` does not warn about when they are missing here.
    pub optional: BTreeSet<String>,
}

/// `[network]`: default-deny egress allowlist.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Network {
    /// Allowed destinations.
    pub allow: Vec<NetAllow>,
    /// `unix`: the Unix sockets the server may connect or send to (absolute paths, `@name` for
    /// abstract ones); every other one is denied.
    pub unix: Vec<String>,
}

/// `[syscalls]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Syscalls {
    /// Syscall names to deny in addition to the built-in list; each is known on this
    /// architecture ([`crate::syscall_number`] gives its number).
    pub deny: Vec<String>,
}

/// `[limits]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Limits {
    /// Memory limit in bytes (the policy writes `512M`, `1G`, `100K` with binary units, or bytes).
    pub memory: Option<u64>,
    /// Maximum number of tasks.
    pub pids: Option<u64>,
    /// CPU limit in cores, 0.01 to 1024.
    pub cpu: Option<f64>,
}

/// `[tools]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tools {
    /// If set, only these tools are visible and callable.
    pub allow: Option<Vec<String>>,
    /// Tools hidden and refused.
    pub deny: Vec<String>,
    /// `[tools.clients]`: per client (declared name and/or executable), the only tools it sees
    /// (on top of allow/deny).
    pub clients: BTreeMap<String, ClientRule>,
    /// `[tools.args.<tool>]`: argument checks per tool, applied before a call reaches the server.
    pub args: BTreeMap<String, Vec<ArgRule>>,
    /// `validate_schema` (default true): check arguments against the tool's own `inputSchema`.
    pub validate_schema: bool,
}

impl Default for Tools {
    fn default() -> Self {
        Self {
            allow: None,
            deny: Vec::new(),
            clients: BTreeMap::new(),
            args: BTreeMap::new(),
            validate_schema: true,
        }
    }
}

/// `[detect]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Detect {
    /// Glob patterns of sensitive paths (`~/`, `**` allowed).
    pub sensitive: Vec<String>,
    /// What to do on an access to one.
    pub on_sensitive: OnSensitive,
    /// `[detect.rules.<name>]`: per-rule overrides, by rule name (one of [`DETECT_RULES`]).
    pub rules: std::collections::BTreeMap<String, DetectRule>,
    /// `learn = true`: learning mode; what each tool does is saved as the server's profile at
    /// session end, and the learned rules (new-egress, interpreter-exec) stay quiet meanwhile.
    pub learn: bool,
}

/// The detection rules a policy may configure (`detect::Rule::name`).
pub const DETECT_RULES: &[&str] = &[
    "sensitive-read",
    "new-egress",
    "interpreter-exec",
    "exfiltration",
    "readonly-write",
    "denial-burst",
];

/// One `[detect.rules.<name>]` table; unset fields keep the rule's default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DetectRule {
    /// `enabled = false` turns the rule off.
    pub enabled: Option<bool>,
    /// `severity = "info" | "low" | "medium" | "high" | "critical"`.
    pub severity: Option<mcp_guard_model::Severity>,
    /// `action = "alert" | "deny-call" | "kill"`.
    pub action: Option<OnSensitive>,
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
