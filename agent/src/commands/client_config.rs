//! `mcp-guard client-config FILE`: rewrites an MCP client's config so its servers run under
//! `mcp-guard exec`; what changed goes to stderr, the new config to stdout (or the file with
//! `--write`).

use std::{path::PathBuf, process::ExitCode};

use mcp_guard_model::dirs::{DEFAULT_POLICY_DIR, Dirs};

use crate::{
    client_config::{self as cc, Error, Settings},
    exit_codes::EXIT_POLICY,
    say::say_as_is,
};

/// What the command line asked for.
pub struct Request {
    /// The client's config file.
    pub file: PathBuf,
    /// `SERVER=POLICY` choices.
    pub policy_for: Vec<(String, String)>,
    /// Rewrite the file in place (with a backup) instead of printing.
    pub write: bool,
    /// The `mcp-guard` the config should start (default: this very binary).
    pub mcp_guard: Option<String>,
    /// Undo a wrap.
    pub unwrap: bool,
}

/// Runs the rewrite and reports it.
pub fn run(req: Request, dirs: &Dirs) -> ExitCode {
    let mcp_guard = match req.mcp_guard {
        Some(path) => path,
        // Clients start servers with a minimal PATH (Claude Desktop does not read the shell's),
        // so the absolute path of this very binary is the safe default.
        None => match std::env::current_exe() {
            Ok(exe) => exe.display().to_string(),
            Err(e) => {
                say_as_is(&format!(
                    "cannot find this program's path ({e}); give --mcp-guard PATH"
                ));
                return ExitCode::FAILURE;
            }
        },
    };
    let policy_dir = std::path::absolute(&dirs.policy).unwrap_or_else(|_| dirs.policy.clone());
    let settings = Settings {
        // exec finds policies by name in its default dir; any other dir is written out.
        pin_policy_dir: dirs.policy != std::path::Path::new(DEFAULT_POLICY_DIR),
        policy_dir,
        mcp_guard,
        policy_for: req.policy_for.into_iter().collect(),
        unwrap: req.unwrap,
    };
    match cc::run(&req.file, &settings, req.write) {
        Ok(done) => {
            let file = req.file.display();
            say_as_is(&format!("{file}: format {}", done.rewritten.format));
            for report in &done.rewritten.servers {
                for line in cc::describe(report) {
                    say_as_is(&line);
                }
            }
            if let Some(note) = cc::privilege_note(&req.file) {
                say_as_is(&note);
            }
            if !req.write {
                use std::io::Write;
                let mut stdout = std::io::stdout().lock();
                if let Err(e) = stdout
                    .write_all(done.rewritten.text.as_bytes())
                    .and_then(|()| stdout.flush())
                {
                    say_as_is(&format!("cannot write the config to stdout: {e}"));
                    return ExitCode::FAILURE;
                }
            } else if let Some(backup) = done.backup {
                say_as_is(&format!(
                    "{file}: rewritten; the original is in {}",
                    backup.display()
                ));
            } else {
                say_as_is(&format!("{file}: nothing to change; left as it was"));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            say_as_is(&e.to_string());
            ExitCode::from(exit_status(&e))
        }
    }
}

/// The exit status for a refused rewrite: policy problems are `EX_CONFIG` like everywhere else,
/// everything else 1.
fn exit_status(e: &Error) -> u8 {
    match e {
        Error::Policy { .. } => EXIT_POLICY,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_policy_exits_78_and_a_bad_file_1() {
        let policy = Error::Policy {
            server: "fetch".into(),
            spec: "missing".into(),
            source: mcp_guard_policy::PolicyError {
                file: "missing".into(),
                problems: Vec::new(),
            },
        };
        assert_eq!(exit_status(&policy), 78);
        let format = Error::UnknownFormat {
            path: "c.json".into(),
            what: "an empty object".into(),
        };
        assert_eq!(exit_status(&format), 1);
    }
}
