//! A policy's secrets reach only the command it fixes, and leave nowhere unredacted. Written
//! the way the attackers do it: a caller who may use a policy runs a command of their own under
//! it to read the secret (standalone as root, and through the agent as an unprivileged user); a
//! server that got the secret echoes it on stderr (whole, and in two pieces half a second
//! apart), puts it in a child's argv and in a tool result, hoping mcp-guard writes it down.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use mcp_guard_tests::{
    agent::{Agent, NOBODY, PinDir, Public},
    describe, fixture, fresh_dir, mcp_guard, python, require_root, workspace_root,
};
use serde_json::Value;

fn data_dir(tag: &str) -> PathBuf {
    fresh_dir("trust-secrets", tag)
}

/// A fresh secret value: 32 random hex digits (no fixed part that would match by accident).
fn token() -> String {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .expect("read /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hex sha256 of `value`.
fn digest(value: &str) -> String {
    mcp_guard_supply::sha256_bytes(value.as_bytes())["sha256:".len()..].to_string()
}

/// Writes `value` to `dir/secrets/token` (root only, in no tree a policy here grants).
fn secret_file(dir: &Path, value: &str) -> PathBuf {
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).expect("mkdir secrets");
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let file = secrets.join("token");
    std::fs::write(&file, value).expect("write the secret");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    file
}

/// The policy's own command: it shows that it got `$TOKEN` by printing its digest, then leaks
/// it on stderr, whole and in two pieces half a second apart (longer than any idle flush).
const FIXED_SH: &str = r#"#!/bin/sh
printf %s "$TOKEN" | sha256sum | cut -d' ' -f1
printf 'whole %s\n' "$TOKEN" >&2
printf 'split %s' "$(printf %s "$TOKEN" | cut -c1-9)" >&2
sleep 0.5
printf '%s end\n' "$(printf %s "$TOKEN" | cut -c10-)" >&2
"#;

/// Writes [`FIXED_SH`] into `dir` (readable and runnable by everyone); its path.
fn fixed_script(dir: &Path) -> PathBuf {
    let path = dir.join("fixed.sh");
    std::fs::write(&path, FIXED_SH).expect("write fixed.sh");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// A policy for plain programs (the system's, and `bin`'s) with `$TOKEN` from `secret`; `top`
/// goes before the tables (e.g. `command = [...]`).
fn shell_policy(name: &str, top: &str, bin: &Path, secret: &Path) -> String {
    let bin = bin.display();
    format!(
        "name = \"{name}\"\n{top}\n[filesystem]\nread = [\"/usr\", \"/bin\", \"/lib\", \"/lib64\", \
         \"/etc\", \"{bin}\"]\nexec = [\"/usr\", \"/bin\", \"/lib\", \"/lib64\", \"{bin}\"]\n\
         write = [\"/dev/null\"]\n[secrets]\nTOKEN = {{ file = \"{}\" }}\n",
        secret.display()
    )
}

/// `mcp-guard exec --passthrough --policy POLICY -- ARGS` (standalone, stdin closed).
fn exec(state: &Path, policy: &Path, args: &[&str]) -> Output {
    Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(state)
        .args(["exec", "--standalone", "--passthrough", "--policy"])
        .arg(policy)
        .arg("--")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run mcp-guard exec")
}

fn count(haystack: &[u8], needle: &str) -> usize {
    let n = needle.as_bytes();
    haystack.windows(n.len()).filter(|w| *w == n).count()
}

/// The attacker's commands: read the secret from the environment, on stdout and stderr.
const ATTACKS: &[&[&str]] = &[
    &["sh", "-c", "echo \"$TOKEN\"; echo \"$TOKEN\" >&2"],
    &["env"],
];

/// An attack's output holds no piece of the secret, and stderr says it was withheld.
fn assert_withheld(out: &Output, value: &str, attack: &[&str]) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        count(&out.stdout, value) == 0 && count(&out.stderr, value) == 0,
        "{attack:?} read the secret:\n{}",
        describe(out)
    );
    assert!(
        !stdout.lines().any(|l| l.starts_with("TOKEN=")),
        "{attack:?}: TOKEN is in the environment:\n{}",
        describe(out)
    );
    assert!(
        stderr.contains("secrets TOKEN withheld"),
        "{attack:?}: stderr does not say the secret was withheld:\n{}",
        describe(out)
    );
    assert!(out.status.success(), "{attack:?}:\n{}", describe(out));
}

