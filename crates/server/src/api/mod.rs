//! The HTTP API of `secret serve`: an adapter from HTTP to [`Op`]s on the vault thread
//! ([`crate::service`]). The vault authenticates the token, checks its scopes, carries
//! the call out and audits it; this module only parses requests, shapes JSON, and
//! turns errors into statuses (in one place, [`error`]). It imports no SQL, crypto
//! backend or HTTP client.
//!
//! Around every route sits one middleware ([`observe`]): it gives the request an id
//! (`X-Request-Id`, echoed back and written to the audit log), rewrites any non-JSON
//! error a framework extractor produced into the JSON error shape, and counts the
//! response in `secret_api_requests_total{route, status}`.
//!
//! Serve it with `app(state).into_make_service_with_connect_info::<SocketAddr>()`, so
//! the client address reaches the audit log and the failed-auth [`brake`]; without it
//! every client is "unknown" and shares one brake.

mod brake;
mod error;
pub mod fuzzing;
mod handlers;
pub mod tally;
#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, MatchedPath, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use secrecy::SecretString;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use self::brake::Brake;
use self::error::ApiError;
use crate::service::ServeState;
use secret_core::error::VaultError;
use secret_core::vault::{ApiCall, CallError, Op, Reply};

/// Largest request body: a 64 KiB value, JSON-escaped, can come close to this.
pub const BODY_LIMIT: usize = 128 * 1024;

/// Longest request target (path and query) taken; longer ones get 414. Names are at
/// most 255 bytes, so no route needs more.
pub const MAX_URI: usize = 8 * 1024;

/// Longest `X-Request-Id` taken from a client.
const MAX_REQUEST_ID: usize = 64;

fn x_request_id() -> HeaderName {
    HeaderName::from_static("x-request-id")
}

/// The router for `secret serve`. Tests call it with no socket.
pub fn app(state: ServeState) -> Router {
    let openapi = openapi().to_json().unwrap_or_else(|e| {
        eprintln!("error: api: cannot encode the OpenAPI document: {e}");
        "{}".into()
    });
    let shared = AppState {
        serve: state,
        brake: Arc::new(Brake::default()),
        proven: Arc::new(tally::Proven::default()),
        jwks: Arc::new(handlers::JwksCache::default()),
        ready_at: Arc::new(std::sync::Mutex::new(None)),
        openapi: Arc::new(openapi),
    };
    Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
        .route("/v1/secrets", get(handlers::list_secrets))
        .route(
            "/v1/secrets/{name}",
            get(handlers::read_secret)
                .put(handlers::write_secret)
                .delete(handlers::delete_secret),
        )
        .route("/v1/secrets/{name}/versions", get(handlers::versions))
        .route("/v1/secrets/{name}/rotate", post(handlers::rotate))
        .route("/v1/export", post(handlers::export))
        .route("/v1/rotations", get(handlers::rotations))
        .route("/v1/rotations/{id}", get(handlers::rotation))
        .route("/v1/audit", get(handlers::audit))
        .route("/v1/jwks/{name}", get(handlers::jwks))
        .route("/v1/openapi.json", get(handlers::openapi))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(from_fn_with_state(shared.clone(), observe))
        .with_state(shared)
}

/// The OpenAPI document of [`app`], generated from the handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "secret",
        description = "A self-hosted secrets vault and rotation service. Send `Authorization: Bearer <token>`; \
                       errors are `{\"error\":{\"code\",\"message\"}}` with the matching status."
    ),
    paths(
        handlers::healthz,
        handlers::readyz,
        handlers::metrics,
        handlers::list_secrets,
        handlers::read_secret,
        handlers::write_secret,
        handlers::delete_secret,
        handlers::versions,
        handlers::export,
        handlers::rotate,
        handlers::rotations,
        handlers::rotation,
        handlers::audit,
        handlers::jwks,
        handlers::openapi,
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail)),
    modifiers(&BearerAuth),
    tags(
        (name = "secrets", description = "Values and their versions"),
        (name = "rotations", description = "Rotation runs"),
        (name = "audit", description = "The tamper-evident audit log"),
        (name = "health", description = "Liveness, readiness, metrics"),
    )
)]
struct ApiDoc;

