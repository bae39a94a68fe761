//! The connections of `secret serve`: the accept loop, and what bounds the cost of a
//! client that opens sockets and sends nothing (or half a request).
//!
//! - **A cap.** At most [`ConnectionLimits::max_connections`] are open at once (and
//!   never more than the process's file-descriptor limit allows, less a reserve for the
//!   vault and outbound calls). A connection accepted over the cap closes the one that
//!   has been idle longest, so a newcomer — a health check, a deploy script — is served
//!   while thousands of idle sockets wait; only when every open connection has a request
//!   in flight is the newcomer itself closed.
//! - **A header-read timeout.** A request head must arrive whole within
//!   [`ConnectionLimits::header_read_timeout`] (hyper's own timer).
//! - **An idle timeout.** A connection with no request in flight for
//!   [`ConnectionLimits::idle_timeout`] is closed: a fresh socket that sends nothing, a
//!   keep-alive connection left open, and one that sent part of a head alike.
//! - **A request timeout.** A request, its body included, is answered within
//!   [`ConnectionLimits::request_timeout`] or gets 408 and the connection closes, so a
//!   body trickled a byte at a time cannot keep a connection busy (and safe from
//!   eviction) for long.
//! - **HTTP/1.1 only**: one request at a time per connection, which is what the cap and
//!   the idle tracking count.
//!
//! hyper answers a request it cannot parse (a URI over 64 KiB, headers over its buffer,
//! a malformed request line) itself, with an empty body; [`JsonErrors`] rewrites those
//! answers into the API's JSON error shape on their way to the socket.
//!
//! Nothing here knows about routes or the vault: it serves any axum `Router`.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tower_service::Service;

/// How many connections `serve` keeps and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections at most (see the module doc for what happens over it).
    pub max_connections: usize,
    /// A request head must be read whole within this.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight this long is closed.
    pub idle_timeout: Duration,
    /// A request (its body included) must be answered within this, or it gets 408 and
    /// the connection closes: a body sent a byte at a time cannot hold a connection.
    pub request_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// File descriptors kept back from the cap: the vault, its WAL, the scheduler's
/// outbound connections, the listener.
const FD_RESERVE: u64 = 256;

impl ConnectionLimits {
    /// The cap in force when the process may have `fd_limit` descriptors open.
    pub fn cap(&self, fd_limit: Option<u64>) -> usize {
        let by_fds = fd_limit
            .map(|n| usize::try_from(n.saturating_sub(FD_RESERVE).max(16)).unwrap_or(usize::MAX))
            .unwrap_or(usize::MAX);
        self.max_connections.clamp(1, by_fds.max(1))
    }
}

/// Raises the soft limit on open files to the hard limit (a server holding thousands of
/// sockets needs more than the usual 1,024) and returns the limit now in force.
#[cfg(unix)]
pub fn raise_fd_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass, which lives for the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    // `rlim_t` is u64 here, narrower on some platforms.
    #[allow(clippy::useless_conversion)]
    Some(u64::from(limit.rlim_cur))
}

#[cfg(not(unix))]
pub fn raise_fd_limit() -> Option<u64> {
    None
}

/// Open connections: which are idle, and since when.
#[derive(Default)]
struct Registry {
    next: u64,
    open: HashMap<u64, Slot>,
    /// Idle connections by the time they became idle: the first is the oldest.
    idle: BTreeSet<(Instant, u64)>,
}

struct Slot {
    in_flight: usize,
    idle_since: Option<Instant>,
    /// Asked to close: never idle again.
    closing: bool,
    close: Arc<Notify>,
}

