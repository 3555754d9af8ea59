//! Supply-chain pinning: what a jailed server runs, checked by content before it runs.
//!
//! A policy's `[pin]` table ([`Pins`]) names the sha256 of the executable (after PATH lookup and
//! symlinks), of individual files (a node/python entry script), of an installed npm package
//! (name, version, the lockfile's integrity and a digest over the installed tree) and of an
//! installed PyPI distribution (name, version and the sha256 of its dist-info `RECORD`, every
//! file of which is checked against the hash RECORD lists). [`verify`] checks them all and says
//! each file that changed with the expected and the actual value. [`generate`] writes the pins
//! for a command (`mcp-guard policy pin`). Optionally the pins are signed: [`manifest`] is the
//! canonical text an `ssh-keygen -Y sign` signature covers and [`verify_signature`] checks one
//! (also usable for anything else, e.g. an image digest).
//!
//! Time of check to time of use: the executable is hashed again by the jail's server process on
//! the very fd it then execs (`fexecve`), after which the kernel refuses writes to it (ETXTBSY).
//! Scripts and package files are opened later by the interpreter, by path: a writer to those
//! files in the seconds between the check and the interpreter's read is not caught.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    io::Read,
    os::unix::fs::PermissionsExt,
    path::{Component, Path, PathBuf},
    process::{Command, Stdio},
};

use sha2::{Digest, Sha256};

pub use mcp_guard_policy::{FilePin, NpmPin, PinSignature, Pins, PypiPin, SignerKey};
use mcp_guard_statefs::StateDir;

pub mod argv;
pub mod compile_jail;
mod pycache;

pub use pycache::python_cache;

/// The prefix of every digest in a policy.
pub const SHA256: &str = "sha256:";
/// The default `ssh-keygen -Y` namespace of pin manifests.
pub const PIN_NAMESPACE: &str = "mcp-guard-pins";

/// Why a pin or a signature did not verify.
#[derive(Debug, thiserror::Error)]
pub enum SupplyError {
    /// A file's content is not the pinned one.
    #[error("{}: expected {expected}, found {actual}{}", file.display(), context(what))]
    Mismatch {
        /// The file that changed.
        file: PathBuf,
        /// What it is (the executable, a file of npm package X, ...).
        what: String,
        /// The pinned value.
        expected: String,
        /// What is there now.
        actual: String,
    },
    /// No signature where the policy requires one.
    #[error("unsigned: {0}")]
    Unsigned(String),
    /// The signature does not verify with the named key.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// Something could not be read or run.
    #[error("{0}")]
    Io(String),
}

fn context(what: &str) -> String {
    if what.is_empty() {
        String::new()
    } else {
        format!(" ({what})")
    }
}

/// `sha256:<hex>` of a byte slice.
pub fn sha256_bytes(data: &[u8]) -> String {
    format!("{SHA256}{}", hex(&Sha256::digest(data)))
}

/// `sha256:<hex>` of everything a reader yields (an open file: the fd that will be executed).
pub fn sha256_reader(mut r: impl Read) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(format!("{SHA256}{}", hex(&h.finalize())))
}

/// `sha256:<hex>` of a file's content.
pub fn sha256_file(path: &Path) -> Result<String, SupplyError> {
    let f = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    sha256_reader(f).map_err(|e| io_err(path, e))
}

fn io_err(path: &Path, e: std::io::Error) -> SupplyError {
    SupplyError::Io(format!("{}: {e}", path.display()))
}

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Unpadded URL-safe base64, the encoding of the hashes in a wheel's RECORD (PEP 376/427).
fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The executable a command runs: absolute, symlinks resolved (what the kernel maps).
pub fn real_executable(program: &Path) -> Result<PathBuf, SupplyError> {
    program.canonicalize().map_err(|e| io_err(program, e))
}

