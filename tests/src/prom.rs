//! A real Prometheus server for tests: scrapes one target every second; tests query it through
//! its HTTP API, as an operator's dashboards and alert rules would.
#![expect(
    clippy::float_cmp,
    reason = "Prometheus samples of counters and gauges here are small integers, exact in f64"
)]

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// The `prometheus` binary (Debian package `prometheus`, installed by `cargo xtask setup`).
pub fn prometheus_bin() -> PathBuf {
    let bin = PathBuf::from("/usr/bin/prometheus");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo xtask setup` (Debian package prometheus)",
        bin.display()
    );
    bin
}

/// A free loopback port (bound then released: good enough for a test's own listeners).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// A running Prometheus; killed on drop.
pub struct Prometheus {
    child: Child,
    /// Its `host:port`.
    pub addr: String,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus in `dir` scraping `target` (`host:port`, path `/metrics`) every
    /// second, and waits until it is ready.
    pub fn start(dir: &Path, target: &str) -> Prometheus {
        Self::start_with_token(dir, target, None)
    }

    /// [`Prometheus::start`], sending the bearer token in `credentials_file` with each scrape
    /// (`authorization: credentials_file`, as packaging/prometheus/prometheus.yml does).
    pub fn start_with_token(
        dir: &Path,
        target: &str,
        credentials_file: Option<&Path>,
    ) -> Prometheus {
        std::fs::create_dir_all(dir).expect("prometheus dir");
        let config = dir.join("prometheus.yml");
        let auth = credentials_file
            .map(|f| {
                format!(
                    "    authorization:\n      credentials_file: {}\n",
                    f.display()
                )
            })
            .unwrap_or_default();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: mcp-guard\n{auth}    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
        let child = Command::new(prometheus_bin())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let prom = Prometheus {
            child,
            addr,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(&prom.addr, "/-/ready").is_none_or(|(status, _)| status != 200) {
            assert!(
                Instant::now() < deadline,
                "prometheus not ready in 30 s: {}",
                prom.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        prom
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// The result vector of an instant query (`data.result`).
    pub fn query(&self, promql: &str) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let (status, body) = http_get(&self.addr, &path).expect("query prometheus");
        assert_eq!(status, 200, "query {promql}: {body}");
        let v: Value = serde_json::from_str(&body).expect("prometheus JSON");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Polls `promql` until it returns a sample whose value satisfies `ok`, for up to `wait`;
    /// returns that value, or panics with the last answer.
    pub fn wait_for(&self, promql: &str, wait: Duration, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + wait;
        loop {
            let result = self.query(promql);
            if let Some(v) = result.iter().find_map(|s| {
                s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|v| ok(*v))
            }) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus: {promql} never matched within {wait:?}; last answer {result:?}; \
                 targets: {:?}",
                http_get(&self.addr, "/api/v1/targets").map(|(_, b)| b)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of one series in a Prometheus text exposition: `series` is the name with its
/// labels exactly as exposed (`mcp_guard_servers_running`, `name{sink="ch"}`).
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// One series of the `/metrics` endpoint at `addr`, now; `None` when absent or unreachable.
pub fn metric(addr: &str, series: &str) -> Option<f64> {
    sample(&http_get(addr, "/metrics")?.1, series)
}

/// Polls `series` at `addr` until `ok` holds for its value, at most `within`; the value. On
/// timeout it panics with the last value and `context()` (e.g. the agent's log).
pub fn wait_metric(
    addr: &str,
    series: &str,
    within: Duration,
    ok: impl Fn(f64) -> bool,
    context: impl FnOnce() -> String,
) -> f64 {
    let deadline = Instant::now() + within;
    loop {
        let got = metric(addr, series);
        if let Some(v) = got.filter(|v| ok(*v)) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {got:?} after {within:?}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// [`wait_metric`] until `series` is exactly `want`, at most 20 s.
pub fn wait_metric_is(addr: &str, series: &str, want: f64) {
    wait_metric(
        addr,
        series,
        Duration::from_secs(20),
        |v| v == want,
        String::new,
    );
}

/// A plain HTTP/1.0 GET: (status, body), or `None` when nothing answers.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    http_get_as(addr, path, None)
}

/// [`http_get`] with `Authorization: Bearer <token>` when a token is given.
pub fn http_get_as(addr: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    exchange(stream, addr, path, token)
}

/// [`http_get_as`] over the Unix socket at `socket`.
pub fn unix_http_get(socket: &Path, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    exchange(stream, "localhost", path, token)
}

fn exchange<S: Read + Write>(
    mut stream: S,
    host: &str,
    path: &str,
    token: Option<&str>,
) -> Option<(u16, String)> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n{auth}\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
