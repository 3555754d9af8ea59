//! Container image references (`[isolation] image`).

/// A container image reference: `name[:tag][@sha256:HEX]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// Repository and tag as written, without the digest (`None` for a bare `sha256:HEX` id).
    pub name: Option<String>,
    /// The pinned digest, `sha256:` and 64 lowercase hex digits.
    pub digest: Option<String>,
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.name, &self.digest) {
            (Some(n), Some(d)) => write!(f, "{n}@{d}"),
            (Some(n), None) => write!(f, "{n}"),
            (None, Some(d)) => write!(f, "{d}"),
            (None, None) => write!(f, "<none>"),
        }
    }
}

/// Parses `name[:tag][@sha256:HEX]` or a bare `sha256:HEX` image id.
pub fn parse_image(s: &str) -> Result<ImageRef, String> {
    let digest_ok = |d: &str| {
        d.strip_prefix("sha256:").is_some_and(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
    };
    let (name, digest) = match s.split_once('@') {
        Some((n, d)) => (Some(n), Some(d)),
        None if s.starts_with("sha256:") => (None, Some(s)),
        None => (Some(s), None),
    };
    if let Some(d) = digest
        && !digest_ok(d)
    {
        return Err(format!(
            "{s:?}: the digest must be sha256: followed by 64 lowercase hex digits"
        ));
    }
    if let Some(n) = name {
        let ok = !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/:".contains(&b))
            && n.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
        if !ok {
            return Err(format!(
                "{s:?}: an image name is lowercase letters, digits, '.', '_', '-', '/' and an \
                 optional :tag, e.g. \"ghcr.io/org/server@sha256:...\""
            ));
        }
    }
    Ok(ImageRef {
        name: name.map(str::to_string),
        digest: digest.map(str::to_string),
    })
}
