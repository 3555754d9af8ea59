//! A DNS record from the capture programs as a [`DnsPacket`]: the addresses and ports from the
//! packet's headers, the message parsed by hickory-proto. The bytes come from a server's socket
//! and are untrusted: anything cut short (the packet was longer than the capture, or a TCP
//! message spans segments), malformed, or beyond the bounds gives a packet without a message,
//! which the session counts and does not use. Nothing here panics on input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hickory_proto::{
    op::{Message, MessageType},
    rr::{Name, RData},
};
use mcp_guard_ebpf::{DNS_PAYLOAD_LEN, DNS_PAYLOAD_OFFSET, DnsEvent, dns_direction};
use mcp_guard_model::{DNS_MAX_ANSWERS, DnsAnswer, DnsDirection, DnsMessage, DnsPacket};

const AF_INET: u32 = 2;
const IPPROTO_TCP: u32 = 6;

/// The packet of one DNS record (`bytes` from its start, up to the end of what was captured);
/// `None` when the record itself is short or names an unknown family or direction.
pub(crate) fn parse(bytes: &[u8]) -> Option<DnsPacket> {
    let head = bytes.get(..DNS_PAYLOAD_OFFSET)?;
    // The record up to its payload, the payload zeroed: `read` wants the whole struct.
    let mut whole = vec![0u8; std::mem::size_of::<DnsEvent>()];
    whole.get_mut(..DNS_PAYLOAD_OFFSET)?.copy_from_slice(head);
    // SAFETY: `whole` holds size_of::<DnsEvent>() bytes and DnsEvent is plain integers and
    // arrays (any bit pattern is a value); the read is unaligned.
    let ev: DnsEvent = unsafe { std::ptr::read_unaligned(whole.as_ptr().cast::<DnsEvent>()) };
    let captured = (ev.captured as usize).min(DNS_PAYLOAD_LEN);
    let payload = bytes.get(DNS_PAYLOAD_OFFSET..)?.get(..captured)?;
    let ip = |raw: [u8; 16]| -> IpAddr {
        if ev.family == AF_INET {
            IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(raw))
        }
    };
    let src = SocketAddr::new(ip(ev.src), ev.src_port);
    let dst = SocketAddr::new(ip(ev.dst), ev.dst_port);
    let (direction, local, peer) = match ev.direction {
        dns_direction::SENT => (DnsDirection::Sent, src, dst),
        dns_direction::RECEIVED => (DnsDirection::Received, dst, src),
        _ => return None,
    };
    // Only a whole payload is a whole message.
    let whole_payload = ev.payload_len as usize == captured;
    let message = whole_payload
        .then(|| message(payload, ev.protocol == IPPROTO_TCP))
        .flatten();
    Some(DnsPacket {
        direction,
        proto: ev.protocol,
        local,
        peer,
        message,
    })
}

/// The message in a UDP payload, or in a TCP segment holding exactly one length-prefixed
/// message.
fn message(payload: &[u8], tcp: bool) -> Option<DnsMessage> {
    let bytes = if tcp {
        let (len, rest) = payload.split_first_chunk::<2>()?;
        (usize::from(u16::from_be_bytes(*len)) == rest.len()).then_some(rest)?
    } else {
        payload
    };
    let msg = Message::from_vec(bytes).ok()?;
    let query = msg.queries().first()?;
    let answers = msg
        .answers()
        .iter()
        .filter_map(|r| {
            let name = name_text(r.name());
            match r.data() {
                RData::A(a) => Some(DnsAnswer::Addr {
                    name,
                    addr: IpAddr::V4(a.0),
                }),
                RData::AAAA(a) => Some(DnsAnswer::Addr {
                    name,
                    addr: IpAddr::V6(a.0),
                }),
                RData::CNAME(c) => Some(DnsAnswer::Alias {
                    name,
                    target: name_text(&c.0),
                }),
                _ => None,
            }
        })
        .take(DNS_MAX_ANSWERS)
        .collect();
    Some(DnsMessage {
        id: msg.id(),
        response: msg.message_type() == MessageType::Response,
        name: name_text(query.name()),
        qtype: u16::from(query.query_type()),
        answers,
    })
}

/// A name as people write it: lower case, ASCII (IDNA labels as `xn--`), no trailing dot.
fn name_text(name: &Name) -> String {
    let mut s = name.to_lowercase().to_ascii();
    if s.ends_with('.') {
        s.pop();
    }
    s
}

#[cfg(test)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "test packets of a few dozen bytes"
)]
mod tests {
    use hickory_proto::{
        op::{Message, MessageType, Query},
        rr::{Name, RData, Record, RecordType, rdata},
    };
    use mcp_guard_ebpf::{EventHeader, event_kind};

    use super::*;

