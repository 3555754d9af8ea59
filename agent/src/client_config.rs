//! `mcp-guard client-config`: wraps the stdio servers of an MCP client's config file with
//! `mcp-guard exec --policy P --name S -- CMD ARGS...`.
//!
//! Formats (detected from the file's shape, not its name):
//! - `{"mcpServers": {name: {command, args, env, ...}}}`: Claude Desktop's
//!   `claude_desktop_config.json`, Cursor's `mcp.json` (and other clients using the same shape);
//! - `{"servers": {name: {type: "stdio", command, args, env, ...}}, "inputs": [...]}`: VS Code's
//!   `mcp.json`;
//! - `{"mcp": {"servers": {...}}}`: the same inside VS Code's `settings.json`.
//!
//! Only `command` and `args` of a stdio server change; every other key of the file and of each
//! server (its `env`, `cwd`, `type`, client-specific keys) is kept, in order. Servers already
//! running under mcp-guard are left alone, so running the command twice gives what running it
//! once gave. Remote servers (`url`, `type: "sse"`/`"http"`) are left unchanged and reported.
//!
//! The original is never lost: `--write` first writes a timestamped backup next to the file
//! (refusing if it cannot), then replaces the file atomically (temp file in the same directory,
//! fsync, rename, fsync of the directory), all through one descriptor of that directory.

mod jsonc;
mod names;
mod policy_choice;
mod target;
mod unwrap;
mod wrap;

use std::{
    collections::BTreeMap,
    fmt,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::SystemTime,
};

use serde::Serialize;
use serde_json::{Map, Value};

use mcp_guard_launch::identity::ENV_ALLOW;
use mcp_guard_policy::PolicyError;
use wrap::wrap_entry;

/// What `client-config` needs besides the file: where policies are and how to write the wrapper.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The policy dir where policies are looked up by name (`--policy-dir`).
    pub policy_dir: PathBuf,
    /// Also write `--policy-dir DIR` into each wrapper (the dir is not exec's default one).
    pub pin_policy_dir: bool,
    /// The mcp-guard command written into the config (`--mcp-guard`).
    pub mcp_guard: String,
    /// Explicit policies by server name (`--policy-for SERVER=POLICY`): a policy name or a path.
    pub policy_for: BTreeMap<String, String>,
    /// `--unwrap`: restore the original commands of the servers mcp-guard wraps.
    pub unwrap: bool,
}

/// Which config shape a file has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Top-level `mcpServers` (Claude Desktop, Cursor).
    McpServers,
    /// Top-level `servers` (VS Code `mcp.json`).
    VsCode,
    /// `mcp.servers` (VS Code `settings.json`).
    VsCodeSettings,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::McpServers => "mcpServers (Claude Desktop / Cursor)",
            Format::VsCode => "servers (VS Code mcp.json)",
            Format::VsCodeSettings => "mcp.servers (VS Code settings.json)",
        })
    }
}

/// What happened to one server entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Wrapped with `mcp-guard exec`.
    Wrapped {
        /// The value written after `--policy`.
        policy: String,
        /// Why that policy (explicit, matched a name, or the default).
        reason: String,
        /// The value written after `--name`.
        name: String,
        /// Variables of the entry's `env` that the policy neither passes, sets nor replaces: the
        /// server will not see them.
        scrubbed: Vec<String>,
        /// Variables of the entry's `env` that the jail sets for the user the server runs as.
        identity: Vec<String>,
        /// Variables of the entry's `env` that the policy's `[secrets]` replaces.
        replaced: Vec<String>,
        /// Variables of the entry's `env` that the policy's `[env] set` fixes, with the policy's
        /// value: the server never sees the entry's.
        overridden: Vec<(String, String)>,
    },
    /// Its command already is mcp-guard.
    AlreadyWrapped,
    /// `--unwrap`: its original command and args are back.
    Unwrapped {
        /// The restored command.
        command: String,
    },
    /// `--unwrap`: it does not run under mcp-guard.
    NotWrapped,
    /// A remote (URL) server: nothing to jail on this host.
    Remote(String),
    /// Left unchanged because the entry is not something mcp-guard can wrap.
    Skipped(String),
}

/// One server's line of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerReport {
    /// The server's key in the config.
    pub server: String,
    /// What was done.
    pub outcome: Outcome,
    /// Further warnings about this server (plain-text secrets, containers).
    pub notes: Vec<String>,
}

