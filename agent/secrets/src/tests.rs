//! Unit tests of the loader and the engine (the catalog's recall and false positives are in
//! `tests/`).

use std::path::PathBuf;

use super::*;

fn source(text: &str) -> RulesSource {
    RulesSource {
        files: vec![(PathBuf::from("/etc/t.toml"), text.to_string())],
        checked: false,
    }
}

fn rules(text: &str) -> SecretRules {
    let spec = spec_of(&source(text)).unwrap_or_else(|e| panic!("{e}"));
    SecretRules::compile(&spec).expect("compiles")
}

fn redacted(r: &SecretRules, text: &str) -> (String, Vec<String>) {
    let mut s = text.to_string();
    let mut what = Vec::new();
    r.redact(&mut s, &mut what);
    (s, what)
}

/// The catalog is parsed without compiling its regexes, and `builtin()` compiles each on first
/// use: the full check must pass and every regex compile, so none fails then.
#[test]
fn the_builtin_catalog_compiles_eagerly() {
    let checked = gitleaks::parse_text(CATALOG_NAME, CATALOG).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        &checked,
        builtin_spec(),
        "the trusted parse differs from the full check"
    );
    let eager = SecretRules::compile(&checked).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(eager.len(), builtin().len());
}

#[test]
fn the_builtin_catalog_loads_and_every_rule_has_keywords_and_a_regex() {
    let spec = builtin_spec();
    assert!(spec.rules.len() >= 100, "{} rules", spec.rules.len());
    for r in &spec.rules {
        assert!(!r.keywords.is_empty(), "{}: no keywords", r.id);
        assert!(r.regex.is_some(), "{}: no regex", r.id);
        assert!(!r.description.is_empty(), "{}: no description", r.id);
    }
    let mut ids: Vec<&str> = spec.rules.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), spec.rules.len(), "duplicate ids");
    assert!(!builtin().is_empty());
    for legacy in [
        "private-key",
        "aws-access-key",
        "github-token",
        "slack-token",
        "google-api-key",
        "api-key-sk",
        "jwt",
        "bearer-token",
    ] {
        assert!(is_builtin_name(legacy), "{legacy}");
    }
}

/// A team's file as gitleaks reads it: old and new allowlist forms, targeted global allowlists,
/// keywords gating rules, secret groups, entropy, a path-only rule, mixed-case keys.
const TEAM_FILE: &str = r#"
title = "acme"

[[rules]]
id = "acme-token"
description = "Acme API token"
regex = '''\b(acme_[a-z0-9]{20})\b'''
keywords = ["acme_"]
tags = ["acme"]
[rules.allowlist]
stopwords = ["acme_test"]

[[rules]]
id = "acme-assignment"
regex = '''(?i)acme[_-]?key\s*=\s*(\w{12,})(\s|$)'''
SecretGroup = 1
entropy = 3.0
keywords = ["acme"]
[[rules.allowlists]]
condition = "AND"
regexTarget = "line"
regexes = ['''^#''']
stopwords = ["sample"]

[[rules]]
id = "digits"
regex = '''ID:(\d{6})'''
keywords = ["id:"]

[[rules]]
id = "files-only"
path = '''\.pem$'''

[allowlist]
regexTarget = "line"
regexes = ['''ignored-by-all''']

[[rules]]
id = "ticket"
regex = '''TCK-[0-9]{8}'''
keywords = ["tck-"]
"#;

