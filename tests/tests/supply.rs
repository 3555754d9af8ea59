//! Supply-chain pins (`[pin]`): real servers pinned with `mcp-guard policy pin` launch under
//! `mcp-guard exec` and answer the MCP SDK client; a changed byte in a pinned package, a wrong
//! executable digest, a missing or bad SSH signature refuse the launch (exit 77, nothing runs)
//! and say which file changed, what was expected and what was found. A pinned interpreter told
//! to run inline code or a preload instead of its pinned script is refused the same way; the
//! bytecode cache is compiled by an unprivileged process from the interpreter's verified
//! descriptor, so an interpreter swapped in after the check never compiles it.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use mcp_guard_tests::{bench::record, median};
use mcp_guard_tests::{
    describe, fixture, fresh_dir, mcp_guard, npm_server, python, require_root, workspace_root,
};
use serde_json::Value;

/// A fresh directory outside /tmp (the jail gives the server a private /tmp of its own).
fn data_dir(tag: &str) -> PathBuf {
    fresh_dir("supply", tag)
}

/// The venv's console script (unresolved: what a client config names).
fn time_server() -> PathBuf {
    let p = workspace_root().join(".venv/bin/mcp-server-time");
    assert!(
        p.exists(),
        "{} missing: run `cargo xtask setup`",
        p.display()
    );
    p
}

/// The shipped policy NAME with `extra` dirs (resolved) added to read and exec, `writable` to
/// write, and `pin` (a `[pin]` table) appended.
fn policy(dir: &Path, name: &str, extra: &[PathBuf], writable: &[PathBuf], pin: &str) -> PathBuf {
    let text = std::fs::read_to_string(workspace_root().join(format!("policies/{name}.toml")))
        .expect("read shipped policy");
    let mut dirs = vec![
        workspace_root().join("tests/node_modules"),
        workspace_root().join(".venv"),
    ];
    dirs.extend(extra.iter().cloned());
    let list = |v: &[PathBuf]| -> String {
        v.iter()
            .map(|p| {
                let p = p.canonicalize().unwrap_or_else(|_| p.clone());
                format!("  \"{}\",\n", p.display())
            })
            .collect()
    };
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(line);
        out.push('\n');
        match line {
            "read = [" | "exec = [" => out.push_str(&list(&dirs)),
            "write = [" => out.push_str(&list(writable)),
            _ => {}
        }
    }
    out.push('\n');
    out.push_str(pin);
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, out).expect("write policy");
    let check = Command::new(mcp_guard())
        .args(["policy", "check"])
        .arg(&path)
        .output()
        .expect("run policy check");
    assert!(check.status.success(), "{}", describe(&check));
    path
}

/// `mcp-guard --state-dir STATE policy pin -- COMMAND`: the `[pin]` table it prints.
fn pin(state: &Path, command: &[&Path]) -> String {
    pin_with(state, &[], command)
}

/// [`pin`] with options.
fn pin_with(state: &Path, options: &[&str], command: &[&Path]) -> String {
    let out = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(state)
        .args(["policy", "pin"])
        .args(options)
        .arg("--")
        .args(command)
        .output()
        .expect("run policy pin");
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8(out.stdout).expect("UTF-8 pins")
}

/// The SDK client against `mcp-guard exec --policy P -- COMMAND`.
fn client(state: &Path, policy: &Path, call: Option<(&str, &str)>, command: &[&Path]) -> Output {
    let mut c = Command::new(python());
    c.arg(fixture("mcp_client.py"));
    if let Some((tool, args)) = call {
        c.args(["--call", tool, args]);
    }
    c.arg("--")
        .arg(mcp_guard())
        .arg("--state-dir")
        .arg(state)
        .args(["exec", "--policy"])
        .arg(policy)
        .arg("--")
        .args(command)
        .output()
        .expect("run the MCP client")
}

fn answer(out: &Output) -> Value {
    assert!(out.status.success(), "{}", describe(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(out)))
}

/// `mcp-guard exec` with stdin closed: for launches that must be refused.
fn exec(state: &Path, policy: &Path, command: &[&Path]) -> Output {
    Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(state)
        .args(["exec", "--policy"])
        .arg(policy)
        .arg("--")
        .args(command)
        .stdin(Stdio::null())
        .output()
        .expect("run mcp-guard exec")
}

fn assert_refused(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{}", describe(out));
    assert!(out.stdout.is_empty(), "{}", describe(out));
    assert!(stderr.contains("refusing to launch"), "{}", describe(out));
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks {n:?}\n{}", describe(out));
    }
}

fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("run cp");
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

/// The pinned value after `key = ` on the first line that has it.
fn pinned<'a>(pins: &'a str, key: &str) -> &'a str {
    pins.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no {key} in\n{pins}"))
}

