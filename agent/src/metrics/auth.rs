//! The `/metrics` bearer token: read from a file only root may read (`metrics_token_file`),
//! required on every request when set, compared in constant time.
//!
//! The agent refuses to start (and a reload keeps the old token) when the file is not a regular
//! file owned by root with no group or other permission bits: a token others can read or write
//! protects nothing, and failing loudly beats serving with it.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    sync::RwLock,
};

use hyper::{HeaderMap, header};
use subtle::ConstantTimeEq as _;

/// The shortest token accepted (e.g. `openssl rand -hex 32` makes 64 characters).
pub const MIN_TOKEN_LEN: usize = 16;

/// The largest token file read.
const MAX_TOKEN_FILE: u64 = 4096;

/// A bearer token; `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({} bytes)", self.0.len())
    }
}

impl Token {
    /// Reads and checks `path` (see the module doc); the error says what is wrong and how to fix it.
    pub fn from_file(path: &Path) -> Result<Token, String> {
        use crate::credential_file::{self, Owner, Refusal};
        let err = |what: String| format!("metrics_token_file {}: {what}", path.display());
        let mut file = credential_file::open(path, Owner::Root).map_err(|r| {
            err(match r {
                Refusal::Owner(uid) => format!(
                    "owned by uid {uid}, not root: `chown root:root {}` (the agent refuses to \
                     serve /metrics with a token another user controls)",
                    path.display()
                ),
                Refusal::Mode(mode) => format!(
                    "mode {mode:04o} lets group or others at it: `chmod 0600 {}` (the agent \
                     refuses to serve /metrics with a token other users can read)",
                    path.display()
                ),
                other => other.to_string(),
            })
        })?;
        let mut text = Vec::new();
        file.by_ref()
            .take(MAX_TOKEN_FILE + 1)
            .read_to_end(&mut text)
            .map_err(|e| err(e.to_string()))?;
        if text.len() as u64 > MAX_TOKEN_FILE {
            return Err(err(format!("longer than {MAX_TOKEN_FILE} bytes")));
        }
        Token::parse(&text).map_err(|e| err(format!("{e} (e.g. `openssl rand -hex 32`)")))
    }

    /// A token from its text (surrounding whitespace dropped): at least [`MIN_TOKEN_LEN`]
    /// printable ASCII characters, no spaces.
    pub fn parse(text: &[u8]) -> Result<Token, String> {
        let token = text.trim_ascii();
        if token.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "the token is {} characters; at least {MIN_TOKEN_LEN}",
                token.len()
            ));
        }
        if !token.iter().all(u8::is_ascii_graphic) {
            return Err(
                "the token must be printable ASCII without spaces (it travels in an HTTP header)"
                    .into(),
            );
        }
        Ok(Token(token.to_vec()))
    }
}

/// Who may read `/metrics`: everyone who reaches the listener, or only requests carrying the
/// token. Shared by the endpoint and the agent's reload.
#[derive(Debug, Default)]
pub struct Auth {
    token: RwLock<Option<Token>>,
    file: RwLock<Option<PathBuf>>,
}

impl Auth {
    /// Requires `token` (read from `file`) from now on; `None`: no token.
    pub fn set(&self, token: Option<(Token, PathBuf)>) {
        let (token, file) = token.unzip();
        *self
            .token
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = token;
        *self
            .file
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = file;
    }

    /// Whether a token is required.
    pub fn required(&self) -> bool {
        self.token
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }

    /// Whether a request with `headers` may read the metrics.
    pub fn permits(&self, headers: &HeaderMap) -> bool {
        let guard = self
            .token
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(token) = guard.as_ref() else {
            return true;
        };
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| bearer(v.as_bytes()))
        else {
            return false;
        };
        // Constant time in the token's content (only the lengths decide early).
        bool::from(given.ct_eq(&token.0))
    }
}

/// The credentials of an `Authorization: Bearer <token>` value (scheme case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, a.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn only_the_right_bearer_token_passes() {
        let auth = Auth::default();
        assert!(auth.permits(&headers(None)), "no token configured: open");
        auth.set(Some((Token(b"0123456789abcdef".to_vec()), "/t".into())));
        assert!(auth.required());
        assert!(!auth.permits(&headers(None)));
        assert!(!auth.permits(&headers(Some("Bearer 0123456789abcdeX"))));
        assert!(!auth.permits(&headers(Some("Bearer 0123456789abcde"))));
        assert!(!auth.permits(&headers(Some("Basic 0123456789abcdef"))));
        assert!(!auth.permits(&headers(Some("0123456789abcdef"))));
        assert!(auth.permits(&headers(Some("Bearer 0123456789abcdef"))));
        assert!(auth.permits(&headers(Some("bearer 0123456789abcdef"))));
        auth.set(None);
        assert!(auth.permits(&headers(None)));
    }

    #[test]
    fn the_token_file_must_be_roots_alone() {
        let dir = std::env::temp_dir().join(format!("mcp-guard-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("token");
        std::fs::write(&path, "s3cret-token-0123456789\n").expect("write");
        let chmod =
            |m| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m)).expect("chmod");
        chmod(0o600);
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            let t = Token::from_file(&path).expect("root's 0600 file");
            assert_eq!(t.0, b"s3cret-token-0123456789");
            assert_eq!(format!("{t:?}"), "Token(23 bytes)");
        } else {
            let e = Token::from_file(&path).expect_err("not root's");
            assert!(e.contains("not root"), "{e}");
        }
        chmod(0o640);
        let e = Token::from_file(&path).expect_err("group-readable");
        assert!(e.contains("0640") || e.contains("not root"), "{e}");
        chmod(0o604);
        assert!(Token::from_file(&path).is_err());
        chmod(0o600);
        std::fs::write(&path, "short\n").expect("write");
        if root {
            let e = Token::from_file(&path).expect_err("short");
            assert!(e.contains("at least 16"), "{e}");
        }
        let link = dir.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        let e = Token::from_file(&link).expect_err("a symlink is not followed");
        assert!(e.contains("symbolic link"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
