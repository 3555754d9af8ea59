//! The host names a session's server resolved, learnt from its own DNS traffic: address → the
//! name the server asked for (following CNAMEs back to it), so a connect can say
//! `api.github.com:443 (140.82.112.5)`.
//!
//! An answer counts only when it matches a query the server itself sent: same DNS server
//! (address and port), same local port, same id, same question. Within a matching answer only
//! addresses of the asked name or of the aliases the answer chains it to are taken. Everything
//! is bounded; what cannot be used is counted, never trusted. The names are labels for people
//! and for `policy suggest`: nothing is allowed because of them (the enforcer resolves the
//! policy's names itself at launch).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::{IpAddr, SocketAddr},
};

use mcp_guard_model::{DnsAnswer, DnsDirection, DnsPacket};

/// Queries waiting for their answer, at most; the oldest is forgotten first.
const MAX_PENDING: usize = 1024;
/// Addresses named, at most; the oldest is forgotten first.
const MAX_NAMES: usize = 4096;
/// CNAME hops followed from the asked name.
const MAX_ALIAS_HOPS: usize = 16;
/// The DNS port: queries go to it, answers come from it.
const DNS_PORT: u16 = 53;

/// One outstanding query: who was asked, from which local port, with which id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct QueryKey {
    peer: SocketAddr,
    local_port: u16,
    id: u16,
    name: String,
    qtype: u16,
}

/// Per-session DNS knowledge and its counters.
#[derive(Debug, Default)]
pub struct DnsNames {
    pending: HashSet<QueryKey>,
    pending_order: VecDeque<QueryKey>,
    names: HashMap<IpAddr, String>,
    names_order: VecDeque<IpAddr>,
    /// Packets whose bytes were cut, malformed or not one whole message.
    pub unparsed: u64,
    /// Answers that matched no query the server sent (forged, late, or for another socket).
    pub unmatched: u64,
}

impl DnsNames {
    /// Takes one packet of the session's server.
    pub fn observe(&mut self, packet: &DnsPacket) {
        let Some(msg) = &packet.message else {
            self.unparsed += 1;
            return;
        };
        if packet.peer.port() != DNS_PORT {
            // The server is the DNS server here (or a stray packet): not its own lookups.
            return;
        }
        let key = QueryKey {
            peer: canonical_sock(packet.peer),
            local_port: packet.local.port(),
            id: msg.id,
            name: msg.name.clone(),
            qtype: msg.qtype,
        };
        match (packet.direction, msg.response) {
            (DnsDirection::Sent, false) => self.remember_query(key),
            (DnsDirection::Received, true) => {
                if !self.pending.remove(&key) {
                    self.unmatched += 1;
                    return;
                }
                self.pending_order.retain(|k| k != &key);
                self.learn(&msg.name, &msg.answers);
            }
            // A response the server sent to port 53, a query it received from there: neither is
            // its own lookup.
            _ => {}
        }
    }

    /// The name the server resolved `addr` from, if it did.
    pub fn name_of(&self, addr: IpAddr) -> Option<&str> {
        self.names.get(&addr.to_canonical()).map(String::as_str)
    }

    fn remember_query(&mut self, key: QueryKey) {
        if self.pending.contains(&key) {
            return;
        }
        if self.pending.len() >= MAX_PENDING
            && let Some(old) = self.pending_order.pop_front()
        {
            self.pending.remove(&old);
        }
        self.pending.insert(key.clone());
        self.pending_order.push_back(key);
    }

    /// Names every address of `asked` (directly or through the answer's aliases) `asked`.
    fn learn(&mut self, asked: &str, answers: &[DnsAnswer]) {
        let mut chain: Vec<&str> = vec![asked];
        for _ in 0..MAX_ALIAS_HOPS {
            let Some(last) = chain.last().copied() else {
                break;
            };
            let next = answers.iter().find_map(|a| match a {
                DnsAnswer::Alias { name, target } if name == last => Some(target.as_str()),
                _ => None,
            });
            match next {
                Some(t) if !chain.contains(&t) => chain.push(t),
                _ => break,
            }
        }
        for a in answers {
            if let DnsAnswer::Addr { name, addr } = a
                && chain.contains(&name.as_str())
            {
                self.name(addr.to_canonical(), asked);
            }
        }
    }

    fn name(&mut self, addr: IpAddr, name: &str) {
        if self.names.insert(addr, name.to_string()).is_some() {
            self.names_order.retain(|a| *a != addr);
        } else if self.names.len() > MAX_NAMES
            && let Some(old) = self.names_order.pop_front()
        {
            self.names.remove(&old);
        }
        self.names_order.push_back(addr);
    }
}

fn canonical_sock(s: SocketAddr) -> SocketAddr {
    SocketAddr::new(s.ip().to_canonical(), s.port())
}

