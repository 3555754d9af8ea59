//! The shipped policies in `policies/`: every file passes `mcp-guard policy check`, is named after
//! its file (so `exec --policy NAME` and `client-config` find it), and the reference servers each
//! have one.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
    str::FromStr,
};

use ipnet::IpNet;
use mcp_guard_tests::{mcp_guard, workspace_root};

/// The reference servers issue 9 asks policies for.
const REFERENCE: &[&str] = &[
    "filesystem",
    "fetch",
    "git",
    "time",
    "memory",
    "everything",
    "github",
    "playwright",
    "postgres",
];

fn shipped() -> Vec<PathBuf> {
    let dir = workspace_root().join("policies");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read policies/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_shipped_policy_passes_policy_check() {
    let files = shipped();
    let output = Command::new(mcp_guard())
        .args(["policy", "check"])
        .args(&files)
        .output()
        .expect("run mcp-guard policy check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for file in &files {
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("UTF-8 file name");
        // example.toml shows a policy for github; every other file is the policy of its name.
        let name = if stem == "example" { "github" } else { stem };
        let line = format!("ok: {} ({name})", file.display());
        assert!(stdout.contains(&line), "missing {line:?} in:\n{stdout}");
    }
    for name in REFERENCE {
        let file = workspace_root()
            .join("policies")
            .join(format!("{name}.toml"));
        assert!(files.contains(&file), "no policy for {name}: {files:?}");
    }
}

/// `[network] allow` entries of a shipped policy that allow `port`, as networks.
fn nets_allowing(policy: &Path, port: u16) -> Vec<IpNet> {
    let text = std::fs::read_to_string(policy).expect("read policy");
    let doc: toml::Table = toml::from_str(&text).expect("policy is TOML");
    let allow = doc["network"]["allow"].as_array().expect("[network] allow");
    allow
        .iter()
        .map(|v| v.as_str().expect("string entry"))
        .filter_map(|entry| {
            let (target, ports) = entry.rsplit_once(':').expect("host:port");
            let (lo, hi) = match ports.split_once('-') {
                Some((lo, hi)) => (lo.parse().expect("port"), hi.parse().expect("port")),
                None if ports == "*" => (1, 65535),
                None => (ports.parse().expect("port"), ports.parse().expect("port")),
            };
            if !(lo..=hi).contains(&port) {
                return None;
            }
            let target = target.trim_start_matches('[').trim_end_matches(']');
            IpNet::from_str(target)
                .ok()
                .or_else(|| IpAddr::from_str(target).ok().map(IpNet::from))
        })
        .collect()
}

#[test]
fn web_policies_reach_public_addresses_only() {
    let public = [
        "1.1.1.1",
        "8.8.8.8",
        "93.184.215.14",
        "140.82.112.3",
        "2606:4700::1111",
    ];
    let inside = [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "100.127.255.254",
        "0.0.0.0",
        "224.0.0.251",
        "::1",
        "fd00::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
    ];
    for name in ["fetch", "playwright"] {
        let file = workspace_root()
            .join("policies")
            .join(format!("{name}.toml"));
        for port in [80, 443] {
            let nets = nets_allowing(&file, port);
            for addr in public {
                let addr = IpAddr::from_str(addr).expect("address");
                assert!(
                    nets.iter().any(|n| n.contains(&addr)),
                    "{name}: {addr}:{port} should be allowed"
                );
            }
            for addr in inside {
                let addr = IpAddr::from_str(addr).expect("address");
                assert!(
                    !nets.iter().any(|n| n.contains(&addr)),
                    "{name}: {addr}:{port} must not be allowed"
                );
            }
        }
        // Nothing but the web (and DNS) is open.
        for port in [22, 25, 5432, 6379, 8080] {
            assert!(
                nets_allowing(&file, port).is_empty(),
                "{name}: port {port} is open"
            );
        }
    }
}
