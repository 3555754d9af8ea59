//! `mcp-guard quarantine SERVER` and `mcp-guard release SERVER`.

use std::{path::Path, process::ExitCode};

use mcp_guard_model::dirs::Dirs;

use crate::say::say_as_is;

/// Marks the server quarantined and kills its running sessions; says what it did.
pub fn quarantine(dirs: &Dirs, server: &str, reason: Option<String>) -> ExitCode {
    match crate::quarantine::quarantine(dirs, server, reason) {
        Ok((marker, killed)) => {
            println!(
                "{server}: quarantined (launches named {server}{} are refused); {} \
                 running session(s) killed{}",
                match marker
                    .policies
                    .iter()
                    .filter(|p| *p != mcp_guard_model::names::SHARED_POLICY)
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
                {
                    p if p.is_empty() => String::new(),
                    p => format!(" or under policy {p}"),
                },
                killed.len(),
                if killed.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", killed.join(", "))
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            say_as_is(&format!("mcp-guard quarantine {server}: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// Lifts a quarantine; a server that was not quarantined is a failure.
pub fn release(state: &Path, server: &str) -> ExitCode {
    match crate::quarantine::release(state, server) {
        Ok(true) => {
            println!("{server}: released");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            say_as_is(&format!("mcp-guard release {server}: not quarantined"));
            ExitCode::FAILURE
        }
        Err(e) => {
            say_as_is(&format!("mcp-guard release {server}: {e}"));
            ExitCode::FAILURE
        }
    }
}
