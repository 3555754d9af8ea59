//! `mcp-guard policy check FILE...`.

use std::{path::PathBuf, process::ExitCode};

use crate::cli::EXIT_POLICY;

/// Prints `ok: FILE (name)` for each valid file and every error of each invalid one; exits 78
/// when any is invalid.
pub fn check(files: &[PathBuf]) -> ExitCode {
    let mut all_ok = true;
    for file in files {
        match mcp_guard_policy::load_file(file) {
            Ok(policy) => println!("ok: {} ({})", file.display(), policy.name),
            Err(e) => {
                all_ok = false;
                eprintln!("{e}");
            }
        }
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_POLICY)
    }
}
