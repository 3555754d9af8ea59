//! Host names from the server's own DNS: a jailed node server resolves names through a DNS
//! responder this test runs (c-ares, UDP port 53 on a loopback address), connects to the
//! answers, and the session's connect events carry the name it asked for (through a CNAME
//! chain); `policy suggest` writes `name:port`, which passes `policy check`. A forged answer
//! (no query of the server's matches it) names nothing, and malformed or oversized DNS packets
//! are ignored and counted.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket},
    path::Path,
    process::{Command, Stdio},
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use hickory_proto::{
    op::{Message, MessageType, ResponseCode},
    rr::{Name, RData, Record, RecordType, rdata},
};
use mcp_guard_tests::{describe, fresh_dir, give_to_server_user, mcp_guard, require_root};
use serde_json::Value;

/// Addresses of this test (127.0.77.0/24, used by no other test).
const RESOLVER: Ipv4Addr = Ipv4Addr::new(127, 0, 77, 53);
const SERVICE: Ipv4Addr = Ipv4Addr::new(127, 0, 77, 10);
const FORGED: Ipv4Addr = Ipv4Addr::new(127, 0, 77, 12);
const ZONE: &str = "dns-names.test";

fn name(s: &str) -> Name {
    Name::from_str(&format!("{s}.")).expect("DNS name")
}

/// The answer to `query`, and what else to send to its asker.
fn respond(query: &Message) -> Vec<Vec<u8>> {
    let Some(q) = query.queries().first() else {
        return vec![];
    };
    let asked = q.name().to_lowercase().to_ascii();
    let mut answer = Message::new();
    answer
        .set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_recursion_desired(true)
        .set_recursion_available(true)
        .add_query(q.clone());
    let mut extra = Vec::new();
    if asked == format!("api.{ZONE}.") {
        // api → edge → lb → SERVICE.
        answer.add_answer(Record::from_rdata(
            name(&format!("api.{ZONE}")),
            60,
            RData::CNAME(rdata::CNAME(name(&format!("edge.{ZONE}")))),
        ));
        answer.add_answer(Record::from_rdata(
            name(&format!("edge.{ZONE}")),
            60,
            RData::CNAME(rdata::CNAME(name(&format!("lb.{ZONE}")))),
        ));
        if q.query_type() == RecordType::A {
            answer.add_answer(Record::from_rdata(
                name(&format!("lb.{ZONE}")),
                60,
                RData::A(rdata::A(SERVICE)),
            ));
        }
    } else if asked == format!("trigger.{ZONE}.") {
        // Answered (no address), and followed by an answer nobody asked for: the attack.
        let mut forged = Message::new();
        forged
            .set_id(query.id().wrapping_add(1))
            .set_message_type(MessageType::Response)
            .add_query(hickory_proto::op::Query::query(
                name(&format!("forged.{ZONE}")),
                RecordType::A,
            ));
        forged.add_answer(Record::from_rdata(
            name(&format!("forged.{ZONE}")),
            60,
            RData::A(rdata::A(FORGED)),
        ));
        extra.push(forged.to_vec().expect("encode"));
    } else if asked == format!("malformed.{ZONE}.") {
        // A header that promises a question, then a compression pointer to itself; then a
        // datagram longer than the kernel side captures; then one cut in its answer.
        let mut looped = query.to_vec().expect("encode")[..12].to_vec();
        looped[2] |= 0x80;
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        let mut big = answer.clone();
        for i in 0..80u8 {
            big.add_answer(Record::from_rdata(
                name(&format!("malformed.{ZONE}")),
                60,
                RData::A(rdata::A(Ipv4Addr::new(127, 0, 78, i))),
            ));
        }
        let big = big.to_vec().expect("encode");
        assert!(big.len() > 1024, "not oversized: {}", big.len());
        let mut cut = answer.clone();
        cut.add_answer(Record::from_rdata(
            name(&format!("malformed.{ZONE}")),
            60,
            RData::A(rdata::A(Ipv4Addr::new(127, 0, 78, 1))),
        ));
        let mut cut = cut.to_vec().expect("encode");
        cut.truncate(cut.len() - 3);
        return vec![looped, big, cut];
    } else {
        answer.set_response_code(ResponseCode::NXDomain);
    }
    let mut out = vec![answer.to_vec().expect("encode")];
    out.extend(extra);
    out
}

/// Answers on RESOLVER:53 until `stop`.
fn responder(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let sock = UdpSocket::bind(SocketAddr::from((RESOLVER, 53)))
        .expect("bind the test's DNS responder on 127.0.77.53:53 (root)");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            for packet in respond(&query) {
                let _ = sock.send_to(&packet, from);
            }
        }
    })
}

/// Accepts (and drops) connections on `addr`:`port` (0: any) until `stop`; returns the port.
fn listener(addr: Ipv4Addr, port: u16, stop: Arc<AtomicBool>) -> u16 {
    let l = TcpListener::bind((addr, port)).expect("listener");
    l.set_nonblocking(true).expect("nonblocking");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if l.accept().is_err() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
    port
}