/// The registry, shared by the accept loop and every connection task.
#[derive(Clone, Default)]
struct Connections(Arc<Mutex<Registry>>);

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A std Mutex: held for a map update, never across an await.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn len(&self) -> usize {
        self.lock().open.len()
    }

    /// A new connection, idle from `now`.
    fn register(&self, now: Instant) -> (u64, Arc<Notify>) {
        let mut r = self.lock();
        let id = r.next;
        r.next += 1;
        let close = Arc::new(Notify::new());
        r.open.insert(
            id,
            Slot {
                in_flight: 0,
                idle_since: Some(now),
                closing: false,
                close: close.clone(),
            },
        );
        r.idle.insert((now, id));
        (id, close)
    }

    fn remove(&self, id: u64) {
        let mut r = self.lock();
        if let Some(slot) = r.open.remove(&id) {
            if let Some(since) = slot.idle_since {
                r.idle.remove(&(since, id));
            }
        }
    }

    /// A request started on connection `id`.
    fn begin(&self, id: u64) {
        let mut r = self.lock();
        let Some(slot) = r.open.get_mut(&id) else {
            return;
        };
        slot.in_flight += 1;
        if let Some(since) = slot.idle_since.take() {
            r.idle.remove(&(since, id));
        }
    }

    /// A request ended on connection `id` at `now`.
    fn end(&self, id: u64, now: Instant) {
        let mut r = self.lock();
        let Some(slot) = r.open.get_mut(&id) else {
            return;
        };
        slot.in_flight = slot.in_flight.saturating_sub(1);
        if slot.in_flight == 0 && slot.idle_since.is_none() && !slot.closing {
            slot.idle_since = Some(now);
            r.idle.insert((now, id));
        }
    }

    /// Since when `id` has been idle, if it is.
    fn idle_since(&self, id: u64) -> Option<Instant> {
        self.lock().open.get(&id).and_then(|s| s.idle_since)
    }

    /// Asks the connection idle longest (other than `except`) to close; false if
    /// every other connection has a request in flight.
    fn close_oldest_idle(&self, except: u64) -> bool {
        let mut r = self.lock();
        let oldest = r.idle.iter().find(|(_, id)| *id != except).copied();
        let Some((since, id)) = oldest else {
            return false;
        };
        r.idle.remove(&(since, id));
        if let Some(slot) = r.open.get_mut(&id) {
            // No longer a candidate: it is on its way out.
            slot.idle_since = None;
            slot.closing = true;
            slot.close.notify_one();
        }
        true
    }
}

/// Marks a request in flight until dropped (also when the request is cancelled).
struct InFlight {
    connections: Connections,
    id: u64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.connections.end(self.id, Instant::now());
    }
}

/// Serves `app` on `listener` until `shutdown` turns true, then lets requests in flight
/// finish (connections are asked to close after their current response).
pub async fn run(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    fd_limit: Option<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let cap = limits.cap(fd_limit);
    let connections = Connections::default();
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
            // Reap finished connection tasks so the set does not grow.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors or memory: close the longest-idle connection and
                // try again shortly, rather than spinning or stopping.
                eprintln!("secret serve: accept failed: {e}");
                connections.close_oldest_idle(u64::MAX);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (id, close) = connections.register(Instant::now());
        if connections.len() > cap && !connections.close_oldest_idle(id) {
            // Every other connection is busy: this one is the one to go.
            connections.remove(id);
            drop(stream);
            continue;
        }
        tasks.spawn(serve_one(
            stream,
            peer,
            app.clone(),
            limits,
            connections.clone(),
            id,
            close,
            closing_rx.clone(),
        ));
    }
    drop(listener);
    let _ = closing_tx.send(true);
    while tasks.join_next().await.is_some() {}
}

