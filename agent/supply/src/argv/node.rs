//! Node's command line (`node --help`, the Node.js docs' "Command-line API"): which argument is
//! the script, which options load code, and the same for `NODE_OPTIONS`.

/// Node options that take no value and load no code (V8's usual ones too).
pub const NODE_FLAGS: &[&str] = &[
    "--abort-on-uncaught-exception",
    "--allow-addons",
    "--allow-child-process",
    "--allow-wasi",
    "--allow-worker",
    "-c",
    "--check",
    "--cpu-prof",
    "--disable-wasm-trap-handler",
    "--disallow-code-generation-from-strings",
    "--enable-fips",
    "--enable-source-maps",
    "--experimental-eventsource",
    "--experimental-import-meta-resolve",
    "--experimental-network-inspection",
    "--experimental-permission",
    "--permission",
    "--experimental-print-required-tla",
    "--experimental-vm-modules",
    "--experimental-wasm-modules",
    "--experimental-websocket",
    "--experimental-detect-module",
    "--experimental-require-module",
    "--expose-gc",
    "--force-context-aware",
    "--force-fips",
    "--force-node-api-uncaught-exceptions-policy",
    "--frozen-intrinsics",
    "--heap-prof",
    "-h",
    "--help",
    "--huge-max-old-generation-size",
    "--insecure-http-parser",
    "--interpreted-frames-native-stack",
    "--jitless",
    "--no-addons",
    "--no-deprecation",
    "--no-experimental-detect-module",
    "--no-experimental-fetch",
    "--no-experimental-global-customevent",
    "--no-experimental-global-webcrypto",
    "--no-experimental-repl-await",
    "--no-experimental-require-module",
    "--no-extra-info-on-fatal-exception",
    "--no-force-async-hooks-checks",
    "--no-global-search-paths",
    "--enable-network-family-autoselection",
    "--no-network-family-autoselection",
    "--no-warnings",
    "--node-memory-debug",
    "--openssl-legacy-provider",
    "--openssl-shared-config",
    "--pending-deprecation",
    "--preserve-symlinks",
    "--preserve-symlinks-main",
    "--prof",
    "--report-compact",
    "--report-exclude-network",
    "--report-on-fatalerror",
    "--report-on-signal",
    "--report-uncaught-exception",
    "--throw-deprecation",
    "--tls-max-v1.2",
    "--tls-max-v1.3",
    "--tls-min-v1.0",
    "--tls-min-v1.1",
    "--tls-min-v1.2",
    "--tls-min-v1.3",
    "--trace-atomics-wait",
    "--trace-deprecation",
    "--trace-exit",
    "--trace-promises",
    "--trace-sigint",
    "--trace-sync-io",
    "--trace-tls",
    "--trace-uncaught",
    "--trace-warnings",
    "--track-heap-objects",
    "--use-bundled-ca",
    "--use-openssl-ca",
    "-v",
    "--version",
    "--v8-options",
    "--zero-fill-buffers",
    "--watch-preserve-output",
];

/// Node options that take a value (`--opt=V` or `--opt V`) and load no code. V8's options take
/// theirs only as `--opt=V`.
pub const NODE_VALUES: &[&str] = &[
    "-C",
    "--conditions",
    "--cpu-prof-dir",
    "--cpu-prof-interval",
    "--cpu-prof-name",
    "--diagnostic-dir",
    "--disable-proto",
    "--disable-warning",
    "--dns-result-order",
    "--experimental-default-type",
    "--experimental-policy",
    "--heap-prof-dir",
    "--heap-prof-interval",
    "--heap-prof-name",
    "--heapsnapshot-near-heap-limit",
    "--heapsnapshot-signal",
    "--icu-data-dir",
    "--input-type",
    "--inspect-publish-uid",
    "--max-http-header-size",
    "--network-family-autoselection-attempt-timeout",
    "--policy-integrity",
    "--redirect-warnings",
    "--report-directory",
    "--report-dir",
    "--report-filename",
    "--report-signal",
    "--secure-heap",
    "--secure-heap-min",
    "--title",
    "--tls-cipher-list",
    "--tls-keylog",
    "--trace-event-categories",
    "--trace-event-file-pattern",
    "--trace-require-module",
    "--unhandled-rejections",
    "--use-largepages",
    "--v8-pool-size",
    "--allow-fs-read",
    "--allow-fs-write",
    "--watch-path",
    "--max-old-space-size",
    "--max-semi-space-size",
    "--stack-size",
    "--stack-trace-limit",
];

/// Node options that run or load code other than the pinned script, with why.
const NODE_DENIED: &[(&str, &str)] = &[
    ("-e", "runs inline code"),
    ("--eval", "runs inline code"),
    ("-p", "runs inline code"),
    ("--print", "runs inline code"),
    ("-pe", "runs inline code"),
    ("-r", "preloads a module"),
    ("--require", "preloads a module"),
    ("--import", "preloads a module"),
    ("--loader", "loads a module loader"),
    ("--experimental-loader", "loads a module loader"),
    ("-i", "reads code from stdin (REPL)"),
    ("--interactive", "reads code from stdin (REPL)"),
    ("--inspect", "opens a debugger that runs any code"),
    ("--inspect-brk", "opens a debugger that runs any code"),
    ("--inspect-wait", "opens a debugger that runs any code"),
    ("--inspect-port", "opens a debugger that runs any code"),
    ("--debug-port", "opens a debugger that runs any code"),
    (
        "--env-file",
        "reads variables (NODE_OPTIONS too) from a file",
    ),
    (
        "--env-file-if-exists",
        "reads variables (NODE_OPTIONS too) from a file",
    ),
    ("--openssl-config", "loads OpenSSL engines"),
    ("--snapshot-blob", "restores a heap snapshot"),
    ("--build-snapshot", "runs a script to build a snapshot"),
    (
        "--build-snapshot-config",
        "runs a script to build a snapshot",
    ),
    ("--experimental-sea-config", "builds an executable blob"),
    ("--experimental-network-imports", "imports code over https"),
    ("--test", "runs the test files it finds"),
    ("--run", "runs a package.json script (a shell command)"),
];

