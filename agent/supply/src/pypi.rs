//! PyPI distributions: a pinned distribution is its name, version and the sha256 of its
//! dist-info `RECORD`, every file of which is checked against the hash RECORD lists; startup
//! files (`.pth`, `sitecustomize`) that run in every interpreter are checked too.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Read,
    path::{Component, Path, PathBuf},
};

use sha2::{Digest, Sha256};

use super::{Pins, PypiPin, SupplyError, base64_url, io_err, sha256_bytes, which};

/// PEP 503 normalised distribution name.
pub(super) fn normalize(name: &str) -> String {
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
pub(super) fn metadata(dist_info: &Path) -> Option<(String, String)> {
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
pub(super) fn dist_infos(site: &Path) -> Vec<PathBuf> {
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
pub(super) fn find_dist(site: &Path, name: &str, version: &str) -> Option<PathBuf> {
    let want = normalize(name);
    dist_infos(site)
        .into_iter()
        .find(|d| metadata(d).is_some_and(|(n, v)| normalize(&n) == want && v == version))
}

/// One RECORD row: path and `sha256=<b64>` (empty for RECORD itself and .pyc files).
pub(super) fn record_rows(text: &str) -> Vec<(String, String)> {
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
pub(super) fn record_path(site: &Path, rel: &str) -> PathBuf {
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
pub(super) fn startup_files(site: &Path) -> Vec<PathBuf> {
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
pub(super) fn verify_startup_files(pins: &Pins) -> Vec<SupplyError> {
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
pub(super) fn all_listed(site: &Path) -> BTreeSet<PathBuf> {
    let mut listed = BTreeSet::new();
    for d in dist_infos(site) {
        if let Ok(t) = std::fs::read_to_string(d.join("RECORD")) {
            listed.extend(record_rows(&t).iter().map(|(r, _)| record_path(site, r)));
        }
    }
    listed
}

/// Checks one distribution; `listed` caches [`all_listed`] per site-packages.
pub(super) fn verify_pypi(
    p: &PypiPin,
    listed: &mut BTreeMap<PathBuf, BTreeSet<PathBuf>>,
) -> Vec<SupplyError> {
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
        Err(e) => return vec![io_err(&record, &e)],
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
pub(super) fn site_packages_of(interpreter: &Path) -> Vec<PathBuf> {
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
pub(super) fn shebang(path: &Path) -> Option<PathBuf> {
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
pub(super) fn owning_dist(site: &Path, targets: &[PathBuf]) -> Vec<(PathBuf, String, String)> {
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

/// Distribution names a dist-info's METADATA requires (`Requires-Dist`), normalised.
pub(super) fn requires(dist: &Path) -> Vec<String> {
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
pub(super) fn pypi_closure(
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
                    );
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
