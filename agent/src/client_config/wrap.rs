//! Wrapping one stdio server entry: what is left alone (remote, already wrapped, not a
//! command), the `exec` arguments written in its place, and the notes about its environment
//! (variables the jail drops or the policy's secrets replace, secrets written in plain text, a
//! container client).

use serde_json::Value;

use super::{
    Error, Outcome, ServerReport, Settings, kind,
    names::{exec_name, is_mcp_guard, program_name},
    policy_choice::choose_policy,
};
use mcp_guard_launch::identity::{ENV_ALLOW, IDENTITY_VARS};
use mcp_guard_policy::Policy;

/// Server types that are reached over the network, not launched.
const REMOTE_TYPES: &[&str] = &["sse", "http", "streamable-http", "streamableHttp", "ws"];

/// Wraps one server entry in place when it is an unwrapped stdio server.
pub(super) fn wrap_entry(
    name: &str,
    entry: &mut Value,
    settings: &Settings,
) -> Result<ServerReport, Error> {
    let mut report = ServerReport {
        server: name.to_string(),
        outcome: Outcome::Skipped(String::new()),
        notes: Vec::new(),
    };
    let Some(obj) = entry.as_object_mut() else {
        report.outcome = Outcome::Skipped(format!("its entry is {}, not an object", kind(entry)));
        return Ok(report);
    };
    let ty = obj.get("type").and_then(Value::as_str);
    let url = obj
        .get("url")
        .or_else(|| obj.get("serverUrl"))
        .and_then(Value::as_str);
    if let Some(ty) = ty.filter(|t| REMOTE_TYPES.contains(t)) {
        report.outcome = Outcome::Remote(format!("type {ty:?}{}", at(url)));
        return Ok(report);
    }
    if let Some(ty) = ty.filter(|t| *t != "stdio") {
        report.outcome = Outcome::Skipped(format!("unknown server type {ty:?}"));
        return Ok(report);
    }
    let Some(command) = obj
        .get("command")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        report.outcome = match (obj.get("command"), url) {
            (None, Some(_)) => Outcome::Remote(format!("a URL server{}", at(url))),
            (None, None) => Outcome::Skipped("it has neither a command nor a url".to_string()),
            (Some(c), _) => Outcome::Skipped(format!("its command is {}, not a string", kind(c))),
        };
        return Ok(report);
    };
    let args: Vec<String> = match obj.get("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let strings: Option<Vec<String>> = items
                .iter()
                .map(|a| a.as_str().map(str::to_string))
                .collect();
            let Some(strings) = strings else {
                report.outcome = Outcome::Skipped("its args are not all strings".to_string());
                return Ok(report);
            };
            strings
        }
        Some(other) => {
            report.outcome =
                Outcome::Skipped(format!("its args are {}, not an array", kind(other)));
            return Ok(report);
        }
    };
    if is_mcp_guard(&command, &settings.mcp_guard) {
        report.outcome = Outcome::AlreadyWrapped;
        if settings.policy_for.contains_key(name) {
            report.notes.push(
                "--policy-for was not applied: it already runs under mcp-guard (edit its \
                 --policy argument instead)"
                    .to_string(),
            );
        }
        return Ok(report);
    }

    let chosen = choose_policy(name, &command, &args, settings)?;
    let env_names: Vec<String> = obj
        .get("env")
        .and_then(Value::as_object)
        .map(|env| env.keys().cloned().collect())
        .unwrap_or_default();
    let fate = env_fate(&env_names, &chosen.policy);
    let wrapped_name = exec_name(name);
    if let Some(env) = obj.get("env").and_then(Value::as_object) {
        for (key, value) in env {
            if !(looks_secret(key) && value.as_str().is_some_and(|v| !v.contains("${"))) {
                continue;
            }
            if chosen.policy.secrets.contains_key(key) {
                report.notes.push(format!(
                    "env {key} is written in plain text in this file, and policy {} sets it \
                     from its [secrets]: remove it from this file",
                    chosen.spec
                ));
            } else {
                report.notes.push(format!(
                    "env {key} looks like a secret written in plain text in this file: put it in \
                     a file readable only by root and name it in the policy's [secrets] \
                     ({key} = {{ file = \"/etc/mcp-guard/secrets/{wrapped_name}\" }})"
                ));
            }
        }
    }
    if let Some(engine) = container_engine(&command, &args) {
        report.notes.push(format!(
            "it runs `{engine} run`: exec jails the {engine} client, not the container, which \
             the container engine starts outside the jail"
        ));
    }
    if command.contains(char::is_whitespace) && args.is_empty() {
        report.notes.push(format!(
            "its command {command:?} contains spaces and it has no args: exec runs it as one \
             program name; split it into command and args"
        ));
    }

    let mut new_args = Vec::new();
    if settings.pin_policy_dir {
        new_args.push("--policy-dir".to_string());
        new_args.push(settings.policy_dir.display().to_string());
    }
    new_args.extend([
        "exec".to_string(),
        "--policy".to_string(),
        chosen.spec.clone(),
        "--name".to_string(),
        wrapped_name.clone(),
        "--".to_string(),
        command,
    ]);
    new_args.extend(args);
    obj.insert(
        "command".to_string(),
        Value::String(settings.mcp_guard.clone()),
    );
    obj.insert(
        "args".to_string(),
        Value::Array(new_args.into_iter().map(Value::String).collect()),
    );
    report.outcome = Outcome::Wrapped {
        policy: chosen.spec,
        reason: chosen.reason,
        name: wrapped_name,
        scrubbed: fate.scrubbed,
        identity: fate.identity,
        replaced: fate.replaced,
        overridden: fate.overridden,
    };
    Ok(report)
}

