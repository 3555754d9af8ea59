//! The policy model: one TOML file per server (format in DESIGN.md), loaded by name from the
//! policy dir or by path, validated with errors that name file, line and key.
//!
//! Everything else reads the validated [`Policy`]; nothing else parses TOML. Validation walks a
//! span-preserving TOML tree by hand (not serde) so that one run reports every problem, each as
//! `file:line:col: key.path: message`, instead of stopping at the first.

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    ops::Range,
    path::{Path, PathBuf},
    str::FromStr,
    sync::LazyLock,
};

use ipnet::IpNet;
use toml_edit::{ImDocument, Item, TableLike, Value};

mod audit;
mod clients;
mod command;
mod mcp;
mod unix;
pub use audit::{Audit, MAX_RESULT_BYTES, ToolAudit};
pub use clients::{ANY_CLIENT, ClientMatch, ClientRule};
pub use mcp::{
    ArgCheck, ArgRule, Hook, Mcp, PII_KINDS, PoisonAction, SECRET_SHAPES, SecretShapes, ShapeAction,
};

/// The built-in default policy's TOML, shipped as `policies/default.toml` and embedded here.
pub const DEFAULT_POLICY_TOML: &str = include_str!("../../policies/default.toml");

/// The name under which errors in the embedded default policy are reported.
const BUILTIN_FILE: &str = "<built-in default policy>";

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
    pub audit: Audit,
    /// `command = [...]`: the argv the policy fixes; only it (or the program `[pin]` pins) gets
    /// the `[secrets]`, and `exec` with no command runs it.
    pub command: Option<Vec<String>>,
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
    /// namespaces + landlock + seccomp (launch::prepare).
    #[default]
    Jail,
    /// A container through the Docker Engine API (launch::container).
    Container,
}

/// A container image reference: `name[:tag][@sha256:HEX]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// Repository and tag as written, without the digest (`None` for a bare `sha256:HEX` id).
    pub name: Option<String>,
    /// The pinned digest, `sha256:` and 64 lowercase hex digits.
    pub digest: Option<String>,
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.name, &self.digest) {
            (Some(n), Some(d)) => write!(f, "{n}@{d}"),
            (Some(n), None) => write!(f, "{n}"),
            (None, Some(d)) => write!(f, "{d}"),
            (None, None) => write!(f, "<none>"),
        }
    }
}

/// Parses `name[:tag][@sha256:HEX]` or a bare `sha256:HEX` image id.
pub fn parse_image(s: &str) -> Result<ImageRef, String> {
    let digest_ok = |d: &str| {
        d.strip_prefix("sha256:").is_some_and(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
    };
    let (name, digest) = match s.split_once('@') {
        Some((n, d)) => (Some(n), Some(d)),
        None if s.starts_with("sha256:") => (None, Some(s)),
        None => (Some(s), None),
    };
    if let Some(d) = digest
        && !digest_ok(d)
    {
        return Err(format!(
            "{s:?}: the digest must be sha256: followed by 64 lowercase hex digits"
        ));
    }
    if let Some(n) = name {
        let ok = !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/:".contains(&b))
            && n.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
        if !ok {
            return Err(format!(
                "{s:?}: an image name is lowercase letters, digits, '.', '_', '-', '/' and an \
                 optional :tag, e.g. \"ghcr.io/org/server@sha256:...\""
            ));
        }
    }
    Ok(ImageRef {
        name: name.map(str::to_string),
        digest: digest.map(str::to_string),
    })
}

/// `[env]`: the server gets a scrubbed environment (the launcher's built-in allowlist plus the
/// secrets); `pass` keeps more of exec's own environment, e.g. variables an MCP client sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Env {
    /// Names of variables passed through from exec's environment when set there.
    pub pass: Vec<String>,
}

/// `[filesystem]`: paths the server may read, write and execute; everything else is denied.
///
/// Entries are absolute or start with `~/` (expand with [`expand_home`]), contain no `..` and no
/// glob; a directory grants its whole tree. The launcher skips entries that do not exist on the
/// host (the default policy lists install locations of several distributions and toolchains).
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
    /// `unix`: the Unix sockets the server may connect or send to (absolute paths, `@name` for
    /// abstract ones); every other one is denied.
    pub unix: Vec<String>,
}

/// One `allow` entry: `host:port`, `a.b.c.d:port`, `cidr:port`, `[v6]:port`, `[v6cidr]:port`;
/// the port may be `lo-hi` or `*` (1-65535).
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
    /// A DNS name, lowercased, without a trailing dot.
    Host(String),
}

/// `[syscalls]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Syscalls {
    /// Syscall names to deny in addition to the built-in list; each is known on this
    /// architecture ([`syscall_number`] gives its number).
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
    pub severity: Option<crate::store::Severity>,
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

/// `[pin]`: content pins of what the jail runs; empty pins nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pins {
    /// `executable = "sha256:..."`: the program after PATH lookup and symlinks.
    pub executable: Option<String>,
    /// `[[pin.file]]`: single files (an entry script, an interpreter).
    pub files: Vec<FilePin>,
    /// `[[pin.npm]]`: installed npm packages.
    pub npm: Vec<NpmPin>,
    /// `[[pin.pypi]]`: installed PyPI distributions.
    pub pypi: Vec<PypiPin>,
    /// `[pin.signature]`: the pins must carry this signer's detached SSH signature.
    pub signature: Option<PinSignature>,
}

impl Pins {
    /// Whether anything is pinned (a signature alone pins nothing).
    pub fn is_empty(&self) -> bool {
        self.executable.is_none()
            && self.files.is_empty()
            && self.npm.is_empty()
            && self.pypi.is_empty()
    }
}

/// One pinned file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilePin {
    /// Absolute path.
    pub path: PathBuf,
    /// `sha256:<hex>` of its content.
    pub digest: String,
}

/// One pinned npm package, as installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpmPin {
    /// The package's directory (`.../node_modules/NAME`).
    pub dir: PathBuf,
    /// package.json `name`.
    pub name: String,
    /// package.json `version`.
    pub version: String,
    /// The lockfile's `integrity` (the registry tarball's SRI hash), when pinned.
    pub integrity: Option<String>,
    /// `sha256:<hex>` over the installed tree (`supply::tree_digest`).
    pub tree: String,
}

/// One pinned PyPI distribution, as installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PypiPin {
    /// The site-packages directory holding its dist-info.
    pub site_packages: PathBuf,
    /// Distribution name.
    pub name: String,
    /// Version.
    pub version: String,
    /// `sha256:<hex>` of its dist-info RECORD (which lists a sha256 per installed file).
    pub record: String,
}

/// `[pin.signature]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinSignature {
    /// Who must have signed.
    pub key: SignerKey,
    /// The detached signature over the pins' manifest (`mcp-guard policy manifest`).
    pub file: PathBuf,
}

/// A signer for `ssh-keygen -Y verify`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignerKey {
    /// OpenSSH allowed_signers file holding the public key.
    pub allowed_signers: PathBuf,
    /// The principal (identity) the signature must be from.
    pub identity: String,
    /// The signature namespace (`-n`), `mcp-guard-pins` unless set.
    pub namespace: String,
}

/// One problem in a policy, located by line, column and key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line; 0 when the problem concerns the whole file (e.g. it cannot be read).
    pub line: usize,
    /// 1-based column, in characters; 0 with `line` 0.
    pub col: usize,
    /// The key path, e.g. `network.allow[2]` or `secrets.GITHUB_TOKEN`; empty when none applies.
    pub key: String,
    /// What is wrong, and how to fix it where that is not obvious.
    pub message: String,
}

/// Every problem found in one policy file; displays one `file:line:col: key: message` per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    /// The file as the user named it (`<built-in default policy>` for the embedded one).
    pub file: String,
    /// The problems, in file order; never empty.
    pub problems: Vec<Problem>,
}

impl PolicyError {
    /// An error about the file as a whole (missing, unreadable).
    fn whole_file(file: &Path, message: String) -> Self {
        PolicyError {
            file: file.display().to_string(),
            problems: vec![Problem {
                line: 0,
                col: 0,
                key: String::new(),
                message,
            }],
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:", self.file)?;
            if p.line > 0 {
                write!(f, "{}:{}:", p.line, p.col)?;
            }
            if !p.key.is_empty() {
                write!(f, " {}:", p.key)?;
            }
            write!(f, " {}", p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyError {}

/// Loads the policy `exec --policy` names: `None` is the built-in default; a spec containing `/`
/// or ending in `.toml` is a file path; anything else is a name looked up as
/// `<policy_dir>/<name>.toml` (the name `default` falls back to the built-in default when the
/// policy dir has no `default.toml`).
pub fn load(spec: Option<&str>, policy_dir: &Path) -> Result<Policy, PolicyError> {
    let Some(spec) = spec else {
        return Ok(builtin_default());
    };
    if spec.contains('/') || spec.ends_with(".toml") {
        return load_file(Path::new(spec));
    }
    let path = policy_dir.join(format!("{spec}.toml"));
    if !is_safe_name(spec) {
        return Err(PolicyError::whole_file(
            &path,
            format!(
                "{spec:?} is not a policy name (letters, digits, '.', '_', '-'); give a path to \
                 use a file"
            ),
        ));
    }
    if !path.exists() {
        if spec == "default" {
            return Ok(builtin_default());
        }
        return Err(PolicyError::whole_file(
            &path,
            format!(
                "no policy named {spec:?} in {} (looked for this file); give a path or set \
                 --policy-dir",
                policy_dir.display()
            ),
        ));
    }
    load_file(&path)
}

/// Reads and validates one policy file.
pub fn load_file(path: &Path) -> Result<Policy, PolicyError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| PolicyError::whole_file(path, format!("cannot read policy: {e}")))?;
    parse(&text, Some(path))
}

/// Parses and validates policy text; `source` names the file in errors and in [`Policy::source`].
pub fn parse(text: &str, source: Option<&Path>) -> Result<Policy, PolicyError> {
    let file = source.map_or_else(|| BUILTIN_FILE.to_string(), |p| p.display().to_string());
    let doc = match ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let (line, col) = e.span().map_or((1, 1), |span| line_col(text, span.start));
            // Syntax errors stop the parser, so this is the only problem reported; its message
            // may span lines, and each problem is one line.
            let message = e
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(PolicyError {
                file,
                problems: vec![Problem {
                    line,
                    col,
                    key: String::new(),
                    message: format!("invalid TOML: {message}"),
                }],
            });
        }
    };
    let mut checker = Checker {
        text,
        problems: Vec::new(),
    };
    let policy = checker.policy(doc.as_table(), source);
    match policy {
        Some(policy) if checker.problems.is_empty() => Ok(policy),
        _ => {
            let mut problems = checker.problems;
            problems.sort_by_key(|p| (p.line, p.col));
            Err(PolicyError { file, problems })
        }
    }
}

/// The built-in default policy (`policies/default.toml`, embedded): common node and python
/// servers start; no network; none of the user's secrets readable.
pub fn builtin_default() -> Policy {
    static DEFAULT: LazyLock<Policy> = LazyLock::new(|| match parse(DEFAULT_POLICY_TOML, None) {
        Ok(policy) => policy,
        // A unit test parses the embedded file, so this cannot ship.
        Err(e) => panic!("the embedded default policy is invalid:\n{e}"),
    });
    DEFAULT.clone()
}

