//! The one input of a session's analysis: everything the proxy and the kernel tell it, in one
//! bounded queue.
//!
//! Bounded, and never holding up the proxy: the proxy's inputs ([`InputSender::offer`],
//! [`InputSender::call_fact`]) are queued without waiting, and one that finds the queue full is
//! dropped and counted ([`InputReceiver::dropped`], which the session reports). Kernel events
//! ([`InputSender::kernel`]) wait instead while the queue is down to [`PROXY_HEADROOM`] free
//! slots, so a server flooding the kernel with events cannot crowd the proxy's inputs out; while
//! they wait the ring buffer (or the agent's link) holds the rest, and what the kernel could not
//! deliver it counts itself (`lost` events).

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use tokio::sync::mpsc::{self, error::TrySendError};

use crate::correlate::CallFact;
use mcp_guard_model::{Finding, KernelEvent, boot_ns_now};

/// Tools as a `tools/list` answer named them: (name, `readOnlyHint`).
pub type ToolHints = Vec<(String, bool)>;

/// What a session's analysis is told.
#[derive(Clone, Debug, PartialEq)]
pub enum SessionInput {
    /// A call started or ended, or `initialize` was answered (the proxy, stamped with the boot
    /// clock).
    Call(CallFact),
    /// A page of a `tools/list` answer (the proxy), for the read-only check.
    Tools(ToolHints),
    /// Something the server did that the kernel saw.
    Kernel(KernelEvent),
    /// Something the proxy's interceptors noticed: an alert of the MCP layer.
    Finding(Finding),
}

/// Inputs queued at most (the proxy's and the kernel's together).
pub const INPUT_CAPACITY: usize = 16384;

/// Slots kernel events leave free for the proxy's inputs.
pub const PROXY_HEADROOM: usize = 1024;

/// How long a kernel event waits before it looks at the queue again while it is down to the
/// proxy's headroom.
const HEADROOM_WAIT: std::time::Duration = std::time::Duration::from_millis(1);

/// A session's input queue: the senders (cloned into the proxy's sink and the kernel guard)
/// and the pipeline's receiver.
pub fn channel() -> (InputSender, InputReceiver) {
    let (tx, rx) = mpsc::channel(INPUT_CAPACITY);
    let shared = Arc::new(Shared::default());
    (
        InputSender {
            tx,
            shared: shared.clone(),
        },
        InputReceiver { rx, shared },
    )
}

#[derive(Debug, Default)]
struct Shared {
    /// Held while a call fact is stamped and queued, and while the pipeline reads the clock:
    /// so once the pipeline has read "now" and drained the queue, every fact stamped before
    /// "now" is in its hands (see [`InputReceiver::settled_now`]).
    stamping: Mutex<()>,
    /// The proxy's inputs dropped because the queue was full.
    dropped: AtomicU64,
}

impl Shared {
    fn stamping(&self) -> std::sync::MutexGuard<'_, ()> {
        self.stamping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Where the proxy and the kernel guard send a session's inputs.
#[derive(Clone, Debug)]
pub struct InputSender {
    tx: mpsc::Sender<SessionInput>,
    shared: Arc<Shared>,
}

impl InputSender {
    /// Queues one of the proxy's inputs without waiting. `false` when it was not queued: the
    /// queue was full (the input is dropped and counted) or the analysis is over.
    pub fn offer(&self, input: SessionInput) -> bool {
        match self.tx.try_send(input) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }

    /// Stamps a call fact with the boot clock (`make` gets it) and queues it, as one step with
    /// respect to the pipeline's reading of the clock (from any thread).
    pub fn call_fact(&self, make: impl FnOnce(u64) -> CallFact) -> bool {
        let _stamping = self.shared.stamping();
        self.offer(SessionInput::Call(make(boot_ns_now())))
    }

    /// Queues a kernel event, waiting while the queue is down to the proxy's headroom.
    /// `false` when the analysis is over.
    pub async fn kernel(&self, event: KernelEvent) -> bool {
        while self.tx.capacity() <= PROXY_HEADROOM {
            if self.tx.is_closed() {
                return false;
            }
            tokio::time::sleep(HEADROOM_WAIT).await;
        }
        self.tx.send(SessionInput::Kernel(event)).await.is_ok()
    }
}

/// The pipeline's end of a session's inputs.
#[derive(Debug)]
pub struct InputReceiver {
    rx: mpsc::Receiver<SessionInput>,
    shared: Arc<Shared>,
}

impl InputReceiver {
    /// The next input; `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<SessionInput> {
        self.rx.recv().await
    }

    /// An input already queued, if any.
    pub fn try_recv(&mut self) -> Option<SessionInput> {
        self.rx.try_recv().ok()
    }

    /// The boot clock, read while no call fact is being stamped: every fact stamped before it
    /// is already queued, so once the queue is drained the proxy has said everything up to it.
    pub fn settled_now(&self) -> u64 {
        let _stamping = self.shared.stamping();
        boot_ns_now()
    }

    /// The proxy's inputs dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use mcp_guard_model::KernelEventKind;

    fn event(n: u64) -> KernelEvent {
        KernelEvent {
            ts_boot_ns: n,
            cgroup_id: 1,
            pid: 1,
            tid: 1,
            server: Arc::from("s"),
            session: Arc::from("x"),
            kind: KernelEventKind::Killed {
                path: String::new(),
                signal: 9,
            },
        }
    }

    fn started(n: u64) -> impl FnOnce(u64) -> CallFact {
        move |at_boot_ns| CallFact::Started {
            call_id: format!("c{n}"),
            tool: None,
            at_boot_ns,
        }
    }

    #[tokio::test]
    async fn a_kernel_flood_leaves_the_proxy_its_headroom_and_a_full_queue_counts_drops() {
        let (tx, mut rx) = channel();
        // The kernel fills the queue up to the headroom, then waits.
        let kernel = tx.clone();
        let flood = tokio::spawn(async move {
            for n in 0.. {
                if !kernel.kernel(event(n)).await {
                    return n;
                }
            }
            unreachable!()
        });
        while tx.tx.capacity() > PROXY_HEADROOM {
            tokio::task::yield_now().await;
        }
        // The proxy still gets its inputs in, without waiting.
        for n in 0..PROXY_HEADROOM as u64 {
            assert!(tx.call_fact(started(n)), "fact {n} queued");
        }
        assert_eq!(rx.dropped(), 0);
        // Beyond the headroom the queue is full: dropped and counted, never waited for.
        assert!(!tx.call_fact(started(9999)));
        assert_eq!(rx.dropped(), 1);
        // Every queued fact is there, after the kernel's events.
        let mut facts = 0;
        while let Some(input) = rx.try_recv() {
            if matches!(input, SessionInput::Call(_)) {
                facts += 1;
            }
            if facts == PROXY_HEADROOM {
                break;
            }
        }
        assert_eq!(facts, PROXY_HEADROOM);
        drop(rx);
        assert!(flood.await.expect("flood task") >= (INPUT_CAPACITY - PROXY_HEADROOM) as u64);
    }
}