/// The result of rewriting a config's text.
#[derive(Clone, Debug)]
pub struct Rewritten {
    /// The detected format.
    pub format: Format,
    /// The new file content.
    pub text: String,
    /// Whether anything changed (false: every server was already wrapped or not wrappable).
    pub changed: bool,
    /// One report per server, in file order.
    pub servers: Vec<ServerReport>,
}

/// Why a config could not be rewritten. The file is never modified when one occurs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is neither JSON nor JSONC (not UTF-8, a syntax error, ...).
    #[error(
        "{path}:{line}:{column}: not a JSON MCP client config: {message} (comments and \
         trailing commas are accepted, nothing looser); the file was not changed"
    )]
    NotJson {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// The JSON has none of the known shapes.
    #[error(
        "{path}: unknown MCP client config format: {what}; expected an object with \
         \"mcpServers\" (Claude Desktop, Cursor), \"servers\" (VS Code mcp.json) or \
         \"mcp\": {{\"servers\"}} (VS Code settings.json); the file was not changed"
    )]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        what: String,
    },
    /// `--policy-for` named a server the file does not have.
    #[error(
        "--policy-for names {names} but {path} has no such server (it has: {known}); the file \
         was not changed"
    )]
    UnknownServer {
        /// The file.
        path: PathBuf,
        /// The unknown names.
        names: String,
        /// The servers the file has.
        known: String,
    },
    /// A chosen policy is missing or invalid: wrapping with it would give a server that does not
    /// start.
    #[error(
        "server {server:?}: policy {spec:?} cannot be used (the file was not changed):\n{source}"
    )]
    Policy {
        /// The server.
        server: String,
        /// The policy name or path.
        spec: String,
        /// What is wrong with it.
        source: PolicyError,
    },
    /// The backup could not be written: the file is left as it was.
    #[error("{path}: cannot write the backup, so the config was not changed: {source}")]
    Backup {
        /// The backup file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The new config could not be written; the original is unchanged (and backed up).
    #[error("{path}: cannot write the new config (the original is unchanged): {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Rewrites the config text `text` (read from `path`, named in errors).
pub fn rewrite(path: &Path, text: &str, settings: &Settings) -> Result<Rewritten, Error> {
    let (mut root, plain) = jsonc::parse(text).map_err(|e| Error::NotJson {
        path: path.to_path_buf(),
        line: e.line,
        column: e.column,
        message: e.message,
    })?;
    let format = detect(&root).map_err(|what| Error::UnknownFormat {
        path: path.to_path_buf(),
        what,
    })?;
    let servers = servers_mut(&mut root, format).ok_or_else(|| Error::UnknownFormat {
        path: path.to_path_buf(),
        what: "the servers entry is not an object".to_string(),
    })?;

    let unknown: Vec<&str> = settings
        .policy_for
        .keys()
        .filter(|name| !servers.contains_key(name.as_str()))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(Error::UnknownServer {
            path: path.to_path_buf(),
            names: unknown.join(", "),
            known: servers.keys().cloned().collect::<Vec<_>>().join(", "),
        });
    }

    let mut reports = Vec::new();
    let mut changed = false;
    let mut edits = Vec::new();
    for (name, entry) in servers.iter_mut() {
        let mut report = if settings.unwrap {
            unwrap::entry(name, entry, &settings.mcp_guard)
        } else {
            wrap_entry(name, entry, settings)?
        };
        if matches!(
            report.outcome,
            Outcome::Wrapped { .. } | Outcome::Unwrapped { .. }
        ) {
            changed = true;
            edits.push(jsonc::Edit {
                server: name.clone(),
                command: entry["command"].as_str().unwrap_or_default().to_string(),
                args: entry["args"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
        if matches!(report.outcome, Outcome::Remote(_) | Outcome::Skipped(_))
            && settings.policy_for.contains_key(name)
        {
            report
                .notes
                .push("--policy-for was not applied: the server is not wrapped".to_string());
        }
        reports.push(report);
    }
    let out = if plain {
        let mut out = to_json(&root, &detect_indent(text));
        if text.ends_with('\n') {
            out.push('\n');
        }
        out
    } else {
        // Comments stay: only the changed values are replaced in the text.
        let keys: &[&str] = match format {
            Format::McpServers => &["mcpServers"],
            Format::VsCode => &["servers"],
            Format::VsCodeSettings => &["mcp", "servers"],
        };
        jsonc::splice(text, keys, &edits).map_err(|message| Error::NotJson {
            path: path.to_path_buf(),
            line: 1,
            column: 1,
            message,
        })?
    };
    Ok(Rewritten {
        format,
        changed: changed && out != text,
        text: out,
        servers: reports,
    })
}

/// The format of a parsed config, or what is wrong with it.
fn detect(root: &Value) -> Result<Format, String> {
    let Some(obj) = root.as_object() else {
        return Err(format!("the top level is {}, not an object", kind(root)));
    };
    let vscode_settings = obj
        .get("mcp")
        .and_then(Value::as_object)
        .is_some_and(|mcp| mcp.contains_key("servers"));
    let found: Vec<Format> = [
        (obj.contains_key("mcpServers"), Format::McpServers),
        (obj.contains_key("servers"), Format::VsCode),
        (vscode_settings, Format::VsCodeSettings),
    ]
    .into_iter()
    .filter_map(|(present, format)| present.then_some(format))
    .collect();
    match found.as_slice() {
        [format] => {
            let servers = match format {
                Format::McpServers => &obj["mcpServers"],
                Format::VsCode => &obj["servers"],
                Format::VsCodeSettings => &obj["mcp"]["servers"],
            };
            if servers.is_object() {
                Ok(*format)
            } else {
                Err(format!("its servers are {}, not an object", kind(servers)))
            }
        }
        [] => Err(if obj.is_empty() {
            "an empty object".to_string()
        } else {
            format!(
                "no servers entry among its keys ({})",
                obj.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        }),
        _ => Err(format!(
            "it has several servers entries ({}); which one the client reads is unclear",
            found
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn servers_mut(root: &mut Value, format: Format) -> Option<&mut Map<String, Value>> {
    match format {
        Format::McpServers => root.get_mut("mcpServers")?.as_object_mut(),
        Format::VsCode => root.get_mut("servers")?.as_object_mut(),
        Format::VsCodeSettings => root.get_mut("mcp")?.get_mut("servers")?.as_object_mut(),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The indentation unit of the original file (its first indented line), so the rewrite keeps
/// the user's style; two spaces when the file has none.
fn detect_indent(text: &str) -> String {
    text.lines()
        .skip(1)
        .find_map(|line| {
            let indent: String = line
                .chars()
                .take_while(|c| *c == ' ' || *c == '\t')
                .collect();
            (!indent.is_empty() && line.len() > indent.len()).then_some(indent)
        })
        .unwrap_or_else(|| "  ".to_string())
}

fn to_json(value: &Value, indent: &str) -> String {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(indent.as_bytes());
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    // Serializing a Value into memory cannot fail (keys are strings, no I/O errors).
    if value.serialize(&mut serializer).is_err() {
        return value.to_string();
    }
    String::from_utf8(out).unwrap_or_else(|_| value.to_string())
}

/// One line per server for stderr: what was done and why, then notes about its environment.
pub fn describe(report: &ServerReport) -> Vec<String> {
    let server = &report.server;
    let mut lines = vec![match &report.outcome {
        Outcome::Wrapped { policy, reason, .. } => {
            format!("{server}: wrapped with policy {policy} ({reason})")
        }
        Outcome::AlreadyWrapped => {
            format!("{server}: left unchanged: it already runs under mcp-guard")
        }
        Outcome::Remote(what) => format!(
            "{server}: left unchanged: not a stdio server ({what}); mcp-guard jails servers it \
             launches, not remote ones"
        ),
        Outcome::Skipped(why) => format!("{server}: left unchanged, NOT guarded: {why}"),
        Outcome::Unwrapped { command } => {
            format!("{server}: unwrapped: runs {command} again, NOT guarded")
        }
        Outcome::NotWrapped => format!("{server}: left unchanged: it does not run under mcp-guard"),
    }];
    if let Outcome::Wrapped {
        policy,
        name,
        scrubbed,
        identity,
        replaced,
        overridden,
        ..
    } = &report.outcome
    {
        if name != server {
            lines.push(format!(
                "{server}: runs as --name {name} (names allow letters, digits, '.', '_', '-')"
            ));
        }
        if !scrubbed.is_empty() {
            lines.push(format!(
                "{server}: env {} will be scrubbed: neither the built-in allowlist ({}, LC_*) \
                 nor policy {policy}'s [env] pass, [env] set or [secrets] keeps them; add them to [env] \
                 pass in a copy of the policy if the server needs them",
                scrubbed.join(", "),
                ENV_ALLOW.join(", ")
            ));
        }
        if !identity.is_empty() {
            lines.push(format!(
                "{server}: env {} will be set by the jail for the user the server runs as (HOME \
                 its home, USER and LOGNAME its name, TMPDIR /tmp), not taken from this file; \
                 [env] set in a copy of the policy fixes one",
                identity.join(", ")
            ));
        }
        if !replaced.is_empty() {
            lines.push(format!(
                "{server}: env {} will be replaced by policy {policy}'s [secrets], which only \
                 the command the policy fixes gets (its `command`, or the program its [pin] pins)",
                replaced.join(", ")
            ));
        }
        if !overridden.is_empty() {
            let names: Vec<&str> = overridden.iter().map(|(n, _)| n.as_str()).collect();
            let values: Vec<String> = overridden.iter().map(|(n, v)| format!("{n}={v}")).collect();
            lines.push(format!(
                "{server}: env {} will be overridden by policy {policy}'s [env] set ({}): the \
                 server gets the policy's value, not this file's",
                names.join(", "),
                values.join(", ")
            ));
        }
    }
    for note in &report.notes {
        lines.push(format!("{server}: note: {note}"));
    }
    lines
}

/// A warning when the config belongs to a user other than root: its client starts the servers
/// as that user, and `mcp-guard exec` refuses to run unprivileged (exit 77).
pub fn privilege_note(file: &Path) -> Option<String> {
    let owner = std::fs::metadata(file).ok()?.uid();
    (owner != 0).then(|| {
        format!(
            "note: {} belongs to uid {owner}, so its client starts the servers unprivileged; \
             mcp-guard exec needs root and refuses to launch without it (exit 77): let that \
             user run it through sudo (a sudoers rule for mcp-guard) or use the mcp-guard service",
            file.display()
        )
    })
}

/// What `client-config` did with the file.
#[derive(Debug)]
pub struct Done {
    /// The rewrite (its text is what was printed or written).
    pub rewritten: Rewritten,
    /// With `--write`: the backup written, or `None` when nothing had to change.
    pub backup: Option<PathBuf>,
}

/// Reads `file`, rewrites it and, with `write`, replaces it after a backup (else the caller prints
/// [`Rewritten::text`]). The file is read, backed up and replaced through one descriptor of its
/// directory (see [`target`]).
pub fn run(file: &Path, settings: &Settings, write: bool) -> Result<Done, Error> {
    let config = target::ConfigFile::open(file)?;
    let text = String::from_utf8(config.bytes().to_vec()).map_err(|e| Error::NotJson {
        path: file.to_path_buf(),
        line: 1,
        column: 1,
        message: format!("not UTF-8 text ({e})"),
    })?;
    let rewritten = rewrite(file, &text, settings)?;
    let mut backup = None;
    if write && rewritten.changed {
        backup = Some(config.replace_with_backup(&rewritten.text)?);
    }
    Ok(Done { rewritten, backup })
}

/// `YYYYMMDDTHHMMSSZ` for a time (UTC), for backup names that sort by time.
fn utc_stamp(time: SystemTime) -> String {
    mcp_guard_model::timestamp::Timestamp::from(time)
        .utc()
        .format("%Y%m%dT%H%M%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::{names::*, policy_choice::*};

    /// A fresh policy dir holding valid policies with the given names (and secrets / env pass).
    fn policy_dir(tag: &str, policies: &[(&str, &str)]) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("mcp-guard-cc-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create policy dir");
        for (name, extra) in policies {
            std::fs::write(
                dir.join(format!("{name}.toml")),
                format!("name = \"{name}\"\n{extra}"),
            )
            .expect("write policy");
        }
        dir
    }

    fn settings(dir: &Path) -> Settings {
        Settings {
            policy_dir: dir.to_path_buf(),
            pin_policy_dir: false,
            mcp_guard: "/usr/local/bin/mcp-guard".to_string(),
            policy_for: BTreeMap::new(),
            unwrap: false,
        }
    }

    fn run_text(text: &str, settings: &Settings) -> Rewritten {
        rewrite(Path::new("test.json"), text, settings).expect("rewrite")
    }

    fn json(text: &str) -> Value {
        serde_json::from_str(text).expect("valid JSON")
    }

    fn args_of(v: &Value) -> Vec<&str> {
        v["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("string arg"))
            .collect()
    }

    const CLAUDE: &str = r#"{
  "globalShortcut": "Ctrl+Space",
  "mcpServers": {
    "files": {
      "command": "npx",
      "args": ["-y", "@modelcontextprotocol/server-filesystem@2026.8.31", "/home/u/Desktop"],
      "env": {"NODE_OPTIONS": "--max-old-space-size=256", "GITHUB_TOKEN": "x", "DEBUG": "1", "PATH": "/opt/node/bin:/usr/bin", "LC_ALL": "C"},
      "disabled": false
    },
    "fetch": {"command": "uvx", "args": ["mcp-server-fetch"]},
    "remote": {"url": "https://example.com/mcp"},
    "guarded": {"command": "/opt/bin/mcp-guard", "args": ["exec", "--", "x"]}
  },
  "zzz": [1, 2.5, null, {"b": 1, "a": 2}]
}
"#;

    #[test]
    fn mcp_servers_format_wraps_stdio_servers_and_keeps_everything_else() {
        let dir = policy_dir(
            "claude",
            &[
                ("filesystem", "[env]\npass = [\"NODE_OPTIONS\"]\n"),
                (
                    "fetch",
                    "[secrets]\nGITHUB_TOKEN = { file = \"/nonexistent\" }\n",
                ),
            ],
        );
        let out = run_text(CLAUDE, &settings(&dir));
        assert_eq!(out.format, Format::McpServers);
        assert!(out.changed);
        let new = json(&out.text);
        let old = json(CLAUDE);
        // Top-level key order is the user's.
        let keys: Vec<&String> = new.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["globalShortcut", "mcpServers", "zzz"]);
        assert_eq!(new["zzz"], old["zzz"]);
        assert_eq!(new["globalShortcut"], old["globalShortcut"]);

        let files = &new["mcpServers"]["files"];
        assert_eq!(files["command"], "/usr/local/bin/mcp-guard");
        assert_eq!(
            args_of(files),
            [
                "exec",
                "--policy",
                "filesystem",
                "--name",
                "files",
                "--",
                "npx",
                "-y",
                "@modelcontextprotocol/server-filesystem@2026.8.31",
                "/home/u/Desktop"
            ]
        );
        assert_eq!(files["env"], old["mcpServers"]["files"]["env"]);
        assert_eq!(files["disabled"], false);
        let fetch = &new["mcpServers"]["fetch"];
        assert_eq!(
            args_of(fetch),
            [
                "exec",
                "--policy",
                "fetch",
                "--name",
                "fetch",
                "--",
                "uvx",
                "mcp-server-fetch"
            ]
        );
        assert_eq!(new["mcpServers"]["remote"], old["mcpServers"]["remote"]);
        assert_eq!(new["mcpServers"]["guarded"], old["mcpServers"]["guarded"]);

        let by_name: BTreeMap<&str, &ServerReport> =
            out.servers.iter().map(|r| (r.server.as_str(), r)).collect();
        match &by_name["files"].outcome {
            Outcome::Wrapped {
                policy,
                reason,
                scrubbed,
                replaced,
                ..
            } => {
                assert_eq!(policy, "filesystem");
                assert!(
                    reason.contains("@modelcontextprotocol/server-filesystem"),
                    "{reason}"
                );
                assert_eq!(scrubbed, &["GITHUB_TOKEN", "DEBUG"]);
                assert!(replaced.is_empty());
            }
            other => panic!("files: {other:?}"),
        }
        assert!(
            by_name["files"]
                .notes
                .iter()
                .any(|n| n.contains("GITHUB_TOKEN looks like a secret")),
            "{:?}",
            by_name["files"].notes
        );
        assert_eq!(by_name["guarded"].outcome, Outcome::AlreadyWrapped);
        assert!(matches!(by_name["remote"].outcome, Outcome::Remote(_)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rewriting_twice_is_rewriting_once() {
        let dir = policy_dir("idem", &[("fetch", "")]);
        let once = run_text(CLAUDE, &settings(&dir));
        let twice = run_text(&once.text, &settings(&dir));
        assert!(!twice.changed);
        assert_eq!(once.text, twice.text);
        assert!(
            twice
                .servers
                .iter()
                .all(|r| !matches!(r.outcome, Outcome::Wrapped { .. })),
            "{:?}",
            twice.servers
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    const VSCODE: &str = "{\n\t\"inputs\": [\n\t\t{\"type\": \"promptString\", \"id\": \"pat\", \"password\": true}\n\t],\n\t\"servers\": {\n\t\t\"time\": {\"type\": \"stdio\", \"command\": \"/home/u/.venv/bin/mcp-server-time\", \"args\": [], \"env\": {\"TOKEN\": \"${input:pat}\"}, \"envFile\": \"${workspaceFolder}/.env\"},\n\t\t\"docs\": {\"type\": \"http\", \"url\": \"https://example.com/mcp\", \"headers\": {\"A\": \"b\"}},\n\t\t\"old\": {\"type\": \"sse\", \"url\": \"https://example.com/sse\"}\n\t}\n}";

    #[test]
    fn vscode_format_keeps_type_inputs_and_tab_indentation() {
        let dir = policy_dir("vscode", &[("time", "")]);
        let out = run_text(VSCODE, &settings(&dir));
        assert_eq!(out.format, Format::VsCode);
        let new = json(&out.text);
        let old = json(VSCODE);
        assert_eq!(new["inputs"], old["inputs"]);
        let time = &new["servers"]["time"];
        assert_eq!(time["type"], "stdio");
        assert_eq!(time["envFile"], old["servers"]["time"]["envFile"]);
        assert_eq!(time["env"], old["servers"]["time"]["env"]);
        assert_eq!(
            args_of(time),
            [
                "exec",
                "--policy",
                "time",
                "--name",
                "time",
                "--",
                "/home/u/.venv/bin/mcp-server-time"
            ]
        );
        assert_eq!(new["servers"]["docs"], old["servers"]["docs"]);
        assert_eq!(new["servers"]["old"], old["servers"]["old"]);
        // The user's tab indentation and missing final newline are kept.
        assert!(out.text.starts_with("{\n\t\"inputs\""), "{}", out.text);
        assert!(!out.text.ends_with('\n'));
        // A value written as ${input:...} is not a plain-text secret.
        assert!(
            out.servers[0].notes.is_empty(),
            "{:?}",
            out.servers[0].notes
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn vscode_settings_format_wraps_mcp_servers() {
        let dir = policy_dir("settings", &[]);
        let text = r#"{"editor.fontSize": 14, "mcp": {"servers": {"s": {"command": "node", "args": ["/x/node_modules/@modelcontextprotocol/server-memory/dist/index.js"]}}}}"#;
        let out = run_text(text, &settings(&dir));
        assert_eq!(out.format, Format::VsCodeSettings);
        let new = json(&out.text);
        assert_eq!(new["editor.fontSize"], 14);
        assert_eq!(args_of(&new["mcp"]["servers"]["s"])[2], "default");
        match &out.servers[0].outcome {
            Outcome::Wrapped { reason, .. } => {
                assert!(reason.contains("memory.toml"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unknown_formats_are_errors() {
        let dir = policy_dir("unknown", &[]);
        let s = settings(&dir);
        for (text, expected) in [
            ("[1, 2]", "the top level is an array"),
            ("{}", "an empty object"),
            (
                r#"{"theme": "dark"}"#,
                "no servers entry among its keys (theme)",
            ),
            (r#"{"mcpServers": []}"#, "its servers are an array"),
            (
                r#"{"mcpServers": {}, "servers": {}}"#,
                "several servers entries",
            ),
        ] {
            match rewrite(Path::new("c.json"), text, &s) {
                Err(e @ Error::UnknownFormat { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.contains(expected), "{text}: {msg}");
                    assert!(msg.contains("the file was not changed"), "{msg}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        // Comments are JSONC, accepted; looser syntax is not.
        let jsonc = "{\n  // a comment\n  \"servers\": {}\n}";
        let r = rewrite(Path::new("c.json"), jsonc, &s).expect("JSONC");
        assert_eq!((r.text.as_str(), r.changed), (jsonc, false));
        match rewrite(Path::new("c.json"), "{\n  'servers': {}\n}", &s) {
            Err(e @ Error::NotJson { line: 2, .. }) => {
                assert!(e.to_string().contains("nothing looser"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn entries_that_cannot_be_wrapped_are_left_and_reported() {
        let dir = policy_dir("skip", &[]);
        let text = r#"{"mcpServers": {
            "a": "npx foo",
            "b": {"command": "x", "args": "y"},
            "c": {"command": "x", "args": [1]},
            "d": {"type": "carrier-pigeon", "command": "x"},
            "e": {}
        }}"#;
        let out = run_text(text, &settings(&dir));
        assert!(!out.changed);
        assert_eq!(json(&out.text), json(text));
        for report in &out.servers {
            assert!(matches!(report.outcome, Outcome::Skipped(_)), "{report:?}");
            assert!(describe(report)[0].contains("NOT guarded"));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn explicit_policies_win_and_bad_ones_are_refused() {
        let dir = policy_dir("explicit", &[("fetch", ""), ("strict", "")]);
        let file_policy = dir.join("strict.toml");
        let mut s = settings(&dir);
        s.policy_for
            .insert("fetch".to_string(), "strict".to_string());
        let out = run_text(CLAUDE, &s);
        let new = json(&out.text);
        assert_eq!(args_of(&new["mcpServers"]["fetch"])[2], "strict");

        s.policy_for
            .insert("fetch".to_string(), file_policy.display().to_string());
        let out = run_text(CLAUDE, &s);
        assert_eq!(
            args_of(&json(&out.text)["mcpServers"]["fetch"])[2],
            file_policy.display().to_string()
        );

        s.policy_for
            .insert("fetch".to_string(), "missing".to_string());
        let err = rewrite(Path::new("c.json"), CLAUDE, &s).expect_err("missing policy");
        assert!(matches!(err, Error::Policy { .. }), "{err}");

        s.policy_for.clear();
        s.policy_for
            .insert("fecth".to_string(), "strict".to_string());
        let err = rewrite(Path::new("c.json"), CLAUDE, &s).expect_err("unknown server");
        assert!(err.to_string().contains("fecth"), "{err}");

        // A matching policy that is invalid is an error, not a silent fallback to default.
        std::fs::write(dir.join("fetch.toml"), "name = \"fetch\"\nbogus = 1\n").expect("write");
        let err = rewrite(Path::new("c.json"), CLAUDE, &settings(&dir)).expect_err("bad policy");
        assert!(err.to_string().contains("bogus"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pinned_policy_dir_is_written_before_exec() {
        let dir = policy_dir("pin", &[]);
        let mut s = settings(&dir);
        s.pin_policy_dir = true;
        let out = run_text(
            r#"{"mcpServers": {"t": {"command": "uvx", "args": ["mcp-server-time"]}}}"#,
            &s,
        );
        let new = json(&out.text);
        let args = args_of(&new["mcpServers"]["t"]);
        assert_eq!(
            args[..3],
            ["--policy-dir", &dir.display().to_string(), "exec"]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn packages_are_found_behind_the_usual_runners() {
        let cases: &[(&str, &[&str], Option<&str>)] = &[
            (
                "npx",
                &["-y", "@modelcontextprotocol/server-filesystem", "/d"],
                Some("@modelcontextprotocol/server-filesystem"),
            ),
            (
                "npx",
                &["--yes", "@playwright/mcp@latest"],
                Some("@playwright/mcp"),
            ),
            ("npx", &["-p", "pkg-a", "bin-b"], Some("pkg-a")),
            ("npx.cmd", &["-y", "left-pad@1"], Some("left-pad")),
            ("pnpm", &["dlx", "mcp-foo"], Some("mcp-foo")),
            ("uvx", &["mcp-server-fetch"], Some("mcp-server-fetch")),
            (
                "uvx",
                &[
                    "--python",
                    "3.12",
                    "mcp-server-git==1.0",
                    "--repository",
                    ".",
                ],
                Some("mcp-server-git"),
            ),
            (
                "uvx",
                &["--from", "mcp-server-time[x]>=1", "mcp-server-time"],
                Some("mcp-server-time"),
            ),
            (
                "uv",
                &["tool", "run", "mcp-server-sqlite"],
                Some("mcp-server-sqlite"),
            ),
            (
                "pipx",
                &["run", "mcp-server-fetch"],
                Some("mcp-server-fetch"),
            ),
            (
                "/usr/bin/python3",
                &["-m", "mcp_server_time"],
                Some("mcp_server_time"),
            ),
            ("python", &["server.py"], None),
            (
                "node",
                &["/x/node_modules/@modelcontextprotocol/server-memory/dist/index.js"],
                Some("@modelcontextprotocol/server-memory"),
            ),
            ("node", &["/srv/my/index.js"], None),
            (
                "/home/u/.venv/bin/mcp-server-git",
                &[],
                Some("mcp-server-git"),
            ),
        ];
        for (command, args, expected) in cases {
            let args: Vec<String> = args.iter().map(std::string::ToString::to_string).collect();
            assert_eq!(
                package_of(command, &args).as_deref(),
                *expected,
                "{command} {args:?}"
            );
        }
    }

    #[test]
    fn candidate_names_strip_the_usual_affixes() {
        let names = |server: &str, command: &str, args: &[&str]| -> Vec<String> {
            let args: Vec<String> = args.iter().map(std::string::ToString::to_string).collect();
            candidate_names(server, command, &args)
                .into_iter()
                .map(|(n, _)| n)
                .collect()
        };
        assert_eq!(
            names(
                "files",
                "npx",
                &["-y", "@modelcontextprotocol/server-filesystem"]
            ),
            ["files", "server-filesystem", "filesystem"]
        );
        assert_eq!(
            names("f", "uvx", &["mcp-server-fetch"]),
            ["f", "mcp-server-fetch", "fetch"]
        );
        assert_eq!(
            names("pw", "npx", &["@playwright/mcp@latest"]),
            ["pw", "playwright"]
        );
        assert_eq!(
            names(
                "GitHub-MCP",
                "docker",
                &["run", "-i", "ghcr.io/github/github-mcp-server"]
            ),
            ["GitHub-MCP", "github", "docker"]
        );
        assert_eq!(
            names("t", "python", &["-m", "mcp_server_time"]),
            ["t", "mcp-server-time", "time"]
        );
    }

    #[test]
    fn exec_names_are_safe() {
        assert_eq!(exec_name("github"), "github");
        assert_eq!(exec_name("my fetcher"), "my-fetcher");
        assert_eq!(exec_name("-x"), "s-x");
        assert_eq!(exec_name(&"a".repeat(80)).len(), 64);
        assert!(is_mcp_guard("mcp-guard", "/x"));
        assert!(is_mcp_guard("/usr/local/bin/mcp-guard", "/x"));
        assert!(is_mcp_guard("/x", "/x"));
        assert!(!is_mcp_guard("npx", "/x"));
    }

    #[test]
    fn backup_names_carry_the_utc_time() {
        assert_eq!(utc_stamp(std::time::UNIX_EPOCH), "19700101T000000Z");
        let leap = std::time::UNIX_EPOCH + std::time::Duration::from_hours(264_384);
        assert_eq!(utc_stamp(leap), "20000229T000000Z");
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_763_929_512);
        assert_eq!(utc_stamp(t), "20251123T202512Z");
    }

    #[test]
    fn write_keeps_a_byte_identical_backup_and_the_files_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = policy_dir("write", &[]);
        let real = dir.join("real.json");
        let link = dir.join("link.json");
        let original =
            "{\"mcpServers\": {\"t\": {\"command\": \"uvx\", \"args\": [\"mcp-server-time\"]}}}";
        std::fs::write(&real, original).expect("write config");
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");

        let done = run(&link, &settings(&dir), true).expect("run --write");
        let backup = done.backup.expect("a backup");
        assert_eq!(backup.parent(), Some(dir.as_path()));
        assert!(
            backup
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("real.json.mcp-guard-backup-")),
            "{}",
            backup.display()
        );
        assert_eq!(std::fs::read_to_string(&backup).expect("backup"), original);
        // The link is kept and the file it points to now holds the rewrite.
        assert!(
            std::fs::symlink_metadata(&link)
                .expect("link")
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            std::fs::read_to_string(&real).expect("new"),
            done.rewritten.text
        );
        let mode = std::fs::metadata(&real).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temp file is left behind.
        let names: Vec<String> = std::fs::read_dir(&dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.contains("tmp")), "{names:?}");

        // Again: nothing to change, no second backup.
        let again = run(&link, &settings(&dir), true).expect("run --write again");
        assert!(again.backup.is_none());
        let backups = std::fs::read_dir(&dir)
            .expect("list")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().contains("backup"))
            })
            .count();
        assert_eq!(backups, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn configs_of_unprivileged_users_get_a_note() {
        let dir = policy_dir("owner", &[]);
        let file = dir.join("c.json");
        std::fs::write(&file, "{}").expect("write config");
        let ours = std::fs::metadata(&file).expect("meta").uid();
        assert_eq!(privilege_note(&file).is_some(), ours != 0);
        if ours == 0 {
            // As root (CI), hand the file to nobody.
            std::os::unix::fs::chown(&file, Some(65534), None).expect("chown");
            let note = privilege_note(&file).expect("a note for uid 65534");
            assert!(
                note.contains("uid 65534") && note.contains("needs root"),
                "{note}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unwritable_backup_leaves_the_file_alone() {
        let dir = policy_dir("nobackup", &[]);
        let original =
            "{\"mcpServers\": {\"t\": {\"command\": \"uvx\", \"args\": [\"mcp-server-time\"]}}}";
        let file = dir.join("c.json");
        std::fs::write(&file, original).expect("write config");
        // Taken backup names up to the retry limit make the backup impossible.
        let stamp = utc_stamp(SystemTime::now());
        let base = format!("c.json.mcp-guard-backup-{stamp}");
        std::fs::create_dir(dir.join(&base)).expect("block");
        for n in 1..=100 {
            std::fs::create_dir(dir.join(format!("{base}-{n}"))).expect("block");
        }
        match run(&file, &settings(&dir), true) {
            Err(Error::Backup { .. }) => {}
            // The second ticked over between the stamp above and the run: nothing to assert.
            Ok(done)
                if done
                    .backup
                    .as_ref()
                    .is_some_and(|b| !b.to_string_lossy().contains(&stamp)) =>
            {
                let _ = std::fs::remove_dir_all(&dir);
                return;
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read_to_string(&file).expect("read"), original);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