/// Expands a leading `~` or `~/` of a filesystem entry or detect pattern to `home`.
pub fn expand_home(pattern: &str, home: &Path) -> PathBuf {
    if pattern == "~" {
        home.to_path_buf()
    } else if let Some(rest) = pattern.strip_prefix("~/") {
        home.join(rest)
    } else {
        PathBuf::from(pattern)
    }
}

/// Why a secret could not be read at launch.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file (or credential file) could not be read.
    #[error("cannot read secret {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The value is not UTF-8 text (environment values are passed as text).
    #[error("secret {path} is not UTF-8 text")]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
    /// A credential was asked for but no credentials directory was given to mcp-guard.
    #[error(
        "secret credential {name:?}: $CREDENTIALS_DIRECTORY is not set; run mcp-guard under \
         systemd with LoadCredential={name}:/path (or LoadCredentialEncrypted=), or use \
         {{ file = \"/path\" }} instead"
    )]
    NoCredentialsDirectory {
        /// The credential name.
        name: String,
    },
}

/// Reads a secret's value at launch: a file's content, or the systemd credential
/// `$CREDENTIALS_DIRECTORY/NAME`; one trailing newline (`\n` or `\r\n`) is dropped.
pub fn read_secret(secret: &Secret) -> Result<String, SecretError> {
    read_secret_in(
        secret,
        std::env::var_os("CREDENTIALS_DIRECTORY")
            .filter(|d| !d.is_empty())
            .as_deref(),
    )
}

/// [`read_secret`] with the credentials directory given (tests cannot set the environment safely).
fn read_secret_in(secret: &Secret, credentials_dir: Option<&OsStr>) -> Result<String, SecretError> {
    let path = match secret {
        Secret::File(path) => path.clone(),
        Secret::Credential(name) => match credentials_dir {
            Some(dir) => Path::new(dir).join(name),
            None => return Err(SecretError::NoCredentialsDirectory { name: name.clone() }),
        },
    };
    let bytes = std::fs::read(&path).map_err(|source| SecretError::Read {
        path: path.clone(),
        source,
    })?;
    let mut value = String::from_utf8(bytes).map_err(|_| SecretError::NotUtf8 { path })?;
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok(value)
}

/// The number of the syscall `name` on the architecture mcp-guard was built for (the table that
/// `[syscalls] deny` is validated against).
pub fn syscall_number(name: &str) -> Option<i64> {
    syscalls::Sysno::from_str(name)
        .ok()
        .map(|s| i64::from(s.id()))
}

/// Validates `policy check FILE...`: prints `ok: FILE (name)` or every error of each file;
/// returns whether all were valid.
pub fn check_files(files: &[PathBuf]) -> bool {
    let mut all_ok = true;
    for file in files {
        match load_file(file) {
            Ok(policy) => println!("ok: {} ({})", file.display(), policy.name),
            Err(e) => {
                all_ok = false;
                eprintln!("{e}");
            }
        }
    }
    all_ok
}

/// 1-based line and character column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// A byte range in the policy text, when the TOML tree kept one.
type Span = Option<Range<usize>>;

/// Walks the TOML tree, collecting every problem and building the policy as it goes.
struct Checker<'t> {
    text: &'t str,
    problems: Vec<Problem>,
}

/// Top-level keys.
const TOP_KEYS: &[&str] = &[
    "name",
    "filesystem",
    "network",
    "syscalls",
    "limits",
    "tools",
    "secrets",
    "detect",
    "enforcement",
    "user",
    "env",
    "isolation",
    "pin",
    "mcp",
    "access",
    "command",
    "audit",
];

