//! Debian's kernel packages, through apt, cached.
//!
//! apt runs with its own sources list, lists and cache under the cache dir, so the host's apt
//! configuration, its package lists and what it installs by default stay as they are. Each
//! kernel series resolves to the newest `linux-image-<series>.*-cloud-amd64` in those sources;
//! the cloud flavour boots under QEMU with at most a handful of modules (virtio, virtiofs,
//! overlay), which are taken from the same packages.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use super::matrix::Kernel;
use crate::Result;

/// Debian suites the kernels come from. Not bookworm-backports: its 6.12 builds crash in early
/// boot under TCG now and then, and trixie-security carries newer 6.12 builds.
const SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security trixie-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
";

/// Builds known to misbehave under TCG: never picked, even when newest.
const KNOWN_BAD: &[(&str, &str)] = &[("6.12.95-", "crashes in early boot under TCG now and then")];

/// Modules the boot needs (virtio PCI transport, virtiofs, overlay); with their dependencies.
/// Where the kernel has one built in, its file is absent from the package and nothing loads.
const BOOT_MODULES: &[&str] = &["virtio_pci", "virtiofs", "overlay"];

/// A kernel ready to boot: its image and the modules init loads, in load order.
#[derive(Debug, Clone)]
pub(super) struct KernelFiles {
    pub package: String,
    pub version: String,
    pub release: String,
    pub vmlinuz: PathBuf,
    pub modules: Vec<(String, PathBuf)>,
}

/// The cache: `$XDG_CACHE_HOME/mcp-guard/kernels`, else `~/.cache/mcp-guard/kernels`.
pub(super) fn cache_dir() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME").ok_or("HOME is not set")?).join(".cache"),
    };
    Ok(base.join("mcp-guard/kernels"))
}

/// Hands out the kernels of the matrix; talks to the archive (one `apt-get update` per run) only
/// for a series not cached yet, or for every series with `refresh`.
pub(super) struct Fetcher {
    cache: PathBuf,
    refresh: bool,
    apt: Option<Apt>,
}

impl Fetcher {
    pub(super) fn new(refresh: bool) -> Result<Self> {
        Ok(Fetcher {
            cache: cache_dir()?,
            refresh,
            apt: None,
        })
    }

    fn apt(&mut self) -> Result<&Apt> {
        if self.apt.is_none() {
            let apt = Apt::new(&self.cache)?;
            apt.update()?;
            self.apt = Some(apt);
        }
        self.apt
            .as_ref()
            .ok_or_else(|| "apt is not set up".to_string())
    }

    /// The kernel of `kernel.series`: the cached one unless refreshing (or nothing is cached),
    /// else the newest in the archive, downloaded and unpacked once.
    pub(super) fn kernel(&mut self, kernel: &Kernel) -> Result<KernelFiles> {
        let current = self.cache.join(format!("{}.current", kernel.series));
        let cached = fs::read_to_string(&current)
            .ok()
            .and_then(|dir| load(&self.cache.join(dir.trim())));
        if let (false, Some(files)) = (self.refresh, &cached) {
            println!(
                "==> kernel {}: cached {} {} (--refresh looks for a newer one)",
                kernel.series, files.package, files.version
            );
            return Ok(files.clone());
        }
        let (package, version) = self.apt()?.newest(kernel.series)?;
        let dir_name = format!("{package}_{version}");
        let dir = self.cache.join(&dir_name);
        let files = match load(&dir) {
            Some(files) => files,
            None => unpack(self.apt()?, &package, &version, &dir)?,
        };
        write(&current, format!("{dir_name}\n"))?;
        let moved = match &cached {
            Some(old) if old.version != files.version => format!(" (was {})", old.version),
            _ => String::new(),
        };
        println!(
            "==> kernel {}: {} {}{moved}, the newest {}.x in the archive (release {})",
            kernel.series, files.package, files.version, kernel.series, files.release
        );
        Ok(files)
    }
}

