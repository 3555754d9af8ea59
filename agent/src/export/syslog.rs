//! Syslog: RFC 5424 messages over TCP with octet counting (RFC 6587 section 3.4.1), TLS
//! optional (RFC 5425 frames the same way), each message's MSG the record as OCSF JSON.
//!
//! A frame is `LEN SP <PRI>1 TIMESTAMP HOSTNAME mcp-guard PROCID MSGID - JSON`: the facility
//! from the sink's config and a severity from the record's; TIMESTAMP the record's time (UTC,
//! microseconds, the most RFC 5424 allows: the JSON has nanoseconds); MSGID `session`, `call`,
//! `event` or `alert`; no structured data; no BOM (JSON is UTF-8). The length prefix is what
//! keeps a record's text — a path with a newline in it — from being read as another frame.
//!
//! Plain syslog has no acknowledgement, and bytes a TCP stack accepted are not delivered yet.
//! So each batch goes over its own connection, which the sink then closes for writing and
//! waits for the receiver to close in turn: a receiver closes after it has read everything
//! before the end of the stream, and only then is the batch delivered and the cursor moved.

use std::{
    io::{self, BufWriter, Read, Write},
    net::{Shutdown, TcpStream, ToSocketAddrs},
    sync::Arc,
    time::{Duration, Instant},
};

use rustls::{ClientConfig, ClientConnection, StreamOwned};
use rustls_pki_types::ServerName;

use super::{
    config::{SyslogTarget, split_address},
    host::Host,
    ocsf,
    pump::{Bodies, Deliver, Encode},
    tls,
};
use mcp_guard_model::Record;
use mcp_guard_store::Change;

/// The APP-NAME of every message.
const APP_NAME: &str = "mcp-guard";

/// A syslog sink's encoding: each record's frame, one stream per batch.
#[derive(Debug)]
pub struct Frames {
    facility: u8,
    host: Host,
    /// HOSTNAME as RFC 5424 allows it (printable US-ASCII, at most 255).
    hostname: String,
    procid: String,
    /// The message being framed (reused from frame to frame).
    msg: Vec<u8>,
}

/// A syslog sink: each batch ([`Frames`] encodes it) over a connection of its own.
pub struct SyslogSink {
    address: String,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    timeout: Duration,
}

impl std::fmt::Debug for SyslogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogSink")
            .field("address", &self.address)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl SyslogSink {
    /// The sink for `target`; each delivery may take at most `timeout`.
    pub fn new(target: &SyslogTarget, timeout: Duration) -> Result<Self, String> {
        let tls = match &target.tls {
            Some(t) => {
                let config = tls::client_config(t.ca_file.as_deref())?;
                let name = ServerName::try_from(t.server_name.clone())
                    .map_err(|e| format!("server_name {:?}: {e}", t.server_name))?;
                Some((config, name))
            }
            None => None,
        };
        Ok(SyslogSink {
            address: target.address.clone(),
            tls,
            timeout,
        })
    }

    /// Connects to the receiver, trying each of its addresses.
    fn connect(&self) -> io::Result<TcpStream> {
        let (host, port) = split_address(&self.address).map_err(io::Error::other)?;
        let mut last = io::Error::other(format!("{}: no address", self.address));
        for addr in (host.as_str(), port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, self.timeout) {
                Ok(s) => {
                    s.set_read_timeout(Some(self.timeout))?;
                    s.set_write_timeout(Some(self.timeout))?;
                    s.set_nodelay(true)?;
                    return Ok(s);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Sends `bodies` and waits for the receiver to have read them all.
    fn send(&self, bodies: &Bodies) -> io::Result<()> {
        let tcp = self.connect()?;
        let deadline = Instant::now() + self.timeout;
        match &self.tls {
            None => {
                let mut w = BufWriter::with_capacity(64 * 1024, &tcp);
                for b in bodies {
                    w.write_all(b)?;
                }
                w.flush()?;
                drop(w);
                tcp.shutdown(Shutdown::Write)?;
                wait_for_close(&tcp, deadline)
            }
            Some((config, name)) => {
                let conn = ClientConnection::new(config.clone(), name.clone())
                    .map_err(io::Error::other)?;
                let mut stream = StreamOwned::new(conn, tcp);
                for b in bodies {
                    stream.write_all(b)?;
                }
                stream.flush()?;
                stream.conn.send_close_notify();
                stream.flush()?;
                stream.sock.shutdown(Shutdown::Write)?;
                wait_for_close(&mut stream, deadline)
            }
        }
    }
}

impl Frames {
    /// Frames for `target`'s facility naming `host`.
    pub fn new(target: &SyslogTarget, host: Host) -> Self {
        Frames {
            facility: target.facility,
            hostname: header_field(&host.name, 255),
            host,
            procid: std::process::id().to_string(),
            msg: Vec::with_capacity(4096),
        }
    }

    /// Appends `record`'s frame to `out`.
    fn frame(&mut self, record: &Record, out: &mut Vec<u8>) -> Result<(), String> {
        let (msgid, time) = match record {
            Record::Session(s) => ("session", s.started_at),
            Record::Call(c) => ("call", c.started_at),
            Record::Event(e) => ("event", e.ts),
            Record::Alert(a) => ("alert", a.ts),
            Record::Facts(_) => return Ok(()),
        };
        // The header's PRI needs the severity the JSON's mapping picks, so the JSON goes first
        // into the scratch buffer and the header in front of it in `out`.
        let msg = &mut self.msg;
        msg.clear();
        let Some(severity) =
            ocsf::write_event(record, &self.host, msg).map_err(|e| format!("encoding: {e}"))?
        else {
            return Ok(());
        };
        // RFC 5424 TIME-SECFRAC has at most six digits.
        let stamp = time.rfc3339();
        let stamp = stamp.get(..26).unwrap_or(&stamp);
        let pri = u16::from(self.facility) * 8 + u16::from(syslog_severity(severity));
        let header = format!(
            "<{pri}>1 {stamp}Z {} {APP_NAME} {} {msgid} - ",
            self.hostname, self.procid
        );
        let len = header.len() + msg.len();
        write!(out, "{len} {header}").map_err(|e| format!("encoding: {e}"))?;
        out.extend_from_slice(msg);
        Ok(())
    }
}

/// Reads until the receiver closes; anything else (a reset, the deadline) is a failure.
fn wait_for_close(mut stream: impl Read, deadline: Instant) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            // A receiver may answer; nothing it says matters.
            Ok(_) => {}
            // A TLS receiver may close without close_notify: the batch was read all the same.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the receiver did not close the connection",
            ));
        }
    }
}

