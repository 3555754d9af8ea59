//! The poisoning scanner measured against the detection corpus (`tests/corpus`) and the real
//! servers' listings (`target/real-tools`, fetched by `cargo xtask setup`): recall on poisoned
//! definitions and results, false positives on real servers' tools, prompts and resources (with
//! every real server's tools as the client's other tools, as one shared state dir has them), and
//! the false-positive rate on the corpus' benign hard negatives. Prints the confusion tables by
//! category and channel (`--nocapture`).
#![expect(
    clippy::cast_precision_loss,
    reason = "rates, shares and sizes for a report, to a few digits"
)]

use std::collections::BTreeMap;

use mcp_guard_proxy::scan::{self, Neighbours, walk::Flag};
use mcp_guard_tests::corpus::{self, Label};
use serde_json::Value;

fn neighbours(client: &[String], own: &[String], name: &str) -> Neighbours {
    Neighbours {
        foreign: client
            .iter()
            .map(|t| ("other".to_string(), t.clone()))
            .collect(),
        own: own.iter().cloned().chain([name.to_string()]).collect(),
    }
}

fn channels(flags: &[Flag]) -> String {
    let mut c: Vec<&str> = flags.iter().map(|f| f.spot.channel.name()).collect();
    c.sort_unstable();
    c.dedup();
    c.join("+")
}

#[derive(Default)]
struct Row {
    cases: usize,
    flagged: usize,
}

fn table(title: &str, rows: &BTreeMap<String, Row>) {
    println!("\n{title}");
    println!(
        "  {:<28} {:>6} {:>8} {:>7}",
        "category", "cases", "flagged", "rate"
    );
    for (k, r) in rows {
        println!(
            "  {k:<28} {:>6} {:>8} {:>6.0}%",
            r.cases,
            r.flagged,
            100.0 * r.flagged as f64 / r.cases.max(1) as f64
        );
    }
}

struct Measured {
    poisoned: (usize, usize),
    benign: (usize, usize),
    misses: Vec<String>,
    false_alarms: Vec<String>,
}

fn measure_definitions() -> Measured {
    let mut by_cat: BTreeMap<String, Row> = BTreeMap::new();
    let mut by_channel: BTreeMap<String, Row> = BTreeMap::new();
    let mut m = Measured {
        poisoned: (0, 0),
        benign: (0, 0),
        misses: vec![],
        false_alarms: vec![],
    };
    for case in corpus::definitions() {
        let name = case.tool["name"].as_str().unwrap_or("");
        let n = neighbours(&case.client_tools, &case.server_tools, name);
        let flags = scan::scan_tool(&case.tool, &n);
        let hit = !flags.is_empty();
        let key = format!("{:?} {}", case.label, case.category).to_lowercase();
        let row = by_cat.entry(key).or_default();
        row.cases += 1;
        row.flagged += usize::from(hit);
        if hit {
            let ch = by_channel
                .entry(format!("{:?} {}", case.label, channels(&flags)).to_lowercase())
                .or_default();
            ch.cases += 1;
            ch.flagged += 1;
        }
        let detail = || {
            format!(
                "{}: {}",
                case.id,
                flags
                    .iter()
                    .map(|f| f.scan.reasons.join("; "))
                    .collect::<Vec<_>>()
                    .join(" | ")
            )
        };
        match case.label {
            Label::Poisoned => {
                m.poisoned.0 += 1;
                m.poisoned.1 += usize::from(hit);
                if !hit {
                    m.misses.push(case.id.clone());
                }
            }
            Label::Benign => {
                m.benign.0 += 1;
                m.benign.1 += usize::from(hit);
                if hit {
                    m.false_alarms.push(detail());
                }
            }
        }
    }
    table("tool definitions by label and category", &by_cat);
    table("flagged tool definitions by channel", &by_channel);
    m
}

fn measure_results() -> Measured {
    let mut by_cat: BTreeMap<String, Row> = BTreeMap::new();
    let mut m = Measured {
        poisoned: (0, 0),
        benign: (0, 0),
        misses: vec![],
        false_alarms: vec![],
    };
    for case in corpus::results() {
        let n = neighbours(&case.client_tools, &case.server_tools, &case.tool_name);
        let flags = scan::scan_result(&case.result, &n);
        let hit = !flags.is_empty();
        let row = by_cat
            .entry(format!("{:?} {}", case.label, case.category).to_lowercase())
            .or_default();
        row.cases += 1;
        row.flagged += usize::from(hit);
        match case.label {
            Label::Poisoned => {
                m.poisoned.0 += 1;
                m.poisoned.1 += usize::from(hit);
                if !hit {
                    m.misses.push(case.id.clone());
                }
            }
            Label::Benign => {
                m.benign.0 += 1;
                m.benign.1 += usize::from(hit);
                if hit {
                    m.false_alarms.push(format!(
                        "{}: {}",
                        case.id,
                        flags
                            .iter()
                            .map(|f| f.scan.reasons.join("; "))
                            .collect::<Vec<_>>()
                            .join(" | ")
                    ));
                }
            }
        }
    }
    table("tool results by label and category", &by_cat);
    m
}

