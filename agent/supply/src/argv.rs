//! With `[pin]`, what a pinned interpreter is asked to run must be pinned too: the pinned entry
//! script is its script argument, and nothing in its arguments or environment makes it run code
//! from anywhere else (inline code, preloads, a REPL on stdin, a debugger port).
//!
//! What is refused, from the interpreters' own documentation (`python3 --help`, "Command line
//! and environment" of the Python docs; `node --help`, "Command-line API" of the Node.js docs):
//!
//! - Python (`python`, `python3`, `python3.X`, `pypy*`): `-c` (inline code), `-i` and
//!   `PYTHONINSPECT` (a REPL on stdin after the script), `-` or no script (code from stdin),
//!   `-m` of a module no pinned PyPI distribution provides, `-X` options other than
//!   [`PY_SAFE_X`] (`-X pycache_prefix` would load bytecode from elsewhere, `-X presite` preloads
//!   a module), options Python does not have; a script that is not a pinned file (or a file of a
//!   pinned npm package or PyPI distribution). Environment: `PYTHONSTARTUP`, `PYTHONHOME`,
//!   `PYTHONINSPECT`, `PYTHONUSERBASE`, `PYTHONPLATLIBDIR`, `PYTHONBREAKPOINT`,
//!   `PYTHONPYCACHEPREFIX`, `PYTHONEXECUTABLE`, `PYTHON_PRESITE`, and a `PYTHONPATH` entry outside
//!   the pinned trees (the pinned distributions' site-packages and npm packages).
//! - Node (`node`, `nodejs`): `-e`/`--eval`, `-p`/`--print`, `-r`/`--require`, `--import`,
//!   `--loader`/`--experimental-loader`, `-i`/`--interactive`, `-` or no script, `--inspect*` and
//!   `--debug-port` (a debugger anyone on the port can drive), `--env-file*` (may set
//!   `NODE_OPTIONS`), `--openssl-config` (loads engines), `--snapshot-blob`, `--build-snapshot*`,
//!   `--experimental-sea-config`, `--experimental-network-imports`, `--test` and `--run` (run
//!   other files or package scripts), and every option not in [`NODE_FLAGS`]/[`NODE_VALUES`]
//!   (an unknown option might take the next argument, and then the script would be another).
//!   Environment: `NODE_OPTIONS` with any of those or an unknown option, `NODE_PATH` outside
//!   the pinned trees, `NODE_REPL_EXTERNAL_MODULE`, `NODE_COMPILE_CACHE`.
//! - Shells and other interpreters (`sh`, `bash`, `perl`, `ruby`, `php`, `lua`, `bun`, `deno`,
//!   ...): the first argument must be the pinned script (their options are not checked).
//! - Programs that run whatever their arguments name (`env`, `sudo`, `timeout`, `npx`, `uvx`,
//!   `busybox`, ...): refused as the pinned program; pin what they would run.
//! - For every pinned program: `LD_*` (the dynamic loader), `GCONV_PATH`, `OPENSSL_CONF`,
//!   `OPENSSL_ENGINES`, `OPENSSL_MODULES`, `BASH_ENV`, `ENV`, `PERL5OPT`, `PERL5LIB`, `PERLLIB`,
//!   `RUBYOPT`, `RUBYLIB`, `JAVA_TOOL_OPTIONS`, `_JAVA_OPTIONS`, `JDK_JAVA_OPTIONS`.
//!
//! A `#!` script as the program is itself pinned; its interpreter and options are its first
//! line's. When that line is `#!/usr/bin/env NAME`, NAME is found on the server's PATH, so the
//! interpreter found must be a pinned file. Its arguments are the script's, not checked.
//!
//! A pinned Python, and a Python that gets secrets as a policy's `command` ([`hardening`]),
//! also gets `PYTHONNOUSERSITE=1` (the user's site-packages and its `.pth` files are not
//! pinned, and the caller owns them) and, with `-m`, `PYTHONSAFEPATH=1` (Python ≥ 3.11 then
//! does not put the working directory, which the caller chooses, before the module); a Node
//! gets `--no-global-search-paths` added to `NODE_OPTIONS` (a `require` of a missing optional
//! dependency would otherwise load `$HOME/.node_modules/NAME`).

