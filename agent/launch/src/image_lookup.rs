//! Which references to ask the engine for, to find the local image a policy pins, the way
//! `docker run` finds it: `name@sha256:<digest>` by repo digest, then by image id, whatever the
//! local tags; `name:tag@sha256:<digest>` by its tag (the digest is checked on what is found);
//! a bare `sha256:<id>` by id.

use mcp_guard_policy::ImageRef;

/// Whether `name` carries a tag (a `:` after its last `/`; a registry's port comes before).
fn has_tag(name: &str) -> bool {
    name.rsplit('/')
        .next()
        .is_some_and(|last| last.contains(':'))
}

/// The references to inspect, in order; the first the engine knows is the image (its digest is
/// then checked against the pin).
pub fn candidates(image: &ImageRef) -> Vec<String> {
    match (&image.name, &image.digest) {
        (Some(name), Some(digest)) if !has_tag(name) => {
            vec![format!("{name}@{digest}"), digest.clone()]
        }
        (Some(name), _) => vec![name.clone()],
        (None, Some(digest)) => vec![digest.clone()],
        (None, None) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_guard_policy::parse_image;

    #[test]
    fn a_digest_without_tag_is_looked_up_by_repo_digest_then_id() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let c = |s: &str| candidates(&parse_image(s).expect("valid reference"));
        assert_eq!(
            c(&format!("ghcr.io/org/server@{d}")),
            [format!("ghcr.io/org/server@{d}"), d.clone()]
        );
        // A registry port is not a tag.
        assert_eq!(
            c(&format!("localhost:5000/server@{d}")),
            [format!("localhost:5000/server@{d}"), d.clone()]
        );
        assert_eq!(c(&format!("server:1@{d}")), ["server:1"]);
        assert_eq!(c("server:1"), ["server:1"]);
        assert_eq!(c(&d), [d]);
    }
}