/// Checks every pin; all problems at once, each naming its file. `program` is the command's
/// executable as found on PATH. With mcp-guard's `state_dir`, a changed npm tree is narrowed
/// down to the files that changed (from the listing kept when it last matched).
pub fn verify(
    pins: &Pins,
    program: &Path,
    state_dir: Option<&Path>,
) -> Result<(), Vec<SupplyError>> {
    let mut problems = Vec::new();
    if let Some(sig) = &pins.signature {
        let text = manifest(pins);
        if let Err(e) = verify_signature(text.as_bytes(), &sig.file, &sig.key) {
            problems.push(e);
        }
    }
    if let Some(expected) = &pins.executable {
        match real_executable(program).and_then(|p| sha256_file(&p).map(|d| (p, d))) {
            Ok((path, actual)) if &actual != expected => problems.push(SupplyError::Mismatch {
                file: path,
                what: "the executable".into(),
                expected: expected.clone(),
                actual,
            }),
            Ok(_) => {}
            Err(e) => problems.push(e),
        }
    }
    for f in &pins.files {
        match sha256_file(&f.path) {
            Ok(actual) if actual != f.digest => problems.push(SupplyError::Mismatch {
                file: f.path.clone(),
                what: "a pinned file".into(),
                expected: f.digest.clone(),
                actual,
            }),
            Ok(_) => {}
            Err(e) => problems.push(e),
        }
    }
    for p in &pins.npm {
        problems.extend(verify_npm(p, state_dir));
    }
    let mut listed = BTreeMap::new();
    for p in &pins.pypi {
        problems.extend(verify_pypi(p, &mut listed));
    }
    problems.extend(verify_startup_files(pins));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

// ---------------------------------------------------------------------------------------------
// Signatures

/// Verifies a detached SSH signature (`ssh-keygen -Y sign`) over `data`: the signer must be
/// `key.identity` in the `key.allowed_signers` file (OpenSSH's allowed_signers format) and the
/// signature made for `key.namespace`. A missing signature file is [`SupplyError::Unsigned`].
pub fn verify_signature(data: &[u8], sig: &Path, key: &SignerKey) -> Result<(), SupplyError> {
    use std::io::Write;
    match std::fs::metadata(sig) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(SupplyError::Unsigned(format!(
                "{} is not a signature file",
                sig.display()
            )));
        }
        Err(e) => {
            return Err(SupplyError::Unsigned(format!(
                "signature {}: {e} (sign with `ssh-keygen -Y sign -f KEY -n {}`)",
                sig.display(),
                key.namespace
            )));
        }
    }
    if !key.allowed_signers.is_file() {
        return Err(SupplyError::Io(format!(
            "allowed signers file {}: not found",
            key.allowed_signers.display()
        )));
    }
    // From the system's directories, not the caller's PATH: exec runs as root.
    let Some(ssh_keygen) = ["/usr/bin", "/bin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join("ssh-keygen"))
        .find(|p| p.is_file())
    else {
        return Err(SupplyError::Io(
            "ssh-keygen not found in /usr/bin, /bin or /usr/local/bin: install OpenSSH's client \
             tools (Debian: openssh-client) to verify signed pins"
                .into(),
        ));
    };
    let mut child = Command::new(ssh_keygen)
        .args(["-Y", "verify", "-f"])
        .arg(&key.allowed_signers)
        .arg("-I")
        .arg(&key.identity)
        .arg("-n")
        .arg(&key.namespace)
        .arg("-s")
        .arg(sig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            SupplyError::Io(format!(
                "cannot run ssh-keygen to verify {}: {e} (install OpenSSH's client tools)",
                sig.display()
            ))
        })?;
    let wrote = child.stdin.take().map(|mut stdin| stdin.write_all(data));
    let out = child
        .wait_with_output()
        .map_err(|e| SupplyError::Io(format!("ssh-keygen: {e}")))?;
    if let Some(Err(e)) = wrote {
        return Err(SupplyError::Io(format!("feeding ssh-keygen: {e}")));
    }
    if out.status.success() {
        Ok(())
    } else {
        let why = String::from_utf8_lossy(&out.stderr);
        let why = why.trim();
        Err(SupplyError::BadSignature(format!(
            "{} does not verify as {:?} (namespace {}) with {}: {}",
            sig.display(),
            key.identity,
            key.namespace,
            key.allowed_signers.display(),
            if why.is_empty() { "refused" } else { why }
        )))
    }
}

/// The canonical text of the pins (the signature section left out): what a signature covers.
/// One line per pin, strings JSON-quoted.
pub fn manifest(pins: &Pins) -> String {
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let p = |p: &Path| q(&p.to_string_lossy());
    let mut out = String::from("mcp-guard-pins v1\n");
    if let Some(d) = &pins.executable {
        let _ = writeln!(out, "executable {d}");
    }
    for f in &pins.files {
        let _ = writeln!(out, "file {} {}", p(&f.path), f.digest);
    }
    for n in &pins.npm {
        let _ = writeln!(
            out,
            "npm {} {} {} {} {}",
            p(&n.dir),
            q(&n.name),
            q(&n.version),
            q(n.integrity.as_deref().unwrap_or("")),
            n.tree
        );
    }
    for y in &pins.pypi {
        let _ = writeln!(
            out,
            "pypi {} {} {} {}",
            p(&y.site_packages),
            q(&y.name),
            q(&y.version),
            y.record
        );
    }
    out
}

// ---------------------------------------------------------------------------------------------
// npm

/// A digest over an installed package tree: every file and symlink below `dir` (nested
/// node_modules included), in path order, with its kind, executable bit and content digest.
pub fn tree_digest(dir: &Path) -> Result<String, SupplyError> {
    tree_listing(dir).map(|text| sha256_bytes(text.as_bytes()))
}

/// The text [`tree_digest`] hashes: per entry a line `LEN KIND [DIGEST|TARGET]`, then the
/// relative path (LEN bytes) and a newline.
fn tree_listing(dir: &Path) -> Result<String, SupplyError> {
    let mut entries = BTreeMap::new();
    walk(dir, Path::new(""), &mut entries)?;
    let mut text = String::new();
    for (rel, what) in entries {
        let _ = writeln!(text, "{} {what}", rel.len());
        text.push_str(&rel);
        text.push('\n');
    }
    Ok(text)
}

/// The state dir's directory of pinned trees' listings.
const LISTINGS_DIR: &str = "npm-trees";

/// A pinned tree's listing's file name in [`LISTINGS_DIR`].
fn listing_name(tree: &str) -> String {
    format!("{}.txt", tree.trim_start_matches(SHA256))
}

