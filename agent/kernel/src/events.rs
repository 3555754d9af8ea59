//! The kernel event stream: ring buffer records → typed [`KernelEvent`]s on a channel.
//!
//! Records are copied out of the ring buffer and parsed here only; nothing else sees raw bytes.
//! The parsed event is plain data of the model crate ([`mcp_guard_model::kernel_event`]), so the
//! session's analysis reads it without depending on the kernel module.

use std::{
    collections::HashMap,
    io,
    mem::offset_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, RwLock},
};

use super::ringbuf::RingReader;
use mcp_guard_ebpf::{
    ConnectEvent, EventHeader, ExecDoneEvent, ExecEvent, KillEvent, OPEN_PATH_OFFSET, OpenEvent,
    UnixEvent, event_kind, sock_op, verdict,
};
/// The parsed event (re-exported: the loader and the agent's links hand it on as this module's).
pub use mcp_guard_model::kernel_event::KernelEvent;
use mcp_guard_model::kernel_event::{EgressVerdict, KernelEventKind, SockOp};
use tokio::{
    io::unix::AsyncFd,
    sync::{mpsc, oneshot},
};

/// Who a guarded cgroup belongs to, as `add_server` was told.
#[derive(Clone, Debug)]
pub struct ServerLabel {
    /// Server name.
    pub server: Arc<str>,
    /// Session id.
    pub session: Arc<str>,
}

/// Session index (the kernel's `GuardConfig::session`) → label. Labels are kept after a server
/// ends so its last events still carry its name.
#[derive(Clone, Default)]
pub(crate) struct Labels(Arc<RwLock<HashMap<u32, ServerLabel>>>);

impl Labels {
    pub(crate) fn insert(&self, session: u32, label: ServerLabel) {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(session, label);
    }

    fn get(&self, session: u32) -> ServerLabel {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&session)
            .cloned()
            .unwrap_or_else(|| ServerLabel {
                server: "".into(),
                session: "".into(),
            })
    }
}

/// The string up to the first NUL (or the end); invalid UTF-8 is replaced, not refused.
fn c_str(bytes: &[u8]) -> String {
    let bytes = &bytes[..memchr::memchr(0, bytes).unwrap_or(bytes.len())];
    // The plain check first: for the valid UTF-8 that nearly every path is, it is several times
    // faster than the lossy decoder's chunking.
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// A record of type `T` copied out of `bytes` (which the ring buffer only aligns to 8 bytes);
/// `None` when `bytes` is shorter.
fn read<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    let mut record = std::mem::MaybeUninit::<T>::uninit();
    // SAFETY: exactly size_of::<T>() bytes, all present in `bytes`, fill the record; T is a
    // plain `#[repr(C)]` record valid for any bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            record.as_mut_ptr().cast::<u8>(),
            size_of::<T>(),
        );
        Some(record.assume_init())
    }
}

/// The `N` bytes of a field at `offset`; `None` when the record is too short.
fn field<const N: usize>(bytes: &[u8], offset: usize) -> Option<[u8; N]> {
    bytes.get(offset..offset + N)?.try_into().ok()
}

fn exec_kind(ev: &ExecEvent, result: Option<i64>) -> KernelEventKind {
    let argc = (ev.argc as usize).min(ev.argv.len());
    KernelEventKind::Exec {
        path: c_str(&ev.path),
        argv: ev.argv[..argc].iter().map(|a| c_str(a)).collect(),
        result,
    }
}

