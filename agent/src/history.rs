//! The host's history settings: `[store]` (retention) and `[audit]` (what each call keeps by
//! default) in the agent's config file, which a standalone `exec` reads too.
//!
//! ```toml
//! [store]
//! retention_days = 30          # calls, events, sessions (0: no age limit)
//! alert_retention_days = 90    # alerts and the events they cite (0: no age limit)
//! max_db_bytes = "2GiB"        # the oldest records go first beyond this (0: no limit)
//!
//! [audit]
//! arguments = true             # each call's arguments, redacted
//! result_bytes = 4096          # of each result, redacted (0: none)
//! ```
//! A policy's own `[audit]` overrides the defaults for its server, per tool too
//! ([`mcp_guard_policy::Audit`]).

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer, Serialize};

use mcp_guard_policy::MAX_RESULT_BYTES;
use mcp_guard_store::Retention;

use mcp_guard_proxy::audit::{AuditConfig, Keep};

/// The host config file `exec` reads for these settings when `$MCP_GUARD_CONFIG` names none
/// (the agent's: [`DEFAULT_CONFIG`]).
pub const CONFIG_ENV: &str = "MCP_GUARD_CONFIG";

/// The agent's config file, read when `--config` is not given (absent is fine: defaults apply);
/// a standalone `exec` reads its history tables too.
pub const DEFAULT_CONFIG: &str = "/etc/mcp-guard/agent.toml";

/// Longest retention accepted (a larger value is a typo).
const MAX_DAYS: u32 = 36_500;
/// How often retention runs after its first pass (at the writer's start).
pub const RETENTION_EVERY: Duration = Duration::from_mins(5);

/// `[store]`: what the store keeps.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Calls, events and sessions older than this many days go (0: kept for good).
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// Alerts and the events they cite older than this many days go (0: kept for good).
    #[serde(default = "default_alert_retention_days")]
    pub alert_retention_days: u32,
    /// While the store's live data is larger, its oldest records go (0: no limit). A size:
    /// bytes, or a string such as `"512M"` or `"2GiB"`.
    #[serde(default = "default_max_db_bytes", deserialize_with = "size")]
    pub max_db_bytes: u64,
}

fn default_retention_days() -> u32 {
    30
}

fn default_alert_retention_days() -> u32 {
    90
}

fn default_max_db_bytes() -> u64 {
    2 << 30
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            retention_days: default_retention_days(),
            alert_retention_days: default_alert_retention_days(),
            max_db_bytes: default_max_db_bytes(),
        }
    }
}

/// A size: an integer (bytes) or a string with a unit (`K`, `M`, `G`, `T`, binary).
fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Bytes(n) => Ok(n),
        Size::Text(t) => mcp_guard_policy::parse_size(&t).map_err(serde::de::Error::custom),
    }
}

impl StoreConfig {
    fn check(&self) -> Result<(), String> {
        for (key, days) in [
            ("store.retention_days", self.retention_days),
            ("store.alert_retention_days", self.alert_retention_days),
        ] {
            if days > MAX_DAYS {
                return Err(format!(
                    "{key} = {days}: at most {MAX_DAYS} (0: no age limit)"
                ));
            }
        }
        let (plain, alerts) = (self.retention_days, self.alert_retention_days);
        if alerts != 0 && (plain == 0 || alerts < plain) {
            return Err(format!(
                "store.alert_retention_days = {alerts}: alerts are kept at least as long as \
                 plain events (store.retention_days = {plain}; 0 is no age limit)"
            ));
        }
        Ok(())
    }

    /// The writer's retention (`None` when nothing is limited).
    pub fn retention(&self) -> Option<Retention> {
        let days = |d: u32| (d > 0).then(|| Duration::from_secs(u64::from(d) * 86_400));
        let r = Retention {
            max_age: days(self.retention_days),
            alert_max_age: days(self.alert_retention_days),
            max_bytes: (self.max_db_bytes > 0).then_some(self.max_db_bytes),
            every: RETENTION_EVERY,
        };
        r.limits_anything().then_some(r)
    }
}

/// `[audit]`: what each call keeps by default (a policy may say otherwise for its server).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuditDefaults {
    /// Each call's arguments, redacted.
    #[serde(default = "default_arguments")]
    pub arguments: bool,
    /// Bytes of each result kept, redacted (0: none).
    #[serde(default = "default_result_bytes")]
    pub result_bytes: u64,
}

fn default_arguments() -> bool {
    true
}

fn default_result_bytes() -> u64 {
    4096
}

impl Default for AuditDefaults {
    fn default() -> Self {
        AuditDefaults {
            arguments: default_arguments(),
            result_bytes: default_result_bytes(),
        }
    }
}

impl AuditDefaults {
    fn check(&self) -> Result<(), String> {
        if self.result_bytes > MAX_RESULT_BYTES {
            return Err(format!(
                "audit.result_bytes = {}: at most {MAX_RESULT_BYTES}",
                self.result_bytes
            ));
        }
        Ok(())
    }
}