/// Where a pinned tree's listing is kept (diagnostics only: it names the files that changed).
fn listing_path(state_dir: &Path, tree: &str) -> PathBuf {
    state_dir.join(LISTINGS_DIR).join(listing_name(tree))
}

/// Reads a kept listing, if there is one.
fn read_listing(state_dir: &Path, tree: &str) -> Option<String> {
    let state = StateDir::existing(state_dir).ok()??;
    let bytes = state.read(LISTINGS_DIR, &listing_name(tree)).ok()??;
    String::from_utf8(bytes).ok()
}

/// Keeps the listing of a tree that matches its pin, for naming changed files later.
fn remember_listing(state_dir: &Path, tree: &str, listing: &str) {
    if read_listing(state_dir, tree).is_some() {
        return;
    }
    let written = StateDir::create(state_dir)
        .and_then(|s| s.write(LISTINGS_DIR, &listing_name(tree), listing.as_bytes()));
    if let Err(e) = written {
        tracing::debug!("{}: {e}", listing_path(state_dir, tree).display());
    }
}

/// A listing entry's kind and value in words.
fn entry_words(what: &str) -> String {
    match what.split_once(' ') {
        Some(("f", d)) => d.to_string(),
        Some(("x", d)) => format!("{d} (executable)"),
        Some(("l", t)) => format!("a symlink to {t}"),
        _ => "not a regular file".to_string(),
    }
}

fn parse_listing(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while let Some((head, tail)) = rest.split_once('\n') {
        let Some((len, what)) = head.split_once(' ') else {
            break;
        };
        let Some(rel) = len.parse::<usize>().ok().and_then(|n| tail.get(..n)) else {
            break;
        };
        out.insert(rel.to_string(), what.to_string());
        rest = tail.get(rel.len() + 1..).unwrap_or_default();
    }
    out
}

/// The files that differ between the pinned tree (its listing, if kept and authentic: its
/// digest is the pin) and the installed one.
fn changed_files(state_dir: &Path, p: &NpmPin, what: &str, now: &str) -> Option<Vec<SupplyError>> {
    let then = read_listing(state_dir, &p.tree)?;
    if sha256_bytes(then.as_bytes()) != p.tree {
        return None;
    }
    let (then, now) = (parse_listing(&then), parse_listing(now));
    let absent = || "absent".to_string();
    let mut out = Vec::new();
    for rel in then.keys().chain(now.keys()).collect::<BTreeSet<_>>() {
        let (a, b) = (then.get(rel), now.get(rel));
        if a != b {
            out.push(SupplyError::Mismatch {
                file: p.dir.join(rel),
                what: format!("a file of {what}"),
                expected: a.map_or_else(absent, |w| entry_words(w)),
                actual: b.map_or_else(absent, |w| entry_words(w)),
            });
        }
    }
    Some(out)
}

fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<String, String>) -> Result<(), SupplyError> {
    let dir = root.join(rel);
    let read = std::fs::read_dir(&dir).map_err(|e| io_err(&dir, e))?;
    for entry in read {
        let entry = entry.map_err(|e| io_err(&dir, e))?;
        let rel = rel.join(entry.file_name());
        let path = root.join(&rel);
        let meta = std::fs::symlink_metadata(&path).map_err(|e| io_err(&path, e))?;
        let key = rel.to_string_lossy().into_owned();
        if meta.is_dir() {
            walk(root, &rel, out)?;
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).map_err(|e| io_err(&path, e))?;
            out.insert(key, format!("l {}", target.to_string_lossy()));
        } else if meta.is_file() {
            let x = if meta.permissions().mode() & 0o111 != 0 {
                "x"
            } else {
                "f"
            };
            out.insert(key, format!("{x} {}", sha256_file(&path)?));
        } else {
            out.insert(key, "o".into());
        }
    }
    Ok(())
}

/// `(name, version)` from a package.json.
fn package_json(dir: &Path) -> Result<(String, String), SupplyError> {
    let path = dir.join("package.json");
    let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| SupplyError::Io(format!("{}: {e}", path.display())))?;
    let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    Ok((field("name"), field("version")))
}

/// The lockfile integrity of the package installed in `dir`: npm's hidden lockfile
/// (`node_modules/.package-lock.json`) or the project's `package-lock.json`, keyed by the
/// package's path from the project root. `Ok(None)` when no lockfile lists it.
pub fn lockfile_integrity(dir: &Path) -> Result<Option<(PathBuf, String)>, SupplyError> {
    let comps: Vec<Component<'_>> = dir.components().collect();
    for i in (0..comps.len()).rev() {
        if comps[i].as_os_str() != "node_modules" {
            continue;
        }
        let nm: PathBuf = comps[..=i].iter().collect();
        let root: PathBuf = comps[..i].iter().collect();
        let key: PathBuf = comps[i..].iter().collect();
        let key = key.to_string_lossy().into_owned();
        for lock in [
            nm.join(".package-lock.json"),
            root.join("package-lock.json"),
        ] {
            let Ok(text) = std::fs::read_to_string(&lock) else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| SupplyError::Io(format!("{}: {e}", lock.display())))?;
            if let Some(entry) = v["packages"].get(&key) {
                return Ok(entry["integrity"].as_str().map(|s| (lock, s.to_string())));
            }
        }
    }
    Ok(None)
}

