//! The kernel event stream: ring buffer records → typed [`KernelEvent`]s on a channel.
//!
//! Records are copied out of the ring buffer and parsed here only; nothing else sees raw bytes.
//! An open arrives as two records, the attempt (at syscall entry) and its result (at exit);
//! [`OpenPairer`] joins them by thread, so consumers see one `Open` event with its result.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, RwLock},
};

use super::ringbuf::RingReader;
use mcp_guard_ebpf::{
    ConnectEvent, EventHeader, ExecEvent, KillEvent, OpenEvent, OpenResult, event_kind, sock_op,
    verdict,
};
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
            .unwrap_or_else(|p| p.into_inner())
            .insert(session, label);
    }

    fn get(&self, session: u32) -> ServerLabel {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&session)
            .cloned()
            .unwrap_or_else(|| ServerLabel {
                server: "".into(),
                session: "".into(),
            })
    }
}

/// One thing a guarded server did (or that was done about it).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelEvent {
    /// CLOCK_BOOTTIME nanoseconds (see [`boot_ns_now`]).
    pub ts_boot_ns: u64,
    /// The cgroup v2 id of the process.
    pub cgroup_id: u64,
    /// Process id (tgid); 0 for events made in userspace (`Resolve`).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Server name.
    pub server: Arc<str>,
    /// Session id.
    pub session: Arc<str>,
    /// What happened.
    pub kind: EventKind,
}

/// The kinds of kernel event.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EventKind {
    /// execve/execveat attempted.
    Exec {
        /// The path passed to exec.
        path: String,
        /// The first arguments (at most 4, each at most 63 bytes).
        argv: Vec<String>,
    },
    /// A file open and its outcome.
    Open {
        /// The path as passed (possibly relative to the process's cwd or a dirfd).
        path: String,
        /// open flags.
        flags: u32,
        /// fd or -errno; `None` when the result record was lost (counted as
        /// `open_result_lost`) or the open had not returned after [`OPEN_RESULT_WAIT`].
        result: Option<i64>,
    },
    /// A connect or a sendmsg with a destination, and the egress verdict.
    Connect {
        /// Destination.
        addr: SocketAddr,
        /// Transport protocol number (6 TCP, 17 UDP).
        proto: u32,
        /// connect or sendmsg.
        op: SockOp,
        /// The verdict.
        verdict: Verdict,
    },
    /// mcp-guard's kernel program killed the process (a sensitive path on open).
    Killed {
        /// The path it tried to open.
        path: String,
        /// The signal sent.
        signal: u32,
    },
    /// A host name in the allowlist was (re)resolved; these addresses are now allowed.
    Resolve {
        /// The name.
        name: String,
        /// The addresses now allowed for it (including still-valid earlier ones).
        addrs: Vec<IpAddr>,
        /// Seconds until the answer expires.
        ttl_secs: u64,
        /// Why resolving failed, if it did.
        error: Option<String>,
    },
}

/// Which socket operation a `Connect` event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SockOp {
    /// connect(2).
    Connect,
    /// sendmsg/sendto with a destination.
    Sendmsg,
}

/// An egress verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Verdict {
    /// Allowed by the allowlist.
    Allowed,
    /// Denied (EPERM).
    Denied,
    /// Not in the allowlist, let through because the server is in observe mode.
    Observed,
}

/// CLOCK_BOOTTIME now, in nanoseconds: the clock kernel events are stamped with.
pub fn boot_ns_now() -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; the clock ids used are always supported on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// Wall-clock nanoseconds since the epoch for a CLOCK_BOOTTIME stamp.
pub fn boot_to_unix_ns(ts_boot_ns: u64) -> u64 {
    let real = clock_ns(libc::CLOCK_REALTIME);
    let boot = clock_ns(libc::CLOCK_BOOTTIME);
    real.saturating_sub(boot.saturating_sub(ts_boot_ns))
}

fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn read<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: the length was checked; T is a plain `#[repr(C)]` record valid for any bytes, and
    // read_unaligned copes with the ring buffer's 8-byte alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// One ring buffer record, parsed.
