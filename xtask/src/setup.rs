//! `cargo xtask setup`: installs what the build and the tests need, idempotently.
//!
//! Each step checks first and says what it does; a failing step says what to do about it.

use std::{
    fs,
    hash::{DefaultHasher, Hasher},
    path::{Path, PathBuf},
    process::Command,
};

use crate::{Result, root, run};

/// Debian packages the build, tests and demo use (openssh-client: `ssh-keygen -Y` verifies
/// signed pins, tests/tests/supply.rs; podman and its runtime pieces: the container backend's
/// tests run against podman's Docker-compatible API).
/// prometheus: promtool lints packaging/prometheus and tests/tests/agent.rs scrapes the agent
/// with a real Prometheus; systemd: systemd-analyze verifies the unit and systemd-sysusers makes
/// the server user; python3 and python3-venv: the tests' venv (see [`VENV_PYTHON`]), whose
/// interpreter `tests/tests/trust_agent.rs` also runs as other users.
/// qemu-system-x86 (with virtiofsd from qemu-system-common), busybox-static, xz-utils and
/// zstd: `cargo xtask kernels` boots Debian's kernels and unpacks their modules. acl: setfacl
/// lets the server user through a checkout's ancestors ([`server_user_reaches_workspace`]).
/// e2fsprogs (mkfs.ext4) and util-linux (mount -o loop): tests/tests/history.rs fills a small
/// loop-mounted file system holding the state dir.
/// clickhouse-server and rsyslog (with rsyslog-gnutls for TLS): the export sinks' tests start
/// their own instances of both (tests/tests/export.rs); only the binaries are used, never the
/// system services.
/// postgresql: `tests/tests/shipped_policies.rs` runs the shipped postgres policy's server against
/// a real database. chromium: the same file runs the shipped playwright policy's server
/// (@playwright/mcp) with Debian's browser, as the policy tells users to.
const DEBIAN_PACKAGES: &[&str] = &[
    "python3",
    "python3-venv",
    "iproute2",
    "procps",
    "openssh-client",
    "prometheus",
    "systemd",
    "podman",
    "runc",
    "conmon",
    "containernetworking-plugins",
    "iptables",
    "slirp4netns",
    "uidmap",
    // The start-up benchmark's yardstick (tests/tests/startup_bench.rs).
    "bubblewrap",
    "qemu-system-x86",
    "busybox-static",
    "xz-utils",
    "zstd",
    "acl",
    "e2fsprogs",
    "util-linux",
    "clickhouse-server",
    "clickhouse-client",
    "rsyslog",
    "rsyslog-gnutls",
    "postgresql",
    "chromium",
];

/// podman's default OCI runtime for mcp-guard's hosts: crun refuses hybrid cgroup hosts, runc
/// works (DESIGN.md).
const PODMAN_RUNTIME_CONF: &str = "/etc/containers/containers.conf.d/mcp-guard-runtime.conf";

/// Runs every step in order.
pub(crate) fn run_all() -> Result {
    debian_packages()?;
    podman_runtime()?;
    server_user()?;
    server_user_reaches_workspace()?;
    nightly_rust_src()?;
    bpf_linker()?;
    python_env()?;
    npm_servers()?;
    real_server_tools()?;
    println!("==> setup complete");
    Ok(())
}

