//! The run loop: a reader per side feeding the shared state, the two writers, and the tasks
//! that deny calls on the analysis's request and end an overdue re-list, until the server's
//! output ends.

use std::{collections::VecDeque, sync::Mutex, time::Instant};

use tokio::{
    io::{AsyncRead, AsyncWrite, BufReader},
    sync::{Notify, mpsc, oneshot},
};

use super::{
    ProxyConfig, ProxyOutcome, build_chain,
    outbox::{Delivery, Outbox, writer},
    relist::relist_watchdog,
    state::{ProxyState, lock},
};
use crate::{
    frame::FrameReader,
    interceptors::Chain,
    peek::Peeker,
    session::{CallDenial, CallSink, Session},
};

/// Runs the proxy with the standard chain for `config` (see [`build_chain`]). `client_eof` is
/// sent when the client closes its input. Returns when the server's output ends (or the client
/// can no longer be written to: see [`ProxyOutcome::client_write_error`]).
pub async fn run<CI, CO, SI, SO, K>(
    client_in: CI,
    client_out: CO,
    server_in: SI,
    server_out: SO,
    config: ProxyConfig,
    sink: K,
    client_eof: Option<oneshot::Sender<()>>,
) -> anyhow::Result<ProxyOutcome>
where
    CI: AsyncRead + Unpin + Send,
    CO: AsyncWrite + Unpin + Send,
    SI: AsyncWrite + Unpin + Send,
    SO: AsyncRead + Unpin + Send,
    K: CallSink,
{
    let chain = build_chain(&config)?;
    run_with_chain(
        client_in, client_out, server_in, server_out, &config, chain, sink, client_eof,
    )
    .await
}