#[derive(Debug)]
pub(crate) enum Record {
    /// A complete event.
    Event(KernelEvent),
    /// An open attempt (`result` not yet known), from the thread `pid_tgid`.
    Open(u64, KernelEvent),
    /// The result of thread `pid_tgid`'s last open.
    OpenResult(u64, i64),
    /// An open reported at exit with its path read again and its result, by `pid_tgid`.
    OpenReread(u64, KernelEvent),
}

/// Parses one ring buffer record; `None` for a record of unknown kind or short length.
pub(crate) fn parse(bytes: &[u8], labels: &Labels) -> Option<Record> {
    // Every record starts with its kind; the result record has no further header.
    if read::<u32>(bytes)? == event_kind::OPEN_RESULT {
        let ev: OpenResult = read(bytes)?;
        return Some(Record::OpenResult(ev.pid_tgid, ev.result));
    }
    let header: EventHeader = read(bytes)?;
    let open = |ev: &OpenEvent, result| EventKind::Open {
        path: c_str(&ev.key.path),
        flags: ev.flags,
        result,
    };
    let kind = match header.kind {
        event_kind::EXEC => {
            let ev: ExecEvent = read(bytes)?;
            let argc = (ev.argc as usize).min(ev.argv.len());
            EventKind::Exec {
                path: c_str(&ev.path),
                argv: ev.argv[..argc].iter().map(|a| c_str(a)).collect(),
            }
        }
        event_kind::OPEN => open(&read(bytes)?, None),
        event_kind::OPEN_REREAD => {
            let ev: OpenEvent = read(bytes)?;
            open(&ev, Some(ev.result))
        }
        event_kind::CONNECT => {
            let ev: ConnectEvent = read(bytes)?;
            let ip = if ev.family == libc::AF_INET as u32 {
                IpAddr::V4(Ipv4Addr::new(
                    ev.addr[0], ev.addr[1], ev.addr[2], ev.addr[3],
                ))
            } else {
                IpAddr::V6(Ipv6Addr::from(ev.addr))
            };
            EventKind::Connect {
                addr: SocketAddr::new(ip, ev.port as u16),
                proto: ev.protocol,
                op: if ev.op == sock_op::SENDMSG {
                    SockOp::Sendmsg
                } else {
                    SockOp::Connect
                },
                verdict: match ev.verdict {
                    verdict::ALLOWED => Verdict::Allowed,
                    verdict::OBSERVED => Verdict::Observed,
                    _ => Verdict::Denied,
                },
            }
        }
        event_kind::KILL => {
            let ev: KillEvent = read(bytes)?;
            EventKind::Killed {
                path: c_str(&ev.path),
                signal: ev.signal,
            }
        }
        _ => return None,
    };
    let label = labels.get(header.session);
    let event = KernelEvent {
        ts_boot_ns: header.ts_boot_ns,
        cgroup_id: header.cgroup,
        pid: (header.pid_tgid >> 32) as u32,
        tid: header.pid_tgid as u32,
        server: label.server,
        session: label.session,
        kind,
    };
    Some(match header.kind {
        event_kind::OPEN => Record::Open(header.pid_tgid, event),
        event_kind::OPEN_REREAD => Record::OpenReread(header.pid_tgid, event),
        _ => Record::Event(event),
    })
}

/// How long an open may wait for its result before it is reported without one (an open that
/// blocks, on a FIFO say; its late result is then dropped).
pub const OPEN_RESULT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long an open waits before its thread is checked for being gone: a gone thread's result
/// record, if it was not lost, has been read by then.
const OPEN_GONE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Joins each open attempt with its result record, by thread: a thread has one syscall in
/// flight, and the ring buffer delivers records in the order they were reserved, so a
/// thread's result follows its attempt and precedes its next one.
///
/// A record the kernel lost (counted there: `ringbuf_full`, `open_result_lost`) leaves an
/// attempt without a result, reported with `result: None` at the thread's next open, once the
/// thread is gone, or after [`OPEN_RESULT_WAIT`]; or a result without an attempt, dropped.
#[derive(Default)]
pub(crate) struct OpenPairer {
    pending: HashMap<u64, KernelEvent>,
}

impl OpenPairer {
    /// Every attempt still waiting for its result goes to `out` without one (the stream they
    /// came from ends).
    pub(crate) fn flush(&mut self, out: &mut Vec<KernelEvent>) {
        out.extend(self.pending.drain().map(|(_, event)| event));
    }

