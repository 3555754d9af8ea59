//! ClickHouse over its HTTP interface: batched `INSERT … FORMAT JSONEachRow` for a sink, and
//! the read queries of `--fleet`. Only what Debian's ClickHouse (18.16) has: POST bodies, the
//! `query` and settings parameters, HTTP basic auth, plain SQL.

use std::{
    io::{BufRead, BufReader},
    time::Duration,
};

use super::{
    config::{ClickHouseTarget, Secret},
    pump::{Bodies, Deliver},
    rows, tls,
};

/// Longest piece of an error body kept (ClickHouse repeats the offending input at length).
const MAX_ERROR_TEXT: usize = 400;

/// A ClickHouse HTTP endpoint and the credentials for it.
pub struct ClickHouse {
    agent: ureq::Agent,
    url: String,
    database: String,
    auth: Option<String>,
}

impl std::fmt::Debug for ClickHouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouse")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("auth", &self.auth.as_ref().map(|_| ".."))
            .finish_non_exhaustive()
    }
}

/// `user:password` as an HTTP basic `Authorization` value (RFC 7617).
fn basic_auth(user: &str, password: Option<&Secret>) -> String {
    use base64::Engine as _;
    let pair = format!("{user}:{}", password.map_or("", Secret::expose));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())
    )
}

impl ClickHouse {
    /// A client for `target`; every request may take at most `timeout`.
    pub fn new(target: &ClickHouseTarget, timeout: Duration) -> Result<Self, String> {
        let tls = tls::ureq_config(target.ca_file.as_deref())?;
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .tls_config(tls)
            .build();
        let auth = match (&target.user, &target.password) {
            (None, None) => None,
            (user, password) => Some(basic_auth(
                user.as_deref().unwrap_or("default"),
                password.as_ref(),
            )),
        };
        Ok(ClickHouse {
            agent: config.into(),
            url: format!("{}/", target.url),
            database: target.database.clone(),
            auth,
        })
    }

    /// The database the tables are in.
    pub fn database(&self) -> &str {
        &self.database
    }

    fn post(
        &self,
        query: Option<&str>,
        body: &[u8],
    ) -> Result<ureq::http::Response<ureq::Body>, String> {
        let mut req = self.agent.post(&self.url);
        if let Some(q) = query {
            req = req.query("query", q);
        }
        // Columns a newer mcp-guard sends that this table does not have yet are left out
        // (`record` keeps everything); the DDL's ALTERs add them.
        req = req.query("input_format_skip_unknown_fields", "1");
        if let Some(auth) = &self.auth {
            req = req.header("Authorization", auth);
        }
        let mut resp = req.send(body).map_err(|e| format!("{}: {e}", self.url))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .lossy_utf8(true)
            .read_to_string()
            .unwrap_or_default();
        let mut text = text.trim().to_string();
        if text.len() > MAX_ERROR_TEXT {
            let mut end = MAX_ERROR_TEXT;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push('…');
        }
        Err(format!("{}: HTTP {status}: {text}", self.url))
    }

    /// Inserts `JSONEachRow` `body` into `table`.
    pub fn insert(&self, table: &str, body: &[u8]) -> Result<(), String> {
        let query = format!("INSERT INTO {}.{table} FORMAT JSONEachRow", self.database);
        self.post(Some(&query), body).map(drop)
    }

    /// Runs a read query (SQL ending in `FORMAT JSONEachRow`); its rows as lines.
    pub fn query_lines(&self, sql: &str) -> Result<impl BufRead + use<>, String> {
        let resp = self.post(None, sql.as_bytes())?;
        let reader = resp.into_body().into_with_config().limit(u64::MAX).reader();
        Ok(BufReader::new(reader))
    }
}

/// A ClickHouse sink: each batch ([`rows::Rows`] encodes it) becomes one insert per table
/// that has rows.
#[derive(Debug)]
pub struct ClickHouseSink {
    client: ClickHouse,
}

impl ClickHouseSink {
    /// The sink for `target`.
    pub fn new(target: &ClickHouseTarget, timeout: Duration) -> Result<Self, String> {
        Ok(ClickHouseSink {
            client: ClickHouse::new(target, timeout)?,
        })
    }
}

impl Deliver for ClickHouseSink {
    fn deliver(&mut self, bodies: &Bodies) -> Result<(), String> {
        // A failure part-way retries the whole batch: rows inserted twice share their id and
        // version, and `FINAL` folds them.
        for (table, body) in rows::TABLES.iter().zip(bodies) {
            if !body.is_empty() {
                self.client.insert(table, body)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_is_rfc_7617() {
        let pw = Secret::for_tests("open sesame");
        assert_eq!(
            basic_auth("Aladdin", Some(&pw)),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }
}
