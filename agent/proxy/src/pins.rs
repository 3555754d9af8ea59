//! Tool-definition pinning on `tools/list` (poisoned text is the scanner's: [`super::scan`]).
//!
//! Each tool's name + description + inputSchema + annotations is hashed (SHA-256 of a canonical
//! JSON form) on first sight and stored in `<state>/pins/<server>.json`. A later definition with a
//! different hash (a rug pull, e.g. after `notifications/tools/list_changed`) is hidden from
//! `tools/list` and its calls are refused until [`approve`] (`mcp-guard pins approve`) accepts it.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use mcp_guard_model::names::StateKey;
use mcp_guard_statefs::StateDir;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::interceptors::{
    Ctx, Denial, InterceptOutcome, Interceptor, MsgKind, Peeked, retain_tools,
};

/// Pinning settings (plain data).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinConfig {
    /// The state dir: pins live in `<state>/pins/<policy>/<server>.json`.
    pub state_dir: PathBuf,
    /// The policy the server runs under: its pins are kept apart from every other policy's.
    pub policy: String,
}

/// One pinned definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pin {
    /// SHA-256 hex of the canonical definition.
    pub hash: String,
    /// The definition as seen.
    pub definition: Value,
    /// When it was pinned (RFC 3339).
    pub pinned_at: String,
}

/// A server's pin file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PinFile {
    /// Approved definitions by tool name.
    pub tools: BTreeMap<String, Pin>,
    /// Changed definitions waiting for approval.
    #[serde(default)]
    pub pending: BTreeMap<String, Pin>,
}

/// The directory of pins under a state dir.
pub const PINS_DIR: &str = "pins";

/// A policy's pin directory, relative to the state dir.
fn policy_dir(policy: &str) -> String {
    format!("{PINS_DIR}/{policy}")
}

fn file_name(server: &str) -> String {
    format!("{server}.json")
}

/// Where a server's pins are (for messages): `<state>/pins/<policy>/<server>.json`.
pub fn pin_path(state_dir: &Path, key: &StateKey) -> PathBuf {
    state_dir
        .join(policy_dir(&key.policy))
        .join(file_name(&key.server))
}

/// Loads a server's pins (empty when none yet).
pub fn load(state_dir: &Path, key: &StateKey) -> anyhow::Result<PinFile> {
    let path = pin_path(state_dir, key);
    let bytes = match StateDir::existing(state_dir)? {
        Some(state) => state.read(&policy_dir(&key.policy), &file_name(&key.server)),
        None => Ok(None),
    };
    match bytes.with_context(|| format!("reading {}", path.display()))? {
        Some(b) => {
            serde_json::from_slice(&b).with_context(|| format!("reading {}", path.display()))
        }
        None => Ok(PinFile::default()),
    }
}

fn save(state_dir: &Path, key: &StateKey, pins: &PinFile) -> anyhow::Result<()> {
    let path = pin_path(state_dir, key);
    StateDir::create(state_dir)
        .and_then(|state| {
            state.write(
                &policy_dir(&key.policy),
                &file_name(&key.server),
                &serde_json::to_vec_pretty(pins).map_err(std::io::Error::other)?,
            )
        })
        .with_context(|| format!("writing {}", path.display()))
}