use std::{
    io::Read,
    path::{Path, PathBuf},
};

use super::{
    Pins,
    pypi::{find_dist, record_path, record_rows},
};

mod node;
mod python;

pub use node::{NODE_FLAGS, NODE_VALUES};
use node::{node_options_refusals, node_target};
pub use python::PY_SAFE_X;
use python::{PyTarget, python_target};

/// Environment variables that make any program load code from elsewhere.
const ENV_ANY: &[&str] = &[
    "GCONV_PATH",
    "OPENSSL_CONF",
    "OPENSSL_ENGINES",
    "OPENSSL_MODULES",
    "BASH_ENV",
    "ENV",
    "PERL5OPT",
    "PERL5LIB",
    "PERLLIB",
    "RUBYOPT",
    "RUBYLIB",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "NODE_REPL_EXTERNAL_MODULE",
    "NODE_COMPILE_CACHE",
    "PYTHONSTARTUP",
    "PYTHONHOME",
    "PYTHONINSPECT",
    "PYTHONUSERBASE",
    "PYTHONPLATLIBDIR",
    "PYTHONBREAKPOINT",
    "PYTHONPYCACHEPREFIX",
    "PYTHONEXECUTABLE",
    "PYTHON_PRESITE",
];

/// Programs that run whatever their arguments name.
const RUNNERS: &[&str] = &[
    "env",
    "nice",
    "nohup",
    "timeout",
    "stdbuf",
    "setsid",
    "xargs",
    "busybox",
    "sudo",
    "doas",
    "su",
    "runuser",
    "setpriv",
    "chroot",
    "unshare",
    "nsenter",
    "strace",
    "ltrace",
    "gdb",
    "valgrind",
    "script",
    "time",
    "taskset",
    "ionice",
    "chrt",
    "flock",
    "capsh",
    "systemd-run",
    "npx",
    "npm",
    "pnpm",
    "pnpx",
    "yarn",
    "bunx",
    "uv",
    "uvx",
    "pipx",
];

/// Interpreters whose first argument is the script.
const SCRIPT_FIRST: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish", "csh", "tcsh", "perl", "ruby",
    "php", "lua", "luajit", "tclsh", "wish", "Rscript", "bun", "deno",
];

/// What kind of program the pinned one is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Python,
    Node,
    ScriptFirst,
    Runner,
    Other,
}

fn kind_of(path: &Path) -> Kind {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Kind::Other;
    };
    let versioned = |base: &str| {
        name.strip_prefix(base).is_some_and(|rest| {
            rest.chars()
                .all(|c| c.is_ascii_digit() || c == '.' || c == 'd' || c == 'm' || c == 't')
        })
    };
    if versioned("python") || versioned("pypy") {
        Kind::Python
    } else if name == "node" || name == "nodejs" {
        Kind::Node
    } else if RUNNERS.contains(&name) {
        Kind::Runner
    } else if SCRIPT_FIRST.iter().any(|s| versioned(s)) {
        Kind::ScriptFirst
    } else {
        Kind::Other
    }
}

/// A launch to check: the program as found on the PATH, its argv, the server's environment.
#[derive(Clone, Copy, Debug)]
pub struct Launch<'a> {
    /// The program (absolute, as found; symlinks not resolved).
    pub program: &'a Path,
    /// argv, argv[0] included.
    pub argv: &'a [String],
    /// The server's environment.
    pub env: &'a [(String, String)],
}

/// A launch that passed: variables to add to the server's environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checked {
    /// Protective settings (`PYTHONNOUSERSITE`, `PYTHONSAFEPATH`, `NODE_OPTIONS`).
    pub env: Vec<(String, String)>,
}

