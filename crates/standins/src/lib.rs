//! `secret-standins`: local stand-ins for the three provider APIs the rotation engine talks to: Railway
//! (GraphQL), OpenAI (admin API: project service accounts) and LaunchDarkly (REST v2: SDK
//! and mobile key resets).
//!
//! They speak the contracts written down in `PROVIDERS.md` and checked against the real
//! specs: the Railway stand-in validates every document against Railway's introspection
//! schema (`schemas/railway-schema.json`), the OpenAI and LaunchDarkly stand-ins answer with
//! the response and error shapes of their OpenAPI documents. They refuse what the real
//! service would refuse (wrong headers, unknown fields, bad tokens), and a few things it
//! might accept but our client must never send (each such place says "stricter on purpose").
//!
//! # Layout
//!
//! ```text
//!  lib.rs (StandIn<S>: loopback server, state, faults, journal)
//!    ├─ railway.rs (+ railway/schema.rs: every GraphQL document checked against
//!    │              schemas/railway-schema.json, Railway's introspection schema)
//!    ├─ openai.rs (admin API: project service accounts and their keys)
//!    └─ launchdarkly.rs (REST v2: SDK and mobile key resets)
//! ```
//!
//! This crate is a dev-dependency of the workspace's tests and a dependency of
//! `secret-demo` only: the shipped `secret` binary never links it.
//!
//! One implementation serves the rotation engine's tests (including crash tests that kill a
//! `secret` child process mid-rotation while the stand-ins keep running in the test
//! process) and the demo. Every stand-in:
//!
//! - binds a loopback address only (a non-loopback address is refused) and never opens an
//!   outbound connection: nothing here reaches the network;
//! - records every request it receives, refused ones included, in a [`Journal`];
//! - names each endpoint by an operation name, so a test can queue a [`Fault`] for the next
//!   call of that operation through [`Faults`] (rate limits, 5xx, slow answers, lost
//!   responses, requests that hang, Cloudflare's HTML 403);
//! - shuts down when dropped.
//!
//! State sits behind `std::sync::Mutex`, not tokio's: every critical section is a few
//! synchronous map updates and no lock is ever held across an `.await`, which is exactly
//! the case the std mutex is cheaper and simpler for.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod launchdarkly;
pub mod openai;
pub mod railway;

pub use launchdarkly::{EnvironmentInfo, LaunchDarklyConfig, LaunchDarklyStandIn};
pub use openai::{OpenAiConfig, OpenAiStandIn, ServiceAccountInfo};
pub use railway::{
    DeployOutcome, DeploymentInfo, DeploymentStatus, ProjectToken, RailwayConfig, RailwayStandIn,
    ServiceRef,
};

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::connect_info::Connected;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Largest request body a stand-in reads.
const MAX_BODY: usize = 1024 * 1024;

/// Something to go wrong with the next call of one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status, these headers and this body instead of acting. An empty
    /// body means "the service's usual error body for this status".
    Status {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Wait, then act normally.
    Delay(Duration),
    /// Act normally, then drop the connection before the answer's first byte: the client
    /// gets a transport error and cannot learn the result.
    LoseResponse,
    /// Hold the request open without acting until the stand-in shuts down.
    Hang,
    /// Cloudflare's "Access denied" HTML page with status 403 (what throttled callers of
    /// Railway have been seen to receive instead of JSON).
    Html403,
    /// Cut the connection without acting and without answering: what a refused or reset
    /// connection looks like to the client (a transport error, nothing done).
    Refuse,
    /// Answer 200 with a JSON content type and a body that is not JSON (a truncated
    /// document), without acting.
    MalformedJson,
}

impl Fault {
    /// `status` with the service's usual error body for it.
    pub fn status(code: u16) -> Self {
        Fault::Status {
            status: code,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    /// 429 with `Retry-After` in seconds. LaunchDarkly adds `X-Ratelimit-Reset` (epoch
    /// milliseconds) and `X-Ratelimit-Route-Remaining: 0` when it answers with it.
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Fault::Status {
            status: 429,
            headers: vec![("Retry-After".to_owned(), retry_after_secs.to_string())],
            body: String::new(),
        }
    }
}

/// Faults queued per operation name, applied one per call in the order injected.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    queues: Arc<Mutex<HashMap<String, VecDeque<Fault>>>>,
}

impl Faults {
    /// Queues `fault` for the next call of `operation` not already claimed by an earlier
    /// fault.
    pub fn inject(&self, operation: &str, fault: Fault) {
        lock(&self.queues)
            .entry(operation.to_owned())
            .or_default()
            .push_back(fault);
    }

