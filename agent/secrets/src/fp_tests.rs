//! False positives of the built-in catalog on ordinary outputs: what a filesystem, git or
//! search tool hands back every day.
//!
//! A fixed sample must come out unchanged: this repository's sources, lock file and git log at
//! a fixed commit; installed npm and PyPI packages (pinned by `tests/package-lock.json` and
//! `tests/requirements.txt`) including minified bundles; sha1 and sha256 hashes; UUIDs; a real
//! PNG as base64 (as an MCP image result carries it). A larger sample (every source file of the
//! installed packages, up to a cap) prints the rate and what fired, and holds it under a
//! threshold.
#![expect(
    clippy::cast_precision_loss,
    reason = "rates, shares and sizes for a report, to a few digits"
)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use sha2::{Digest, Sha256};

use super::builtin;

/// The commit whose files and log form the repository part of the fixed sample.
const FIXED_COMMIT: &str = "3f92a79";

/// Repository files at [`FIXED_COMMIT`].
const REPO_FILES: &[&str] = &[
    "README.md",
    "Cargo.lock",
    "tests/package-lock.json",
    "agent/src/kernel/loader.rs",
    "agent/src/mcp/proxy.rs",
    "agent/src/policy.rs",
    "agent/src/supply.rs",
    "agent/src/doctor/mod.rs",
    "agent/src/client_config.rs",
    "agent-ebpf/src/trace.rs",
    "policies/example.toml",
    "policies/filesystem.toml",
    "SECURITY.md",
];

/// Installed npm files (under `tests/node_modules`).
const NODE_FILES: &[&str] = &[
    "@modelcontextprotocol/sdk/dist/cjs/client/index.js",
    "@modelcontextprotocol/sdk/dist/cjs/client/auth.js",
    "@modelcontextprotocol/sdk/dist/cjs/types.js",
    "@modelcontextprotocol/server-filesystem/dist/index.js",
    "markdown-it/dist/markdown-it.min.js",
    "source-map/dist/source-map.min.js",
    "dayjs/dayjs.min.js",
    "listr/node_modules/rxjs/bundles/rxjs.umd.min.js",
];

/// Installed PyPI files (under the venv's `site-packages`).
const PYTHON_FILES: &[&str] = &[
    "mcp/client/session.py",
    "httpx/_client.py",
    "pydantic/main.py",
    "git/repo/base.py",
    "authlib/jose/rfc7519/jwt.py",
    "authlib/oauth2/rfc6749/token_endpoint.py",
    "authlib/oauth2/rfc6750/validator.py",
    "authlib/oauth2/rfc6749/wrappers.py",
];

/// A PNG from an installed package.
const PNG: &str = "playwright-core/lib/server/chromium/appIcon.png";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace root")
        .to_path_buf()
}

fn node_modules() -> PathBuf {
    let dir = workspace().join("tests/node_modules");
    assert!(
        dir.join("@modelcontextprotocol").is_dir(),
        "{} is missing: run `cargo xtask setup`",
        dir.display()
    );
    dir
}

fn site_packages() -> PathBuf {
    let lib = workspace().join(".venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|d| {
        d.filter_map(Result::ok)
            .map(|e| e.path().join("site-packages"))
            .find(|p| p.join("mcp").is_dir())
    });
    found.unwrap_or_else(|| {
        panic!(
            "no site-packages with mcp under {}: run `cargo xtask setup`",
            lib.display()
        )
    })
}