impl Checker<'_> {
    fn error(&mut self, span: &Span, key: &str, message: impl Into<String>) {
        let (line, col) = span
            .as_ref()
            .map_or((1, 1), |s| line_col(self.text, s.start));
        self.problems.push(Problem {
            line,
            col,
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// Reports unknown keys; returns the table when `item` is one.
    fn table<'d>(
        &mut self,
        item: &'d Item,
        span: &Span,
        path: &str,
        known: &[&str],
    ) -> Option<&'d dyn TableLike> {
        let Some(table) = item.as_table_like() else {
            self.error(
                span,
                path,
                format!("expected a table, found {}", describe(item)),
            );
            return None;
        };
        for (key, _) in table.iter() {
            if !known.contains(&key) {
                let (key_span, _) = entry(table, key, span);
                self.error(
                    &key_span,
                    &join(path, key),
                    format!("unknown key (expected one of: {})", known.join(", ")),
                );
            }
        }
        Some(table)
    }

    fn string<'d>(&mut self, item: &'d Item, span: &Span, path: &str) -> Option<&'d str> {
        let s = item.as_str();
        if s.is_none() {
            self.error(
                span,
                path,
                format!("expected a string, found {}", describe(item)),
            );
        }
        s
    }

    fn boolean(&mut self, item: &Item, span: &Span, path: &str) -> Option<bool> {
        let b = item.as_bool();
        if b.is_none() {
            self.error(
                span,
                path,
                format!("expected true or false, found {}", describe(item)),
            );
        }
        b
    }

    /// An array of strings: each string with its span and key path (`key[i]`).
    fn strings<'d>(
        &mut self,
        item: &'d Item,
        span: &Span,
        path: &str,
    ) -> Vec<(&'d str, Span, String)> {
        let Some(array) = item.as_array() else {
            self.error(
                span,
                path,
                format!("expected an array of strings, found {}", describe(item)),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, value) in array.iter().enumerate() {
            let element_path = format!("{path}[{i}]");
            let element_span = value.span().or_else(|| span.clone());
            match value.as_str() {
                Some(s) => out.push((s, element_span, element_path)),
                None => self.error(
                    &element_span,
                    &element_path,
                    format!("expected a string, found {}", describe_value(value)),
                ),
            }
        }
        out
    }

    /// Validates a whole document.
    fn policy(&mut self, root: &dyn TableLike, source: Option<&Path>) -> Option<Policy> {
        let root_item_span: Span = Some(0..0);
        for (key, _) in root.iter() {
            if !TOP_KEYS.contains(&key) {
                let (key_span, _) = entry(root, key, &root_item_span);
                self.error(
                    &key_span,
                    key,
                    format!("unknown key (expected one of: {})", TOP_KEYS.join(", ")),
                );
            }
        }
        let name = match root.get("name") {
            None => {
                self.error(
                    &root_item_span,
                    "name",
                    "missing: every policy names its server, e.g. name = \"github\"",
                );
                None
            }
            Some(item) => {
                let (_, span) = entry(root, "name", &root_item_span);
                let name = self.string(item, &span, "name");
                match name.map(|n| (n, crate::names::check(n))) {
                    Some((n, Ok(()))) => Some(n.to_string()),
                    Some((_, Err(why))) => {
                        // It names the server's state files, cgroup, records and metrics.
                        self.error(&span, "name", format!("not a server name: {why}"));
                        None
                    }
                    None => None,
                }
            }
        };
        let section = |key: &str| {
            root.get(key)
                .map(|item| (item, entry(root, key, &root_item_span).1))
        };
        let filesystem = section("filesystem")
            .map(|(item, span)| self.filesystem(item, &span))
            .unwrap_or_default();
        let network = section("network")
            .map(|(item, span)| self.network(item, &span))
            .unwrap_or_default();
        let syscalls = section("syscalls")
            .map(|(item, span)| self.syscalls(item, &span))
            .unwrap_or_default();
        let limits = section("limits")
            .map(|(item, span)| self.limits(item, &span))
            .unwrap_or_default();
        let tools = section("tools")
            .map(|(item, span)| self.tools(item, &span))
            .unwrap_or_default();
        let secrets = section("secrets")
            .map(|(item, span)| self.secrets(item, &span))
            .unwrap_or_default();
        let detect = section("detect")
            .map(|(item, span)| self.detect(item, &span))
            .unwrap_or_default();
        let enforcement = section("enforcement")
            .map(|(item, span)| self.enforcement(item, &span))
            .unwrap_or_default();
        let user = section("user").and_then(|(item, span)| {
            let user = self.string(item, &span, "user")?;
            if is_user_name(user) {
                Some(user.to_string())
            } else {
                self.error(
                    &span,
                    "user",
                    format!("{user:?} is neither a user name nor a numeric uid"),
                );
                None
            }
        });
        let env = section("env")
            .map(|(item, span)| self.env(item, &span, &secrets))
            .unwrap_or_default();
        let isolation = section("isolation")
            .map(|(item, span)| self.isolation(item, &span))
            .unwrap_or_default();
        let pin = section("pin")
            .map(|(item, span)| self.pin(item, &span))
            .unwrap_or_default();
        let mcp = section("mcp")
            .map(|(item, span)| self.mcp(item, &span))
            .unwrap_or_default();
        let access = section("access")
            .map(|(item, span)| self.access(item, &span))
            .unwrap_or_default();
        let command = section("command")
            .and_then(|(item, span)| self.command(item, &span, isolation.backend));
        let audit = section("audit")
            .map(|(item, span)| self.audit(item, &span))
            .unwrap_or_default();
        Some(Policy {
            name: name?,
            source: source.map(Path::to_path_buf),
            filesystem,
            network,
            syscalls,
            limits,
            tools,
            secrets,
            detect,
            enforcement,
            user,
            env,
            isolation,
            pin,
            mcp,
            access,
            audit,
            command,
        })
    }

    fn isolation(&mut self, item: &Item, span: &Span) -> Isolation {
        let mut iso = Isolation::default();
        let keys = &["backend", "image", "allow_tag", "engine"];
        let Some(table) = self.table(item, span, "isolation", keys) else {
            return iso;
        };
        if let Some(v) = table.get("backend") {
            let (_, s) = entry(table, "backend", span);
            match self.string(v, &s, "isolation.backend") {
                Some("jail") => iso.backend = Backend::Jail,
                Some("container") => iso.backend = Backend::Container,
                Some(other) => self.error(
                    &s,
                    "isolation.backend",
                    format!("{other:?} is not one of jail, container"),
                ),
                None => {}
            }
        }
        if let Some(v) = table.get("allow_tag") {
            let (_, s) = entry(table, "allow_tag", span);
            iso.allow_tag = self.boolean(v, &s, "isolation.allow_tag").unwrap_or(false);
        }
        if let Some(v) = table.get("engine") {
            let (_, s) = entry(table, "engine", span);
            if let Some(addr) = self.string(v, &s, "isolation.engine") {
                if addr.starts_with("unix:///") {
                    iso.engine = Some(addr.to_string());
                } else {
                    self.error(
                        &s,
                        "isolation.engine",
                        format!(
                            "{addr:?}: the engine address is a local socket, unix:///PATH \
                             (e.g. unix:///run/podman/podman.sock)"
                        ),
                    );
                }
            }
        }
        let image_span = table
            .get("image")
            .map(|v| (v, entry(table, "image", span).1));
        if let Some((v, s)) = &image_span
            && let Some(text) = self.string(v, s, "isolation.image")
        {
            match parse_image(text) {
                Ok(image) => {
                    if image.digest.is_none() && !iso.allow_tag {
                        self.error(
                            s,
                            "isolation.image",
                            format!(
                                "{text:?} names a tag, not a digest: a tag can be moved to \
                                 other content; pin it as name@sha256:... (see `podman images \
                                 --digests`), or set allow_tag = true to accept the risk"
                            ),
                        );
                    }
                    iso.image = Some(image);
                }
                Err(e) => self.error(s, "isolation.image", e),
            }
        }
        if iso.backend == Backend::Container && image_span.is_none() {
            self.error(
                span,
                "isolation.image",
                "missing: backend = \"container\" needs image = \"name@sha256:...\"",
            );
        }
        if iso.backend == Backend::Jail
            && let Some((_, s)) = &image_span
        {
            self.error(
                s,
                "isolation.image",
                "only used with backend = \"container\"",
            );
        }
        iso
    }

    fn env(&mut self, item: &Item, span: &Span, secrets: &BTreeMap<String, Secret>) -> Env {
        let mut env = Env::default();
        let Some(table) = self.table(item, span, "env", &["pass"]) else {
            return env;
        };
        if let Some(value) = table.get("pass") {
            let (_, value_span) = entry(table, "pass", span);
            for (s, s_span, s_path) in self.strings(value, &value_span, "env.pass") {
                if !is_env_name(s) {
                    self.error(
                        &s_span,
                        &s_path,
                        format!("{s:?} is not an environment variable name"),
                    );
                } else if secrets.contains_key(s) {
                    self.error(
                        &s_span,
                        &s_path,
                        format!("{s} is also a secret; a variable comes from one place"),
                    );
                } else {
                    env.pass.push(s.to_string());
                }
            }
        }
        env
    }

    fn filesystem(&mut self, item: &Item, span: &Span) -> Filesystem {
        let mut fs = Filesystem::default();
        let Some(table) = self.table(item, span, "filesystem", &["read", "write", "exec"]) else {
            return fs;
        };
        for (key, list) in [
            ("read", &mut fs.read),
            ("write", &mut fs.write),
            ("exec", &mut fs.exec),
        ] {
            let Some(value) = table.get(key) else {
                continue;
            };
            let (_, value_span) = entry(table, key, span);
            for (s, s_span, s_path) in self.strings(value, &value_span, &join("filesystem", key)) {
                match check_fs_path(s) {
                    Ok(()) => list.push(s.to_string()),
                    Err(m) => self.error(&s_span, &s_path, m),
                }
            }
        }
        fs
    }

    fn network(&mut self, item: &Item, span: &Span) -> Network {
        let mut network = Network::default();
        let Some(table) = self.table(item, span, "network", &["allow", "unix"]) else {
            return network;
        };
        if let Some(value) = table.get("allow") {
            let (_, value_span) = entry(table, "allow", span);
            for (s, s_span, s_path) in self.strings(value, &value_span, "network.allow") {
                match parse_net_allow(s) {
                    Ok(allow) => network.allow.push(allow),
                    Err(m) => self.error(&s_span, &s_path, m),
                }
            }
        }
        if let Some(value) = table.get("unix") {
            let (_, value_span) = entry(table, "unix", span);
            for (s, s_span, s_path) in self.strings(value, &value_span, "network.unix") {
                match unix::check_unix_socket(s) {
                    Ok(()) => network.unix.push(s.to_string()),
                    Err(m) => self.error(&s_span, &s_path, m),
                }
            }
        }
        network
    }

    fn syscalls(&mut self, item: &Item, span: &Span) -> Syscalls {
        let mut syscalls = Syscalls::default();
        let Some(table) = self.table(item, span, "syscalls", &["deny"]) else {
            return syscalls;
        };
        if let Some(value) = table.get("deny") {
            let (_, value_span) = entry(table, "deny", span);
            for (s, s_span, s_path) in self.strings(value, &value_span, "syscalls.deny") {
                if syscall_number(s).is_some() {
                    syscalls.deny.push(s.to_string());
                } else {
                    self.error(
                        &s_span,
                        &s_path,
                        format!(
                            "unknown syscall {s:?} (not a system call name on {})",
                            std::env::consts::ARCH
                        ),
                    );
                }
            }
        }
        syscalls
    }

    fn limits(&mut self, item: &Item, span: &Span) -> Limits {
        let mut limits = Limits::default();
        let Some(table) = self.table(item, span, "limits", &["memory", "pids", "cpu"]) else {
            return limits;
        };
        if let Some(value) = table.get("memory") {
            let (_, s) = entry(table, "memory", span);
            let bytes = match value.as_value() {
                Some(Value::String(text)) => parse_size(text.value()),
                Some(Value::Integer(n)) => {
                    u64::try_from(*n.value()).map_err(|_| "must be positive".to_string())
                }
                _ => Err(format!(
                    "expected a size like \"512M\" or a number of bytes, found {}",
                    describe(value)
                )),
            };
            match bytes {
                Ok(b) if b >= MIN_MEMORY => limits.memory = Some(b),
                Ok(b) => self.error(
                    &s,
                    "limits.memory",
                    format!("{b} bytes is too little for any server; the minimum is 1M"),
                ),
                Err(m) => self.error(&s, "limits.memory", m),
            }
        }
        if let Some(value) = table.get("pids") {
            let (_, s) = entry(table, "pids", span);
            match value.as_integer() {
                Some(n) if (1..=MAX_PIDS).contains(&n) => limits.pids = u64::try_from(n).ok(),
                Some(n) => self.error(
                    &s,
                    "limits.pids",
                    format!("{n} is out of range: 1 to {MAX_PIDS} tasks"),
                ),
                None => self.error(
                    &s,
                    "limits.pids",
                    format!(
                        "expected a whole number of tasks, found {}",
                        describe(value)
                    ),
                ),
            }
        }
        if let Some(value) = table.get("cpu") {
            let (_, s) = entry(table, "cpu", span);
            #[allow(clippy::cast_precision_loss)] // small integers are exact in f64
            let cores = value
                .as_float()
                .or_else(|| value.as_integer().map(|n| n as f64));
            match cores {
                Some(c) if (MIN_CPU..=MAX_CPU).contains(&c) => limits.cpu = Some(c),
                Some(c) => self.error(
                    &s,
                    "limits.cpu",
                    format!("{c} is out of range: {MIN_CPU} to {MAX_CPU} cores"),
                ),
                None => self.error(
                    &s,
                    "limits.cpu",
                    format!(
                        "expected a number of cores like 1.5, found {}",
                        describe(value)
                    ),
                ),
            }
        }
        limits
    }

    fn tools(&mut self, item: &Item, span: &Span) -> Tools {
        let mut tools = Tools::default();
        let Some(table) = self.table(
            item,
            span,
            "tools",
            &["allow", "deny", "clients", "args", "validate_schema"],
        ) else {
            return tools;
        };
        if let Some(value) = table.get("clients") {
            let (_, s) = entry(table, "clients", span);
            tools.clients = self.tool_clients(value, &s);
        }
        if let Some(value) = table.get("args") {
            let (_, s) = entry(table, "args", span);
            tools.args = self.tool_args(value, &s);
        }
        if let Some(value) = table.get("validate_schema") {
            let (_, s) = entry(table, "validate_schema", span);
            if let Some(b) = self.boolean(value, &s, "tools.validate_schema") {
                tools.validate_schema = b;
            }
        }
        let mut lists: [Vec<(String, Span, String)>; 2] = [Vec::new(), Vec::new()];
        for (i, key) in ["allow", "deny"].into_iter().enumerate() {
            let Some(value) = table.get(key) else {
                continue;
            };
            let (_, value_span) = entry(table, key, span);
            if i == 0 {
                tools.allow = Some(Vec::new());
            }
            for (s, s_span, s_path) in self.strings(value, &value_span, &join("tools", key)) {
                if !mcp::is_tool_name(s) {
                    self.error(
                        &s_span,
                        &s_path,
                        format!("{s:?} is not a tool name (empty, or has spaces or controls)"),
                    );
                } else {
                    lists[i].push((s.to_string(), s_span, s_path));
                }
            }
        }
        let [allow, deny] = lists;
        for (name, s_span, s_path) in &deny {
            if allow.iter().any(|(a, _, _)| a == name) {
                self.error(
                    s_span,
                    s_path,
                    format!("{name:?} is both in tools.allow and tools.deny; keep one"),
                );
            }
        }
        if let Some(list) = tools.allow.as_mut() {
            list.extend(allow.into_iter().map(|(n, _, _)| n));
        }
        tools.deny = deny.into_iter().map(|(n, _, _)| n).collect();
        tools
    }

    fn secrets(&mut self, item: &Item, span: &Span) -> BTreeMap<String, Secret> {
        let mut secrets = BTreeMap::new();
        let Some(table) = item.as_table_like() else {
            self.error(
                span,
                "secrets",
                format!("expected a table, found {}", describe(item)),
            );
            return secrets;
        };
        for (var, value) in table.iter() {
            let path = join("secrets", var);
            let (key_span, value_span) = entry(table, var, span);
            if !is_env_name(var) {
                self.error(
                    &key_span,
                    &path,
                    format!(
                        "{var:?} is not an environment variable name (letters, digits, '_', not \
                         starting with a digit)"
                    ),
                );
            }
            if value.as_str().is_some() {
                // Never echo the value: it is likely a real secret.
                self.error(
                    &value_span,
                    &path,
                    format!(
                        "secrets are never written in the policy: put the value in a file or a \
                         systemd credential and write {var} = {{ file = \"/path\" }} or \
                         {var} = {{ credential = \"NAME\" }}"
                    ),
                );
                continue;
            }
            let Some(spec) = value.as_table_like() else {
                self.error(
                    &value_span,
                    &path,
                    format!(
                        "expected {{ file = \"/path\" }} or {{ credential = \"NAME\" }}, found {}",
                        describe(value)
                    ),
                );
                continue;
            };
            if self
                .table(value, &value_span, &path, &["file", "credential"])
                .is_none()
            {
                continue;
            }
            let secret = match (spec.get("file"), spec.get("credential")) {
                (Some(_), Some(_)) => {
                    self.error(
                        &value_span,
                        &path,
                        "give either file or credential, not both",
                    );
                    None
                }
                (None, None) => {
                    if spec.iter().next().is_none() {
                        self.error(
                            &value_span,
                            &path,
                            "expected { file = \"/path\" } or { credential = \"NAME\" }",
                        );
                    }
                    None
                }
                (Some(file), None) => {
                    let (_, s) = entry(spec, "file", &value_span);
                    let key = join(&path, "file");
                    match self.string(file, &s, &key) {
                        Some(f) if f.starts_with('/') && !has_dot_dot(f) => {
                            Some(Secret::File(PathBuf::from(f)))
                        }
                        Some(f) => {
                            self.error(
                                &s,
                                &key,
                                format!("{f:?} must be an absolute path without '..'"),
                            );
                            None
                        }
                        None => None,
                    }
                }
                (None, Some(credential)) => {
                    let (_, s) = entry(spec, "credential", &value_span);
                    let key = join(&path, "credential");
                    match self.string(credential, &s, &key) {
                        Some(c) if is_credential_name(c) => Some(Secret::Credential(c.to_string())),
                        Some(c) => {
                            self.error(
                                &s,
                                &key,
                                format!(
                                    "{c:?} is not a systemd credential name (non-empty, no '/', \
                                     not '.' or '..')"
                                ),
                            );
                            None
                        }
                        None => None,
                    }
                }
            };
            if let Some(secret) = secret {
                secrets.insert(var.to_string(), secret);
            }
        }
        secrets
    }

    fn pin(&mut self, item: &Item, span: &Span) -> Pins {
        let mut pins = Pins::default();
        let known = ["executable", "file", "npm", "pypi", "signature"];
        let Some(table) = self.table(item, span, "pin", &known) else {
            return pins;
        };
        if let Some(value) = table.get("executable") {
            let (_, s) = entry(table, "executable", span);
            pins.executable = self.digest(value, &s, "pin.executable");
        }
        if let Some(value) = table.get("file") {
            let (_, s) = entry(table, "file", span);
            for (t, ts, path) in self.tables(value, &s, "pin.file", &["path", "digest"]) {
                let path_ = self.pin_path(t, &ts, &path, "path");
                let digest = self.pin_digest(t, &ts, &path, "digest");
                if let (Some(path), Some(digest)) = (path_, digest) {
                    pins.files.push(FilePin { path, digest });
                }
            }
        }
        if let Some(value) = table.get("npm") {
            let (_, s) = entry(table, "npm", span);
            let keys = ["dir", "name", "version", "integrity", "tree"];
            for (t, ts, path) in self.tables(value, &s, "pin.npm", &keys) {
                let dir = self.pin_path(t, &ts, &path, "dir");
                let name = self.pin_string(t, &ts, &path, "name", true);
                let version = self.pin_string(t, &ts, &path, "version", true);
                let integrity = self.pin_string(t, &ts, &path, "integrity", false);
                if let Some(i) = &integrity
                    && !is_sri(i)
                {
                    let (_, is) = entry(t, "integrity", &ts);
                    self.error(
                        &is,
                        &join(&path, "integrity"),
                        format!("{i:?} is not an SRI hash such as \"sha512-<base64>\""),
                    );
                }
                let tree = self.pin_digest(t, &ts, &path, "tree");
                if let (Some(dir), Some(name), Some(version), Some(tree)) =
                    (dir, name, version, tree)
                {
                    pins.npm.push(NpmPin {
                        dir,
                        name,
                        version,
                        integrity,
                        tree,
                    });
                }
            }
        }
        if let Some(value) = table.get("pypi") {
            let (_, s) = entry(table, "pypi", span);
            let keys = ["site_packages", "name", "version", "record"];
            for (t, ts, path) in self.tables(value, &s, "pin.pypi", &keys) {
                let site = self.pin_path(t, &ts, &path, "site_packages");
                let name = self.pin_string(t, &ts, &path, "name", true);
                let version = self.pin_string(t, &ts, &path, "version", true);
                let record = self.pin_digest(t, &ts, &path, "record");
                if let (Some(site_packages), Some(name), Some(version), Some(record)) =
                    (site, name, version, record)
                {
                    pins.pypi.push(PypiPin {
                        site_packages,
                        name,
                        version,
                        record,
                    });
                }
            }
        }
        if let Some(value) = table.get("signature") {
            let (_, s) = entry(table, "signature", span);
            let keys = ["allowed_signers", "identity", "namespace", "file"];
            if let Some(t) = self.table(value, &s, "pin.signature", &keys) {
                let p = "pin.signature";
                let signers = self.pin_path(t, &s, p, "allowed_signers");
                let identity = self.pin_string(t, &s, p, "identity", true);
                let namespace = self.pin_string(t, &s, p, "namespace", false);
                let file = self.pin_path(t, &s, p, "file");
                if let (Some(allowed_signers), Some(identity), Some(file)) =
                    (signers, identity, file)
                {
                    pins.signature = Some(PinSignature {
                        key: SignerKey {
                            allowed_signers,
                            identity,
                            namespace: namespace.unwrap_or_else(|| "mcp-guard-pins".into()),
                        },
                        file,
                    });
                }
            }
        }
        if pins.signature.is_some() && pins.is_empty() {
            self.error(
                span,
                "pin.signature",
                "a signature over no pins protects nothing: add the pins it signs",
            );
        }
        pins
    }

    /// An array of tables (`[[x]]` or `x = [{...}]`), each checked for unknown keys.
    fn tables<'d>(
        &mut self,
        item: &'d Item,
        span: &Span,
        path: &str,
        known: &[&str],
    ) -> Vec<(&'d dyn TableLike, Span, String)> {
        let mut found: Vec<(&'d dyn TableLike, Span)> = Vec::new();
        if let Some(aot) = item.as_array_of_tables() {
            for t in aot.iter() {
                found.push((t, t.span().or_else(|| span.clone())));
            }
        } else if let Some(array) = item.as_array() {
            for v in array.iter() {
                match v.as_inline_table() {
                    Some(t) => found.push((t, t.span().or_else(|| span.clone()))),
                    None => self.error(
                        &v.span().or_else(|| span.clone()),
                        path,
                        format!("expected a table, found {}", describe_value(v)),
                    ),
                }
            }
        } else {
            self.error(
                span,
                path,
                format!("expected an array of tables, found {}", describe(item)),
            );
        }
        let mut out = Vec::new();
        for (i, (t, ts)) in found.into_iter().enumerate() {
            let tpath = format!("{path}[{i}]");
            for (key, _) in t.iter() {
                if !known.contains(&key) {
                    let (ks, _) = entry(t, key, &ts);
                    self.error(
                        &ks,
                        &join(&tpath, key),
                        format!("unknown key (expected one of: {})", known.join(", ")),
                    );
                }
            }
            out.push((t, ts, tpath));
        }
        out
    }

    fn pin_string(
        &mut self,
        t: &dyn TableLike,
        span: &Span,
        path: &str,
        key: &str,
        required: bool,
    ) -> Option<String> {
        let kpath = join(path, key);
        match t.get(key) {
            None => {
                if required {
                    self.error(span, &kpath, "missing");
                }
                None
            }
            Some(v) => {
                let (_, s) = entry(t, key, span);
                match self.string(v, &s, &kpath) {
                    Some("") => {
                        self.error(&s, &kpath, "must not be empty");
                        None
                    }
                    other => other.map(str::to_string),
                }
            }
        }
    }

    fn pin_path(
        &mut self,
        t: &dyn TableLike,
        span: &Span,
        path: &str,
        key: &str,
    ) -> Option<PathBuf> {
        let s = self.pin_string(t, span, path, key, true)?;
        if !s.starts_with('/') || has_dot_dot(&s) {
            let (_, vs) = entry(t, key, span);
            self.error(
                &vs,
                &join(path, key),
                format!("{s:?} must be an absolute path without '..'"),
            );
            return None;
        }
        Some(PathBuf::from(s))
    }

    fn pin_digest(
        &mut self,
        t: &dyn TableLike,
        span: &Span,
        path: &str,
        key: &str,
    ) -> Option<String> {
        let kpath = join(path, key);
        let Some(v) = t.get(key) else {
            self.error(
                span,
                &kpath,
                "missing (`mcp-guard policy pin -- CMD` writes it)",
            );
            return None;
        };
        let (_, s) = entry(t, key, span);
        self.digest(v, &s, &kpath)
    }

    /// `sha256:` and 64 lowercase hex digits.
    fn digest(&mut self, item: &Item, span: &Span, path: &str) -> Option<String> {
        let d = self.string(item, span, path)?;
        let ok = d.strip_prefix("sha256:").is_some_and(|h| {
            h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        });
        if ok {
            Some(d.to_string())
        } else {
            self.error(
                span,
                path,
                format!("{d:?} is not \"sha256:\" followed by 64 lowercase hex digits"),
            );
            None
        }
    }

    fn detect(&mut self, item: &Item, span: &Span) -> Detect {
        let mut detect = Detect::default();
        let Some(table) = self.table(
            item,
            span,
            "detect",
            &["sensitive", "on_sensitive", "rules", "learn"],
        ) else {
            return detect;
        };
        if let Some(value) = table.get("sensitive") {
            let (_, value_span) = entry(table, "sensitive", span);
            for (s, s_span, s_path) in self.strings(value, &value_span, "detect.sensitive") {
                let anchored = s.starts_with('/') || s.starts_with("~/") || s.starts_with("**/");
                if !anchored {
                    self.error(
                        &s_span,
                        &s_path,
                        format!("{s:?} must start with '/', '~/' or '**/'"),
                    );
                } else if has_dot_dot(s) {
                    self.error(&s_span, &s_path, format!("{s:?} must not contain '..'"));
                } else {
                    detect.sensitive.push(s.to_string());
                }
            }
        }
        if let Some(value) = table.get("on_sensitive") {
            let (_, s) = entry(table, "on_sensitive", span);
            match self.string(value, &s, "detect.on_sensitive") {
                Some("alert") => detect.on_sensitive = OnSensitive::Alert,
                Some("deny-call") => detect.on_sensitive = OnSensitive::DenyCall,
                Some("kill") => detect.on_sensitive = OnSensitive::Kill,
                Some(other) => self.error(
                    &s,
                    "detect.on_sensitive",
                    format!("{other:?} is not one of alert, deny-call, kill"),
                ),
                None => {}
            }
        }
        if let Some(value) = table.get("learn") {
            let (_, s) = entry(table, "learn", span);
            detect.learn = self.boolean(value, &s, "detect.learn").unwrap_or(false);
        }
        if let Some(value) = table.get("rules") {
            let (_, rules_span) = entry(table, "rules", span);
            if let Some(rules) = self.table(value, &rules_span, "detect.rules", DETECT_RULES) {
                for (name, rule) in rules.iter() {
                    let (_, r_span) = entry(rules, name, &rules_span);
                    let path = format!("detect.rules.{name}");
                    if DETECT_RULES.contains(&name) {
                        let parsed = self.detect_rule(rule, &r_span, &path);
                        detect.rules.insert(name.to_string(), parsed);
                    }
                }
            }
        }
        detect
    }

    fn detect_rule(&mut self, item: &Item, span: &Span, path: &str) -> DetectRule {
        let mut rule = DetectRule::default();
        let Some(table) = self.table(item, span, path, &["enabled", "severity", "action"]) else {
            return rule;
        };
        if let Some(v) = table.get("enabled") {
            let (_, s) = entry(table, "enabled", span);
            rule.enabled = self.boolean(v, &s, &join(path, "enabled"));
        }
        if let Some(v) = table.get("severity") {
            let (_, s) = entry(table, "severity", span);
            let key = join(path, "severity");
            if let Some(text) = self.string(v, &s, &key) {
                match text.parse::<crate::store::Severity>() {
                    Ok(sev) => rule.severity = Some(sev),
                    Err(e) => self.error(&s, &key, e.to_string()),
                }
            }
        }
        if let Some(v) = table.get("action") {
            let (_, s) = entry(table, "action", span);
            let key = join(path, "action");
            match self.string(v, &s, &key) {
                Some("alert") => rule.action = Some(OnSensitive::Alert),
                Some("deny-call") => rule.action = Some(OnSensitive::DenyCall),
                Some("kill") => rule.action = Some(OnSensitive::Kill),
                Some(other) => self.error(
                    &s,
                    &key,
                    format!("{other:?} is not one of alert, deny-call, kill"),
                ),
                None => {}
            }
        }
        rule
    }

    fn access(&mut self, item: &Item, span: &Span) -> Access {
        let mut access = Access::default();
        let Some(table) = self.table(item, span, "access", &["users", "groups"]) else {
            return access;
        };
        for (key, list) in [("users", &mut access.users), ("groups", &mut access.groups)] {
            if let Some(value) = table.get(key) {
                let (_, value_span) = entry(table, key, span);
                for (s, s_span, s_path) in self.strings(value, &value_span, &join("access", key)) {
                    if is_user_name(s) {
                        list.push(s.to_string());
                    } else {
                        self.error(
                            &s_span,
                            &s_path,
                            format!("{s:?} is neither a name nor a numeric id"),
                        );
                    }
                }
            }
        }
        access
    }

    fn enforcement(&mut self, item: &Item, span: &Span) -> Enforcement {
        let mut enforcement = Enforcement::default();
        let Some(table) = self.table(item, span, "enforcement", &["observe", "allow_degraded"])
        else {
            return enforcement;
        };
        for (key, flag) in [
            ("observe", &mut enforcement.observe),
            ("allow_degraded", &mut enforcement.allow_degraded),
        ] {
            if let Some(value) = table.get(key) {
                let (_, s) = entry(table, key, span);
                if let Some(b) = self.boolean(value, &s, &join("enforcement", key)) {
                    *flag = b;
                }
            }
        }
        enforcement
    }
}

