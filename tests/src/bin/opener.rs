//! Test fixture: opens each path given (read-only) and prints `ok` or `errno N` per path.
//!
//! `--loop N PATH` opens and closes PATH N times (for benchmarks) and prints the elapsed ns.
use std::{fs::File, io::Write as _, time::Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut out = std::io::stdout().lock();
    if args.first().map(String::as_str) == Some("--loop") {
        let n: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(0);
        let path = args.get(2).cloned().unwrap_or_default();
        let start = Instant::now();
        for _ in 0..n {
            drop(File::open(&path));
        }
        let _ = writeln!(out, "{}", start.elapsed().as_nanos());
        return;
    }
    for path in args {
        let line = match File::open(&path) {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("errno {}", e.raw_os_error().unwrap_or(-1)),
        };
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}
