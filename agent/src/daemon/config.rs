//! The agent's config file ([`DEFAULT_CONFIG`] unless `--config` names another):
//! its keys, their defaults and their checks.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{admission, sessions};
use crate::{
    export::config::ExportConfig,
    history::DEFAULT_CONFIG,
    ipc,
    metrics::{auth::Token, listen::MetricsAddr},
};

/// Where the programs and maps are pinned unless configured otherwise.
pub const DEFAULT_BPF_DIR: &str = "/sys/fs/bpf/mcp-guard";

/// Where `/metrics` is served unless the config or `--metrics` says otherwise (loopback only:
/// the counters name servers and tools).
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";

/// The agent's config file (TOML; unknown keys are errors).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where `/metrics` is served: `host:port` or `unix:/path`.
    #[serde(default = "default_metrics")]
    pub metrics: MetricsAddr,
    /// A file only root may read holding the bearer token every `/metrics` request must carry.
    #[serde(default)]
    pub metrics_token_file: Option<PathBuf>,
    /// The group of a `unix:` metrics socket (mode 0660); `None`: root's.
    #[serde(default)]
    pub metrics_socket_group: Option<String>,
    /// How often the store is followed, in milliseconds.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// The Unix socket `exec` clients connect to.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// The socket's permission bits, in octal (`"0660"`: owner and group).
    #[serde(default = "default_socket_mode")]
    pub socket_mode: String,
    /// The group that owns the socket (its members may run sessions); `None`: root's.
    #[serde(default)]
    pub socket_group: Option<String>,
    /// The bpffs directory the programs and maps are pinned in.
    #[serde(default = "default_bpf_dir")]
    pub bpf_dir: PathBuf,
    /// Launch only servers that have a policy in the policy dir.
    #[serde(default)]
    pub known_only: bool,
    /// Let non-root callers use `--observe`.
    #[serde(default)]
    pub allow_observe: bool,
    /// Sessions one non-root user may run at once (by `SO_PEERCRED` uid).
    #[serde(default = "default_max_sessions")]
    pub max_sessions_per_user: u32,
    /// `[store]`: retention.
    #[serde(default)]
    pub store: crate::history::StoreConfig,
    /// `[audit]`: what the history keeps of calls unless a policy says otherwise.
    #[serde(default)]
    pub audit: crate::history::AuditDefaults,
    /// `[export]`: the sinks the history is shipped to.
    #[serde(default)]
    pub export: ExportConfig,
}

fn default_max_sessions() -> u32 {
    admission::DEFAULT_MAX_SESSIONS_PER_USER
}

/// The largest `max_sessions_per_user` (each session is a root worker and a jailed server).
const MAX_SESSIONS_PER_USER: u32 = 65_536;

fn default_socket() -> PathBuf {
    PathBuf::from(ipc::DEFAULT_SOCKET)
}

fn default_socket_mode() -> String {
    "0660".into()
}

fn default_bpf_dir() -> PathBuf {
    PathBuf::from(DEFAULT_BPF_DIR)
}

fn default_metrics() -> MetricsAddr {
    DEFAULT_METRICS_ADDR
        .parse()
        .unwrap_or_else(|_| MetricsAddr::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], 9464))))
}

fn default_poll_ms() -> u64 {
    1000
}

impl Default for Config {
    fn default() -> Self {
        Config {
            metrics: default_metrics(),
            metrics_token_file: None,
            metrics_socket_group: None,
            poll_ms: default_poll_ms(),
            socket: default_socket(),
            socket_mode: default_socket_mode(),
            socket_group: None,
            bpf_dir: default_bpf_dir(),
            known_only: false,
            allow_observe: false,
            max_sessions_per_user: default_max_sessions(),
            store: crate::history::StoreConfig::default(),
            audit: crate::history::AuditDefaults::default(),
            export: ExportConfig::default(),
        }
    }
}

