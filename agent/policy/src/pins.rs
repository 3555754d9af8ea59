//! `[pin]`: content pins of what the server runs (the model and its checker). Verifying them
//! against the installed files is the launcher's job (`supply`).

use std::path::PathBuf;

use toml_edit::{Item, TableLike};

use crate::check::{Checker, Span, describe, describe_value, entry, join};
use crate::values::{has_dot_dot, is_sri};

/// `[pin]`: content pins of what the jail runs; empty pins nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pins {
    /// `executable = "sha256:..."`: the program after PATH lookup and symlinks.
    pub executable: Option<String>,
    /// `[[pin.file]]`: single files (an entry script, an interpreter).
    pub files: Vec<FilePin>,
    /// `[[pin.npm]]`: installed npm packages.
    pub npm: Vec<NpmPin>,
    /// `[[pin.pypi]]`: installed PyPI distributions.
    pub pypi: Vec<PypiPin>,
    /// `[pin.signature]`: the pins must carry this signer's detached SSH signature.
    pub signature: Option<PinSignature>,
}

impl Pins {
    /// Whether anything is pinned (a signature alone pins nothing).
    pub fn is_empty(&self) -> bool {
        self.executable.is_none()
            && self.files.is_empty()
            && self.npm.is_empty()
            && self.pypi.is_empty()
    }
}

/// One pinned file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilePin {
    /// Absolute path.
    pub path: PathBuf,
    /// `sha256:<hex>` of its content.
    pub digest: String,
}

/// One pinned npm package, as installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpmPin {
    /// The package's directory (`.../node_modules/NAME`).
    pub dir: PathBuf,
    /// package.json `name`.
    pub name: String,
    /// package.json `version`.
    pub version: String,
    /// The lockfile's `integrity` (the registry tarball's SRI hash), when pinned.
    pub integrity: Option<String>,
    /// `sha256:<hex>` over the installed tree (`supply::tree_digest`).
    pub tree: String,
}

/// One pinned PyPI distribution, as installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PypiPin {
    /// The site-packages directory holding its dist-info.
    pub site_packages: PathBuf,
    /// Distribution name.
    pub name: String,
    /// Version.
    pub version: String,
    /// `sha256:<hex>` of its dist-info RECORD (which lists a sha256 per installed file).
    pub record: String,
}

/// `[pin.signature]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinSignature {
    /// Who must have signed.
    pub key: SignerKey,
    /// The detached signature over the pins' manifest (`mcp-guard policy manifest`).
    pub file: PathBuf,
}

/// A signer for `ssh-keygen -Y verify`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignerKey {
    /// OpenSSH `allowed_signers` file holding the public key.
    pub allowed_signers: PathBuf,
    /// The principal (identity) the signature must be from.
    pub identity: String,
    /// The signature namespace (`-n`), `mcp-guard-pins` unless set.
    pub namespace: String,
}

