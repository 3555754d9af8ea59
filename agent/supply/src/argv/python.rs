//! Python's command line (`python3 --help`, the Python docs' "Command line and environment"):
//! which argument is the script or module, and which options run other code.

/// Python's `-X` options that load nothing: the only ones allowed with `[pin]`.
pub const PY_SAFE_X: &[&str] = &[
    "faulthandler",
    "showrefcount",
    "tracemalloc",
    "importtime",
    "dev",
    "utf8",
    "warn_default_encoding",
    "no_debug_ranges",
    "int_max_str_digits",
    "frozen_modules",
    "perf",
    "cpu_count",
];

/// What python runs for `args`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum PyTarget {
    /// A script file (as given: relative to the working directory, or absolute).
    Script(String),
    /// `-m MODULE`.
    Module(String),
}

/// The script or module python runs for `args` (argv after the program), or what is refused.
pub(super) fn python_target(args: &[String]) -> Result<PyTarget, Vec<String>> {
    let mut refused = Vec::new();
    let mut i = 0;
    let done = |refused: Vec<String>, t: PyTarget| {
        if refused.is_empty() {
            Ok(t)
        } else {
            Err(refused)
        }
    };
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            return match args.get(i + 1) {
                Some(s) if s != "-" => done(refused, PyTarget::Script(s.clone())),
                _ => {
                    refused.push("- or no script (reads code from stdin)".into());
                    Err(refused)
                }
            };
        }
        if a == "-" {
            refused.push("- (reads code from stdin)".into());
            return Err(refused);
        }
        if !a.starts_with('-') {
            return done(refused, PyTarget::Script(a.clone()));
        }
        if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (long, None),
            };
            match name {
                "check-hash-based-pycs" => {
                    if inline.is_none() {
                        i += 1;
                    }
                }
                "help" | "help-env" | "help-xoptions" | "help-all" | "version" => {}
                _ => refused.push(format!("--{name} (not an option of Python)")),
            }
            i += 1;
            continue;
        }
        // A cluster of short options: `-Bu`, `-W error`, `-Werror`, `-c code`, `-mpkg`.
        let cluster: Vec<char> = a[1..].chars().collect();
        let mut j = 0;
        while j < cluster.len() {
            let c = cluster[j];
            let takes = matches!(c, 'c' | 'm' | 'X' | 'W');
            let value = if takes {
                let rest: String = cluster[j + 1..].iter().collect();
                if rest.is_empty() {
                    i += 1;
                    args.get(i).cloned()
                } else {
                    Some(rest)
                }
            } else {
                None
            };
            match c {
                'c' => {
                    refused.push("-c (runs inline code, not the pinned script)".into());
                    return Err(refused);
                }
                'm' => {
                    return if let Some(m) = value {
                        done(refused, PyTarget::Module(m))
                    } else {
                        refused.push("-m without a module".into());
                        Err(refused)
                    };
                }
                'i' => refused.push("-i (reads code from stdin after the script)".into()),
                'X' => {
                    let opt = value.unwrap_or_default();
                    let key = opt.split('=').next().unwrap_or_default();
                    if !PY_SAFE_X.contains(&key) {
                        refused.push(format!(
                            "-X {key} (only -X {} pass with [pin])",
                            PY_SAFE_X.join(", ")
                        ));
                    }
                }
                'W' | 'b' | 'B' | 'd' | 'E' | 'h' | 'I' | 'J' | 'O' | 'P' | 'q' | 'R' | 's'
                | 'S' | 't' | 'u' | 'v' | 'V' | 'x' | '?' => {}
                other => refused.push(format!("-{other} (not an option of Python)")),
            }
            if takes {
                break;
            }
            j += 1;
        }
        i += 1;
    }
    refused.push("no script (python reads code from stdin)".into());
    Err(refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(std::string::ToString::to_string).collect()
    }

    #[test]
    fn python_options_are_parsed_like_python() {
        assert_eq!(
            python_target(&s(&["-u", "-W", "ignore", "x.py", "-c", "arg"])),
            Ok(PyTarget::Script("x.py".into()))
        );
        assert_eq!(
            python_target(&s(&["-Bsmpkg.mod", "arg"])),
            Ok(PyTarget::Module("pkg.mod".into()))
        );
        assert_eq!(
            python_target(&s(&["-X", "utf8", "--", "-x.py"])),
            Ok(PyTarget::Script("-x.py".into()))
        );
        for (args, needle) in [
            (&["-c", "print(1)"][..], "-c"),
            (&["-Bc", "print(1)"], "-c"),
            (&["-i", "x.py"], "-i"),
            (&["-"], "stdin"),
            (&[], "no script"),
            (&["-u"], "no script"),
            (
                &["-X", "pycache_prefix=/tmp/p", "x.py"],
                "-X pycache_prefix",
            ),
            (&["-Xpresite=evil", "x.py"], "-X presite"),
            (&["--frobnicate", "x.py"], "--frobnicate"),
        ] {
            let e = python_target(&s(args)).expect_err("refused");
            assert!(e.iter().any(|r| r.contains(needle)), "{args:?}: {e:?}");
        }
    }
}
