//! The top level of a policy file: its keys, and the [`Policy`] assembled from the checked
//! sections.

use std::path::Path;

use toml_edit::TableLike;

use crate::check::{Checker, Span, entry};
use crate::model::Policy;
use crate::values::is_user_name;

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
];

impl Checker<'_> {
    /// Validates a whole document.
    pub(crate) fn policy(&mut self, root: &dyn TableLike, source: Option<&Path>) -> Option<Policy> {
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
                match name.map(|n| (n, mcp_guard_model::names::check(n))) {
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
        let mut mcp = section("mcp")
            .map(|(item, span)| self.mcp(item, &span))
            .unwrap_or_default();
        mcp.secret_rules = self.secret_rules.as_ref().map(|c| c.source.clone());
        let access = section("access")
            .map(|(item, span)| self.access(item, &span))
            .unwrap_or_default();
        let command = section("command")
            .and_then(|(item, span)| self.command(item, &span, isolation.backend));
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
            command,
        })
    }
}