#[test]
fn a_gitleaks_file_is_read_as_gitleaks_reads_it() {
    let r = rules(TEAM_FILE);
    // Keyword-gated, secret group, whole match when the regex has no group.
    let (s, what) = redacted(&r, "token acme_0123456789abcdefghij and TCK-12345678");
    assert_eq!(s, "token [REDACTED:acme-token] and [REDACTED:ticket]");
    assert_eq!(what, ["acme-token", "ticket"]);
    // The old [rules.allowlist] form: a stopword in the secret.
    let (s, _) = redacted(&r, "acme_test456789abcdefgh");
    assert_eq!(s, "acme_test456789abcdefgh");
    // Entropy: a low-entropy value is not a secret.
    let (s, _) = redacted(&r, "ACME_KEY = aaaaaaaaaaaaaaaa");
    assert_eq!(s, "ACME_KEY = aaaaaaaaaaaaaaaa");
    let (s, _) = redacted(&r, "ACME_KEY = q8Zr2Lm9Xw4Tv6");
    assert_eq!(s, "ACME_KEY = [REDACTED:acme-assignment]");
    // AND: a commented line with a stopword is allowed; either alone is not.
    let (s, _) = redacted(&r, "# ACME_KEY = sample9Xw4Tv6q");
    assert_eq!(s, "# ACME_KEY = sample9Xw4Tv6q");
    let (s, _) = redacted(&r, "ACME_KEY = sample9Xw4Tv6q");
    assert_eq!(s, "ACME_KEY = [REDACTED:acme-assignment]");
    // Go's \d is ASCII: other scripts' digits are not digits.
    let (s, _) = redacted(&r, "ID:123456 ID:١٢٣٤٥٦");
    assert_eq!(s, "ID:[REDACTED:digits] ID:١٢٣٤٥٦");
    // The global allowlist (on the line) applies to every rule.
    let (s, _) = redacted(
        &r,
        "acme_0123456789abcdefghij ignored-by-all\nacme_0123456789abcdefghij TCK-12345678",
    );
    assert_eq!(
        s,
        "acme_0123456789abcdefghij ignored-by-all\n[REDACTED:acme-token] [REDACTED:ticket]"
    );
    // Without the keyword, the rule does not run even where its regex would match.
    let no_keyword =
        rules("[[rules]]\nid = \"k\"\nregex = '''secret-[0-9]+'''\nkeywords = [\"zzz\"]\n");
    assert!(!no_keyword.may_match("secret-42"));
    let (s, _) = redacted(&no_keyword, "secret-42");
    assert_eq!(s, "secret-42");
    // Rules are left out by id or by tag.
    let (s, _) = redacted(&r.without(&["acme".into()]), "acme_0123456789abcdefghij");
    assert_eq!(s, "acme_0123456789abcdefghij");
}

#[test]
fn targeted_allowlists_and_extending_the_builtin_catalog() {
    let r = rules(
        r#"
[extend]
useDefault = true
disabledRules = ["jwt"]

[[rules]]
id = "github-pat"
description = "ours"
keywords = ["mine"]

[[allowlists]]
targetRules = ["aws-access-key"]
regexes = ['''EXAMPLE$''']
"#,
    );
    let fake_pat = format!("ghp_{}", "aB3".repeat(12));
    let (s, w) = redacted(&r, &format!("x {fake_pat} y"));
    assert_eq!(s, "x [REDACTED:github-pat] y");
    assert_eq!(w, ["github-pat"]);
    // The built-in rule kept its regex and gained the file's keyword and description.
    let spec = spec_of(&source(
        "[extend]\nuseDefault = true\n[[rules]]\nid = \"github-pat\"\ndescription = \"ours\"\nkeywords = [\"mine\"]\n",
    ))
    .expect("valid");
    let pat = spec
        .rules
        .iter()
        .find(|r| r.id == "github-pat")
        .expect("kept");
    assert_eq!(pat.description, "ours");
    assert!(
        pat.keywords.contains(&"ghp_".to_string()) && pat.keywords.contains(&"mine".to_string())
    );
    // jwt is off; the targeted allowlist lets the documentation's example key id through.
    let jwt = format!(
        "eyJ{}.eyJ{}.{}",
        "hbGciOi".repeat(2),
        "zdWIiOi".repeat(2),
        "Xy_9".repeat(4)
    );
    assert_eq!(redacted(&r, &jwt).0, jwt);
    let example = format!("AKIA{}EXAMPLE", "IOSFODNN7");
    assert_eq!(redacted(&r, &example).0, example);
    // Without useDefault, the file's rules are all there is.
    let own = rules("[[rules]]\nid = \"x\"\nregex = '''xyz[0-9]{4}'''\nkeywords = [\"xyz\"]\n");
    assert_eq!(redacted(&own, &fake_pat).0, fake_pat);
}

