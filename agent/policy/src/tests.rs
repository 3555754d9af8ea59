//! The checker end to end: policy text in, the model or located problems out.

use std::path::{Path, PathBuf};

use super::*;

const IMAGE_D: &str = "sha256:abababababababababababababababababababababababababababababababab";

/// The problems of an invalid policy as `line:col: key: message` strings.
fn problems(text: &str) -> Vec<String> {
    let e = parse(text, Some(Path::new("t.toml"))).expect_err("policy should be invalid");
    assert_eq!(e.file, "t.toml");
    e.problems
        .iter()
        .map(|p| format!("{}:{}: {}: {}", p.line, p.col, p.key, p.message))
        .collect()
}

/// Asserts `text` has exactly one problem, at `line` and `key`, whose message contains `msg`.
#[track_caller]
fn one_problem(text: &str, line: usize, key: &str, msg: &str) {
    let e = parse(text, Some(Path::new("t.toml"))).expect_err("policy should be invalid");
    assert_eq!(e.problems.len(), 1, "expected one problem, got:\n{e}");
    let p = &e.problems[0];
    assert_eq!((p.line, p.key.as_str()), (line, key), "wrong place:\n{e}");
    assert!(p.message.contains(msg), "{:?} lacks {msg:?}", p.message);
}

fn ok(text: &str) -> Policy {
    parse(text, None).unwrap_or_else(|e| panic!("policy should be valid:\n{e}"))
}

#[test]
fn container_isolation_pins_a_digest() {
    let p = ok(&format!(
        "name = \"x\"\n[isolation]\nbackend = \"container\"\nimage = \"localhost/srv:1@{IMAGE_D}\"\nengine = \"unix:///run/podman/podman.sock\"\n"
    ));
    assert_eq!(p.isolation.backend, Backend::Container);
    let image = p.isolation.image.expect("image");
    assert_eq!(image.name.as_deref(), Some("localhost/srv:1"));
    assert_eq!(image.digest.as_deref(), Some(IMAGE_D));
    assert_eq!(ok("name = \"x\"\n").isolation, Isolation::default());
}

#[test]
fn container_isolation_errors_name_line_and_key() {
    one_problem(
        "name = \"x\"\n[isolation]\nbackend = \"container\"\nimage = \"srv:latest\"\n",
        4,
        "isolation.image",
        "names a tag, not a digest",
    );
    let tagged = ok(
        "name = \"x\"\n[isolation]\nbackend = \"container\"\nimage = \"srv:latest\"\nallow_tag = true\n",
    );
    assert_eq!(tagged.isolation.image.and_then(|i| i.digest), None);
    one_problem(
        "name = \"x\"\n[isolation]\nbackend = \"container\"\nimage = \"srv@sha256:12\"\n",
        4,
        "isolation.image",
        "64 lowercase hex",
    );
    one_problem(
        "name = \"x\"\n[isolation]\nbackend = \"vm\"\n",
        3,
        "isolation.backend",
        "not one of jail, container",
    );
    one_problem(
        "name = \"x\"\n[isolation]\nbackend = \"container\"\n",
        2,
        "isolation.image",
        "missing",
    );
    one_problem(
        &format!("name = \"x\"\n[isolation]\nimage = \"a@{IMAGE_D}\"\nengine = \"unix:///s\"\n"),
        3,
        "isolation.image",
        "only used with backend",
    );
    one_problem(
        &format!(
            "name = \"x\"\n[isolation]\nbackend = \"container\"\nimage = \"a@{IMAGE_D}\"\nengine = \"tcp://1.2.3.4:2375\"\n"
        ),
        5,
        "isolation.engine",
        "unix:///PATH",
    );
}

/// A fresh empty directory for one test.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mcp-guard-policy-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

#[test]
fn minimal_policy_has_safe_defaults() {
    let p = ok("name = \"x\"\n");
    assert_eq!(p.name, "x");
    assert!(p.network.allow.is_empty());
    assert!(p.filesystem.read.is_empty() && p.filesystem.write.is_empty());
    assert_eq!(p.tools.allow, None);
    assert_eq!(p.detect.on_sensitive, OnSensitive::Alert);
    assert!(!p.enforcement.observe && !p.enforcement.allow_degraded);
}

