//! The `[export]` table of `agent.toml`: who this host is, and the sinks its history goes to.
//!
//! ```toml
//! [export]
//! host_name = "devvm-17"          # default: the kernel's host name
//! host_id = "4c4c4544003..."      # default: /etc/machine-id
//!
//! [[export.sink]]
//! name = "fleet"                  # metrics label and cursor name
//! kind = "clickhouse"
//! url = "https://clickhouse.example:8443"
//! user = "mcp_guard"
//! password_file = "/etc/mcp-guard/clickhouse.password"
//! ca_file = "/etc/mcp-guard/clickhouse-ca.pem"
//!
//! [[export.sink]]
//! name = "siem"
//! kind = "syslog"
//! address = "siem.example:6514"
//! tls = true
//! ```
//!
//! Secrets are never written in the file: a `password` key (or a password in a URL) is an
//! error; `password_file` names a file only root may read, `password_credential` a systemd
//! credential (`LoadCredential=`, read from `$CREDENTIALS_DIRECTORY`).

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

/// ClickHouse's database when the sink does not name one (the shipped DDL creates it).
pub const DEFAULT_DATABASE: &str = "mcp_guard";

/// Records per batch, by default and at most. ClickHouse writes each insert as a new part (two
/// files per column, and a merge later), so its cost is mostly per insert: few large ones.
const DEFAULT_CLICKHOUSE_BATCH: usize = 50_000;
const DEFAULT_SYSLOG_BATCH: usize = 2_000;
const MAX_BATCH: usize = 100_000;

/// The largest credential file read.
const MAX_SECRET_FILE: u64 = 4096;

/// `[export]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// The host name on every shipped record (default: the kernel's host name).
    #[serde(default)]
    pub host_name: Option<String>,
    /// The host id on every shipped record (default: `/etc/machine-id`).
    #[serde(default)]
    pub host_id: Option<String>,
    /// `[[export.sink]]`.
    #[serde(default)]
    pub sink: Vec<Spanned<SinkConfig>>,
}

/// One `[[export.sink]]` as written; [`ExportConfig::check`] validates it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// The sink's name: its metrics label and the name of its cursor in the store.
    pub name: String,
    /// `clickhouse` or `syslog`.
    pub kind: String,
    /// ClickHouse: the HTTP(S) interface, e.g. `http://127.0.0.1:8123`.
    #[serde(default)]
    pub url: Option<String>,
    /// ClickHouse: the database holding the tables (default `mcp_guard`).
    #[serde(default)]
    pub database: Option<String>,
    /// ClickHouse: the user (default: ClickHouse's `default`).
    #[serde(default)]
    pub user: Option<String>,
    /// Never valid: present only to say so clearly.
    #[serde(default)]
    pub password: Option<toml::Value>,
    /// ClickHouse: a file (root's, mode 0600 or stricter) holding the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// ClickHouse: the name of a systemd credential holding the password.
    #[serde(default)]
    pub password_credential: Option<String>,
    /// Syslog: `host:port` of an RFC 5424 receiver over TCP (RFC 6587 octet counting).
    #[serde(default)]
    pub address: Option<String>,
    /// Syslog: TLS on the connection (ClickHouse: given by an `https` URL).
    #[serde(default)]
    pub tls: Option<bool>,
    /// The CA certificates (PEM) the server's certificate must chain to; default: the
    /// Mozilla roots built in.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Syslog with TLS: the name the certificate must carry (default: the address's host).
    #[serde(default)]
    pub server_name: Option<String>,
    /// Syslog: the facility (`local0` .. `local7`, `auth`, `authpriv`, `daemon`, `user`).
    #[serde(default)]
    pub facility: Option<String>,
    /// Records per batch.
    #[serde(default)]
    pub batch: Option<usize>,
    /// How often an idle sink looks for new records, in milliseconds (default 1000).
    #[serde(default)]
    pub interval_ms: Option<u64>,
    /// How long one delivery may take before it counts as failed, in ms (default 30000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// A credential read at start; `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret from its value (tests; the agent reads them from files).
    #[cfg(test)]
    pub fn for_tests(value: &str) -> Self {
        Secret(value.to_string())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A sink ready to run.
#[derive(Clone, Debug, PartialEq)]
pub struct Sink {
    /// Its name.
    pub name: String,
    /// Records per batch.
    pub batch: usize,
    /// Idle poll interval.
    pub interval: Duration,
    /// Longest delivery.
    pub timeout: Duration,
    /// Where the records go.
    pub target: Target,
}

/// A sink's destination.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// ClickHouse's HTTP interface.
    ClickHouse(ClickHouseTarget),
    /// An RFC 5424 syslog receiver.
    Syslog(SyslogTarget),
}