    /// Drops every queued fault.
    pub fn clear(&self) {
        lock(&self.queues).clear();
    }

    /// How many faults are still queued for `operation`.
    pub fn pending(&self, operation: &str) -> usize {
        lock(&self.queues).get(operation).map_or(0, VecDeque::len)
    }

    /// Takes the next fault for the first of `operations` that has one.
    pub(crate) fn take_first(&self, operations: &[String]) -> Option<Fault> {
        let mut queues = lock(&self.queues);
        operations
            .iter()
            .find_map(|op| queues.get_mut(op).and_then(VecDeque::pop_front))
    }
}

/// One request as a stand-in received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Operation name; for a GraphQL document selecting several root fields, their names
    /// joined by commas. `unknown` for a path the stand-in does not serve.
    pub operation: String,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Header names in lower case, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub at: SystemTime,
}

impl Received {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn is(&self, operation: &str) -> bool {
        self.operation.split(',').any(|op| op == operation)
    }
}

/// Every request a stand-in received, in arrival order.
#[derive(Debug, Clone, Default)]
pub struct Journal {
    entries: Arc<Mutex<Vec<Received>>>,
}

impl Journal {
    pub fn received(&self) -> Vec<Received> {
        lock(&self.entries).clone()
    }

    /// Requests for `operation` (a multi-field GraphQL document counts for each field).
    pub fn count(&self, operation: &str) -> usize {
        lock(&self.entries)
            .iter()
            .filter(|r| r.is(operation))
            .count()
    }

    pub fn clear(&self) {
        lock(&self.entries).clear();
    }

    fn record(&self, received: Received) {
        lock(&self.entries).push(received);
    }
}

/// Errors of the stand-ins' seeding accessors.
#[derive(Debug, thiserror::Error)]
pub enum StandInError {
    #[error("stand-in: unknown {kind} {id}")]
    Unknown { kind: &'static str, id: String },
}

/// Where [`StandIns::start_all`] binds each stand-in.
#[derive(Debug, Clone, Copy)]
pub struct StandInAddrs {
    pub railway: SocketAddr,
    pub openai: SocketAddr,
    pub launchdarkly: SocketAddr,
}

impl StandInAddrs {
    /// `127.0.0.1:0` for all three: the OS picks free ports.
    pub fn ephemeral() -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        StandInAddrs {
            railway: any,
            openai: any,
            launchdarkly: any,
        }
    }
}

/// All three stand-ins, as the demo runs them.
pub struct StandIns {
    pub railway: RailwayStandIn,
    pub openai: OpenAiStandIn,
    pub launchdarkly: LaunchDarklyStandIn,
}

