//! The incident history (issue 20), through the real binary with real servers: what a call was
//! asked and answered is kept (redacted, bounded, or not at all for a tool the policy keeps
//! out), which server version ran, retention that keeps the evidence longest and gives the disk
//! back, and a full disk that costs records but never the session.
//!
//! The attacks: a client that sends an injected secret and a secret-shaped token in a tool's
//! arguments, echoed back in its result, under a policy that lets the token through to the
//! client (only the store's own redaction stands between them and the disk); a flood of noise
//! meant to push an alert out of a size-limited store; a disk filled under a running session.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use mcp_guard_model::{
    AlertRecord, Attribution, CallRecord, Decision, EventKind, EventRecord, Record, SessionRecord,
    Severity, Timestamp, Verdict,
};
use mcp_guard_store::{self as store, Store};
use mcp_guard_tests::{
    agent::{Agent, PinDir},
    describe, fixture, fresh_dir, mcp_guard, npm_server, prom, python, require_root,
    workspace_root,
};
use serde_json::{Value, json};

/// A fresh directory outside /tmp (the jail gives the server a private /tmp of its own).
fn data_dir(tag: &str) -> PathBuf {
    fresh_dir("history", tag)
}

/// Random lowercase hex (no fixed part that could match by accident).
fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .expect("read /dev/urandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An AWS access key id's shape, random: `AKIA` and 16 of `[A-Z2-7]`.
fn aws_shaped() -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let hex = random_hex(16);
    let tail: String = hex
        .as_bytes()
        .chunks(2)
        .map(|c| {
            let n = u8::from_str_radix(std::str::from_utf8(c).expect("hex"), 16).expect("hex");
            char::from(alphabet[usize::from(n) % 32])
        })
        .collect();
    format!("AKIA{tail}")
}

fn count(haystack: &[u8], needle: &str) -> usize {
    let n = needle.as_bytes();
    haystack.windows(n.len()).filter(|w| *w == n).count()
}

/// Where the test environment installed the servers, resolved (landlock follows symlinks).
fn install_dirs() -> Vec<PathBuf> {
    [
        workspace_root().join("tests/node_modules"),
        workspace_root().join(".venv"),
    ]
    .iter()
    .map(|p| {
        p.canonicalize()
            .unwrap_or_else(|e| panic!("{}: {e}: run `cargo xtask setup`", p.display()))
    })
    .collect()
}

fn toml_list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| format!("  \"{}\",\n", p.display()))
        .collect()
}

/// A copy of `policies/NAME.toml` in `dir` with the test environment's install dirs added to
/// `read` and `exec`, `writable` added to `write`, `top` before the tables and `tail` after
/// them; checked with `policy check`.
fn test_policy(name: &str, dir: &Path, writable: &[PathBuf], top: &str, tail: &str) -> PathBuf {
    let shipped = workspace_root()
        .join("policies")
        .join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&shipped).expect("read shipped policy");
    let installs = toml_list(&install_dirs());
    let mut copy = String::new();
    for line in text.lines() {
        if line.starts_with("name = ") {
            copy.push_str(line);
            copy.push('\n');
            copy.push_str(top);
            copy.push('\n');
            continue;
        }
        copy.push_str(line);
        copy.push('\n');
        match line {
            "read = [" | "exec = [" => copy.push_str(&installs),
            "write = [" => copy.push_str(&toml_list(writable)),
            _ => {}
        }
    }
    copy.push_str(tail);
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, copy).expect("write test policy");
    let check = Command::new(mcp_guard())
        .args(["policy", "check"])
        .arg(&path)
        .output()
        .expect("run policy check");
    assert!(check.status.success(), "test policy: {}", describe(&check));
    path
}