/// The fixed command got the secret (its digest on stdout) and what it leaked on stderr is
/// redacted, the split value too, no piece of it shown.
fn assert_fixed_and_redacted(out: &Output, value: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}", describe(out));
    assert_eq!(stdout.trim(), digest(value), "{}", describe(out));
    assert!(
        !stderr.contains(&value[..9]) && !stderr.contains(&value[9..]),
        "the server's stderr carried the secret (or a piece of it):\n{}",
        describe(out)
    );
    assert!(
        stderr.contains("whole [REDACTED:secret TOKEN]")
            && stderr.contains("split [REDACTED:secret TOKEN] end"),
        "{}",
        describe(out)
    );
    assert!(!stderr.contains("withheld"), "{}", describe(out));
}

#[test]
fn another_command_under_the_policy_gets_no_secret_and_the_fixed_one_leaks_nothing() {
    require_root();
    let dir = data_dir("standalone");
    let value = token();
    let secret = secret_file(&dir, &value);
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir bin");
    let fixed_sh = fixed_script(&bin);
    let state = dir.join("state");

    // A policy with a secret and no fixed command: whoever may use it chooses the command.
    let open = dir.join("open.toml");
    std::fs::write(&open, shell_policy("open", "", &bin, &secret)).expect("write policy");
    for attack in ATTACKS {
        assert_withheld(&exec(&state, &open, attack), &value, attack);
    }

    // A policy that fixes its command: any other still gets nothing...
    let fixed = dir.join("fixed.toml");
    let command = format!("command = [\"/bin/sh\", \"{}\"]", fixed_sh.display());
    std::fs::write(&fixed, shell_policy("fixed", &command, &bin, &secret)).expect("policy");
    for attack in ATTACKS {
        assert_withheld(&exec(&state, &fixed, attack), &value, attack);
    }
    // ... the same program with other arguments neither...
    let out = exec(&state, &fixed, &["/bin/sh", "-c", "echo \"$TOKEN\""]);
    assert_withheld(&out, &value, &["/bin/sh", "-c"]);
    // ... while the fixed command, with no command after `--` or spelled another way (`sh`
    // found on the PATH), gets it, and its stderr is redacted.
    assert_fixed_and_redacted(&exec(&state, &fixed, &[]), &value);
    let spelled = fixed_sh.display().to_string();
    assert_fixed_and_redacted(&exec(&state, &fixed, &["sh", &spelled]), &value);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn through_the_agent_an_unprivileged_caller_gets_no_secret_from_another_command() {
    require_root();
    let dir = data_dir("agent");
    let value = token();
    let secret = secret_file(&dir, &value);
    let pins = PinDir::new("trust-secrets");
    let public = Public::new("trust-secrets");
    let guard = public.copy(&mcp_guard(), "mcp-guard");
    let fixed_sh = fixed_script(&public.0);
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).expect("policy dir");
    std::fs::write(
        policies.join("open.toml"),
        shell_policy("open", "", &public.0, &secret),
    )
    .expect("write policy");
    let command = format!("command = [\"/bin/sh\", \"{}\"]", fixed_sh.display());
    std::fs::write(
        policies.join("fixed.toml"),
        shell_policy("fixed", &command, &public.0, &secret),
    )
    .expect("write policy");
    let agent = Agent::start(&dir, &pins, "");
    let run = |policy: &str, args: &[&str]| {
        let mut argv = vec!["--passthrough", "--policy", policy, "--"];
        argv.extend_from_slice(args);
        agent
            .exec(&guard, NOBODY, &argv)
            .current_dir(&public.0)
            .stdin(Stdio::null())
            .output()
            .expect("run exec as nobody")
    };
    for policy in ["open", "fixed"] {
        for attack in ATTACKS {
            let out = run(policy, attack);
            assert!(
                out.status.success(),
                "{}\nagent:\n{}",
                describe(&out),
                agent.log()
            );
            assert_withheld(&out, &value, attack);
        }
    }
    assert_fixed_and_redacted(&run("fixed", &[]), &value);
    assert_eq!(count(agent.log().as_bytes(), &value), 0, "{}", agent.log());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The shipped default policy named `name`, able to run the leaky server with the venv's Python,
/// `read` added to what it may read.
fn leaky_policy_text(name: &str, read: &[&Path]) -> String {
    let py = workspace_root().join(".venv/bin/python");
    let venv = workspace_root().join(".venv").canonicalize().expect("venv");
    let python_home = py
        .canonicalize()
        .expect("venv python")
        .parent()
        .and_then(Path::parent)
        .expect("python prefix")
        .to_path_buf();
    let list = |paths: &[&Path]| -> String {
        paths
            .iter()
            .map(|p| format!("  \"{}\",\n", p.display()))
            .collect()
    };
    let fixtures = fixture("");
    let mut readable: Vec<&Path> = vec![&venv, &python_home, &fixtures];
    readable.extend_from_slice(read);
    std::fs::read_to_string(workspace_root().join("policies/default.toml"))
        .expect("default policy")
        .replacen("name = \"default\"", &format!("name = \"{name}\""), 1)
        .replacen(
            "\nread = [\n",
            &format!("\nread = [\n{}", list(&readable)),
            1,
        )
        .replacen(
            "\nexec = [\n",
            &format!("\nexec = [\n{}", list(&[&venv, &python_home])),
            1,
        )
}

#[test]
fn no_injected_value_reaches_the_store() {
    require_root();
    let dir = data_dir("store");
    let value = token();
    let secret = secret_file(&dir, &value);
    let state = dir.join("state");
    let py = workspace_root().join(".venv/bin/python");
    let server = fixture("leaky_server.py");

    // The administrator fixes the server by pinning it.
    let pinned = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&state)
        .args(["policy", "pin", "--no-deps", "--"])
        .arg(&py)
        .arg(&server)
        .output()
        .expect("run policy pin");
    assert!(pinned.status.success(), "{}", describe(&pinned));
    let pins = String::from_utf8(pinned.stdout).expect("UTF-8 pins");
    let policy_text = leaky_policy_text("leaky", &[]);
    let policy = dir.join("leaky.toml");
    std::fs::write(
        &policy,
        format!(
            "{policy_text}\n[secrets]\nLEAK_TOKEN = {{ file = \"{}\" }}\n\n{pins}",
            secret.display()
        ),
    )
    .expect("write policy");

    let out = Command::new(python())
        .arg(fixture("mcp_client.py"))
        .args(["--call", "leak", "{}", "--"])
        .arg(mcp_guard())
        .arg("--state-dir")
        .arg(&state)
        .args(["exec", "--standalone", "--name", "leaky", "--policy"])
        .arg(&policy)
        .arg("--")
        .arg(&py)
        .arg(&server)
        .output()
        .expect("run the MCP client");
    assert!(out.status.success(), "{}", describe(&out));
    let answer: Value = serde_json::from_slice(&out.stdout).expect("client JSON");
    let text = answer["call"]["text"].as_str().unwrap_or_default();

    let mut leaks = Vec::new();
    // The database, its write-ahead log and shared memory, byte for byte.
    let db = state.join("mcp-guard.db");
    for file in [
        db.clone(),
        state.join("mcp-guard.db-wal"),
        state.join("mcp-guard.db-shm"),
    ] {
        if let Ok(bytes) = std::fs::read(&file) {
            let n = count(&bytes, &value);
            if n > 0 {
                leaks.push(format!("{}: {n} copies", file.display()));
            }
        }
    }
    if count(&out.stderr, &value) > 0 || count(&out.stderr, &value[..8]) > 0 {
        leaks.push("the server's stderr".into());
    }
    if text.contains(&value) {
        leaks.push("the tool result".into());
    }
    assert!(
        leaks.is_empty(),
        "the secret leaked: {leaks:?}\n{}",
        describe(&out)
    );

    // What was recorded is there, redacted: the child's argv, the result, stderr.
    assert!(text.contains("[REDACTED:secret LEAK_TOKEN]"), "{answer}");
    // The server wrote its line in two pieces half a second apart: the first part ("stderr: ")
    // is written after a quiet spell, and mcp-guard's own log lines may come in between.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("[REDACTED:secret LEAK_TOKEN] was the token"),
        "{}",
        describe(&out)
    );
    let events = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&state)
        .args(["events", "--server", "leaky", "--kind", "exec", "--json"])
        .output()
        .expect("query events");
    assert!(events.status.success(), "{}", describe(&events));
    let echoed = String::from_utf8_lossy(&events.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .any(|e| {
            e["argv"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x.as_str() == Some("[REDACTED:secret LEAK_TOKEN]"))
            })
        });
    assert!(
        echoed,
        "no exec event with the redacted argv:\n{}",
        describe(&events)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn code_planted_in_the_callers_home_does_not_run_with_the_secret() {
    require_root();
    let dir = data_dir("home-code");
    let value = token();
    let secret = secret_file(&dir, &value);
    let app = dir.join("app");
    std::fs::create_dir_all(&app).expect("mkdir app");
    let write = |path: &Path, text: &str| {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    };
    // The policies' servers: they print the secret's digest (and the node one first tries an
    // optional dependency that is not installed, as many packages do).
    let py_server = app.join("server.py");
    write(
        &py_server,
        "import hashlib, os\nprint(hashlib.sha256(os.environ['TOKEN'].encode()).hexdigest())\n",
    );
    let js_server = app.join("server.js");
    write(
        &js_server,
        "try { require('optional-speedup'); } catch (e) {}\n\
         const t = process.env.TOKEN || '';\n\
         console.log(require('crypto').createHash('sha256').update(t).digest('hex'));\n",
    );
    // The caller's home: Python runs the `.pth` files of the user's site-packages at startup,
    // and Node looks for a module it cannot find in $HOME/.node_modules. The planted code prints
    // the secret reversed, which no redaction of the exact value catches.
    let home = dir.join("home");
    let evil_py =
        "import os, sys; sys.stderr.write('EVIL ' + os.environ.get('TOKEN', '')[::-1] + '\\n')\n";
    write(
        &home.join(".local/lib/python3.11/site-packages/zz-evil.pth"),
        evil_py,
    );
    write(
        &home.join(".node_modules/optional-speedup/index.js"),
        "process.stderr.write('EVIL ' + (process.env.TOKEN || '').split('').reverse().join('') + '\\n');\n",
    );
    let reversed: String = value.chars().rev().collect();
    for (name, program, server) in [
        ("py", "/usr/bin/python3", &py_server),
        ("js", "/usr/bin/node", &js_server),
    ] {
        let policy = dir.join(format!("{name}.toml"));
        let command = format!("command = [\"{program}\", \"{}\"]", server.display());
        let text = shell_policy(name, &command, &app, &secret).replacen(
            "\"/etc\", ",
            &format!("\"/etc\", \"{}\", ", home.display()),
            1,
        );
        std::fs::write(&policy, text).expect("write policy");
        let out = Command::new(mcp_guard())
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["exec", "--standalone", "--passthrough", "--policy"])
            .arg(&policy)
            .arg("--")
            .env("HOME", &home)
            .stdin(Stdio::null())
            .output()
            .expect("run mcp-guard exec");
        assert!(out.status.success(), "{name}: {}", describe(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            digest(&value),
            "{name}: {}",
            describe(&out)
        );
        assert!(
            count(&out.stderr, &reversed) == 0 && count(&out.stderr, "EVIL") == 0,
            "{name}: code from the caller's home ran with the secret:\n{}",
            describe(&out)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `n` random characters of `alphabet`.
fn random_of(alphabet: &str, n: usize) -> String {
    let chars: Vec<char> = alphabet.chars().collect();
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .expect("read /dev/urandom");
    bytes
        .iter()
        .map(|b| chars[usize::from(*b) % chars.len()])
        .collect()
}

/// Runs `leaky_server.py`'s `leak_found` standalone under the default policy named `name` (plus
/// `policy_extra`), the server having found `found` (its first line the token): exec's output
/// and the tool result's text.
fn leak_found(dir: &Path, name: &str, found: &str, policy_extra: &str) -> (Output, String) {
    let state = dir.join("state");
    let found_dir = dir.join("found");
    std::fs::create_dir_all(&found_dir).expect("mkdir found");
    let file = found_dir.join("creds.txt");
    std::fs::write(&file, found).expect("write the found credentials");
    mcp_guard_tests::give_to_server_user(&found_dir);
    let policy = dir.join(format!("{name}.toml"));
    let text = leaky_policy_text(name, &[&found_dir]) + policy_extra;
    std::fs::write(&policy, text).expect("write policy");
    let py = workspace_root().join(".venv/bin/python");

    let out = Command::new(python())
        .arg(fixture("mcp_client.py"))
        .args(["--call", "leak_found", "{}", "--"])
        .arg(mcp_guard())
        .arg("--state-dir")
        .arg(&state)
        .args(["exec", "--standalone", "--name", name, "--policy"])
        .arg(&policy)
        .arg("--")
        .arg(&py)
        .arg(fixture("leaky_server.py"))
        .arg(&file)
        .output()
        .expect("run the MCP client");
    assert!(out.status.success(), "{}", describe(&out));
    let answer: Value = serde_json::from_slice(&out.stdout).expect("client JSON");
    let text = answer["call"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(text.starts_with("found "), "the call did not run: {answer}");
    (out, text)
}

/// Where each of `secrets` (name, value) shows: the tool result `text`, exec's stderr, the
/// store's files under `state`.
fn leaks_of(out: &Output, text: &str, state: &Path, secrets: &[(&str, &str)]) -> Vec<String> {
    let mut leaks = Vec::new();
    for (name, secret) in secrets {
        if text.contains(secret) {
            leaks.push(format!("{name} in the tool result"));
        }
        if count(&out.stderr, secret) > 0 {
            leaks.push(format!("{name} on stderr"));
        }
        for file in ["mcp-guard.db", "mcp-guard.db-wal", "mcp-guard.db-shm"] {
            if std::fs::read(state.join(file)).is_ok_and(|b| count(&b, secret) > 0) {
                leaks.push(format!("{name} in {file}"));
            }
        }
    }
    leaks
}

/// Asserts the exec event of `server` (the child the server ran with the token in its argv)
/// is stored with `marker` in place of the token.
fn assert_exec_event_redacted(state: &Path, server: &str, marker: &str) {
    let events = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(state)
        .args(["events", "--server", server, "--kind", "exec", "--json"])
        .output()
        .expect("query events");
    assert!(events.status.success(), "{}", describe(&events));
    assert!(
        String::from_utf8_lossy(&events.stdout).contains(marker),
        "no exec event with the redacted argv:\n{}",
        describe(&events)
    );
}

/// A server leaks credentials it found on the machine (nothing mcp-guard injected): a GitLab
/// token in a tool result, on stderr and in a child's argv, and in its result an AWS secret key
/// assignment and a database URI with its password. The built-in secret rules redact each
/// everywhere: the client, the terminal and the store never see them.
#[test]
fn provider_tokens_a_server_found_are_redacted_from_result_stderr_and_store() {
    require_root();
    let dir = data_dir("found");
    let state = dir.join("state");
    let alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let gitlab = format!("glpat-{}", random_of(alnum, 20));
    let aws = random_of(&format!("{alnum}/+"), 40);
    let db_password = random_of(alnum, 18);
    let found = format!(
        "{gitlab}\naws_secret_access_key={aws}\nDATABASE_URL=postgres://app:{db_password}@db.internal:5432/app\n"
    );
    let (out, text) = leak_found(&dir, "found", &found, "");
    let secrets = [("gitlab", &*gitlab), ("aws", &*aws), ("db", &*db_password)];
    let leaks = leaks_of(&out, &text, &state, &secrets);
    assert!(
        leaks.is_empty(),
        "leaked: {leaks:?}\nresult: {text}\n{}",
        describe(&out)
    );
    for marker in [
        "found [REDACTED:gitlab-pat]",
        "aws_secret_access_key=[REDACTED:aws-secret-access-key]",
        "postgres://app:[REDACTED:postgres-uri]@db.internal",
    ] {
        assert!(text.contains(marker), "{marker} missing from: {text}");
    }
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stderr: [REDACTED:gitlab-pat] was found"),
        "{}",
        describe(&out)
    );
    assert_exec_event_redacted(&state, "found", "[REDACTED:gitlab-pat]");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A team's own rule (`[secrets] rules`, extending the built-in catalog) is compiled on its
/// first use, in each process that redacts with it: the exec's proxy, its stderr and its store
/// writer have never run it when the server's first and only token arrives. That token is
/// still redacted on first sight from the tool result, the terminal and the store (a lazily
/// compiled rule that missed its first match would leak it everywhere).
#[test]
fn a_team_rule_never_compiled_before_redacts_its_first_match_everywhere() {
    require_root();
    let dir = data_dir("team-rule");
    let state = dir.join("state");
    let rules = dir.join("team-rules.toml");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        &rules,
        "[extend]\nuseDefault = true\n\n[[rules]]\nid = \"acme-key\"\n\
         regex = '''acme_[0-9a-f]{32}'''\nkeywords = [\"acme_\"]\n",
    )
    .expect("write the team's rules");
    let token = format!("acme_{}", random_of("0123456789abcdef", 32));
    let extra = format!("\n[secrets]\nrules = \"{}\"\n", rules.display());
    let (out, text) = leak_found(&dir, "team-rule", &format!("{token}\n"), &extra);
    let leaks = leaks_of(&out, &text, &state, &[("acme", &token)]);
    assert!(
        leaks.is_empty(),
        "leaked: {leaks:?}\nresult: {text}\n{}",
        describe(&out)
    );
    assert!(
        text.contains("found [REDACTED:acme-key]"),
        "not redacted in the result: {text}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stderr: [REDACTED:acme-key] was found"),
        "{}",
        describe(&out)
    );
    assert_exec_event_redacted(&state, "team-rule", "[REDACTED:acme-key]");
    let _ = std::fs::remove_dir_all(&dir);
}
