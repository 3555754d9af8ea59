//! The shipped policies not covered by tests/tests/reference_servers.rs run their real servers:
//! github (`@modelcontextprotocol/server-github`) and postgres
//! (`@modelcontextprotocol/server-postgres` against a real PostgreSQL started from Debian's package),
//! each under a copy of `policies/NAME.toml` with only the test environment's install
//! directories added (as reference_servers.rs does) and the secret's file moved to the test's
//! own. Each answers initialize, tools/list and one call, and the kernel denied none of its
//! connections (github's resolver also probes nscd's Unix socket, which no policy should open:
//! glibc falls back to DNS).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
};

use mcp_guard_tests::{
    describe, fixture, fresh_dir, mcp_guard, npm_server, python, require_root, workspace_root,
};
use serde_json::Value;

fn data_dir(tag: &str) -> PathBuf {
    fresh_dir("shipped", tag)
}

/// A copy of `policies/NAME.toml` in `dir`: the test environment's installs added to `read` and
/// `exec`, the `[secrets]` file replaced by one in `dir` holding `secret`.
fn test_policy(name: &str, dir: &Path, secret: &str) -> PathBuf {
    let shipped = workspace_root()
        .join("policies")
        .join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&shipped).expect("read shipped policy");
    let installs: String = ["tests/node_modules", ".venv"]
        .iter()
        .map(|p| {
            let p = workspace_root()
                .join(p)
                .canonicalize()
                .expect("run `cargo xtask setup`");
            format!("  \"{}\",\n", p.display())
        })
        .collect();
    let secret_file = dir.join("secret");
    std::fs::write(&secret_file, secret).expect("write secret");
    let shipped_secret = format!("{{ file = \"/etc/mcp-guard/secrets/{name}\" }}");
    let mut copy = String::new();
    let mut sections = 0;
    for line in text.lines() {
        copy.push_str(&line.replace(
            &shipped_secret,
            &format!("{{ file = \"{}\" }}", secret_file.display()),
        ));
        copy.push('\n');
        if line == "read = [" || line == "exec = [" {
            copy.push_str(
                "  # Added by tests/tests/shipped_policies.rs: the test environment's installs.\n",
            );
            copy.push_str(&installs);
            sections += 1;
        }
    }
    assert_eq!(sections, 2, "{name}.toml has no read/exec list to extend");
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, copy).expect("write test policy");
    let check = Command::new(mcp_guard())
        .args(["policy", "check"])
        .arg(&path)
        .output()
        .expect("run policy check");
    assert!(check.status.success(), "{}", describe(&check));
    path
}

/// The SDK client against the server under the policy: its answer, and the session's events
/// that were not allowed.
fn guarded(
    policy: &Path,
    name: &str,
    dir: &Path,
    call: (&str, &str),
    command: &[&str],
) -> (Value, Vec<Value>) {
    let state = dir.join("state");
    let output = Command::new(python())
        .arg(fixture("mcp_client.py"))
        .args(["--rpc-error-ok", "--call", call.0, call.1, "--"])
        .arg(mcp_guard())
        .arg("--state-dir")
        .arg(&state)
        .args(["exec", "--policy"])
        .arg(policy)
        .args(["--name", name, "--"])
        .args(command)
        .output()
        .expect("run the MCP client");
    assert!(output.status.success(), "{name}:\n{}", describe(&output));
    let answer: Value = serde_json::from_slice(&output.stdout).expect("client JSON");
    let events = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&state)
        .args(["events", "--server", name, "--json"])
        .output()
        .expect("run events");
    assert!(events.status.success(), "{}", describe(&events));
    let refused = String::from_utf8_lossy(&events.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("event JSON"))
        .filter(|e| e["verdict"] != "allowed")
        .collect();
    (answer, refused)
}

fn tools(answer: &Value) -> Vec<&str> {
    answer["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

#[test]
fn github_policy_runs_the_reference_github_server() {
    require_root();
    let dir = data_dir("github");
    let policy = test_policy("github", &dir, "ghp_not_a_real_token");
    let server = npm_server("@modelcontextprotocol/server-github");
    // No credentials needed to read a public repository's file; this host has no route to
    // GitHub, so the call ends in a network error, not in a denial.
    let (answer, refused) = guarded(
        &policy,
        "github",
        &dir,
        (
            "get_file_contents",
            r#"{"owner": "modelcontextprotocol", "repo": "servers", "path": "README.md"}"#,
        ),
        &["node", server.to_str().expect("UTF-8")],
    );
    assert_eq!(answer["server"]["name"], "github-mcp-server", "{answer}");
    for t in ["get_file_contents", "search_repositories", "create_issue"] {
        assert!(tools(&answer).contains(&t), "{answer}");
    }
    let text = answer["call"]["text"].as_str().expect("call text");
    assert!(
        text.contains("fetch failed") || text.contains("README"),
        "neither the file nor a network error: {answer}"
    );
    let denied_inet: Vec<&Value> = refused.iter().filter(|e| e["addr"].is_string()).collect();
    assert!(denied_inet.is_empty(), "{denied_inet:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A PostgreSQL cluster of its own (Debian's postgresql-15), run as the `postgres` user on the
/// port the shipped policy allows, killed on drop.
struct Postgres {
    child: Child,
    dir: PathBuf,
}

impl Postgres {
    fn start(dir: &Path) -> Postgres {
        let bin = Path::new("/usr/lib/postgresql/15/bin");
        assert!(
            bin.join("postgres").exists(),
            "PostgreSQL 15 is missing: run `cargo xtask setup` (Debian package postgresql)"
        );
        let data = dir.join("pgdata");
        let sock = dir.join("pgsock");
        std::fs::create_dir_all(&sock).expect("socket dir");
        let own = Command::new("chown")
            .arg("-R")
            .arg("postgres:postgres")
            .arg(dir)
            .status()
            .expect("chown");
        assert!(own.success());
        let as_postgres = |program: &Path| {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        };
        let init = as_postgres(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data)
            .output()
            .expect("initdb");
        assert!(init.status.success(), "{}", describe(&init));
        let child = as_postgres(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", "5432", "-c", "listen_addresses=127.0.0.1", "-k"])
            .arg(&sock)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start postgres");
        let pg = Postgres {
            child,
            dir: dir.to_path_buf(),
        };
        for _ in 0..100 {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", "5432"])
                .output()
                .expect("pg_isready");
            if ready.status.success() {
                return pg;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("PostgreSQL did not start on 127.0.0.1:5432 (is the port taken?)");
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn postgres_policy_runs_the_reference_postgres_server_against_a_real_database() {
    require_root();
    let dir = data_dir("postgres");
    let pg = Postgres::start(&dir.join("cluster"));
    let policy = test_policy("postgres", &dir, "unused-with-trust-auth");
    let server = npm_server("@modelcontextprotocol/server-postgres");
    let (answer, refused) = guarded(
        &policy,
        "postgres",
        &dir,
        ("query", r#"{"sql": "SELECT 6 * 7 AS answer"}"#),
        &[
            "node",
            server.to_str().expect("UTF-8"),
            "postgresql://postgres@127.0.0.1:5432/postgres",
        ],
    );
    assert_eq!(
        answer["server"]["name"], "example-servers/postgres",
        "{answer}"
    );
    assert_eq!(tools(&answer), ["query"]);
    assert_eq!(answer["call"]["is_error"], false, "{answer}");
    let text = answer["call"]["text"].as_str().expect("text");
    assert!(text.contains("\"answer\": 42"), "{text}");
    assert!(refused.is_empty(), "{refused:#?}");
    drop(pg);
    let _ = std::fs::remove_dir_all(&dir);
}