#[allow(clippy::too_many_arguments)]
async fn serve_one(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ConnectionLimits,
    connections: Connections,
    id: u64,
    close: Arc<Notify>,
    mut closing: watch::Receiver<bool>,
) {
    let in_service = connections.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        in_service.begin(id);
        let guard = InFlight {
            connections: in_service.clone(),
            id,
        };
        let mut app = app.clone();
        let request_timeout = limits.request_timeout;
        async move {
            let _guard = guard;
            match tokio::time::timeout(request_timeout, app.call(request)).await {
                Ok(answer) => answer,
                Err(_) => Ok(request_timed_out(request_timeout)),
            }
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(JsonErrors::new(stream)), service);
    let mut conn = std::pin::pin!(conn);
    let mut shutting_down = false;
    loop {
        let deadline = match connections.idle_since(id) {
            Some(since) => since + limits.idle_timeout,
            // Busy: look again after a full idle period.
            None => Instant::now() + limits.idle_timeout,
        };
        tokio::select! {
            _ = conn.as_mut() => break,
            // Evicted (idle, over the cap): drop it; it has no request in flight.
            _ = close.notified() => break,
            _ = tokio::time::sleep_until(deadline) => {
                if connections
                    .idle_since(id)
                    .is_some_and(|since| since + limits.idle_timeout <= Instant::now())
                {
                    break;
                }
            }
            changed = closing.changed(), if !shutting_down => {
                shutting_down = true;
                if changed.is_err() || *closing.borrow() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
    connections.remove(id);
}

/// 408 in the API's JSON error shape, closing the connection.
fn request_timed_out(after: Duration) -> axum::response::Response {
    let body = serde_json::json!({ "error": {
        "code": "request_timeout",
        "message": format!("the request was not complete within {} s", after.as_secs()),
    }})
    .to_string();
    let mut response = axum::response::Response::new(axum::body::Body::from(body));
    *response.status_mut() = axum::http::StatusCode::REQUEST_TIMEOUT;
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

/// Wraps a connection's socket so that hyper's own answers to unparseable requests
/// (a status line and headers with `content-length: 0`) go out with the JSON error body
/// the API uses everywhere else. Every response our handlers produce for an error has
/// a JSON body, so a bodiless 400, 414 or 431 head can only be hyper's.
struct JsonErrors<S> {
    inner: S,
    /// A rewritten answer still being written, and how much of it is written.
    pending: Vec<u8>,
    written: usize,
}

impl<S> JsonErrors<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            written: 0,
        }
    }
}

/// The JSON answer for one of hyper's bodiless error heads, or `None` for anything else.
fn rewrite_bare_error(head: &[u8]) -> Option<Vec<u8>> {
    let status = head
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| head.strip_prefix(b"HTTP/1.0 "))?
        .get(..3)?;
    let (code, message) = match status {
        b"400" => ("bad_request", "the request could not be parsed as HTTP/1.1"),
        b"414" => (
            "uri_too_long",
            "the request URI is too long; names are at most 255 bytes",
        ),
        b"431" => ("headers_too_large", "the request headers are too large"),
        _ => return None,
    };
    let text = std::str::from_utf8(head).ok()?;
    if !text.ends_with("\r\n\r\n")
        || !text
            .to_ascii_lowercase()
            .contains("\r\ncontent-length: 0\r\n")
    {
        return None;
    }
    let body = serde_json::json!({ "error": { "code": code, "message": message } }).to_string();
    let status_line = text.split("\r\n").next()?;
    let mut out = format!(
        "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for line in text.split("\r\n").skip(1) {
        let lower = line.to_ascii_lowercase();
        if line.is_empty()
            || lower.starts_with("content-length:")
            || lower.starts_with("connection:")
        {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    Some(out.into_bytes())
}

impl<S: AsyncWrite + Unpin> JsonErrors<S> {
    /// Writes what is left of a rewritten answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.written < self.pending.len() {
            let n = match Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonErrors<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonErrors<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        match this.poll_pending(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        if let Some(answer) = rewrite_bare_error(buf) {
            this.pending = answer;
            this.written = 0;
            if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match this.poll_pending(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match this.poll_pending(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_shutdown(cx),
            other => other,
        }
    }

    // Not vectored: hyper then writes each head as one contiguous buffer, which is
    // what `rewrite_bare_error` looks at.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_the_vault_under_the_descriptor_limit() {
        let limits = ConnectionLimits::default();
        assert_eq!(limits.cap(None), 10_000);
        assert_eq!(limits.cap(Some(1_024)), 1_024 - 256);
        assert_eq!(limits.cap(Some(1_048_576)), 10_000);
        assert_eq!(limits.cap(Some(10)), 16);
    }

    #[test]
    fn the_oldest_idle_connection_is_the_one_closed() {
        let c = Connections::default();
        let t0 = Instant::now();
        let (a, close_a) = c.register(t0);
        let (b, _) = c.register(t0 + Duration::from_secs(1));
        let (n, _) = c.register(t0 + Duration::from_secs(2));
        // `a` is busy: `b` is the oldest idle one.
        c.begin(a);
        assert!(c.close_oldest_idle(n));
        assert_eq!(c.idle_since(b), None, "b is on its way out");
        // `a` finishes: it is idle from now, newer than `n`.
        c.end(a, t0 + Duration::from_secs(3));
        assert!(c.close_oldest_idle(a), "n is next");
        assert_eq!(c.idle_since(n), None);
        // Only `a` is left idle, and it is the one asking.
        assert!(!c.close_oldest_idle(a));
        drop(close_a);
        for id in [a, b, n] {
            c.remove(id);
        }
        assert_eq!(c.len(), 0);
        assert!(c.lock().idle.is_empty());
    }

    #[test]
    fn hyper_s_bodiless_errors_get_the_json_shape() {
        let head = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 00:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(rewrite_bare_error(head).unwrap()).unwrap();
        let (headers, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(
            headers.starts_with("HTTP/1.1 414 URI Too Long\r\n"),
            "{headers}"
        );
        assert!(headers.contains("content-type: application/json"));
        assert!(headers.contains(&format!("content-length: {}", body.len())));
        assert!(headers.contains("date: Tue"));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "uri_too_long");
        // Our own answers (with a body) and successes pass through untouched.
        assert!(
            rewrite_bare_error(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").is_none()
        );
        assert!(rewrite_bare_error(
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 57\r\n\r\n"
        )
        .is_none());
        assert!(rewrite_bare_error(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
    }
}