#[test]
fn full_policy_parses_into_the_model() {
    let p = parse(
        r#"name = "github"
[filesystem]
read = ["/usr", "~/.npm"]
write = ["/tmp"]
exec = ["/usr/bin/node"]
[network]
allow = ["API.GitHub.com.:443", "10.0.0.0/8:443", "127.0.0.1:8000-8999", "[::1]:80", "[fd00::/8]:*"]
[syscalls]
deny = ["personality"]
[limits]
memory = "512M"
pids = 128
cpu = 2
[tools]
allow = ["get_issue"]
deny = ["delete_repository"]
[secrets]
GITHUB_TOKEN = { file = "/etc/mcp-guard/secrets/github" }
[secrets.OTHER]
credential = "other"
[detect]
sensitive = ["~/.ssh/**", "**/.env"]
on_sensitive = "deny-call"
[enforcement]
observe = true
allow_degraded = true
"#,
        Some(Path::new("/p/github.toml")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.source.as_deref(), Some(Path::new("/p/github.toml")));
    assert_eq!(p.filesystem.read, ["/usr", "~/.npm"]);
    assert_eq!(p.filesystem.exec, ["/usr/bin/node"]);
    let net = |s: &str| NetTarget::Net(s.parse().expect("net"));
    assert_eq!(
        p.network.allow,
        [
            NetAllow {
                target: NetTarget::Host("api.github.com".into()),
                port_lo: 443,
                port_hi: 443
            },
            NetAllow {
                target: net("10.0.0.0/8"),
                port_lo: 443,
                port_hi: 443
            },
            NetAllow {
                target: net("127.0.0.1/32"),
                port_lo: 8000,
                port_hi: 8999
            },
            NetAllow {
                target: net("::1/128"),
                port_lo: 80,
                port_hi: 80
            },
            NetAllow {
                target: net("fd00::/8"),
                port_lo: 1,
                port_hi: 65535
            },
        ]
    );
    assert_eq!(p.syscalls.deny, ["personality"]);
    assert_eq!(p.limits.memory, Some(512 << 20));
    assert_eq!(p.limits.pids, Some(128));
    assert_eq!(p.limits.cpu, Some(2.0));
    assert_eq!(p.tools.allow, Some(vec!["get_issue".to_string()]));
    assert_eq!(p.tools.deny, ["delete_repository"]);
    assert_eq!(
        p.secrets["GITHUB_TOKEN"],
        Secret::File("/etc/mcp-guard/secrets/github".into())
    );
    assert_eq!(p.secrets["OTHER"], Secret::Credential("other".into()));
    assert_eq!(p.detect.on_sensitive, OnSensitive::DenyCall);
    assert!(p.enforcement.observe && p.enforcement.allow_degraded);
}

#[test]
fn every_problem_is_reported_in_file_order() {
    let all =
        problems("name = \"a b\"\nbogus = 1\n[network]\nallow = [\"x.com\"]\n[limits]\npids = 0\n");
    assert_eq!(all.len(), 4, "{all:#?}");
    assert!(all[0].starts_with("1:8: name: "), "{all:#?}");
    assert!(all[1].starts_with("2:1: bogus: unknown key"), "{all:#?}");
    assert!(all[2].starts_with("4:10: network.allow[0]: "), "{all:#?}");
    assert!(all[3].starts_with("6:8: limits.pids: "), "{all:#?}");
}

#[test]
fn display_is_file_line_col_key_message() {
    let e = parse(
        "name = \"g\"\n[network]\nallow = [\n  \"a.com:1\",\n  \"b.com:2\",\n  \"api.github.com\",\n]\n",
        Some(Path::new("github.toml")),
    )
    .expect_err("invalid");
    assert_eq!(
        e.to_string(),
        "github.toml:6:3: network.allow[2]: \"api.github.com\" has no port (write \
         api.github.com:PORT, e.g. api.github.com:443)"
    );
}

#[test]
fn invalid_toml_names_its_line() {
    let all = problems("name = \"x\"\n[limits]\nmemory = \n");
    assert_eq!(all.len(), 1);
    assert!(all[0].starts_with("3:"), "{all:?}");
    assert!(all[0].contains("invalid TOML"), "{all:?}");
    let dup = problems("name = \"x\"\nname = \"y\"\n");
    assert!(dup[0].starts_with("2:"), "{dup:?}");
}

#[test]
fn unknown_keys_are_errors_at_every_level() {
    one_problem("name = \"x\"\nnetwrok = 1\n", 2, "netwrok", "unknown key");
    for section in [
        "filesystem",
        "network",
        "syscalls",
        "limits",
        "tools",
        "detect",
        "enforcement",
    ] {
        one_problem(
            &format!("name = \"x\"\n[{section}]\ntypo = 1\n"),
            3,
            &format!("{section}.typo"),
            "unknown key",
        );
    }
    one_problem(
        "name = \"x\"\n[secrets]\nT = { file = \"/s\", mode = 1 }\n",
        3,
        "secrets.T.mode",
        "unknown key",
    );
    // Dotted keys are the same keys.
    one_problem(
        "name = \"x\"\nlimits.mem = 1\n",
        2,
        "limits.mem",
        "unknown key",
    );
}

#[test]
fn sections_must_be_tables() {
    one_problem(
        "name = \"x\"\nnetwork = 1\n",
        2,
        "network",
        "expected a table",
    );
    one_problem(
        "name = \"x\"\nsecrets = []\n",
        2,
        "secrets",
        "expected a table",
    );
}

#[test]
fn name_is_required_and_safe() {
    one_problem("[limits]\npids = 1\n", 1, "name", "missing");
    one_problem("name = \"../etc\"\n", 1, "name", "not a server name");
    one_problem("name = \"\"\n", 1, "name", "not a server name");
    one_problem("name = \"-x\"\n", 1, "name", "not a server name");
    one_problem(
        &format!("name = \"{}\"\n", "a".repeat(65)),
        1,
        "name",
        "not a server name",
    );
    one_problem(
        "name = 3\n",
        1,
        "name",
        "expected a string, found an integer",
    );
    assert_eq!(ok("name = \"my-server_2.0\"\n").name, "my-server_2.0");
}

#[test]
fn filesystem_entries_are_absolute_or_home_relative_paths() {
    let bad = [
        ("relative/x", "must be absolute"),
        ("", "empty"),
        ("/a/../b", ".."),
        ("~/..", ".."),
        ("~bob/x", "~user is not supported"),
        ("/home/*/x", "glob"),
    ];
    for (entry, msg) in bad {
        for key in ["read", "write", "exec"] {
            one_problem(
                &format!("name = \"x\"\n[filesystem]\n{key} = [\"/ok\",\n  \"{entry}\"]\n"),
                4,
                &format!("filesystem.{key}[1]"),
                msg,
            );
        }
    }
    one_problem(
        "name = \"x\"\n[filesystem]\nread = \"/usr\"\n",
        3,
        "filesystem.read",
        "expected an array of strings",
    );
    one_problem(
        "name = \"x\"\n[filesystem]\nread = [1]\n",
        3,
        "filesystem.read[0]",
        "found an integer",
    );
    let p = ok("name = \"x\"\n[filesystem]\nread = [\"~\", \"~/x\", \"/a/.b\"]\n");
    assert_eq!(p.filesystem.read, ["~", "~/x", "/a/.b"]);
}

#[test]
fn a_question_mark_marks_an_entry_optional_and_is_checked_like_the_path() {
    let p = ok(
        "name = \"x\"\n[filesystem]\nread = [\"/usr\", \"?/etc/pki\"]\n\
                exec = [\"?~/.volta\"]\nwrite = [\"/tmp\"]\n",
    );
    // Stored without the marker: the launcher and the kernel see plain paths.
    assert_eq!(p.filesystem.read, ["/usr", "/etc/pki"]);
    assert_eq!(p.filesystem.exec, ["~/.volta"]);
    assert_eq!(
        p.filesystem.optional.iter().collect::<Vec<_>>(),
        ["/etc/pki", "~/.volta"]
    );
    let bad = [
        ("?", "empty"),
        ("??/x", "must be absolute"),
        ("?etc/pki", "must be absolute"),
        ("?/a/../b", ".."),
        ("?/lib*", "glob"),
        ("/etc/?pki", "glob"),
    ];
    for (entry, msg) in bad {
        for key in ["read", "write", "exec"] {
            one_problem(
                &format!("name = \"x\"\n[filesystem]\n{key} = [\"/ok\",\n  \"{entry}\"]\n"),
                4,
                &format!("filesystem.{key}[1]"),
                msg,
            );
        }
    }
}

#[test]
fn network_entries_need_a_valid_host_and_port() {
    let bad = [
        ("api.github.com", "has no port"),
        ("api.github.com:", "has no port"),
        (":443", "has no host"),
        ("a.com:0", "not a port"),
        ("a.com:65536", "not a port"),
        ("a.com:https", "not a port"),
        ("a.com:+443", "not a port"),
        ("a.com:9-1", "reversed"),
        ("a.com:1-", "not a port"),
        ("10.0.0.1/8:443", "did you mean 10.0.0.0/8"),
        ("10.0.0.0/33:443", "not an IPv4 network"),
        ("999.1.1.1:443", "neither"),
        ("1.2.3:443", "neither"),
        ("bad_name.com:443", "neither"),
        ("-a.com:443", "neither"),
        ("a..com:443", "neither"),
        ("*.github.com:443", "wildcard"),
        ("::1:443", "brackets"),
        ("[::1]", "has no port"),
        ("[::1:443", "missing ']'"),
        ("[1.2.3.4]:443", "not an IPv6 address"),
        ("[fd00::1/8]:443", "did you mean fd00::/8"),
        ("[10.0.0.0/8]:443", "not an IPv6 network"),
    ];
    for (entry, msg) in bad {
        one_problem(
            &format!("name = \"x\"\n[network]\nallow = [\n\"a.com:1\", \"{entry}\"]\n"),
            4,
            "network.allow[1]",
            msg,
        );
    }
    let long_label = format!("{}.com:443", "a".repeat(64));
    one_problem(
        &format!("name = \"x\"\n[network]\nallow = [\"{long_label}\"]\n"),
        3,
        "network.allow[0]",
        "neither",
    );
    let p = ok("name = \"x\"\n[network]\nallow = [\"localhost:80\", \"1.2.3.4:*\"]\n");
    assert_eq!(
        p.network.allow[0].target,
        NetTarget::Host("localhost".into())
    );
    assert_eq!(
        (p.network.allow[1].port_lo, p.network.allow[1].port_hi),
        (1, 65535)
    );
}

#[test]
fn unix_sockets_are_listed_exactly_and_errors_name_the_entry() {
    let p = ok("name = \"x\"\n[network]\nunix = [\"/run/postgresql/.s.PGSQL.5432\", \"@bus\"]\n");
    assert_eq!(p.network.unix, ["/run/postgresql/.s.PGSQL.5432", "@bus"]);
    assert!(
        ok("name = \"x\"\n").network.unix.is_empty(),
        "default: none"
    );
    one_problem(
        "name = \"x\"\n[network]\nunix = [\n\"/run/a.sock\", \"/run/../b.sock\"]\n",
        4,
        "network.unix[1]",
        "without '.', '..' or '//'",
    );
    one_problem(
        "name = \"x\"\n[network]\nunix = [\"relative.sock\"]\n",
        3,
        "network.unix[0]",
        "absolute socket path or @name",
    );
    one_problem(
        "name = \"x\"\n[network]\nunix = \"/run/a.sock\"\n",
        3,
        "network.unix",
        "",
    );
}

#[test]
fn syscall_names_must_exist() {
    one_problem(
        "name = \"x\"\n[syscalls]\ndeny = [\"ptrace\", \"nosuchcall\"]\n",
        3,
        "syscalls.deny[1]",
        "unknown syscall \"nosuchcall\"",
    );
    assert!(syscall_number("read").is_some());
    assert_eq!(
        syscall_number("personality"),
        Some(i64::from(
            i32::try_from(libc::SYS_personality).expect("a syscall number")
        ))
    );
    assert_eq!(syscall_number("nosuchcall"), None);
}

#[test]
fn limits_are_checked() {
    for (text, bytes) in [
        ("\"512M\"", 512u64 << 20),
        ("\"1G\"", 1 << 30),
        ("\"2048K\"", 2048 << 10),
        ("\"2MiB\"", 2 << 20),
        ("\"3gb\"", 3 << 30),
        ("\"1048576\"", 1 << 20),
        ("1048576", 1 << 20),
    ] {
        let p = ok(&format!("name = \"x\"\n[limits]\nmemory = {text}\n"));
        assert_eq!(p.limits.memory, Some(bytes), "{text}");
    }
    for (text, msg) in [
        ("\"512X\"", "not a size"),
        ("\"1.5G\"", "not a size"),
        ("\"M\"", "not a size"),
        ("\"-1M\"", "not a size"),
        ("\"99999999999T\"", "too large"),
        ("\"100K\"", "too little"),
        ("0", "too little"),
        ("-5", "must be positive"),
        ("true", "found a boolean"),
    ] {
        one_problem(
            &format!("name = \"x\"\n[limits]\nmemory = {text}\n"),
            3,
            "limits.memory",
            msg,
        );
    }
    for (text, msg) in [
        ("0", "out of range"),
        ("-1", "out of range"),
        ("5000000", "out of range"),
        ("1.5", "whole number"),
    ] {
        one_problem(
            &format!("name = \"x\"\n[limits]\npids = {text}\n"),
            3,
            "limits.pids",
            msg,
        );
    }
    for (text, msg) in [
        ("0", "out of range"),
        ("0.0", "out of range"),
        ("-1.0", "out of range"),
        ("0.001", "out of range"),
        ("2000", "out of range"),
        ("nan", "out of range"),
        ("\"1\"", "expected a number"),
    ] {
        one_problem(
            &format!("name = \"x\"\n[limits]\ncpu = {text}\n"),
            3,
            "limits.cpu",
            msg,
        );
    }
    let p = ok("name = \"x\"\n[limits]\ncpu = 0.5\npids = 1\n");
    assert_eq!((p.limits.cpu, p.limits.pids), (Some(0.5), Some(1)));
}

#[test]
fn tools_names_are_nonempty_and_not_both_allowed_and_denied() {
    one_problem(
        "name = \"x\"\n[tools]\nallow = [\"a\", \"b\"]\ndeny = [\"c\", \"b\"]\n",
        4,
        "tools.deny[1]",
        "both in tools.allow and tools.deny",
    );
    one_problem(
        "name = \"x\"\n[tools]\nallow = [\"\"]\n",
        3,
        "tools.allow[0]",
        "not a tool name",
    );
    one_problem(
        "name = \"x\"\n[tools]\ndeny = [\"a b\"]\n",
        3,
        "tools.deny[0]",
        "not a tool name",
    );
    assert_eq!(
        ok("name = \"x\"\n[tools]\nallow = []\n").tools.allow,
        Some(vec![])
    );
}

#[test]
fn secrets_come_from_files_or_credentials_never_the_policy() {
    let text = "name = \"x\"\n[secrets]\nGITHUB_TOKEN = \"ghp_supersecret\"\n";
    one_problem(
        text,
        3,
        "secrets.GITHUB_TOKEN",
        "never written in the policy",
    );
    let e = parse(text, None).expect_err("invalid");
    assert!(
        !e.to_string().contains("ghp_supersecret"),
        "the error must not echo the secret: {e}"
    );
    for (line, key, msg) in [
        ("T = { file = \"rel\" }", "secrets.T.file", "absolute path"),
        (
            "T = { file = \"/a/../b\" }",
            "secrets.T.file",
            "absolute path",
        ),
        ("T = { file = 1 }", "secrets.T.file", "expected a string"),
        (
            "T = { credential = \"a/b\" }",
            "secrets.T.credential",
            "credential name",
        ),
        (
            "T = { credential = \"\" }",
            "secrets.T.credential",
            "credential name",
        ),
        (
            "T = { credential = \"..\" }",
            "secrets.T.credential",
            "credential name",
        ),
        (
            "T = { file = \"/a\", credential = \"b\" }",
            "secrets.T",
            "not both",
        ),
        ("T = {}", "secrets.T", "expected { file"),
        ("T = 1", "secrets.T", "expected { file"),
        (
            "\"1T\" = { file = \"/a\" }",
            "secrets.1T",
            "environment variable name",
        ),
        (
            "\"A-B\" = { file = \"/a\" }",
            "secrets.A-B",
            "environment variable name",
        ),
    ] {
        one_problem(&format!("name = \"x\"\n[secrets]\n{line}\n"), 3, key, msg);
    }
    one_problem(
        "name = \"x\"\n[secrets.T]\nfile = \"/a\"\nbad = 1\n",
        4,
        "secrets.T.bad",
        "unknown key",
    );
}

#[test]
fn detect_learn_is_a_boolean() {
    let p = parse("name = \"x\"\n[detect]\nlearn = true\n", None).expect("valid");
    assert!(p.detect.learn);
    let p = parse("name = \"x\"\n", None).expect("valid");
    assert!(!p.detect.learn, "off unless asked");
    one_problem(
        "name = \"x\"\n[detect]\nlearn = \"yes\"\n",
        3,
        "detect.learn",
        "",
    );
}

#[test]
fn detect_rules_tables_are_parsed_and_checked() {
    let p = parse(
        "name = \"x\"\n[detect.rules.new-egress]\nenabled = false\n[detect.rules.exfiltration]\nseverity = \"high\"\naction = \"kill\"\n",
        None,
    )
    .expect("valid rules");
    assert_eq!(p.detect.rules["new-egress"].enabled, Some(false));
    assert_eq!(
        p.detect.rules["exfiltration"].severity,
        Some(mcp_guard_model::Severity::High)
    );
    assert_eq!(
        p.detect.rules["exfiltration"].action,
        Some(OnSensitive::Kill)
    );
    for (text, key) in [
        (
            "[detect.rules.no-such-rule]\nenabled = true\n",
            "detect.rules.no-such-rule",
        ),
        (
            "[detect.rules.exfiltration]\nsevere = \"high\"\n",
            "detect.rules.exfiltration.severe",
        ),
        (
            "[detect.rules.exfiltration]\nseverity = \"dire\"\n",
            "detect.rules.exfiltration.severity",
        ),
        (
            "[detect.rules.exfiltration]\naction = \"explode\"\n",
            "detect.rules.exfiltration.action",
        ),
        (
            "[detect.rules.exfiltration]\nenabled = \"yes\"\n",
            "detect.rules.exfiltration.enabled",
        ),
    ] {
        let err = parse(&format!("name = \"x\"\n{text}"), None).expect_err(text);
        assert!(
            err.problems.iter().any(|p| p.key == key),
            "{text}: expected a problem at {key}, got {err}"
        );
    }
}

#[test]
fn detect_patterns_and_action_are_checked() {
    one_problem(
        "name = \"x\"\n[detect]\nsensitive = [\"/a\", \"rel/**\"]\n",
        3,
        "detect.sensitive[1]",
        "must start with",
    );
    one_problem(
        "name = \"x\"\n[detect]\nsensitive = [\"~/../x\"]\n",
        3,
        "detect.sensitive[0]",
        "..",
    );
    one_problem(
        "name = \"x\"\n[detect]\nsensitive = [\"/srv/[key\"]\n",
        3,
        "detect.sensitive[0]",
        "is not a glob: unclosed character class",
    );
    one_problem(
        "name = \"x\"\n[detect]\non_sensitive = \"explode\"\n",
        3,
        "detect.on_sensitive",
        "not one of alert, deny-call, kill",
    );
    for (word, action) in [
        ("alert", OnSensitive::Alert),
        ("deny-call", OnSensitive::DenyCall),
        ("kill", OnSensitive::Kill),
    ] {
        let p = ok(&format!(
            "name = \"x\"\n[detect]\non_sensitive = \"{word}\"\n"
        ));
        assert_eq!(p.detect.on_sensitive, action);
    }
}

#[test]
fn enforcement_flags_are_booleans() {
    one_problem(
        "name = \"x\"\n[enforcement]\nobserve = \"yes\"\n",
        3,
        "enforcement.observe",
        "expected true or false",
    );
    one_problem(
        "name = \"x\"\n[enforcement]\nallow_degraded = 1\n",
        3,
        "enforcement.allow_degraded",
        "expected true or false",
    );
}

const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn pin_tables_parse_into_the_model() {
    let p = ok(&format!(
        "name = \"x\"\n[pin]\nexecutable = \"{D}\"\n\
         [[pin.file]]\npath = \"/srv/a.js\"\ndigest = \"{D}\"\n\
         [[pin.npm]]\ndir = \"/n/node_modules/p\"\nname = \"p\"\nversion = \"1.0.0\"\n\
         integrity = \"sha512-AbC+/=\"\ntree = \"{D}\"\n\
         [[pin.pypi]]\nsite_packages = \"/v/site\"\nname = \"q\"\nversion = \"2\"\n\
         record = \"{D}\"\n\
         [pin.signature]\nallowed_signers = \"/k/as\"\nidentity = \"me@x\"\n\
         file = \"/k/x.sig\"\n"
    ));
    assert_eq!(p.pin.executable.as_deref(), Some(D));
    assert_eq!(
        p.pin.files,
        [FilePin {
            path: "/srv/a.js".into(),
            digest: D.into()
        }]
    );
    assert_eq!(p.pin.npm[0].integrity.as_deref(), Some("sha512-AbC+/="));
    assert_eq!(p.pin.pypi[0].site_packages, Path::new("/v/site"));
    let sig = p.pin.signature.expect("signature");
    assert_eq!(sig.key.namespace, "mcp-guard-pins");
    assert_eq!(sig.key.identity, "me@x");
    // Inline arrays of tables are the same thing.
    let q = ok(&format!(
        "name = \"x\"\n[pin]\nfile = [{{ path = \"/a\", digest = \"{D}\" }}]\n"
    ));
    assert_eq!(q.pin.files.len(), 1);
    assert!(ok("name = \"x\"\n").pin.is_empty());
}

#[test]
fn pin_values_are_checked() {
    one_problem(
        "name = \"x\"\n[pin]\nexecutable = \"sha256:ABC\"\n",
        3,
        "pin.executable",
        "64 lowercase hex",
    );
    one_problem(
        &format!("name = \"x\"\n[pin]\nexecutable = \"{D}\"\nbogus = 1\n"),
        4,
        "pin.bogus",
        "unknown key",
    );
    one_problem(
        &format!("name = \"x\"\n[[pin.file]]\npath = \"rel/a.js\"\ndigest = \"{D}\"\n"),
        3,
        "pin.file[0].path",
        "absolute path",
    );
    one_problem(
        &format!("name = \"x\"\n[[pin.file]]\npath = \"/a\"\ndigest = \"{D}\"\nsize = 3\n"),
        5,
        "pin.file[0].size",
        "unknown key",
    );
    one_problem(
        "name = \"x\"\n[[pin.pypi]]\nsite_packages = \"/s\"\nname = \"q\"\nversion = \"1\"\n",
        2,
        "pin.pypi[0].record",
        "missing",
    );
    one_problem(
        &format!(
            "name = \"x\"\n[[pin.npm]]\ndir = \"/n\"\nname = \"p\"\nversion = \"1\"\n\
             integrity = \"md5-xx\"\ntree = \"{D}\"\n"
        ),
        6,
        "pin.npm[0].integrity",
        "SRI",
    );
    one_problem(
        "name = \"x\"\n[pin.signature]\nallowed_signers = \"/k\"\nidentity = \"i\"\nfile = \"/s\"\n",
        2,
        "pin.signature",
        "protects nothing",
    );
    one_problem(
        "name = \"x\"\n[pin]\nfile = \"/a\"\n",
        3,
        "pin.file",
        "expected an array of tables",
    );
}

#[test]
fn env_set_fixes_values_and_is_checked() {
    let p = ok("name = \"x\"\n[env]\npass = [\"LANG\"]\n\
                set = { XDG_CACHE_HOME = \"/tmp/.cache\", BROWSERS = \"~/.cache/ms-playwright\" }\n");
    assert_eq!(
        p.env.set.iter().collect::<Vec<_>>(),
        [
            (
                &"BROWSERS".to_string(),
                &"~/.cache/ms-playwright".to_string()
            ),
            (&"XDG_CACHE_HOME".to_string(), &"/tmp/.cache".to_string()),
        ]
    );
    for (set, msg) in [
        ("{ \"A B\" = \"x\" }", "not an environment variable name"),
        ("{ LANG = \"C\" }", "also in pass"),
        ("{ T = \"x\" }", "also a secret"),
        ("{ A = 1 }", "expected a string, found an integer"),
    ] {
        let text = format!(
            "name = \"x\"\n[secrets]\nT = {{ file = \"/t\" }}\n[env]\npass = [\"LANG\"]\n\
             set = {set}\n"
        );
        let key = match set {
            s if s.contains("A B") => "env.set.\"A B\"",
            s if s.contains("LANG") => "env.set.LANG",
            s if s.contains("T =") => "env.set.T",
            _ => "env.set.A",
        };
        one_problem(&text, 6, key, msg);
    }
    one_problem(
        "name = \"x\"\n[env]\nset = \"XDG_CACHE_HOME=/tmp\"\n",
        3,
        "env.set",
        "expected a table of NAME = \"value\"",
    );
}

#[test]
fn user_and_env_pass_are_checked() {
    let p = ok("name = \"x\"\nuser = \"mcp-runner\"\n[env]\npass = [\"NODE_OPTIONS\", \"LANG\"]\n");
    assert_eq!(p.user.as_deref(), Some("mcp-runner"));
    assert_eq!(p.env.pass, ["NODE_OPTIONS", "LANG"]);
    assert_eq!(
        ok("name = \"x\"\nuser = \"1000\"\n").user.as_deref(),
        Some("1000")
    );
    for bad in ["", "-x", "a b", "a/b", "99999999999"] {
        one_problem(
            &format!("name = \"x\"\nuser = \"{bad}\"\n"),
            2,
            "user",
            "neither a user name nor a numeric uid",
        );
    }
    one_problem(
        "name = \"x\"\n[env]\npass = [\"OK\", \"NOT-OK\"]\n",
        3,
        "env.pass[1]",
        "not an environment variable name",
    );
    one_problem(
        "name = \"x\"\n[secrets]\nT = { file = \"/t\" }\n[env]\npass = [\"T\"]\n",
        5,
        "env.pass[0]",
        "also a secret",
    );
    one_problem(
        "name = \"x\"\n[env]\nunset = []\n",
        3,
        "env.unset",
        "unknown key",
    );
}

#[test]
fn builtin_default_is_the_shipped_file() {
    let parsed = parse(DEFAULT_POLICY_TOML, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(builtin_default(), parsed);
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/default.toml");
    let on_disk = std::fs::read_to_string(&shipped).expect("policies/default.toml");
    assert_eq!(on_disk, DEFAULT_POLICY_TOML);
    assert_eq!(parsed.name, "default");
    assert_eq!(parsed.source, None);
}

#[test]
fn builtin_default_has_no_network_and_lists_the_users_secrets() {
    let p = builtin_default();
    assert!(p.network.allow.is_empty());
    assert!(!p.enforcement.observe && !p.enforcement.allow_degraded);
    for must in [
        "~/.ssh/**",
        "~/.aws/**",
        "~/.config/gcloud/**",
        "~/.kube/**",
        "~/.docker/config.json",
        "**/.env",
        "~/.bash_history",
        "~/.zsh_history",
        "~/.python_history",
        "~/.node_repl_history",
        "~/.mozilla/**",
        "~/.config/google-chrome/**",
        "~/.config/chromium/**",
        "~/.netrc",
        "~/.git-credentials",
        "~/.config/gh/hosts.yml",
        "~/.gnupg/**",
    ] {
        assert!(
            p.detect.sensitive.iter().any(|s| s == must),
            "{must} missing"
        );
    }
    for must in [
        "/usr",
        "/etc/ssl",
        "/etc/resolv.conf",
        "/dev/urandom",
        "~/.npm",
        "~/.pyenv",
    ] {
        assert!(
            p.filesystem.read.iter().any(|s| s == must),
            "{must} not readable"
        );
    }
    assert!(p.filesystem.write.iter().any(|s| s == "/tmp"));
    assert!(p.filesystem.exec.iter().any(|s| s == "/usr"));
}

#[test]
fn builtin_default_grants_no_sensitive_path() {
    let home = Path::new("/home/u");
    let p = builtin_default();
    let granted: Vec<(&str, PathBuf)> = [
        ("read", &p.filesystem.read),
        ("write", &p.filesystem.write),
        ("exec", &p.filesystem.exec),
    ]
    .into_iter()
    .flat_map(|(set, list)| list.iter().map(move |e| (set, expand_home(e, home))))
    .collect();
    // Neither the home itself nor /etc as a whole: secrets live there.
    for (set, path) in &granted {
        assert!(path != home && path != Path::new("/home") && path != Path::new("/"));
        assert!(path != Path::new("/etc"), "{set} grants all of /etc");
    }
    for pattern in &p.detect.sensitive {
        if pattern.starts_with("**") {
            continue; // matches anywhere by design (e.g. a .env inside a granted tree)
        }
        // The literal part before any glob: the tree the pattern protects.
        let literal = pattern.split(['*', '?', '[']).next().unwrap_or_default();
        let protected = expand_home(literal.trim_end_matches('/'), home);
        for (set, path) in &granted {
            assert!(
                !protected.starts_with(path) && !path.starts_with(&protected),
                "{set} entry {} overlaps sensitive {pattern}",
                path.display()
            );
        }
    }
}

#[test]
fn example_policy_parses_and_uses_every_section() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/example.toml");
    let p = load_file(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(!p.filesystem.read.is_empty() && !p.filesystem.write.is_empty());
    assert!(!p.filesystem.exec.is_empty() && !p.network.allow.is_empty());
    assert!(!p.syscalls.deny.is_empty() && p.limits.memory.is_some());
    assert!(p.limits.pids.is_some() && p.limits.cpu.is_some());
    assert!(p.tools.allow.is_some() && !p.tools.deny.is_empty());
    assert!(!p.tools.clients.is_empty() && !p.tools.args.is_empty());
    assert!(!p.mcp.pii.is_empty() && p.mcp.hook.is_some());
    assert!(!p.mcp.secret_shapes.ignore.is_empty());
    assert!(p.secrets.values().any(|s| matches!(s, Secret::File(_))));
    assert!(
        p.secrets
            .values()
            .any(|s| matches!(s, Secret::Credential(_)))
    );
    assert!(!p.detect.sensitive.is_empty());
    assert_eq!(p.detect.on_sensitive, OnSensitive::Kill);
    assert!(p.user.is_some() && !p.env.pass.is_empty());
    assert!(p.command.as_ref().is_some_and(|c| c.len() == 2));
    assert!(p.audit.arguments.is_some() && p.audit.result_bytes.is_some());
    assert!(p.audit.tools.len() == 2);
}

#[test]
fn load_by_name_path_or_default() {
    let dir = temp_dir("load");
    std::fs::write(dir.join("github.toml"), "name = \"github\"\n").expect("write");
    std::fs::write(dir.join("other.toml"), "name = \"bad name\"\n").expect("write");
    assert_eq!(load(None, &dir).expect("default"), builtin_default());
    assert_eq!(load(Some("github"), &dir).expect("by name").name, "github");
    let by_path = dir.join("github.toml");
    let p = load(
        Some(by_path.to_str().expect("utf-8")),
        Path::new("/nonexistent"),
    )
    .expect("by path");
    assert_eq!(p.source.as_deref(), Some(by_path.as_path()));
    // No default.toml in the dir: the built-in one.
    assert_eq!(
        load(Some("default"), &dir).expect("default"),
        builtin_default()
    );
    let e = load(Some("missing"), &dir).expect_err("missing");
    assert!(e.to_string().contains("no policy named \"missing\""), "{e}");
    assert!(
        e.to_string()
            .starts_with(&dir.join("missing.toml").display().to_string())
    );
    let e = load(Some("other"), &dir).expect_err("invalid");
    assert!(e.to_string().contains("other.toml:1:8: name:"), "{e}");
    let e = load(Some("nope.toml"), &dir).expect_err("a path relative to the cwd");
    assert!(e.to_string().contains("cannot read policy"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn expand_home_only_touches_a_leading_tilde() {
    let home = Path::new("/home/u");
    assert_eq!(expand_home("~", home), PathBuf::from("/home/u"));
    assert_eq!(
        expand_home("~/.ssh/**", home),
        PathBuf::from("/home/u/.ssh/**")
    );
    assert_eq!(expand_home("/etc/~/x", home), PathBuf::from("/etc/~/x"));
    assert_eq!(expand_home("**/.env", home), PathBuf::from("**/.env"));
}