impl StandIns {
    pub async fn start_all(
        addrs: StandInAddrs,
        railway: RailwayConfig,
        openai: OpenAiConfig,
        launchdarkly: LaunchDarklyConfig,
    ) -> io::Result<Self> {
        Ok(StandIns {
            railway: RailwayStandIn::start(addrs.railway, railway).await?,
            openai: OpenAiStandIn::start(addrs.openai, openai).await?,
            launchdarkly: LaunchDarklyStandIn::start(addrs.launchdarkly, launchdarkly).await?,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Server plumbing shared by the three stand-ins.

/// A running stand-in whose API keeps its state in `S`. Each provider's module adds
/// `start` and its own accessors for its `S`; dropping it shuts the server down.
pub struct StandIn<S> {
    inner: Arc<Shared<S>>,
    server: Server,
}

/// What a stand-in's request handler shares with its owner.
struct Shared<S> {
    state: Mutex<S>,
    faults: Faults,
    journal: Journal,
}

/// The axum state of a stand-in's handler: what it shares, and the shutdown signal
/// [`Fault::Hang`] waits for.
struct App<S> {
    inner: Arc<Shared<S>>,
    shutdown: watch::Receiver<bool>,
}

impl<S> Clone for App<S> {
    fn clone(&self) -> Self {
        App {
            inner: Arc::clone(&self.inner),
            shutdown: self.shutdown.clone(),
        }
    }
}

impl<S: Send + 'static> StandIn<S> {
    /// Binds `addr` (loopback; port 0 picks one) and serves every request with `handle`
    /// on the current runtime.
    async fn serve<H, T>(addr: SocketAddr, state: S, handle: H) -> io::Result<Self>
    where
        H: axum::handler::Handler<T, App<S>>,
        T: 'static,
    {
        let inner = Arc::new(Shared {
            state: Mutex::new(state),
            faults: Faults::default(),
            journal: Journal::default(),
        });
        let app_inner = Arc::clone(&inner);
        let server = Server::start(addr, move |shutdown| {
            Router::new().fallback(handle).with_state(App {
                inner: app_inner,
                shutdown,
            })
        })
        .await?;
        Ok(StandIn { inner, server })
    }
}

impl<S> StandIn<S> {
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    pub fn faults(&self) -> Faults {
        self.inner.faults.clone()
    }

    pub fn journal(&self) -> Journal {
        self.inner.journal.clone()
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.journal.received()
    }

    /// Requests received for `operation` (see [`Journal::count`]).
    pub fn journal_count(&self, operation: &str) -> usize {
        self.inner.journal.count(operation)
    }
}

/// A running axum server on the current tokio runtime. Dropping it stops accepting,
/// releases hanging requests and lets open connections finish.
pub(crate) struct Server {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Server {
    /// Binds `addr` (loopback only) and serves `router`, built with the shutdown signal
    /// that [`Fault::Hang`] waits for.
    pub(crate) async fn start(
        addr: SocketAddr,
        router: impl FnOnce(watch::Receiver<bool>) -> Router,
    ) -> io::Result<Self> {
        if !addr.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("stand-ins bind loopback addresses only, not {addr}"),
            ));
        }
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (shutdown, rx) = watch::channel(false);
        let app = router(rx.clone()).into_make_service_with_connect_info::<ConnHandle>();
        let mut signal = rx;
        let task = tokio::spawn(async move {
            let serve = axum::serve(KillableListener { inner: listener }, app)
                .with_graceful_shutdown(async move { wait_for_shutdown(&mut signal).await });
            // axum retries failed accepts itself; the serve future only ends at shutdown.
            let _ = serve.await;
        });
        Ok(Server {
            addr,
            shutdown,
            task,
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        self.task.abort();
    }
}

async fn wait_for_shutdown(rx: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which is a shutdown too.
    let _ = rx.wait_for(|stop| *stop).await;
}

/// A TCP listener whose connections can be cut from inside a handler.
struct KillableListener {
    inner: TcpListener,
}

impl Listener for KillableListener {
    type Io = KillableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let io = KillableStream {
                        inner: stream,
                        killed: Arc::new(AtomicBool::new(false)),
                    };
                    return (io, addr);
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A TCP stream that fails every write once killed, so hyper drops the connection
/// without sending the response it was about to write.
struct KillableStream {
    inner: TcpStream,
    killed: Arc<AtomicBool>,
}

impl KillableStream {
    fn killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }
}

fn aborted() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "stand-in dropped the connection",
    )
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.killed() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.killed() {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.killed() {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.killed() {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Handed to each request: cuts the connection the request arrived on.
#[derive(Debug, Clone)]
pub(crate) struct ConnHandle {
    killed: Arc<AtomicBool>,
}

impl ConnHandle {
    fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
    }
}

impl Connected<IncomingStream<'_, KillableListener>> for ConnHandle {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Self {
        ConnHandle {
            killed: Arc::clone(&stream.io().killed),
        }
    }
}

/// A request read in full.
pub(crate) struct Incoming {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    conn: Option<ConnHandle>,
}

impl Incoming {
    pub(crate) async fn read(request: axum::extract::Request) -> Self {
        let (parts, body) = request.into_parts();
        let conn = parts
            .extensions
            .get::<ConnectInfo<ConnHandle>>()
            .map(|info| info.0.clone());
        // A body that cannot be read (client gone, too large) is treated as empty; the
        // request then fails the service's own checks.
        let body = axum::body::to_bytes(body, MAX_BODY)
            .await
            .unwrap_or_default();
        Incoming {
            method: parts.method,
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts.headers,
            body,
            conn,
        }
    }

    /// The first value of header `name`, if it is valid text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The decoded value of query parameter `name`.
    pub(crate) fn query_param(&self, name: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key) == name).then(|| percent_decode(value))
        })
    }

    /// Records the request in `journal` under `operation`.
    pub(crate) fn record(&self, journal: &Journal, operation: &str) {
        journal.record(Received {
            operation: operation.to_owned(),
            method: self.method.as_str().to_owned(),
            path: self.path.clone(),
            query: self.query.clone(),
            headers: self
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: String::from_utf8_lossy(&self.body).into_owned(),
            at: SystemTime::now(),
        });
    }

    fn lose_connection(&self) {
        if let Some(conn) = &self.conn {
            conn.kill();
        }
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a fault leaves the handler to do.
pub(crate) enum Plan {
    /// Answer this instead of acting.
    Respond(Response),
    /// Act normally; if `lose`, cut the connection instead of answering.
    Proceed { lose: bool },
}

/// How a service renders a `Fault::Status` (its own error body when the fault's is empty).
pub(crate) type StatusRenderer<'a> =
    &'a (dyn Fn(u16, &[(String, String)], &str) -> Response + Sync);

/// Applies the next fault queued for any of `operations`, waiting as the fault says.
pub(crate) async fn plan(
    faults: &Faults,
    operations: &[String],
    incoming: &Incoming,
    shutdown: &watch::Receiver<bool>,
    host: &str,
    render_status: StatusRenderer<'_>,
) -> Plan {
    match faults.take_first(operations) {
        None => Plan::Proceed { lose: false },
        Some(Fault::Status {
            status,
            headers,
            body,
        }) => Plan::Respond(render_status(status, &headers, &body)),
        Some(Fault::Delay(wait)) => {
            tokio::time::sleep(wait).await;
            Plan::Proceed { lose: false }
        }
        Some(Fault::LoseResponse) => Plan::Proceed { lose: true },
        Some(Fault::Hang) => {
            let mut shutdown = shutdown.clone();
            wait_for_shutdown(&mut shutdown).await;
            incoming.lose_connection();
            Plan::Respond(text_response(
                503,
                "text/plain",
                &[],
                "stand-in shutting down",
            ))
        }
        Some(Fault::Html403) => Plan::Respond(cloudflare_403(host)),
        Some(Fault::Refuse) => {
            incoming.lose_connection();
            Plan::Respond(text_response(503, "text/plain", &[], "connection refused"))
        }
        Some(Fault::MalformedJson) => Plan::Respond(text_response(
            200,
            "application/json",
            &[],
            "{\"data\": {\"truncated",
        )),
    }
}

/// Delivers `response`, or cuts the connection if the fault plan said to lose it.
pub(crate) fn deliver(incoming: &Incoming, lose: bool, response: Response) -> Response {
    if lose {
        incoming.lose_connection();
    }
    response
}

/// Cloudflare's "Access denied" page (error 1020), as a throttled or blocked caller sees it.
pub(crate) fn cloudflare_403(host: &str) -> Response {
    let ray = hex_id::<8>();
    let body = format!(
        "<!DOCTYPE html>\n\
<!--[if lt IE 7]> <html class=\"no-js ie6 oldie\" lang=\"en-US\"> <![endif]-->\n\
<html class=\"no-js\" lang=\"en-US\">\n\
<head>\n\
<title>Access denied | {host} used Cloudflare to restrict access</title>\n\
<meta charset=\"UTF-8\" />\n\
<meta http-equiv=\"Content-Type\" content=\"text/html; charset=UTF-8\" />\n\
<meta name=\"robots\" content=\"noindex, nofollow\" />\n\
</head>\n\
<body>\n\
<div id=\"cf-wrapper\">\n\
<div id=\"cf-error-details\" class=\"cf-error-details-wrapper\">\n\
<div class=\"cf-wrapper cf-header cf-error-overview\">\n\
<h1><span class=\"cf-error-type\" data-translate=\"error\">Error</span>\n\
<span class=\"cf-error-code\">1020</span></h1>\n\
<h2 class=\"cf-subheadline\" data-translate=\"error_desc\">Access denied</h2>\n\
</div>\n\
<section><h2>What happened?</h2>\n\
<p>This website is using a security service to protect itself from online attacks.</p>\n\
</section>\n\
<div class=\"cf-error-footer cf-wrapper\">\n\
<p><span class=\"cf-footer-item\">Cloudflare Ray ID: <strong>{ray}</strong></span></p>\n\
</div>\n\
</div>\n\
</div>\n\
</body>\n\
</html>\n"
    );
    text_response(
        403,
        "text/html; charset=UTF-8",
        &[
            ("server".to_owned(), "cloudflare".to_owned()),
            ("cf-ray".to_owned(), format!("{ray}-AMS")),
        ],
        &body,
    )
}

/// A JSON response.
pub(crate) fn json_response(
    status: u16,
    headers: &[(String, String)],
    value: &serde_json::Value,
) -> Response {
    text_response(status, "application/json", headers, &value.to_string())
}

/// A response with a body of the given content type. A header the HTTP types refuse is
/// left out rather than failing the whole answer.
pub(crate) fn text_response(
    status: u16,
    content_type: &str,
    headers: &[(String, String)],
    body: &str,
) -> Response {
    let mut response = Response::new(Body::from(body.to_owned()));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let map = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(content_type) {
        map.insert(axum::http::header::CONTENT_TYPE, value);
    }
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            map.insert(name, value);
        }
    }
    response
}

