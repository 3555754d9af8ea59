//! Signed pins: the canonical text a signature covers ([`manifest`]) and the check of a
//! detached `ssh-keygen -Y sign` signature over it ([`verify_signature`]).

use std::{
    fmt::Write as _,
    path::Path,
    process::{Command, Stdio},
};

use super::{Pins, SignerKey, SupplyError};

/// Verifies a detached SSH signature (`ssh-keygen -Y sign`) over `data`: the signer must be
/// `key.identity` in the `key.allowed_signers` file (OpenSSH's `allowed_signers` format) and the
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
