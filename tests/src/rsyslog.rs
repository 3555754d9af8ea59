//! A real rsyslog for tests (Debian's `rsyslog`, TLS through `rsyslog-gnutls`, installed by
//! `cargo xtask setup`): each test's own `rsyslogd -n` with its own config, work dir and port,
//! receiving RFC 5424 over TCP with octet counting and writing every message to files the test
//! reads. Never the system's logger.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::prom::free_port;

/// The daemon.
pub fn rsyslogd_bin() -> PathBuf {
    let bin = PathBuf::from("/usr/sbin/rsyslogd");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo xtask setup` (Debian package rsyslog)",
        bin.display()
    );
    bin
}

/// TLS for the receiver: its CA, certificate and key files (PEM).
#[derive(Clone, Debug)]
pub struct Tls {
    /// The CA it trusts (clients are not asked for certificates).
    pub ca: PathBuf,
    /// Its certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

/// A running rsyslogd; killed on drop, its directory removed.
pub struct Rsyslog {
    child: Option<Child>,
    /// The TCP port it receives on.
    pub port: u16,
    dir: PathBuf,
    /// The file holding one line per message received.
    counted: &'static str,
}

/// The receiver config the README's syslog setup gives users, as a fenced block after this line.
const README_CONFIG: &str = "# /etc/rsyslog.d/mcp-guard.conf";

/// The README's receiver config for a test: its port and file replaced with the test's own, a
/// work directory of its own added; nothing else changed.
pub fn readme_config(readme: &str, dir: &Path, port: u16) -> String {
    let block: String = readme
        .split_once(README_CONFIG)
        .and_then(|(_, rest)| rest.split_once("```"))
        .map_or_else(
            || panic!("README.md has no `{README_CONFIG}` block"),
            |(block, _)| block.trim().to_string(),
        );
    for needle in ["port=\"6514\"", "/var/log/mcp-guard/ocsf.json", "global("] {
        assert!(
            block.contains(needle),
            "README's rsyslog config lost {needle}"
        );
    }
    block
        .replace(
            "port=\"6514\"",
            &format!("port=\"{port}\" address=\"127.0.0.1\""),
        )
        .replace(
            "/var/log/mcp-guard/ocsf.json",
            &dir.join("msg.log").display().to_string(),
        )
        .replacen(
            "global(",
            &format!("global(workDirectory=\"{}/work\" ", dir.display()),
            1,
        )
}

impl Rsyslog {
    /// Starts one in `dir` (created; removed on drop), plain TCP or TLS.
    pub fn start(dir: &Path, tls: Option<&Tls>) -> Rsyslog {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("work")).expect("rsyslog dir");
        let port = free_port();
        let d = dir.display();
        let (global_tls, module_tls) = match tls {
            Some(t) => {
                assert!(
                    Path::new("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so").exists(),
                    "rsyslog's TLS driver is missing: run `cargo xtask setup` (rsyslog-gnutls)"
                );
                (
                    format!(
                        " defaultNetstreamDriver=\"gtls\" defaultNetstreamDriverCAFile=\"{}\" \
                         defaultNetstreamDriverCertFile=\"{}\" defaultNetstreamDriverKeyFile=\"{}\"",
                        t.ca.display(),
                        t.cert.display(),
                        t.key.display()
                    ),
                    " streamDriver.name=\"gtls\" streamDriver.mode=\"1\" \
                     streamDriver.authMode=\"anon\""
                        .to_string(),
                )
            }
            None => (String::new(), String::new()),
        };
        // raw: each message as received (one per line; rsyslog escapes control characters);
        // parsed: the RFC 5424 fields as rsyslog's parser read them; msg: MSG alone, as the
        // README's receiver writes it.
        let config = format!(
            "global(workDirectory=\"{d}/work\" maxMessageSize=\"256k\"{global_tls})\n\
             module(load=\"imtcp\"{module_tls})\n\
             input(type=\"imtcp\" port=\"{port}\" address=\"127.0.0.1\" ruleset=\"in\")\n\
             template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n\
             template(name=\"msg\" type=\"string\" string=\"%msg%\\n\")\n\
             template(name=\"parsed\" type=\"string\" string=\"%protocol-version% \
             %timereported:::date-rfc3339% %hostname% %app-name% %procid% %msgid% \
             %structured-data% %syslogfacility-text% %syslogseverity-text%\\n\")\n\
             ruleset(name=\"in\") {{\n\
               action(type=\"omfile\" file=\"{d}/raw.log\" template=\"raw\")\n\
               action(type=\"omfile\" file=\"{d}/parsed.log\" template=\"parsed\")\n\
               action(type=\"omfile\" file=\"{d}/msg.log\" template=\"msg\")\n\
             }}\n"
        );
        std::fs::write(dir.join("rsyslog.conf"), config).expect("rsyslog config");
        let mut r = Rsyslog {
            child: None,
            port,
            dir: dir.to_path_buf(),
            counted: "raw.log",
        };
        r.run();
        r
    }

    /// Starts one in `dir` with exactly the receiver config the README gives users (its port
    /// and output file the test's own): it writes each message's MSG alone, which
    /// [`messages`](Self::messages) reads; `raw` and `parsed` stay empty.
    pub fn start_readme(dir: &Path) -> Rsyslog {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("work")).expect("rsyslog dir");
        let port = free_port();
        let readme =
            std::fs::read_to_string(crate::workspace_root().join("README.md")).expect("README.md");
        let config = readme_config(&readme, dir, port);
        std::fs::write(dir.join("rsyslog.conf"), config).expect("rsyslog config");
        let mut r = Rsyslog {
            child: None,
            port,
            dir: dir.to_path_buf(),
            counted: "msg.log",
        };
        r.run();
        r
    }

    /// Starts the daemon (again, after [`stop`](Self::stop): same port and files) and waits
    /// until it accepts connections.
    pub fn run(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::File::create(self.dir.join("rsyslogd.log")).expect("rsyslog log");
        let child = Command::new(rsyslogd_bin())
            .arg("-n")
            .arg("-f")
            .arg(self.dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start rsyslogd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("rsyslogd exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "rsyslogd did not listen:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the daemon (an outage); [`run`](Self::run) brings it back.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The daemon's own output.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("rsyslogd.log")).unwrap_or_default()
    }

    /// The running server's pid (for the benchmark's CPU accounting).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `host:port`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The messages received so far, as received.
    pub fn raw(&self) -> Vec<String> {
        lines(&self.dir.join("raw.log"))
    }

    /// The messages' header fields as rsyslog parsed them.
    pub fn parsed(&self) -> Vec<String> {
        lines(&self.dir.join("parsed.log"))
    }

    /// Each message's MSG, as rsyslog's `%msg%` gives it.
    pub fn messages(&self) -> Vec<String> {
        lines(&self.dir.join("msg.log"))
    }

    /// Waits until at least `n` messages are in, at most `wait`; how many there are.
    pub fn wait_for(&self, n: usize, wait: Duration) -> usize {
        let deadline = Instant::now() + wait;
        loop {
            let got = lines(&self.dir.join(self.counted)).len();
            if got >= n || Instant::now() >= deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Everything it wrote, byte for byte (to look for what must not be there).
    pub fn files(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for f in ["raw.log", "parsed.log"] {
            all.extend(std::fs::read(self.dir.join(f)).unwrap_or_default());
        }
        all
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