fn verify_npm(p: &NpmPin, state_dir: Option<&Path>) -> Vec<SupplyError> {
    let mut problems = Vec::new();
    let what = format!("npm package {}@{}", p.name, p.version);
    match package_json(&p.dir) {
        Ok((name, version)) => {
            if name != p.name || version != p.version {
                problems.push(SupplyError::Mismatch {
                    file: p.dir.join("package.json"),
                    what: what.clone(),
                    expected: format!("{}@{}", p.name, p.version),
                    actual: format!("{name}@{version}"),
                });
            }
        }
        Err(e) => problems.push(e),
    }
    if let Some(expected) = &p.integrity {
        match lockfile_integrity(&p.dir) {
            Ok(Some((lock, actual))) if &actual != expected => {
                problems.push(SupplyError::Mismatch {
                    file: lock,
                    what: format!("integrity of {what} in the lockfile"),
                    expected: expected.clone(),
                    actual,
                })
            }
            Ok(Some(_)) => {}
            Ok(None) => problems.push(SupplyError::Mismatch {
                file: p.dir.clone(),
                what: format!("integrity of {what}"),
                expected: expected.clone(),
                actual: "no lockfile lists this package".into(),
            }),
            Err(e) => problems.push(e),
        }
    }
    match tree_listing(&p.dir) {
        Ok(listing) => {
            let actual = sha256_bytes(listing.as_bytes());
            if actual == p.tree {
                if let Some(state) = state_dir {
                    remember_listing(state, &p.tree, &listing);
                }
            } else {
                problems.push(SupplyError::Mismatch {
                    file: p.dir.clone(),
                    what: format!("installed tree of {what}: a file was changed, added or removed"),
                    expected: p.tree.clone(),
                    actual,
                });
                if let Some(files) = state_dir.and_then(|s| changed_files(s, p, &what, &listing)) {
                    problems.extend(files);
                }
            }
        }
        Err(e) => problems.push(e),
    }
    problems
}

/// The npm package directory a file belongs to: below the last `node_modules`, one component
/// (or two for `@scope/name`).
fn npm_package_dir(file: &Path) -> Option<PathBuf> {
    let comps: Vec<Component<'_>> = file.components().collect();
    let i = comps
        .iter()
        .rposition(|c| c.as_os_str() == "node_modules")?;
    let first = comps.get(i + 1)?.as_os_str().to_string_lossy();
    let n = if first.starts_with('@') { 3 } else { 2 };
    if comps.len() <= i + n {
        return None;
    }
    let dir: PathBuf = comps[..=i + n - 1].iter().collect();
    dir.join("package.json").is_file().then_some(dir)
}

// ---------------------------------------------------------------------------------------------
// PyPI

/// PEP 503 normalised distribution name.
fn normalize(name: &str) -> String {
    let mut out = String::new();
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// `(Name, Version)` of a dist-info's METADATA.
fn metadata(dist_info: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(dist_info.join("METADATA")).ok()?;
    let mut name = None;
    let mut version = None;
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("Name: ") {
            name = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("Version: ") {
            version = Some(v.trim().to_string());
        }
    }
    Some((name?, version?))
}

/// Every dist-info directory in `site`.
fn dist_infos(site: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(site) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "dist-info") && p.is_dir())
        .collect();
    v.sort();
    v
}

/// The dist-info of `name` `version` in `site`.
fn find_dist(site: &Path, name: &str, version: &str) -> Option<PathBuf> {
    let want = normalize(name);
    dist_infos(site)
        .into_iter()
        .find(|d| metadata(d).is_some_and(|(n, v)| normalize(&n) == want && v == version))
}

/// One RECORD row: path and `sha256=<b64>` (empty for RECORD itself and .pyc files).
fn record_rows(text: &str) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        // CSV: a quoted path may contain commas ("" escapes a quote).
        let (path, rest) = if let Some(q) = line.strip_prefix('"') {
            let mut path = String::new();
            let mut chars = q.char_indices().peekable();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                if c == '"' {
                    if chars.peek().is_some_and(|&(_, n)| n == '"') {
                        path.push('"');
                        chars.next();
                    } else {
                        end = i + 1;
                        break;
                    }
                } else {
                    path.push(c);
                }
            }
            (path, q[end..].trim_start_matches(','))
        } else {
            match line.split_once(',') {
                Some((p, r)) => (p.to_string(), r),
                None => (line.to_string(), ""),
            }
        };
        let hash = rest.split(',').next().unwrap_or_default().to_string();
        rows.push((path, hash));
    }
    rows
}

/// Joins a RECORD path to site-packages lexically (`../../../bin/x` stays outside it).
fn record_path(site: &Path, rel: &str) -> PathBuf {
    let mut out = site.to_path_buf();
    for c in Path::new(rel).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir => out = PathBuf::from("/"),
            _ => {}
        }
    }
    out
}