/// Checks a pinned launch; each refusal names what was refused and why.
pub fn check(pins: &Pins, launch: &Launch<'_>) -> Result<Checked, Vec<String>> {
    let mut refused = env_refusals(pins, launch.env);
    let mut module = false;
    let real = launch
        .program
        .canonicalize()
        .unwrap_or_else(|_| launch.program.to_path_buf());
    let mut kind = match kind_of(&real) {
        Kind::Other => kind_of(launch.program),
        k => k,
    };
    if let Some(line) = shebang_line(&real) {
        // The pinned script names its interpreter; its arguments are its own.
        match shebang_interpreter(&line, launch.env) {
            Ok((interp, via_env)) => {
                if via_env && !pinned_file(pins, &interp) {
                    refused.push(format!(
                        "`#!{line}` finds its interpreter on the server's PATH, at {}, which \
                         [pin] does not pin (pin it, or name it by path in the script)",
                        interp.display()
                    ));
                }
                kind = kind_of(&interp);
            }
            Err(e) => refused.push(e),
        }
    } else {
        let args = launch.argv.get(1..).unwrap_or_default();
        let name = real.display();
        match kind {
            Kind::Python => match python_target(args) {
                Ok(PyTarget::Script(s)) => {
                    if !pinned_file(pins, Path::new(&s)) {
                        refused.push(not_pinned(&name, &s));
                    }
                }
                Ok(PyTarget::Module(m)) => {
                    if pinned_module(pins, &m) {
                        module = true;
                    } else {
                        refused.push(format!(
                            "{name} -m {m}: no pinned PyPI distribution provides module {m}"
                        ));
                    }
                }
                Err(e) => refused.extend(e.into_iter().map(|e| format!("{name} {e}"))),
            },
            Kind::Node => match node_target(args) {
                Ok(s) => {
                    if !pinned_file(pins, Path::new(&s)) {
                        refused.push(not_pinned(&name, &s));
                    }
                }
                Err(e) => refused.extend(e.into_iter().map(|e| format!("{name} {e}"))),
            },
            Kind::ScriptFirst => match args.first() {
                Some(s) if !s.starts_with('-') => {
                    if !pinned_file(pins, Path::new(s)) {
                        refused.push(not_pinned(&name, s));
                    }
                }
                _ => refused.push(format!(
                    "{name}: with [pin] its first argument must be the pinned script (its \
                     options are not checked: put them in the script's #! line)"
                )),
            },
            Kind::Runner => refused.push(format!(
                "{name} runs whatever its arguments name: pin the program it would run and \
                 run that instead"
            )),
            Kind::Other => {}
        }
    }
    if refused.is_empty() {
        Ok(Checked {
            env: protect(kind, module, launch.env),
        })
    } else {
        Err(refused)
    }
}

/// What a launch that gets secrets runs with when no pins checked it (a policy's `command`):
/// see [`protect`].
pub fn hardening(
    program: &Path,
    argv: &[String],
    env: &[(String, String)],
) -> Vec<(String, String)> {
    let real = program
        .canonicalize()
        .unwrap_or_else(|_| program.to_path_buf());
    let kind = match shebang_line(&real).map(|line| shebang_interpreter(&line, env)) {
        Some(Ok((interp, _))) => return protect(kind_of(&interp), false, env),
        Some(Err(_)) => return Vec::new(),
        None => match kind_of(&real) {
            Kind::Other => kind_of(program),
            k => k,
        },
    };
    let module = kind == Kind::Python
        && matches!(
            python_target(argv.get(1..).unwrap_or_default()),
            Ok(PyTarget::Module(_))
        );
    protect(kind, module, env)
}

/// Settings that keep an interpreter from loading code from where the caller (who owns the
/// home, the working directory) can put it: a Python ignores the user's site-packages (its
/// `.pth` files run at every start) and, running a module (`module`), the working directory; a
/// Node skips the global module folders (`$HOME/.node_modules`, which a `require` of a missing
/// optional dependency would reach). `env` is the server's environment so far.
fn protect(kind: Kind, module: bool, env: &[(String, String)]) -> Vec<(String, String)> {
    match kind {
        Kind::Python => {
            let mut out = vec![("PYTHONNOUSERSITE".to_string(), "1".to_string())];
            if module {
                out.push(("PYTHONSAFEPATH".into(), "1".into()));
            }
            out
        }
        Kind::Node => {
            let options = env
                .iter()
                .find(|(k, _)| k == "NODE_OPTIONS")
                .map_or("", |(_, v)| v.as_str());
            let value = if options.trim().is_empty() {
                "--no-global-search-paths".to_string()
            } else {
                format!("{options} --no-global-search-paths")
            };
            vec![("NODE_OPTIONS".to_string(), value)]
        }
        _ => Vec::new(),
    }
}