/// The MCP Python SDK's client against `mcp-guard exec --standalone --policy POLICY --name NAME
/// -- COMMAND`, with one call; its answer.
fn sdk_session(
    state: &Path,
    policy: &Path,
    name: &str,
    call: (&str, &str),
    command: &[&str],
) -> Value {
    let out = Command::new(python())
        .arg(fixture("mcp_client.py"))
        .args(["--call", call.0, call.1, "--"])
        .arg(mcp_guard())
        .arg("--state-dir")
        .arg(state)
        .args(["exec", "--standalone", "--policy"])
        .arg(policy)
        .args(["--name", name, "--"])
        .args(command)
        .output()
        .expect("run the MCP client");
    assert!(out.status.success(), "{}", describe(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(&out)))
}

/// `mcp-guard --state-dir STATE ARGS...`, which must succeed.
fn query(state: &Path, args: &[&str]) -> String {
    let out = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env("COLUMNS", "100")
        .output()
        .expect("run mcp-guard");
    assert!(out.status.success(), "{args:?}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The filesystem server's command, told it may use `root`.
fn filesystem_command(root: &Path) -> Vec<String> {
    vec![
        "node".into(),
        npm_server("@modelcontextprotocol/server-filesystem")
            .display()
            .to_string(),
        root.display().to_string(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Every byte the store keeps on disk: the database, its WAL and shared memory.
fn store_bytes(state: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    ["mcp-guard.db", "mcp-guard.db-wal", "mcp-guard.db-shm"]
        .iter()
        .filter_map(|f| {
            let p = state.join(f);
            std::fs::read(&p).ok().map(|b| (p, b))
        })
        .collect()
}

#[test]
fn calls_and_trace_show_what_read_text_file_was_asked_and_answered() {
    require_root();
    let dir = data_dir("read");
    let served = dir.join("served");
    std::fs::create_dir_all(&served).expect("mkdir");
    let notes = served.join("notes.txt");
    std::fs::write(&notes, "hello from the history test\n").expect("write");
    let big = served.join("big.txt");
    let big_text: String = (0..20_000).map(|i| format!("line {i:05}\n")).collect();
    std::fs::write(&big, &big_text).expect("write");
    let policy = test_policy("filesystem", &dir, std::slice::from_ref(&served), "", "");
    let state = dir.join("state");
    let command = filesystem_command(&served);
    let read = |path: &Path| {
        let args = json!({ "path": path }).to_string();
        sdk_session(
            &state,
            &policy,
            "fs",
            ("read_text_file", &args),
            &strs(&command),
        )
    };
    let answer = read(&notes);
    assert_eq!(answer["call"]["text"], "hello from the history test\n");
    read(&big);

    let calls = json_lines(&query(
        &state,
        &["calls", "--json", "--tool", "read_text_file"],
    ));
    assert_eq!(calls.len(), 2, "{calls:?}");
    let small = &calls[0];
    assert_eq!(
        small["arguments"]["path"],
        notes.display().to_string(),
        "{small}"
    );
    assert_eq!(
        small["result"]["content"][0]["text"], "hello from the history test\n",
        "{small}"
    );
    assert!(small.get("result_cut").is_none(), "{small}");
    // The contract's fields are all there, unchanged.
    for f in [
        "call_id",
        "server",
        "session",
        "method",
        "tool",
        "request_id",
        "started_at",
    ] {
        assert!(small.get(f).is_some(), "{f}: {small}");
    }
    // A long result: an excerpt of the default 4096 bytes, still JSON, the cut counted.
    let long = &calls[1];
    let excerpt = long["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{long}"));
    assert!(
        excerpt.len() > 3_000 && big_text.starts_with(excerpt),
        "{long}"
    );
    assert!(long["result"].to_string().len() <= 4096);
    let cut = long["result_cut"]
        .as_u64()
        .unwrap_or_else(|| panic!("{long}"));
    assert!(cut > big_text.len() as u64 - 4096, "{cut}");

    // trace says what was asked, and that the result was cut and by how much.
    let call_id = long["call_id"].as_str().expect("id");
    let shown = query(&state, &["trace", call_id]);
    assert!(shown.contains(&big.display().to_string()), "{shown}");
    assert!(shown.contains(&format!("{cut} bytes cut")), "{shown}");
    assert!(
        shown.contains("server says it is secure-filesystem-server"),
        "{shown}"
    );
    let table = query(&state, &["calls", "--tool", "read_text_file"]);
    assert!(
        table.contains("ARGUMENTS") && table.contains("\"path\""),
        "{table}"
    );

    // Which server ran: its own name and version, and its tool list's digest, per session.
    let sessions = json_lines(&query(&state, &["sessions", "--json", "--server", "fs"]));
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    for s in &sessions {
        assert_eq!(s["server_info"]["name"], "secure-filesystem-server", "{s}");
        assert!(s["server_info"]["version"].is_string(), "{s}");
        assert!(s["server_info"]["protocolVersion"].is_string(), "{s}");
        let listed = &s["tools_listed"][0];
        assert_eq!(listed["sha256"].as_str().map(str::len), Some(64), "{s}");
        assert!(listed["tools"].as_u64() >= Some(4), "{s}");
    }
    assert_eq!(
        sessions[0]["tools_listed"][0]["sha256"], sessions[1]["tools_listed"][0]["sha256"],
        "the same server gives the same digest"
    );
    let table = query(&state, &["sessions"]);
    assert!(table.contains("secure-filesystem-server"), "{table}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn neither_an_injected_secret_nor_a_secret_shape_in_a_call_reaches_the_store() {
    require_root();
    let dir = data_dir("secrets");
    let value = random_hex(16);
    let shape = aws_shaped();
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).expect("mkdir");
    let secret = secrets.join("token");
    std::fs::write(&secret, &value).expect("write the secret");
    let server = npm_server("@modelcontextprotocol/server-everything");
    let node = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("node"))
        .find(|p| p.is_file())
        .expect("node on the PATH");
    let command = [
        node.to_str().expect("UTF-8"),
        server.to_str().expect("UTF-8"),
        "stdio",
    ];
    // The policy fixes the command (so the secret is injected) and lets secret shapes through
    // to the client in both directions: only the store's own redaction is left.
    let top = format!(
        "command = [\"{}\", \"{}\", \"stdio\"]",
        node.display(),
        server.display()
    );
    let tail = format!(
        "\n[secrets]\nTOKEN = {{ file = \"{}\" }}\n\n[mcp.secret_shapes]\nin_arguments = \"alert\"\n\
         in_results = \"alert\"\n",
        secret.display()
    );
    let policy = test_policy("everything", &dir, &[], &top, &tail);
    let state = dir.join("state");
    let message = format!("token {value} and key {shape}");
    let args = json!({ "message": message }).to_string();
    let answer = sdk_session(&state, &policy, "everything", ("echo", &args), &command);
    let text = answer["call"]["text"].as_str().unwrap_or_default();
    // The client got the shape (the policy let it pass) but not the injected value.
    assert!(text.contains(&shape), "{answer}");
    assert!(!text.contains(&value), "{answer}");

    let mut leaks = Vec::new();
    for (file, bytes) in store_bytes(&state) {
        for (what, needle) in [("the injected value", &value), ("the token", &shape)] {
            let n = count(&bytes, needle);
            if n > 0 {
                leaks.push(format!("{}: {n} copies of {what}", file.display()));
            }
        }
    }
    assert!(leaks.is_empty(), "{leaks:?}");

    // What was asked and answered is there, redacted, saying so.
    let calls = json_lines(&query(&state, &["calls", "--json", "--tool", "echo"]));
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    let asked = call["arguments"]["message"].as_str().unwrap_or_default();
    assert_eq!(
        asked, "token [REDACTED:secret TOKEN] and key [REDACTED:aws-access-key]",
        "{call}"
    );
    let answered = call["result"].to_string();
    assert!(
        answered.contains("[REDACTED:secret TOKEN]")
            && answered.contains("[REDACTED:aws-access-key]"),
        "{call}"
    );
    let redacted: Vec<&str> = call["redacted"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        redacted.contains(&"secret TOKEN") && redacted.contains(&"aws-access-key"),
        "{call}"
    );
    let shown = query(&state, &["trace", call["call_id"].as_str().expect("id")]);
    assert!(
        shown.contains("redacted before recording: secret TOKEN, aws-access-key"),
        "{shown}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_tool_the_policy_keeps_out_of_the_history_leaves_nothing_of_its_calls() {
    require_root();
    let dir = data_dir("off");
    let served = dir.join("served");
    std::fs::create_dir_all(&served).expect("mkdir");
    let canary = format!("canary-{}", random_hex(12));
    let file = served.join("private.txt");
    std::fs::write(&file, format!("{canary}\n")).expect("write");
    let policy = test_policy(
        "filesystem",
        &dir,
        std::slice::from_ref(&served),
        "",
        "\n[audit.tools]\nread_text_file = \"off\"\n",
    );
    let state = dir.join("state");
    let command = filesystem_command(&served);
    let args = json!({ "path": file }).to_string();
    let answer = sdk_session(
        &state,
        &policy,
        "fs",
        ("read_text_file", &args),
        &strs(&command),
    );
    assert_eq!(answer["call"]["text"], format!("{canary}\n"));
    // The same policy still keeps other tools' calls.
    let args = json!({ "path": served }).to_string();
    sdk_session(
        &state,
        &policy,
        "fs",
        ("list_directory", &args),
        &strs(&command),
    );

    for (path, bytes) in store_bytes(&state) {
        assert_eq!(
            count(&bytes, &canary),
            0,
            "{} holds the result",
            path.display()
        );
    }
    let calls = json_lines(&query(&state, &["calls", "--json"]));
    let read = calls
        .iter()
        .find(|c| c["tool"] == "read_text_file")
        .unwrap_or_else(|| panic!("the call itself is recorded: {calls:?}"));
    assert!(
        read.get("arguments").is_none() && read.get("result").is_none(),
        "{read}"
    );
    let listed = calls
        .iter()
        .find(|c| c["tool"] == "list_directory")
        .expect("list_directory");
    assert_eq!(listed["arguments"]["path"], served.display().to_string());
    assert!(
        listed["result"].to_string().contains("private.txt"),
        "{listed}"
    );
    let shown = query(&state, &["trace", read["call_id"].as_str().expect("id")]);
    assert!(
        shown.contains("not recorded ([audit] off for read_text_file)"),
        "{shown}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// Retention, run by the agent.

const DAY: Duration = Duration::from_hours(24);

fn ago(d: Duration) -> Timestamp {
    Timestamp::now().saturating_sub(d)
}

fn call(id: &str, at: Timestamp) -> CallRecord {
    CallRecord {
        call_id: id.into(),
        server: "old".into(),
        session: "old-s1".into(),
        method: "tools/call".into(),
        tool: Some("t".into()),
        request_id: "1".into(),
        started_at: at,
        ended_at: Some(at),
        decision: Decision::Allowed,
        reason: None,
        error: None,
        result_bytes: None,
        audit: None,
    }
}

fn event(id: &str, at: Timestamp, path: String) -> EventRecord {
    let mut e = EventRecord::new(id.into(), at, "old", "old-s1", 42, EventKind::Open);
    e.path = Some(path);
    e.verdict = Verdict::Allowed;
    e
}

/// Plain records 40 days old, an alert as old citing one of them (and its call), recent records.
fn write_history(db: &Path) {
    let mut store = Store::open(db).expect("open the store");
    let old = ago(40 * DAY);
    let mut cited = event("cited", old, "/home/dev/.aws/credentials".into());
    cited.call_id = Some("alerted".into());
    cited.attribution = Attribution::Call;
    let mut records: Vec<Record> = vec![
        SessionRecord {
            session: "old-s1".into(),
            server: "old".into(),
            started_at: old,
            ended_at: Some(old),
            command: vec!["srv".into()],
            policy: "default".into(),
            pid: None,
            observe: false,
            exit_status: Some(0),
            facts: mcp_guard_model::ServerFacts::default(),
        }
        .into(),
        call("alerted", old).into(),
        call("plain-call", old).into(),
        cited.into(),
        AlertRecord {
            alert_id: "the-alert".into(),
            ts: old,
            server: "old".into(),
            session: "old-s1".into(),
            rule: "sensitive-read".into(),
            severity: Severity::High,
            call_id: Some("alerted".into()),
            tool: Some("t".into()),
            summary: "read credentials".into(),
            event_ids: vec!["cited".into()],
            action: None,
            count: 1,
            last_seen: old,
        }
        .into(),
        event("recent", ago(DAY), "/srv/recent".into()).into(),
    ];
    records
        .extend((0..2_000).map(|i| event(&format!("plain{i}"), old, format!("/srv/{i}")).into()));
    store.write(&records).expect("write history");
}

fn event_ids(db: &Path) -> Vec<String> {
    Store::open_existing(db)
        .and_then(|s| s.events(&mcp_guard_store::EventFilter::default()))
        .expect("read events")
        .into_iter()
        .map(|e| e.event_id)
        .collect()
}

fn db_bytes(state: &Path) -> u64 {
    ["mcp-guard.db", "mcp-guard.db-wal"]
        .iter()
        .map(|f| std::fs::metadata(state.join(f)).map_or(0, |m| m.len()))
        .sum()
}

fn wait_until(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
    log: impl Fn() -> String,
) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_agent_deletes_the_oldest_first_keeps_the_evidence_longer_and_gives_the_disk_back() {
    require_root();
    let dir = data_dir("retention");
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let db = store::db_path(&state);
    write_history(&db);
    let pins = PinDir::new("history-retention");
    let config = |max: &str| {
        format!(
            "[store]\nretention_days = 30\nalert_retention_days = 90\nmax_db_bytes = \"{max}\"\n"
        )
    };
    let mut agent = Agent::start(&dir, &pins, &config("1G"));
    // By age: the plain records went, the alert, the event it cites and its call stayed.
    wait_until(
        "the old plain records deleted",
        Duration::from_secs(30),
        || !event_ids(&db).iter().any(|e| e.starts_with("plain")),
        || agent.log(),
    );
    assert_eq!(event_ids(&db), ["cited", "recent"]);
    {
        let store = Store::open_existing(&db).expect("open");
        assert!(store.call("alerted").expect("read").is_some());
        assert!(store.call("plain-call").expect("read").is_none());
        assert_eq!(store.counts().expect("counts").alerts, 1);
    }

    // A flood of newer noise, then a size limit while the agent runs: the oldest noise goes,
    // the evidence stays, and the file shrinks.
    {
        let mut store = Store::open(&db).expect("open");
        let start = ago(20 * DAY);
        let flood: Vec<Record> = (0..40_000u64)
            .map(|i| {
                event(
                    &format!("noise{i:06}"),
                    start.saturating_add(Duration::from_secs(i * 30)),
                    format!("/tmp/noise/{}/{i}", "n".repeat(120)),
                )
                .into()
            })
            .collect();
        store.write(&flood).expect("flood");
    }
    let before = db_bytes(&state);
    assert!(before > 8 << 20, "{before}");
    std::fs::write(
        dir.join("agent.toml"),
        format!("socket_mode = \"0666\"\n{}", config("2M")),
    )
    .expect("new config");
    let hup = Command::new("kill")
        .args(["-HUP", &agent.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    wait_until(
        "the store cut down to 2M",
        Duration::from_mins(1),
        || std::fs::metadata(&db).map_or(0, |m| m.len()) < 3 << 20,
        || agent.log(),
    );
    let ids = event_ids(&db);
    assert!(ids.contains(&"cited".to_string()), "the cited event went");
    assert!(
        ids.contains(&"noise039999".to_string()),
        "the newest noise went"
    );
    assert!(
        !ids.contains(&"noise000000".to_string()),
        "the oldest noise stayed"
    );
    assert_eq!(
        Store::open_existing(&db)
            .and_then(|s| s.counts())
            .expect("counts")
            .alerts,
        1
    );
    let after = db_bytes(&state);
    assert!(after < before / 2, "{before} -> {after}");
    agent.terminate();
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// A full disk.

/// A small ext4 file system on a loop device, mounted at `mnt`; unmounted on drop.
struct LoopFs {
    mnt: PathBuf,
    img: PathBuf,
}

impl LoopFs {
    fn mount(img: &Path, mnt: &Path, size: &str) -> LoopFs {
        let run = |cmd: &mut Command| {
            let out = cmd.output().expect("run");
            assert!(out.status.success(), "{cmd:?}: {}", describe(&out));
        };
        run(Command::new("truncate").args(["-s", size]).arg(img));
        // No blocks reserved for root: exec runs as root here and would write into them.
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(img));
        std::fs::create_dir_all(mnt).expect("mount point");
        run(Command::new("mount").args(["-o", "loop"]).arg(img).arg(mnt));
        LoopFs {
            mnt: mnt.to_path_buf(),
            img: img.to_path_buf(),
        }
    }

    /// Writes `ballast` until the file system is full.
    fn fill(&self, ballast: &Path) {
        let mut f = std::fs::File::create(ballast).expect("ballast");
        for chunk in [1 << 20, 4096, 512] {
            let buf = vec![0xa5u8; chunk];
            while f.write_all(&buf).and_then(|()| f.sync_data()).is_ok() {}
        }
        let probe = self.mnt.join("probe");
        let full = std::fs::write(&probe, vec![1u8; 8192])
            .and_then(|()| std::fs::File::open(&probe)?.sync_all());
        let _ = std::fs::remove_file(&probe);
        assert!(full.is_err(), "the file system is not full");
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
        let _ = std::fs::remove_file(&self.img);
    }
}

/// A JSON-RPC client speaking to `mcp-guard exec` over its stdio, one request at a time.
struct RawClient {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    next: u64,
}

impl RawClient {
    fn start(mut cmd: Command) -> RawClient {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mcp-guard exec");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stdin = child.stdin.take();
        RawClient {
            child,
            stdin,
            lines,
            next: 0,
        }
    }

    fn send(&mut self, msg: &Value) {
        let stdin = self.stdin.as_mut().expect("open");
        writeln!(stdin, "{msg}").expect("write to exec");
        stdin.flush().expect("flush");
    }

    /// Sends a request and returns its response (notifications in between are skipped).
    #[expect(
        clippy::needless_pass_by_value,
        reason = "callers build the JSON in place with json!"
    )]
    fn request(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        let deadline = Instant::now() + Duration::from_mins(1);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("no answer to {method} ({e})"));
            let v: Value = serde_json::from_str(&line).expect("JSON from exec");
            if v["id"] == id {
                return v;
            }
        }
    }

    #[expect(
        clippy::needless_pass_by_value,
        reason = "callers build the JSON in place with json!"
    )]
    fn call(&mut self, tool: &str, arguments: Value) -> Value {
        self.request("tools/call", json!({"name": tool, "arguments": arguments}))
    }

    /// Closes exec's stdin and waits for it: its output.
    fn finish(mut self) -> Output {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_mins(1);
        while self.child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "exec did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.wait_with_output().expect("exec's output")
    }
}

fn metric(agent: &Agent, name: &str) -> Option<f64> {
    prom::metric(&agent.addr, name)
}

#[test]
fn a_full_disk_costs_records_never_the_session_and_writing_resumes_by_itself() {
    require_root();
    let dir = data_dir("full");
    let served = dir.join("served");
    let outside = dir.join("outside");
    std::fs::create_dir_all(&served).expect("mkdir");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(served.join("notes.txt"), "still answering\n").expect("write");
    std::fs::write(outside.join("secret.txt"), "not for the model\n").expect("write");
    let policy = test_policy("filesystem", &dir, std::slice::from_ref(&served), "", "")
        .canonicalize()
        .expect("policy");
    // The proxy's own refusal, besides the kernel's.
    let text = std::fs::read_to_string(&policy).expect("policy").replacen(
        "deny = []\n\n[detect]",
        "deny = [\"write_file\"]\n\n[detect]",
        1,
    );
    std::fs::write(&policy, text).expect("policy");
    // The state dir is a 16 MiB file system of its own; the agent follows the store there.
    let fs = LoopFs::mount(&dir.join("img"), &dir.join("state"), "16M");
    let state = fs.mnt.clone();
    let pins = PinDir::new("history-full");
    let agent = Agent::start(&dir, &pins, "");
    let mut exec_args: Vec<std::ffi::OsString> = vec!["--state-dir".into(), state.clone().into()];
    exec_args.extend(["exec", "--standalone", "--policy"].map(Into::into));
    exec_args.push(policy.clone().into());
    exec_args.extend(["--name", "fsfull", "--"].map(Into::into));
    exec_args.extend(filesystem_command(&dir).into_iter().map(Into::into));
    // A first session with room: the store, its WAL and the pins exist.
    let args = json!({ "path": served.join("notes.txt") }).to_string();
    let first = Command::new(python())
        .arg(fixture("mcp_client.py"))
        .args(["--call", "read_text_file", &args, "--"])
        .arg(mcp_guard())
        .args(&exec_args)
        .output()
        .expect("first session");
    assert!(first.status.success(), "{}", describe(&first));

    fs.fill(&fs.mnt.join("ballast"));
    let mut exec = Command::new(mcp_guard());
    exec.args(&exec_args);
    let mut client = RawClient::start(exec);
    let init = client.request(
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "history-test", "version": "1"}}),
    );
    assert!(init.get("result").is_some(), "{init}");
    client.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    assert!(
        client
            .request("tools/list", json!({}))
            .get("result")
            .is_some()
    );
    // While the disk is full: the proxy answers, the kernel and the policy still refuse.
    for _ in 0..30 {
        let r = client.call("read_text_file", json!({"path": served.join("notes.txt")}));
        assert!(r.to_string().contains("still answering"), "{r}");
    }
    let denied = client.call(
        "read_text_file",
        json!({"path": outside.join("secret.txt")}),
    );
    let text = denied["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(denied["result"]["isError"], true, "{denied}");
    assert!(
        text.contains("EACCES") || text.contains("permission denied"),
        "{denied}"
    );
    let refused = client.call(
        "write_file",
        json!({"path": served.join("x"), "content": "x"}),
    );
    assert!(refused.get("error").is_some(), "{refused}");
    std::thread::sleep(Duration::from_millis(500));

    // Room again: the same exec writes again, and writes down what it lost.
    std::fs::remove_file(fs.mnt.join("ballast")).expect("free the space");
    std::thread::sleep(Duration::from_secs(2));
    let after = client.call("list_directory", json!({"path": served}));
    assert!(after.to_string().contains("notes.txt"), "{after}");
    let out = client.finish();
    assert_eq!(
        out.status.code(),
        Some(0),
        "the server's status: {}",
        describe(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let failed: u64 = stderr
        .split("write failed ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("exec's report names no failed writes: {stderr}"));
    assert!(failed > 0, "{stderr}");
    println!("exec's report: {stderr}");
    assert!(
        stderr.contains("all of them are recorded as lost events"),
        "{stderr}"
    );

    let lost = json_lines(&query(&state, &["events", "--json", "--kind", "lost"]));
    let recorded: u64 = lost
        .iter()
        .filter(|e| e["detail"]["reason"] == "store_write_failed")
        .map(|e| e["detail"]["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(recorded, failed, "{lost:?}");
    let calls = json_lines(&query(&state, &["calls", "--json", "--server", "fsfull"]));
    assert!(
        calls.iter().any(|c| c["tool"] == "list_directory"),
        "the call after the disk had room again is recorded: {calls:?}"
    );
    // The agent's metric counts them, from the lost events.
    #[expect(clippy::cast_precision_loss, reason = "a handful of failures")]
    wait_until(
        "mcp_guard_store_write_failures_total",
        Duration::from_secs(20),
        || metric(&agent, "mcp_guard_store_write_failures_total") == Some(failed as f64),
        || agent.log(),
    );
    drop(agent);
    drop(fs);
    let _ = std::fs::remove_dir_all(&dir);
}