fn at(url: Option<&str>) -> String {
    url.map(|u| format!(" at {u}")).unwrap_or_default()
}

/// `docker`/`podman` when the command starts a container.
pub(super) fn container_engine<'c>(command: &'c str, args: &[String]) -> Option<&'c str> {
    let program = program_name(command);
    (matches!(program, "docker" | "podman" | "nerdctl") && args.iter().any(|a| a == "run"))
        .then_some(program)
}

/// What the launcher does with the variables of a server entry's `env`, in the order it builds
/// the server's environment: the policy's `[secrets]` win over everything, its `[env] set` over
/// what the caller passes, and a variable neither allowlisted nor passed is dropped.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct EnvFate {
    /// Dropped: neither in the built-in allowlist nor passed or set by the policy.
    pub(super) scrubbed: Vec<String>,
    /// Set by the jail for the user the server runs as (HOME, USER, LOGNAME, TMPDIR).
    pub(super) identity: Vec<String>,
    /// Replaced by the policy's `[secrets]`.
    pub(super) replaced: Vec<String>,
    /// Fixed by the policy's `[env] set`: name and the policy's value.
    pub(super) overridden: Vec<(String, String)>,
}

/// Sorts the variables of a server's `env` by what the launcher will do with them.
pub(super) fn env_fate(names: &[String], policy: &Policy) -> EnvFate {
    let mut fate = EnvFate::default();
    for name in names {
        let kept = ENV_ALLOW.contains(&name.as_str())
            || name.starts_with("LC_")
            || policy.env.pass.contains(name);
        if policy.secrets.contains_key(name) {
            fate.replaced.push(name.clone());
        } else if let Some(value) = policy.env.set.get(name) {
            fate.overridden.push((name.clone(), value.clone()));
        } else if IDENTITY_VARS.contains(&name.as_str()) {
            fate.identity.push(name.clone());
        } else if !kept {
            fate.scrubbed.push(name.clone());
        }
    }
    fate
}

/// Whether an environment variable's name suggests a credential.
pub(super) fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    [
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "API_KEY",
        "APIKEY",
        "PRIVATE_KEY",
        "CREDENTIAL",
    ]
    .iter()
    .any(|word| upper.contains(word))
        || upper.ends_with("_KEY")
        || upper.ends_with("_PAT")
}
