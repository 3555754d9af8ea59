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
    collections::BTreeMap,
    io::Read,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

pub use mcp_guard_policy::{FilePin, NpmPin, PinSignature, Pins, PypiPin, SignerKey};

pub mod argv;
pub mod compile_jail;
mod generate;
mod npm;
mod pycache;
mod pypi;
mod signature;

pub use generate::{generate, to_toml};
use npm::verify_npm;
pub use npm::{lockfile_integrity, remember_npm_trees, tree_digest};
pub use pycache::python_cache;
use pypi::{verify_pypi, verify_startup_files};
pub use signature::{manifest, verify_signature};

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
    let f = std::fs::File::open(path).map_err(|e| io_err(path, &e))?;
    sha256_reader(f).map_err(|e| io_err(path, &e))
}

fn io_err(path: &Path, e: &std::io::Error) -> SupplyError {
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
    program.canonicalize().map_err(|e| io_err(program, &e))
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

#[cfg(test)]
mod tests {
    use super::*;
    use super::{npm::*, pypi::*};

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
