//! The `/metrics` endpoint: HTTP/1.1 on a TCP or Unix listener the caller bound.
//!
//! Each connection runs in its own task with a deadline, and at most [`MAX_CONNECTIONS`] run at
//! once, so a slow or stuck client neither blocks other scrapes nor pins memory and fds forever.
//! With a token configured ([`Auth`]), a request without it gets 401 and nothing else.

use std::{convert::Infallible, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::{OwnedSemaphorePermit, Semaphore},
};

use super::{Metrics, auth::Auth, listen::Listener};

/// The Content-Type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Connections served at once; more are closed on accept (Prometheus retries next interval).
const MAX_CONNECTIONS: usize = 32;

/// A request's headers must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// A whole connection (keep-alive included) lasts at most this long.
const CONNECTION_DEADLINE: Duration = Duration::from_mins(1);

/// Serves `GET /metrics` (and `HEAD`) from `metrics` on `listener` until the task is dropped;
/// other paths get 404, other methods on `/metrics` 405, and every request without the token
/// `auth` requires 401. Accept errors (e.g. out of fds) are logged and retried after a short
/// pause rather than ending the endpoint.
pub async fn serve(listener: Listener, metrics: Arc<Metrics>, auth: Arc<Auth>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = match &listener {
            Listener::Tcp(l) => l.accept().await.map(|(s, peer)| {
                let slot = Arc::clone(&slots).try_acquire_owned().ok();
                (slot, peer.to_string(), Stream::Tcp(s))
            }),
            Listener::Unix(l) => l.accept().await.map(|(s, _)| {
                let slot = Arc::clone(&slots).try_acquire_owned().ok();
                let peer = s
                    .peer_cred()
                    .map_or_else(|_| "a Unix peer".into(), |c| format!("uid {}", c.uid()));
                (slot, peer, Stream::Unix(s))
            }),
        };
        let (slot, peer, stream) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("metrics: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = slot else {
            tracing::debug!("metrics: {MAX_CONNECTIONS} connections open, closing {peer}");
            continue;
        };
        match stream {
            Stream::Tcp(s) => connection(s, peer, slot, &metrics, &auth),
            Stream::Unix(s) => connection(s, peer, slot, &metrics, &auth),
        }
    }
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// Serves one connection in a task of its own, holding `slot` until it ends.
fn connection<S>(
    stream: S,
    peer: String,
    slot: OwnedSemaphorePermit,
    metrics: &Arc<Metrics>,
    auth: &Arc<Auth>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (metrics, auth) = (Arc::clone(metrics), Arc::clone(auth));
    tokio::spawn(async move {
        let _slot = slot;
        let service = service_fn(move |req| {
            let (metrics, auth) = (Arc::clone(&metrics), Arc::clone(&auth));
            async move { Ok::<_, Infallible>(respond(&req, &metrics, &auth)) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        match tokio::time::timeout(CONNECTION_DEADLINE, conn).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!("metrics: connection from {peer}: {e}"),
            Err(_) => tracing::debug!("metrics: connection from {peer} timed out"),
        }
    });
}

fn respond(req: &Request<Incoming>, metrics: &Metrics, auth: &Auth) -> Response<Full<Bytes>> {
    let plain = |status: StatusCode, text: &'static str| {
        let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    };
    if !auth.permits(req.headers()) {
        let mut response = plain(
            StatusCode::UNAUTHORIZED,
            "a bearer token is required (the agent's metrics_token_file)\n",
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"mcp-guard\""),
        );
        return response;
    }
    if req.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: metrics are at /metrics\n",
        );
    }
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => {
            let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only\n");
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
            return response;
        }
    };
    let body = metrics.render();
    let length = body.len();
    let mut response = Response::new(Full::new(if head {
        Bytes::new()
    } else {
        Bytes::from(body)
    }));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(CONTENT_TYPE),
    );
    headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from(length));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::auth::Token;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn read_all<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, request: &str) -> String {
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send request");
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut out))
            .await
            .expect("answered within 10 s")
            .expect("read response");
        out
    }

    async fn get(addr: std::net::SocketAddr, request: &str) -> String {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        read_all(stream, request).await
    }

    fn request(auth: Option<&str>) -> String {
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n")
    }

    #[tokio::test]
    async fn serves_metrics_404s_elsewhere_and_a_stuck_client_blocks_nobody() {
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        metrics.tool_call("srv", "echo", "allowed", None);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(serve(
            Listener::Tcp(listener),
            Arc::clone(&metrics),
            Arc::default(),
        ));

        // A client that connects and never sends a byte.
        let _stuck = tokio::net::TcpStream::connect(addr).await.expect("connect");

        let ok = get(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.to_ascii_lowercase()
                .contains(&format!("content-type: {CONTENT_TYPE}")),
            "{ok}"
        );
        assert!(
            ok.contains(
                r#"mcp_guard_tool_calls_total{decision="allowed",server="srv",tool="echo"} 1"#
            ),
            "{ok}"
        );

        let missing = get(
            addr,
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            missing.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{missing}"
        );

        let post = get(
            addr,
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");

        let garbage = get(addr, "\x16\x03\x01 not http\r\n\r\n").await;
        assert!(
            garbage.starts_with("HTTP/1.1 400") || garbage.is_empty(),
            "{garbage}"
        );
        server.abort();
    }

    #[tokio::test]
    async fn with_a_token_only_requests_bearing_it_are_answered() {
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        metrics.tool_call("srv", "echo", "allowed", None);
        let auth = Arc::new(Auth::default());
        let token = "0123456789abcdef0123";
        auth.set(Some((
            Token::parse(token.as_bytes()).expect("token"),
            "/t".into(),
        )));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(serve(Listener::Tcp(listener), metrics, auth));
        for wrong in [
            None,
            Some("Bearer nope"),
            Some("Basic MDEyMzQ1Njc4OWFiY2RlZjAxMjM="),
        ] {
            let got = get(addr, &request(wrong)).await;
            assert!(got.starts_with("HTTP/1.1 401"), "{wrong:?}: {got}");
            assert!(
                got.to_ascii_lowercase()
                    .contains("www-authenticate: bearer"),
                "{got}"
            );
            assert!(!got.contains("mcp_guard_"), "{got}");
        }
        let ok = get(addr, &request(Some(&format!("Bearer {token}")))).await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("mcp_guard_tool_calls_total"), "{ok}");
        server.abort();
    }

    #[tokio::test]
    async fn serves_on_a_unix_socket() {
        let dir = std::env::temp_dir().join(format!("mcp-guard-http-{}", std::process::id()));
        let path = dir.join("metrics.sock");
        let listener = Listener::bind(
            &crate::metrics::listen::MetricsAddr::Unix(path.clone()),
            None,
        )
        .await
        .expect("bind");
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        metrics.tool_call("srv", "echo", "allowed", None);
        let server = tokio::spawn(serve(listener, metrics, Arc::default()));
        let stream = tokio::net::UnixStream::connect(&path)
            .await
            .expect("connect");
        let ok = read_all(stream, &request(None)).await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("mcp_guard_tool_calls_total"), "{ok}");
        server.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