impl Checker<'_> {
    pub(crate) fn pin(&mut self, item: &Item, span: &Span) -> Pins {
        let mut pins = Pins::default();
        let known = ["executable", "file", "npm", "pypi", "signature"];
        let Some(table) = self.table(item, span, "pin", &known) else {
            return pins;
        };
        if let Some(value) = table.get("executable") {
            let (_, s) = entry(table, "executable", span);
            pins.executable = self.digest(value, &s, "pin.executable");
        }
        if let Some(value) = table.get("file") {
            let (_, s) = entry(table, "file", span);
            for (t, ts, path) in self.tables(value, &s, "pin.file", &["path", "digest"]) {
                let path_ = self.pin_path(t, &ts, &path, "path");
                let digest = self.pin_digest(t, &ts, &path, "digest");
                if let (Some(path), Some(digest)) = (path_, digest) {
                    pins.files.push(FilePin { path, digest });
                }
            }
        }
        if let Some(value) = table.get("npm") {
            let (_, s) = entry(table, "npm", span);
            let keys = ["dir", "name", "version", "integrity", "tree"];
            for (t, ts, path) in self.tables(value, &s, "pin.npm", &keys) {
                let dir = self.pin_path(t, &ts, &path, "dir");
                let name = self.pin_string(t, &ts, &path, "name", true);
                let version = self.pin_string(t, &ts, &path, "version", true);
                let integrity = self.pin_string(t, &ts, &path, "integrity", false);
                if let Some(i) = &integrity
                    && !is_sri(i)
                {
                    let (_, is) = entry(t, "integrity", &ts);
                    self.error(
                        &is,
                        &join(&path, "integrity"),
                        format!("{i:?} is not an SRI hash such as \"sha512-<base64>\""),
                    );
                }
                let tree = self.pin_digest(t, &ts, &path, "tree");
                if let (Some(dir), Some(name), Some(version), Some(tree)) =
                    (dir, name, version, tree)
                {
                    pins.npm.push(NpmPin {
                        dir,
                        name,
                        version,
                        integrity,
                        tree,
                    });
                }
            }
        }
        if let Some(value) = table.get("pypi") {
            let (_, s) = entry(table, "pypi", span);
            let keys = ["site_packages", "name", "version", "record"];
            for (t, ts, path) in self.tables(value, &s, "pin.pypi", &keys) {
                let site = self.pin_path(t, &ts, &path, "site_packages");
                let name = self.pin_string(t, &ts, &path, "name", true);
                let version = self.pin_string(t, &ts, &path, "version", true);
                let record = self.pin_digest(t, &ts, &path, "record");
                if let (Some(site_packages), Some(name), Some(version), Some(record)) =
                    (site, name, version, record)
                {
                    pins.pypi.push(PypiPin {
                        site_packages,
                        name,
                        version,
                        record,
                    });
                }
            }
        }
        if let Some(value) = table.get("signature") {
            let (_, s) = entry(table, "signature", span);
            let keys = ["allowed_signers", "identity", "namespace", "file"];
            if let Some(t) = self.table(value, &s, "pin.signature", &keys) {
                let p = "pin.signature";
                let signers = self.pin_path(t, &s, p, "allowed_signers");
                let identity = self.pin_string(t, &s, p, "identity", true);
                let namespace = self.pin_string(t, &s, p, "namespace", false);
                let file = self.pin_path(t, &s, p, "file");
                if let (Some(allowed_signers), Some(identity), Some(file)) =
                    (signers, identity, file)
                {
                    pins.signature = Some(PinSignature {
                        key: SignerKey {
                            allowed_signers,
                            identity,
                            namespace: namespace.unwrap_or_else(|| "mcp-guard-pins".into()),
                        },
                        file,
                    });
                }
            }
        }
        if pins.signature.is_some() && pins.is_empty() {
            self.error(
                span,
                "pin.signature",
                "a signature over no pins protects nothing: add the pins it signs",
            );
        }
        pins
    }

    /// An array of tables (`[[x]]` or `x = [{...}]`), each checked for unknown keys.
    pub(crate) fn tables<'d>(
        &mut self,
        item: &'d Item,
        span: &Span,
        path: &str,
        known: &[&str],
    ) -> Vec<(&'d dyn TableLike, Span, String)> {
        let mut found: Vec<(&'d dyn TableLike, Span)> = Vec::new();
        if let Some(aot) = item.as_array_of_tables() {
            for t in aot {
                found.push((t, t.span().or_else(|| span.clone())));
            }
        } else if let Some(array) = item.as_array() {
            for v in array {
                match v.as_inline_table() {
                    Some(t) => found.push((t, t.span().or_else(|| span.clone()))),
                    None => self.error(
                        &v.span().or_else(|| span.clone()),
                        path,
                        format!("expected a table, found {}", describe_value(v)),
                    ),
                }
            }
        } else {
            self.error(
                span,
                path,
                format!("expected an array of tables, found {}", describe(item)),
            );
        }
        let mut out = Vec::new();
        for (i, (t, ts)) in found.into_iter().enumerate() {
            let tpath = format!("{path}[{i}]");
            for (key, _) in t.iter() {
                if !known.contains(&key) {
                    let (ks, _) = entry(t, key, &ts);
                    self.error(
                        &ks,
                        &join(&tpath, key),
                        format!("unknown key (expected one of: {})", known.join(", ")),
                    );
                }
            }
            out.push((t, ts, tpath));
        }
        out
    }

    fn pin_string(
        &mut self,
        t: &dyn TableLike,
        span: &Span,
        path: &str,
        key: &str,
        required: bool,
    ) -> Option<String> {
        let kpath = join(path, key);
        match t.get(key) {
            None => {
                if required {
                    self.error(span, &kpath, "missing");
                }
                None
            }
            Some(v) => {
                let (_, s) = entry(t, key, span);
                match self.string(v, &s, &kpath) {
                    Some("") => {
                        self.error(&s, &kpath, "must not be empty");
                        None
                    }
                    other => other.map(str::to_string),
                }
            }
        }
    }

    fn pin_path(
        &mut self,
        t: &dyn TableLike,
        span: &Span,
        path: &str,
        key: &str,
    ) -> Option<PathBuf> {
        let s = self.pin_string(t, span, path, key, true)?;
        if !s.starts_with('/') || has_dot_dot(&s) {
            let (_, vs) = entry(t, key, span);
            self.error(
                &vs,
                &join(path, key),
                format!("{s:?} must be an absolute path without '..'"),
            );
            return None;
        }
        Some(PathBuf::from(s))
    }

    fn pin_digest(
        &mut self,
        t: &dyn TableLike,
        span: &Span,
        path: &str,
        key: &str,
    ) -> Option<String> {
        let kpath = join(path, key);
        let Some(v) = t.get(key) else {
            self.error(
                span,
                &kpath,
                "missing (`mcp-guard policy pin -- CMD` writes it)",
            );
            return None;
        };
        let (_, s) = entry(t, key, span);
        self.digest(v, &s, &kpath)
    }

    /// `sha256:` and 64 lowercase hex digits.
    pub(crate) fn digest(&mut self, item: &Item, span: &Span, path: &str) -> Option<String> {
        let d = self.string(item, span, path)?;
        let ok = d.strip_prefix("sha256:").is_some_and(|h| {
            h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        });
        if ok {
            Some(d.to_string())
        } else {
            self.error(
                span,
                path,
                format!("{d:?} is not \"sha256:\" followed by 64 lowercase hex digits"),
            );
            None
        }
    }
}