/// The options in a `NODE_OPTIONS` value that are refused: code-loading ones and any option
/// not known to load nothing.
pub(super) fn node_options_refusals(value: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let words = split_node_options(value);
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        let (name, inline) = split_opt(w);
        if let Some(why) = node_denied(&name) {
            out.push((name, why.to_string()));
        } else if NODE_VALUES.contains(&name.as_str()) {
            if inline.is_none() {
                i += 1;
            }
        } else if !is_node_flag(&name) {
            out.push((name, "an option mcp-guard does not know".to_string()));
        }
        i += 1;
    }
    out
}

/// Splits `NODE_OPTIONS` like Node does: on spaces, with double quotes grouping.
fn split_node_options(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `--name=value` → (`--name`, Some(value)); underscores in a long name read as dashes, as
/// Node reads them.
fn split_opt(arg: &str) -> (String, Option<String>) {
    let (name, value) = match arg.split_once('=') {
        Some((n, v)) => (n, Some(v.to_string())),
        None => (arg, None),
    };
    let name = if let Some(long) = name.strip_prefix("--") {
        format!("--{}", long.replace('_', "-"))
    } else {
        name.to_string()
    };
    (name, value)
}

fn node_denied(name: &str) -> Option<&'static str> {
    NODE_DENIED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, why)| *why)
}

fn is_node_flag(name: &str) -> bool {
    NODE_FLAGS.contains(&name)
        || name
            .strip_prefix("--no-")
            .is_some_and(|rest| NODE_FLAGS.contains(&format!("--{rest}").as_str()))
}

/// The script node runs for `args` (argv after the program), or what is refused.
pub(super) fn node_target(args: &[String]) -> Result<String, Vec<String>> {
    let mut refused = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            return match args.get(i + 1) {
                Some(s) if refused.is_empty() => Ok(s.clone()),
                Some(_) => Err(refused),
                None => {
                    refused.push("-- and no script: node reads code from stdin".into());
                    Err(refused)
                }
            };
        }
        if a == "-" {
            refused.push("- (reads code from stdin)".into());
            return Err(refused);
        }
        if !a.starts_with('-') {
            return if refused.is_empty() {
                Ok(a.clone())
            } else {
                Err(refused)
            };
        }
        let (name, inline) = split_opt(a);
        if let Some(why) = node_denied(&name) {
            refused.push(format!("{name} ({why})"));
            // Its value (if separate) is not the script.
            if inline.is_none()
                && !matches!(
                    name.as_str(),
                    "-i" | "--interactive"
                        | "--inspect"
                        | "--inspect-brk"
                        | "--inspect-wait"
                        | "--test"
                        | "--build-snapshot"
                        | "--experimental-network-imports"
                )
            {
                i += 1;
            }
        } else if NODE_VALUES.contains(&name.as_str()) {
            if inline.is_none() {
                i += 1;
            }
        } else if !is_node_flag(&name) {
            refused.push(format!(
                "{name} (an option mcp-guard does not know: it might take the next argument, \
                 and then the script would be another)"
            ));
        }
        i += 1;
    }
    refused.push("no script: node reads code from stdin".into());
    Err(refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(std::string::ToString::to_string).collect()
    }

    #[test]
    fn node_options_are_parsed_like_node() {
        assert_eq!(
            node_target(&s(&[
                "--title",
                "srv",
                "--max-old-space-size=100",
                "x.js",
                "-e"
            ])),
            Ok("x.js".into())
        );
        assert_eq!(node_target(&s(&["--", "x.js"])), Ok("x.js".into()));
        assert_eq!(
            node_target(&s(&["--no-warnings", "--no_deprecation", "x.js"])),
            Ok("x.js".into())
        );
        for (args, needle) in [
            (&["-e", "1"][..], "-e"),
            (&["--eval=1"], "--eval"),
            (&["-p", "1"], "-p"),
            (&["-r", "/tmp/evil.js", "x.js"], "-r"),
            (&["--require=/tmp/evil.js", "x.js"], "--require"),
            (&["--import", "evil", "x.js"], "--import"),
            (
                &["--experimental-loader", "evil", "x.js"],
                "--experimental-loader",
            ),
            (&["--loader=evil", "x.js"], "--loader"),
            (&["-i", "x.js"], "-i"),
            (&["--inspect", "x.js"], "--inspect"),
            (&["--env-file=.env", "x.js"], "--env-file"),
            (&["-"], "stdin"),
            (&[], "no script"),
            // Unknown: it might take `x.js` as its value and run `evil.js`.
            (
                &["--experimental-config-file", "x.js", "evil.js"],
                "does not know",
            ),
        ] {
            let e = node_target(&s(args)).expect_err("refused");
            assert!(e.iter().any(|r| r.contains(needle)), "{args:?}: {e:?}");
        }
    }
}
