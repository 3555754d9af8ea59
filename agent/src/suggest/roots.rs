//! Where a file a server opened belongs, for a policy a person can review: the package or
//! install root it lies in (a `node_modules`, a Python environment, `/usr/lib/python3.11`, a
//! repository's `.git`),
//! the system directory that groups it, or else the file itself.

use std::path::Path;

/// The rule a path is granted through and why that rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Root {
    /// The directory or file the rule names.
    pub path: String,
    /// What it is (`node packages`, `python environment`, ...), for the comment.
    pub what: &'static str,
    /// True when `path` is the opened file itself (no enclosing root was found).
    pub loose: bool,
}

impl Root {
    fn dir(path: String, what: &'static str) -> Self {
        Root {
            path,
            what,
            loose: false,
        }
    }
}

/// Depth (in components) of the directory that groups a system path under each prefix, e.g.
/// `/usr/lib/python3.11/os.py` → `/usr/lib/python3.11` (3).
const SYSTEM: &[(&str, usize, &str)] = &[
    ("/usr/local/lib", 4, "installed software"),
    ("/usr/local/share", 4, "installed data"),
    ("/usr/lib", 3, "system libraries"),
    ("/usr/lib64", 3, "system libraries"),
    ("/usr/share", 3, "system data"),
    ("/usr/include", 3, "system headers"),
    ("/lib", 2, "system libraries"),
    ("/lib64", 2, "system libraries"),
    ("/opt", 2, "installed software"),
    ("/etc", 2, "host configuration"),
    ("/sys", 4, "kernel information"),
    ("/var/lib", 3, "system state"),
    ("/nix/store", 3, "nix store"),
];

/// The root `path` (absolute, as opened) is granted through. `exists` says whether a path is
/// on disk (the host's filesystem in use, a test's fake in tests).
pub(super) fn root_of(path: &str, exists: &dyn Fn(&Path) -> bool) -> Root {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let join = |n: usize| format!("/{}", comps[..n].join("/"));
    // A node package tree: the outermost node_modules holds every package the server loads.
    if let Some(i) = comps.iter().position(|c| *c == "node_modules") {
        return Root::dir(join(i + 1), "node packages");
    }
    // A git repository's metadata (objects, refs, config), read by git as a whole.
    if let Some(i) = comps.iter().position(|c| *c == ".git") {
        return Root::dir(join(i + 1), "git repository");
    }
    // A Python environment (venv, virtualenv, uv, pipx): its root holds pyvenv.cfg.
    for n in (1..comps.len()).rev() {
        if exists(&Path::new(&join(n)).join("pyvenv.cfg")) {
            return Root::dir(join(n), "python environment");
        }
    }
    if let Some(i) = comps
        .iter()
        .position(|c| *c == "site-packages" || *c == "dist-packages")
    {
        return Root::dir(join(i + 1), "python packages");
    }
    match comps.first().copied() {
        // The server's own process information: landlock cannot grant /proc/self alone, and the
        // jail gives the server a PID namespace of its own.
        Some("proc") => return Root::dir("/proc".into(), "own process information"),
        // The jail's private /tmp (empty at start, seen by this server only).
        Some("tmp") => return Root::dir("/tmp".into(), "private scratch space"),
        _ => {}
    }
    for (prefix, depth, what) in SYSTEM {
        let under = path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'));
        // A file directly in the grouping directory stays itself (e.g. /etc/passwd).
        if under && comps.len() > *depth {
            return Root::dir(join(*depth), what);
        }
    }
    Root {
        path: path.to_string(),
        what: "file",
        loose: true,
    }
}

/// A directory from which this many distinct loose files were opened is granted whole.
pub(super) const DIR_THRESHOLD: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;

    fn root(path: &str) -> String {
        let venv = |p: &Path| p == Path::new("/home/u/proj/.venv/pyvenv.cfg");
        root_of(path, &venv).path
    }

    #[test]
    fn collapses_to_package_and_install_roots() {
        for (path, want) in [
            (
                "/home/u/app/node_modules/@scope/pkg/dist/index.js",
                "/home/u/app/node_modules",
            ),
            (
                "/usr/lib/node_modules/npm/node_modules/semver/index.js",
                "/usr/lib/node_modules",
            ),
            (
                "/home/u/proj/.venv/lib/python3.11/site-packages/mcp/__init__.py",
                "/home/u/proj/.venv",
            ),
            ("/home/u/proj/.venv/bin/python3", "/home/u/proj/.venv"),
            (
                "/usr/local/lib/python3.11/dist-packages/x/y.py",
                "/usr/local/lib/python3.11/dist-packages",
            ),
            (
                "/usr/lib/python3.11/json/__init__.py",
                "/usr/lib/python3.11",
            ),
            (
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
                "/usr/lib/x86_64-linux-gnu",
            ),
            ("/usr/share/zoneinfo/Europe/Paris", "/usr/share/zoneinfo"),
            ("/etc/ssl/certs/ca-certificates.crt", "/etc/ssl"),
            ("/etc/passwd", "/etc/passwd"),
            ("/proc/self/maps", "/proc"),
            ("/tmp/x/y", "/tmp"),
            ("/sys/devices/system/cpu/online", "/sys/devices/system/cpu"),
            ("/dev/null", "/dev/null"),
            (
                "/home/u/src/repo/.git/objects/2a/1f",
                "/home/u/src/repo/.git",
            ),
            ("/home/u/app/package.json", "/home/u/app/package.json"),
        ] {
            assert_eq!(root(path), want, "{path}");
        }
    }

    #[test]
    fn a_prefix_is_matched_by_component() {
        // /usr/libexec is not under /usr/lib.
        assert_eq!(root("/usr/libexec/x/y/z"), "/usr/libexec/x/y/z");
    }
}