/// The files in a site-packages that every Python start runs: `*.pth` (their `import` lines)
/// and `sitecustomize.py` / `usercustomize.py`.
fn startup_files(site: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(site) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "pth")
                || p.file_name()
                    .is_some_and(|n| n == "sitecustomize.py" || n == "usercustomize.py")
        })
        .collect();
    v.sort();
    v
}

/// Startup files ([`startup_files`]) of the pinned sites that no pinned distribution's RECORD
/// lists (so nothing verified their content): refused.
fn verify_startup_files(pins: &Pins) -> Vec<SupplyError> {
    let mut by_site: BTreeMap<&Path, BTreeSet<PathBuf>> = BTreeMap::new();
    for p in &pins.pypi {
        let listed = by_site.entry(&p.site_packages).or_default();
        if let Some(dist) = find_dist(&p.site_packages, &p.name, &p.version)
            && let Ok(text) = std::fs::read_to_string(dist.join("RECORD"))
        {
            listed.extend(
                record_rows(&text)
                    .iter()
                    .map(|(r, _)| record_path(&p.site_packages, r)),
            );
        }
    }
    let mut problems = Vec::new();
    for (site, listed) in by_site {
        for f in startup_files(site) {
            if !listed.contains(&f) {
                problems.push(SupplyError::Mismatch {
                    file: f,
                    what: "run by every Python start in a pinned site-packages".into(),
                    expected: "listed in a pinned distribution's RECORD".into(),
                    actual: "not listed (re-pin to include its distribution, or remove it)".into(),
                });
            }
        }
    }
    problems
}

/// Every path any RECORD in `site` lists: packages may share a directory (namespace packages).
fn all_listed(site: &Path) -> BTreeSet<PathBuf> {
    let mut listed = BTreeSet::new();
    for d in dist_infos(site) {
        if let Ok(t) = std::fs::read_to_string(d.join("RECORD")) {
            listed.extend(record_rows(&t).iter().map(|(r, _)| record_path(site, r)));
        }
    }
    listed
}

