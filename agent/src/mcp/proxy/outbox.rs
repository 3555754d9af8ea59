//! The proxy's output: what one frame produced for each side, sent once the shared state is
//! unlocked, and the writers that coalesce what is queued into one write.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::{
    io::{AsyncWrite, AsyncWriteExt, BufWriter},
    sync::mpsc,
};

pub(super) enum Out {
    Server(Vec<u8>),
    Client(Vec<u8>),
}

/// What goes to a writer: one frame's output bytes, and when that frame was read (only with
/// [`ProxyConfig::timing`]).
pub(super) struct Chunk {
    pub(super) bytes: Vec<u8>,
    pub(super) read_at: Option<Instant>,
}

/// Which side a forwarded message goes to.
#[derive(Clone, Copy)]
pub(super) enum Dest {
    Client,
    Server,
}

/// Output bytes of one frame (or one event), per destination.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) client: Vec<u8>,
    pub(super) server: Vec<u8>,
    /// When the frame was read (with [`ProxyConfig::timing`]).
    pub(super) read_at: Option<Instant>,
}

impl Batch {
    pub(super) fn add(&mut self, outs: Vec<Out>) {
        for o in outs {
            match o {
                Out::Client(b) => append(&mut self.client, b),
                Out::Server(b) => append(&mut self.server, b),
            }
        }
    }

    /// Queues a forwarded line (without its newline) for `to`, reusing its allocation when
    /// nothing else is queued there (the frame reader left room for the newline).
    pub(super) fn push_line(&mut self, to: Dest, mut raw: Vec<u8>) {
        let buf = match to {
            Dest::Client => &mut self.client,
            Dest::Server => &mut self.server,
        };
        if buf.is_empty() {
            raw.push(b'\n');
            *buf = raw;
        } else {
            buf.extend_from_slice(&raw);
            buf.push(b'\n');
        }
    }

    /// Sends what the client side produced; false when either destination is gone.
    pub(super) async fn send(&mut self, c: &mpsc::Sender<Chunk>, s: &mpsc::Sender<Chunk>) -> bool {
        let read_at = self.read_at.take();
        if !self.server.is_empty() {
            let bytes = std::mem::take(&mut self.server);
            if s.send(Chunk { bytes, read_at }).await.is_err() {
                return false;
            }
        }
        if !self.client.is_empty() {
            let bytes = std::mem::take(&mut self.client);
            if c.send(Chunk { bytes, read_at }).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Sends what the server side produced; false when the client is gone (answers to the
    /// server are dropped once the client has closed its side).
    pub(super) async fn send_from_server(
        &mut self,
        c: &mpsc::Sender<Chunk>,
        s: &mpsc::WeakSender<Chunk>,
    ) -> bool {
        let read_at = self.read_at.take();
        if !self.server.is_empty() {
            let bytes = std::mem::take(&mut self.server);
            match s.upgrade() {
                Some(s) => {
                    let _ = s.send(Chunk { bytes, read_at }).await;
                }
                None => tracing::debug!("the client has gone; answer to the server dropped"),
            }
        }
        if !self.client.is_empty() {
            let bytes = std::mem::take(&mut self.client);
            if c.send(Chunk { bytes, read_at }).await.is_err() {
                return false;
            }
        }
        true
    }
}

/// Appends `b` to `buf`, taking `b`'s allocation when `buf` is empty.
pub(super) fn append(buf: &mut Vec<u8>, b: Vec<u8>) {
    if buf.is_empty() {
        *buf = b;
    } else {
        buf.extend_from_slice(&b);
    }
}

/// Writes what arrives on `rx` to `w`; also returns how long each chunk stamped with its frame's
/// read time took from then to the write issued, and to written (see
/// [`ProxyOutcome::client_to_server`]).
pub(super) async fn writer<W: AsyncWrite + Unpin>(
    w: W,
    mut rx: mpsc::Receiver<Chunk>,
    side: &str,
) -> (std::io::Result<()>, Vec<(Duration, Duration)>) {
    let mut times = Vec::new();
    let mut read_at = Vec::new();
    let mut w = BufWriter::with_capacity(64 * 1024, w);
    let written = async {
        while let Some(chunk) = rx.recv().await {
            w.write_all(&chunk.bytes).await?;
            read_at.extend(chunk.read_at);
            // Coalesce whatever is already queued, then flush once.
            while let Ok(chunk) = rx.try_recv() {
                w.write_all(&chunk.bytes).await?;
                read_at.extend(chunk.read_at);
            }
            let issued = (!read_at.is_empty()).then(Instant::now);
            w.flush().await?;
            if let Some(issued) = issued {
                let now = Instant::now();
                times.extend(read_at.drain(..).map(|t| (issued - t, now - t)));
            }
        }
        tracing::debug!("{side} writer done");
        w.shutdown().await
    }
    .await;
    (written, times)
}

pub(super) fn line(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.push(b'\n');
    bytes
}

pub(super) fn to_line(v: &Value) -> Vec<u8> {
    line(to_vec(v))
}

/// `v` serialized (without a newline). Serializing a `Value` cannot fail (its keys are strings).
pub(super) fn to_vec(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}
