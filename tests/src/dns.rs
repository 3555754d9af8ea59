//! A DNS responder for tests and benchmarks: it answers on UDP port 53 of a loopback address
//! with whatever the test's `respond` makes of each query, until it is dropped.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use hickory_proto::{
    op::{Message, MessageType},
    rr::{Name, RData, Record, rdata},
};

/// A responder on `addr`:53; stops and is joined on drop.
pub struct Responder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Responder {
    /// Binds `addr`:53 (root) and answers each query with the datagrams `respond` makes of it
    /// (any number, sent in order).
    pub fn start(
        addr: Ipv4Addr,
        respond: impl Fn(&Message) -> Vec<Vec<u8>> + Send + 'static,
    ) -> Responder {
        let sock = UdpSocket::bind(SocketAddr::from((addr, 53)))
            .unwrap_or_else(|e| panic!("bind a test DNS responder on {addr}:53 (root): {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stopped.load(Ordering::Relaxed) {
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
        });
        Responder {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `s` as a fully qualified DNS name.
pub fn name(s: &str) -> Name {
    Name::from_str(&format!("{s}.")).expect("DNS name")
}

/// The start of an answer to `query`: same id and question, recursion available, no records.
pub fn answer_to(query: &Message) -> Message {
    let mut answer = Message::new();
    answer
        .set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_recursion_desired(true)
        .set_recursion_available(true);
    for q in query.queries() {
        answer.add_query(q.clone());
    }
    answer
}

/// An A record.
pub fn a_record(owner: &str, addr: Ipv4Addr) -> Record {
    Record::from_rdata(name(owner), 60, RData::A(rdata::A(addr)))
}

/// A query for `name`'s A records with `id`, as a stub resolver sends it.
pub fn a_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(u8::try_from(label.len()).expect("a DNS label is at most 63 bytes"));
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}