const SERVER_JS: &str = r#"
const dgram = require('dgram');
const dns = require('dns');
const net = require('net');
const [resolver, port] = [process.argv[2], Number(process.argv[3])];
const r = new dns.Resolver({ timeout: 1000, tries: 1 });
r.setServers([resolver]);
const resolve4 = (n) => new Promise((ok) => r.resolve4(n, (err, a) => ok(err ? [] : a)));
const connect = (host) => new Promise((ok) => {
  const s = net.connect({ host, port }, () => { s.destroy(); ok(true); });
  s.on('error', () => ok(false));
});
(async () => {
  const api = await resolve4('api.dns-names.test');
  if (api.length !== 1) { console.error('api resolved to', api); process.exit(3); }
  if (!(await connect(api[0]))) process.exit(4);
  // The forged answer arrives after this one; the server "knows" its address and uses it.
  await resolve4('trigger.dns-names.test');
  await new Promise((ok) => setTimeout(ok, 200));
  await connect('127.0.77.12');
  // Its own socket, open until all three bad replies are in: c-ares gives up on the first,
  // and a datagram that reaches a closed socket never reaches the session's cgroup either.
  await new Promise((ok) => {
    const q = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for (const l of 'malformed.dns-names.test'.split('.')) q.push(l.length, ...Buffer.from(l));
    q.push(0, 0, 1, 0, 1);
    const s = dgram.createSocket('udp4');
    let replies = 0;
    const done = () => { clearTimeout(t); s.close(); ok(); };
    const t = setTimeout(done, 3000);
    s.on('message', () => { if (++replies === 3) done(); });
    s.send(Buffer.from(q), 53, resolver);
  });
  process.exit(0);
})();
"#;

fn cli(state: &Path, args: &[&str]) -> std::process::Output {
    Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .output()
        .expect("run mcp-guard")
}

#[test]
fn connects_carry_the_name_the_server_resolved_and_suggest_keeps_it() {
    require_root();
    let dir = fresh_dir("dns-names", "loop");
    let script = dir.join("server.js");
    std::fs::write(&script, SERVER_JS).expect("write the server");
    give_to_server_user(&dir);
    let state = dir.join("state");
    let stop = Arc::new(AtomicBool::new(false));
    let dns = responder(stop.clone());
    let port = listener(SERVICE, 0, stop.clone());
    listener(FORGED, port, stop.clone());
    let out = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&state)
        .args(["exec", "--observe", "--name", "dnsnames", "--", "node"])
        .arg(&script)
        .arg(RESOLVER.to_string())
        .arg(port.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run the server");
    stop.store(true, Ordering::Relaxed);
    let _ = dns.join();
    assert!(
        out.status.success(),
        "the server failed:\n{}",
        describe(&out)
    );

    let events = cli(&state, &["events", "--server", "dnsnames", "--json"]);
    assert!(events.status.success(), "{}", describe(&events));
    let events: Vec<Value> = String::from_utf8_lossy(&events.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("event JSON"))
        .collect();
    let connect_to = |ip: Ipv4Addr| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| e["kind"] == "connect" && e["addr"] == ip.to_string())
            .collect()
    };
    // The name asked for, not the CNAME targets.
    let api = connect_to(SERVICE);
    assert!(!api.is_empty(), "no connect to {SERVICE}: {events:#?}");
    for e in &api {
        assert_eq!(e["host"], format!("api.{ZONE}"), "{e}");
        assert_eq!(e["port"], port, "{e}");
    }
    // The forged answer matched no query of the server's: its address has no name.
    let forged = connect_to(FORGED);
    assert!(!forged.is_empty(), "no connect to {FORGED}: {events:#?}");
    for e in &forged {
        assert!(e.get("host").is_none(), "a forged answer named {e}");
    }
    // Every DNS packet the session could not use is counted.
    let lost = |reason: &str| -> u64 {
        events
            .iter()
            .filter(|e| e["kind"] == "lost" && e["detail"]["reason"] == reason)
            .filter_map(|e| e["detail"]["count"].as_u64())
            .sum()
    };
    assert!(
        lost("dns_unparsed") >= 3,
        "malformed, oversized and cut: {events:#?}"
    );
    assert!(lost("dns_unmatched") >= 1, "the forged answer: {events:#?}");

    // The table shows `name:port (address)`.
    let table = cli(
        &state,
        &["events", "--server", "dnsnames", "--kind", "connect"],
    );
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(
        table.contains(&format!("api.{ZONE}:{port} ({SERVICE})")),
        "{table}"
    );

    // The suggestion allows the name, says which connects it stands for, keeps the forged
    // connect as an address, and passes `policy check`.
    let out = cli(&state, &["policy", "suggest", "--server", "dnsnames"]);
    assert!(out.status.success(), "{}", describe(&out));
    let policy = String::from_utf8(out.stdout).expect("UTF-8 policy");
    let line = policy
        .lines()
        .find(|l| {
            l.trim_start()
                .starts_with(&format!("\"api.{ZONE}:{port}\""))
        })
        .unwrap_or_else(|| panic!("no `api.{ZONE}:{port}` entry:\n{policy}"));
    assert!(line.contains(&SERVICE.to_string()), "{line}");
    assert!(policy.contains(&format!("\"{FORGED}:{port}\"")), "{policy}");
    assert!(
        !policy.contains(&format!("\"{SERVICE}:{port}\"")),
        "{policy}"
    );
    let file = dir.join("dnsnames.toml");
    std::fs::write(&file, &policy).expect("write the suggestion");
    let check = Command::new(mcp_guard())
        .args(["policy", "check"])
        .arg(&file)
        .output()
        .expect("run policy check");
    assert!(
        check.status.success(),
        "policy check rejected the suggestion:\n{policy}\n{}",
        describe(&check)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