#[test]
fn extend_path_follows_files_relative_to_the_one_extending() {
    let dir = std::env::temp_dir().join(format!("secret-rules-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("base")).expect("dir");
    std::fs::write(
        dir.join("base/rules.toml"),
        "[[rules]]\nid = \"base\"\nregex = '''base-[0-9]{6}'''\nkeywords = [\"base-\"]\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("team.toml"),
        "[extend]\npath = \"base/rules.toml\"\n[[rules]]\nid = \"team\"\nregex = '''team-[0-9]{6}'''\nkeywords = [\"team-\"]\n",
    )
    .expect("write");
    let source = read_file(&dir.join("team.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(source.files.len(), 2);
    let r = for_source(Some(&source)).expect("compiles");
    let (s, _) = redacted(&r, "team-123456 base-654321");
    assert_eq!(s, "[REDACTED:team] [REDACTED:base]");
    let missing = read_file(&dir.join("absent.toml")).expect_err("absent");
    assert!(
        missing
            .to_string()
            .contains("absent.toml: cannot read secret rules"),
        "{missing}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[track_caller]
fn one_problem(text: &str, line: usize, key: &str, message: &str) {
    let e = spec_of(&source(text)).expect_err("invalid");
    assert_eq!(e.problems.len(), 1, "{e}");
    let p = &e.problems[0];
    assert_eq!((p.line, p.key.as_str()), (line, key), "{e}");
    assert!(p.message.contains(message), "{e}");
    assert!(
        e.to_string().starts_with(&format!("/etc/t.toml:{line}:")),
        "{e}"
    );
}

#[test]
fn problems_name_file_line_and_key() {
    let rule = "[[rules]]\nid = \"a\"\nkeywords = [\"a\"]\n";
    one_problem(
        &format!("{rule}regex = '''(unclosed'''\n"),
        4,
        "rules[0].regex",
        "not a valid regex",
    );
    one_problem(
        &format!("{rule}regex = '''a(b)'''\nsecretGroup = 2\n"),
        5,
        "rules[0].secretGroup",
        "group 2 does not exist",
    );
    one_problem(
        &format!("{rule}regex = '''a'''\nentrophy = 3\n"),
        5,
        "rules[0].entrophy",
        "unknown key",
    );
    one_problem(
        &format!("{rule}regex = '''a'''\nentropy = \"high\"\n"),
        5,
        "rules[0].entropy",
        "bits per character",
    );
    one_problem(
        &format!(
            "{rule}regex = '''a'''\n[[rules.allowlists]]\ncondition = \"XOR\"\nstopwords = [\"x\"]\n"
        ),
        6,
        "rules[0].allowlists[0].condition",
        "OR, AND",
    );
    one_problem(
        &format!("{rule}regex = '''a'''\n[[rules.allowlists]]\nregexes = ['''ok''', '''[z''']\n"),
        6,
        "rules[0].allowlists[0].regexes[1]",
        "not a valid regex",
    );
    one_problem(
        &format!("{rule}regex = '''a'''\n[[rules.allowlists]]\ndescription = \"empty\"\n"),
        5,
        "rules[0].allowlists[0]",
        "at least one of",
    );
    one_problem(
        &format!("{rule}\n"),
        1,
        "rules[0]",
        "neither a regex nor a path",
    );
    one_problem(
        &format!(
            "{rule}regex = '''a'''\n[[allowlists]]\ntargetRules = [\"b\"]\nstopwords = [\"x\"]\n"
        ),
        5,
        "allowlists[0].targetRules",
        "target rule \"b\" does not exist",
    );
    one_problem(
        "[extend]\nurl = \"https://example.invalid/rules.toml\"\n",
        2,
        "extend.url",
        "not supported",
    );
    one_problem("[[rules]\nid = 1\n", 1, "", "invalid TOML");
}