/// The spans of `key` and of its value in `table`, falling back to the key's, then the parent's.
fn entry(table: &dyn TableLike, key: &str, parent: &Span) -> (Span, Span) {
    match table.get_key_value(key) {
        Some((k, item)) => {
            let key_span = k.span().or_else(|| item.span()).or_else(|| parent.clone());
            let value_span = item.span().or_else(|| key_span.clone());
            (key_span, value_span)
        }
        None => (parent.clone(), parent.clone()),
    }
}

/// `parent.key`, quoting keys that are not bare TOML keys.
fn join(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

fn describe(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Value(v) => describe_value(v),
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
    }
}

fn describe_value(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::InlineTable(_) => "a table",
    }
}

/// Smallest memory limit accepted: below this nothing starts, so it is surely a typo.
const MIN_MEMORY: u64 = 1 << 20;
/// The kernel's PID_MAX_LIMIT on 64-bit.
const MAX_PIDS: i64 = 4_194_304;
/// cgroup cpu.max cannot express less than 1ms per 100ms period.
const MIN_CPU: f64 = 0.01;
/// More cores than any host has: a larger value is a typo, not a limit.
const MAX_CPU: f64 = 1024.0;

/// A policy or server name: 1 to 64 of `[A-Za-z0-9._-]`, starting with a letter or digit (it
/// becomes a file name, a cgroup name and a metric label).
fn is_safe_name(name: &str) -> bool {
    name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A portable environment variable name.
fn is_env_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A POSIX user name (as useradd accepts) or a numeric uid.
fn is_user_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && (!name.chars().all(|c| c.is_ascii_digit()) || name.parse::<u32>().is_ok())
}

