//! Host names from the server's own DNS: a jailed node server resolves names through a DNS
//! responder this test runs (c-ares, UDP port 53 on a loopback address), connects to the
//! answers, and the session's connect events carry the name it asked for (through a CNAME
//! chain); `policy suggest` writes `name:port`, which passes `policy check`. A forged answer
//! (no query of the server's matches it) names nothing, and malformed or oversized DNS packets
//! are ignored and counted. The same, through the agent: a session the agent runs names its
//! connects the same way.

use std::{
    net::{Ipv4Addr, TcpListener},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use hickory_proto::{
    op::{Message, MessageType, ResponseCode},
    rr::{RData, Record, RecordType, rdata},
};
use mcp_guard_tests::{
    agent::{Agent, PinDir},
    describe,
    dns::{Responder, a_record, answer_to, name},
    fresh_dir, give_to_server_user, mcp_guard, require_root,
};
use serde_json::Value;

/// The addresses one test uses: its DNS responder, the service `api.` resolves to, and the
/// address the forged answer names. Each test has its own /24, used by no other test.
struct Net {
    resolver: Ipv4Addr,
    service: Ipv4Addr,
    forged: Ipv4Addr,
}

impl Net {
    const fn in_block(c: u8) -> Net {
        Net {
            resolver: Ipv4Addr::new(127, 0, c, 53),
            service: Ipv4Addr::new(127, 0, c, 10),
            forged: Ipv4Addr::new(127, 0, c, 12),
        }
    }
}

const STANDALONE: Net = Net::in_block(77);
const THROUGH_AGENT: Net = Net::in_block(76);
const ZONE: &str = "dns-names.test";

/// The answer to `query`, and what else to send to its asker. `api.` resolves (through CNAMEs)
/// to the service of the responder's own /24, `trigger.` is followed by a forged answer naming
/// `.12` of it.
fn respond(query: &Message, block: Ipv4Addr) -> Vec<Vec<u8>> {
    let Some(q) = query.queries().first() else {
        return vec![];
    };
    let [a, b, c, _] = block.octets();
    let asked = q.name().to_lowercase().to_ascii();
    let mut answer = answer_to(query);
    let mut extra = Vec::new();
    if asked == format!("api.{ZONE}.") {
        // api → edge → lb → the service.
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
            answer.add_answer(a_record(&format!("lb.{ZONE}"), Ipv4Addr::new(a, b, c, 10)));
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
        forged.add_answer(a_record(
            &format!("forged.{ZONE}"),
            Ipv4Addr::new(a, b, c, 12),
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
            big.add_answer(a_record(
                &format!("malformed.{ZONE}"),
                Ipv4Addr::new(127, 0, 78, i),
            ));
        }
        let big = big.to_vec().expect("encode");
        assert!(big.len() > 1024, "not oversized: {}", big.len());
        let mut cut = answer.clone();
        cut.add_answer(a_record(
            &format!("malformed.{ZONE}"),
            Ipv4Addr::new(127, 0, 78, 1),
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

/// The server: argv is the resolver, the service port and the address the forged answer names.
const SERVER_JS: &str = r#"
const dgram = require('dgram');
const dns = require('dns');
const net = require('net');
const [resolver, port, forged] = [process.argv[2], Number(process.argv[3]), process.argv[4]];
const r = new dns.Resolver({ timeout: 1000, tries: 1 });
r.setServers([resolver]);
const resolve4 = (n) => new Promise((ok) => r.resolve4(n, (err, a) => ok(err ? [] : a)));
const connect = (host) => new Promise((ok) => {
  const s = net.connect({ host, port }, () => { s.destroy(); ok(true); });
  s.on('error', () => ok(false));
});
// Asks for `name` on a UDP socket of its own, open until `replies` datagrams are in (3 s at
// most). c-ares closes its socket once its query is answered or given up, and a datagram that
// reaches a closed socket never reaches the session's cgroup either.
const ask = (name, replies) => new Promise((ok) => {
  const q = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
  for (const l of name.split('.')) q.push(l.length, ...Buffer.from(l));
  q.push(0, 0, 1, 0, 1);
  const s = dgram.createSocket('udp4');
  let seen = 0;
  const done = () => { clearTimeout(t); s.close(); ok(); };
  const t = setTimeout(done, 3000);
  s.on('message', () => { if (++seen === replies) done(); });
  s.send(Buffer.from(q), 53, resolver);
});
(async () => {
  const api = await resolve4('api.dns-names.test');
  if (api.length !== 1) { console.error('api resolved to', api); process.exit(3); }
  if (!(await connect(api[0]))) process.exit(4);
  // Its answer, then the forged one nobody asked for; the server "knows" its address and
  // uses it.
  await ask('trigger.dns-names.test', 2);
  await connect(forged);
  // Three bad replies: a self-looping, an oversized and a cut one.
  await ask('malformed.dns-names.test', 3);
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

/// How the session is run: `exec` standalone, or through a running agent.
enum Route<'a> {
    Standalone(PathBuf),
    Agent(&'a Agent),
}

impl Route<'_> {
    /// The state dir the session is recorded in.
    fn state(&self) -> &Path {
        match self {
            Route::Standalone(state) => state,
            Route::Agent(agent) => &agent.state,
        }
    }
}

/// Runs the server observed under `net`'s responder and listeners, then checks what its
/// session recorded: the connects' names, the counted bad packets, the table and the suggestion.
fn resolve_connect_and_suggest(net: &Net, dir: &Path, route: &Route<'_>) {
    // Only the server's own directory is the server user's (not the state, not the agent's).
    let server_dir = dir.join("server");
    std::fs::create_dir_all(&server_dir).expect("server dir");
    let script = server_dir.join("server.js");
    std::fs::write(&script, SERVER_JS).expect("write the server");
    give_to_server_user(&server_dir);
    let block = net.resolver;
    let dns = Responder::start(net.resolver, move |q| respond(q, block));
    let stop = Arc::new(AtomicBool::new(false));
    let port = listener(net.service, 0, stop.clone());
    listener(net.forged, port, stop.clone());
    let mut exec = Command::new(mcp_guard());
    match route {
        Route::Standalone(state) => exec
            .arg("--state-dir")
            .arg(state)
            .args(["exec", "--standalone"]),
        // No state dir of its own: what it records is in the agent's store, or nowhere here.
        Route::Agent(agent) => exec.arg("exec").arg("--agent-socket").arg(&agent.socket),
    };
    let out = exec
        .args(["--observe", "--name", "dnsnames", "--", "node"])
        .arg(&script)
        .arg(net.resolver.to_string())
        .arg(port.to_string())
        .arg(net.forged.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run the server");
    stop.store(true, Ordering::Relaxed);
    drop(dns);
    let agent_log = match route {
        Route::Agent(agent) => format!("\nagent:\n{}", agent.log()),
        Route::Standalone(_) => String::new(),
    };
    assert!(
        out.status.success(),
        "the server failed:\n{}{agent_log}",
        describe(&out)
    );
    let state = route.state();

    let events = cli(state, &["events", "--server", "dnsnames", "--json"]);
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
    let (service, forged) = (net.service, net.forged);
    // The name asked for, not the CNAME targets.
    let api = connect_to(service);
    assert!(!api.is_empty(), "no connect to {service}: {events:#?}");
    for e in &api {
        assert_eq!(e["host"], format!("api.{ZONE}"), "{e}");
        assert_eq!(e["port"], port, "{e}");
    }
    // The forged answer matched no query of the server's: its address has no name.
    let forged_connects = connect_to(forged);
    assert!(
        !forged_connects.is_empty(),
        "no connect to {forged}: {events:#?}"
    );
    for e in &forged_connects {
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
        state,
        &["events", "--server", "dnsnames", "--kind", "connect"],
    );
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(
        table.contains(&format!("api.{ZONE}:{port} ({service})")),
        "{table}"
    );

    // The suggestion allows the name, says which connects it stands for, keeps the forged
    // connect as an address, and passes `policy check`.
    let out = cli(state, &["policy", "suggest", "--server", "dnsnames"]);
    assert!(out.status.success(), "{}", describe(&out));
    let policy = String::from_utf8(out.stdout).expect("UTF-8 policy");
    let line = policy
        .lines()
        .find(|l| {
            l.trim_start()
                .starts_with(&format!("\"api.{ZONE}:{port}\""))
        })
        .unwrap_or_else(|| panic!("no `api.{ZONE}:{port}` entry:\n{policy}"));
    assert!(line.contains(&service.to_string()), "{line}");
    assert!(policy.contains(&format!("\"{forged}:{port}\"")), "{policy}");
    assert!(
        !policy.contains(&format!("\"{service}:{port}\"")),
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
}

#[test]
fn connects_carry_the_name_the_server_resolved_and_suggest_keeps_it() {
    require_root();
    let dir = fresh_dir("dns-names", "loop");
    let state = dir.join("state");
    resolve_connect_and_suggest(&STANDALONE, &dir, &Route::Standalone(state));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn through_the_agent_connects_carry_the_name_and_suggest_keeps_it() {
    require_root();
    let dir = fresh_dir("dns-names", "agent");
    let pins = PinDir::new("dns-names-agent");
    let agent = Agent::start(&dir, &pins, "");
    resolve_connect_and_suggest(&THROUGH_AGENT, &dir, &Route::Agent(&agent));
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}
