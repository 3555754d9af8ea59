//! `mcp-guard policy check FILE...` run as a user would: exit 0 when every file is valid, 78
//! (`EX_CONFIG`) otherwise, with every problem named by file, line and key.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use mcp_guard_tests::fresh_dir;
use mcp_guard_tests::{mcp_guard, workspace_root};

/// A fresh directory for one test's policy files.
fn temp_dir(tag: &str) -> PathBuf {
    fresh_dir("policy-check", tag)
}

fn check(files: &[&Path]) -> Output {
    Command::new(mcp_guard())
        .args(["policy", "check"])
        .args(files)
        .output()
        .expect("run mcp-guard policy check")
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const GOOD: &str = r#"name = "github"
[filesystem]
read = ["/usr", "/etc/ssl"]
write = ["/tmp"]
[network]
allow = ["api.github.com:443", "10.0.0.0/8:443", "[::1]:8000-8999"]
[limits]
memory = "512M"
pids = 128
cpu = 1.0
[secrets]
GITHUB_TOKEN = { file = "/etc/mcp-guard/secrets/github" }
[detect]
on_sensitive = "kill"
"#;

const BAD: &str = r#"name = "github"
[filesystem]
read = ["/usr", "etc/ssl"]
[network]
allow = [
  "10.0.0.0/8:443",
  "api.github.com",
]
[limits]
memroy = "512M"
[secrets]
GITHUB_TOKEN = "ghp_notarealtoken"
"#;

#[test]
fn valid_files_exit_0_and_say_ok() {
    let dir = temp_dir("good");
    let good = dir.join("github.toml");
    std::fs::write(&good, GOOD).expect("write policy");
    let shipped = workspace_root().join("policies");
    let output = check(&[
        &good,
        &shipped.join("default.toml"),
        &shipped.join("example.toml"),
    ]);
    let (stdout, stderr) = text(&output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains(&format!("ok: {} (github)", good.display())),
        "{stdout}"
    );
    assert!(stdout.contains("default.toml (default)"), "{stdout}");
    assert!(stdout.contains("example.toml (github)"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn invalid_file_exits_78_with_every_error_located() {
    let dir = temp_dir("bad");
    let good = dir.join("good.toml");
    let bad = dir.join("bad.toml");
    std::fs::write(&good, GOOD).expect("write policy");
    std::fs::write(&bad, BAD).expect("write policy");
    let output = check(&[&good, &bad]);
    let (stdout, stderr) = text(&output);
    assert_eq!(
        output.status.code(),
        Some(78),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    // The valid file is still reported as such.
    assert!(
        stdout.contains(&format!("ok: {} (github)", good.display())),
        "{stdout}"
    );
    let bad = bad.display();
    for expected in [
        format!("{bad}:3:17: filesystem.read[1]: \"etc/ssl\" must be absolute"),
        format!("{bad}:7:3: network.allow[1]: \"api.github.com\" has no port"),
        format!("{bad}:10:1: limits.memroy: unknown key"),
        format!("{bad}:12:16: secrets.GITHUB_TOKEN: secrets are never written in the policy"),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(
        !stderr.contains("ghp_notarealtoken"),
        "secret echoed:\n{stderr}"
    );
    assert_eq!(stderr.lines().count(), 4, "one line per problem:\n{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unreadable_and_malformed_files_exit_78() {
    let dir = temp_dir("malformed");
    let missing = dir.join("missing.toml");
    let malformed = dir.join("malformed.toml");
    std::fs::write(&malformed, "name = \"x\"\n[limits\n").expect("write policy");
    let output = check(&[&missing, &malformed]);
    let (stdout, stderr) = text(&output);
    assert_eq!(
        output.status.code(),
        Some(78),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("{}: cannot read policy", missing.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{}:2:", malformed.display())) && stderr.contains("invalid TOML"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn no_file_is_a_usage_error() {
    let output = check(&[]);
    assert_eq!(output.status.code(), Some(2), "{:?}", text(&output));
}

/// `[secrets] rules` names a gitleaks-format rules file: a valid one passes, and each problem of
/// an invalid one is reported at the policy's key with the rules file's own line and key.
#[test]
fn a_secret_rules_file_is_checked_with_the_policy() {
    let dir = temp_dir("rules");
    let good_rules = dir.join("good-rules.toml");
    std::fs::write(
        &good_rules,
        "[extend]\nuseDefault = true\n\n[[rules]]\nid = \"acme-token\"\nregex = '''\\bacme_[0-9a-f]{32}\\b'''\nkeywords = [\"acme_\"]\n",
    )
    .expect("write rules");
    let bad_rules = dir.join("bad-rules.toml");
    std::fs::write(
        &bad_rules,
        "[[rules]]\nid = \"acme-token\"\nregex = '''acme_([0-9a-f]{32}'''\nkeywords = [\"acme_\"]\n\n[[rules]]\nid = \"other\"\nregex = 'x'\nentropie = 3.5\n",
    )
    .expect("write rules");
    let policy = |name: &str, rules: &Path| {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "name = \"{name}\"\n[secrets]\nrules = \"{}\"\n[mcp.secret_shapes]\nignore = [\"acme-token\"]\n",
                rules.display()
            ),
        )
        .expect("write policy");
        path
    };
    let good = policy("good", &good_rules);
    let output = check(&[&good]);
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let bad = policy("bad", &bad_rules);
    let output = check(&[&bad]);
    let (stdout, stderr) = text(&output);
    assert_eq!(
        output.status.code(),
        Some(78),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let (p, r) = (bad.display(), bad_rules.display());
    for expected in [
        format!("{p}:3:9: secrets.rules: {r}:3:9: rules[0].regex: not a valid regex"),
        format!("{p}:3:9: secrets.rules: {r}:9:1: rules[1].entropie: unknown key"),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    // `ignore` naming the broken file's rule is not a problem of its own.
    assert_eq!(stderr.lines().count(), 2, "one line per problem:\n{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The shipped policies list other distributions' locations (`/etc/pki`, `/lib32`, ...) as
/// `?PATH` alternatives: checking all of them on this host prints no warning at all.
#[test]
fn shipped_policies_check_without_warnings() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(workspace_root().join("policies"))
        .expect("read policies/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{files:?}");
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let output = check(&refs);
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(stdout.lines().count(), files.len(), "{stdout}");
    assert!(
        stderr.is_empty(),
        "warnings on the shipped policies:\n{stderr}"
    );
}

/// A user's typo (a path that exists on no host) still warns, with file, line and key, while
/// the same kind of entry marked `?` is quiet; a malformed marker is an error like any other.
#[test]
fn a_typo_warns_an_optional_alternative_does_not_and_a_bad_marker_is_an_error() {
    let dir = temp_dir("optional");
    let policy = dir.join("mine.toml");
    std::fs::write(
        &policy,
        "name = \"mine\"\n[filesystem]\nread = [\"/usr\", \"?/etc/no-such-distro-pki\",\n  \
         \"/usr/bin/pyhton3\"]\nexec = [\"/usr\", \"?/no-such-lib32\", \"/usr/bin/pyhton3\"]\n",
    )
    .expect("write policy");
    let output = check(&[&policy]);
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let p = policy.display();
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            format!(
                "{p}:4:3: filesystem.read[2]: warning: /usr/bin/pyhton3 does not exist on this \
                 host: the entry grants nothing"
            ),
            format!(
                "{p}:5:36: filesystem.exec[2]: warning: /usr/bin/pyhton3 does not exist on this \
                 host: the entry grants nothing"
            ),
        ],
        "{stderr}"
    );

    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"bad\"\n[filesystem]\nread = [\"?\", \"?etc/pki\"]\nexec = [\"??/lib32\"]\n\
         write = [\"/tmp\"]\nwritable = [\"?/x\"]\n",
    )
    .expect("write policy");
    let output = check(&[&bad]);
    let (stdout, stderr) = text(&output);
    assert_eq!(
        output.status.code(),
        Some(78),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let b = bad.display();
    for expected in [
        format!("{b}:3:9: filesystem.read[0]: \"?\": after the optional marker `?`, empty path"),
        format!("{b}:3:14: filesystem.read[1]: \"?etc/pki\": after the optional marker `?`"),
        format!("{b}:4:9: filesystem.exec[0]: \"??/lib32\": after the optional marker `?`"),
        format!("{b}:6:1: filesystem.writable: unknown key"),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert_eq!(stderr.lines().count(), 4, "one line per problem:\n{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