/// Where and as whom to insert.
#[derive(Clone, Debug, PartialEq)]
pub struct ClickHouseTarget {
    /// The base URL (scheme, host, port), without a trailing `/`.
    pub url: String,
    /// The database.
    pub database: String,
    /// The user, when not ClickHouse's default.
    pub user: Option<String>,
    /// The password, read from its file or credential.
    pub password: Option<Secret>,
    /// The CA file for HTTPS.
    pub ca_file: Option<PathBuf>,
}

/// Where to send frames.
#[derive(Clone, Debug, PartialEq)]
pub struct SyslogTarget {
    /// `host:port`.
    pub address: String,
    /// TLS settings, when on.
    pub tls: Option<TlsTarget>,
    /// The facility number (RFC 5424 section 6.2.1).
    pub facility: u8,
}

/// TLS for a syslog sink.
#[derive(Clone, Debug, PartialEq)]
pub struct TlsTarget {
    /// The CA file; `None`: the built-in Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// The name the certificate must carry.
    pub server_name: String,
}

const FACILITIES: &[(&str, u8)] = &[
    ("user", 1),
    ("daemon", 3),
    ("auth", 4),
    ("authpriv", 10),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    memchr::memchr_iter(b'\n', &text.as_bytes()[..offset.min(text.len())]).count() + 1
}