fn pct(x: (usize, usize)) -> f64 {
    100.0 * x.1 as f64 / x.0.max(1) as f64
}

#[test]
fn poisoned_definitions_and_results_are_flagged() {
    let d = measure_definitions();
    let r = measure_results();
    println!(
        "\ndefinitions: {}/{} poisoned flagged ({:.1}%), {}/{} benign hard negatives flagged ({:.1}%)",
        d.poisoned.1,
        d.poisoned.0,
        pct(d.poisoned),
        d.benign.1,
        d.benign.0,
        pct(d.benign)
    );
    println!(
        "results: {}/{} poisoned flagged ({:.1}%), {}/{} benign hard negatives flagged ({:.1}%)",
        r.poisoned.1,
        r.poisoned.0,
        pct(r.poisoned),
        r.benign.1,
        r.benign.0,
        pct(r.benign)
    );
    println!("missed: {:?} {:?}", d.misses, r.misses);
    for f in d.false_alarms.iter().chain(&r.false_alarms) {
        println!("false alarm: {f}");
    }
    assert!(
        pct(d.poisoned) >= 90.0,
        "definitions recall {:.1}% < 90%",
        pct(d.poisoned)
    );
    assert!(
        pct(r.poisoned) >= 80.0,
        "results recall {:.1}% < 80%",
        pct(r.poisoned)
    );
    // The goal is none; a few hard negatives may stay, the real servers may not (below).
    assert!(
        pct(d.benign) + pct(r.benign) <= 10.0,
        "{:?} {:?}",
        d.false_alarms,
        r.false_alarms
    );
}

#[test]
fn no_real_server_tool_prompt_or_resource_is_flagged() {
    let servers = corpus::real_servers();
    let all: Vec<(String, String)> = servers
        .iter()
        .flat_map(|s| {
            s.tools
                .iter()
                .filter_map(|t| Some((s.name.clone(), t["name"].as_str()?.to_string())))
        })
        .collect();
    let mut flagged = Vec::new();
    let mut counts = (0, 0, 0);
    for s in &servers {
        // Every other real server's tools are the client's other tools (one shared state dir).
        let n = Neighbours {
            foreign: all
                .iter()
                .filter(|(srv, _)| *srv != s.name)
                .cloned()
                .collect(),
            own: s
                .tools
                .iter()
                .filter_map(|t| t["name"].as_str().map(String::from))
                .collect(),
        };
        for t in &s.tools {
            counts.0 += 1;
            let f = scan::scan_tool(t, &n);
            if !f.is_empty() {
                flagged.push(format!("{}/{}: {}", s.name, t["name"], reasons(&f)));
            }
        }
        let listed: Vec<&Value> = [&s.prompts, &s.resources, &s.resource_templates]
            .into_iter()
            .flatten()
            .flatten()
            .collect();
        for item in listed {
            counts.1 += 1;
            let f = scan::scan_listing(item, &n);
            if !f.is_empty() {
                flagged.push(format!("{}/{}: {}", s.name, item, reasons(&f)));
            }
        }
        counts.2 += 1;
    }
    println!(
        "real servers: {} servers, {} tools, {} prompts/resources/templates; flagged: {}",
        counts.2,
        counts.0,
        counts.1,
        flagged.len()
    );
    assert!(counts.2 >= 25 && counts.0 >= 250, "{counts:?}");
    assert!(
        flagged.is_empty(),
        "false positives on real servers:\n{}",
        flagged.join("\n")
    );
}

fn reasons(flags: &[Flag]) -> String {
    flags
        .iter()
        .map(|f| {
            format!(
                "{} {:?} ({:.1}): {}",
                f.spot.pointer,
                f.spot.key,
                f.scan.score,
                f.scan.reasons.join("; ")
            )
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The common path's screen must never let a poisoned result through unparsed.
#[test]
fn the_screen_passes_no_poisoned_result() {
    for case in corpus::results() {
        let n = neighbours(&case.client_tools, &case.server_tools, &case.tool_name);
        let line =
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": case.result}).to_string();
        let screen = scan::screen::Screen::new(n.foreign.iter().map(|(_, t)| t.as_str()));
        if !scan::scan_result(&case.result, &n).is_empty() {
            assert!(
                screen.might_match(line.as_bytes()),
                "{} passed the screen",
                case.id
            );
        }
    }
}
