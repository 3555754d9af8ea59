//! `cargo xtask lint`: the shipped operations files checked by the tools that consume them
//! (systemd-analyze, systemd-sysusers, promtool, bash), and the dashboard's metric names against the agent's.

use std::{fs, path::Path, process::Command};

use crate::{Result, root, run};

/// Runs every check; `bin` is the built `mcp-guard` (systemd-analyze wants an existing
/// `ExecStart` binary, so the unit is verified with its path swapped in).
pub(crate) fn run_all(bin: &Path) -> Result {
    let root = root();
    let packaging = root.join("packaging");
    let unit = fs::read_to_string(packaging.join("systemd/mcp-guard.service"))
        .map_err(|e| format!("packaging/systemd/mcp-guard.service: {e}"))?;
    let tmp = root.join("target/xtask-lint");
    fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let copy = tmp.join("mcp-guard.service");
    fs::write(
        &copy,
        unit.replace("/usr/bin/mcp-guard", &bin.display().to_string()),
    )
    .map_err(|e| format!("{}: {e}", copy.display()))?;
    run(
        "systemd unit",
        "systemd-analyze",
        &["verify", &copy.display().to_string()],
    )?;
    // promtool wants the scrape's credentials file to exist: check a copy that points at a
    // stand-in token, next to a copy of the rules it names.
    let prom = fs::read_to_string(packaging.join("prometheus/prometheus.yml"))
        .map_err(|e| format!("packaging/prometheus/prometheus.yml: {e}"))?;
    let token = tmp.join("mcp-guard-metrics.token");
    fs::write(&token, "lint-stand-in-token-0123456789\n")
        .map_err(|e| format!("{}: {e}", token.display()))?;
    let prom_copy = tmp.join("prometheus.yml");
    fs::write(
        &prom_copy,
        prom.replace(
            "/etc/prometheus/mcp-guard-metrics.token",
            &token.display().to_string(),
        ),
    )
    .map_err(|e| format!("{}: {e}", prom_copy.display()))?;
    fs::copy(
        packaging.join("prometheus/mcp-guard-rules.yml"),
        tmp.join("mcp-guard-rules.yml"),
    )
    .map_err(|e| format!("packaging/prometheus/mcp-guard-rules.yml: {e}"))?;
    run(
        "prometheus config",
        "promtool",
        &["check", "config", &prom_copy.display().to_string()],
    )?;
    run(
        "prometheus rules",
        "promtool",
        &["check", "rules", "packaging/prometheus/mcp-guard-rules.yml"],
    )?;
    // Absolute: systemd-sysusers reads a relative argument as a name in its own search path.
    let sysusers = packaging.join("sysusers.d/mcp-guard.conf");
    run(
        "sysusers.d file",
        "systemd-sysusers",
        &["--dry-run", &sysusers.display().to_string()],
    )?;
    run(
        "vagrant provisioning",
        "bash",
        &["-n", "vagrant/provision.sh"],
    )?;
    run("vagrant smoke test", "sh", &["-n", "vagrant/smoke.sh"])?;
    dashboard_names(&root)
}

/// Every `mcp_guard_*` name the dashboard and the rules query must be one the agent exports.
fn dashboard_names(root: &Path) -> Result {
    let mut exported = String::new();
    for file in [
        "agent/src/metrics.rs",
        "agent/src/metrics/bpf.rs",
        "agent/src/metrics/export.rs",
    ] {
        exported
            .push_str(&fs::read_to_string(root.join(file)).map_err(|e| format!("{file}: {e}"))?);
    }
    for file in [
        "packaging/grafana/mcp-guard-dashboard.json",
        "packaging/prometheus/mcp-guard-rules.yml",
    ] {
        let text = fs::read_to_string(root.join(file)).map_err(|e| format!("{file}: {e}"))?;
        for name in metric_names(&text) {
            // Histograms are queried through their _bucket/_count/_sum series.
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            if !exported.contains(&format!("\"{base}\"")) {
                return Err(format!("{file}: {name} is not a metric mcp-guard exports"));
            }
        }
        println!("==> metric names in {file}: all exported");
    }
    let json = Command::new("python3")
        .args([
            "-m",
            "json.tool",
            "packaging/grafana/mcp-guard-dashboard.json",
        ])
        .current_dir(root)
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !json.status.success() {
        return Err(format!(
            "packaging/grafana/mcp-guard-dashboard.json is not valid JSON: {}",
            String::from_utf8_lossy(&json.stderr)
        ));
    }
    Ok(())
}

fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("mcp_guard_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}
