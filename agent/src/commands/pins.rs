//! `mcp-guard pins list|approve`: the tool-description pins the proxy keeps per server.

use std::{path::Path, process::ExitCode};

use crate::say::say;
use mcp_guard_proxy::pins;

/// `pins list [SERVER] [--policy P] [--json]`: a table, or one JSON object per line.
pub fn list(state: &Path, server: Option<&str>, policy: Option<&str>, json: bool) -> ExitCode {
    match pins::list(state, server, policy) {
        Ok(rows) => {
            if json {
                for r in &rows {
                    match serde_json::to_string(r) {
                        Ok(line) => println!("{line}"),
                        Err(e) => {
                            say(&format!("pins list: {e}"));
                            return ExitCode::FAILURE;
                        }
                    }
                }
            } else {
                print!("{}", pins::render_table(&rows));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            say(&format!("pins list: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// `pins approve SERVER [TOOL] [--policy P]`: accepts the changed descriptions.
pub fn approve(state: &Path, server: &str, tool: Option<&str>, policy: Option<&str>) -> ExitCode {
    let approved = pins::find(state, server, policy, true).and_then(|keys| {
        let key = keys
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("no pinned tools for server {server:?}"))?;
        pins::approve(state, &key, tool)
    });
    match approved {
        Ok(names) => {
            for n in names {
                println!("approved {server} {n}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            say(&format!("pins approve: {e:#}"));
            ExitCode::FAILURE
        }
    }
}