/// Runs the proxy with a caller-built chain. `client_eof` is sent when the client closes its
/// input (the server's stdin is closed then; the proxy still delivers the server's output).
#[expect(
    clippy::too_many_arguments,
    reason = "the four ends of the two pipes, each its own generic type, and the run's parts"
)]
pub async fn run_with_chain<CI, CO, SI, SO, K>(
    client_in: CI,
    client_out: CO,
    server_in: SI,
    server_out: SO,
    config: &ProxyConfig,
    chain: Chain,
    sink: K,
    client_eof: Option<oneshot::Sender<()>>,
) -> anyhow::Result<ProxyOutcome>
where
    CI: AsyncRead + Unpin + Send,
    CO: AsyncWrite + Unpin + Send,
    SI: AsyncWrite + Unpin + Send,
    SO: AsyncRead + Unpin + Send,
    K: CallSink,
{
    let mut sink = sink;
    let denials = sink.take_call_denials();
    let state = Mutex::new(ProxyState {
        session: Session::new(&config.server, &config.session),
        chain,
        sink,
        stats: ProxyOutcome::default(),
        max: config.max_message_bytes,
        failed: std::collections::HashSet::default(),
        observe: config.observe,
        frame_len: 0,
        relists: std::collections::HashSet::default(),
        relist_seq: 0,
        relist_since: None,
        relist_overdue: false,
        held: VecDeque::new(),
        hold_started: false,
        refuse_calls: None,
        to_server: Vec::new(),
        peeker: Peeker::default(),
        response_key: String::new(),
        audit: config.audit.clone(),
    });
    // Signalled when client frames start being held and when they are released.
    let held_changed = Notify::new();
    let (to_client, client_rx) = mpsc::channel::<Delivery>(256);
    let (to_server, server_rx) = mpsc::channel::<Delivery>(256);
    let timing = config.timing;
    let max = config.max_message_bytes;
    // Weak, so the client closing its side still closes the server's stdin.
    let server_answers = to_server.downgrade();

    let client_side = {
        let (to_client, to_server) = (to_client.clone(), to_server);
        let state = &state;
        let held_changed = &held_changed;
        async move {
            let mut reader = FrameReader::new(BufReader::with_capacity(64 * 1024, client_in), max);
            let mut outbox = Outbox::default();
            loop {
                let frame = match reader.next().await {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!("reading from the client: {e}");
                        break;
                    }
                };
                if timing {
                    outbox.read_at = Some(Instant::now());
                }
                let hold_started = {
                    let mut c = lock(state);
                    c.on_client_frame(frame, &mut outbox);
                    std::mem::take(&mut c.hold_started)
                };
                if hold_started {
                    held_changed.notify_waiters();
                }
                // Sent per frame: the forwarded line moves through the channel without a copy and
                // the writer coalesces what is queued into one write. (Gathering a burst of
                // buffered frames first measured slower: every line after the first was copied.)
                if !outbox.send(&to_client, &to_server).await {
                    break;
                }
            }
            outbox.send(&to_client, &to_server).await;
            // Held frames still need the server's stdin (which closes when this side ends).
            loop {
                let released = held_changed.notified();
                tokio::pin!(released);
                released.as_mut().enable();
                if lock(state).held.is_empty() {
                    break;
                }
                released.await;
            }
            if let Some(tx) = client_eof {
                let _ = tx.send(());
            }
        }
    };
    let (denials_done_tx, denials_done_rx) = oneshot::channel::<()>();
    let denial_side = deny_calls(
        &state,
        denials,
        to_client.clone(),
        server_answers.clone(),
        denials_done_rx,
    );
    let (watchdog_done_tx, watchdog_done_rx) = oneshot::channel::<()>();
    let watchdog = relist_watchdog(
        &state,
        &held_changed,
        to_client.clone(),
        server_answers.clone(),
        watchdog_done_rx,
    );
    let server_side = {
        let state = &state;
        let held_changed = &held_changed;
        async move {
            let mut reader = FrameReader::new(BufReader::with_capacity(64 * 1024, server_out), max);
            let mut outbox = Outbox::default();
            loop {
                let frame = match reader.next().await {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!("reading from the server: {e}");
                        break;
                    }
                };
                if timing {
                    outbox.read_at = Some(Instant::now());
                }
                let released = {
                    let mut c = lock(state);
                    let holding = !c.held.is_empty();
                    c.on_server_frame(frame, &mut outbox);
                    holding && c.held.is_empty()
                };
                if released {
                    held_changed.notify_waiters();
                }
                if !outbox.send_from_server(&to_client, &server_answers).await {
                    break;
                }
            }
            outbox.send_from_server(&to_client, &server_answers).await;
        }
    };
    let (server_done_tx, server_done_rx) = oneshot::channel::<()>();
    let client_side = async move {
        tokio::select! {
            () = client_side => {}
            _ = server_done_rx => {}
        }
    };
    let server_side = async move {
        server_side.await;
        let _ = server_done_tx.send(());
        let _ = denials_done_tx.send(());
        let _ = watchdog_done_tx.send(());
    };
    let client_writer = writer(client_out, client_rx, "client");
    let server_writer = writer(server_in, server_rx, "server");
    let ((), (), (), (), (cw, server_to_client), (sw, client_to_server)) = tokio::join!(
        client_side,
        server_side,
        denial_side,
        watchdog,
        client_writer,
        server_writer
    );
    let client_write_error = cw.err().map(|e| {
        tracing::warn!("writing to the client: {e}");
        e.to_string()
    });
    if let Err(e) = sw {
        tracing::debug!("writing to the server: {e}");
    }
    let mut state = state
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !state.held.is_empty() {
        // Never delivered: their calls are refused and their other requests end unanswered below,
        // so each still gets its record.
        tracing::warn!(
            "{} client message(s) held for mcp-guard's re-list were not delivered: the server closed its output",
            state.held.len()
        );
        state.release_held(
            &mut Outbox::default(),
            Some("mcp-guard: the server closed its output before answering mcp-guard's re-list of its tools".into()),
        );
    }
    for rec in state
        .session
        .drain("the server closed its output before answering")
    {
        state.sink.call(rec);
    }
    state.stats.client_write_error = client_write_error;
    state.stats.client_to_server = client_to_server;
    state.stats.server_to_client = server_to_client;
    Ok(state.stats)
}

/// Fails the in-flight calls named on `denials` until the server's output ends.
async fn deny_calls<K: CallSink>(
    state: &Mutex<ProxyState<K>>,
    denials: Option<mpsc::UnboundedReceiver<CallDenial>>,
    to_client: mpsc::Sender<Delivery>,
    to_server: mpsc::WeakSender<Delivery>,
    done: oneshot::Receiver<()>,
) {
    let Some(mut denials) = denials else { return };
    tokio::pin!(done);
    loop {
        tokio::select! {
            d = denials.recv() => match d {
                Some(d) => {
                    let mut outbox = Outbox::default();
                    lock(state).deny_call(&d, &mut outbox);
                    if !outbox.send_from_server(&to_client, &to_server).await {
                        return;
                    }
                }
                None => return,
            },
            _ = &mut done => return,
        }
    }
}