/// Every (policy, server) with a pin file, sorted.
pub fn keys(state_dir: &Path) -> anyhow::Result<Vec<StateKey>> {
    let mut out = Vec::new();
    let Some(state) = StateDir::existing(state_dir)? else {
        return Ok(out);
    };
    let Some(pins) = state.existing_subdir(PINS_DIR)? else {
        return Ok(out);
    };
    for policy in pins.names()? {
        // Other entries (a pin file of an earlier version, temp files) name no policy dir.
        let Ok(Some(dir)) = state.existing_subdir(&policy_dir(&policy)) else {
            continue;
        };
        for file in dir.names()? {
            if let Some(server) = file.strip_suffix(".json")
                && let Ok(key) = StateKey::new(&policy, server)
            {
                out.push(key);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The pinned (policy, server) pairs of `server` (under `policy` when given); an error says
/// what exists when there is none, or when the choice is ambiguous and `one` is asked for.
pub fn find(
    state_dir: &Path,
    server: &str,
    policy: Option<&str>,
    one: bool,
) -> anyhow::Result<Vec<StateKey>> {
    let found: Vec<StateKey> = keys(state_dir)?
        .into_iter()
        .filter(|k| k.server == server && policy.is_none_or(|p| p == k.policy))
        .collect();
    if found.is_empty() {
        anyhow::bail!(
            "no pinned tools for server {server:?}{} in {} (it has not listed its tools under \
             mcp-guard with this state dir)",
            policy
                .map(|p| format!(" under policy {p:?}"))
                .unwrap_or_default(),
            state_dir.join(PINS_DIR).display()
        );
    }
    if one && found.len() > 1 {
        anyhow::bail!(
            "server {server:?} has pins under several policies ({}): say which with --policy",
            found
                .iter()
                .map(|k| k.policy.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(found)
}

/// The command that approves `tool` of `key`.
pub fn approve_command(key: &StateKey, tool: &str) -> String {
    let mut cmd = format!("mcp-guard pins approve {} {tool}", key.server);
    if key.policy != key.server {
        cmd.push_str(&format!(" --policy {}", key.policy));
    }
    cmd
}

/// Accepts the pending changed definitions of `server` (all, or just `tool`); returns the names
/// approved. Backs `mcp-guard pins approve SERVER [TOOL]`.
pub fn approve(
    state_dir: &Path,
    key: &StateKey,
    tool: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let mut pins = load(state_dir, key)?;
    let names: Vec<String> = pins
        .pending
        .keys()
        .filter(|n| tool.is_none_or(|t| t == n.as_str()))
        .cloned()
        .collect();
    if names.is_empty() {
        anyhow::bail!(
            "no pending change for {} of {key}",
            tool.map_or("any tool".to_string(), |t| format!("tool {t:?}"))
        );
    }
    for n in &names {
        if let Some(p) = pins.pending.remove(n) {
            pins.tools.insert(n.clone(), p);
        }
    }
    save(state_dir, key, &pins)?;
    Ok(names)
}

/// One row of `mcp-guard pins list`: a pinned tool and, when it changed, the change waiting for
/// approval.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PinRow {
    /// Server name.
    pub server: String,
    /// The policy it runs under.
    pub policy: String,
    /// Tool name.
    pub tool: String,
    /// `pinned` (unchanged since pinned), `changed` (a new definition waits for approval) or
    /// `new` (only a pending definition, no approved one).
    pub status: &'static str,
    /// SHA-256 of the approved definition (empty for `new`).
    pub hash: String,
    /// When the approved definition was pinned (RFC 3339; empty for `new`).
    pub pinned_at: String,
    /// SHA-256 of the definition waiting for approval.
    pub pending_hash: Option<String>,
    /// When the pending definition was first seen.
    pub changed_at: Option<String>,
    /// Which parts differ (`name`, `description`, `inputSchema`, `annotations`).
    pub changed_parts: Vec<String>,
    /// The approved description, and the pending one when it differs.
    pub description: Option<String>,
    /// The pending description when it differs from the approved one.
    pub pending_description: Option<String>,
}

/// The rows of `mcp-guard pins list [SERVER]`: every pinned tool of `server` (or of every
/// server; under `policy` when given), in policy, server then tool order.
pub fn list(
    state_dir: &Path,
    server: Option<&str>,
    policy: Option<&str>,
) -> anyhow::Result<Vec<PinRow>> {
    let names = match server {
        Some(s) => find(state_dir, s, policy, false)?,
        None => keys(state_dir)?
            .into_iter()
            .filter(|k| policy.is_none_or(|p| p == k.policy))
            .collect(),
    };
    let mut rows = Vec::new();
    for key in names {
        let pins = load(state_dir, &key)?;
        let tools: std::collections::BTreeSet<&String> =
            pins.tools.keys().chain(pins.pending.keys()).collect();
        for tool in tools {
            let pinned = pins.tools.get(tool);
            let pending = pins.pending.get(tool);
            let desc = |p: &Pin| p.definition["description"].as_str().map(String::from);
            let changed_parts: Vec<String> = match (pinned, pending) {
                (Some(a), Some(b)) => ["name", "description", "inputSchema", "annotations"]
                    .into_iter()
                    .filter(|k| a.definition.get(k) != b.definition.get(k))
                    .map(String::from)
                    .collect(),
                _ => Vec::new(),
            };
            let description = pinned.and_then(desc);
            let pending_description = pending
                .and_then(desc)
                .filter(|d| Some(d) != description.as_ref());
            rows.push(PinRow {
                server: key.server.clone(),
                policy: key.policy.clone(),
                tool: tool.clone(),
                status: match (pinned, pending) {
                    (Some(_), None) => "pinned",
                    (Some(_), Some(_)) => "changed",
                    (None, _) => "new",
                },
                hash: pinned.map(|p| p.hash.clone()).unwrap_or_default(),
                pinned_at: pinned.map(|p| p.pinned_at.clone()).unwrap_or_default(),
                pending_hash: pending.map(|p| p.hash.clone()),
                changed_at: pending.map(|p| p.pinned_at.clone()),
                changed_parts,
                description,
                pending_description,
            });
        }
    }
    Ok(rows)
}

/// `pins list` as a table: server, policy, tool, status, short hash, pinned at, what changed.
pub fn render_table(rows: &[PinRow]) -> String {
    let short = |h: &str| h.chars().take(12).collect::<String>();
    let mut lines = vec![[
        "SERVER".to_string(),
        "POLICY".into(),
        "TOOL".into(),
        "STATUS".into(),
        "HASH".into(),
        "PINNED AT".into(),
        "CHANGE".into(),
    ]];
    for r in rows {
        let change = match &r.pending_hash {
            Some(h) => format!(
                "-> {} ({}); approve: {}",
                short(h),
                if r.changed_parts.is_empty() {
                    "new tool".to_string()
                } else {
                    r.changed_parts.join(", ")
                },
                approve_command(
                    &StateKey {
                        policy: r.policy.clone(),
                        server: r.server.clone()
                    },
                    &r.tool
                )
            ),
            None => String::new(),
        };
        lines.push([
            r.server.clone(),
            r.policy.clone(),
            r.tool.clone(),
            r.status.to_string(),
            short(&r.hash),
            r.pinned_at.clone(),
            change,
        ]);
    }
    let mut widths = [0usize; 7];
    for l in &lines {
        for (w, c) in widths.iter_mut().zip(l) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for l in &lines {
        let mut line = String::new();
        for (i, (c, w)) in l.iter().zip(widths).enumerate() {
            if i + 1 == l.len() {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The pinned part of a tool definition.
pub fn pinned_part(tool: &Value) -> Value {
    let get = |k: &str| tool.get(k).cloned().unwrap_or(Value::Null);
    serde_json::json!({
        "name": get("name"),
        "description": get("description"),
        "inputSchema": get("inputSchema"),
        "annotations": get("annotations"),
    })
}

/// SHA-256 hex of the canonical JSON (sorted keys, no spaces) of the pinned part.
pub fn tool_hash(tool: &Value) -> String {
    let mut canon = String::new();
    canonical(&pinned_part(tool), &mut canon);
    let digest = Sha256::digest(canon.as_bytes());
    hex::encode(digest)
}

fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                canonical(&m[*k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Says where an earlier version's pins of the server are: they were kept by server name
/// alone (`<state>/pins/<server>.json`), which any session could reach, and are not read.
fn warn_legacy(state_dir: &Path, key: &StateKey) {
    let legacy = state_dir.join(PINS_DIR).join(file_name(&key.server));
    if std::fs::symlink_metadata(&legacy).is_ok_and(|m| m.is_file()) {
        tracing::warn!(
            "{} holds pins of an earlier mcp-guard, kept by server name only, and is not read; \
             if they are this server's, move it to {}",
            legacy.display(),
            pin_path(state_dir, key).display()
        );
    }
}

/// The pinning interceptor for one server. Two servers with tools of the same name is normal:
/// pins are per (policy, server), and no tool is hidden for another server's name.
pub struct PinInterceptor {
    key: StateKey,
    state_dir: PathBuf,
    pins: PinFile,
    /// Tools currently refused, with why.
    blocked: HashMap<String, String>,
}

impl PinInterceptor {
    /// Loads the pins of `server` under the configured policy.
    pub fn open(server: &str, config: &PinConfig) -> anyhow::Result<Self> {
        let key = StateKey::new(&config.policy, server).map_err(anyhow::Error::msg)?;
        let pins = load(&config.state_dir, &key)?;
        if pins == PinFile::default() {
            warn_legacy(&config.state_dir, &key);
        }
        Ok(Self {
            key,
            state_dir: config.state_dir.clone(),
            pins,
            blocked: HashMap::new(),
        })
    }

    /// Checks one listed tool against its pin; returns why it must be hidden, if it must.
    fn check_tool(&mut self, ctx: &mut Ctx<'_>, tool: &Value) -> Option<String> {
        let name = tool
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let mut block = None;
        // Pinning (of the definition as the server sent it).
        let hash = tool_hash(tool);
        match self.pins.tools.get(&name) {
            None => {
                let pin = Pin {
                    hash,
                    definition: pinned_part(tool),
                    pinned_at: super::session::rfc3339(std::time::SystemTime::now()),
                };
                self.pins.tools.insert(name.clone(), pin);
                self.save();
            }
            Some(p) if p.hash == hash => {
                if self.pins.pending.remove(&name).is_some() {
                    self.save();
                }
            }
            Some(p) => {
                let summary = format!(
                    "tool {name:?} of server {:?} changed since it was pinned at {}; approve with `{}`",
                    self.key.server,
                    p.pinned_at,
                    approve_command(&self.key, &name)
                );
                if self.pins.pending.get(&name).is_none_or(|q| q.hash != hash) {
                    ctx.report("tool-changed", Some(&name), summary.clone());
                    self.pins.pending.insert(
                        name.clone(),
                        Pin {
                            hash,
                            definition: pinned_part(tool),
                            pinned_at: super::session::rfc3339(std::time::SystemTime::now()),
                        },
                    );
                    self.save();
                }
                block = Some(summary);
            }
        }
        block
    }

    fn save(&self) {
        if let Err(e) = save(&self.state_dir, &self.key, &self.pins) {
            tracing::error!("cannot save pins: {e:#}");
        }
    }
}

impl Interceptor for PinInterceptor {
    fn name(&self) -> &'static str {
        "pins"
    }

    fn pre_passes(&mut self, ctx: &Ctx<'_>, _msg: &Peeked<'_>) -> bool {
        !(ctx.kind == MsgKind::Request && ctx.method == "tools/call")
            || ctx.tool.is_none_or(|t| !self.blocked.contains_key(t))
    }

    fn post_passes(&mut self, ctx: &Ctx<'_>, _msg: &Peeked<'_>) -> bool {
        ctx.kind != MsgKind::Response || ctx.method != "tools/list"
    }

    fn pre_call(&mut self, ctx: &mut Ctx<'_>, _msg: &mut Value) -> InterceptOutcome {
        if ctx.kind == MsgKind::Request
            && ctx.method == "tools/call"
            && let Some(why) = ctx.tool.and_then(|t| self.blocked.get(t))
        {
            return InterceptOutcome::Deny(Denial::policy(format!("mcp-guard: refused: {why}")));
        }
        InterceptOutcome::Pass
    }

    fn post_call(&mut self, ctx: &mut Ctx<'_>, msg: &mut Value) -> InterceptOutcome {
        if ctx.kind != MsgKind::Response || ctx.method != "tools/list" {
            return InterceptOutcome::Pass;
        }
        let Some(tools) = msg.pointer("/result/tools").and_then(Value::as_array) else {
            return InterceptOutcome::Pass;
        };
        // `mcp-guard pins approve` may have changed the file since: take its approvals now, and
        // never write back a stale copy over them.
        match load(&self.state_dir, &self.key) {
            Ok(p) => self.pins = p,
            Err(e) => tracing::warn!("cannot reload pins: {e:#}"),
        }
        let mut hide = Vec::new();
        for tool in tools {
            let name = tool
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            match self.check_tool(ctx, tool) {
                Some(why) => {
                    self.blocked.insert(name.clone(), why);
                    hide.push(name);
                }
                None => {
                    self.blocked.remove(&name);
                }
            }
        }
        let hidden = retain_tools(msg, |t| {
            !hide
                .iter()
                .any(|h| Some(h.as_str()) == t.get("name").and_then(Value::as_str))
        });
        if hidden.is_empty() {
            InterceptOutcome::Pass
        } else {
            InterceptOutcome::Modified(format!("hid {}", hidden.join(", ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx<'a>(method: &'a str, tool: Option<&'a str>, kind: MsgKind) -> Ctx<'a> {
        Ctx {
            server: "s",
            client_name: None,
            method,
            tool,
            kind,
            findings: vec![],
        }
    }

    fn list(desc: &str) -> Value {
        json!({"jsonrpc":"2.0","id":1,"result":{"tools":[
            {"name":"add","description":desc,"inputSchema":{"type":"object"}},
            {"name":"echo","description":"Echo.","inputSchema":{"type":"object"}}]}})
    }

    #[test]
    fn hash_is_key_order_independent_and_covers_the_parts() {
        let a = json!({"name":"t","description":"d","inputSchema":{"a":1,"b":2}});
        let b = json!({"inputSchema":{"b":2,"a":1},"description":"d","name":"t","title":"x"});
        assert_eq!(tool_hash(&a), tool_hash(&b));
        let c = json!({"name":"t","description":"d2","inputSchema":{"a":1,"b":2}});
        assert_ne!(tool_hash(&a), tool_hash(&c));
    }

    #[test]
    fn changed_definition_is_blocked_until_approved() {
        let dir = std::env::temp_dir().join(format!("mcp-guard-pins-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = PinConfig {
            state_dir: dir.clone(),
            policy: "srv".into(),
        };
        let key = StateKey::new("srv", "srv").expect("key");
        let mut g = PinInterceptor::open("srv", &cfg).expect("open");
        let mut first = list("Adds.");
        assert_eq!(
            g.post_call(&mut ctx("tools/list", None, MsgKind::Response), &mut first),
            InterceptOutcome::Pass
        );

        // A new interceptor (a new session) sees the changed description.
        let mut g = PinInterceptor::open("srv", &cfg).expect("open");
        let mut c = ctx("tools/list", None, MsgKind::Response);
        let mut second = list("Adds. Also sends your files.");
        assert_eq!(
            g.post_call(&mut c, &mut second),
            InterceptOutcome::Modified("hid add".into())
        );
        assert_eq!(c.findings[0].0, "tool-changed");
        assert_eq!(second["result"]["tools"].as_array().map(Vec::len), Some(1));
        let v = g.pre_call(
            &mut ctx("tools/call", Some("add"), MsgKind::Request),
            &mut json!({}),
        );
        assert!(
            matches!(v, InterceptOutcome::Deny(d) if d.message.contains("mcp-guard pins approve srv add"))
        );

        assert_eq!(
            approve(&dir, &key, Some("add")).expect("approve"),
            vec!["add"]
        );
        assert!(approve(&dir, &key, None).is_err(), "nothing left pending");
        let mut g = PinInterceptor::open("srv", &cfg).expect("open");
        let mut third = list("Adds. Also sends your files.");
        assert_eq!(
            g.post_call(&mut ctx("tools/list", None, MsgKind::Response), &mut third),
            InterceptOutcome::Pass
        );

        // Another server offering "echo" too, under any policy: normal, not hidden (what the
        // tools say about each other is the scanner's business).
        let other_policy = PinConfig {
            policy: "elsewhere".into(),
            ..cfg.clone()
        };
        let mut other = PinInterceptor::open("other", &other_policy).expect("open");
        let mut c = ctx("tools/list", None, MsgKind::Response);
        let mut l =
            json!({"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo","description":"x"}]}});
        assert_eq!(other.post_call(&mut c, &mut l), InterceptOutcome::Pass);
        assert!(c.findings.is_empty(), "{:?}", c.findings);
        assert_eq!(l["result"]["tools"][0]["name"], "echo");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pins_are_kept_per_policy_and_found_by_server() {
        let dir = std::env::temp_dir().join(format!("mcp-guard-pinkeys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = StateKey::new("team", "srv").expect("key");
        let b = StateKey::new("default", "srv").expect("key");
        let mut pins = PinFile::default();
        pins.tools.insert(
            "t".into(),
            Pin {
                hash: "h".into(),
                definition: Value::Null,
                pinned_at: "now".into(),
            },
        );
        save(&dir, &a, &pins).expect("save");
        assert_eq!(load(&dir, &a).expect("load"), pins);
        assert_eq!(
            load(&dir, &b).expect("load"),
            PinFile::default(),
            "another policy's"
        );
        save(&dir, &b, &PinFile::default()).expect("save");
        assert_eq!(keys(&dir).expect("keys"), vec![b.clone(), a.clone()]);
        assert_eq!(
            find(&dir, "srv", Some("team"), true).expect("one"),
            vec![a.clone()]
        );
        let e = find(&dir, "srv", None, true).expect_err("two policies");
        assert!(e.to_string().contains("--policy"), "{e}");
        assert!(find(&dir, "other", None, false).is_err());
        assert_eq!(
            approve_command(&a, "t"),
            "mcp-guard pins approve srv t --policy team"
        );
        let same = StateKey::new("srv", "srv").expect("key");
        assert_eq!(approve_command(&same, "t"), "mcp-guard pins approve srv t");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
