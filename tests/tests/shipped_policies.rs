//! The shipped policies not covered by `tests/tests/reference_servers.rs` run their real servers:
//! github (`@modelcontextprotocol/server-github`), postgres
//! (`@modelcontextprotocol/server-postgres` against a real PostgreSQL started from Debian's package)
//! and playwright (`@playwright/mcp` driving Debian's chromium), each under a copy of
//! `policies/NAME.toml` with only the test environment's install directories added (as
//! `reference_servers.rs` does) and the secret's file moved to the test's own. Each answers
//! initialize, tools/list and its calls, and the kernel denied none of its connections
//! (github's resolver also probes nscd's Unix socket, which no policy should open: glibc falls
//! back to DNS).

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
    guarded_calls(policy, name, dir, &[call], command)
}

/// [`guarded`] with several calls, made in order in one session.
fn guarded_calls(
    policy: &Path,
    name: &str,
    dir: &Path,
    calls: &[(&str, &str)],
    command: &[&str],
) -> (Value, Vec<Value>) {
    let state = dir.join("state");
    let output = Command::new(python())
        .arg(fixture("mcp_client.py"))
        .arg("--rpc-error-ok")
        .args(calls.iter().flat_map(|(tool, args)| ["--call", tool, args]))
        .arg("--")
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

/// Debian's chromium, which the shipped playwright policy tells users to install.
const CHROMIUM: &str = "/usr/bin/chromium";

/// @playwright/mcp as the playwright policy's header runs it, with Debian's chromium.
fn playwright_command(server: &Path) -> Vec<String> {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run `cargo xtask setup` (Debian package chromium)"
    );
    [
        "node",
        server.to_str().expect("UTF-8"),
        "--headless",
        "--no-sandbox",
        "--executable-path",
        CHROMIUM,
    ]
    .map(String::from)
    .to_vec()
}

/// Whether `event` is one the playwright policy refuses on purpose (its header lists them):
/// the system D-Bus and nscd sockets (the policy lists no Unix socket; Chromium and glibc go on
/// without them), Chromium's writes to its children's /`proc/PID/oom_score_adj` and `clear_refs`
/// (/proc is read-only), and Debian's launcher script listing the working directory (the
/// unquoted glob `.*\.dpkg` in /usr/bin/chromium), which the policy does not grant.
fn refused_on_purpose(event: &Value) -> bool {
    let path = event["path"].as_str().unwrap_or_default();
    let proc_write = path.strip_prefix("/proc/").is_some_and(|rest| {
        rest.split_once('/').is_some_and(|(pid, file)| {
            pid.bytes().all(|b| b.is_ascii_digit())
                && ["oom_score_adj", "clear_refs"].contains(&file)
        })
    });
    match event["kind"].as_str() {
        Some("connect") => ["/run/dbus/system_bus_socket", "/var/run/nscd/socket"].contains(&path),
        Some("open") => proc_write || path == ".",
        _ => false,
    }
}

#[test]
fn playwright_policy_runs_playwright_mcp_with_debian_chromium() {
    require_root();
    let dir = data_dir("playwright");
    let policy = test_policy("playwright", &dir, "unused");
    let server = npm_server("@playwright/mcp");
    let command = playwright_command(&server);
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    // A page of the test's own: the policy allows only public addresses, so a server on this
    // host is out of reach (the next test shows it); a data: URL needs no network.
    let page =
        r#"{"url": "data:text/html,<title>Guarded page</title><h1>Hello from the jail</h1>"}"#;
    let (answer, refused) = guarded_calls(
        &policy,
        "playwright",
        &dir,
        &[("browser_navigate", page), ("browser_snapshot", "{}")],
        &command,
    );
    assert_eq!(answer["server"]["name"], "Playwright", "{answer}");
    for t in ["browser_navigate", "browser_snapshot", "browser_click"] {
        assert!(tools(&answer).contains(&t), "{answer}");
    }
    let calls = answer["calls"].as_array().expect("calls");
    assert_eq!(calls.len(), 2, "{answer}");
    assert_eq!(calls[0]["is_error"], false, "{answer}");
    assert!(
        calls[0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("Page Title: Guarded page")),
        "{answer}"
    );
    assert_eq!(calls[1]["is_error"], false, "{answer}");
    let snapshot = calls[1]["text"].as_str().expect("snapshot text");
    assert!(
        snapshot.contains(r#"heading "Hello from the jail""#),
        "{snapshot}"
    );
    let unexpected: Vec<&Value> = refused.iter().filter(|e| !refused_on_purpose(e)).collect();
    assert!(unexpected.is_empty(), "{unexpected:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An HTTP server on this host's loopback, as a host-only service (an admin page, a metadata
/// endpoint) is: answers every request with `body` and counts the connections.
fn host_service(body: &'static str) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().expect("addr").port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, hits)
}

/// The attack: a prompt-injected page or instruction sends the browser to a service only this
/// host can reach (server-side request forgery). Without the jail the browser reads it; under the
/// shipped policy the connection is refused in the kernel, the service sees nothing and the
/// refusal is recorded.
#[test]
fn playwright_policy_keeps_the_browser_off_the_hosts_own_services() {
    require_root();
    let dir = data_dir("playwright-ssrf");
    let policy = test_policy("playwright", &dir, "unused");
    let server = npm_server("@playwright/mcp");
    let command = playwright_command(&server);
    let (port, hits) = host_service("<title>admin</title><h1>Host-only admin page</h1>");
    let navigate = format!(r#"{{"url": "http://127.0.0.1:{port}/"}}"#);
    let calls = [
        ("browser_navigate", navigate.as_str()),
        ("browser_snapshot", "{}"),
    ];

    // Without mcp-guard the browser reaches the host's service: the attack works.
    let direct = Command::new(python())
        .arg(fixture("mcp_client.py"))
        .arg("--rpc-error-ok")
        .args(calls.iter().flat_map(|(tool, args)| ["--call", tool, args]))
        .arg("--")
        .args(&command)
        .args([
            "--output-dir",
            dir.join("direct-output").to_str().expect("UTF-8"),
        ])
        // What the policy's [env] set does in the jail, here in the test's own dir.
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .current_dir(&dir)
        .output()
        .expect("run the MCP client");
    assert!(direct.status.success(), "{}", describe(&direct));
    let answer: Value = serde_json::from_slice(&direct.stdout).expect("client JSON");
    assert!(
        answer["call"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("Host-only admin page")),
        "the direct run did not reach the host's service: {answer}"
    );
    let reached = hits.load(std::sync::atomic::Ordering::SeqCst);
    assert!(reached > 0);

    // Under the shipped policy it does not.
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let (answer, refused) = guarded_calls(&policy, "playwright", &dir, &calls, &command);
    let text = answer["calls"].to_string();
    assert!(!text.contains("Host-only admin page"), "{answer}");
    assert!(text.contains("ERR_"), "no network error in: {answer}");
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        reached,
        "the host's service was reached through the jail"
    );
    assert!(
        refused.iter().any(|e| e["kind"] == "connect"
            && e["addr"] == "127.0.0.1"
            && e["port"] == port
            && e["verdict"] == "denied"),
        "no denied connect to 127.0.0.1:{port} among {refused:#?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