fn output(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn debian_packages() -> Result {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        println!(
            "==> debian packages: all present ({})",
            DEBIAN_PACKAGES.join(", ")
        );
        return Ok(());
    }
    run("debian packages", "apt-get", &["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(&missing);
    run("debian packages", "apt-get", &args)
        .map_err(|e| format!("{e}\n  (apt-get needs root and the Debian mirrors)"))
}

fn podman_runtime() -> Result {
    let want = "# Written by `cargo xtask setup`: crun refuses hybrid cgroup hosts.\n[engine]\nruntime = \"runc\"\n";
    if fs::read_to_string(PODMAN_RUNTIME_CONF).is_ok_and(|have| have == want) {
        println!("==> podman runtime: runc ({PODMAN_RUNTIME_CONF})");
        return Ok(());
    }
    let dir = Path::new(PODMAN_RUNTIME_CONF)
        .parent()
        .ok_or("no parent directory")?;
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    fs::write(PODMAN_RUNTIME_CONF, want)
        .map_err(|e| format!("writing {PODMAN_RUNTIME_CONF}: {e} (setup needs root)"))?;
    println!("==> podman runtime: wrote {PODMAN_RUNTIME_CONF} (runc)");
    Ok(())
}

/// The system user servers run as when root starts them without sudo (agent/launch/src/
/// `server_user.rs`), from the sysusers.d file packaging ships.
const SERVER_USER: &str = "mcp-guard-server";

fn server_user() -> Result {
    if output("getent", &["passwd", SERVER_USER]).is_ok() {
        println!("==> server user: {SERVER_USER} present");
        return Ok(());
    }
    // systemd-sysusers reads a relative argument as a name in its own search path.
    let conf = root().join("packaging/sysusers.d/mcp-guard.conf");
    let conf = conf.to_str().ok_or("non-UTF-8 checkout path")?;
    run("server user", "systemd-sysusers", &[conf])
}

/// The tests' servers run as [`SERVER_USER`] from the workspace (its build, venv, `node_modules`
/// and fixtures), which may sit below a directory only root may enter (a checkout in /root, as
/// CI's is). Each such ancestor gets an ACL entry that lets that one user pass through it (`x`,
/// not read): what an admin does for a service user that must reach one tree.
fn server_user_reaches_workspace() -> Result {
    let root = root();
    let blocked: Vec<PathBuf> = root
        .ancestors()
        .filter(|dir| {
            let dir = dir.to_str().unwrap_or("/");
            output("runuser", &["-u", SERVER_USER, "--", "test", "-x", dir]).is_err()
        })
        .map(Path::to_path_buf)
        .collect();
    if blocked.is_empty() {
        println!("==> workspace: {SERVER_USER} can enter {}", root.display());
        return Ok(());
    }
    for dir in blocked.iter().rev() {
        let dir = dir.to_str().ok_or("non-UTF-8 checkout path")?;
        run(
            "workspace: let the server user pass through",
            "setfacl",
            &["-m", &format!("u:{SERVER_USER}:x"), dir],
        )?;
    }
    Ok(())
}

fn nightly_rust_src() -> Result {
    let installed = output(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    )
    .map_err(|e| {
        format!(
            "{e}\n  the eBPF build needs a nightly toolchain: `rustup toolchain install nightly`"
        )
    })?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        println!("==> nightly rust-src: present");
        return Ok(());
    }
    run(
        "nightly rust-src (eBPF programs build core from source)",
        "rustup",
        &["component", "add", "rust-src", "--toolchain", "nightly"],
    )
}

/// The nightly's own libLLVM, e.g. `libLLVM.so.22.1-rust-1.97.0-nightly`.
fn nightly_llvm() -> Result<(PathBuf, String)> {
    let sysroot = output("rustc", &["+nightly", "--print", "sysroot"])?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let entries = fs::read_dir(&lib).map_err(|e| format!("{}: {e}", lib.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("libLLVM.so.") {
            return Ok((lib.join(&name), name));
        }
    }
    Err(format!(
        "no libLLVM.so.* in the nightly's {}",
        lib.display()
    ))
}

/// bpf-linker, built against the nightly's own LLVM (the recipe in DESIGN.md).
fn bpf_linker() -> Result {
    let (llvm_lib, llvm_name) = nightly_llvm()?;
    // "libLLVM.so.22.1-rust-1.97.0-nightly" → major version 22 → cargo feature llvm-22.
    let major = llvm_name
        .trim_start_matches("libLLVM.so.")
        .split('.')
        .next()
        .filter(|m| m.chars().all(|c| c.is_ascii_digit()) && !m.is_empty())
        .ok_or_else(|| format!("cannot read the LLVM version from {llvm_name}"))?
        .to_string();
    let home = std::env::var("HOME").map_err(|_| "HOME is not set".to_string())?;
    // bpf-linker finds libLLVM through an rpath to this directory: it must stay where it is.
    let prefix = Path::new(&home).join(".local/share/mcp-guard/llvm");
    let stamp = prefix.join("bpf-linker.stamp");
    let wanted = format!("{llvm_name}\n");
    let linker_works = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if linker_works && fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        println!("==> bpf-linker: present, built against {llvm_name}");
        return Ok(());
    }
    let libdir = prefix.join("lib");
    fs::create_dir_all(&libdir).map_err(|e| format!("{}: {e}", libdir.display()))?;
    for link in ["libLLVM.so".to_string(), llvm_name.clone()] {
        let path = libdir.join(&link);
        let _ = fs::remove_file(&path);
        std::os::unix::fs::symlink(&llvm_lib, &path)
            .map_err(|e| format!("symlink {}: {e}", path.display()))?;
    }
    let prefix_str = prefix.to_string_lossy().into_owned();
    let feature = format!("llvm-{major}");
    println!(
        "==> bpf-linker: building against {llvm_name} (LLVM_PREFIX={prefix_str}), about a minute"
    );
    let status = Command::new("cargo")
        .args([
            "install",
            "--locked",
            "--force",
            "bpf-linker",
            "--version",
            "^0.13",
            "--no-default-features",
            "--features",
            &feature,
        ])
        .env("LLVM_PREFIX", &prefix)
        .status()
        .map_err(|e| format!("cannot start cargo install: {e}"))?;
    if !status.success() {
        return Err(format!(
            "installing bpf-linker failed ({status}); it needs crates.io and the nightly's \
             {llvm_name} (rustup toolchain install nightly)"
        ));
    }
    fs::write(&stamp, wanted).map_err(|e| format!("{}: {e}", stamp.display()))
}

/// The interpreter the venv is made from: Debian's, which every user may run. The tests' servers
/// run unprivileged (as mcp-guard-server or a test user), so an interpreter below a private home
/// (a pyenv in /root) would not start for them.
const VENV_PYTHON: &str = "/usr/bin/python3";

/// A venv at `.venv` with the MCP Python SDK and the PyPI servers the tests drive.
fn python_env() -> Result {
    let root = root();
    let requirements = root.join("tests/requirements.txt");
    let wanted = fs::read_to_string(&requirements)
        .map_err(|e| format!("{}: {e}", requirements.display()))?;
    let venv = root.join(".venv");
    let stamp = venv.join("requirements.stamp");
    let python = venv.join("bin/python");
    let python = python.to_str().ok_or("non-UTF-8 checkout path")?;
    // An older setup may have made it from another python3 the server user cannot run.
    if venv.join("bin/python").exists()
        && output("runuser", &["-u", SERVER_USER, "--", python, "-c", ""]).is_err()
    {
        println!(
            "==> python venv: {SERVER_USER} cannot run it; making it again from {VENV_PYTHON}"
        );
        fs::remove_dir_all(&venv).map_err(|e| format!("{}: {e}", venv.display()))?;
    }
    if venv.join("bin/python").exists() && fs::read_to_string(&stamp).ok() == Some(wanted.clone()) {
        println!("==> python venv: present with tests/requirements.txt");
        return Ok(());
    }
    if !venv.join("bin/python").exists() {
        run("python venv", VENV_PYTHON, &["-m", "venv", ".venv"])?;
    }
    run(
        "python packages (MCP SDK, PyPI servers)",
        ".venv/bin/pip",
        &[
            "install",
            "-q",
            "--disable-pip-version-check",
            "-r",
            "tests/requirements.txt",
        ],
    )?;
    fs::write(&stamp, wanted).map_err(|e| format!("{}: {e}", stamp.display()))
}

/// The npm MCP servers, exactly as locked in tests/package-lock.json.
fn npm_servers() -> Result {
    let root = root();
    let lock = fs::read_to_string(root.join("tests/package-lock.json"))
        .map_err(|e| format!("tests/package-lock.json: {e}"))?;
    let installed = root.join("tests/node_modules/.package-lock.json");
    let stamp = root.join("tests/node_modules/.mcp-guard.stamp");
    if installed.exists() && fs::read_to_string(&stamp).ok() == Some(lock.clone()) {
        println!("==> npm servers: present as locked");
        return Ok(());
    }
    run(
        "npm servers",
        "npm",
        &["ci", "--prefix", "tests", "--no-audit", "--no-fund"],
    )?;
    fs::write(&stamp, lock).map_err(|e| format!("{}: {e}", stamp.display()))
}

/// What the real servers of `tests/corpus/real_servers.json` list (tools, prompts, resources),
/// fetched into the target directory for the detection corpus's false-positive tests. Fetched
/// again whenever the pins, the table or the fetch script change.
fn real_server_tools() -> Result {
    let root = root();
    let inputs = [
        "tests/package-lock.json",
        "tests/requirements.txt",
        "tests/corpus/real_servers.json",
        "tests/fixtures/fetch_real_tools.py",
    ];
    let mut hasher = DefaultHasher::new();
    for input in inputs {
        let bytes = fs::read(root.join(input)).map_err(|e| format!("{input}: {e}"))?;
        hasher.write(&bytes);
    }
    let wanted = format!("{:016x}\n", hasher.finish());
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let out = target.join("real-tools");
    let stamp = out.join("inputs.stamp");
    if out.join("index.json").exists() && fs::read_to_string(&stamp).ok() == Some(wanted.clone()) {
        println!("==> real servers' tools: present in {}", out.display());
        return Ok(());
    }
    let out_arg = out.to_string_lossy().into_owned();
    run(
        "real servers' tools (detection corpus), about a minute",
        ".venv/bin/python",
        &["tests/fixtures/fetch_real_tools.py", &out_arg],
    )?;
    fs::write(&stamp, wanted).map_err(|e| format!("{}: {e}", stamp.display()))
}
