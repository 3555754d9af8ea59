//! Every error the proxy answers for a message it refuses unparsed carries the message's id
//! when its bytes hold a readable one (the first top-level `"id"`), so the waiting side gets its
//! answer: through the real binary (`mcp-guard exec --policy FILE -- tricky_server.py noisy`),
//! with raw lines, since an SDK client cannot send malformed JSON. One test per path: a client
//! line with a duplicate key, with a syntax error, oversized with a nested `"id"` first, a batch
//! with a bad element; a server response with a duplicate key and a nested `"id"` first,
//! oversized likewise, and a server request with a duplicate key.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use mcp_guard_tests::{
    describe, fixture, mcp_guard, python, require_root, scratch_root, workspace_root,
};
use serde_json::{Value, json};

fn canon(p: &Path) -> PathBuf {
    p.canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}: run `cargo xtask setup`", p.display()))
}

/// The shipped default policy, able to run the fixture with the test environment's Python,
/// with a 4 MiB message limit.
fn policy(dir: &Path) -> PathBuf {
    let venv = workspace_root().join(".venv");
    let prefix = canon(&venv.join("bin/python"))
        .parent()
        .and_then(Path::parent)
        .expect("python prefix")
        .to_path_buf();
    let dirs = [canon(&venv), prefix, canon(&fixture(""))];
    let list: String = dirs
        .iter()
        .map(|d| format!("  \"{}\",\n", d.display()))
        .collect();
    let text = std::fs::read_to_string(workspace_root().join("policies/default.toml"))
        .expect("default policy")
        .replacen("name = \"default\"", "name = \"errors\"", 1)
        .replacen("\nread = [\n", &format!("\nread = [\n{list}"), 1)
        .replacen("\nexec = [\n", &format!("\nexec = [\n{list}"), 1);
    // The oversized cases send 5 MiB: below the 64 MiB default, above this limit.
    let text = format!("{text}\n[mcp]\nmax_message_size = \"4M\"\n");
    let path = dir.join("errors.toml");
    std::fs::write(&path, text).expect("policy");
    let check = Command::new(mcp_guard())
        .args(["policy", "check"])
        .arg(&path)
        .output()
        .expect("check");
    assert!(check.status.success(), "{}", describe(&check));
    path
}

struct Session {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Session {
    fn start(tag: &str) -> Self {
        require_root();
        let dir = scratch_root().join(format!("mcp-errors-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let mut child = Command::new(mcp_guard())
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["exec", "--policy"])
            .arg(policy(&dir))
            .arg("--")
            .arg(canon(&python()))
            .arg(fixture("tricky_server.py"))
            .arg("noisy")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mcp-guard exec");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut s = Self { child, lines };
        s.send(r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#);
        let init = s.answer(|v| v["id"] == 0);
        assert!(init["result"].is_object(), "{init}");
        s.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        s
    }

    fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(line.as_bytes()).expect("write");
        stdin.write_all(b"\n").expect("write");
        stdin.flush().expect("flush");
    }

    /// The first line that `pick` accepts within 20 s; panics (the client would wait forever).
    fn answer(&mut self, pick: impl Fn(&Value) -> bool) -> Value {
        loop {
            let l = self
                .lines
                .recv_timeout(Duration::from_secs(20))
                .expect("no answer within 20 s: the client would wait forever");
            let v: Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"));
            if pick(&v) {
                return v;
            }
        }
    }

    fn call(id: u64, tool: &str) -> String {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": {"message": "m"}}})
        .to_string()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// An error answer to `id` (not a null id).
#[track_caller]
fn error_for(v: &Value, id: &Value) {
    assert_eq!(&v["id"], id, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("mcp-guard")),
        "{v}"
    );
}

#[test]
fn a_client_line_with_a_duplicate_key_is_answered_with_its_id() {
    let mut s = Session::start("dupkey");
    s.send(r#"{"jsonrpc":"2.0","id":11,"method":"tools/list","method":"tools/call"}"#);
    let v = s.answer(|v| v.get("error").is_some());
    error_for(&v, &json!(11));
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("duplicate key"),
        "{v}"
    );
}

#[test]
fn a_client_line_with_a_syntax_error_is_answered_with_its_id() {
    let mut s = Session::start("syntax");
    s.send(r#"{"jsonrpc":"2.0","id":"req-12","method":"tools/list",}"#);
    error_for(&s.answer(|v| v.get("error").is_some()), &json!("req-12"));
}

#[test]
fn an_oversized_client_line_is_answered_with_its_own_id_not_a_nested_one() {
    let mut s = Session::start("oversized");
    let big = "x".repeat(5 << 20);
    s.send(&format!(
        r#"{{"jsonrpc":"2.0","method":"tools/call","params":{{"name":"echo","arguments":{{"id":99,"message":"{big}"}}}},"id":13}}"#
    ));
    error_for(&s.answer(|v| v.get("error").is_some()), &json!(13));
}

#[test]
fn a_batch_with_a_bad_element_is_answered_for_each_id() {
    let mut s = Session::start("batch");
    s.send(r#"[{"jsonrpc":"2.0","id":14,"method":"tools/list"},{"jsonrpc":"2.0","id":15,"method":"ping","params":{"a":1,"A":2}}]"#);
    let v = s.answer(serde_json::Value::is_array);
    let ids: Vec<&Value> = v
        .as_array()
        .expect("batch")
        .iter()
        .map(|e| &e["id"])
        .collect();
    assert_eq!(ids, vec![&json!(14), &json!(15)], "{v}");
}

#[test]
fn a_malformed_server_answer_fails_its_call_not_a_nested_id() {
    let mut s = Session::start("nested");
    s.send(&Session::call(42, "nested"));
    error_for(&s.answer(|v| v["id"] == 42), &json!(42));
    // The session goes on.
    s.send(&Session::call(43, "echo"));
    assert_eq!(
        s.answer(|v| v["id"] == 43)["result"]["content"][0]["text"],
        "m"
    );
}

#[test]
fn an_oversized_server_answer_fails_its_call_not_a_nested_id() {
    let mut s = Session::start("hugenested");
    s.send(&Session::call(44, "hugenested"));
    error_for(&s.answer(|v| v["id"] == 44), &json!(44));
}

#[test]
fn a_malformed_server_request_is_answered_with_its_id() {
    let mut s = Session::start("ask");
    s.send(&Session::call(45, "ask"));
    let v = s.answer(|v| v["id"] == 45);
    let text = v["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let back: Value = serde_json::from_str(text.trim_start_matches("answered: "))
        .unwrap_or_else(|e| panic!("{e}: {v}"));
    error_for(&back, &json!("srv-1"));
}