fn git(args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(workspace())
        .args(args)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {} (the test reads the repository's history: fetch it whole)",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The fixed sample: (what, text).
fn fixed_sample() -> Vec<(String, String)> {
    let mut sample = Vec::new();
    for f in REPO_FILES {
        sample.push((
            format!("{FIXED_COMMIT}:{f}"),
            git(&["show", &format!("{FIXED_COMMIT}:{f}")]),
        ));
    }
    sample.push((
        format!("git log {FIXED_COMMIT}"),
        git(&["log", "-n", "400", "--stat", FIXED_COMMIT]),
    ));
    sample.push((
        format!("git log -p {FIXED_COMMIT} (40 commits)"),
        git(&["log", "-n", "40", "-p", FIXED_COMMIT]),
    ));
    let nm = node_modules();
    for f in NODE_FILES {
        let text = std::fs::read_to_string(nm.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        sample.push((f.to_string(), text));
    }
    let sp = site_packages();
    for f in PYTHON_FILES {
        let text = std::fs::read_to_string(sp.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        sample.push((f.to_string(), text));
    }
    let png = std::fs::read(nm.join(PNG)).unwrap_or_else(|e| panic!("{PNG}: {e}"));
    let b64 = base64(&png);
    sample.push(("PNG as base64".into(), b64.clone()));
    sample.push((
        "PNG as a data URI".into(),
        format!("![icon](data:image/png;base64,{b64})"),
    ));
    let mut hashes = String::new();
    let mut uuids = String::new();
    for i in 0u32..2000 {
        let digest = Sha256::digest(i.to_le_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        hashes.push_str(&format!("sha256:{hex}  file-{i}.tar.gz\n"));
        hashes.push_str(&format!("commit {}\n", &hex[..40]));
        hashes.push_str(&format!("\"digest\": \"sha256:{hex}\",\n"));
        let u = &hex[24..56];
        uuids.push_str(&format!(
            "\"id\": \"{}-{}-4{}-a{}-{}\"\n",
            &u[..8],
            &u[8..12],
            &u[13..16],
            &u[17..20],
            &u[20..32]
        ));
    }
    sample.push(("sha1 and sha256 hashes".into(), hashes));
    sample.push(("UUIDs".into(), uuids));
    sample
}

#[test]
fn the_fixed_sample_of_ordinary_outputs_is_left_alone() {
    let rules = builtin();
    let mut bytes = 0;
    let mut fired = Vec::new();
    for (what, text) in fixed_sample() {
        bytes += text.len();
        let mut found = Vec::new();
        rules.find(&text, &mut found);
        for f in found {
            let lo = text.floor_char_boundary(f.range.start.saturating_sub(40));
            let hi = text.ceil_char_boundary((f.range.end + 20).min(text.len()));
            fired.push(format!(
                "{what}: {}: {:?}",
                rules.rule_id(f.rule),
                &text[lo..hi]
            ));
        }
    }
    println!(
        "fixed sample: {:.1} MB, {} redactions",
        bytes as f64 / 1e6,
        fired.len()
    );
    for f in &fired {
        println!("  {f}");
    }
    assert!(fired.is_empty(), "false positives on ordinary outputs");
}

/// Findings shown per rule.
const EXAMPLES: usize = 40;

/// Source files of the installed packages, up to this many bytes of each ecosystem.
const LARGE_SAMPLE_BYTES: usize = 32 << 20;

fn walk(dir: &Path, exts: &[&str], out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for e in entries {
        let p = e.path();
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            walk(&p, exts, out);
        } else if t.is_file()
            && p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| exts.contains(&x))
        {
            out.push(p);
        }
    }
}

#[test]
fn false_positive_rate_on_installed_packages() {
    let rules = builtin();
    let (mut node, mut python) = (Vec::new(), Vec::new());
    walk(
        &node_modules(),
        &["js", "mjs", "cjs", "ts", "json", "md"],
        &mut node,
    );
    walk(&site_packages(), &["py", "pyi", "md", "txt"], &mut python);
    let (mut bytes, mut scanned, mut with_findings, mut findings) =
        (0usize, 0usize, 0usize, 0usize);
    let mut by_rule: std::collections::BTreeMap<String, (usize, Vec<String>)> =
        std::collections::BTreeMap::new();
    let started = std::time::Instant::now();
    let mut taken = [0usize; 2];
    let files = node
        .iter()
        .map(|f| (0, f))
        .chain(python.iter().map(|f| (1, f)));
    for (ecosystem, f) in files {
        if taken[ecosystem] >= LARGE_SAMPLE_BYTES {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        taken[ecosystem] += text.len();
        bytes += text.len();
        scanned += 1;
        let mut found = Vec::new();
        rules.find(&text, &mut found);
        if !found.is_empty() {
            with_findings += 1;
        }
        findings += found.len();
        for x in found {
            let e = by_rule
                .entry(rules.rule_id(x.rule).to_string())
                .or_default();
            e.0 += 1;
            if e.1.len() < EXAMPLES {
                let lo = text.floor_char_boundary(x.range.start.saturating_sub(40));
                let hi = text.ceil_char_boundary((x.range.end + 10).min(text.len()));
                let short = f.strip_prefix(workspace()).unwrap_or(f);
                e.1.push(format!("{}: {:?}", short.display(), &text[lo..hi]));
            }
        }
    }
    let mb = bytes as f64 / 1e6;
    println!(
        "large sample: {scanned} files, {mb:.1} MB in {:.1}s; {findings} findings ({:.2} per MB) in {with_findings} files ({:.2}%)",
        started.elapsed().as_secs_f64(),
        findings as f64 / mb,
        with_findings as f64 * 100.0 / scanned.max(1) as f64
    );
    for (rule, (n, examples)) in &by_rule {
        println!("  {rule}: {n}");
        for e in examples {
            println!("    {e}");
        }
    }
    // What fires here is credentials written as examples in docs and tests (RFC 6749's
    // access tokens, AWS's documented example key, JWT test vectors): shaped like secrets, and
    // redacting them costs a reader little. More than this is rules firing on code.
    assert!(
        findings as f64 / mb <= 1.0,
        "{findings} findings in {mb:.1} MB"
    );
    assert!(
        with_findings * 200 <= scanned,
        "{with_findings} of {scanned} files have findings"
    );
}