    /// Takes one record; complete events go to `out`.
    pub(crate) fn push(&mut self, record: Record, out: &mut Vec<KernelEvent>) {
        match record {
            Record::Event(event) => out.push(event),
            Record::Open(tid, event) => {
                if let Some(unpaired) = self.pending.insert(tid, event) {
                    out.push(unpaired);
                }
            }
            Record::OpenResult(tid, result) => {
                if let Some(mut event) = self.pending.remove(&tid) {
                    set_result(&mut event, Some(result), None);
                    out.push(event);
                }
            }
            Record::OpenReread(tid, mut reread) => match self.pending.remove(&tid) {
                Some(mut event) => {
                    if let EventKind::Open { path, result, .. } = &mut reread.kind {
                        set_result(&mut event, *result, Some(std::mem::take(path)));
                    }
                    out.push(event);
                }
                // The attempt was lost: the exit record says it all but the entry time.
                None => out.push(reread),
            },
        }
    }

    /// Opens waiting long enough that their thread should be checked (see [`Self::expire`]).
    pub(crate) fn stale(&self, now_boot_ns: u64) -> Vec<u64> {
        let gone_after = OPEN_GONE_AFTER.as_nanos() as u64;
        self.pending
            .iter()
            .filter(|(_, e)| now_boot_ns.saturating_sub(e.ts_boot_ns) >= gone_after)
            .map(|(tid, _)| *tid)
            .collect()
    }

    /// Reports without a result the opens of `stale` whose thread is gone (checked *before*
    /// the ring buffer was last emptied, so their result, if any, has been read), and every
    /// open older than [`OPEN_RESULT_WAIT`].
    pub(crate) fn expire(
        &mut self,
        stale_gone: &[u64],
        now_boot_ns: u64,
        out: &mut Vec<KernelEvent>,
    ) {
        for tid in stale_gone {
            if let Some(event) = self.pending.remove(tid) {
                out.push(event);
            }
        }
        let wait = OPEN_RESULT_WAIT.as_nanos() as u64;
        let old: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, e)| now_boot_ns.saturating_sub(e.ts_boot_ns) >= wait)
            .map(|(tid, _)| *tid)
            .collect();
        for tid in old {
            if let Some(event) = self.pending.remove(&tid) {
                out.push(event);
            }
        }
    }
}

fn set_result(event: &mut KernelEvent, new_result: Option<i64>, new_path: Option<String>) {
    if let EventKind::Open { path, result, .. } = &mut event.kind {
        *result = new_result;
        if let Some(new_path) = new_path.filter(|_| path.is_empty()) {
            *path = new_path;
        }
    }
}

