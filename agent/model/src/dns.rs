//! A DNS message a guarded server sent or received, as the kernel saw it on the wire and the
//! agent parsed it: what the session's analysis needs to name the addresses the server connects
//! to. Plain data; parsing the untrusted bytes is the agent's kernel module's job.

use std::net::{IpAddr, SocketAddr};

/// Whether the server sent the packet or received it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DnsDirection {
    /// The server sent it (egress of its cgroup).
    Sent,
    /// The server received it (ingress).
    Received,
}

/// One DNS packet of a guarded server.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DnsPacket {
    /// Sent or received.
    pub direction: DnsDirection,
    /// Transport protocol number (6 TCP, 17 UDP).
    pub proto: u32,
    /// The server's end (its socket's address and port).
    pub local: SocketAddr,
    /// The other end: the DNS server asked or answering (port 53 for a query or an answer).
    pub peer: SocketAddr,
    /// The message, or `None` when the bytes were cut, malformed or not one whole message.
    pub message: Option<DnsMessage>,
}

/// Most answer records a [`DnsMessage`] keeps (the rest are dropped by the parser).
pub const DNS_MAX_ANSWERS: usize = 64;

/// The parts of a DNS message that name addresses.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DnsMessage {
    /// The message id.
    pub id: u16,
    /// A response (QR set), else a query.
    pub response: bool,
    /// The (first) question's name, lower case, without the trailing dot.
    pub name: String,
    /// The question's type (1 A, 28 AAAA, ...).
    pub qtype: u16,
    /// A/AAAA/CNAME records of the answer section, at most [`DNS_MAX_ANSWERS`].
    pub answers: Vec<DnsAnswer>,
}

/// One answer record that maps a name.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DnsAnswer {
    /// `name` has address `addr` (A or AAAA).
    Addr {
        /// Owner name, lower case, without the trailing dot.
        name: String,
        /// The address.
        addr: IpAddr,
    },
    /// `name` is an alias of `target` (CNAME).
    Alias {
        /// Owner name, lower case, without the trailing dot.
        name: String,
        /// The canonical name, lower case, without the trailing dot.
        target: String,
    },
}
