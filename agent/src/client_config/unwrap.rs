//! `client-config --unwrap`: gives a server that runs under mcp-guard its original command and
//! args back, the `COMMAND ARGS...` after `exec ... --` in its mcp-guard command line. Its other
//! keys (`env`, `type`, ...) were never changed and stay as they are.

use serde_json::Value;

use super::{Outcome, ServerReport, names::is_mcp_guard};

/// The command line `mcp-guard ARGS` wraps: what follows `exec`'s `--`.
fn original(args: &[String]) -> Option<&[String]> {
    let exec = args.iter().position(|a| a == "exec")?;
    let dashes = exec + 1 + args[exec + 1..].iter().position(|a| a == "--")?;
    let rest = &args[dashes + 1..];
    (!rest.is_empty()).then_some(rest)
}

/// Unwraps one server entry in place when mcp-guard (`mcp_guard`, the configured command)
/// runs it.
pub(super) fn entry(name: &str, entry: &mut Value, mcp_guard: &str) -> ServerReport {
    let mut report = ServerReport {
        server: name.to_string(),
        outcome: Outcome::NotWrapped,
        notes: Vec::new(),
    };
    let Some(obj) = entry.as_object_mut() else {
        return report;
    };
    let Some(command) = obj.get("command").and_then(Value::as_str) else {
        return report;
    };
    if !is_mcp_guard(command, mcp_guard) {
        return report;
    }
    let args: Vec<String> = obj
        .get("args")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let Some(line) = original(&args) else {
        report.outcome = Outcome::Skipped(
            "it runs mcp-guard without `exec ... -- COMMAND`: there is no original command to \
             restore"
                .to_string(),
        );
        return report;
    };
    let (program, rest) = (line[0].clone(), line[1..].to_vec());
    obj.insert("command".to_string(), Value::String(program.clone()));
    obj.insert(
        "args".to_string(),
        Value::Array(rest.into_iter().map(Value::String).collect()),
    );
    report.outcome = Outcome::Unwrapped { command: program };
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_after_execs_dashes_comes_back() {
        let mut e = serde_json::json!({
            "command": "/usr/bin/mcp-guard",
            "args": ["--policy-dir", "/p", "exec", "--policy", "git", "--name", "git", "--",
                     "uvx", "mcp-server-git", "--", "x"],
            "env": {"A": "1"}
        });
        let r = entry("git", &mut e, "/usr/bin/mcp-guard");
        assert_eq!(
            r.outcome,
            Outcome::Unwrapped {
                command: "uvx".into()
            }
        );
        assert_eq!(
            e,
            serde_json::json!({"command": "uvx", "args": ["mcp-server-git", "--", "x"], "env": {"A": "1"}})
        );
        let r = entry("git", &mut e, "/usr/bin/mcp-guard");
        assert_eq!(r.outcome, Outcome::NotWrapped);
        let mut odd = serde_json::json!({"command": "mcp-guard", "args": ["doctor"]});
        assert!(matches!(
            entry("o", &mut odd, "mcp-guard").outcome,
            Outcome::Skipped(_)
        ));
    }
}
