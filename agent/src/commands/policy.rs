//! `mcp-guard policy check|suggest|pin|manifest`.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use crate::{
    exit_codes::EXIT_POLICY,
    say::{say, say_as_is},
};
use mcp_guard_supply::{self as supply, PIN_NAMESPACE};

/// Prints `ok: FILE (name)` and its warnings for each valid file and every error of each invalid
/// one; returns whether all were valid (the caller exits 78 when not).
pub fn check(files: &[PathBuf]) -> bool {
    let mut all_ok = true;
    for file in files {
        match mcp_guard_policy::load_file(file) {
            Ok(policy) => {
                println!("ok: {} ({})", file.display(), policy.name);
                // Valid, but entries that cannot work on this host are said (not an error).
                let text = std::fs::read_to_string(file).unwrap_or_default();
                for mut w in mcp_guard_policy::usable::warnings(&text, &policy) {
                    w.message = format!("warning: {}", w.message);
                    let one = mcp_guard_policy::PolicyError {
                        file: file.display().to_string(),
                        problems: vec![w],
                    };
                    say_as_is(&one.to_string());
                }
            }
            Err(e) => {
                all_ok = false;
                say_as_is(&e.to_string());
            }
        }
    }
    all_ok
}

/// `policy suggest --server S [--session ID]...`: a policy drafted from the recorded sessions.
pub fn suggest(state: &Path, server: &str, sessions: &[String]) -> ExitCode {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    let req = crate::suggest::Request {
        server,
        sessions,
        home: &home,
    };
    let result = mcp_guard_store::Store::open_existing(&mcp_guard_store::db_path(state))
        .map_err(crate::suggest::SuggestError::from)
        .and_then(|store| crate::suggest::suggest(&store, &req));
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            say(&format!("policy suggest: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// `policy pin [--policy P] -- CMD...`: prints the `[pin]` table on stdout and what was pinned
/// on stderr.
pub fn pin(
    policy: Option<&str>,
    policy_dir: &Path,
    state_dir: &Path,
    command: &[String],
    deps: bool,
) -> ExitCode {
    let signature = match policy.map(|p| mcp_guard_policy::load(Some(p), policy_dir)) {
        Some(Ok(p)) => p.pin.signature,
        Some(Err(e)) => {
            say_as_is(&e.to_string());
            return ExitCode::from(EXIT_POLICY);
        }
        None => None,
    };
    let Some(cmd) = command.first() else {
        say("policy pin: no command given after --");
        return ExitCode::from(2);
    };
    let Some(program) = supply::which(cmd) else {
        say(&format!(
            "policy pin: {cmd}: command not found or not executable"
        ));
        return ExitCode::from(127);
    };
    if let Some(name) = program.file_name().map(|n| n.to_string_lossy())
        && matches!(
            &*name,
            "npx" | "uvx" | "pipx" | "bunx" | "pnpx" | "uv" | "pnpm" | "yarn"
        )
    {
        say(&format!(
            "policy pin: WARNING: {name} finds (and may download) the server at each \
             launch, so its pins cover {name} itself, not the server: install the server and pin \
             its installed entry instead (e.g. node .../node_modules/PKG/dist/index.js, or \
             .venv/bin/SERVER)"
        ));
    }
    match supply::generate(&program, command, deps) {
        Ok((mut pins, notes)) => {
            for n in notes {
                say_as_is(&format!("pinned: {n}"));
            }
            supply::remember_npm_trees(&pins, state_dir);
            if !pins.pypi.is_empty() {
                // Compiled now rather than at the first launch (which would otherwise wait).
                match supply::python_cache(&pins, &program, state_dir) {
                    Ok(dir) => {
                        say_as_is(&format!("python bytecode cache ready: {}", dir.display()));
                    }
                    Err(e) => say_as_is(&format!(
                        "python bytecode cache not prepared ({e}): the first `exec` builds it"
                    )),
                }
            }
            let signed = signature.is_some();
            pins.signature = signature;
            print!("{}", supply::to_toml(&pins));
            if signed {
                say_as_is(&format!(
                    "the policy's [pin.signature] is kept: sign the new pins with \
                     `mcp-guard policy manifest POLICY | ssh-keygen -Y sign -f KEY -n \
                     {PIN_NAMESPACE} > SIGNATURE` once the table is in the policy"
                ));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            say(&format!("policy pin: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// `policy manifest P`: prints the canonical text of P's pins (what gets signed).
pub fn manifest(policy: &str, policy_dir: &Path) -> ExitCode {
    match mcp_guard_policy::load(Some(policy), policy_dir) {
        Ok(p) if p.pin.is_empty() => {
            say(&format!(
                "policy {} pins nothing: add a [pin] table first (mcp-guard policy pin)",
                p.name
            ));
            ExitCode::FAILURE
        }
        Ok(p) => {
            print!("{}", supply::manifest(&p.pin));
            ExitCode::SUCCESS
        }
        Err(e) => {
            say_as_is(&e.to_string());
            ExitCode::from(EXIT_POLICY)
        }
    }
}