fn not_pinned(program: &impl std::fmt::Display, script: &str) -> String {
    format!(
        "{program} {script}: the script is not a pinned file (nor a file of a pinned npm \
         package or PyPI distribution)"
    )
}

/// The variables of `env` that would make a program load code from outside the pinned trees
/// (the pinned PyPI distributions' site-packages and npm packages), each named with why.
pub fn env_refusals(pins: &Pins, env: &[(String, String)]) -> Vec<String> {
    let mut refused = Vec::new();
    let trees: Vec<PathBuf> = pins
        .pypi
        .iter()
        .map(|p| p.site_packages.clone())
        .chain(pins.npm.iter().map(|n| n.dir.clone()))
        .map(|p| p.canonicalize().unwrap_or(p))
        .collect();
    for (k, v) in env {
        if k.starts_with("LD_") || ENV_ANY.contains(&k.as_str()) {
            refused.push(format!("{k} (makes the program load code from elsewhere)"));
        } else if k == "PYTHONPATH" || k == "NODE_PATH" {
            for entry in v.split(':') {
                let inside = !entry.is_empty()
                    && Path::new(entry)
                        .canonicalize()
                        .is_ok_and(|p| trees.iter().any(|t| p.starts_with(t)));
                if !inside {
                    let shown = if entry.is_empty() {
                        "an empty entry (the working directory)".to_string()
                    } else {
                        entry.to_string()
                    };
                    refused.push(format!("{k}: {shown} is outside the pinned trees"));
                }
            }
        } else if k == "NODE_OPTIONS" {
            for (opt, why) in node_options_refusals(v) {
                refused.push(format!("NODE_OPTIONS: {opt} ({why})"));
            }
        }
    }
    refused
}

/// The first line of a `#!` script (without `#!`), if `path` is one.
fn shebang_line(path: &Path) -> Option<String> {
    let mut buf = [0u8; 256];
    let n = std::fs::File::open(path).ok()?.read(&mut buf).ok()?;
    let line = buf[..n].strip_prefix(b"#!")?;
    let line = line.split(|&b| b == b'\n').next()?;
    Some(String::from_utf8_lossy(line).trim().to_string())
}

/// The interpreter a `#!` line runs (real path) and whether `env` found it on the PATH.
fn shebang_interpreter(line: &str, env: &[(String, String)]) -> Result<(PathBuf, bool), String> {
    let mut words = line.split_whitespace();
    let Some(first) = words.next() else {
        return Err(format!("`#!{line}` names no interpreter"));
    };
    let interp = PathBuf::from(first);
    if interp.file_name().is_none_or(|n| n != "env") {
        return Ok((interp.canonicalize().unwrap_or(interp), false));
    }
    // `env [-S] [-i] [NAME=VALUE...] PROGRAM`: the first word that is neither.
    let Some(cmd) = words.find(|w| !w.starts_with('-') && !w.contains('=')) else {
        return Err(format!("`#!{line}` names no program for env to run"));
    };
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or("/usr/local/bin:/usr/bin:/bin", |(_, v)| v.as_str());
    let found = if cmd.contains('/') {
        Some(PathBuf::from(cmd))
    } else {
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(cmd))
            .find(|p| p.is_file())
    };
    match found {
        Some(p) => Ok((p.canonicalize().unwrap_or(p), true)),
        None => Err(format!(
            "`#!{line}`: {cmd} is not on the server's PATH ({path})"
        )),
    }
}