#[test]
fn pinned_time_server_answers_and_a_wrong_executable_digest_refuses() {
    require_root();
    let dir = data_dir("time");
    let server = time_server();
    let pins = pin(&dir.join("state"), &[&server]);
    assert!(pins.contains("[[pin.pypi]]"), "{pins}");
    assert!(pins.contains("name = \"mcp-server-time\""), "{pins}");
    // Its dependencies too: the MCP SDK it imports.
    assert!(pins.contains("name = \"mcp\""), "{pins}");
    let good = policy(&dir, "time", &[], &[], &pins);
    let out = client(
        &dir.join("state"),
        &good,
        Some(("get_current_time", "{\"timezone\": \"UTC\"}")),
        &[&server],
    );
    let a = answer(&out);
    assert_eq!(a["server"]["name"], "mcp-time", "{a}");
    assert_eq!(a["call"]["is_error"], false, "{a}");
    assert!(
        a["call"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("UTC")),
        "{a}"
    );
    // The server's bytecode comes from the cache mcp-guard compiled from the verified sources
    // (`policy pin` built it), not from the __pycache__ dirs next to them.
    let site = workspace_root()
        .join(".venv/lib/python3.11/site-packages")
        .canonicalize()
        .expect("site-packages");
    let cache = std::fs::read_dir(dir.join("state/pycache"))
        .expect("a pycache dir in the state dir")
        .map(|e| e.expect("entry").path())
        .next()
        .expect("one cache");
    assert!(cache.join(".complete").exists(), "{cache:?}");
    let mirrored = cache
        .join(site.strip_prefix("/").expect("absolute"))
        .join("mcp_server_time/server.cpython-311.pyc");
    assert!(
        mirrored.exists(),
        "no compiled server module at {mirrored:?}"
    );

    // One hex digit of the executable's digest changed.
    let right = pinned(&pins, "executable");
    let last = right.chars().last().expect("digest");
    let wrong = format!(
        "{}{}",
        &right[..right.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    let bad = policy(&dir, "time", &[], &[], &pins.replacen(right, &wrong, 1));
    let out = exec(&dir.join("state"), &bad, &[&server]);
    let real = server.canonicalize().expect("real script");
    assert_refused(
        &out,
        &[
            &real.display().to_string(),
            &format!("expected {wrong}, found {right}"),
            "(the executable)",
        ],
    );

    // --observe enforces nothing: the mismatch is said, and the server runs (stdin closed: it
    // ends at once, with its own status, not 77).
    let out = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["exec", "--observe", "--policy"])
        .arg(&bad)
        .arg("--")
        .arg(&server)
        .stdin(Stdio::null())
        .output()
        .expect("run mcp-guard exec --observe");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(77), "{}", describe(&out));
    assert!(
        stderr.contains("NOT ENFORCED (observe): supply-chain pins of policy time do not verify"),
        "{}",
        describe(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pinned_filesystem_server_answers() {
    require_root();
    let dir = data_dir("fs");
    let served = dir.join("served");
    std::fs::create_dir_all(&served).expect("mkdir served");
    std::fs::write(served.join("hello.txt"), "pinned hello").expect("write");
    let node = Path::new("/usr/bin/node");
    let entry = npm_server("@modelcontextprotocol/server-filesystem");
    let pins = pin(&dir.join("state"), &[node, &entry, &served]);
    assert!(pins.contains("[[pin.npm]]"), "{pins}");
    assert!(pins.contains("integrity = \"sha512-"), "{pins}");
    let p = policy(
        &dir,
        "filesystem",
        &[],
        std::slice::from_ref(&served),
        &pins,
    );
    let file = served.join("hello.txt");
    let args = format!("{{\"path\": \"{}\"}}", file.display());
    let out = client(
        &dir.join("state"),
        &p,
        Some(("read_text_file", &args)),
        &[node, &entry, &served],
    );
    let a = answer(&out);
    assert_eq!(a["call"]["text"], "pinned hello", "{a}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_changed_byte_in_a_pinned_npm_package_or_its_dependency_refuses_naming_the_file() {
    require_root();
    let dir = data_dir("npm-tamper");
    // A copy of the test environment's node_modules (the server and its dependencies).
    let installed = npm_server("@modelcontextprotocol/server-filesystem");
    let modules = workspace_root()
        .join("tests/node_modules")
        .canonicalize()
        .expect("tests/node_modules");
    std::fs::create_dir_all(dir.join("node_modules")).expect("mkdir node_modules");
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", modules.display()))
        .arg(dir.join("node_modules"))
        .status()
        .expect("run cp");
    assert!(status.success(), "copying node_modules failed");
    let rel = installed
        .canonicalize()
        .expect("entry")
        .strip_prefix(&modules)
        .expect("entry below node_modules")
        .to_path_buf();
    let entry = dir.join("node_modules").join(rel);
    let pkg = dir.join("node_modules/@modelcontextprotocol/server-filesystem");
    let sdk = dir.join("node_modules/@modelcontextprotocol/sdk");
    let node = Path::new("/usr/bin/node");
    let pins = pin(&dir.join("state"), &[node, &entry, &dir]);
    for p in [&pkg, &sdk] {
        assert!(
            pins.contains(&format!("dir = \"{}\"", real(p))),
            "{p:?} not pinned:\n{pins}"
        );
    }
    let here = std::slice::from_ref(&dir);
    let p = policy(&dir, "filesystem", here, here, &pins);
    let state = dir.join("state");

    // The pinned copy answers.
    let a = answer(&client(&state, &p, None, &[node, &entry, &dir]));
    assert!(a["tools"].as_array().is_some_and(|t| !t.is_empty()), "{a}");

    // The entry changes by one statement that would leave a mark if it ever ran.
    let marker = dir.join("ran");
    let text = std::fs::read_to_string(&entry).expect("read entry");
    let (shebang, rest) = text.split_once('\n').expect("a first line");
    let planted = format!(
        "{shebang}\nimport {{ writeFileSync as w }} from 'fs'; w({:?}, 'x');\n{rest}",
        marker.display().to_string()
    );
    std::fs::write(&entry, planted).expect("tamper");
    let out = exec(&state, &p, &[node, &entry, &dir]);
    assert_refused(
        &out,
        &[
            &format!("{}: expected {}", real(&entry), pinned(&pins, "digest")),
            "(a pinned file)",
            &format!("{}: expected {}", real(&pkg), tree_of(&pins, &pkg)),
            "installed tree of npm package @modelcontextprotocol/server-filesystem",
        ],
    );
    assert!(!marker.exists(), "the tampered server ran");
    std::fs::write(&entry, text).expect("restore");

    // One byte of a file in a dependency (the MCP SDK the server imports).
    let sdk_file = dir.join("node_modules/@modelcontextprotocol/sdk/package.json");
    let mut bytes = std::fs::read(&sdk_file).expect("read the SDK's package.json");
    let last = bytes.len() - 1;
    bytes[last] = if bytes[last] == b'\n' { b' ' } else { b'\n' };
    std::fs::write(&sdk_file, bytes).expect("tamper the SDK");
    let out = exec(&state, &p, &[node, &entry, &dir]);
    assert_refused(
        &out,
        &[
            &format!("{}: expected {}", real(&sdk), tree_of(&pins, &sdk)),
            "installed tree of npm package @modelcontextprotocol/sdk@",
            // The file itself, from the listing `policy pin` kept (its digest is the pin).
            &format!("{}: expected sha256:", real(&sdk_file)),
            "(a file of npm package @modelcontextprotocol/sdk@",
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `tree` pinned for the npm package in `dir`.
fn tree_of<'a>(pins: &'a str, dir: &Path) -> &'a str {
    let at = pins
        .find(&format!("dir = \"{}\"", real(dir)))
        .unwrap_or_else(|| panic!("{} not pinned", dir.display()));
    pinned(&pins[at..], "tree")
}

#[test]
fn a_changed_byte_in_a_pinned_pypi_package_refuses_naming_the_file() {
    require_root();
    let dir = data_dir("pypi-tamper");
    // A copy of the distribution laid out like an environment (RECORD names ../../../bin/...).
    let real_site = workspace_root()
        .join(".venv/lib/python3.11/site-packages")
        .canonicalize()
        .expect("the venv's site-packages (python3.11)");
    let site = dir.join("env/lib/python3.11/site-packages");
    std::fs::create_dir_all(&site).expect("mkdir site");
    std::fs::create_dir_all(dir.join("env/bin")).expect("mkdir bin");
    for e in std::fs::read_dir(&real_site).expect("list site-packages") {
        let name = e.expect("entry").file_name();
        if name.to_string_lossy().starts_with("mcp_server_time") {
            copy_tree(&real_site.join(&name), &site);
        }
    }
    std::fs::copy(time_server(), dir.join("env/bin/mcp-server-time")).expect("copy script");
    // Only the distribution itself: the copy holds none of its dependencies.
    let pins = pin_with(&dir.join("state"), &["--no-deps"], &[&time_server()]).replace(
        &format!("site_packages = \"{}\"", real_site.display()),
        &format!("site_packages = \"{}\"", site.display()),
    );
    assert!(pins.contains(&site.display().to_string()), "{pins}");
    let p = policy(&dir, "time", &[], &[], &pins);
    let state = dir.join("state");
    let server = time_server();

    let source = site.join("mcp_server_time/server.py");
    let mut bytes = std::fs::read(&source).expect("read server.py");
    bytes[0] ^= 0x20;
    std::fs::write(&source, &bytes).expect("tamper server.py");
    let out = exec(&state, &p, &[&server]);
    assert_refused(
        &out,
        &[
            &format!("{}: expected sha256=", source.display()),
            "a file of PyPI mcp-server-time==",
        ],
    );
    bytes[0] ^= 0x20;
    std::fs::write(&source, &bytes).expect("restore server.py");

    // A module RECORD does not list, dropped into the package, is refused too.
    let planted = site.join("mcp_server_time/sitecustomize.py");
    std::fs::write(&planted, "import os\n").expect("plant");
    let out = exec(&state, &p, &[&server]);
    assert_refused(&out, &[&planted.display().to_string(), "an unlisted file"]);
    std::fs::remove_file(&planted).expect("unplant");

    // A .pth file in site-packages runs at every Python start: one no pinned RECORD lists is
    // refused.
    let pth = site.join("zz-persist.pth");
    std::fs::write(&pth, "import os\n").expect("plant .pth");
    let out = exec(&state, &p, &[&server]);
    assert_refused(
        &out,
        &[
            &format!(
                "{}: expected listed in a pinned distribution's RECORD",
                pth.display()
            ),
            "run by every Python start",
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// An ed25519 key pair and an `allowed_signers` file naming `identity`.
fn keypair(dir: &Path, tag: &str, identity: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(tag);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", tag, "-f"])
        .arg(&key)
        .output()
        .expect("run ssh-keygen (openssh-client)");
    assert!(out.status.success(), "{}", describe(&out));
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("public key");
    let signers = dir.join(format!("{tag}.allowed_signers"));
    std::fs::write(&signers, format!("{identity} {public}")).expect("write allowed_signers");
    (key, signers)
}

/// Signs `mcp-guard policy manifest POLICY` with `key` into `sig`.
fn sign(policy: &Path, key: &Path, sig: &Path) {
    let manifest = Command::new(mcp_guard())
        .args(["policy", "manifest"])
        .arg(policy)
        .output()
        .expect("run policy manifest");
    assert!(manifest.status.success(), "{}", describe(&manifest));
    let mut child = Command::new("ssh-keygen")
        .args(["-Y", "sign", "-n", "mcp-guard-pins", "-f"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ssh-keygen -Y sign");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&manifest.stdout)
            .expect("feed the manifest");
    }
    let out = child.wait_with_output().expect("ssh-keygen -Y sign");
    assert!(out.status.success(), "{}", describe(&out));
    std::fs::write(sig, out.stdout).expect("write signature");
}

#[test]
fn signed_pins_launch_and_unsigned_or_badly_signed_refuse() {
    require_root();
    let dir = data_dir("sig");
    let (key, signers) = keypair(&dir, "release", "release@example.com");
    let (other, _) = keypair(&dir, "mallory", "mallory@example.com");
    let sig = dir.join("time.pins.sig");
    let server = time_server();
    let pins = format!(
        "{}\n[pin.signature]\nallowed_signers = \"{}\"\nidentity = \"release@example.com\"\n\
         file = \"{}\"\n",
        pin(&dir.join("state"), &[&server]),
        signers.display(),
        sig.display()
    );
    let p = policy(&dir, "time", &[], &[], &pins);
    let state = dir.join("state");

    // Missing signature: refused as unsigned.
    let out = exec(&state, &p, &[&server]);
    assert_refused(&out, &["unsigned", &sig.display().to_string()]);

    // Signed by a key the allowed_signers file does not hold: refused.
    sign(&p, &other, &sig);
    let out = exec(&state, &p, &[&server]);
    assert_refused(&out, &["bad signature", "release@example.com"]);

    // Signed by the release key: launches and answers.
    sign(&p, &key, &sig);
    let a = answer(&client(&state, &p, None, &[&server]));
    assert_eq!(a["server"]["name"], "mcp-time", "{a}");

    // The pins edited after signing (a pin dropped): the signature no longer covers them.
    let edited = std::fs::read_to_string(&p).expect("read policy").replacen(
        "[[pin.file]]",
        "[[pin.file_removed]]",
        1,
    );
    assert!(
        edited.contains("file_removed"),
        "no [[pin.file]] in the pins"
    );
    let without_file: String = {
        // Drop the [[pin.file]] table (three lines) instead of renaming it.
        let mut out = String::new();
        let mut skip = 0;
        for line in edited.lines() {
            if line == "[[pin.file_removed]]" {
                skip = 3;
            }
            if skip > 0 {
                skip -= 1;
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
        out
    };
    std::fs::write(&p, without_file).expect("edit policy");
    let out = exec(&state, &p, &[&server]);
    assert_refused(&out, &["bad signature"]);
    let _ = std::fs::remove_dir_all(&dir);
}

fn real(p: &Path) -> String {
    p.canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .display()
        .to_string()
}

/// Benchmark (run with `--ignored --nocapture`): what pinning adds to a launch. In one run, for
/// the time server (35 PyPI distributions with dependencies) and the filesystem server (107 npm
/// packages): the in-process cost of `supply::verify`, and a whole session (start, initialize,
/// tools/list) under `exec` with and without the pins; medians, and the ratio.
#[test]
#[ignore = "benchmark: cargo xtask bench (root, release)"]
fn bench_pin_verification() {
    require_root();
    let dir = data_dir("bench");
    let node = Path::new("/usr/bin/node");
    let entry = npm_server("@modelcontextprotocol/server-filesystem");
    let time = time_server();
    let cases: [(&str, Vec<&Path>); 2] = [
        ("time", vec![&time]),
        ("filesystem", vec![node, &entry, &dir]),
    ];
    for (name, command) in cases {
        let pins = pin(&dir.join("state"), &command);
        let args: Vec<String> = command.iter().map(|p| p.display().to_string()).collect();
        let (model, _) = mcp_guard_supply::generate(command[0], &args, true).expect("generate");
        let verify: Vec<f64> = (0..10)
            .map(|_| {
                let t = std::time::Instant::now();
                mcp_guard_supply::verify(&model, command[0], None).expect("pins verify");
                t.elapsed().as_secs_f64()
            })
            .collect();
        let plain = policy(&dir, name, &[], &[], "");
        let plain_copy = dir.join(format!("{name}-plain.toml"));
        std::fs::rename(&plain, &plain_copy).expect("keep the unpinned policy");
        let pinned_policy = policy(&dir, name, &[], &[], &pins);
        let state = dir.join("state");
        let mut with = Vec::new();
        let mut without = Vec::new();
        for _ in 0..5 {
            for (p, out) in [(&plain_copy, &mut without), (&pinned_policy, &mut with)] {
                let t = std::time::Instant::now();
                answer(&client(&state, p, None, &command));
                out.push(t.elapsed().as_secs_f64());
            }
        }
        let (w, wo) = (median(with), median(without));
        println!(
            "{name}: {} pins; supply::verify median {:.1} ms; session with pins {:.3} s, \
             without {:.3} s, ratio {:.3}",
            model.npm.len() + model.pypi.len() + model.files.len() + 1,
            median(verify) * 1e3,
            w,
            wo,
            w / wo
        );
        record(
            "supply",
            &format!("{name}: session with pins/without"),
            w / wo,
            "ratio",
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sets up, in `site`, a one-module distribution `pinnedpkg` 1.0 whose `__init__.py` prints
/// "honest!", with a planted `__pycache__` .pyc that prints "planted" and carries the source's
/// mtime and size (so a plain Python loads it instead of the source). Returns the sha256 of
/// its RECORD.
fn plant_pyc(site: &Path) -> String {
    const SETUP: &str = r#"
import base64, hashlib, os, py_compile, sys
site = sys.argv[1]
pkg = os.path.join(site, "pinnedpkg")
info = os.path.join(site, "pinnedpkg-1.0.dist-info")
os.makedirs(pkg, exist_ok=True)
os.makedirs(info, exist_ok=True)
src = os.path.join(pkg, "__init__.py")
with open(src, "w") as f:
    f.write('print("planted")\n')
py_compile.compile(src, doraise=True)
mtime = os.stat(src).st_mtime
with open(src, "w") as f:
    f.write('print("honest!")\n')
os.utime(src, (mtime, mtime))
with open(os.path.join(info, "METADATA"), "w") as f:
    f.write("Metadata-Version: 2.1\nName: pinnedpkg\nVersion: 1.0\n\n")
def row(rel):
    data = open(os.path.join(site, rel), "rb").read()
    h = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{rel},sha256={h},{len(data)}\n"
record = os.path.join(info, "RECORD")
with open(record, "w") as f:
    f.write(row("pinnedpkg/__init__.py") + row("pinnedpkg-1.0.dist-info/METADATA"))
    f.write("pinnedpkg-1.0.dist-info/RECORD,,\n")
print("sha256:" + hashlib.sha256(open(record, "rb").read()).hexdigest())
"#;
    std::fs::create_dir_all(site).expect("mkdir site");
    let out = Command::new(python())
        .args(["-c", SETUP])
        .arg(site)
        .output()
        .expect("run the setup script");
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8(out.stdout)
        .expect("UTF-8")
        .trim()
        .to_string()
}

#[test]
fn a_planted_bytecode_file_next_to_pinned_sources_is_never_run() {
    require_root();
    let dir = data_dir("pyc");
    let site = dir.join("site");
    let record = plant_pyc(&site);
    let py = python();
    // With [pin] the interpreter runs a pinned script (inline code is refused), which imports it.
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir bin");
    let script = bin.join("run.py");
    std::fs::write(&script, "import pinnedpkg\n").expect("write the script");
    let run = [py.as_path(), script.as_path()];

    // Without mcp-guard the plant works: Python runs the .pyc, not the source.
    let plain = Command::new(&py)
        .args(["-c", "import pinnedpkg"])
        .env("PYTHONPATH", &site)
        .output()
        .expect("run python");
    assert_eq!(
        String::from_utf8_lossy(&plain.stdout),
        "planted\n",
        "{}",
        describe(&plain)
    );

    // Under exec with the distribution pinned (the source verifies: only bytecode was planted).
    let pins = format!(
        "[[pin.pypi]]\nsite_packages = \"{}\"\nname = \"pinnedpkg\"\nversion = \"1.0\"\n\
         record = \"{record}\"\n\n[[pin.file]]\npath = \"{}\"\ndigest = \"{}\"\n\n\
         [env]\npass = [\"PYTHONPATH\"]\n",
        real(&site),
        real(&script),
        mcp_guard_supply::sha256_file(&script).expect("hash the script"),
    );
    let p = policy(&dir, "time", &[site.clone(), bin.clone()], &[], &pins);
    let out = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["exec", "--passthrough", "--policy"])
        .arg(&p)
        .arg("--")
        .args(run)
        .env("PYTHONPATH", &site)
        .stdin(Stdio::null())
        .output()
        .expect("run mcp-guard exec");
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "honest!\n",
        "{}",
        describe(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn policy_pin_keeps_a_policys_signature_and_manifest_needs_pins() {
    let dir = data_dir("cli");
    let server = time_server();
    let state = dir.join("state");
    let pins = pin_with(&state, &["--no-deps"], &[&server]);
    let signature = "[pin.signature]\nallowed_signers = \"/k/as\"\nidentity = \"me@example.com\"\n\
                     file = \"/k/time.sig\"\n";
    let signed = dir.join("signed.toml");
    std::fs::write(&signed, format!("name = \"t\"\n{pins}\n{signature}")).expect("write");
    let out = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&state)
        .args(["policy", "pin", "--no-deps", "--policy"])
        .arg(&signed)
        .arg("--")
        .arg(&server)
        .output()
        .expect("run policy pin --policy");
    assert!(out.status.success(), "{}", describe(&out));
    let again = String::from_utf8_lossy(&out.stdout);
    assert!(again.contains("identity = \"me@example.com\""), "{again}");
    assert!(again.starts_with(&pins), "{again}");

    // The manifest covers the pins, not the signature section.
    let out = Command::new(mcp_guard())
        .args(["policy", "manifest"])
        .arg(&signed)
        .output()
        .expect("run policy manifest");
    assert!(out.status.success(), "{}", describe(&out));
    let manifest = String::from_utf8_lossy(&out.stdout);
    assert!(
        manifest.starts_with("mcp-guard-pins v1\nexecutable sha256:"),
        "{manifest}"
    );
    assert!(manifest.contains("pypi "), "{manifest}");
    assert!(!manifest.contains("me@example.com"), "{manifest}");

    let unpinned = dir.join("unpinned.toml");
    std::fs::write(&unpinned, "name = \"t\"\n").expect("write");
    let out = Command::new(mcp_guard())
        .args(["policy", "manifest"])
        .arg(&unpinned)
        .output()
        .expect("run policy manifest");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pins nothing"),
        "{}",
        describe(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `mcp-guard exec --standalone --passthrough --policy P -- ARGS` with `env` set, stdin closed.
fn exec_with(state: &Path, policy: &Path, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(mcp_guard());
    cmd.arg("--state-dir")
        .arg(state)
        .args(["exec", "--standalone", "--passthrough", "--policy"])
        .arg(policy)
        .arg("--")
        .args(args)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run mcp-guard exec")
}

/// Refused with 77 before anything ran (neither the attacker's code nor the entry script),
/// naming `what`.
fn assert_refused_unrun(out: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{}", describe(out));
    assert!(
        !stderr.contains("EVIL-RAN") && !stderr.contains("ENTRY-RAN"),
        "something ran:\n{}",
        describe(out)
    );
    assert!(
        stderr.contains("pins what runs") && stderr.contains(what),
        "stderr does not name {what:?}:\n{}",
        describe(out)
    );
}

#[test]
fn a_pinned_interpreter_runs_its_pinned_script_and_no_other_code() {
    require_root();
    let dir = data_dir("argv");
    let app = dir.join("app");
    std::fs::create_dir_all(&app).expect("mkdir app");
    let file = |name: &str, text: &str| {
        let p = app.join(name);
        std::fs::write(&p, text).expect("write fixture");
        p
    };
    let entry_py = file("entry.py", "import sys\nsys.stderr.write('ENTRY-RAN\\n')\n");
    let entry_js = file("entry.js", "process.stderr.write('ENTRY-RAN\\n');\n");
    let evil_py = file("evil.py", "import sys\nsys.stderr.write('EVIL-RAN\\n')\n");
    let evil_js = file("evil.js", "process.stderr.write('EVIL-RAN\\n');\n");
    let state = dir.join("state");
    let python3 = Path::new("/usr/bin/python3");
    let node = Path::new("/usr/bin/node");
    let pinned_policy = |name: &str, command: &[&Path]| {
        let pins = pin_with(&state, &["--no-deps"], command);
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "name = \"{name}\"\n[filesystem]\nread = [\"/usr\", \"/bin\", \"/lib\", \
                 \"/lib64\", \"/etc\", \"{app}\"]\nexec = [\"/usr\", \"/bin\", \"/lib\", \
                 \"/lib64\"]\n[env]\npass = [\"NODE_OPTIONS\", \"PYTHONSTARTUP\"]\n{pins}",
                app = app.display()
            ),
        )
        .expect("write policy");
        path
    };
    let py_policy = pinned_policy("pinned-python", &[python3, &entry_py]);
    let js_policy = pinned_policy("pinned-node", &[node, &entry_js]);
    let (py, js) = (
        python3.to_str().expect("path"),
        node.to_str().expect("path"),
    );
    let (entry_py, entry_js) = (
        entry_py.to_str().expect("path"),
        entry_js.to_str().expect("path"),
    );

    // Inline code instead of the pinned script.
    let evil = "import sys; sys.stderr.write('EVIL-RAN\\n')";
    let out = exec_with(&state, &py_policy, &[py, "-c", evil], &[]);
    assert_refused_unrun(&out, "-c (runs inline code");
    let evil = "process.stderr.write('EVIL-RAN\\n')";
    let out = exec_with(&state, &js_policy, &[js, "-e", evil], &[]);
    assert_refused_unrun(&out, "-e (runs inline code)");
    // A preload through the environment, in front of the pinned script.
    let require = format!("--require {}", evil_js.display());
    let out = exec_with(
        &state,
        &js_policy,
        &[js, entry_js],
        &[("NODE_OPTIONS", Path::new(&require))],
    );
    assert_refused_unrun(&out, "NODE_OPTIONS: --require (preloads a module)");
    // A startup file for an interactive interpreter reading the client's stdin.
    let out = exec_with(
        &state,
        &py_policy,
        &[py, "-i"],
        &[("PYTHONSTARTUP", evil_py.as_path())],
    );
    assert_refused_unrun(&out, "PYTHONSTARTUP");

    // The pinned entry scripts still run.
    for (policy, argv) in [(&py_policy, [py, entry_py]), (&js_policy, [js, entry_js])] {
        let out = exec_with(&state, policy, &argv, &[]);
        assert!(out.status.success(), "{}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("ENTRY-RAN"),
            "{}",
            describe(&out)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The uids and effective capabilities (`CapEff`, hex) of the processes whose command line
/// contains `needle` and not `but`, by pid.
fn processes_with(
    needle: &str,
    but: &str,
    found: &mut std::collections::BTreeMap<u32, (u32, String)>,
) {
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let path = entry.path();
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(path.join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if !cmdline.contains(needle) || cmdline.contains(but) {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(path.join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().next().unwrap_or_default().to_string())
        };
        if let (Some(uid), Some(caps)) = (field("Uid:"), field("CapEff:")) {
            found.insert(pid, (uid.parse().unwrap_or(u32::MAX), caps));
        }
    }
}

#[test]
fn the_bytecode_cache_is_compiled_by_an_unprivileged_process() {
    require_root();
    let dir = data_dir("pycache-uid");
    let state = dir.join("state");
    let mut pin = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&state)
        .args(["policy", "pin", "--no-deps", "--"])
        .arg(time_server())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start policy pin");
    // The compiler's command line names the cache it compiles into, below this state dir (the
    // mcp-guard helper that starts it, root until it has confined itself, is not it).
    let needle = format!("pycache_prefix={}", state.display());
    let mut seen = std::collections::BTreeMap::new();
    while pin.try_wait().expect("policy pin status").is_none() {
        processes_with(&needle, "__pycache-compile", &mut seen);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let out = pin.wait_with_output().expect("policy pin");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!seen.is_empty(), "no compiler process was seen");
    // nobody, with CAP_DAC_READ_SEARCH (bit 2) alone.
    for (uid, caps) in seen.values() {
        assert_ne!(*uid, 0, "the cache was compiled as root: {seen:?}");
        assert_eq!(
            u64::from_str_radix(caps, 16).expect("hex caps"),
            1 << 2,
            "{seen:?}"
        );
    }
    let cache = std::fs::read_dir(state.join("pycache"))
        .expect("a pycache dir")
        .map(|e| e.expect("entry").path())
        .next()
        .expect("one cache");
    assert!(cache.join(".complete").exists(), "{cache:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Blocks until `path` is closed after a read-only open; then renames `with` over it.
fn swap_after_first_read(path: &Path, with: PathBuf) -> std::thread::JoinHandle<bool> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: inotify_init1 takes flags only.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    assert!(
        fd >= 0,
        "inotify_init1: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `c` is a live NUL-terminated path; `fd` is the inotify instance just made.
    let wd = unsafe { libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_CLOSE_NOWRITE) };
    assert!(
        wd >= 0,
        "inotify_add_watch: {}",
        std::io::Error::last_os_error()
    );
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        // SAFETY: reading into a live buffer of its length from the inotify fd we own.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        let swapped = n > 0 && std::fs::rename(&with, &path).is_ok();
        // SAFETY: closing the fd this thread owns.
        unsafe { libc::close(fd) };
        swapped
    })
}

#[test]
fn an_interpreter_swapped_after_verification_does_not_compile_the_cache() {
    require_root();
    let dir = data_dir("pycache-swap");
    // A virtual environment of its own whose interpreter (a copy) the attacker can replace; its
    // site-packages is the test environment's.
    let venv = dir.join("venv");
    std::fs::create_dir_all(venv.join("bin")).expect("mkdir venv/bin");
    std::fs::create_dir_all(venv.join("lib/python3.11")).expect("mkdir venv/lib");
    let real_python = python()
        .canonicalize()
        .expect("the test environment's python");
    let interpreter = venv.join("bin/python3.11");
    std::fs::copy(&real_python, &interpreter).expect("copy the interpreter");
    std::fs::write(
        venv.join("pyvenv.cfg"),
        format!(
            "home = {}\ninclude-system-site-packages = false\n",
            real_python.parent().expect("bin").display()
        ),
    )
    .expect("write pyvenv.cfg");
    std::os::unix::fs::symlink(
        workspace_root()
            .join(".venv/lib/python3.11/site-packages")
            .canonicalize()
            .expect("site-packages"),
        venv.join("lib/python3.11/site-packages"),
    )
    .expect("link site-packages");
    // The impostor: another interpreter (ELF, named like the pinned one). The test environment's
    // python may be this very file, so a few bytes after the ELF's end (which the loader never
    // reads) make it another one: its digest differs from the pin, it runs the same.
    let evil = dir.join("evil");
    std::fs::copy("/usr/bin/python3.11", &evil).expect("copy another interpreter");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&evil)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"impostor"))
        .expect("make the impostor differ");
    let evil_inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&evil).expect("stat"));

    let command: [&Path; 3] = [&interpreter, Path::new("-m"), Path::new("mcp_server_time")];
    let pins = pin(&dir.join("pin-state"), &command);
    assert!(pins.contains("name = \"mcp-server-time\""), "{pins}");
    let p = policy(&dir, "time", std::slice::from_ref(&venv), &[], &pins);
    // The launch verifies the pins (reading the interpreter), then builds the cache: the
    // attacker swaps the interpreter as soon as the verification has read it.
    let swapper = swap_after_first_read(&interpreter, evil);
    let state = dir.join("state");
    let mut launch = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&state)
        .args(["exec", "--standalone", "--policy"])
        .arg(&p)
        .arg("--")
        .args(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mcp-guard exec");
    // Which file each compiler process runs (its inode: the verified one is unlinked by then).
    let needle = format!("pycache_prefix={}", state.display());
    let mut compilers = std::collections::BTreeMap::new();
    while launch.try_wait().expect("exec status").is_none() {
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains(&needle)
                && !cmdline.contains("__pycache-compile")
                && let Ok(m) = std::fs::metadata(entry.path().join("exe"))
            {
                let status =
                    std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
                let uid = status
                    .lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .unwrap_or_default()
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                compilers.insert(
                    entry.file_name(),
                    (std::os::unix::fs::MetadataExt::ino(&m), uid),
                );
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let out = launch.wait_with_output().expect("exec output");
    assert!(
        swapper.join().expect("swapper"),
        "the interpreter was not swapped"
    );
    let impostors: Vec<&String> = compilers
        .values()
        .filter(|(ino, _)| *ino == evil_inode)
        .map(|(_, uid)| uid)
        .collect();
    assert!(
        impostors.is_empty(),
        "the swapped-in interpreter compiled the cache, as uid {impostors:?}:\n{}",
        describe(&out)
    );
    // Refused, naming the interpreter: when the cache is built (its descriptor no longer matches
    // the pin), or, had the swap come later, when the server is executed.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{}", describe(&out));
    assert!(
        stderr.contains(&interpreter.display().to_string())
            && (stderr.contains("changed since it was verified")
                || stderr.contains("changed between the check and the exec")),
        "{}",
        describe(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
