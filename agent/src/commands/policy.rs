//! `mcp-guard policy check FILE...`.

use std::path::PathBuf;

/// Prints `ok: FILE (name)` for each valid file and every error of each invalid one; returns
/// whether all were valid (the caller exits 78 when not).
pub fn check(files: &[PathBuf]) -> bool {
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
    all_ok
}
