//! `cargo xtask bench`: every benchmark of the tests crate (its `#[ignore]`d tests), built in
//! release against release binaries, each comparing guarded and unguarded work in one run. The
//! numbers they record (`mcp_guard_tests::bench::record`) are kept as JSON, and a run can be
//! compared with an earlier one.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use crate::{Result, kernels::json, root, run};

const USAGE: &str = "usage: cargo xtask bench [--only TEST] [--baseline FILE]

Runs the benchmarks (as root; release builds) and writes their numbers to
target/bench/latest.json and target/bench/<commit>.json.
  --only TEST       one test file of the tests crate (e.g. mcp_bench, startup_bench)
  --baseline FILE   a JSON file of an earlier run: print each number beside it, with the change";

/// The test files that hold benchmarks, in the order they run (cheapest first).
const BENCHES: &[&str] = &[
    "startup_bench",
    "jail",
    "bench",
    "mcp_bench",
    "proxy_memory",
    "detect_bench",
    "store",
    "supply",
    "container",
    "export",
];

/// Where the results of this run go (one JSON line per number while the benchmarks run).
const LINES: &str = "target/bench/results.jsonl";

pub(crate) fn command(args: &[String]) -> Result {
    let mut only = None;
    let mut baseline = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--only" => only = Some(it.next().ok_or(USAGE)?.clone()),
            "--baseline" => baseline = Some(PathBuf::from(it.next().ok_or(USAGE)?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if let Some(name) = &only
        && !BENCHES.contains(&name.as_str())
    {
        return Err(format!("no benchmark file {name:?}; one of {BENCHES:?}"));
    }
    // Read the baseline first: a typo should not cost a whole run.
    let before = baseline.as_deref().map(read_results).transpose()?;

    run(
        "release build",
        "cargo",
        &["build", "--release", "--workspace", "--bins"],
    )?;
    let lines = root().join(LINES);
    std::fs::create_dir_all(lines.parent().unwrap_or(Path::new(".")))
        .map_err(|e| format!("target/bench: {e}"))?;
    let _ = std::fs::remove_file(&lines);
    let mut failed = Vec::new();
    for test in BENCHES
        .iter()
        .filter(|t| only.as_deref().is_none_or(|o| o == **t))
    {
        println!("==> benchmark {test}");
        let status = Command::new("cargo")
            .args(["test", "--release", "-p", "mcp-guard-tests", "--test", test])
            .args(["--", "--ignored", "--nocapture", "--test-threads=1"])
            .env(BENCH_OUT_VAR, &lines)
            .current_dir(root())
            .status()
            .map_err(|e| format!("cannot start cargo: {e}"))?;
        if !status.success() {
            failed.push(*test);
        }
    }

    let results = std::fs::read_to_string(&lines).unwrap_or_default();
    let commit = git_head();
    let doc = format!(
        "{{\"commit\":\"{commit}\",\"results\":[{}]}}\n",
        results.lines().collect::<Vec<_>>().join(",")
    );
    let dir = root().join("target/bench");
    for name in ["latest.json".to_string(), format!("{commit}.json")] {
        std::fs::write(dir.join(&name), &doc).map_err(|e| format!("target/bench/{name}: {e}"))?;
    }
    println!("==> results: target/bench/latest.json and target/bench/{commit}.json");
    if let Some(before) = before {
        compare(&before, &parse_results(&doc)?);
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("benchmarks failed: {failed:?}"))
    }
}

/// The variable `mcp_guard_tests::bench` appends to (its `OUT_VAR`).
const BENCH_OUT_VAR: &str = "MCP_GUARD_BENCH_OUT";

/// One number: (bench, name) → (value, unit).
type Results = BTreeMap<(String, String), (f64, String)>;

fn read_results(path: &Path) -> Result<Results> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("baseline {}: {e}", path.display()))?;
    parse_results(&text).map_err(|e| format!("baseline {}: {e}", path.display()))
}

fn parse_results(text: &str) -> Result<Results> {
    let doc = json::parse(text.trim())?;
    let mut out = Results::new();
    for r in doc.get("results").map_or(&[][..], json::Value::as_array) {
        let field = |k: &str| r.get(k).and_then(json::Value::as_str).map(str::to_string);
        let value = match r.get("value") {
            Some(json::Value::Number(n)) => n.parse::<f64>().ok(),
            _ => None,
        };
        let (Some(bench), Some(name), Some(value)) = (field("bench"), field("name"), value) else {
            return Err(format!("a result without bench, name or value: {r:?}"));
        };
        out.insert((bench, name), (value, field("unit").unwrap_or_default()));
    }
    Ok(out)
}

/// Prints each number of `now` beside the baseline's, and the change as a ratio.
fn compare(before: &Results, now: &Results) {
    println!(
        "\n{:<60} {:>14} {:>14} {:>8}",
        "bench: number", "baseline", "now", "now/was"
    );
    for ((bench, name), (value, unit)) in now {
        let key = format!("{bench}: {name} ({unit})");
        match before.get(&(bench.clone(), name.clone())) {
            Some((was, _)) if *was != 0.0 => {
                println!("{key:<60} {was:>14.4} {value:>14.4} {:>7.2}×", value / was);
            }
            Some((was, _)) => println!("{key:<60} {was:>14.4} {value:>14.4} {:>8}", "-"),
            None => println!("{key:<60} {:>14} {value:>14.4} {:>8}", "(new)", "-"),
        }
    }
}

fn git_head() -> String {
    Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".to_string(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_string(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_round_trip_and_refuse_a_result_without_a_value() {
        let doc = r#"{"commit":"abc","results":[{"bench":"startup","name":"agent/bwrap","value":1.5,"unit":"ratio"}]}"#;
        let r = parse_results(doc).expect("parse");
        assert_eq!(
            r.get(&("startup".into(), "agent/bwrap".into())),
            Some(&(1.5, "ratio".to_string()))
        );
        let bad = r#"{"results":[{"bench":"startup","name":"x","unit":"ms"}]}"#;
        assert!(parse_results(bad).is_err());
    }
}