impl ExportConfig {
    /// Validates every sink (names unique, keys that fit the kind, no inline secrets) without
    /// reading any file; errors name the sink, its line in `text` and the key.
    pub fn check(&self, text: &str) -> Result<(), String> {
        if let Some(name) = &self.host_name
            && (name.is_empty() || name.len() > 255 || !name.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(format!(
                "[export] host_name = {name:?}: 1 to 255 printable ASCII characters, no spaces"
            ));
        }
        if let Some(id) = &self.host_id
            && !valid_host_id(id)
        {
            return Err(format!(
                "[export] host_id = {id:?}: 1 to 64 letters, digits, '-' or '_'"
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for sink in &self.sink {
            let line = line_of(text, sink.span().start);
            let s = sink.get_ref();
            let at = |key: &str, what: String| {
                format!("[[export.sink]] {:?} (line {line}): {key}: {what}", s.name)
            };
            if !mcp_guard_model::names::is_valid(&s.name) {
                return Err(at(
                    "name",
                    "letters, digits, '.', '_' or '-', 1 to 64 of them".into(),
                ));
            }
            if !seen.insert(s.name.clone()) {
                return Err(at("name", "another sink has this name".into()));
            }
            if s.password.is_some() {
                return Err(at(
                    "password",
                    "passwords are not written in the config: put it in a file only root can \
                     read and set password_file, or pass it as a systemd credential \
                     (LoadCredential=) and set password_credential"
                        .into(),
                ));
            }
            if let Some(b) = s.batch
                && !(1..=MAX_BATCH).contains(&b)
            {
                return Err(at("batch", format!("{b}: between 1 and {MAX_BATCH}")));
            }
            for (key, v, max) in [
                ("interval_ms", s.interval_ms, 600_000),
                ("timeout_ms", s.timeout_ms, 600_000),
            ] {
                if let Some(v) = v
                    && !(1..=max).contains(&v)
                {
                    return Err(at(key, format!("{v}: between 1 and {max}")));
                }
            }
            if let Some(f) = &s.ca_file
                && !f.is_absolute()
            {
                return Err(at("ca_file", "an absolute path".into()));
            }
            if let Some(f) = &s.password_file
                && !f.is_absolute()
            {
                return Err(at("password_file", "an absolute path".into()));
            }
            let not_for = |keys: &[(&str, bool)], kind: &str| -> Result<(), String> {
                match keys.iter().find(|(_, set)| *set) {
                    Some((key, _)) => Err(at(key, format!("not a key of kind = \"{kind}\""))),
                    None => Ok(()),
                }
            };
            match s.kind.as_str() {
                "clickhouse" => {
                    not_for(
                        &[
                            ("address", s.address.is_some()),
                            ("tls", s.tls.is_some()),
                            ("server_name", s.server_name.is_some()),
                            ("facility", s.facility.is_some()),
                        ],
                        "clickhouse",
                    )?;
                    let url = s.url.as_deref().ok_or_else(|| {
                        at("url", "missing (e.g. \"http://127.0.0.1:8123\")".into())
                    })?;
                    check_url(url).map_err(|e| at("url", e))?;
                    if let Some(db) = &s.database
                        && !valid_database(db)
                    {
                        return Err(at("database", "letters, digits and '_'".into()));
                    }
                    if s.ca_file.is_some() && !url.starts_with("https://") {
                        return Err(at("ca_file", "only for an https:// url".into()));
                    }
                    if s.password_file.is_some() && s.password_credential.is_some() {
                        return Err(at(
                            "password_credential",
                            "give password_file or password_credential, not both".into(),
                        ));
                    }
                    if let Some(c) = &s.password_credential
                        && !mcp_guard_model::names::is_valid(c)
                    {
                        return Err(at("password_credential", "a credential name".into()));
                    }
                }
                "syslog" => {
                    not_for(
                        &[
                            ("url", s.url.is_some()),
                            ("database", s.database.is_some()),
                            ("user", s.user.is_some()),
                            ("password_file", s.password_file.is_some()),
                            ("password_credential", s.password_credential.is_some()),
                        ],
                        "syslog",
                    )?;
                    let address = s.address.as_deref().ok_or_else(|| {
                        at("address", "missing (e.g. \"siem.example:6514\")".into())
                    })?;
                    split_address(address).map_err(|e| at("address", e))?;
                    if s.tls != Some(true)
                        && let Some((key, _)) = [
                            ("ca_file", s.ca_file.is_some()),
                            ("server_name", s.server_name.is_some()),
                        ]
                        .iter()
                        .find(|(_, set)| *set)
                    {
                        return Err(at(key, "only with tls = true".into()));
                    }
                    if let Some(f) = &s.facility
                        && !FACILITIES.iter().any(|(n, _)| n == f)
                    {
                        let names: Vec<&str> = FACILITIES.iter().map(|(n, _)| *n).collect();
                        return Err(at("facility", format!("one of {}", names.join(", "))));
                    }
                }
                other => {
                    return Err(at(
                        "kind",
                        format!("{other:?}: \"clickhouse\" or \"syslog\""),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The sinks ready to run: credentials read (from files only root may read, or from
    /// `credentials_dir`, systemd's `$CREDENTIALS_DIRECTORY`). Call after [`check`](Self::check).
    pub fn sinks(&self, credentials_dir: Option<&Path>) -> Result<Vec<Sink>, String> {
        self.sink
            .iter()
            .map(|s| resolve(s.get_ref(), credentials_dir))
            .collect()
    }
}

/// A ClickHouse database name as the sinks and `--fleet` accept it (it is spliced into SQL).
pub(crate) fn valid_database(db: &str) -> bool {
    !db.is_empty() && db.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn valid_host_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `http(s)://host[:port][/]`, nothing else: credentials in a URL end up in logs and process
/// listings, and a path or query would change what the inserts mean.
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{url:?}: http:// or https://"))?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('@') {
        return Err(
            "no user or password in the URL: set user, and password_file or password_credential"
                .into(),
        );
    }
    if authority.is_empty() || authority.contains(['/', '?', '#', ' ']) {
        return Err(format!(
            "{url:?}: only scheme, host and port (the database is the database key)"
        ));
    }
    Ok(())
}

/// `host:port` (IPv6 in brackets) into its parts.
pub fn split_address(address: &str) -> Result<(String, u16), String> {
    let bad = || format!("{address:?}: host:port, e.g. \"siem.example:6514\" or \"[::1]:6514\"");
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 || host.contains(['/', ' ', '@']) {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

fn resolve(s: &SinkConfig, credentials_dir: Option<&Path>) -> Result<Sink, String> {
    let at = |key: &str, what: String| format!("[[export.sink]] {:?}: {key}: {what}", s.name);
    let target = if s.kind.as_str() == "clickhouse" {
        let password = match (&s.password_file, &s.password_credential) {
            (Some(file), _) => Some(read_secret(file).map_err(|e| at("password_file", e))?),
            (None, Some(name)) => {
                let dir = credentials_dir.ok_or_else(|| {
                    at(
                        "password_credential",
                        "$CREDENTIALS_DIRECTORY is not set: run the agent under systemd \
                         with LoadCredential=, or use password_file"
                            .into(),
                    )
                })?;
                Some(read_secret(&dir.join(name)).map_err(|e| at("password_credential", e))?)
            }
            (None, None) => None,
        };
        let url = s.url.clone().unwrap_or_default();
        Target::ClickHouse(ClickHouseTarget {
            url: url.strip_suffix('/').unwrap_or(&url).to_string(),
            database: s
                .database
                .clone()
                .unwrap_or_else(|| DEFAULT_DATABASE.into()),
            user: s.user.clone(),
            password,
            ca_file: s.ca_file.clone(),
        })
    } else {
        let address = s.address.clone().unwrap_or_default();
        let (host, _) = split_address(&address).map_err(|e| at("address", e))?;
        Target::Syslog(SyslogTarget {
            tls: (s.tls == Some(true)).then(|| TlsTarget {
                ca_file: s.ca_file.clone(),
                server_name: s.server_name.clone().unwrap_or(host),
            }),
            address,
            facility: FACILITIES
                .iter()
                .find(|(n, _)| Some(*n) == s.facility.as_deref())
                .map_or(16, |(_, f)| *f),
        })
    };
    let default_batch = match target {
        Target::ClickHouse(_) => DEFAULT_CLICKHOUSE_BATCH,
        Target::Syslog(_) => DEFAULT_SYSLOG_BATCH,
    };
    Ok(Sink {
        name: s.name.clone(),
        batch: s.batch.unwrap_or(default_batch),
        interval: Duration::from_millis(s.interval_ms.unwrap_or(1000)),
        timeout: Duration::from_millis(s.timeout_ms.unwrap_or(30_000)),
        target,
    })
}

/// Reads a credential: a regular file (not a symlink) owned by root or this user with no group or other
/// permission bits, at most [`MAX_SECRET_FILE`] bytes; surrounding whitespace dropped.
pub(crate) fn read_secret(path: &Path) -> Result<Secret, String> {
    use crate::credential_file::{self, Owner, Refusal};
    let err = |what: String| format!("{}: {what}", path.display());
    let mut file = credential_file::open(path, Owner::RootOrSelf).map_err(|r| {
        err(match r {
            Refusal::Owner(uid) => format!(
                "owned by uid {uid}: `chown root:root {}` (a password another user controls is \
                 refused)",
                path.display()
            ),
            Refusal::Mode(mode) => format!(
                "mode {mode:04o} lets group or others read it: `chmod 0600 {}`",
                path.display()
            ),
            other => other.to_string(),
        })
    })?;
    let mut text = String::new();
    file.by_ref()
        .take(MAX_SECRET_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| err(e.to_string()))?;
    if text.len() as u64 > MAX_SECRET_FILE {
        return Err(err(format!("longer than {MAX_SECRET_FILE} bytes")));
    }
    let value = text.trim();
    if value.is_empty() || value.contains(['\n', '\r']) {
        return Err(err("one line holding the password".into()));
    }
    Ok(Secret(value.to_string()))
}

#[cfg(test)]
mod tests {
    #![expect(
        clippy::unwrap_used,
        reason = "a test: a failed unwrap is the failure, with its line"
    )]

    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn parse(text: &str) -> Result<ExportConfig, String> {
        #[derive(Deserialize)]
        struct Top {
            export: ExportConfig,
        }
        let top: Top = toml::from_str(text).map_err(|e| e.to_string())?;
        top.export.check(text)?;
        Ok(top.export)
    }

    #[test]
    fn sinks_of_both_kinds_parse_with_defaults() {
        let c = parse(
            "[export]\nhost_name = \"vm1\"\n\n[[export.sink]]\nname = \"fleet\"\n\
             kind = \"clickhouse\"\nurl = \"http://127.0.0.1:8123/\"\n\n[[export.sink]]\n\
             name = \"siem\"\nkind = \"syslog\"\naddress = \"[::1]:6514\"\ntls = true\n\
             facility = \"authpriv\"\n",
        )
        .unwrap();
        let sinks = c.sinks(None).unwrap();
        assert_eq!(sinks[0].batch, DEFAULT_CLICKHOUSE_BATCH);
        let Target::ClickHouse(ch) = &sinks[0].target else {
            panic!("{sinks:?}")
        };
        assert_eq!(ch.url, "http://127.0.0.1:8123");
        assert_eq!(ch.database, "mcp_guard");
        let Target::Syslog(sl) = &sinks[1].target else {
            panic!("{sinks:?}")
        };
        assert_eq!(sl.facility, 10);
        assert_eq!(sl.tls.as_ref().unwrap().server_name, "::1");
    }

    #[test]
    fn inline_secrets_and_misplaced_keys_are_errors_naming_sink_line_and_key() {
        let head = "[export]\n\n[[export.sink]]\nname = \"fleet\"\n";
        for (body, key) in [
            (
                "kind = \"clickhouse\"\nurl = \"http://h:8123\"\npassword = \"hunter2\"\n",
                "password",
            ),
            (
                "kind = \"clickhouse\"\nurl = \"http://u:hunter2@h:8123\"\n",
                "url",
            ),
            ("kind = \"clickhouse\"\n", "url"),
            (
                "kind = \"clickhouse\"\nurl = \"http://h:8123/db?x=1\"\n",
                "url",
            ),
            (
                "kind = \"clickhouse\"\nurl = \"http://h\"\naddress = \"h:1\"\n",
                "address",
            ),
            (
                "kind = \"clickhouse\"\nurl = \"http://h\"\nca_file = \"/ca.pem\"\n",
                "ca_file",
            ),
            (
                "kind = \"clickhouse\"\nurl = \"http://h\"\ndatabase = \"a;b\"\n",
                "database",
            ),
            ("kind = \"syslog\"\naddress = \"h\"\n", "address"),
            (
                "kind = \"syslog\"\naddress = \"h:514\"\nca_file = \"/ca.pem\"\n",
                "ca_file",
            ),
            (
                "kind = \"syslog\"\naddress = \"h:514\"\nuser = \"u\"\n",
                "user",
            ),
            (
                "kind = \"syslog\"\naddress = \"h:514\"\nfacility = \"kern\"\n",
                "facility",
            ),
            ("kind = \"kafka\"\n", "kind"),
            (
                "kind = \"syslog\"\naddress = \"h:514\"\nbatch = 0\n",
                "batch",
            ),
        ] {
            let e = parse(&format!("{head}{body}")).expect_err(body);
            assert!(
                e.contains(key) && e.contains("\"fleet\"") && e.contains("line 3"),
                "{body}: {e}"
            );
            assert!(!e.contains("hunter2"), "{e}");
        }
        let e = parse("[export]\n[[export.sink]]\nname = \"a\"\nkind = \"syslog\"\naddress = \"h:1\"\n[[export.sink]]\nname = \"a\"\nkind = \"syslog\"\naddress = \"h:1\"\n").expect_err("dup");
        assert!(e.contains("another sink") && e.contains("line 6"), "{e}");
        let e =
            parse("[export]\n[[export.sink]]\nname = \"a\"\nkind = \"syslog\"\nadress = \"h:1\"\n")
                .expect_err("typo");
        assert!(e.contains("adress"), "{e}");
    }

    #[test]
    fn passwords_come_from_root_only_files_or_credentials() {
        let dir = std::env::temp_dir().join(format!("mcp-guard-export-cfg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = format!(
            "[export]\n[[export.sink]]\nname = \"ch\"\nkind = \"clickhouse\"\n\
             url = \"http://h:8123\"\npassword_file = \"{}\"\n",
            file.display()
        );
        let c = parse(&text).unwrap();
        let e = c.sinks(None).expect_err("world-readable");
        assert!(e.contains("chmod 0600") && !e.contains("s3cret"), "{e}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let sinks = c.sinks(None).unwrap();
        let Target::ClickHouse(ch) = &sinks[0].target else {
            panic!()
        };
        assert_eq!(ch.password.as_ref().unwrap().expose(), "s3cret");
        assert!(!format!("{sinks:?}").contains("s3cret"));
        let link = dir.join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let text = text.replace(&file.display().to_string(), &link.display().to_string());
        let e = parse(&text).unwrap().sinks(None).expect_err("symlink");
        assert!(e.contains("symbolic link"), "{e}");
        let cred = "[export]\n[[export.sink]]\nname = \"ch\"\nkind = \"clickhouse\"\n\
                    url = \"http://h:8123\"\npassword_credential = \"pw\"\n";
        let c = parse(cred).unwrap();
        assert!(c.sinks(None).unwrap_err().contains("CREDENTIALS_DIRECTORY"));
        let sinks = c.sinks(Some(&dir)).unwrap();
        let Target::ClickHouse(ch) = &sinks[0].target else {
            panic!()
        };
        assert_eq!(ch.password.as_ref().unwrap().expose(), "s3cret");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