/// The standard reason phrase for `status`.
pub(crate) fn reason(status: u16) -> &'static str {
    StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

/// The content type of a fault's own body: JSON if it parses, HTML if it looks like it.
pub(crate) fn guess_content_type(body: &str) -> &'static str {
    if serde_json::from_str::<serde_json::Value>(body).is_ok() {
        "application/json"
    } else if body.trim_start().starts_with('<') {
        "text/html; charset=UTF-8"
    } else {
        "text/plain; charset=utf-8"
    }
}

/// Whether `headers` already holds `name` (case-insensitive).
pub(crate) fn has_header(headers: &[(String, String)], name: &str) -> bool {
    headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves plain data behind; keep serving.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn unix_secs(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn unix_millis(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `N` random bytes. Stand-in ids and keys need to be unique, not secret: should the
/// system RNG ever fail, a SplitMix64 stream seeded from the clock and a process-wide
/// counter fills in.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    secret_core::crypto::random_array::<N>().unwrap_or_else(|_| {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let millis = u64::try_from(unix_millis(SystemTime::now())).unwrap_or(0);
        let mut state = (millis << 20) ^ COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut out = [0u8; N];
        for chunk in out.chunks_mut(8) {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
        out
    })
}

/// `N` random bytes as lowercase hex.
pub(crate) fn hex_id<const N: usize>() -> String {
    secret_core::crypto::hex(&random_bytes::<N>())
}

/// A random (version 4) UUID in its usual text form.
pub(crate) fn uuid() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = secret_core::crypto::hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_taken_in_order_per_operation() {
        let faults = Faults::default();
        faults.inject("a", Fault::status(500));
        faults.inject("a", Fault::Hang);
        faults.inject("b", Fault::LoseResponse);
        let ops = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(faults.take_first(&ops(&["a"])), Some(Fault::status(500)));
        assert_eq!(faults.pending("a"), 1);
        assert_eq!(
            faults.take_first(&ops(&["x", "b", "a"])),
            Some(Fault::LoseResponse)
        );
        assert_eq!(faults.take_first(&ops(&["a"])), Some(Fault::Hang));
        assert_eq!(faults.take_first(&ops(&["a", "b"])), None);
        faults.inject("a", Fault::Html403);
        faults.clear();
        assert_eq!(faults.pending("a"), 0);
    }

    #[test]
    fn rate_limited_carries_retry_after() {
        match Fault::rate_limited(7) {
            Fault::Status {
                status, headers, ..
            } => {
                assert_eq!(status, 429);
                assert_eq!(headers, vec![("Retry-After".into(), "7".into())]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn uuids_look_like_uuids() {
        let id = uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
        assert_ne!(id, uuid());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[tokio::test]
    async fn start_all_serves_three_stand_ins() {
        let all = StandIns::start_all(
            StandInAddrs::ephemeral(),
            RailwayConfig::default(),
            OpenAiConfig::default(),
            LaunchDarklyConfig::default(),
        )
        .await
        .unwrap();
        let ports = [
            all.railway.addr().port(),
            all.openai.addr().port(),
            all.launchdarkly.addr().port(),
        ];
        assert!(ports.iter().all(|p| *p != 0));
        assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2]);
        let response = reqwest::get(format!("{}/models", all.openai.base_url()))
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401);
    }

    #[tokio::test]
    async fn dropping_a_stand_in_releases_hanging_requests_and_the_port() {
        let ld = LaunchDarklyStandIn::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            LaunchDarklyConfig::default(),
        )
        .await
        .unwrap();
        ld.faults().inject("unknown", Fault::Hang);
        let url = format!("{}/anything", ld.base_url());
        let request = tokio::spawn(async move { reqwest::get(url).await });
        let journal = ld.journal();
        while journal.count("unknown") == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let addr = ld.addr();
        drop(ld);
        let result = tokio::time::timeout(Duration::from_secs(5), request)
            .await
            .expect("the hanging request ends at shutdown")
            .unwrap();
        assert!(result.is_err(), "{result:?}");
        let mut closed = false;
        for _ in 0..100 {
            if TcpStream::connect(addr).await.is_err() {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(closed, "the port is released");
    }

    #[tokio::test]
    async fn refuses_non_loopback_addresses() {
        let addr = SocketAddr::from(([0, 0, 0, 0], 0));
        let result = Server::start(addr, |_| Router::new()).await;
        assert!(result.is_err());
    }
}
