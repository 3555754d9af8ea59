//! The proxy's output: what one frame produced for each side, sent once the shared state is
//! unlocked, and the writers that coalesce what is queued into one write.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::{
    io::{AsyncWrite, AsyncWriteExt, BufWriter},
    sync::mpsc,
};

/// What a side's writer gets: the bytes one frame (or one event) produced for that side, and
/// when that frame was read (only with [`ProxyConfig::timing`](super::ProxyConfig::timing)).
pub(super) struct Delivery {
    pub(super) bytes: Vec<u8>,
    pub(super) read_at: Option<Instant>,
}

/// One end of the proxy: the client, or the server.
#[derive(Clone, Copy)]
pub(super) enum Side {
    Client,
    Server,
}

/// The lines one frame (or one event) produced for each side, queued while the proxy's state
/// is locked and sent after (each non-empty side as one [`Delivery`]).
#[derive(Default)]
pub(super) struct Outbox {
    pub(super) client: Vec<u8>,
    pub(super) server: Vec<u8>,
    /// When the frame was read (with [`ProxyConfig::timing`](super::ProxyConfig::timing)).
    pub(super) read_at: Option<Instant>,
}

impl Outbox {
    /// Queues `line` (with its newline) for `to`.
    pub(super) fn queue(&mut self, to: Side, line: Vec<u8>) {
        match to {
            Side::Client => append(&mut self.client, line),
            Side::Server => append(&mut self.server, line),
        }
    }

    /// Queues a forwarded line (without its newline) for `to`, reusing its allocation when
    /// nothing else is queued there (the frame reader left room for the newline).
    pub(super) fn push_line(&mut self, to: Side, mut raw: Vec<u8>) {
        let buf = match to {
            Side::Client => &mut self.client,
            Side::Server => &mut self.server,
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
    pub(super) async fn send(
        &mut self,
        c: &mpsc::Sender<Delivery>,
        s: &mpsc::Sender<Delivery>,
    ) -> bool {
        let read_at = self.read_at.take();
        if !self.server.is_empty() {
            let bytes = std::mem::take(&mut self.server);
            if s.send(Delivery { bytes, read_at }).await.is_err() {
                return false;
            }
        }
        if !self.client.is_empty() {
            let bytes = std::mem::take(&mut self.client);
            if c.send(Delivery { bytes, read_at }).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Sends what the server side produced; false when the client is gone (answers to the
    /// server are dropped once the client has closed its side).
    pub(super) async fn send_from_server(
        &mut self,
        c: &mpsc::Sender<Delivery>,
        s: &mpsc::WeakSender<Delivery>,
    ) -> bool {
        let read_at = self.read_at.take();
        if !self.server.is_empty() {
            let bytes = std::mem::take(&mut self.server);
            if let Some(s) = s.upgrade() {
                let _ = s.send(Delivery { bytes, read_at }).await;
            } else {
                tracing::debug!("the client has gone; answer to the server dropped");
            }
        }
        if !self.client.is_empty() {
            let bytes = std::mem::take(&mut self.client);
            if c.send(Delivery { bytes, read_at }).await.is_err() {
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
/// [`ProxyOutcome::client_to_server`](super::ProxyOutcome::client_to_server)).
pub(super) async fn writer<W: AsyncWrite + Unpin>(
    w: W,
    mut rx: mpsc::Receiver<Delivery>,
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