/// Whether `path` is a pinned file, a file of a pinned npm package or one a pinned PyPI
/// distribution's RECORD lists (relative paths are the working directory's, as the
/// interpreter resolves them).
fn pinned_file(pins: &Pins, path: &Path) -> bool {
    let Ok(real) = path.canonicalize() else {
        return false;
    };
    let canon = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    pins.files.iter().any(|f| canon(&f.path) == real)
        || pins.npm.iter().any(|n| real.starts_with(canon(&n.dir)))
        || pins.pypi.iter().any(|p| {
            record_of(&p.site_packages, &p.name, &p.version)
                .iter()
                .any(|rel| canon(&record_path(&p.site_packages, rel)) == real)
        })
}

/// Whether a pinned PyPI distribution provides the top-level module of `module`.
fn pinned_module(pins: &Pins, module: &str) -> bool {
    let top = module.split('.').next().unwrap_or(module);
    if top.is_empty() {
        return false;
    }
    pins.pypi.iter().any(|p| {
        record_of(&p.site_packages, &p.name, &p.version)
            .iter()
            .any(|rel| {
                let first = rel.split('/').next().unwrap_or_default();
                (first == top && rel.contains('/'))
                    || first == format!("{top}.py")
                    || (first.starts_with(&format!("{top}.")) && first.ends_with(".so"))
            })
    })
}