fn write(path: &Path, text: String) -> Result {
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// A kernel unpacked earlier: `meta` lists package, version, release and the module order.
fn load(dir: &Path) -> Option<KernelFiles> {
    let meta = fs::read_to_string(dir.join("meta")).ok()?;
    let mut fields = BTreeMap::new();
    let mut modules = Vec::new();
    for line in meta.lines() {
        let (k, v) = line.split_once('=')?;
        if k == "module" {
            modules.push((v.to_string(), dir.join("modules").join(format!("{v}.ko"))));
        } else {
            fields.insert(k, v.to_string());
        }
    }
    let files = KernelFiles {
        package: fields.remove("package")?,
        version: fields.remove("version")?,
        release: fields.remove("release")?,
        vmlinuz: dir.join("vmlinuz"),
        modules,
    };
    let complete = files.vmlinuz.exists() && files.modules.iter().all(|(_, p)| p.exists());
    complete.then_some(files)
}

/// Downloads `package` (and the split-out image/modules packages it depends on at the same
/// version), unpacks them to a temporary tree, keeps vmlinuz and the boot modules in `dir`.
fn unpack(apt: &Apt, package: &str, version: &str, dir: &Path) -> Result<KernelFiles> {
    let mut debs = vec![apt.download(package, version)?];
    for dep in apt.same_version_parts(package, version)? {
        debs.push(apt.download(&dep, version)?);
    }
    let tmp = dir.with_extension("unpacking");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    for deb in &debs {
        super::run_quiet(
            "dpkg-deb",
            &["-x", &deb.to_string_lossy(), &tmp.to_string_lossy()],
        )?;
    }
    let result = keep_boot_files(&tmp, package, version, dir);
    let _ = fs::remove_dir_all(&tmp);
    result
}

fn keep_boot_files(tree: &Path, package: &str, version: &str, dir: &Path) -> Result<KernelFiles> {
    // Older packages: /boot/vmlinuz-R and /lib/modules/R; newer: /usr/lib/modules/R/vmlinuz.
    let mut found = None;
    for moddir in [tree.join("lib/modules"), tree.join("usr/lib/modules")] {
        for entry in fs::read_dir(&moddir).into_iter().flatten().flatten() {
            let release = entry.file_name().to_string_lossy().into_owned();
            for image in [
                tree.join("boot").join(format!("vmlinuz-{release}")),
                entry.path().join("vmlinuz"),
            ] {
                if image.exists() {
                    found = Some((release.clone(), image, entry.path()));
                }
            }
        }
    }
    let (release, image, moddir) =
        found.ok_or_else(|| format!("{package} {version}: no vmlinuz in the packages"))?;
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir.join("modules")).map_err(|e| format!("{}: {e}", dir.display()))?;
    fs::copy(&image, dir.join("vmlinuz")).map_err(|e| format!("{}: {e}", image.display()))?;

    let index = module_index(&moddir);
    let mut order = Vec::new();
    for name in BOOT_MODULES {
        add_module(name, &index, dir, &mut order, 0)?;
    }
    let mut meta = format!("package={package}\nversion={version}\nrelease={release}\n");
    for name in &order {
        meta.push_str(&format!("module={name}\n"));
    }
    write(&dir.join("meta"), meta)?;
    load(dir).ok_or_else(|| format!("{}: unpacked kernel is incomplete", dir.display()))
}

/// Module name (dashes as underscores, as the kernel names them) → file in the package.
fn module_index(moddir: &Path) -> BTreeMap<String, PathBuf> {
    let mut index = BTreeMap::new();
    let mut stack = vec![moddir.join("kernel")];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(stem) = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
                .iter()
                .find_map(|ext| file.strip_suffix(ext))
            {
                index.insert(stem.replace('-', "_"), path);
            }
        }
    }
    index
}

/// Adds `name` after its dependencies (read from the module's `.modinfo`), decompressed.
fn add_module(
    name: &str,
    index: &BTreeMap<String, PathBuf>,
    dir: &Path,
    order: &mut Vec<String>,
    depth: usize,
) -> Result {
    if order.iter().any(|n| n == name) {
        return Ok(());
    }
    if depth > 16 {
        return Err(format!("module dependencies of {name} loop"));
    }
    let Some(path) = index.get(name) else {
        // Not shipped as a module: built into this kernel (init fails loudly if it is not).
        return Ok(());
    };
    let bytes = decompress(path)?;
    for dep in depends(&bytes) {
        add_module(&dep, index, dir, order, depth + 1)?;
    }
    let dest = dir.join("modules").join(format!("{name}.ko"));
    fs::write(&dest, &bytes).map_err(|e| format!("{}: {e}", dest.display()))?;
    order.push(name.to_string());
    Ok(())
}

fn decompress(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = match name.rsplit('.').next() {
        Some("xz") => "xz",
        Some("zst") => "zstd",
        Some("gz") => "gzip",
        _ => return fs::read(path).map_err(|e| format!("{name}: {e}")),
    };
    let out = Command::new(tool)
        .args(["-dc", &name])
        .output()
        .map_err(|e| format!("cannot start {tool} for {name}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{tool} -dc {name} failed"));
    }
    Ok(out.stdout)
}

/// The `depends=a,b` entry of a module's `.modinfo` section (NUL-separated `key=value`).
fn depends(module: &[u8]) -> Vec<String> {
    let key = b"\0depends=";
    let Some(start) = module.windows(key.len()).position(|w| w == key) else {
        return Vec::new();
    };
    let rest = &module[start + key.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|d| !d.is_empty())
        .map(|d| d.replace('-', "_"))
        .collect()
}

/// apt with its own sources, lists and cache (the host's stay untouched).
struct Apt {
    options: Vec<String>,
    debs: PathBuf,
}

