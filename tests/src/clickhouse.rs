//! A real ClickHouse server for tests (Debian's `clickhouse-server`, installed by `cargo xtask
//! setup`): each test's own instance, on its own ports, with its own config and data dir, the
//! shipped DDL (packaging/clickhouse/mcp-guard.sql) applied. Never the system's service.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{prom::free_port, workspace_root};

/// The server binary.
pub fn clickhouse_bin() -> PathBuf {
    let bin = PathBuf::from("/usr/sbin/clickhouse-server");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo xtask setup` (Debian package clickhouse-server)",
        bin.display()
    );
    bin
}

/// HTTPS for the server: its certificate and key files (PEM).
#[derive(Clone, Debug)]
pub struct Https {
    /// The certificate chain.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

/// How a test's ClickHouse is set up.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// A user `writer` with this password (besides the passwordless `default`).
    pub writer_password: Option<String>,
    /// Serve HTTPS on [`ClickHouse::https_port`] too.
    pub https: Option<Https>,
}

/// A running ClickHouse; killed on drop, its directory removed.
pub struct ClickHouse {
    child: Option<Child>,
    /// Its HTTP interface's port.
    pub port: u16,
    /// Its HTTPS port, when [`Options::https`] was given.
    pub https_port: Option<u16>,
    dir: PathBuf,
    agent: ureq::Agent,
}

impl ClickHouse {
    /// Starts an instance in `dir` (created; removed on drop) and applies the shipped DDL.
    pub fn start(dir: &Path) -> ClickHouse {
        Self::start_with(dir, &Options::default())
    }

    /// [`ClickHouse::start`] with `options`.
    pub fn start_with(dir: &Path, options: &Options) -> ClickHouse {
        let _ = std::fs::remove_dir_all(dir);
        for sub in ["data", "tmp", "user_files", "format_schemas"] {
            std::fs::create_dir_all(dir.join(sub)).expect("clickhouse dirs");
        }
        let port = free_port();
        let tcp = free_port();
        let https_port = options.https.as_ref().map(|_| free_port());
        let writer = options
            .writer_password
            .as_ref()
            .map(|pw| {
                format!(
                    "<writer><password>{pw}</password><networks><ip>127.0.0.1</ip></networks>\
                     <profile>default</profile><quota>default</quota></writer>"
                )
            })
            .unwrap_or_default();
        let https = match (&options.https, https_port) {
            (Some(h), Some(p)) => format!(
                "<https_port>{p}</https_port><openSSL><server>\
                 <certificateFile>{}</certificateFile><privateKeyFile>{}</privateKeyFile>\
                 <verificationMode>none</verificationMode><loadDefaultCAFile>false\
                 </loadDefaultCAFile><disableProtocols>sslv2,sslv3</disableProtocols>\
                 </server></openSSL>",
                h.cert.display(),
                h.key.display()
            ),
            _ => String::new(),
        };
        let d = dir.display();
        let config = format!(
            "<?xml version=\"1.0\"?>\n<yandex>\
             <logger><level>warning</level><log>{d}/server.log</log>\
             <errorlog>{d}/server.err.log</errorlog></logger>\
             <http_port>{port}</http_port><tcp_port>{tcp}</tcp_port>{https}\
             <listen_host>127.0.0.1</listen_host>\
             <path>{d}/data/</path><tmp_path>{d}/tmp/</tmp_path>\
             <user_files_path>{d}/user_files/</user_files_path>\
             <format_schema_path>{d}/format_schemas/</format_schema_path>\
             <mark_cache_size>268435456</mark_cache_size>\
             <uncompressed_cache_size>268435456</uncompressed_cache_size>\
             <max_concurrent_queries>50</max_concurrent_queries>\
             <default_profile>default</default_profile><default_database>default</default_database>\
             <users>{writer}<default><password></password><networks><ip>127.0.0.1</ip></networks>\
             <profile>default</profile><quota>default</quota></default></users>\
             <profiles><default></default></profiles><quotas><default></default></quotas>\
             </yandex>\n"
        );
        std::fs::write(dir.join("config.xml"), config).expect("clickhouse config");
        let mut ch = ClickHouse {
            child: None,
            port,
            https_port,
            dir: dir.to_path_buf(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_mins(1)))
                .build()
                .into(),
        };
        ch.run();
        let ddl =
            std::fs::read_to_string(workspace_root().join("packaging/clickhouse/mcp-guard.sql"))
                .expect("the shipped DDL");
        for statement in statements(&ddl) {
            ch.query(&statement);
        }
        ch
    }

    /// Starts the server process (again, after [`stop`](Self::stop): same ports, same data)
    /// and waits until it answers.
    pub fn run(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::File::create(self.dir.join("stdout.log")).expect("clickhouse log");
        let child = Command::new(clickhouse_bin())
            .arg(format!(
                "--config-file={}",
                self.dir.join("config.xml").display()
            ))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start clickhouse-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_mins(1);
        while self.try_query("SELECT 1").is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "clickhouse-server exited ({status}):\n{}\n{}",
                    std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default(),
                    std::fs::read_to_string(self.dir.join("server.err.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "clickhouse-server did not answer in 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the server (SIGKILL: an outage); [`run`](Self::run) brings it back.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The running server's pid (for the benchmark's CPU accounting).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The HTTP URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs `sql` as `default`; its output, or the server's error.
    pub fn try_query(&self, sql: &str) -> Result<String, String> {
        let mut resp = self
            .agent
            .post(format!("{}/", self.url()))
            .send(sql.as_bytes())
            .map_err(|e| e.to_string())?;
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_string()
            .map_err(|e| e.to_string())?;
        if resp.status().is_success() {
            Ok(body)
        } else {
            Err(format!("HTTP {}: {body}", resp.status()))
        }
    }

    /// [`try_query`](Self::try_query), panicking on an error.
    pub fn query(&self, sql: &str) -> String {
        self.try_query(sql)
            .unwrap_or_else(|e| panic!("clickhouse: {sql}: {e}"))
    }

    /// A single number `sql` returns.
    pub fn count(&self, sql: &str) -> u64 {
        let out = self.query(sql);
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{sql}: not a number: {out:?}"))
    }

    /// Waits until `sql` returns at least `n`, at most `wait`; the last value.
    pub fn wait_count(&self, sql: &str, n: u64, wait: Duration) -> u64 {
        let deadline = Instant::now() + wait;
        loop {
            let got = self
                .try_query(sql)
                .ok()
                .and_then(|o| o.trim().parse().ok())
                .unwrap_or(0);
            if got >= n || Instant::now() >= deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The statements of an SQL file (comments dropped, split at `;`).
pub fn statements(sql: &str) -> Vec<String> {
    let text: String = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    text.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