/// A systemd credential name: a file name inside `$CREDENTIALS_DIRECTORY`.
fn is_credential_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 255
        && !name.contains('/')
        && !name.contains('\0')
}

/// A Subresource Integrity value as npm writes it: `sha512-<base64>` (or sha256/sha384/sha1).
fn is_sri(s: &str) -> bool {
    s.split_once('-').is_some_and(|(alg, b64)| {
        matches!(alg, "sha1" | "sha256" | "sha384" | "sha512")
            && !b64.is_empty()
            && b64
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    })
}

fn has_dot_dot(path: &str) -> bool {
    path.split('/').any(|c| c == "..")
}

/// A `[filesystem]` entry: absolute or `~/`-relative, no `..`, no glob.
fn check_fs_path(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("empty path".into());
    }
    if s.starts_with('~') && s != "~" && !s.starts_with("~/") {
        return Err(format!(
            "{s:?}: ~user is not supported; use ~/ (the server user's home) or an absolute path"
        ));
    }
    if !(s.starts_with('/') || s.starts_with('~')) {
        return Err(format!("{s:?} must be absolute or start with ~/"));
    }
    if has_dot_dot(s) {
        return Err(format!("{s:?} must not contain '..'"));
    }
    if s.contains('\0') {
        return Err(format!("{s:?} contains a NUL byte"));
    }
    if s.contains(['*', '?', '[']) {
        return Err(format!(
            "{s:?} is a glob; filesystem entries are paths (a directory grants its whole tree)"
        ));
    }
    Ok(())
}

/// Parses a `[network] allow` entry (see [`NetAllow`]).
fn parse_net_allow(s: &str) -> Result<NetAllow, String> {
    let (target, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return Err(format!("{s:?}: missing ']' after the IPv6 address"));
        };
        let Some(port) = after.strip_prefix(':') else {
            return Err(format!("{s:?} has no port (write [{inside}]:PORT)"));
        };
        let net = if inside.contains('/') {
            match IpNet::from_str(inside) {
                Ok(net @ IpNet::V6(_)) => check_net_bits(net, s)?,
                _ => return Err(format!("{s:?}: {inside:?} is not an IPv6 network")),
            }
        } else {
            match Ipv6Addr::from_str(inside) {
                Ok(addr) => IpNet::from(IpAddr::V6(addr)),
                Err(_) => return Err(format!("{s:?}: {inside:?} is not an IPv6 address")),
            }
        };
        (NetTarget::Net(net), port)
    } else {
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(format!("{s:?} has no port (write {s}:PORT, e.g. {s}:443)"));
        };
        if host.contains(':') {
            return Err(format!(
                "{s:?}: write IPv6 addresses in brackets, e.g. [::1]:443 or [fd00::/8]:443"
            ));
        }
        (parse_host(host, s)?, port)
    };
    let (port_lo, port_hi) = parse_ports(port, s)?;
    Ok(NetAllow {
        target,
        port_lo,
        port_hi,
    })
}

fn check_net_bits(net: IpNet, s: &str) -> Result<IpNet, String> {
    if net.trunc() == net {
        Ok(net)
    } else {
        Err(format!(
            "{s:?}: {net} has bits set past the prefix length (did you mean {}?)",
            net.trunc()
        ))
    }
}

fn parse_host(host: &str, s: &str) -> Result<NetTarget, String> {
    if host.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    if host.contains('/') {
        return match IpNet::from_str(host) {
            Ok(net @ IpNet::V4(_)) => Ok(NetTarget::Net(check_net_bits(net, s)?)),
            _ => Err(format!(
                "{s:?}: {host:?} is not an IPv4 network (e.g. 10.0.0.0/8)"
            )),
        };
    }
    if let Ok(addr) = Ipv4Addr::from_str(host) {
        return Ok(NetTarget::Net(IpNet::from(IpAddr::V4(addr))));
    }
    if host.starts_with("*.") {
        return Err(format!(
            "{s:?}: wildcard names are not supported; list each host name"
        ));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if !is_dns_name(name) {
        return Err(format!(
            "{s:?}: {host:?} is neither an IPv4 address, a network nor a DNS name"
        ));
    }
    Ok(NetTarget::Host(name.to_ascii_lowercase()))
}

/// A DNS host name (letters, digits, hyphens; labels of 1 to 63; at most 253; the last label not
/// all digits, which would be a mistyped address).
fn is_dns_name(name: &str) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    name.len() <= 253
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|l| !l.chars().all(|c| c.is_ascii_digit()))
}

/// `443`, `8000-8999` or `*` (1-65535).
fn parse_ports(port: &str, s: &str) -> Result<(u16, u16), String> {
    if port.is_empty() {
        return Err(format!("{s:?} has no port"));
    }
    if port == "*" {
        return Ok((1, u16::MAX));
    }
    // Digits only: u16's parser would also take "+443".
    let one = |p: &str| match p.parse::<u16>() {
        Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!("{s:?}: {p:?} is not a port (1 to 65535)")),
    };
    match port.split_once('-') {
        Some((lo, hi)) => {
            let (lo, hi) = (one(lo)?, one(hi)?);
            if lo > hi {
                return Err(format!("{s:?}: port range {lo}-{hi} is reversed"));
            }
            Ok((lo, hi))
        }
        None => one(port).map(|p| (p, p)),
    }
}

