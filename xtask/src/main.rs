//! `cargo xtask`: setup, test and demo helpers for mcp-guard.
//!
//! Std-only on purpose: it must build on a fresh machine before anything else is installed.

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

mod bench;
mod kernels;
mod lint;
mod setup;

type Result<T = ()> = std::result::Result<T, String>;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  setup   install everything the build and tests need (idempotent)
  test    fmt and clippy gates, build, lint the shipped ops files, every test, then the kernel
          matrix on the CI kernels (`kernels --ci`; needs root)
  lint    check packaging/ and vagrant/ with systemd-analyze, systemd-sysusers, promtool and bash
  kernels boot Debian's kernels in QEMU and run the enforcement tests inside each (needs root;
          `cargo xtask kernels --help`)
  bench   the benchmarks in release, guarded against unguarded; numbers kept as JSON under
          target/bench (`cargo xtask bench --help`)
  demo    build, then run the main job: doctor and a real MCP server under mcp-guard exec";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::run_all(),
        Some("test") => test(&args[1..]),
        Some("kernels") => kernels::command(&args[1..]),
        Some("bench") => bench::command(&args[1..]),
        Some("demo") => demo(),
        Some("lint") => lint::run_all(&root().join("target/debug/mcp-guard")),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask lives one level below it).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Prints what is about to run, runs it in the workspace root and fails on a non-zero exit.
fn run(step: &str, program: &str, args: &[&str]) -> Result {
    println!("==> {step}: {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(root())
        .status()
        .map_err(|e| format!("{step}: cannot start {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "{step} failed ({status}): `{program} {}`",
            args.join(" ")
        ))
    }
}

/// The gates and the whole test suite, the way CI runs it.
fn test(extra: &[String]) -> Result {
    run("format gate", "cargo", &["fmt", "--all", "--check"])?;
    run(
        "lint gate",
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    run("build", "cargo", &["build", "--workspace", "--bins"])?;
    lint::run_all(&root().join("target/debug/mcp-guard"))?;
    let mut args = vec!["test", "--workspace", "--no-fail-fast"];
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    args.extend(extra);
    run("tests", "cargo", &args)?;
    // The same tests inside Debian's kernels (6.1 and 6.12), each judged by the matrix table.
    println!("==> kernel matrix: cargo xtask kernels --ci");
    kernels::ci()
}

/// The main job: what a new user runs first. The host report, then real MCP servers under
/// `mcp-guard exec` driven by the MCP Python SDK client (xtask/demo/demo.py).
fn demo() -> Result {
    run("build", "cargo", &["build", "--workspace", "--bins"])?;
    let bin = root().join("target/debug/mcp-guard");
    let bin = bin.to_string_lossy();
    run("what this host can enforce", &bin, &["doctor"])?;
    let root = root();
    let root = root.to_string_lossy();
    run(
        "real MCP servers under mcp-guard",
        ".venv/bin/python",
        &["xtask/demo/demo.py", &bin, &root],
    )
}
