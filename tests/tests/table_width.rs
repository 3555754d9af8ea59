//! Query tables fit the width they are given (`COLUMNS`, else the terminal's) and wrap a long
//! summary onto more lines instead of cutting it; written to a pipe or a file they cut nothing.

use std::{path::PathBuf, process::Command};

use mcp_guard_model::{AlertRecord, Severity, Timestamp};
use mcp_guard_store::{self as store, Store};
use mcp_guard_tests::mcp_guard;

const SUMMARY: &str = "read of /home/dev/.aws/credentials during get_weather, then a connect to \
                       203.0.113.9:443 in the same call: the shape of a credential leaving the host";

fn state_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mcp-guard-it-width-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("state dir");
    let mut s = Store::open(&store::db_path(&dir)).expect("open store");
    let now = Timestamp::now();
    s.insert(AlertRecord {
        alert_id: "w1-a1".into(),
        ts: now,
        server: "weather".into(),
        session: "weather-s1".into(),
        rule: "exfiltration-shape".into(),
        severity: Severity::Critical,
        call_id: Some("w1-c42".into()),
        tool: Some("get_weather".into()),
        summary: SUMMARY.into(),
        event_ids: vec![],
        action: Some("kill".into()),
        count: 1,
        last_seen: now,
    })
    .expect("insert alert");
    dir
}

fn alerts(dir: &PathBuf, columns: Option<&str>) -> String {
    let mut cmd = Command::new(mcp_guard());
    cmd.arg("--state-dir")
        .arg(dir)
        .arg("alerts")
        .env_remove("COLUMNS");
    if let Some(c) = columns {
        cmd.env("COLUMNS", c);
    }
    let out = cmd.output().expect("run alerts");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn a_long_summary_wraps_within_the_width_and_a_pipe_gets_it_whole() {
    let dir = state_dir();
    // A pipe: one line per alert, nothing cut.
    let piped = alerts(&dir, None);
    assert!(piped.contains(SUMMARY), "{piped}");
    assert!(!piped.contains('…'), "{piped}");
    assert_eq!(piped.lines().count(), 2, "{piped}");
    // A width: every line fits, and the summary is all there, over several lines.
    let narrow = alerts(&dir, Some("100"));
    for line in narrow.lines() {
        assert!(
            line.chars().count() <= 100,
            "wider than 100: {line:?}\n{narrow}"
        );
    }
    assert!(narrow.lines().count() > 2, "{narrow}");
    // Continuation lines are indented to the column: without the blanks, the summary is whole.
    let solid = |s: &str| s.split_whitespace().collect::<String>();
    assert!(
        solid(&narrow).contains(&solid(SUMMARY)),
        "the summary is not whole:\n{narrow}"
    );
    assert!(!narrow.contains('…'), "{narrow}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