impl Config {
    /// Reads `path`; `None` when the default file is absent. Errors name the file, line and key.
    pub fn load(path: Option<&Path>) -> Result<Config, String> {
        let (path, required) = match path {
            Some(p) => (p, true),
            None => (Path::new(DEFAULT_CONFIG), false),
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Config::default());
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses a config file's text.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        if config.poll_ms == 0 || config.poll_ms > 60_000 {
            return Err(format!(
                "poll_ms = {}: must be between 1 and 60000",
                config.poll_ms
            ));
        }
        config.mode()?;
        if !(1..=MAX_SESSIONS_PER_USER).contains(&config.max_sessions_per_user) {
            return Err(format!(
                "max_sessions_per_user = {}: must be between 1 and {MAX_SESSIONS_PER_USER}",
                config.max_sessions_per_user
            ));
        }
        crate::history::HostHistory {
            store: config.store.clone(),
            audit: config.audit,
        }
        .check()?;
        config.export.check(text)?;
        if let Some(file) = &config.metrics_token_file
            && !file.is_absolute()
        {
            return Err(format!(
                "metrics_token_file = {:?}: an absolute path",
                file.display()
            ));
        }
        Ok(config)
    }

    /// Checks what only the whole configuration (file and flags) can tell.
    pub(super) fn check_effective(&self) -> Result<(), String> {
        if self.metrics_socket_group.is_some() && !matches!(self.metrics, MetricsAddr::Unix(_)) {
            return Err(format!(
                "metrics_socket_group is the group of a unix: metrics socket; /metrics is served \
                 on TCP {} (protect that with metrics_token_file)",
                self.metrics
            ));
        }
        Ok(())
    }

    /// The `/metrics` token from `metrics_token_file` (`None` when not set); an error when the
    /// file is not root's alone (the agent then refuses to start, or a reload keeps the old one).
    pub fn metrics_token(&self) -> Result<Option<(Token, PathBuf)>, String> {
        self.metrics_token_file
            .as_ref()
            .map(|f| Token::from_file(f).map(|t| (t, f.clone())))
            .transpose()
    }

    /// `socket_mode` as permission bits.
    pub fn mode(&self) -> Result<u32, String> {
        u32::from_str_radix(&self.socket_mode, 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                format!(
                    "socket_mode = {:?}: permission bits in octal, e.g. \"0660\"",
                    self.socket_mode
                )
            })
    }

    pub(super) fn rules(&self) -> sessions::LaunchRules {
        sessions::LaunchRules {
            known_only: self.known_only,
            allow_observe: self.allow_observe,
            max_sessions_per_user: self.max_sessions_per_user,
            audit: self.audit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_unknown_keys() {
        assert_eq!(Config::parse("").expect("empty"), Config::default());
        let c = Config::parse("metrics = \"0.0.0.0:9000\"\npoll_ms = 250\n").expect("valid");
        assert_eq!(c.metrics, MetricsAddr::Tcp(([0, 0, 0, 0], 9000).into()));
        assert_eq!(c.poll_ms, 250);
        let e = Config::parse("metric = \"0.0.0.0:9000\"\n").expect_err("unknown key");
        assert!(e.contains("metric") && e.contains("line 1"), "{e}");
        let e = Config::parse("poll_ms = 0\n").expect_err("zero");
        assert!(e.contains("poll_ms"), "{e}");
    }

    #[test]
    fn metrics_and_session_keys_are_checked() {
        let c = Config::parse(
            "metrics = \"unix:/run/mcp-guard/metrics.sock\"\nmetrics_socket_group = \"adm\"\n\
             metrics_token_file = \"/etc/mcp-guard/metrics.token\"\nmax_sessions_per_user = 4\n",
        )
        .expect("valid");
        assert_eq!(
            c.metrics,
            MetricsAddr::Unix("/run/mcp-guard/metrics.sock".into())
        );
        assert_eq!(c.rules().max_sessions_per_user, 4);
        assert_eq!(Config::default().max_sessions_per_user, 32);
        let tcp_group = Config::parse("metrics_socket_group = \"adm\"\n").expect("parses");
        let e = tcp_group.check_effective().expect_err("a group for TCP");
        assert!(e.contains("metrics_socket_group"), "{e}");
        for (bad, key) in [
            ("max_sessions_per_user = 0\n", "max_sessions_per_user"),
            ("max_sessions_per_user = -1\n", "max_sessions_per_user"),
            ("metrics_token_file = \"token\"\n", "metrics_token_file"),
            ("metrics = \"unix:metrics.sock\"\n", "metrics"),
        ] {
            let e = Config::parse(bad).expect_err(bad);
            assert!(e.contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn the_shipped_sample_config_is_valid() {
        let sample = include_str!("../../../packaging/mcp-guard.toml");
        assert_eq!(Config::parse(sample).expect("sample"), Config::default());
    }
}