#[cfg(test)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "test counts a little over the small bounds"
)]
mod tests {
    use super::*;
    use mcp_guard_model::DnsMessage;

    const RESOLVER: &str = "127.0.0.53:53";
    const LOCAL: &str = "127.0.0.1:40000";

    fn packet(direction: DnsDirection, msg: Option<DnsMessage>) -> DnsPacket {
        DnsPacket {
            direction,
            proto: 17,
            local: LOCAL.parse().expect("addr"),
            peer: RESOLVER.parse().expect("addr"),
            message: msg,
        }
    }

    fn msg(id: u16, response: bool, name: &str, answers: Vec<DnsAnswer>) -> DnsMessage {
        DnsMessage {
            id,
            response,
            name: name.into(),
            qtype: 1,
            answers,
        }
    }

    fn addr(name: &str, a: &str) -> DnsAnswer {
        DnsAnswer::Addr {
            name: name.into(),
            addr: a.parse().expect("ip"),
        }
    }

    fn alias(name: &str, target: &str) -> DnsAnswer {
        DnsAnswer::Alias {
            name: name.into(),
            target: target.into(),
        }
    }

    #[test]
    fn an_answer_to_the_servers_query_names_its_addresses_through_cnames() {
        let mut d = DnsNames::default();
        d.observe(&packet(
            DnsDirection::Sent,
            Some(msg(7, false, "api.example.test", vec![])),
        ));
        d.observe(&packet(
            DnsDirection::Received,
            Some(msg(
                7,
                true,
                "api.example.test",
                vec![
                    alias("api.example.test", "edge.example.test"),
                    alias("edge.example.test", "lb.example.test"),
                    addr("lb.example.test", "10.1.2.3"),
                    // Not in the chain: an answer may not name other hosts.
                    addr("bank.example", "10.9.9.9"),
                ],
            )),
        ));
        assert_eq!(
            d.name_of("10.1.2.3".parse().expect("ip")),
            Some("api.example.test")
        );
        assert_eq!(
            d.name_of("::ffff:10.1.2.3".parse().expect("ip")),
            Some("api.example.test")
        );
        assert_eq!(d.name_of("10.9.9.9".parse().expect("ip")), None);
        assert_eq!((d.unmatched, d.unparsed), (0, 0));
    }

    #[test]
    fn answers_without_a_matching_query_are_counted_not_used() {
        let mut d = DnsNames::default();
        d.observe(&packet(
            DnsDirection::Sent,
            Some(msg(7, false, "a.test", vec![])),
        ));
        // Wrong id, wrong name, unasked: all ignored.
        for m in [
            msg(8, true, "a.test", vec![addr("a.test", "10.0.0.1")]),
            msg(7, true, "b.test", vec![addr("b.test", "10.0.0.2")]),
            msg(9, true, "c.test", vec![addr("c.test", "10.0.0.3")]),
        ] {
            d.observe(&packet(DnsDirection::Received, Some(m)));
        }
        // From another DNS server than the one asked.
        let mut other = packet(
            DnsDirection::Received,
            Some(msg(7, true, "a.test", vec![addr("a.test", "10.0.0.4")])),
        );
        other.peer = "127.0.0.99:53".parse().expect("addr");
        d.observe(&other);
        assert_eq!(d.unmatched, 4);
        for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"] {
            assert_eq!(d.name_of(ip.parse().expect("ip")), None, "{ip}");
        }
        // A query is answered once: a replay of the answer is unmatched.
        let answer = msg(7, true, "a.test", vec![addr("a.test", "10.0.0.5")]);
        d.observe(&packet(DnsDirection::Received, Some(answer.clone())));
        d.observe(&packet(DnsDirection::Received, Some(answer)));
        assert_eq!(d.name_of("10.0.0.5".parse().expect("ip")), Some("a.test"));
        assert_eq!(d.unmatched, 5);
        d.observe(&packet(DnsDirection::Received, None));
        assert_eq!(d.unparsed, 1);
    }

    #[test]
    fn tables_stay_bounded() {
        let mut d = DnsNames::default();
        for i in 0..(MAX_PENDING as u32 * 3) {
            d.observe(&packet(
                DnsDirection::Sent,
                Some(msg(
                    (i % 65536) as u16,
                    false,
                    &format!("h{i}.test"),
                    vec![],
                )),
            ));
        }
        assert!(d.pending.len() <= MAX_PENDING && d.pending_order.len() <= MAX_PENDING);
        for i in 0..(MAX_NAMES as u32 + 100) {
            let ip = IpAddr::from(i.to_be_bytes());
            d.name(ip, "x.test");
        }
        assert!(d.names.len() <= MAX_NAMES + 1 && d.names_order.len() == d.names.len());
    }
}