/// The paths a pinned distribution's RECORD lists (empty when it cannot be read: the pins'
/// own verification reports that).
fn record_of(site: &Path, name: &str, version: &str) -> Vec<String> {
    find_dist(site, name, version)
        .and_then(|d| std::fs::read_to_string(d.join("RECORD")).ok())
        .map(|t| record_rows(&t).into_iter().map(|(p, _)| p).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_guard_policy::FilePin;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(std::string::ToString::to_string).collect()
    }

    #[test]
    fn a_python_with_secrets_ignores_the_callers_site_and_working_directory() {
        let py = Path::new("/usr/bin/python3.11");
        assert_eq!(
            hardening(py, &s(&["python3", "-m", "srv"]), &[]),
            vec![
                ("PYTHONNOUSERSITE".to_string(), "1".to_string()),
                ("PYTHONSAFEPATH".to_string(), "1".to_string())
            ]
        );
        assert_eq!(hardening(py, &s(&["python3", "/srv/x.py"]), &[]).len(), 1);
        let node = Path::new("/usr/bin/node");
        assert_eq!(
            hardening(node, &s(&["node", "x.js"]), &[]),
            vec![(
                "NODE_OPTIONS".to_string(),
                "--no-global-search-paths".to_string()
            )]
        );
        let passed = vec![("NODE_OPTIONS".to_string(), "--no-warnings".to_string())];
        assert_eq!(
            hardening(node, &s(&["node", "x.js"]), &passed)[0].1,
            "--no-warnings --no-global-search-paths"
        );
    }

    #[test]
    fn code_loading_environment_is_named() {
        let pins = Pins::default();
        let env = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        for (k, v, needle) in [
            ("NODE_OPTIONS", "--require /tmp/evil.js", "--require"),
            ("NODE_OPTIONS", "-r=/tmp/evil.js", "-r"),
            ("NODE_OPTIONS", "\"--import\" x", "--import"),
            ("NODE_OPTIONS", "--frobnicate", "does not know"),
            ("PYTHONSTARTUP", "/tmp/evil.py", "PYTHONSTARTUP"),
            ("PYTHONHOME", "/tmp", "PYTHONHOME"),
            ("PYTHONINSPECT", "1", "PYTHONINSPECT"),
            ("PYTHONPATH", "/tmp", "outside the pinned trees"),
            ("PYTHONPATH", "", "empty entry"),
            ("LD_PRELOAD", "/tmp/x.so", "LD_PRELOAD"),
            ("NODE_PATH", "/tmp", "outside"),
        ] {
            let r = env_refusals(&pins, &env(k, v));
            assert!(r.iter().any(|x| x.contains(needle)), "{k}={v}: {r:?}");
            // Names and options, never the values of other variables.
        }
        assert!(
            env_refusals(
                &pins,
                &env("NODE_OPTIONS", "--max-old-space-size=100 --no-warnings")
            )
            .is_empty()
        );
        assert!(env_refusals(&pins, &env("PATH", "/usr/bin")).is_empty());
        // Inside a pinned tree: allowed.
        let dir = std::env::temp_dir().join(format!("argv-tree-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("lib")).expect("mkdir");
        let pins = Pins {
            npm: vec![mcp_guard_policy::NpmPin {
                dir: dir.clone(),
                name: "x".into(),
                version: "1".into(),
                integrity: None,
                tree: String::new(),
            }],
            ..Pins::default()
        };
        assert!(
            env_refusals(
                &pins,
                &env("NODE_PATH", &dir.join("lib").display().to_string())
            )
            .is_empty()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_script_must_be_pinned_and_runners_are_refused() {
        let dir = std::env::temp_dir().join(format!("argv-pins-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let entry = dir.join("entry.js");
        let other = dir.join("other.js");
        std::fs::write(&entry, "1").expect("write");
        std::fs::write(&other, "2").expect("write");
        let node = dir.join("node");
        std::fs::write(&node, "\x7fELF").expect("write");
        let pins = Pins {
            executable: Some("sha256:x".into()),
            files: vec![FilePin {
                path: entry.clone(),
                digest: "sha256:y".into(),
            }],
            ..Pins::default()
        };
        let run = |program: &Path, args: &[&str], env: &[(String, String)]| {
            let mut argv = vec![program.display().to_string()];
            argv.extend(args.iter().map(std::string::ToString::to_string));
            check(
                &pins,
                &Launch {
                    program,
                    argv: &argv,
                    env,
                },
            )
        };
        let e = entry.display().to_string();
        let o = other.display().to_string();
        let ok = run(&node, &[&e, "--port", "1"], &[]).expect("pinned script");
        assert_eq!(
            ok.env,
            vec![("NODE_OPTIONS".into(), "--no-global-search-paths".into())]
        );
        let r = run(&node, &[&o], &[]).expect_err("unpinned script");
        assert!(r[0].contains("not a pinned file"), "{r:?}");
        let r = run(&node, &["-e", "1"], &[]).expect_err("inline");
        assert!(r[0].contains("-e (runs inline code)"), "{r:?}");
        let python = dir.join("python3.11");
        std::fs::write(&python, "\x7fELF").expect("write");
        let ok = run(&python, &[&e], &[]).expect("pinned script");
        assert_eq!(ok.env, vec![("PYTHONNOUSERSITE".into(), "1".into())]);
        let r = run(&python, &["-m", "nothing_pins_this"], &[]).expect_err("module");
        assert!(r[0].contains("no pinned PyPI distribution"), "{r:?}");
        let env = dir.join("env");
        std::fs::write(&env, "\x7fELF").expect("write");
        let r = run(&env, &["node", &e], &[]).expect_err("runner");
        assert!(r[0].contains("runs whatever its arguments name"), "{r:?}");
        let sh = dir.join("bash");
        std::fs::write(&sh, "\x7fELF").expect("write");
        let r = run(&sh, &["-c", "echo"], &[]).expect_err("shell -c");
        assert!(
            r[0].contains("first argument must be the pinned script"),
            "{r:?}"
        );
        // A pinned #! script: its arguments are its own, its `env` interpreter must be pinned.
        let script = dir.join("server");
        std::fs::write(&script, "#!/usr/bin/env nodeish-t18\n").expect("write");
        let path = vec![("PATH".to_string(), dir.display().to_string())];
        std::fs::write(dir.join("nodeish-t18"), "\x7fELF").expect("write");
        let r = run(&script, &["-e", "anything"], &path).expect_err("env interpreter");
        assert!(r[0].contains("does not pin"), "{r:?}");
        let script2 = dir.join("server2");
        std::fs::write(&script2, format!("#!{}\n", node.display())).expect("write");
        assert!(run(&script2, &["-e", "anything"], &path).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