/// Checks one distribution; `listed` caches [`all_listed`] per site-packages.
fn verify_pypi(p: &PypiPin, listed: &mut BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<SupplyError> {
    let what = format!("PyPI {}=={}", p.name, p.version);
    let Some(dist) = find_dist(&p.site_packages, &p.name, &p.version) else {
        return vec![SupplyError::Mismatch {
            file: p.site_packages.clone(),
            what: what.clone(),
            expected: format!("{}=={} installed", p.name, p.version),
            actual: match dist_infos(&p.site_packages)
                .iter()
                .filter_map(|d| metadata(d))
                .find(|(n, _)| normalize(n) == normalize(&p.name))
            {
                Some((n, v)) => format!("{n}=={v}"),
                None => "not installed".into(),
            },
        }];
    };
    let record = dist.join("RECORD");
    let bytes = match std::fs::read(&record) {
        Ok(b) => b,
        Err(e) => return vec![io_err(&record, e)],
    };
    let mut problems = Vec::new();
    let actual = sha256_bytes(&bytes);
    if actual != p.record {
        problems.push(SupplyError::Mismatch {
            file: record.clone(),
            what: format!("RECORD of {what}"),
            expected: p.record.clone(),
            actual,
        });
    }
    let text = String::from_utf8_lossy(&bytes);
    let rows = record_rows(&text);
    let listed = listed
        .entry(p.site_packages.clone())
        .or_insert_with(|| all_listed(&p.site_packages));
    let mut dirs = BTreeSet::new();
    for (rel, hash) in &rows {
        let path = record_path(&p.site_packages, rel);
        let Some(b64) = hash.strip_prefix("sha256=") else {
            continue; // RECORD itself, .pyc files and INSTALLER-written files carry no hash
        };
        if let Some(parent) = path.parent()
            && parent.starts_with(&p.site_packages)
            && parent != p.site_packages
            && parent != dist
        {
            dirs.insert(parent.to_path_buf());
        }
        let digest = match std::fs::read(&path) {
            Ok(data) => base64_url(&Sha256::digest(&data)),
            Err(e) => {
                problems.push(SupplyError::Mismatch {
                    file: path.clone(),
                    what: format!("a file of {what} listed in its RECORD"),
                    expected: format!("sha256={b64}"),
                    actual: format!("unreadable: {e}"),
                });
                continue;
            }
        };
        if digest != b64 {
            problems.push(SupplyError::Mismatch {
                file: path,
                what: format!("a file of {what} listed in its RECORD"),
                expected: format!("sha256={b64}"),
                actual: format!("sha256={digest}"),
            });
        }
    }
    // A module dropped next to the package's own is imported like them: refuse files RECORD
    // does not list in the package's directories (bytecode caches aside).
    for dir in dirs {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.filter_map(Result::ok) {
            let path = e.path();
            let is_cache = path.file_name().is_some_and(|n| n == "__pycache__");
            if !is_cache && !listed.contains(&path) && !path.is_dir() {
                problems.push(SupplyError::Mismatch {
                    file: path,
                    what: format!("in a directory of {what}"),
                    expected: "no file its RECORD does not list".into(),
                    actual: "an unlisted file".into(),
                });
            }
        }
    }
    problems
}

/// The site-packages directories of the Python environment an interpreter path belongs to,
/// from the path as written (a venv's `bin/python` is a symlink out of the venv).
fn site_packages_of(interpreter: &Path) -> Vec<PathBuf> {
    let Some(prefix) = interpreter.parent().and_then(Path::parent) else {
        return Vec::new();
    };
    let lib = prefix.join("lib");
    let Ok(rd) = std::fs::read_dir(&lib) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("python"))
        .map(|e| e.path().join("site-packages"))
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

/// The `#!` interpreter of a script, when it is one (`#!/usr/bin/env node`: node on the PATH).
fn shebang(path: &Path) -> Option<PathBuf> {
    let mut buf = [0u8; 256];
    let n = std::fs::File::open(path).ok()?.read(&mut buf).ok()?;
    let line = buf[..n].strip_prefix(b"#!")?;
    let line = line.split(|&b| b == b'\n').next()?;
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let interp = PathBuf::from(words.next()?);
    if interp.file_name().is_some_and(|n| n == "env") {
        let cmd = words.find(|w| !w.starts_with('-'))?;
        return which(cmd);
    }
    Some(interp)
}

/// The distribution in `site` whose RECORD lists `target` (a file or a package directory).
fn owning_dist(site: &Path, targets: &[PathBuf]) -> Vec<(PathBuf, String, String)> {
    let mut found = Vec::new();
    for dist in dist_infos(site) {
        let Ok(text) = std::fs::read_to_string(dist.join("RECORD")) else {
            continue;
        };
        let owns = record_rows(&text).iter().any(|(rel, _)| {
            let path = record_path(site, rel);
            targets
                .iter()
                .any(|t| path == *t || (t.is_dir() && path.starts_with(t)))
        });
        if owns && let Some((name, version)) = metadata(&dist) {
            found.push((dist, name, version));
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Writing pins

/// The pins for running `command` (`program` is its executable found on PATH): the executable,
/// each argument that is a file, the npm packages those files belong to and the PyPI
/// distributions that own the script or the `-m` module run. Returns the pins and notes on what
/// was found (for stderr).
/// With `deps`, the packages those import are pinned too (their whole dependency closure, as
/// installed: package.json dependencies resolved the way node does, `Requires-Dist`).
pub fn generate(
    program: &Path,
    command: &[String],
    deps: bool,
) -> Result<(Pins, Vec<String>), SupplyError> {
    let mut pins = Pins::default();
    let mut notes = Vec::new();
    let real = real_executable(program)?;
    pins.executable = Some(sha256_file(&real)?);
    notes.push(format!("executable {}", real.display()));

    let mut files = Vec::new();
    let mut modules = Vec::new();
    let mut args = command.iter().skip(1);
    while let Some(a) = args.next() {
        if a == "-m" {
            if let Some(m) = args.next() {
                modules.push(m.clone());
            }
            continue;
        }
        let p = Path::new(a);
        if p.is_file()
            && let Ok(c) = p.canonicalize()
        {
            files.push(c);
        }
    }
    // A `#!` script as the command (a console script such as .venv/bin/mcp-server-time): the
    // interpreter it names belongs to the environment whose packages it imports.
    let mut interpreters = vec![program.to_path_buf()];
    if let Some(interp) = shebang(&real) {
        if real != program {
            files.push(real.clone());
        }
        interpreters.push(interp.clone());
        if let Ok(r) = real_executable(&interp)
            && let Ok(d) = sha256_file(&r)
        {
            pins.files.push(FilePin {
                path: r.clone(),
                digest: d,
            });
            notes.push(format!("interpreter {}", r.display()));
        }
    }
    for f in &files {
        if *f != real {
            pins.files.push(FilePin {
                path: f.clone(),
                digest: sha256_file(f)?,
            });
            notes.push(format!("file {}", f.display()));
        }
    }

    let mut npm_dirs = BTreeSet::new();
    for f in &files {
        if let Some(dir) = npm_package_dir(f) {
            npm_dirs.insert(dir);
        }
    }
    let npm_dirs = if deps {
        npm_closure(npm_dirs, &mut notes)?
    } else {
        npm_dirs
    };
    for dir in npm_dirs {
        let (name, version) = package_json(&dir)?;
        let integrity = lockfile_integrity(&dir)?.map(|(_, i)| i);
        if integrity.is_none() {
            notes.push(format!(
                "npm {name}@{version}: no lockfile lists it, so no integrity is pinned (the \
                 tree digest still is)"
            ));
        }
        notes.push(format!("npm package {name}@{version} in {}", dir.display()));
        pins.npm.push(NpmPin {
            tree: tree_digest(&dir)?,
            dir,
            name,
            version,
            integrity,
        });
    }

    // Canonical: a venv reached through a symlinked path is still one environment.
    let mut sites = BTreeSet::new();
    for i in &interpreters {
        sites.extend(
            site_packages_of(i)
                .iter()
                .filter_map(|s| s.canonicalize().ok()),
        );
    }
    for site in sites {
        let mut targets: Vec<PathBuf> = files.clone();
        for m in &modules {
            let top = m.split('.').next().unwrap_or(m);
            targets.push(site.join(top));
            targets.push(site.join(format!("{top}.py")));
        }
        // A console script is listed by its unresolved path in the venv's bin.
        if shebang(&real).is_some() {
            targets.push(program.to_path_buf());
        }
        let mut owners = owning_dist(&site, &targets);
        if !owners.is_empty() {
            // Every Python start runs the site's .pth files and sitecustomize: their owners are
            // part of what runs.
            let startup = startup_files(&site);
            for o in owning_dist(&site, &startup) {
                if !owners.iter().any(|(d, _, _)| *d == o.0) {
                    notes.push(format!("PyPI {} (owns a file Python runs at startup)", o.1));
                    owners.push(o);
                }
            }
        }
        let owners = if deps {
            pypi_closure(&site, owners, &mut notes)
        } else {
            owners
        };
        for (dist, name, version) in owners {
            let record = sha256_file(&dist.join("RECORD"))?;
            notes.push(format!("PyPI {name}=={version} in {}", site.display()));
            pins.pypi.push(PypiPin {
                site_packages: site.clone(),
                name,
                version,
                record,
            });
        }
    }
    Ok((pins, notes))
}

/// npm packages and, transitively, the packages their package.json depends on.
fn npm_closure(
    roots: BTreeSet<PathBuf>,
    notes: &mut Vec<String>,
) -> Result<BTreeSet<PathBuf>, SupplyError> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<PathBuf> = roots.into_iter().collect();
    while let Some(dir) = todo.pop() {
        if !seen.insert(dir.clone()) {
            continue;
        }
        let path = dir.join("package.json");
        let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| SupplyError::Io(format!("{}: {e}", path.display())))?;
        for (kind, required) in [
            ("dependencies", true),
            ("optionalDependencies", false),
            ("peerDependencies", false),
        ] {
            let Some(names) = v[kind].as_object() else {
                continue;
            };
            for name in names.keys() {
                match resolve_npm(&dir, name) {
                    Some(d) => todo.push(d),
                    None if required => notes.push(format!(
                        "npm {}: dependency {name} is not installed (not pinned)",
                        dir.display()
                    )),
                    None => {}
                }
            }
        }
    }
    Ok(seen)
}

/// Where node finds package `name` required from `from`: the nearest `node_modules/name` up
/// the tree.
fn resolve_npm(from: &Path, name: &str) -> Option<PathBuf> {
    from.ancestors()
        .filter(|a| a.file_name().is_none_or(|n| n != "node_modules"))
        .map(|a| a.join("node_modules").join(name))
        .find(|c| c.join("package.json").is_file())
        .and_then(|c| c.canonicalize().ok())
}

/// Distribution names a dist-info's METADATA requires (`Requires-Dist`), normalised.
fn requires(dist: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(dist.join("METADATA")) else {
        return Vec::new();
    };
    text.lines()
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.strip_prefix("Requires-Dist:"))
        .filter_map(|r| {
            let r = r.trim();
            let end = r
                .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
                .unwrap_or(r.len());
            (end > 0).then(|| normalize(&r[..end]))
        })
        .collect()
}

/// Distributions and, transitively, the installed ones they require (markers and extras
/// aside: whatever is installed and named is pinned).
fn pypi_closure(
    site: &Path,
    roots: Vec<(PathBuf, String, String)>,
    notes: &mut Vec<String>,
) -> Vec<(PathBuf, String, String)> {
    let installed: BTreeMap<String, (PathBuf, String, String)> = dist_infos(site)
        .into_iter()
        .filter_map(|d| metadata(&d).map(|(n, v)| (normalize(&n), (d, n, v))))
        .collect();
    let mut seen = BTreeMap::new();
    let mut todo = roots;
    while let Some((dist, name, version)) = todo.pop() {
        let key = normalize(&name);
        if seen.contains_key(&key) {
            continue;
        }
        for r in requires(&dist) {
            match installed.get(&r) {
                Some(found) => todo.push(found.clone()),
                None if !seen.contains_key(&r) => {
                    tracing::debug!(
                        "{name}: requirement {r} not installed in {}",
                        site.display()
                    )
                }
                None => {}
            }
        }
        seen.insert(key, (dist, name, version));
    }
    let out: Vec<_> = seen.into_values().collect();
    if out.len() > 1 {
        notes.push(format!(
            "PyPI: {} distributions with dependencies in {}",
            out.len(),
            site.display()
        ));
    }
    out
}

/// The `[pin]` table of `pins` as TOML text (what `mcp-guard policy pin` prints).
pub fn to_toml(pins: &Pins) -> String {
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let p = |p: &Path| q(&p.to_string_lossy());
    let mut out = String::from("[pin]\n");
    if let Some(d) = &pins.executable {
        let _ = writeln!(out, "executable = {}", q(d));
    }
    for f in &pins.files {
        let _ = writeln!(
            out,
            "\n[[pin.file]]\npath = {}\ndigest = {}",
            p(&f.path),
            q(&f.digest)
        );
    }
    for n in &pins.npm {
        let _ = writeln!(
            out,
            "\n[[pin.npm]]\ndir = {}\nname = {}\nversion = {}",
            p(&n.dir),
            q(&n.name),
            q(&n.version)
        );
        if let Some(i) = &n.integrity {
            let _ = writeln!(out, "integrity = {}", q(i));
        }
        let _ = writeln!(out, "tree = {}", q(&n.tree));
    }
    for y in &pins.pypi {
        let _ = writeln!(
            out,
            "\n[[pin.pypi]]\nsite_packages = {}\nname = {}\nversion = {}\nrecord = {}",
            p(&y.site_packages),
            q(&y.name),
            q(&y.version),
            q(&y.record)
        );
    }
    if let Some(s) = &pins.signature {
        let _ = writeln!(
            out,
            "\n[pin.signature]\nallowed_signers = {}\nidentity = {}\nnamespace = {}\nfile = {}",
            p(&s.key.allowed_signers),
            q(&s.key.identity),
            q(&s.key.namespace),
            p(&s.file)
        );
    }
    out
}

/// Finds a command on the PATH (as `exec` does, with this process's PATH).
pub fn which(cmd: &str) -> Option<PathBuf> {
    if cmd.contains('/') {
        let executable = |p: &Path| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        };
        let p = std::path::absolute(cmd).ok()?;
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    // A bare name is looked up in PATH's directories only, so the working directory is unused.
    which::which_in(cmd, Some(path), "/").ok()
}

/// Keeps the listing of each pinned npm tree in the state dir, so a later mismatch can name the
/// files that changed (best effort: a tree that cannot be listed now is skipped).
pub fn remember_npm_trees(pins: &Pins, state_dir: &Path) {
    for n in &pins.npm {
        if let Ok(listing) = tree_listing(&n.dir) {
            remember_listing(state_dir, &n.tree, &listing);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_url_matches_the_wheel_encoding() {
        // sha256("") as a wheel RECORD writes it.
        assert_eq!(
            base64_url(&Sha256::digest(b"")),
            "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
        );
        assert_eq!(base64_url(b"f"), "Zg");
        assert_eq!(base64_url(b"fo"), "Zm8");
        assert_eq!(base64_url(b"foo"), "Zm9v");
    }

    #[test]
    fn names_normalise_like_pep_503() {
        assert_eq!(normalize("Mcp_Server.Time"), "mcp-server-time");
        assert_eq!(normalize("a--b__c"), "a-b-c");
    }

    #[test]
    fn record_rows_parse_quoted_paths() {
        let rows = record_rows("a/b.py,sha256=xx,12\n\"c,d.py\",sha256=yy,3\nx/RECORD,,\n");
        assert_eq!(
            rows,
            [
                ("a/b.py".to_string(), "sha256=xx".to_string()),
                ("c,d.py".to_string(), "sha256=yy".to_string()),
                ("x/RECORD".to_string(), String::new()),
            ]
        );
    }

    #[test]
    fn record_paths_leave_site_packages_lexically() {
        let site = Path::new("/v/lib/python3.11/site-packages");
        assert_eq!(record_path(site, "../../../bin/x"), Path::new("/v/bin/x"));
        assert_eq!(record_path(site, "m/a.py"), site.join("m/a.py"));
    }

    #[test]
    fn npm_package_dirs_handle_scopes() {
        let root = std::env::temp_dir().join(format!("supply-npm-{}", std::process::id()));
        let scoped = root.join("node_modules/@s/p");
        let plain = root.join("node_modules/q");
        for d in [&scoped, &plain] {
            std::fs::create_dir_all(d.join("dist")).expect("mkdir");
            std::fs::write(d.join("package.json"), "{}").expect("write");
        }
        assert_eq!(
            npm_package_dir(&scoped.join("dist/index.js")),
            Some(scoped.clone())
        );
        assert_eq!(npm_package_dir(&plain.join("dist/i.js")), Some(plain));
        assert_eq!(npm_package_dir(&root.join("x.js")), None);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_listing_parses_back_to_its_entries_even_with_odd_names() {
        let root = std::env::temp_dir().join(format!("supply-listing-{}", std::process::id()));
        std::fs::create_dir_all(root.join("d")).expect("mkdir");
        std::fs::write(root.join("d/a b\nc.js"), "x").expect("write");
        std::fs::write(root.join("z"), "").expect("write");
        let listing = tree_listing(&root).expect("listing");
        let entries = parse_listing(&listing);
        assert_eq!(
            entries.keys().collect::<Vec<_>>(),
            ["d/a b\nc.js", "z"],
            "{listing:?}"
        );
        assert_eq!(entry_words(&entries["z"]), sha256_bytes(b""));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn tree_digest_changes_with_one_byte_and_with_a_new_file() {
        let root = std::env::temp_dir().join(format!("supply-tree-{}", std::process::id()));
        std::fs::create_dir_all(root.join("d")).expect("mkdir");
        std::fs::write(root.join("d/a.js"), "abc").expect("write");
        let before = tree_digest(&root).expect("digest");
        assert_eq!(before, tree_digest(&root).expect("digest"));
        std::fs::write(root.join("d/a.js"), "abd").expect("write");
        let changed = tree_digest(&root).expect("digest");
        assert_ne!(before, changed);
        std::fs::write(root.join("d/b.js"), "").expect("write");
        assert_ne!(changed, tree_digest(&root).expect("digest"));
        let _ = std::fs::remove_dir_all(&root);
    }
}
