//! A minimal HTTP/1.1 responder for `GET /metrics`.
//!
//! Why not an HTTP framework: there is one route, answered with one string, to a scraper on a
//! trusted network. hyper or axum would add dozens of crates to the ingester for that. What it
//! does:
//! - reads one request head, at most [`MAX_REQUEST_BYTES`] within [`REQUEST_TIMEOUT`] (a slow
//!   or oversized request gets its connection closed, with `431` when it is too large);
//! - answers `GET /metrics` (query string ignored; `HEAD` too, without a body) with `200` and
//!   the Prometheus text, `405` for other methods on `/metrics`, `404` for any other path,
//!   `400` for a request line it cannot read;
//! - always `Connection: close` with a `Content-Length`: one request per connection, no
//!   keep-alive, no chunked encoding, request bodies are never read (after the response,
//!   whatever the client still sends is discarded until it closes, so that the close does not
//!   reset the connection under the response);
//! - at most [`MAX_CONNECTIONS`] requests are served at once; a connection beyond that is
//!   closed at once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head read.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Time a client has to send its request head, and to take the response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests served concurrently.
pub const MAX_CONNECTIONS: usize = 32;

/// Serves `GET /metrics` on `listener` until `shutdown` completes; each scrape calls `render`
/// for the body (sent as `content_type`).
pub async fn serve_metrics<F>(
    listener: TcpListener,
    content_type: &'static str,
    render: F,
    shutdown: impl Future<Output = ()>,
) where
    F: Fn() -> String + Send + Sync + 'static,
{
    let render = Arc::new(render);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        tracing::warn!(%peer, "metrics request refused: {MAX_CONNECTIONS} already in progress");
                        continue;
                    };
                    let render = render.clone();
                    tasks.spawn(async move {
                        let _permit = permit;
                        let _ = tokio::time::timeout(
                            REQUEST_TIMEOUT,
                            respond(stream, content_type, &*render),
                        )
                        .await;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    tasks.shutdown().await;
}

/// Reads one request head and writes the response.
async fn respond(
    mut stream: TcpStream,
    content_type: &str,
    render: &(dyn Fn() -> String + Send + Sync),
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let complete = loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break true;
        }
        if head.len() >= MAX_REQUEST_BYTES {
            break false;
        }
        let want = buf.len().min(MAX_REQUEST_BYTES - head.len());
        let n = stream.read(&mut buf[..want]).await?;
        if n == 0 {
            // Closed before the end of the head: answer what we can read of the request line.
            break head.contains(&b'\n');
        }
        head.extend_from_slice(&buf[..n]);
    };
    let response = if complete {
        route(&head, content_type, render)
    } else if head.len() >= MAX_REQUEST_BYTES {
        plain(
            431,
            "Request Header Fields Too Large",
            "request head too large\n",
        )
    } else {
        return Ok(());
    };
    stream.write_all(&response).await?;
    stream.shutdown().await?;
    // Lingering close: closing with unread bytes makes the kernel send a reset, which can
    // destroy the response before the client read it. Read (and discard) until the client
    // closes, bounded in bytes here and in time by the caller.
    let mut drained = 0;
    while drained < LINGER_BYTES {
        match stream.read(&mut buf).await? {
            0 => break,
            n => drained += n,
        }
    }
    Ok(())
}

/// Most bytes read and discarded after the response, waiting for the client to close.
const LINGER_BYTES: usize = 64 * 1024;

fn route(head: &[u8], content_type: &str, render: &(dyn Fn() -> String + Send + Sync)) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return plain(400, "Bad Request", "bad request line\n");
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return plain(400, "Bad Request", "bad request line\n");
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return plain(404, "Not Found", "not found: try /metrics\n");
    }
    match method {
        "GET" => response(200, "OK", content_type, render().as_bytes(), &[]),
        "HEAD" => {
            let mut r = response(200, "OK", content_type, render().as_bytes(), &[]);
            let end = r
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(r.len(), |i| i + 4);
            r.truncate(end);
            r
        }
        _ => response(
            405,
            "Method Not Allowed",
            "text/plain; charset=utf-8",
            b"only GET /metrics\n",
            &[("Allow", "GET, HEAD")],
        ),
    }
}

fn plain(status: u16, reason: &str, body: &str) -> Vec<u8> {
    response(
        status,
        reason,
        "text/plain; charset=utf-8",
        body.as_bytes(),
        &[],
    )
}

fn response(
    status: u16,
    reason: &str,
    content_type: &str,
    body: &[u8],
    extra: &[(&str, &str)],
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(req: &str) -> String {
        String::from_utf8(route(req.as_bytes(), "text/x", &|| "body\n".to_string())).unwrap()
    }

    #[test]
    fn routes_get_metrics_and_refuses_the_rest() {
        let ok = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Type: text/x\r\n"), "{ok}");
        assert!(ok.contains("Content-Length: 5\r\n"), "{ok}");
        assert!(ok.contains("Connection: close\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nbody\n"), "{ok}");
        assert!(get("GET /metrics?x=1 HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 200 "));
        let head = get("HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(
            head.starts_with("HTTP/1.1 200 ") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        assert!(head.contains("Content-Length: 5\r\n"), "{head}");
        assert!(get("GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
        assert!(get("GET /metricsx HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
        let post = get("POST /metrics HTTP/1.1\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405 ") && post.contains("Allow: GET, HEAD\r\n"));
        assert!(get("garbage\r\n\r\n").starts_with("HTTP/1.1 400 "));
        assert!(get("GET /metrics SPDY/3\r\n\r\n").starts_with("HTTP/1.1 400 "));
    }

    #[tokio::test]
    async fn an_oversized_request_head_gets_431_and_a_closed_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_metrics(
            listener,
            "text/x",
            String::new,
            std::future::pending(),
        ));
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut req = b"GET /metrics HTTP/1.1\r\n".to_vec();
        req.extend(std::iter::repeat_n(b'x', MAX_REQUEST_BYTES));
        s.write_all(&req).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(REQUEST_TIMEOUT * 2, s.read_to_end(&mut out))
            .await
            .expect("closed")
            .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
    }
}