impl Apt {
    fn new(cache: &Path) -> Result<Self> {
        let apt = cache.join("apt");
        for d in [
            apt.join("lists/partial"),
            apt.join("cache/archives/partial"),
            cache.join("debs"),
        ] {
            fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let sources = apt.join("sources.list");
        write(&sources, SOURCES.to_string())?;
        let dir = |p: &Path| p.to_string_lossy().into_owned();
        let options = [
            format!("Dir::Etc::sourcelist={}", dir(&sources)),
            "Dir::Etc::sourceparts=-".into(),
            "Dir::Etc::preferencesparts=-".into(),
            format!("Dir::State::Lists={}", dir(&apt.join("lists"))),
            format!("Dir::Cache={}", dir(&apt.join("cache"))),
            // Only the package indices: no translations, no AppStream metadata.
            "Acquire::Languages=none".into(),
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".into(),
            // Downloads land in the root-owned cache, which apt's sandbox user cannot write.
            "APT::Sandbox::User=root".into(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect();
        Ok(Apt {
            options,
            debs: cache.join("debs"),
        })
    }

    fn output(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = Command::new(program)
            .args(&self.options)
            .args(args)
            .current_dir(&self.debs)
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

    fn update(&self) -> Result {
        println!(
            "==> kernel packages: apt-get update (own sources list and lists under the cache)"
        );
        self.output("apt-get", &["update", "-q"])
            .map(|_| ())
            .map_err(|e| format!("{e}\n  (needs root and deb.debian.org)"))
    }

    /// The newest `linux-image-<series>.*-cloud-amd64` package and version, known-bad skipped.
    fn newest(&self, series: &str) -> Result<(String, String)> {
        let names: Vec<String> = self
            .output("apt-cache", &["pkgnames", "linux-image-"])?
            .lines()
            .filter(|n| {
                n.strip_prefix("linux-image-")
                    .and_then(|rest| rest.strip_suffix("-cloud-amd64"))
                    .and_then(|abi| abi.strip_prefix(series))
                    .is_some_and(|tail| {
                        tail.strip_prefix('.')
                            .is_some_and(|t| t.starts_with(|c: char| c.is_ascii_digit()))
                    })
            })
            .map(str::to_string)
            .collect();
        if names.is_empty() {
            return Err(format!(
                "no linux-image-{series}.*-cloud-amd64 in the archive"
            ));
        }
        let mut args = vec!["madison"];
        args.extend(names.iter().map(String::as_str));
        let mut best: Option<(String, String)> = None;
        let mut avoided = Vec::new();
        for line in self.output("apt-cache", &args)?.lines() {
            let mut cols = line.split('|').map(str::trim);
            let (Some(name), Some(version)) = (cols.next(), cols.next()) else {
                continue;
            };
            if !version.starts_with(&format!("{series}.")) {
                continue;
            }
            if let Some((_, why)) = KNOWN_BAD.iter().find(|(v, _)| version.starts_with(v)) {
                avoided.push((name.to_string(), version.to_string(), *why));
                continue;
            }
            let newer = match &best {
                None => true,
                Some((_, b)) => version_gt(version, b)?,
            };
            if newer {
                best = Some((name.to_string(), version.to_string()));
            }
        }
        let (name, version) =
            best.ok_or_else(|| format!("no usable {series} cloud kernel in the archive"))?;
        for (bad, bad_version, why) in avoided {
            if version_gt(&bad_version, &version)? {
                println!("    not {bad} {bad_version}, newer but it {why}");
            }
        }
        Ok((name, version))
    }

    /// Packages the image package depends on at exactly its version that carry the kernel
    /// (trixie-backports splits the image into linux-binary-* and linux-modules-*).
    fn same_version_parts(&self, package: &str, version: &str) -> Result<Vec<String>> {
        let show = self.output("apt-cache", &["show", &format!("{package}={version}")])?;
        let depends = show
            .lines()
            .find_map(|l| l.strip_prefix("Depends:"))
            .unwrap_or("");
        Ok(depends
            .split([',', '|'])
            .map(str::trim)
            .filter_map(|d| {
                let (name, constraint) = d.split_once(' ')?;
                let exact = constraint.trim() == format!("(= {version})");
                let part = name.starts_with("linux-binary-") || name.starts_with("linux-modules-");
                (exact && part).then(|| name.to_string())
            })
            .collect())
    }

    /// The .deb of `package` `version` in the cache, downloaded unless it is there already.
    fn download(&self, package: &str, version: &str) -> Result<PathBuf> {
        let file = self.debs.join(format!(
            "{package}_{}_amd64.deb",
            version.replace(':', "%3a")
        ));
        if file.exists() {
            return Ok(file);
        }
        println!("==> downloading {package} {version}");
        self.output(
            "apt-get",
            &["download", "-q", &format!("{package}={version}")],
        )?;
        if file.exists() {
            Ok(file)
        } else {
            Err(format!("apt-get download left no {}", file.display()))
        }
    }
}

/// Debian version order, as dpkg itself defines it.
fn version_gt(a: &str, b: &str) -> Result<bool> {
    let status = Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .map_err(|e| format!("cannot start dpkg: {e}"))?;
    Ok(status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_module_dependencies_from_modinfo() {
        let ko = b"\x7fELF junk\0license=GPL\0depends=virtio_ring,virtio-pci-modern-dev\0name=virtio_pci\0";
        assert_eq!(depends(ko), ["virtio_ring", "virtio_pci_modern_dev"]);
        assert!(depends(b"\0depends=\0name=fuse\0").is_empty());
        assert!(depends(b"no modinfo here").is_empty());
    }
}
