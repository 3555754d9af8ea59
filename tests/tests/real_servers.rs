//! The real servers' listings the detection corpus measures false positives on
//! (`tests/corpus/real_servers.json`, fetched by `cargo xtask setup` with
//! `tests/fixtures/fetch_real_tools.py`): every server of the table is there with its tools, and
//! a server that does not answer fails the fetch instead of quietly shrinking the set.

use std::process::Command;

use mcp_guard_tests::{corpus, describe, fixture, python, scratch_root};

#[test]
fn every_server_of_the_table_listed_its_tools() {
    let servers = corpus::real_servers();
    assert!(servers.len() >= 25, "{} real servers", servers.len());
    let mut total = 0;
    for server in &servers {
        assert!(
            matches!(server.source.as_str(), "npm" | "pypi") && !server.version.is_empty(),
            "{}: source {:?}, version {:?}",
            server.name,
            server.source,
            server.version
        );
        assert!(!server.tools.is_empty(), "{} listed no tools", server.name);
        for tool in &server.tools {
            assert!(
                tool["name"].as_str().is_some_and(|n| !n.is_empty())
                    && tool["inputSchema"].is_object(),
                "{}: not a tool object: {tool}",
                server.name
            );
        }
        println!(
            "{:<22} {:<4} {:<48} {:<11} {:>3} tools",
            server.name,
            server.source,
            server.package,
            server.version,
            server.tools.len()
        );
        total += server.tools.len();
    }
    println!("{} servers, {total} tools", servers.len());
}

#[test]
fn a_server_that_fails_to_start_answer_or_install_fails_the_fetch_naming_it() {
    let dir = scratch_root()
        .join("mcp-guard-tests")
        .join(format!("real-servers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    let table = dir.join("table.json");
    // One server that works, then one that exits at once (a bad flag), one that is not
    // installed, and one that never answers (python reading the protocol as a script).
    std::fs::write(
        &table,
        r#"{"servers": [
  {"name": "time", "pypi": "mcp-server-time", "command": "mcp-server-time"},
  {"name": "exits", "pypi": "mcp-server-git", "command": "mcp-server-git", "args": ["--no-such-flag"]},
  {"name": "missing", "pypi": "no-such-mcp-server", "command": "no-such-mcp-server"},
  {"name": "silent", "pypi": "mcp", "command": "python"}
]}"#,
    )
    .expect("write table");
    let out_dir = dir.join("out");
    let out = Command::new(python())
        .arg(fixture("fetch_real_tools.py"))
        .arg("--table")
        .arg(&table)
        .args(["--timeout", "8"])
        .arg(&out_dir)
        .output()
        .expect("run fetch_real_tools.py");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    for (name, why) in [
        ("exits", "No such option"),
        ("missing", "not installed"),
        ("silent", "no answer within"),
    ] {
        assert!(
            stderr.contains(&format!("=== {name} failed")) && stderr.contains(why),
            "{name}: {}",
            describe(&out)
        );
    }
    assert!(
        stderr.contains("3 of 4 servers failed"),
        "{}",
        describe(&out)
    );
    // The server that answered is written; no index claims a complete fetch.
    let time: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join("time.json")).expect("time.json written"),
    )
    .expect("time.json is JSON");
    assert!(
        time["tools"].as_array().is_some_and(|t| !t.is_empty()),
        "{time}"
    );
    assert!(!out_dir.join("index.json").exists(), "index.json written");
    assert!(!out_dir.join("exits.json").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
