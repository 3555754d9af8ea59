//! npm packages: a pinned package is its name, version, the lockfile's integrity and a digest
//! over the installed tree; a changed tree is narrowed down to the files that changed from the
//! listing kept in the state dir when it last matched.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    os::unix::fs::PermissionsExt,
    path::{Component, Path, PathBuf},
};

use mcp_guard_statefs::StateDir;

use super::{NpmPin, Pins, SHA256, SupplyError, io_err, sha256_bytes, sha256_file};

/// A digest over an installed package tree: every file and symlink below `dir` (nested
/// `node_modules` included), in path order, with its kind, executable bit and content digest.
pub fn tree_digest(dir: &Path) -> Result<String, SupplyError> {
    tree_listing(dir).map(|text| sha256_bytes(text.as_bytes()))
}

/// The text [`tree_digest`] hashes: per entry a line `LEN KIND [DIGEST|TARGET]`, then the
/// relative path (LEN bytes) and a newline.
pub(super) fn tree_listing(dir: &Path) -> Result<String, SupplyError> {
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
pub(super) const LISTINGS_DIR: &str = "npm-trees";

/// A pinned tree's listing's file name in [`LISTINGS_DIR`].
pub(super) fn listing_name(tree: &str) -> String {
    format!("{}.txt", tree.trim_start_matches(SHA256))
}

/// Where a pinned tree's listing is kept (diagnostics only: it names the files that changed).
pub(super) fn listing_path(state_dir: &Path, tree: &str) -> PathBuf {
    state_dir.join(LISTINGS_DIR).join(listing_name(tree))
}

/// Reads a kept listing, if there is one.
pub(super) fn read_listing(state_dir: &Path, tree: &str) -> Option<String> {
    let state = StateDir::existing(state_dir).ok()??;
    let bytes = state.read(LISTINGS_DIR, &listing_name(tree)).ok()??;
    String::from_utf8(bytes).ok()
}

/// Keeps the listing of a tree that matches its pin, for naming changed files later.
pub(super) fn remember_listing(state_dir: &Path, tree: &str, listing: &str) {
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
pub(super) fn entry_words(what: &str) -> String {
    match what.split_once(' ') {
        Some(("f", d)) => d.to_string(),
        Some(("x", d)) => format!("{d} (executable)"),
        Some(("l", t)) => format!("a symlink to {t}"),
        _ => "not a regular file".to_string(),
    }
}

pub(super) fn parse_listing(text: &str) -> BTreeMap<String, String> {
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
pub(super) fn changed_files(
    state_dir: &Path,
    p: &NpmPin,
    what: &str,
    now: &str,
) -> Option<Vec<SupplyError>> {
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

pub(super) fn walk(
    root: &Path,
    rel: &Path,
    out: &mut BTreeMap<String, String>,
) -> Result<(), SupplyError> {
    let dir = root.join(rel);
    let read = std::fs::read_dir(&dir).map_err(|e| io_err(&dir, &e))?;
    for entry in read {
        let entry = entry.map_err(|e| io_err(&dir, &e))?;
        let rel = rel.join(entry.file_name());
        let path = root.join(&rel);
        let meta = std::fs::symlink_metadata(&path).map_err(|e| io_err(&path, &e))?;
        let key = rel.to_string_lossy().into_owned();
        if meta.is_dir() {
            walk(root, &rel, out)?;
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).map_err(|e| io_err(&path, &e))?;
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
pub(super) fn package_json(dir: &Path) -> Result<(String, String), SupplyError> {
    let path = dir.join("package.json");
    let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, &e))?;
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

pub(super) fn verify_npm(p: &NpmPin, state_dir: Option<&Path>) -> Vec<SupplyError> {
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
                });
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
pub(super) fn npm_package_dir(file: &Path) -> Option<PathBuf> {
    let comps: Vec<Component<'_>> = file.components().collect();
    let i = comps
        .iter()
        .rposition(|c| c.as_os_str() == "node_modules")?;
    let first = comps.get(i + 1)?.as_os_str().to_string_lossy();
    let n = if first.starts_with('@') { 3 } else { 2 };
    if comps.len() <= i + n {
        return None;
    }
    let dir: PathBuf = comps[..(i + n)].iter().collect();
    dir.join("package.json").is_file().then_some(dir)
}

/// npm packages and, transitively, the packages their package.json depends on.
pub(super) fn npm_closure(
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
        let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, &e))?;
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
pub(super) fn resolve_npm(from: &Path, name: &str) -> Option<PathBuf> {
    from.ancestors()
        .filter(|a| a.file_name().is_none_or(|n| n != "node_modules"))
        .map(|a| a.join("node_modules").join(name))
        .find(|c| c.join("package.json").is_file())
        .and_then(|c| c.canonicalize().ok())
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
