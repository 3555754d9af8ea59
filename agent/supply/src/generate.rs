//! Writing pins (`mcp-guard policy pin`): what a command runs, found and hashed, as a `[pin]`
//! table.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    path::{Path, PathBuf},
};

use super::{
    FilePin, NpmPin, Pins, PypiPin, SupplyError,
    npm::{lockfile_integrity, npm_closure, npm_package_dir, package_json, tree_digest},
    pypi::{owning_dist, pypi_closure, shebang, site_packages_of, startup_files},
    real_executable, sha256_file,
};

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
