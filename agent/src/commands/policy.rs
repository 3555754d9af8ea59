//! `mcp-guard policy check FILE...`.

use std::path::PathBuf;

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
                    eprintln!("{one}");
                }
            }
            Err(e) => {
                all_ok = false;
                eprintln!("{e}");
            }
        }
    }
    all_ok
}
