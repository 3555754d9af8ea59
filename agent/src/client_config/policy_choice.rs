//! Which policy a wrapped server gets: `--policy-for`, else the first policy in the policy dir
//! named after the server or the package its command runs (`npx -y @scope/server-x` → `x`),
//! else `default`, each with the reason shown to the user.

use super::{
    Error, Settings,
    names::{exec_name, program_name},
};
use mcp_guard_policy::{self as policy, Policy};

/// The policy chosen for a server.
#[derive(Debug)]
pub(super) struct Chosen {
    /// What goes after `--policy`: a name in the policy dir, or an absolute path.
    pub(super) spec: String,
    pub(super) policy: Policy,
    pub(super) reason: String,
}

pub(super) fn choose_policy(
    server: &str,
    command: &str,
    args: &[String],
    settings: &Settings,
) -> Result<Chosen, Error> {
    let load = |spec: String, reason: String| -> Result<Chosen, Error> {
        match policy::load(Some(&spec), &settings.policy_dir) {
            Ok(policy) => Ok(Chosen {
                spec,
                policy,
                reason,
            }),
            Err(source) => Err(Error::Policy {
                server: server.to_string(),
                spec,
                source,
            }),
        }
    };
    if let Some(spec) = settings.policy_for.get(server) {
        // A path is made absolute: the client starts exec from a directory of its own choosing.
        let spec = if spec.contains('/') || spec.ends_with(".toml") {
            std::path::absolute(spec).map_or_else(|_| spec.clone(), |p| p.display().to_string())
        } else {
            spec.clone()
        };
        return load(spec, "given by --policy-for".to_string());
    }
    let mut tried = Vec::new();
    for (candidate, source) in candidate_names(server, command, args) {
        if !is_policy_name(&candidate) {
            continue;
        }
        let file = format!("{candidate}.toml");
        if settings.policy_dir.join(&file).is_file() {
            return load(candidate, format!("matches the {source}"));
        }
        tried.push(file);
    }
    if !settings.policy_dir.is_dir() {
        return load(
            "default".to_string(),
            format!(
                "the policy dir {} does not exist: install the shipped policies there or give \
                 --policy-dir",
                settings.policy_dir.display()
            ),
        );
    }
    load(
        "default".to_string(),
        format!(
            "no {} in {}",
            if tried.is_empty() {
                "policy named after the server".to_string()
            } else {
                tried.join(" or ")
            },
            settings.policy_dir.display()
        ),
    )
}

pub(super) fn is_policy_name(name: &str) -> bool {
    !name.is_empty() && exec_name(name) == name
}

/// Policy names to look for, best first, each with what it was derived from: the server's name,
/// then the package it runs, each as written and with the usual `mcp-server-`/`server-`/`-mcp`
/// affixes stripped (`@modelcontextprotocol/server-filesystem` → `filesystem`).
pub(super) fn candidate_names(
    server: &str,
    command: &str,
    args: &[String],
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut push = |name: String, source: String| {
        if !name.is_empty() && !out.iter().any(|(n, _)| *n == name) {
            out.push((name, source));
        }
    };
    push(server.to_string(), format!("server name {server:?}"));
    let lower = server.to_ascii_lowercase();
    push(strip_affixes(&lower), format!("server name {server:?}"));
    if let Some(package) = package_of(command, args) {
        let base = package_base(&package);
        push(base.clone(), format!("package {package}"));
        push(strip_affixes(&base), format!("package {package}"));
    }
    out
}

/// The last path segment of a package name, lowercased with `_` as `-` (Python module names);
/// for `@scope/mcp` (e.g. `@playwright/mcp`) the scope, since the name says nothing.
pub(super) fn package_base(package: &str) -> String {
    let package = package.to_ascii_lowercase().replace('_', "-");
    let mut parts = package.rsplit('/');
    let last = parts.next().unwrap_or_default();
    if matches!(last, "mcp" | "mcp-server" | "server")
        && let Some(scope) = parts.next()
    {
        return scope.trim_start_matches('@').to_string();
    }
    last.to_string()
}

pub(super) fn strip_affixes(name: &str) -> String {
    let name = name.replace('_', "-");
    let mut s = name.as_str();
    for prefix in ["mcp-server-", "server-", "mcp-"] {
        if let Some(rest) = s.strip_prefix(prefix) {
            s = rest;
            break;
        }
    }
    for suffix in ["-mcp-server", "-server-mcp", "-server", "-mcp"] {
        if let Some(rest) = s.strip_suffix(suffix) {
            s = rest;
            break;
        }
    }
    s.to_string()
}