/// Parses one ring buffer record; `None` for a record of unknown kind or short length.
pub(crate) fn parse(bytes: &[u8], labels: &Labels) -> Option<KernelEvent> {
    let header: EventHeader = read(bytes)?;
    let kind = match header.kind {
        event_kind::EXEC => exec_kind(&read::<ExecEvent>(bytes)?, None),
        event_kind::EXEC_DONE => {
            let ev: ExecDoneEvent = read(bytes)?;
            exec_kind(&ev.exec, Some(ev.result))
        }
        // The fields in place: copying the record whole would mean a full-size path buffer.
        event_kind::OPEN if bytes.len() > OPEN_PATH_OFFSET => KernelEventKind::Open {
            path: c_str(&bytes[OPEN_PATH_OFFSET..]),
            flags: u32::from_ne_bytes(field(bytes, offset_of!(OpenEvent, flags))?),
            result: Some(i64::from_ne_bytes(field(
                bytes,
                offset_of!(OpenEvent, result),
            )?)),
        },
        // An upgrade drains the ring buffer of the build before it: its attempts go on
        // without their result (in a separate record, which has no header and is skipped).
        event_kind::OPEN_ATTEMPT_V1 => {
            let ev: OpenEvent = read(bytes)?;
            KernelEventKind::Open {
                path: c_str(&ev.key.path),
                flags: ev.flags,
                result: None,
            }
        }
        event_kind::CONNECT => {
            let ev: ConnectEvent = read(bytes)?;
            // A port over 16 bits is a malformed record, skipped like one cut short.
            let port = u16::try_from(ev.port).ok()?;
            let ip = if ev.family == libc::AF_INET as u32 {
                IpAddr::V4(Ipv4Addr::new(
                    ev.addr[0], ev.addr[1], ev.addr[2], ev.addr[3],
                ))
            } else {
                IpAddr::V6(Ipv6Addr::from(ev.addr))
            };
            KernelEventKind::Connect {
                addr: SocketAddr::new(ip, port),
                proto: ev.protocol,
                op: sock_op_of(ev.op),
                verdict: verdict_of(ev.verdict),
            }
        }
        event_kind::UNIX => {
            let ev: UnixEvent = read(bytes)?;
            KernelEventKind::Unix {
                path: super::unix::display(&ev.path, ev.len),
                sock_type: ev.sock_type,
                op: sock_op_of(ev.op),
                verdict: verdict_of(ev.verdict),
            }
        }
        event_kind::KILL => {
            let ev: KillEvent = read(bytes)?;
            KernelEventKind::Killed {
                path: c_str(&ev.path),
                signal: ev.signal,
            }
        }
        event_kind::DNS => KernelEventKind::Dns(Box::new(super::dns_packet::parse(bytes)?)),
        _ => return None,
    };
    let label = labels.get(header.session);
    #[expect(
        clippy::cast_possible_truncation,
        reason = "pid_tgid's low 32 bits are the thread id"
    )]
    let tid = header.pid_tgid as u32;
    Some(KernelEvent {
        ts_boot_ns: header.ts_boot_ns,
        cgroup_id: header.cgroup,
        pid: (header.pid_tgid >> 32) as u32,
        tid,
        server: label.server,
        session: label.session,
        kind,
    })
}

fn sock_op_of(op: u32) -> SockOp {
    if op == sock_op::SENDMSG {
        SockOp::Sendmsg
    } else {
        SockOp::Connect
    }
}

fn verdict_of(code: u32) -> EgressVerdict {
    match code {
        verdict::ALLOWED => EgressVerdict::Allowed,
        verdict::OBSERVED => EgressVerdict::Observed,
        _ => EgressVerdict::Denied,
    }
}

/// Drains the ring buffer whenever it becomes readable, forever, into `tx`. A full channel
/// stops the draining, so the kernel (not this task) counts what cannot be kept.
///
/// A request on `flushes` drains at once; its reply is sent after every event that was in the
/// ring buffer has been handed to `tx`.
pub(crate) fn spawn_reader(
    ring: RingReader,
    labels: Labels,
    tx: mpsc::Sender<KernelEvent>,
    mut flushes: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
) -> io::Result<tokio::task::JoinHandle<()>> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(io::Error::other(
            "the kernel event reader needs a tokio runtime",
        ));
    }
    // SAFETY: the ring buffer map owns its fd, which stays open and the same until the map (and
    // with it the AsyncFd) is dropped.
    let mut fd = unsafe { AsyncFd::register(ring) }.map_err(io::Error::from)?;
    Ok(tokio::spawn(async move {
        let mut batch = Vec::with_capacity(BATCH);
        // The kernel wakes us only when a lot is pending (see agent-ebpf's `submit_flags`);
        // the tick picks up the rest.
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut flushed = None;
            let ready = tokio::select! {
                guard = fd.readable_mut() => Some(guard),
                _ = tick.tick() => None,
                Some(reply) = flushes.recv() => { flushed = Some(reply); None }
            };
            match ready {
                Some(Ok(mut guard)) => {
                    if drain(guard.get_inner_mut(), &labels, &mut batch) {
                        guard.clear_ready();
                    }
                }
                Some(Err(_)) => return,
                None => {
                    // A flush must see everything submitted so far: drain until empty.
                    while !drain(fd.get_mut(), &labels, &mut batch) {}
                }
            }
            // Room for many events at a time: one wait on the channel instead of one per event.
            let mut events = batch.drain(..);
            while events.len() > 0 {
                let Ok(permits) = tx.reserve_many(events.len().min(tx.max_capacity())).await else {
                    return;
                };
                for (permit, event) in permits.zip(&mut events) {
                    permit.send(event);
                }
            }
            if let Some(reply) = flushed {
                let _ = reply.send(());
            }
        }
    }))
}