    fn record(direction: u32, proto: u32, payload: &[u8], payload_len: u32) -> Vec<u8> {
        let mut ev = DnsEvent {
            header: EventHeader {
                kind: event_kind::DNS,
                ..EventHeader::default()
            },
            direction,
            protocol: proto,
            family: AF_INET,
            src_port: 53,
            dst_port: 40000,
            src: [0; 16],
            dst: [0; 16],
            payload_len,
            captured: payload.len().min(DNS_PAYLOAD_LEN) as u32,
            payload: [0; DNS_PAYLOAD_LEN],
        };
        ev.src[..4].copy_from_slice(&[127, 0, 0, 53]);
        ev.dst[..4].copy_from_slice(&[127, 0, 0, 1]);
        let n = payload.len().min(DNS_PAYLOAD_LEN);
        ev.payload[..n].copy_from_slice(&payload[..n]);
        // SAFETY: a plain #[repr(C)] record, viewed as its bytes.
        let all = unsafe {
            std::slice::from_raw_parts(
                (&raw const ev).cast::<u8>(),
                std::mem::size_of::<DnsEvent>(),
            )
        };
        all[..DNS_PAYLOAD_OFFSET + n].to_vec()
    }

    fn answer() -> Vec<u8> {
        let asked = Name::from_ascii("API.Example.test.").expect("name");
        let edge = Name::from_ascii("edge.example.test.").expect("name");
        let mut m = Message::new();
        m.set_id(4242)
            .set_message_type(MessageType::Response)
            .add_query(Query::query(asked.clone(), RecordType::A));
        m.add_answer(Record::from_rdata(
            asked,
            60,
            RData::CNAME(rdata::CNAME(edge.clone())),
        ));
        m.add_answer(Record::from_rdata(
            edge,
            60,
            RData::A(rdata::A::new(10, 1, 2, 3)),
        ));
        m.to_vec().expect("encode")
    }

    #[test]
    fn an_answer_gives_its_question_and_records() {
        let bytes = answer();
        let p = parse(&record(
            dns_direction::RECEIVED,
            17,
            &bytes,
            bytes.len() as u32,
        ))
        .expect("packet");
        assert_eq!(p.direction, DnsDirection::Received);
        assert_eq!(p.peer, "127.0.0.53:53".parse().expect("addr"));
        assert_eq!(p.local, "127.0.0.1:40000".parse().expect("addr"));
        let m = p.message.expect("message");
        assert_eq!(
            (m.id, m.response, m.name.as_str(), m.qtype),
            (4242, true, "api.example.test", 1)
        );
        assert_eq!(
            m.answers,
            vec![
                DnsAnswer::Alias {
                    name: "api.example.test".into(),
                    target: "edge.example.test".into()
                },
                DnsAnswer::Addr {
                    name: "edge.example.test".into(),
                    addr: "10.1.2.3".parse().expect("ip")
                },
            ]
        );
        // Over TCP: the two-byte length first.
        let mut tcp = (bytes.len() as u16).to_be_bytes().to_vec();
        tcp.extend_from_slice(&bytes);
        let p = parse(&record(dns_direction::RECEIVED, 6, &tcp, tcp.len() as u32)).expect("tcp");
        assert!(p.message.is_some());
    }

    #[test]
    fn cut_malformed_and_odd_bytes_give_no_message_and_never_panic() {
        let bytes = answer();
        // The packet was longer than what was captured.
        let p = parse(&record(
            dns_direction::RECEIVED,
            17,
            &bytes,
            bytes.len() as u32 + 1,
        ));
        assert!(p.expect("packet").message.is_none());
        // Every prefix, and every single-byte corruption.
        for n in 0..bytes.len() {
            let p = parse(&record(dns_direction::RECEIVED, 17, &bytes[..n], n as u32));
            assert!(p.expect("packet").message.is_none(), "prefix {n}");
            let mut bad = bytes.clone();
            bad[n] ^= 0xff;
            let _ = parse(&record(dns_direction::RECEIVED, 17, &bad, bad.len() as u32));
        }
        // A compression pointer to itself.
        let mut looped = bytes[..12].to_vec();
        looped[4..6].copy_from_slice(&1u16.to_be_bytes());
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        let p = parse(&record(
            dns_direction::RECEIVED,
            17,
            &looped,
            looped.len() as u32,
        ));
        assert!(p.expect("packet").message.is_none());
        // TCP whose length prefix disagrees with the segment.
        let mut tcp = (bytes.len() as u16 + 5).to_be_bytes().to_vec();
        tcp.extend_from_slice(&bytes);
        let p = parse(&record(dns_direction::RECEIVED, 6, &tcp, tcp.len() as u32));
        assert!(p.expect("packet").message.is_none());
        // Short records, unknown directions, a lying `captured`.
        assert!(parse(&[0u8; 10]).is_none());
        assert!(parse(&record(7, 17, &bytes, bytes.len() as u32)).is_none());
        let mut lying = record(dns_direction::RECEIVED, 17, &bytes, bytes.len() as u32);
        lying.truncate(DNS_PAYLOAD_OFFSET + 3);
        assert!(parse(&lying).is_none());
    }
}
