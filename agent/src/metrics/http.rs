//! The `/metrics` endpoint: HTTP/1.1 on a TCP listener the caller bound.
//!
//! Each connection runs in its own task with a deadline, and at most [`MAX_CONNECTIONS`] run at
//! once, so a slow or stuck client neither blocks other scrapes nor pins memory and fds forever.

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
use tokio::{net::TcpListener, sync::Semaphore};

use super::Metrics;

/// The Content-Type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Connections served at once; more are closed on accept (Prometheus retries next interval).
const MAX_CONNECTIONS: usize = 32;

/// A request's headers must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// A whole connection (keep-alive included) lasts at most this long.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(60);

/// Serves `GET /metrics` (and `HEAD`) from `metrics` on `listener` until the task is dropped;
/// other paths get 404, other methods on `/metrics` 405. Accept errors (e.g. out of fds) are
/// logged and retried after a short pause rather than ending the endpoint.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("metrics: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!("metrics: {MAX_CONNECTIONS} connections open, closing {peer}");
            continue;
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req| {
                let metrics = Arc::clone(&metrics);
                async move { Ok::<_, Infallible>(respond(&req, &metrics)) }
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
}

fn respond(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let plain = |status: StatusCode, text: &'static str| {
        let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    };
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, request: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
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

    #[tokio::test]
    async fn serves_metrics_404s_elsewhere_and_a_stuck_client_blocks_nobody() {
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        metrics.tool_call("srv", "echo", "allowed", None);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(serve(listener, Arc::clone(&metrics)));

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
}