/// Adds the `bearer` security scheme the paths refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("secret_<id>.<secret>")
                    .description(Some("An API token from `secret token create`"))
                    .build(),
            ),
        );
    }
}

/// What every handler shares.
#[derive(Clone)]
struct AppState {
    serve: ServeState,
    brake: Arc<Brake>,
    /// Tokens that authenticated recently (keyed hashes).
    proven: Arc<tally::Proven>,
    /// Public keys by secret, re-read only when the secret's labels change.
    jwks: Arc<handlers::JwksCache>,
    /// When `/readyz` last found the vault writable.
    ready_at: Arc<std::sync::Mutex<Option<Instant>>>,
    /// The OpenAPI document, encoded once.
    openapi: Arc<String>,
}

impl AppState {
    /// Sends one call to the vault, braking addresses that keep failing authentication.
    /// A request without a token is answered here (401), never by the vault: it costs
    /// no audit entry of its own, only a count in the [`tally`].
    async fn call(&self, ctx: Ctx, op: Op) -> Result<Reply, ApiError> {
        let now = Instant::now();
        let proven = self.proven.knows(ctx.token.as_ref(), now);
        if let Some(retry_after_secs) = self.brake.blocked(&ctx.remote, now, proven) {
            return Err(ApiError::RateLimited { retry_after_secs });
        }
        let Some(token) = ctx.token.clone() else {
            return Err(ApiError::Call(CallError::Unauthorized(
                "send Authorization: Bearer <token>".into(),
            )));
        };
        if let Some(reached) = &ctx.reached {
            reached.0.store(true, Ordering::Relaxed);
        }
        let remote = ctx.remote.clone();
        let call = ApiCall {
            token: ctx.token,
            remote: ctx.remote,
            request_id: ctx.request_id,
            op,
        };
        let result = self.serve.vault.call(call).await;
        // Requests already in flight when the tenth failure lands still reach the vault;
        // the brake bounds the rate, it is not an exact count.
        match &result {
            Err(CallError::Unauthorized(_)) => {
                self.brake.failed(&remote, Instant::now());
                self.proven.forget(&token);
            }
            // The batch was not committed: nothing was proven.
            Err(CallError::Vault(VaultError::AuditWrite(_))) => {}
            // Anything else got past authentication.
            _ => self.proven.remember(&token, Instant::now()),
        }
        Ok(result?)
    }
}

/// The request id [`observe`] gave a request.
#[derive(Clone, Debug)]
struct RequestId(String);

/// Set once a request reaches the vault (which audits it); [`observe`] records the
/// others.
#[derive(Clone, Debug, Default)]
struct Reached(Arc<std::sync::atomic::AtomicBool>);

/// Who is asking: token, address and request id, as the vault needs them.
struct Ctx {
    token: Option<SecretString>,
    remote: String,
    request_id: String,
    reached: Option<Reached>,
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let remote = remote_of(&parts.headers, &parts.extensions, state);
        let request_id = match parts.extensions.get::<RequestId>() {
            Some(RequestId(id)) => id.clone(),
            None => new_request_id(),
        };
        Ok(Ctx {
            token: bearer(&parts.headers),
            remote,
            request_id,
            reached: parts.extensions.get::<Reached>().cloned(),
        })
    }
}

/// The client's address: the socket peer, or behind one trusted proxy (Railway's edge)
/// the last address that proxy appended to X-Forwarded-For.
fn remote_of(headers: &HeaderMap, extensions: &axum::http::Extensions, state: &AppState) -> String {
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string());
    let forwarded = state
        .serve
        .trust_forwarded_for
        .then(|| headers.get("x-forwarded-for"))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .map(str::trim)
        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
        .map(str::to_string);
    forwarded.or(peer).unwrap_or_else(|| "unknown".into())
}

/// The token of `Authorization: Bearer <token>`. Anything else is no token (the vault
/// answers 401 and says how to send one).
fn bearer(headers: &HeaderMap) -> Option<SecretString> {
    let text = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = text.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty())
        .then(|| SecretString::from(token.to_string()))
}