/// Records parsed per pass before they are handed on (and their space given back).
const BATCH: usize = 4096;
/// How often the ring buffer is drained without a wakeup.
const POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// Parses pending records into `batch`; true when the ring buffer was emptied.
pub(crate) fn drain(ring: &mut RingReader, labels: &Labels, batch: &mut Vec<KernelEvent>) -> bool {
    ring.read_batch(BATCH, |bytes| batch.extend(parse(bytes, labels)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T>(record: &T) -> &[u8] {
        // SAFETY: the records are plain `#[repr(C)]` data; viewing one as bytes is sound.
        unsafe {
            std::slice::from_raw_parts(std::ptr::from_ref::<T>(record).cast::<u8>(), size_of::<T>())
        }
    }

    #[test]
    fn short_or_unknown_records_are_rejected() {
        let labels = Labels::default();
        assert!(parse(&[0u8; 8], &labels).is_none());
        let header = EventHeader {
            kind: 99,
            ..Default::default()
        };
        assert!(parse(bytes_of(&header), &labels).is_none());
    }

    #[test]
    fn unix_records_show_paths_and_abstract_names() {
        let labels = Labels::default();
        let mut ev = UnixEvent {
            header: EventHeader {
                kind: event_kind::UNIX,
                ..Default::default()
            },
            op: sock_op::SENDMSG,
            verdict: verdict::DENIED,
            sock_type: 2,
            len: 4,
            path: [0; mcp_guard_ebpf::UNIX_PATH_LEN],
            pad: 0,
        };
        ev.path[..6].copy_from_slice(b"\0a\0b\0c");
        let parsed = parse(bytes_of(&ev), &labels).expect("a unix event");
        assert_eq!(
            parsed.kind,
            KernelEventKind::Unix {
                path: "@a@b".into(),
                sock_type: 2,
                op: SockOp::Sendmsg,
                verdict: EgressVerdict::Denied
            }
        );
        assert_eq!(parsed.kind.contract_kind().as_str(), "sendmsg");
        ev.path[..9].copy_from_slice(b"/run/x.so");
        ev.len = 0;
        ev.op = sock_op::CONNECT;
        let parsed = parse(bytes_of(&ev), &labels).expect("a unix event");
        assert!(matches!(&parsed.kind, KernelEventKind::Unix { path, .. } if path == "/run/x.so"));
        assert_eq!(parsed.kind.contract_kind().as_str(), "connect");
        assert_eq!(
            size_of::<UnixEvent>() % 8,
            0,
            "ring buffer records are 8-byte aligned"
        );
    }

    /// An open carries its result, also when its record ends at the path's NUL; an attempt from
    /// the build before (drained on upgrade) has none, and that build's separate result record
    /// is skipped, not misread.
    #[test]
    #[expect(
        clippy::decimal_bitwise_operands,
        reason = "pid 10 in the high half, tid 11 in the low"
    )]
    fn opens_and_the_previous_builds_records() {
        let labels = Labels::default();
        labels.insert(
            3,
            ServerLabel {
                server: "fs".into(),
                session: "s1".into(),
            },
        );
        let mut ev = OpenEvent {
            header: EventHeader {
                kind: event_kind::OPEN,
                session: 3,
                ts_boot_ns: 7,
                cgroup: 42,
                pid_tgid: (10 << 32) | 11,
            },
            result: -13,
            flags: 0o100,
            syscall: 257,
            key_bits: 0,
            key: mcp_guard_ebpf::PathKey {
                cgroup: [0; 8],
                path: [0; mcp_guard_ebpf::PATH_LEN],
            },
        };
        ev.key.path[..6].copy_from_slice(b"/a/b\0x");
        let open = parse(bytes_of(&ev), &labels).expect("an open");
        assert_eq!((open.pid, open.tid, open.cgroup_id), (10, 11, 42));
        assert_eq!(&*open.server, "fs");
        assert_eq!(
            open.kind,
            KernelEventKind::Open {
                path: "/a/b".into(),
                flags: 0o100,
                result: Some(-13)
            }
        );
        // As the kernel sends it: only up to the path's NUL.
        let sent = &bytes_of(&ev)[..OPEN_PATH_OFFSET + 5];
        assert_eq!(parse(sent, &labels), Some(open));
        assert!(parse(&sent[..OPEN_PATH_OFFSET], &labels).is_none());
        ev.header.kind = event_kind::OPEN_ATTEMPT_V1;
        let attempt = parse(bytes_of(&ev), &labels).expect("an attempt");
        assert!(matches!(
            attempt.kind,
            KernelEventKind::Open { result: None, .. }
        ));
        let old_result: [u64; 3] = [u64::from(event_kind::OPEN_RESULT_V1), 1, 0];
        assert!(parse(bytes_of(&old_result), &labels).is_none());
    }
}