/// The package (npm, PyPI, or a program's name) a server command runs, version stripped:
/// `npx -y @scope/pkg@1.2` → `@scope/pkg`, `uvx --from pkg==1 cmd` → `pkg`,
/// `python -m mcp_server_time` → `mcp_server_time`, `node .../node_modules/pkg/dist/index.js` →
/// `pkg`, `/venv/bin/mcp-server-git` → `mcp-server-git`.
pub(super) fn package_of(command: &str, args: &[String]) -> Option<String> {
    let program = program_name(command);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let runner = |rest: &[&str], value_flags: &[&str], package_flags: &[&str]| {
        runner_package(rest, value_flags, package_flags)
    };
    match program {
        "npx" | "bunx" | "pnpx" => runner(&args, NPX_VALUE_FLAGS, &["-p", "--package"]).map(npm),
        "npm" | "pnpm" | "yarn" | "bun" => match args.split_first() {
            Some((&("exec" | "dlx" | "x"), rest)) => {
                runner(rest, NPX_VALUE_FLAGS, &["-p", "--package"]).map(npm)
            }
            _ => None,
        },
        "uvx" => runner(&args, UVX_VALUE_FLAGS, &["--from"]).map(pypi),
        "uv" => match args.as_slice() {
            ["tool", "run", rest @ ..] => runner(rest, UVX_VALUE_FLAGS, &["--from"]).map(pypi),
            _ => None,
        },
        "pipx" => match args.split_first() {
            Some((&"run", rest)) => {
                runner(rest, &["--python", "--pip-args"], &["--spec"]).map(pypi)
            }
            _ => None,
        },
        p if p.starts_with("python") => {
            let i = args.iter().position(|a| *a == "-m")?;
            args.get(i + 1).map(std::string::ToString::to_string)
        }
        "node" | "deno" | "tsx" | "ts-node" => args
            .iter()
            .find(|a| !a.starts_with('-'))
            .and_then(|script| node_modules_package(script)),
        _ if is_path_like(command) || !command.contains(char::is_whitespace) => {
            Some(program.to_string())
        }
        _ => None,
    }
}

const NPX_VALUE_FLAGS: &[&str] = &["--registry", "--cache", "--userconfig", "-c", "--call"];

const UVX_VALUE_FLAGS: &[&str] = &[
    "--with",
    "--python",
    "-p",
    "--index",
    "--index-url",
    "--extra-index-url",
    "--default-index",
    "--with-requirements",
    "--with-editable",
];

/// The package a runner (`npx`, `uvx`, ...) runs: the value of a package flag if given, else the
/// first argument that is not an option.
pub(super) fn runner_package(
    args: &[&str],
    value_flags: &[&str],
    package_flags: &[&str],
) -> Option<String> {
    let mut first = None;
    let mut i = 0;
    while i < args.len() {
        let arg = args[i];
        if let Some((flag, value)) = arg.split_once('=')
            && package_flags.contains(&flag)
        {
            return Some(value.to_string());
        }
        if package_flags.contains(&arg) {
            return args.get(i + 1).map(std::string::ToString::to_string);
        }
        if value_flags.contains(&arg) {
            i += 2;
            continue;
        }
        if arg == "--" || arg.starts_with('-') {
            i += 1;
            continue;
        }
        if first.is_none() {
            first = Some(arg.to_string());
        }
        i += 1;
    }
    first
}

/// An npm package spec without its version (`@scope/pkg@1` → `@scope/pkg`).
pub(super) fn npm(spec: String) -> String {
    // A leading '@' starts a scope; the next one starts the version.
    match spec.char_indices().skip(1).find(|(_, c)| *c == '@') {
        Some((i, _)) => spec[..i].to_string(),
        None => spec,
    }
}

/// A PyPI requirement without version, extras or markers (`pkg[x]==1` → `pkg`).
pub(super) fn pypi(mut spec: String) -> String {
    let end = spec
        .find(['=', '<', '>', '[', '@', '~', '!', ';', ' '])
        .unwrap_or(spec.len());
    spec.truncate(end);
    spec
}

/// The package in a script path under `node_modules` (the last one, scoped or not).
pub(super) fn node_modules_package(script: &str) -> Option<String> {
    let parts: Vec<&str> = script.split(['/', '\\']).collect();
    let i = parts.iter().rposition(|p| *p == "node_modules")?;
    let first = parts.get(i + 1)?;
    if first.starts_with('@') {
        Some(format!("{first}/{}", parts.get(i + 2)?))
    } else {
        Some(first.to_string())
    }
}

pub(super) fn is_path_like(command: &str) -> bool {
    command.contains('/') || command.contains('\\')
}
