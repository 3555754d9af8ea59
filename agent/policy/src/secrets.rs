//! `[secrets]`: where each injected variable's value comes from (a file or a systemd
//! credential, never the policy itself), its checker, and reading the values at launch.

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    path::{Path, PathBuf},
};

use toml_edit::Item;

use crate::check::{Checker, Span, describe, entry, join};
use crate::values::{has_dot_dot, is_credential_name, is_env_name};

/// Where a secret's value comes from at launch (never the policy itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Secret {
    /// A file, read at launch; one trailing newline is dropped.
    File(PathBuf),
    /// A systemd credential name, read from `$CREDENTIALS_DIRECTORY/NAME`.
    Credential(String),
}

/// Why a secret could not be read at launch.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file (or credential file) could not be read.
    #[error("cannot read secret {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The value is not UTF-8 text (environment values are passed as text).
    #[error("secret {path} is not UTF-8 text")]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
    /// A credential was asked for but no credentials directory was given to mcp-guard.
    #[error(
        "secret credential {name:?}: $CREDENTIALS_DIRECTORY is not set; run mcp-guard under \
         systemd with LoadCredential={name}:/path (or LoadCredentialEncrypted=), or use \
         {{ file = \"/path\" }} instead"
    )]
    NoCredentialsDirectory {
        /// The credential name.
        name: String,
    },
}

/// Reads a secret's value at launch: a file's content, or the systemd credential
/// `$CREDENTIALS_DIRECTORY/NAME`; one trailing newline (`\n` or `\r\n`) is dropped.
pub fn read_secret(secret: &Secret) -> Result<String, SecretError> {
    read_secret_in(
        secret,
        std::env::var_os("CREDENTIALS_DIRECTORY")
            .filter(|d| !d.is_empty())
            .as_deref(),
    )
}

/// [`read_secret`] with the credentials directory given (tests cannot set the environment safely).
fn read_secret_in(secret: &Secret, credentials_dir: Option<&OsStr>) -> Result<String, SecretError> {
    let path = match secret {
        Secret::File(path) => path.clone(),
        Secret::Credential(name) => match credentials_dir {
            Some(dir) => Path::new(dir).join(name),
            None => return Err(SecretError::NoCredentialsDirectory { name: name.clone() }),
        },
    };
    let bytes = std::fs::read(&path).map_err(|source| SecretError::Read {
        path: path.clone(),
        source,
    })?;
    let mut value = String::from_utf8(bytes).map_err(|_| SecretError::NotUtf8 { path })?;
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok(value)
}

impl Checker<'_> {
    pub(crate) fn secrets(&mut self, item: &Item, span: &Span) -> BTreeMap<String, Secret> {
        let mut secrets = BTreeMap::new();
        let Some(table) = item.as_table_like() else {
            self.error(
                span,
                "secrets",
                format!("expected a table, found {}", describe(item)),
            );
            return secrets;
        };
        for (var, value) in table.iter() {
            let path = join("secrets", var);
            let (key_span, value_span) = entry(table, var, span);
            if var == crate::secret_rules::RULES_KEY && value.as_str().is_some() {
                self.secret_rules = self.secret_rules_file(value, &value_span);
                continue;
            }
            if !is_env_name(var) {
                self.error(
                    &key_span,
                    &path,
                    format!(
                        "{var:?} is not an environment variable name (letters, digits, '_', not \
                         starting with a digit)"
                    ),
                );
            }
            if value.as_str().is_some() {
                // Never echo the value: it is likely a real secret.
                self.error(
                    &value_span,
                    &path,
                    format!(
                        "secrets are never written in the policy: put the value in a file or a \
                         systemd credential and write {var} = {{ file = \"/path\" }} or \
                         {var} = {{ credential = \"NAME\" }}"
                    ),
                );
                continue;
            }
            let Some(spec) = value.as_table_like() else {
                self.error(
                    &value_span,
                    &path,
                    format!(
                        "expected {{ file = \"/path\" }} or {{ credential = \"NAME\" }}, found {}",
                        describe(value)
                    ),
                );
                continue;
            };
            if self
                .table(value, &value_span, &path, &["file", "credential"])
                .is_none()
            {
                continue;
            }
            let secret = match (spec.get("file"), spec.get("credential")) {
                (Some(_), Some(_)) => {
                    self.error(
                        &value_span,
                        &path,
                        "give either file or credential, not both",
                    );
                    None
                }
                (None, None) => {
                    if spec.iter().next().is_none() {
                        self.error(
                            &value_span,
                            &path,
                            "expected { file = \"/path\" } or { credential = \"NAME\" }",
                        );
                    }
                    None
                }
                (Some(file), None) => {
                    let (_, s) = entry(spec, "file", &value_span);
                    let key = join(&path, "file");
                    match self.string(file, &s, &key) {
                        Some(f) if f.starts_with('/') && !has_dot_dot(f) => {
                            Some(Secret::File(PathBuf::from(f)))
                        }
                        Some(f) => {
                            self.error(
                                &s,
                                &key,
                                format!("{f:?} must be an absolute path without '..'"),
                            );
                            None
                        }
                        None => None,
                    }
                }
                (None, Some(credential)) => {
                    let (_, s) = entry(spec, "credential", &value_span);
                    let key = join(&path, "credential");
                    match self.string(credential, &s, &key) {
                        Some(c) if is_credential_name(c) => Some(Secret::Credential(c.to_string())),
                        Some(c) => {
                            self.error(
                                &s,
                                &key,
                                format!(
                                    "{c:?} is not a systemd credential name (non-empty, no '/', \
                                     not '.' or '..')"
                                ),
                            );
                            None
                        }
                        None => None,
                    }
                }
            };
            if let Some(secret) = secret {
                secrets.insert(var.to_string(), secret);
            }
        }
        secrets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_read_at_launch() {
        let dir =
            std::env::temp_dir().join(format!("mcp-guard-policy-secrets-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        let file = dir.join("token");
        std::fs::write(&file, "s3cret\n\n").expect("write");
        // Only one trailing newline is dropped.
        assert_eq!(
            read_secret_in(&Secret::File(file.clone()), None).expect("read"),
            "s3cret\n"
        );
        std::fs::write(&file, "s3cret\r\n").expect("write");
        assert_eq!(
            read_secret_in(&Secret::File(file.clone()), None).expect("read"),
            "s3cret"
        );
        std::fs::write(dir.join("cred"), "c").expect("write");
        let credential = Secret::Credential("cred".into());
        assert_eq!(
            read_secret_in(&credential, Some(dir.as_os_str())).expect("read"),
            "c"
        );
        let e = read_secret_in(&credential, None).expect_err("no dir");
        assert!(
            e.to_string().contains("$CREDENTIALS_DIRECTORY is not set"),
            "{e}"
        );
        let e = read_secret_in(&Secret::File(dir.join("absent")), None).expect_err("absent");
        assert!(e.to_string().contains("absent"), "{e}");
        std::fs::write(&file, [0xff, 0xfe]).expect("write");
        let e = read_secret_in(&Secret::File(file), None).expect_err("binary");
        assert!(e.to_string().contains("not UTF-8"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