/// `512M`, `1G`, `100K`, `2048` (bytes); units are binary (K = 1024) as the kernel's limits are;
/// `KiB`/`MB`-style spellings mean the same.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let bad =
        || format!("{text:?} is not a size: write a whole number with K, M, G or T, e.g. 512M");
    let number: u64 = number.parse().map_err(|_| bad())?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(bad()),
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGE_D: &str = "sha256:abababababababababababababababababababababababababababababababab";

    /// The problems of an invalid policy as `line:col: key: message` strings.
    fn problems(text: &str) -> Vec<String> {
        let e = parse(text, Some(Path::new("t.toml"))).expect_err("policy should be invalid");
        assert_eq!(e.file, "t.toml");
        e.problems
            .iter()
            .map(|p| format!("{}:{}: {}: {}", p.line, p.col, p.key, p.message))
            .collect()
    }

    /// Asserts `text` has exactly one problem, at `line` and `key`, whose message contains `msg`.
    #[track_caller]
    fn one_problem(text: &str, line: usize, key: &str, msg: &str) {
        let e = parse(text, Some(Path::new("t.toml"))).expect_err("policy should be invalid");
        assert_eq!(e.problems.len(), 1, "expected one problem, got:\n{e}");
        let p = &e.problems[0];
        assert_eq!((p.line, p.key.as_str()), (line, key), "wrong place:\n{e}");
        assert!(p.message.contains(msg), "{:?} lacks {msg:?}", p.message);
    }

    fn ok(text: &str) -> Policy {
        parse(text, None).unwrap_or_else(|e| panic!("policy should be valid:\n{e}"))
    }

    #[test]
    fn container_isolation_pins_a_digest() {
        let p = ok(&format!(
            "name = \"x\"\n[isolation]\nbackend = \"container\"\nimage = \"localhost/srv:1@{IMAGE_D}\"\nengine = \"unix:///run/podman/podman.sock\"\n"
        ));
        assert_eq!(p.isolation.backend, Backend::Container);
        let image = p.isolation.image.expect("image");
        assert_eq!(image.name.as_deref(), Some("localhost/srv:1"));
        assert_eq!(image.digest.as_deref(), Some(IMAGE_D));
        assert_eq!(ok("name = \"x\"\n").isolation, Isolation::default());
    }

    #[test]
    fn container_isolation_errors_name_line_and_key() {
        one_problem(
            "name = \"x\"\n[isolation]\nbackend = \"container\"\nimage = \"srv:latest\"\n",
            4,
            "isolation.image",
            "names a tag, not a digest",
        );
        let tagged = ok(
            "name = \"x\"\n[isolation]\nbackend = \"container\"\nimage = \"srv:latest\"\nallow_tag = true\n",
        );
        assert_eq!(tagged.isolation.image.and_then(|i| i.digest), None);
        one_problem(
            "name = \"x\"\n[isolation]\nbackend = \"container\"\nimage = \"srv@sha256:12\"\n",
            4,
            "isolation.image",
            "64 lowercase hex",
        );
        one_problem(
            "name = \"x\"\n[isolation]\nbackend = \"vm\"\n",
            3,
            "isolation.backend",
            "not one of jail, container",
        );
        one_problem(
            "name = \"x\"\n[isolation]\nbackend = \"container\"\n",
            2,
            "isolation.image",
            "missing",
        );
        one_problem(
            &format!(
                "name = \"x\"\n[isolation]\nimage = \"a@{IMAGE_D}\"\nengine = \"unix:///s\"\n"
            ),
            3,
            "isolation.image",
            "only used with backend",
        );
        one_problem(
            &format!(
                "name = \"x\"\n[isolation]\nbackend = \"container\"\nimage = \"a@{IMAGE_D}\"\nengine = \"tcp://1.2.3.4:2375\"\n"
            ),
            5,
            "isolation.engine",
            "unix:///PATH",
        );
    }

    /// A fresh empty directory for one test.
    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("mcp-guard-policy-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        dir
    }

    #[test]
    fn minimal_policy_has_safe_defaults() {
        let p = ok("name = \"x\"\n");
        assert_eq!(p.name, "x");
        assert!(p.network.allow.is_empty());
        assert!(p.filesystem.read.is_empty() && p.filesystem.write.is_empty());
        assert_eq!(p.tools.allow, None);
        assert_eq!(p.detect.on_sensitive, OnSensitive::Alert);
        assert!(!p.enforcement.observe && !p.enforcement.allow_degraded);
    }

    #[test]
    fn full_policy_parses_into_the_model() {
        let p = parse(
            r#"name = "github"
[filesystem]
read = ["/usr", "~/.npm"]
write = ["/tmp"]
exec = ["/usr/bin/node"]
[network]
allow = ["API.GitHub.com.:443", "10.0.0.0/8:443", "127.0.0.1:8000-8999", "[::1]:80", "[fd00::/8]:*"]
[syscalls]
deny = ["personality"]
[limits]
memory = "512M"
pids = 128
cpu = 2
[tools]
allow = ["get_issue"]
deny = ["delete_repository"]
[secrets]
GITHUB_TOKEN = { file = "/etc/mcp-guard/secrets/github" }
[secrets.OTHER]
credential = "other"
[detect]
sensitive = ["~/.ssh/**", "**/.env"]
on_sensitive = "deny-call"
[enforcement]
observe = true
allow_degraded = true
"#,
            Some(Path::new("/p/github.toml")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.source.as_deref(), Some(Path::new("/p/github.toml")));
        assert_eq!(p.filesystem.read, ["/usr", "~/.npm"]);
        assert_eq!(p.filesystem.exec, ["/usr/bin/node"]);
        let net = |s: &str| NetTarget::Net(s.parse().expect("net"));
        assert_eq!(
            p.network.allow,
            [
                NetAllow {
                    target: NetTarget::Host("api.github.com".into()),
                    port_lo: 443,
                    port_hi: 443
                },
                NetAllow {
                    target: net("10.0.0.0/8"),
                    port_lo: 443,
                    port_hi: 443
                },
                NetAllow {
                    target: net("127.0.0.1/32"),
                    port_lo: 8000,
                    port_hi: 8999
                },
                NetAllow {
                    target: net("::1/128"),
                    port_lo: 80,
                    port_hi: 80
                },
                NetAllow {
                    target: net("fd00::/8"),
                    port_lo: 1,
                    port_hi: 65535
                },
            ]
        );
        assert_eq!(p.syscalls.deny, ["personality"]);
        assert_eq!(p.limits.memory, Some(512 << 20));
        assert_eq!(p.limits.pids, Some(128));
        assert_eq!(p.limits.cpu, Some(2.0));
        assert_eq!(p.tools.allow, Some(vec!["get_issue".to_string()]));
        assert_eq!(p.tools.deny, ["delete_repository"]);
        assert_eq!(
            p.secrets["GITHUB_TOKEN"],
            Secret::File("/etc/mcp-guard/secrets/github".into())
        );
        assert_eq!(p.secrets["OTHER"], Secret::Credential("other".into()));
        assert_eq!(p.detect.on_sensitive, OnSensitive::DenyCall);
        assert!(p.enforcement.observe && p.enforcement.allow_degraded);
    }

    #[test]
    fn every_problem_is_reported_in_file_order() {
        let all = problems(
            "name = \"a b\"\nbogus = 1\n[network]\nallow = [\"x.com\"]\n[limits]\npids = 0\n",
        );
        assert_eq!(all.len(), 4, "{all:#?}");
        assert!(all[0].starts_with("1:8: name: "), "{all:#?}");
        assert!(all[1].starts_with("2:1: bogus: unknown key"), "{all:#?}");
        assert!(all[2].starts_with("4:10: network.allow[0]: "), "{all:#?}");
        assert!(all[3].starts_with("6:8: limits.pids: "), "{all:#?}");
    }

    #[test]
    fn display_is_file_line_col_key_message() {
        let e = parse(
            "name = \"g\"\n[network]\nallow = [\n  \"a.com:1\",\n  \"b.com:2\",\n  \"api.github.com\",\n]\n",
            Some(Path::new("github.toml")),
        )
        .expect_err("invalid");
        assert_eq!(
            e.to_string(),
            "github.toml:6:3: network.allow[2]: \"api.github.com\" has no port (write \
             api.github.com:PORT, e.g. api.github.com:443)"
        );
    }

    #[test]
    fn invalid_toml_names_its_line() {
        let all = problems("name = \"x\"\n[limits]\nmemory = \n");
        assert_eq!(all.len(), 1);
        assert!(all[0].starts_with("3:"), "{all:?}");
        assert!(all[0].contains("invalid TOML"), "{all:?}");
        let dup = problems("name = \"x\"\nname = \"y\"\n");
        assert!(dup[0].starts_with("2:"), "{dup:?}");
    }

    #[test]
    fn unknown_keys_are_errors_at_every_level() {
        one_problem("name = \"x\"\nnetwrok = 1\n", 2, "netwrok", "unknown key");
        for section in [
            "filesystem",
            "network",
            "syscalls",
            "limits",
            "tools",
            "detect",
            "enforcement",
        ] {
            one_problem(
                &format!("name = \"x\"\n[{section}]\ntypo = 1\n"),
                3,
                &format!("{section}.typo"),
                "unknown key",
            );
        }
        one_problem(
            "name = \"x\"\n[secrets]\nT = { file = \"/s\", mode = 1 }\n",
            3,
            "secrets.T.mode",
            "unknown key",
        );
        // Dotted keys are the same keys.
        one_problem(
            "name = \"x\"\nlimits.mem = 1\n",
            2,
            "limits.mem",
            "unknown key",
        );
    }

    #[test]
    fn sections_must_be_tables() {
        one_problem(
            "name = \"x\"\nnetwork = 1\n",
            2,
            "network",
            "expected a table",
        );
        one_problem(
            "name = \"x\"\nsecrets = []\n",
            2,
            "secrets",
            "expected a table",
        );
    }

    #[test]
    fn name_is_required_and_safe() {
        one_problem("[limits]\npids = 1\n", 1, "name", "missing");
        one_problem("name = \"../etc\"\n", 1, "name", "not a server name");
        one_problem("name = \"\"\n", 1, "name", "not a server name");
        one_problem("name = \"-x\"\n", 1, "name", "not a server name");
        one_problem(
            &format!("name = \"{}\"\n", "a".repeat(65)),
            1,
            "name",
            "not a server name",
        );
        one_problem(
            "name = 3\n",
            1,
            "name",
            "expected a string, found an integer",
        );
        assert_eq!(ok("name = \"my-server_2.0\"\n").name, "my-server_2.0");
    }

    #[test]
    fn filesystem_entries_are_absolute_or_home_relative_paths() {
        let bad = [
            ("relative/x", "must be absolute"),
            ("", "empty"),
            ("/a/../b", ".."),
            ("~/..", ".."),
            ("~bob/x", "~user is not supported"),
            ("/home/*/x", "glob"),
        ];
        for (entry, msg) in bad {
            for key in ["read", "write", "exec"] {
                one_problem(
                    &format!("name = \"x\"\n[filesystem]\n{key} = [\"/ok\",\n  \"{entry}\"]\n"),
                    4,
                    &format!("filesystem.{key}[1]"),
                    msg,
                );
            }
        }
        one_problem(
            "name = \"x\"\n[filesystem]\nread = \"/usr\"\n",
            3,
            "filesystem.read",
            "expected an array of strings",
        );
        one_problem(
            "name = \"x\"\n[filesystem]\nread = [1]\n",
            3,
            "filesystem.read[0]",
            "found an integer",
        );
        let p = ok("name = \"x\"\n[filesystem]\nread = [\"~\", \"~/x\", \"/a/.b\"]\n");
        assert_eq!(p.filesystem.read, ["~", "~/x", "/a/.b"]);
    }

    #[test]
    fn network_entries_need_a_valid_host_and_port() {
        let bad = [
            ("api.github.com", "has no port"),
            ("api.github.com:", "has no port"),
            (":443", "has no host"),
            ("a.com:0", "not a port"),
            ("a.com:65536", "not a port"),
            ("a.com:https", "not a port"),
            ("a.com:+443", "not a port"),
            ("a.com:9-1", "reversed"),
            ("a.com:1-", "not a port"),
            ("10.0.0.1/8:443", "did you mean 10.0.0.0/8"),
            ("10.0.0.0/33:443", "not an IPv4 network"),
            ("999.1.1.1:443", "neither"),
            ("1.2.3:443", "neither"),
            ("bad_name.com:443", "neither"),
            ("-a.com:443", "neither"),
            ("a..com:443", "neither"),
            ("*.github.com:443", "wildcard"),
            ("::1:443", "brackets"),
            ("[::1]", "has no port"),
            ("[::1:443", "missing ']'"),
            ("[1.2.3.4]:443", "not an IPv6 address"),
            ("[fd00::1/8]:443", "did you mean fd00::/8"),
            ("[10.0.0.0/8]:443", "not an IPv6 network"),
        ];
        for (entry, msg) in bad {
            one_problem(
                &format!("name = \"x\"\n[network]\nallow = [\n\"a.com:1\", \"{entry}\"]\n"),
                4,
                "network.allow[1]",
                msg,
            );
        }
        let long_label = format!("{}.com:443", "a".repeat(64));
        one_problem(
            &format!("name = \"x\"\n[network]\nallow = [\"{long_label}\"]\n"),
            3,
            "network.allow[0]",
            "neither",
        );
        let p = ok("name = \"x\"\n[network]\nallow = [\"localhost:80\", \"1.2.3.4:*\"]\n");
        assert_eq!(
            p.network.allow[0].target,
            NetTarget::Host("localhost".into())
        );
        assert_eq!(
            (p.network.allow[1].port_lo, p.network.allow[1].port_hi),
            (1, 65535)
        );
    }

    #[test]
    fn unix_sockets_are_listed_exactly_and_errors_name_the_entry() {
        let p =
            ok("name = \"x\"\n[network]\nunix = [\"/run/postgresql/.s.PGSQL.5432\", \"@bus\"]\n");
        assert_eq!(p.network.unix, ["/run/postgresql/.s.PGSQL.5432", "@bus"]);
        assert!(
            ok("name = \"x\"\n").network.unix.is_empty(),
            "default: none"
        );
        one_problem(
            "name = \"x\"\n[network]\nunix = [\n\"/run/a.sock\", \"/run/../b.sock\"]\n",
            4,
            "network.unix[1]",
            "without '.', '..' or '//'",
        );
        one_problem(
            "name = \"x\"\n[network]\nunix = [\"relative.sock\"]\n",
            3,
            "network.unix[0]",
            "absolute socket path or @name",
        );
        one_problem(
            "name = \"x\"\n[network]\nunix = \"/run/a.sock\"\n",
            3,
            "network.unix",
            "",
        );
    }

    #[test]
    fn syscall_names_must_exist() {
        one_problem(
            "name = \"x\"\n[syscalls]\ndeny = [\"ptrace\", \"nosuchcall\"]\n",
            3,
            "syscalls.deny[1]",
            "unknown syscall \"nosuchcall\"",
        );
        assert!(syscall_number("read").is_some());
        assert_eq!(
            syscall_number("personality"),
            Some(i64::from(libc::SYS_personality as i32))
        );
        assert_eq!(syscall_number("nosuchcall"), None);
    }

    #[test]
    fn limits_are_checked() {
        for (text, bytes) in [
            ("\"512M\"", 512u64 << 20),
            ("\"1G\"", 1 << 30),
            ("\"2048K\"", 2048 << 10),
            ("\"2MiB\"", 2 << 20),
            ("\"3gb\"", 3 << 30),
            ("\"1048576\"", 1 << 20),
            ("1048576", 1 << 20),
        ] {
            let p = ok(&format!("name = \"x\"\n[limits]\nmemory = {text}\n"));
            assert_eq!(p.limits.memory, Some(bytes), "{text}");
        }
        for (text, msg) in [
            ("\"512X\"", "not a size"),
            ("\"1.5G\"", "not a size"),
            ("\"M\"", "not a size"),
            ("\"-1M\"", "not a size"),
            ("\"99999999999T\"", "too large"),
            ("\"100K\"", "too little"),
            ("0", "too little"),
            ("-5", "must be positive"),
            ("true", "found a boolean"),
        ] {
            one_problem(
                &format!("name = \"x\"\n[limits]\nmemory = {text}\n"),
                3,
                "limits.memory",
                msg,
            );
        }
        for (text, msg) in [
            ("0", "out of range"),
            ("-1", "out of range"),
            ("5000000", "out of range"),
            ("1.5", "whole number"),
        ] {
            one_problem(
                &format!("name = \"x\"\n[limits]\npids = {text}\n"),
                3,
                "limits.pids",
                msg,
            );
        }
        for (text, msg) in [
            ("0", "out of range"),
            ("0.0", "out of range"),
            ("-1.0", "out of range"),
            ("0.001", "out of range"),
            ("2000", "out of range"),
            ("nan", "out of range"),
            ("\"1\"", "expected a number"),
        ] {
            one_problem(
                &format!("name = \"x\"\n[limits]\ncpu = {text}\n"),
                3,
                "limits.cpu",
                msg,
            );
        }
        let p = ok("name = \"x\"\n[limits]\ncpu = 0.5\npids = 1\n");
        assert_eq!((p.limits.cpu, p.limits.pids), (Some(0.5), Some(1)));
    }

    #[test]
    fn tools_names_are_nonempty_and_not_both_allowed_and_denied() {
        one_problem(
            "name = \"x\"\n[tools]\nallow = [\"a\", \"b\"]\ndeny = [\"c\", \"b\"]\n",
            4,
            "tools.deny[1]",
            "both in tools.allow and tools.deny",
        );
        one_problem(
            "name = \"x\"\n[tools]\nallow = [\"\"]\n",
            3,
            "tools.allow[0]",
            "not a tool name",
        );
        one_problem(
            "name = \"x\"\n[tools]\ndeny = [\"a b\"]\n",
            3,
            "tools.deny[0]",
            "not a tool name",
        );
        assert_eq!(
            ok("name = \"x\"\n[tools]\nallow = []\n").tools.allow,
            Some(vec![])
        );
    }

    #[test]
    fn secrets_come_from_files_or_credentials_never_the_policy() {
        let text = "name = \"x\"\n[secrets]\nGITHUB_TOKEN = \"ghp_supersecret\"\n";
        one_problem(
            text,
            3,
            "secrets.GITHUB_TOKEN",
            "never written in the policy",
        );
        let e = parse(text, None).expect_err("invalid");
        assert!(
            !e.to_string().contains("ghp_supersecret"),
            "the error must not echo the secret: {e}"
        );
        for (line, key, msg) in [
            ("T = { file = \"rel\" }", "secrets.T.file", "absolute path"),
            (
                "T = { file = \"/a/../b\" }",
                "secrets.T.file",
                "absolute path",
            ),
            ("T = { file = 1 }", "secrets.T.file", "expected a string"),
            (
                "T = { credential = \"a/b\" }",
                "secrets.T.credential",
                "credential name",
            ),
            (
                "T = { credential = \"\" }",
                "secrets.T.credential",
                "credential name",
            ),
            (
                "T = { credential = \"..\" }",
                "secrets.T.credential",
                "credential name",
            ),
            (
                "T = { file = \"/a\", credential = \"b\" }",
                "secrets.T",
                "not both",
            ),
            ("T = {}", "secrets.T", "expected { file"),
            ("T = 1", "secrets.T", "expected { file"),
            (
                "\"1T\" = { file = \"/a\" }",
                "secrets.1T",
                "environment variable name",
            ),
            (
                "\"A-B\" = { file = \"/a\" }",
                "secrets.A-B",
                "environment variable name",
            ),
        ] {
            one_problem(&format!("name = \"x\"\n[secrets]\n{line}\n"), 3, key, msg);
        }
        one_problem(
            "name = \"x\"\n[secrets.T]\nfile = \"/a\"\nbad = 1\n",
            4,
            "secrets.T.bad",
            "unknown key",
        );
    }

    #[test]
    fn detect_learn_is_a_boolean() {
        let p = parse("name = \"x\"\n[detect]\nlearn = true\n", None).expect("valid");
        assert!(p.detect.learn);
        let p = parse("name = \"x\"\n", None).expect("valid");
        assert!(!p.detect.learn, "off unless asked");
        one_problem(
            "name = \"x\"\n[detect]\nlearn = \"yes\"\n",
            3,
            "detect.learn",
            "",
        );
    }

    #[test]
    fn detect_rules_tables_are_parsed_and_checked() {
        let p = parse(
            "name = \"x\"\n[detect.rules.new-egress]\nenabled = false\n[detect.rules.exfiltration]\nseverity = \"high\"\naction = \"kill\"\n",
            None,
        )
        .expect("valid rules");
        assert_eq!(p.detect.rules["new-egress"].enabled, Some(false));
        assert_eq!(
            p.detect.rules["exfiltration"].severity,
            Some(crate::store::Severity::High)
        );
        assert_eq!(
            p.detect.rules["exfiltration"].action,
            Some(OnSensitive::Kill)
        );
        for (text, key) in [
            (
                "[detect.rules.no-such-rule]\nenabled = true\n",
                "detect.rules.no-such-rule",
            ),
            (
                "[detect.rules.exfiltration]\nsevere = \"high\"\n",
                "detect.rules.exfiltration.severe",
            ),
            (
                "[detect.rules.exfiltration]\nseverity = \"dire\"\n",
                "detect.rules.exfiltration.severity",
            ),
            (
                "[detect.rules.exfiltration]\naction = \"explode\"\n",
                "detect.rules.exfiltration.action",
            ),
            (
                "[detect.rules.exfiltration]\nenabled = \"yes\"\n",
                "detect.rules.exfiltration.enabled",
            ),
        ] {
            let err = parse(&format!("name = \"x\"\n{text}"), None).expect_err(text);
            assert!(
                err.problems.iter().any(|p| p.key == key),
                "{text}: expected a problem at {key}, got {err}"
            );
        }
    }

    #[test]
    fn detect_patterns_and_action_are_checked() {
        one_problem(
            "name = \"x\"\n[detect]\nsensitive = [\"/a\", \"rel/**\"]\n",
            3,
            "detect.sensitive[1]",
            "must start with",
        );
        one_problem(
            "name = \"x\"\n[detect]\nsensitive = [\"~/../x\"]\n",
            3,
            "detect.sensitive[0]",
            "..",
        );
        one_problem(
            "name = \"x\"\n[detect]\non_sensitive = \"explode\"\n",
            3,
            "detect.on_sensitive",
            "not one of alert, deny-call, kill",
        );
        for (word, action) in [
            ("alert", OnSensitive::Alert),
            ("deny-call", OnSensitive::DenyCall),
            ("kill", OnSensitive::Kill),
        ] {
            let p = ok(&format!(
                "name = \"x\"\n[detect]\non_sensitive = \"{word}\"\n"
            ));
            assert_eq!(p.detect.on_sensitive, action);
        }
    }

    #[test]
    fn enforcement_flags_are_booleans() {
        one_problem(
            "name = \"x\"\n[enforcement]\nobserve = \"yes\"\n",
            3,
            "enforcement.observe",
            "expected true or false",
        );
        one_problem(
            "name = \"x\"\n[enforcement]\nallow_degraded = 1\n",
            3,
            "enforcement.allow_degraded",
            "expected true or false",
        );
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn pin_tables_parse_into_the_model() {
        let p = ok(&format!(
            "name = \"x\"\n[pin]\nexecutable = \"{D}\"\n\
             [[pin.file]]\npath = \"/srv/a.js\"\ndigest = \"{D}\"\n\
             [[pin.npm]]\ndir = \"/n/node_modules/p\"\nname = \"p\"\nversion = \"1.0.0\"\n\
             integrity = \"sha512-AbC+/=\"\ntree = \"{D}\"\n\
             [[pin.pypi]]\nsite_packages = \"/v/site\"\nname = \"q\"\nversion = \"2\"\n\
             record = \"{D}\"\n\
             [pin.signature]\nallowed_signers = \"/k/as\"\nidentity = \"me@x\"\n\
             file = \"/k/x.sig\"\n"
        ));
        assert_eq!(p.pin.executable.as_deref(), Some(D));
        assert_eq!(
            p.pin.files,
            [FilePin {
                path: "/srv/a.js".into(),
                digest: D.into()
            }]
        );
        assert_eq!(p.pin.npm[0].integrity.as_deref(), Some("sha512-AbC+/="));
        assert_eq!(p.pin.pypi[0].site_packages, Path::new("/v/site"));
        let sig = p.pin.signature.expect("signature");
        assert_eq!(sig.key.namespace, "mcp-guard-pins");
        assert_eq!(sig.key.identity, "me@x");
        // Inline arrays of tables are the same thing.
        let q = ok(&format!(
            "name = \"x\"\n[pin]\nfile = [{{ path = \"/a\", digest = \"{D}\" }}]\n"
        ));
        assert_eq!(q.pin.files.len(), 1);
        assert!(ok("name = \"x\"\n").pin.is_empty());
    }

    #[test]
    fn pin_values_are_checked() {
        one_problem(
            "name = \"x\"\n[pin]\nexecutable = \"sha256:ABC\"\n",
            3,
            "pin.executable",
            "64 lowercase hex",
        );
        one_problem(
            &format!("name = \"x\"\n[pin]\nexecutable = \"{D}\"\nbogus = 1\n"),
            4,
            "pin.bogus",
            "unknown key",
        );
        one_problem(
            &format!("name = \"x\"\n[[pin.file]]\npath = \"rel/a.js\"\ndigest = \"{D}\"\n"),
            3,
            "pin.file[0].path",
            "absolute path",
        );
        one_problem(
            &format!("name = \"x\"\n[[pin.file]]\npath = \"/a\"\ndigest = \"{D}\"\nsize = 3\n"),
            5,
            "pin.file[0].size",
            "unknown key",
        );
        one_problem(
            "name = \"x\"\n[[pin.pypi]]\nsite_packages = \"/s\"\nname = \"q\"\nversion = \"1\"\n",
            2,
            "pin.pypi[0].record",
            "missing",
        );
        one_problem(
            &format!(
                "name = \"x\"\n[[pin.npm]]\ndir = \"/n\"\nname = \"p\"\nversion = \"1\"\n\
                 integrity = \"md5-xx\"\ntree = \"{D}\"\n"
            ),
            6,
            "pin.npm[0].integrity",
            "SRI",
        );
        one_problem(
            "name = \"x\"\n[pin.signature]\nallowed_signers = \"/k\"\nidentity = \"i\"\nfile = \"/s\"\n",
            2,
            "pin.signature",
            "protects nothing",
        );
        one_problem(
            "name = \"x\"\n[pin]\nfile = \"/a\"\n",
            3,
            "pin.file",
            "expected an array of tables",
        );
    }

    #[test]
    fn user_and_env_pass_are_checked() {
        let p =
            ok("name = \"x\"\nuser = \"mcp-runner\"\n[env]\npass = [\"NODE_OPTIONS\", \"LANG\"]\n");
        assert_eq!(p.user.as_deref(), Some("mcp-runner"));
        assert_eq!(p.env.pass, ["NODE_OPTIONS", "LANG"]);
        assert_eq!(
            ok("name = \"x\"\nuser = \"1000\"\n").user.as_deref(),
            Some("1000")
        );
        for bad in ["", "-x", "a b", "a/b", "99999999999"] {
            one_problem(
                &format!("name = \"x\"\nuser = \"{bad}\"\n"),
                2,
                "user",
                "neither a user name nor a numeric uid",
            );
        }
        one_problem(
            "name = \"x\"\n[env]\npass = [\"OK\", \"NOT-OK\"]\n",
            3,
            "env.pass[1]",
            "not an environment variable name",
        );
        one_problem(
            "name = \"x\"\n[secrets]\nT = { file = \"/t\" }\n[env]\npass = [\"T\"]\n",
            5,
            "env.pass[0]",
            "also a secret",
        );
        one_problem(
            "name = \"x\"\n[env]\nset = {}\n",
            3,
            "env.set",
            "unknown key",
        );
    }

    #[test]
    fn builtin_default_is_the_shipped_file() {
        let parsed = parse(DEFAULT_POLICY_TOML, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(builtin_default(), parsed);
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/default.toml");
        let on_disk = std::fs::read_to_string(&shipped).expect("policies/default.toml");
        assert_eq!(on_disk, DEFAULT_POLICY_TOML);
        assert_eq!(parsed.name, "default");
        assert_eq!(parsed.source, None);
    }

    #[test]
    fn builtin_default_has_no_network_and_lists_the_users_secrets() {
        let p = builtin_default();
        assert!(p.network.allow.is_empty());
        assert!(!p.enforcement.observe && !p.enforcement.allow_degraded);
        for must in [
            "~/.ssh/**",
            "~/.aws/**",
            "~/.config/gcloud/**",
            "~/.kube/**",
            "~/.docker/config.json",
            "**/.env",
            "~/.bash_history",
            "~/.zsh_history",
            "~/.python_history",
            "~/.node_repl_history",
            "~/.mozilla/**",
            "~/.config/google-chrome/**",
            "~/.config/chromium/**",
            "~/.netrc",
            "~/.git-credentials",
            "~/.config/gh/hosts.yml",
            "~/.gnupg/**",
        ] {
            assert!(
                p.detect.sensitive.iter().any(|s| s == must),
                "{must} missing"
            );
        }
        for must in [
            "/usr",
            "/etc/ssl",
            "/etc/resolv.conf",
            "/dev/urandom",
            "~/.npm",
            "~/.pyenv",
        ] {
            assert!(
                p.filesystem.read.iter().any(|s| s == must),
                "{must} not readable"
            );
        }
        assert!(p.filesystem.write.iter().any(|s| s == "/tmp"));
        assert!(p.filesystem.exec.iter().any(|s| s == "/usr"));
    }

    #[test]
    fn builtin_default_grants_no_sensitive_path() {
        let home = Path::new("/home/u");
        let p = builtin_default();
        let granted: Vec<(&str, PathBuf)> = [
            ("read", &p.filesystem.read),
            ("write", &p.filesystem.write),
            ("exec", &p.filesystem.exec),
        ]
        .into_iter()
        .flat_map(|(set, list)| list.iter().map(move |e| (set, expand_home(e, home))))
        .collect();
        // Neither the home itself nor /etc as a whole: secrets live there.
        for (set, path) in &granted {
            assert!(path != home && path != Path::new("/home") && path != Path::new("/"));
            assert!(path != Path::new("/etc"), "{set} grants all of /etc");
        }
        for pattern in &p.detect.sensitive {
            if pattern.starts_with("**") {
                continue; // matches anywhere by design (e.g. a .env inside a granted tree)
            }
            // The literal part before any glob: the tree the pattern protects.
            let literal = pattern.split(['*', '?', '[']).next().unwrap_or_default();
            let protected = expand_home(literal.trim_end_matches('/'), home);
            for (set, path) in &granted {
                assert!(
                    !protected.starts_with(path) && !path.starts_with(&protected),
                    "{set} entry {} overlaps sensitive {pattern}",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn example_policy_parses_and_uses_every_section() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/example.toml");
        let p = load_file(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(!p.filesystem.read.is_empty() && !p.filesystem.write.is_empty());
        assert!(!p.filesystem.exec.is_empty() && !p.network.allow.is_empty());
        assert!(!p.syscalls.deny.is_empty() && p.limits.memory.is_some());
        assert!(p.limits.pids.is_some() && p.limits.cpu.is_some());
        assert!(p.tools.allow.is_some() && !p.tools.deny.is_empty());
        assert!(!p.tools.clients.is_empty() && !p.tools.args.is_empty());
        assert!(!p.mcp.pii.is_empty() && p.mcp.hook.is_some());
        assert!(!p.mcp.secret_shapes.ignore.is_empty());
        assert!(p.secrets.values().any(|s| matches!(s, Secret::File(_))));
        assert!(
            p.secrets
                .values()
                .any(|s| matches!(s, Secret::Credential(_)))
        );
        assert!(!p.detect.sensitive.is_empty());
        assert_eq!(p.detect.on_sensitive, OnSensitive::Kill);
        assert!(p.user.is_some() && !p.env.pass.is_empty());
        assert!(p.command.as_ref().is_some_and(|c| c.len() == 2));
        assert!(p.audit.arguments.is_some() && p.audit.result_bytes.is_some());
        assert!(p.audit.tools.len() == 2);
    }

    #[test]
    fn load_by_name_path_or_default() {
        let dir = temp_dir("load");
        std::fs::write(dir.join("github.toml"), "name = \"github\"\n").expect("write");
        std::fs::write(dir.join("other.toml"), "name = \"bad name\"\n").expect("write");
        assert_eq!(load(None, &dir).expect("default"), builtin_default());
        assert_eq!(load(Some("github"), &dir).expect("by name").name, "github");
        let by_path = dir.join("github.toml");
        let p = load(
            Some(by_path.to_str().expect("utf-8")),
            Path::new("/nonexistent"),
        )
        .expect("by path");
        assert_eq!(p.source.as_deref(), Some(by_path.as_path()));
        // No default.toml in the dir: the built-in one.
        assert_eq!(
            load(Some("default"), &dir).expect("default"),
            builtin_default()
        );
        let e = load(Some("missing"), &dir).expect_err("missing");
        assert!(e.to_string().contains("no policy named \"missing\""), "{e}");
        assert!(
            e.to_string()
                .starts_with(&dir.join("missing.toml").display().to_string())
        );
        let e = load(Some("other"), &dir).expect_err("invalid");
        assert!(e.to_string().contains("other.toml:1:8: name:"), "{e}");
        let e = load(Some("nope.toml"), &dir).expect_err("a path relative to the cwd");
        assert!(e.to_string().contains("cannot read policy"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn expand_home_only_touches_a_leading_tilde() {
        let home = Path::new("/home/u");
        assert_eq!(expand_home("~", home), PathBuf::from("/home/u"));
        assert_eq!(
            expand_home("~/.ssh/**", home),
            PathBuf::from("/home/u/.ssh/**")
        );
        assert_eq!(expand_home("/etc/~/x", home), PathBuf::from("/etc/~/x"));
        assert_eq!(expand_home("**/.env", home), PathBuf::from("**/.env"));
    }

    #[test]
    fn secrets_are_read_at_launch() {
        let dir = temp_dir("secrets");
        let file = dir.join("token");
        std::fs::write(&file, "s3cret\n\n").expect("write");
        // Only one trailing newline is dropped.
        assert_eq!(
            read_secret_in(&Secret::File(file.clone()), None).expect("read"),
            "s3cret\n"
        );
        std::fs::write(&file, "s3cret\r\n").expect("write");
        assert_eq!(
            read_secret_in(&Secret::File(file.clone()), None).expect("read"),
            "s3cret"
        );
        std::fs::write(dir.join("cred"), "c").expect("write");
        let credential = Secret::Credential("cred".into());
        assert_eq!(
            read_secret_in(&credential, Some(dir.as_os_str())).expect("read"),
            "c"
        );
        let e = read_secret_in(&credential, None).expect_err("no dir");
        assert!(
            e.to_string().contains("$CREDENTIALS_DIRECTORY is not set"),
            "{e}"
        );
        let e = read_secret_in(&Secret::File(dir.join("absent")), None).expect_err("absent");
        assert!(e.to_string().contains("absent"), "{e}");
        std::fs::write(&file, [0xff, 0xfe]).expect("write");
        let e = read_secret_in(&Secret::File(file), None).expect_err("binary");
        assert!(e.to_string().contains("not UTF-8"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
