//! The checks of the simple sections: `[isolation]`, `[env]`, `[filesystem]`, `[network]`,
//! `[syscalls]`, `[limits]`, `[tools]`, `[detect]`, `[access]` and `[enforcement]`.

use std::collections::BTreeMap;

use toml_edit::{Item, Value};

use crate::check::{Checker, Span, describe, entry, join};
use crate::model::{
    Access, Backend, DETECT_RULES, Detect, DetectRule, Enforcement, Env, Filesystem, Isolation,
    Limits, Network, OnSensitive, Syscalls, Tools,
};
use crate::secrets::Secret;
use crate::values::{
    MAX_CPU, MAX_PIDS, MIN_CPU, MIN_MEMORY, check_fs_path, has_dot_dot, is_env_name, is_user_name,
    parse_size, syscall_number,
};
use crate::{image::parse_image, network::parse_net_allow, unix, values};

impl Checker<'_> {
    pub(crate) fn isolation(&mut self, item: &Item, span: &Span) -> Isolation {
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

    pub(crate) fn env(
        &mut self,
        item: &Item,
        span: &Span,
        secrets: &BTreeMap<String, Secret>,
    ) -> Env {
        let mut env = Env::default();
        let Some(table) = self.table(item, span, "env", &["pass", "set"]) else {
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
        if let Some(value) = table.get("set") {
            let (_, value_span) = entry(table, "set", span);
            // Any name is a key here: no list of known keys.
            let Some(set) = value.as_table_like() else {
                let found = describe(value);
                self.error(
                    &value_span,
                    "env.set",
                    format!("expected a table of NAME = \"value\", found {found}"),
                );
                return env;
            };
            for (name, v) in set.iter() {
                let (_, v_span) = entry(set, name, &value_span);
                let path = join("env.set", name);
                let why = if !is_env_name(name) {
                    Some(format!("{name:?} is not an environment variable name"))
                } else if secrets.contains_key(name) {
                    Some(format!(
                        "{name} is also a secret; a variable comes from one place"
                    ))
                } else if env.pass.iter().any(|p| p == name) {
                    Some(format!(
                        "{name} is also in pass; a variable comes from one place"
                    ))
                } else {
                    None
                };
                if let Some(why) = why {
                    self.error(&v_span, &path, why);
                    continue;
                }
                match self.string(v, &v_span, &path) {
                    Some(s) if s.contains('\0') => {
                        self.error(&v_span, &path, format!("{s:?} contains a NUL byte"));
                    }
                    Some(s) => {
                        env.set.insert(name.to_string(), s.to_string());
                    }
                    None => {}
                }
            }
        }
        env
    }

    pub(crate) fn filesystem(&mut self, item: &Item, span: &Span) -> Filesystem {
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
                // `?PATH`: an alternative that may be absent on a host (only `policy check`
                // treats it differently; the launcher skips every missing entry).
                let (path, optional) = match s.strip_prefix('?') {
                    Some(rest) => (rest, true),
                    None => (s, false),
                };
                match check_fs_path(path) {
                    Ok(()) => {
                        list.push(path.to_string());
                        if optional {
                            fs.optional.insert(path.to_string());
                        }
                    }
                    Err(m) if optional => self.error(
                        &s_span,
                        &s_path,
                        format!("{s:?}: after the optional marker `?`, {m}"),
                    ),
                    Err(m) => self.error(&s_span, &s_path, m),
                }
            }
        }
        fs
    }

    pub(crate) fn network(&mut self, item: &Item, span: &Span) -> Network {
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

    pub(crate) fn syscalls(&mut self, item: &Item, span: &Span) -> Syscalls {
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

    pub(crate) fn limits(&mut self, item: &Item, span: &Span) -> Limits {
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
            #[expect(
                clippy::cast_precision_loss,
                reason = "a count too big for f64 to hold exactly is out of range anyway"
            )]
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

    pub(crate) fn tools(&mut self, item: &Item, span: &Span) -> Tools {
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
                if values::is_tool_name(s) {
                    lists[i].push((s.to_string(), s_span, s_path));
                } else {
                    self.error(
                        &s_span,
                        &s_path,
                        format!("{s:?} is not a tool name (empty, or has spaces or controls)"),
                    );
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

    pub(crate) fn detect(&mut self, item: &Item, span: &Span) -> Detect {
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
                } else if let Err(e) = globset::Glob::new(s) {
                    self.error(
                        &s_span,
                        &s_path,
                        format!("{s:?} is not a glob: {}", e.kind()),
                    );
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
                match text.parse::<mcp_guard_model::Severity>() {
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

    pub(crate) fn access(&mut self, item: &Item, span: &Span) -> Access {
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

    pub(crate) fn enforcement(&mut self, item: &Item, span: &Span) -> Enforcement {
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