/// The client's `X-Request-Id` if it is short and printable, else a new one.
fn request_id_of(headers: &HeaderMap) -> String {
    let given = headers
        .get(x_request_id())
        .map(HeaderValue::as_bytes)
        .filter(|id| {
            !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.iter().all(|b| b.is_ascii_graphic())
        });
    match given {
        Some(id) => String::from_utf8_lossy(id).into_owned(),
        None => new_request_id(),
    }
}

/// 16 hex digits.
fn new_request_id() -> String {
    match secret_core::crypto::random_array::<8>() {
        Ok(bytes) => secret_core::crypto::hex(&bytes),
        Err(_) => {
            // No randomness: still unique within this process, which is what an id needs.
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            format!("{:08x}{n:08x}", std::process::id())
        }
    }
}

/// Request id, JSON errors and the request counter, around every route.
async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let id = request_id_of(request.headers());
    request.extensions_mut().insert(RequestId(id.clone()));
    let reached = Reached::default();
    request.extensions_mut().insert(reached.clone());
    // What a refusal before the vault needs to be recorded (taken now: the request is
    // consumed by the handler).
    let under_v1 = request.uri().path().starts_with("/v1/") || request.uri().path() == "/v1";
    let token = bearer(request.headers());
    let remote = remote_of(request.headers(), request.extensions(), &state);
    let too_long = request
        .uri()
        .path_and_query()
        .is_some_and(|pq| pq.as_str().len() > MAX_URI);
    let mut response = if too_long {
        ApiError::UriTooLong.into_response()
    } else {
        next.run(request).await
    };
    let answered = response.status();
    // Every /v1 request is recorded. Those the vault did not see (no token, a public
    // JWKS read, malformed JSON, a body over the limit, an unknown route, a wrong
    // method, a braked address) are recorded by route template only (a raw path could
    // hold a value): one by one when they carry a token that authenticated recently
    // (they name an actor), else as counts in the bounded tally.
    if under_v1 && !answered.is_server_error() && !reached.0.load(Ordering::Relaxed) {
        let proven = answered.is_client_error()
            && answered.as_u16() != 429
            && state.proven.knows(token.as_ref(), Instant::now());
        if proven {
            let code = match answered.as_u16() {
                400 | 415 | 422 => "bad_request",
                404 => "not_found",
                405 => "method_not_allowed",
                413 => "payload_too_large",
                414 => "uri_too_long",
                _ => "refused",
            };
            let call = ApiCall {
                token,
                remote,
                request_id: id.clone(),
                op: Op::Refused {
                    route: route.clone(),
                    status: answered.as_u16(),
                    code,
                },
            };
            // The answer is already decided; a failure to record it is logged, not sent.
            if let Err(e) = state.serve.vault.call(call).await {
                eprintln!("api: cannot record a refused request ({code}): {e}");
            }
        } else {
            state.serve.tally.add(
                &route,
                answered.as_u16(),
                &remote,
                state.serve.clock.now_ms(),
            );
        }
    }
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        // An extractor of axum's answered in plain text: same status, our JSON shape.
        let (parts, _) = response.into_parts();
        response = ApiError::Status(status).into_response();
        for (name, value) in &parts.headers {
            if name != CONTENT_TYPE && name != CONTENT_LENGTH {
                response.headers_mut().append(name.clone(), value.clone());
            }
        }
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(x_request_id(), value);
    }
    state
        .serve
        .metrics
        .request(&route, response.status().as_u16());
    response
}

/// Writes what the [`tally`] counted since the last call as one audit entry (nothing
/// when it counted nothing). `serve` calls it every [`tally::FLUSH_EVERY`] and at
/// shutdown.
pub async fn flush_tally(state: &ServeState) -> Result<(), CallError> {
    let Some(details) = state.tally.take(state.clock.now_ms()) else {
        return Ok(());
    };
    let call = ApiCall {
        token: None,
        remote: "tally".into(),
        request_id: new_request_id(),
        op: Op::Tally { details },
    };
    state.vault.call(call).await.map(|_| ())
}

async fn no_route() -> ApiError {
    ApiError::NoRoute
}

async fn wrong_method() -> ApiError {
    ApiError::MethodNotAllowed
}
