//! Benchmark results. A benchmark prints each number it measured and records it here; under
//! `cargo xtask bench` the numbers are also appended as JSON lines to the file named by
//! `MCP_GUARD_BENCH_OUT`, which xtask keeps so a later run can be compared with this one.

use std::io::Write;

/// The environment variable naming the JSON-lines file results are appended to.
pub const OUT_VAR: &str = "MCP_GUARD_BENCH_OUT";

/// Prints `bench: name = value unit` and, under `cargo xtask bench`, records it.
pub fn record(bench: &str, name: &str, value: f64, unit: &str) {
    println!("bench {bench}: {name} = {value:.4} {unit}");
    let Some(path) = std::env::var_os(OUT_VAR) else {
        return;
    };
    let line = serde_json::json!({ "bench": bench, "name": name, "value": value, "unit": unit });
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.to_string_lossy()));
    writeln!(file, "{line}").unwrap_or_else(|e| panic!("{}: {e}", path.to_string_lossy()));
}