/// What the history of one server's calls keeps: the policy's `[audit]` over the host's
/// defaults.
pub fn audit_config(policy: &mcp_guard_policy::Audit, host: &AuditDefaults) -> AuditConfig {
    let bytes = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    let default = Keep {
        arguments: policy.arguments.unwrap_or(host.arguments),
        result_bytes: bytes(policy.result_bytes.unwrap_or(host.result_bytes)),
    };
    let tools = policy
        .tools
        .iter()
        .map(|(tool, t)| {
            let keep = Keep {
                arguments: t.arguments.unwrap_or(default.arguments),
                result_bytes: t.result_bytes.map_or(default.result_bytes, bytes),
            };
            (tool.clone(), keep)
        })
        .collect();
    AuditConfig { default, tools }
}

/// The two tables, as they sit in the host config file (its other keys are the agent's).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct HostHistory {
    /// `[store]`.
    #[serde(default)]
    pub store: StoreConfig,
    /// `[audit]`.
    #[serde(default)]
    pub audit: AuditDefaults,
}

impl HostHistory {
    /// Checks the values (the types were checked by parsing).
    pub fn check(&self) -> Result<(), String> {
        self.store.check()?;
        self.audit.check()
    }

    /// What a standalone `exec` uses: the tables of `$MCP_GUARD_CONFIG` or the agent's
    /// default config file (the defaults when there is none). A file that cannot be read or has
    /// errors in these tables gives the defaults and a warning to print: the session still runs.
    pub fn for_exec() -> (HostHistory, Option<String>) {
        let (path, required) = match std::env::var_os(CONFIG_ENV) {
            Some(p) if !p.is_empty() => (PathBuf::from(p), true),
            _ => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return (HostHistory::default(), None);
            }
            Err(e) => {
                return (
                    HostHistory::default(),
                    Some(format!(
                        "{}: {e}; the default [store] and [audit] apply",
                        path.display()
                    )),
                );
            }
        };
        match toml::from_str::<HostHistory>(&text)
            .map_err(|e| e.to_string())
            .and_then(|h| h.check().map(|()| h))
        {
            Ok(h) => (h, None),
            Err(e) => (
                HostHistory::default(),
                Some(format!(
                    "{}: {e}\nthe default [store] and [audit] apply",
                    path.display()
                )),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HostHistory, String> {
        toml::from_str::<HostHistory>(text)
            .map_err(|e| e.to_string())
            .and_then(|h| h.check().map(|()| h))
    }

    #[test]
    fn defaults_sizes_and_checks() {
        let h = parse("").expect("empty");
        assert_eq!(h, HostHistory::default());
        let r = h.store.retention().expect("limits by default");
        assert_eq!(r.max_age, Some(Duration::from_hours(720)));
        assert_eq!(r.alert_max_age, Some(Duration::from_hours(2160)));
        assert_eq!(r.max_bytes, Some(2 << 30));
        let h = parse("[store]\nmax_db_bytes = \"2GiB\"\nretention_days = 7\n").expect("valid");
        assert_eq!(h.store.max_db_bytes, 2 << 30);
        let h = parse("[store]\nmax_db_bytes = 1000\n").expect("bytes");
        assert_eq!(h.store.max_db_bytes, 1000);
        let off =
            parse("[store]\nretention_days = 0\nalert_retention_days = 0\nmax_db_bytes = 0\n")
                .expect("all off");
        assert!(off.store.retention().is_none());
        for (bad, key) in [
            ("[store]\nmax_db_bytes = \"2 lots\"\n", "max_db_bytes"),
            ("[store]\nretention_day = 3\n", "retention_day"),
            (
                "[store]\nretention_days = 30\nalert_retention_days = 7\n",
                "alert_retention_days",
            ),
            ("[store]\nretention_days = 0\n", "alert_retention_days"),
            ("[audit]\nresult_bytes = 99999999\n", "audit.result_bytes"),
            ("[audit]\nargs = true\n", "args"),
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(e.contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn the_policy_overrides_the_host_per_tool_too() {
        let host = AuditDefaults {
            arguments: true,
            result_bytes: 100,
        };
        let mut policy = mcp_guard_policy::Audit::default();
        let c = audit_config(&policy, &host);
        assert_eq!(c.keep("tools/call", Some("x")).result_bytes, 100);
        policy.result_bytes = Some(10);
        policy.tools.insert(
            "quiet".into(),
            mcp_guard_policy::ToolAudit {
                arguments: Some(false),
                result_bytes: Some(0),
            },
        );
        policy.tools.insert(
            "args_only".into(),
            mcp_guard_policy::ToolAudit {
                arguments: None,
                result_bytes: Some(0),
            },
        );
        let c = audit_config(&policy, &host);
        assert_eq!(
            c.keep("tools/call", Some("x")),
            Keep {
                arguments: true,
                result_bytes: 10
            }
        );
        assert_eq!(c.keep("tools/call", Some("quiet")), Keep::OFF);
        assert_eq!(
            c.keep("tools/call", Some("args_only")),
            Keep {
                arguments: true,
                result_bytes: 0
            }
        );
        // Only tools/call is per tool.
        assert_eq!(c.keep("resources/read", Some("quiet")).result_bytes, 10);
    }
}