/// Whether thread `pid_tgid` no longer exists.
fn thread_gone(pid_tgid: u64) -> bool {
    let (tgid, tid) = ((pid_tgid >> 32) as libc::pid_t, pid_tgid as libc::pid_t);
    // SAFETY: tgkill with signal 0 sends nothing; it only checks that the thread exists.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, tgid, tid, 0) };
    r != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
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
        let mut pairer = OpenPairer::default();
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
                    if drain(guard.get_inner_mut(), &labels, &mut pairer, &mut batch) {
                        guard.clear_ready();
                    }
                }
                Some(Err(_)) => return,
                None => {
                    // Which waiting opens belong to gone threads, asked before the drain: then
                    // the drain has read whatever those threads submitted.
                    let gone: Vec<u64> = pairer
                        .stale(boot_ns_now())
                        .into_iter()
                        .filter(|tid| thread_gone(*tid))
                        .collect();
                    // A flush must see everything submitted so far: drain until empty.
                    while !drain(fd.get_mut(), &labels, &mut pairer, &mut batch) {}
                    pairer.expire(&gone, boot_ns_now(), &mut batch);
                }
            }
            for event in batch.drain(..) {
                if tx.send(event).await.is_err() {
                    return;
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
pub(crate) fn drain(
    ring: &mut RingReader,
    labels: &Labels,
    pairer: &mut OpenPairer,
    batch: &mut Vec<KernelEvent>,
) -> bool {
    ring.read_batch(BATCH, |bytes| {
        if let Some(record) = parse(bytes, labels) {
            pairer.push(record, batch);
        }
    })
}

/// The `kind` string of an event, as in DESIGN.md's events contract.
pub fn kind_name(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Exec { .. } => "exec",
        EventKind::Open { .. } => "open",
        EventKind::Connect {
            op: SockOp::Connect,
            ..
        } => "connect",
        EventKind::Connect {
            op: SockOp::Sendmsg,
            ..
        } => "sendmsg",
        EventKind::Killed { .. } => "killed",
        EventKind::Resolve { .. } => "resolve",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_or_unknown_records_are_rejected() {
        let labels = Labels::default();
        assert!(parse(&[0u8; 8], &labels).is_none());
        let header = EventHeader {
            kind: 99,
            ..Default::default()
        };
        // SAFETY: EventHeader is plain data; viewing it as bytes is sound.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&header as *const EventHeader).cast::<u8>(),
                size_of::<EventHeader>(),
            )
        };
        assert!(parse(bytes, &labels).is_none());
    }

    fn open(tid: u64, path: &str, ts: u64) -> KernelEvent {
        KernelEvent {
            ts_boot_ns: ts,
            cgroup_id: 1,
            pid: (tid >> 32) as u32,
            tid: tid as u32,
            server: "s".into(),
            session: "x".into(),
            kind: EventKind::Open {
                path: path.into(),
                flags: 0,
                result: None,
            },
        }
    }

    fn result_of(e: &KernelEvent) -> (&str, Option<i64>) {
        match &e.kind {
            EventKind::Open { path, result, .. } => (path, *result),
            _ => panic!("not an open: {e:?}"),
        }
    }

    /// The pairing rules for the records the kernel could not deliver (a full ring buffer is
    /// not something a test can produce on demand for one record).
    #[test]
    fn opens_pair_with_their_results_by_thread_and_losses_stay_visible() {
        let mut p = OpenPairer::default();
        let mut out = Vec::new();
        // Two threads interleaved: each result goes to its own thread's open.
        p.push(Record::Open(1, open(1, "/a", 10)), &mut out);
        p.push(Record::Open(2, open(2, "/b", 11)), &mut out);
        p.push(Record::OpenResult(2, -2), &mut out);
        p.push(Record::OpenResult(1, 3), &mut out);
        let got: Vec<_> = out.iter().map(result_of).collect();
        assert_eq!(got, [("/b", Some(-2)), ("/a", Some(3))]);
        out.clear();
        // A lost result: the open is reported without one at the thread's next open.
        p.push(Record::Open(1, open(1, "/c", 20)), &mut out);
        p.push(Record::Open(1, open(1, "/d", 21)), &mut out);
        assert_eq!(
            out.iter().map(result_of).collect::<Vec<_>>(),
            [("/c", None)]
        );
        // A result whose open was lost pairs with nothing.
        p.push(Record::OpenResult(1, 4), &mut out);
        p.push(Record::OpenResult(1, 5), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(result_of(&out[1]), ("/d", Some(4)));
        out.clear();
        // A path read again at exit completes the attempt that had none.
        let mut reread = open(1, "/late", 31);
        set_result(&mut reread, Some(6), None);
        p.push(Record::Open(1, open(1, "", 30)), &mut out);
        p.push(Record::OpenReread(1, reread), &mut out);
        assert_eq!(result_of(&out[0]), ("/late", Some(6)));
        assert_eq!(out[0].ts_boot_ns, 30, "the attempt's time");
        out.clear();
        // Waiting opens: a gone thread's after the drain, anyone's after OPEN_RESULT_WAIT.
        p.push(Record::Open(7, open(7, "/gone", 0)), &mut out);
        p.push(Record::Open(8, open(8, "/blocked", 0)), &mut out);
        let second = 1_000_000_000;
        assert!(p.stale(second / 2).is_empty());
        let mut stale = p.stale(second);
        stale.sort();
        assert_eq!(stale, [7, 8]);
        p.expire(&[7], second, &mut out);
        assert_eq!(
            out.iter().map(result_of).collect::<Vec<_>>(),
            [("/gone", None)]
        );
        p.expire(&[], OPEN_RESULT_WAIT.as_nanos() as u64, &mut out);
        assert_eq!(result_of(&out[1]), ("/blocked", None));
        assert!(p.pending.is_empty());
    }
}