/// RFC 5424 severity for an OCSF severity id.
fn syslog_severity(ocsf: u8) -> u8 {
    match ocsf {
        5 => 2, // critical
        4 => 3, // error
        3 => 4, // warning
        2 => 5, // notice
        _ => 6, // informational
    }
}

/// A header field: printable US-ASCII only (others become `_`), at most `max` characters,
/// `-` when empty.
fn header_field(s: &str, max: usize) -> String {
    let out: String = s
        .chars()
        .take(max)
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect();
    if out.is_empty() { "-".into() } else { out }
}

impl Encode for Frames {
    fn encode(&mut self, changes: &[Change]) -> Result<Bodies, String> {
        let mut frames = Vec::with_capacity(changes.len() * 1024);
        for c in changes {
            self.frame(&c.record, &mut frames)?;
        }
        Ok(vec![frames])
    }
}

impl Deliver for SyslogSink {
    fn deliver(&mut self, bodies: &Bodies) -> Result<(), String> {
        self.send(bodies)
            .map_err(|e| format!("{}: {e}", self.address))
    }
}

#[cfg(test)]
mod tests {
    #![expect(
        clippy::unwrap_used,
        reason = "a test: a failed unwrap is the failure, with its line"
    )]

    use super::*;
    use mcp_guard_model::{EventKind, EventRecord, Timestamp};

    #[test]
    fn frames_are_octet_counted_rfc_5424_with_ocsf_json() {
        let host = Host {
            name: "vm a".into(),
            id: "id".into(),
        };
        let mut frames = Frames::new(
            &SyslogTarget {
                address: "127.0.0.1:514".into(),
                tls: None,
                facility: 16,
            },
            host,
        );
        let t = Timestamp::from_unix_nanos(1_795_464_903_123_456_789);
        let mut e = EventRecord::new("e1".into(), t, "fs", "s1", 42, EventKind::Open);
        // A path that would forge a second message if frames ended at newlines.
        e.path = Some("/tmp/x\n<11>1 - forged - - - - {}".into());
        e.verdict = mcp_guard_model::Verdict::Denied;
        let mut out = Vec::new();
        frames.frame(&Record::Event(e), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let (len, msg) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), msg.len());
        let pid = std::process::id();
        let head = format!("<132>1 2026-11-23T20:15:03.123456Z vm_a mcp-guard {pid} event - ");
        assert!(msg.starts_with(&head), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        let json: serde_json::Value = serde_json::from_str(&msg[head.len()..]).unwrap();
        assert_eq!(json["class_uid"], 1001);
        assert_eq!(json["file"]["path"], "/tmp/x\n<11>1 - forged - - - - {}");
    }
}
