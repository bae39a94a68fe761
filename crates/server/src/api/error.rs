//! The API's one error type and the one place that turns an error into a status code
//! and a JSON body, plus the body and query extractors whose rejections go through it.
//!
//! Messages never echo request input: a value sent in the wrong field must not come
//! back in an error (or land in a log). 5xx details are logged here and replaced by a
//! generic message.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;

use secret_core::error::VaultError;
use secret_core::model::InputError;
use secret_core::store::StoreError;
use secret_core::vault::CallError;

/// Why a request failed.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// Refused or failed in the vault (authentication, scopes, names, versions...).
    Call(CallError),
    /// The request itself is malformed (body, query, headers).
    BadRequest(String),
    PayloadTooLarge,
    /// The request target is longer than [`super::MAX_URI`].
    UriTooLong,
    /// No route has this path.
    NoRoute,
    MethodNotAllowed,
    /// Too many failed authentications from one address (see `brake`).
    RateLimited {
        retry_after_secs: u64,
    },
    /// A dependency of the server is not available; `detail` is logged, not sent.
    Unavailable {
        message: &'static str,
        detail: String,
    },
    /// A rotation asked of a secret that is not rotated here (a manual one): 409, with
    /// its own code, since the request is well formed and the secret's policy refuses it.
    NotRotatable(String),
    /// A bug or an unexpected state; `detail` is logged, not sent.
    Internal(String),
    /// An error response produced outside our handlers (an extractor of axum's),
    /// rewritten so that every error has the same JSON shape.
    Status(StatusCode),
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> Self {
        ApiError::Call(e)
    }
}

impl From<VaultError> for ApiError {
    fn from(e: VaultError) -> Self {
        ApiError::Call(CallError::Vault(e))
    }
}

/// The body of every error response.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable, machine-readable: `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `invalid_name`, `invalid_value`, `bad_request`, `payload_too_large`,
    /// `uri_too_long`, `headers_too_large`, `method_not_allowed`, `rate_limited`,
    /// `not_rotatable`, `internal`, `unavailable`.
    #[schema(example = "not_found")]
    pub code: String,
    /// For people; never contains a secret value.
    pub message: String,
}

const INTERNAL: &str = "internal error; the server log has the details (look for the X-Request-Id)";

/// Status, code and message of a vault error; `Some(detail)` for what must only be logged.
fn vault_parts(e: &VaultError) -> (StatusCode, &'static str, String, Option<String>) {
    match e {
        VaultError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", e.to_string(), None),
        VaultError::Conflict(_) | VaultError::VaultExists(_) => {
            (StatusCode::CONFLICT, "conflict", e.to_string(), None)
        }
        VaultError::Input(InputError::Name(_)) => {
            (StatusCode::BAD_REQUEST, "invalid_name", e.to_string(), None)
        }
        VaultError::Input(InputError::TooLarge { .. }) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            e.to_string(),
            None,
        ),
        VaultError::Input(_) => (
            StatusCode::BAD_REQUEST,
            "invalid_value",
            e.to_string(),
            None,
        ),
        VaultError::Usage(_) => (StatusCode::BAD_REQUEST, "bad_request", e.to_string(), None),
        VaultError::AuditWrite(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "audit log unavailable; the operation was not performed".into(),
            Some(e.to_string()),
        ),
        VaultError::Store(StoreError::Busy) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the vault is busy; try again".into(),
            Some(e.to_string()),
        ),
        VaultError::Locked(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the vault is locked".into(),
            Some(e.to_string()),
        ),
        VaultError::Integrity(_)
        | VaultError::AuditBroken { .. }
        | VaultError::NoVault(_)
        | VaultError::Store(_)
        | VaultError::Crypto(_)
        | VaultError::Io(_)
        | VaultError::Rotation { .. }
        | VaultError::Exec { .. }
        | VaultError::Drift(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            INTERNAL.into(),
            Some(e.to_string()),
        ),
    }
}

impl ApiError {
    /// Status, code, message, and a detail to log (never sent).
    fn parts(&self) -> (StatusCode, &'static str, String, Option<String>) {
        match self {
            ApiError::Call(CallError::Unauthorized(m)) => {
                (StatusCode::UNAUTHORIZED, "unauthorized", m.clone(), None)
            }
            ApiError::Call(CallError::Forbidden(m)) => {
                (StatusCode::FORBIDDEN, "forbidden", m.clone(), None)
            }
            ApiError::Call(CallError::Vault(e)) => vault_parts(e),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m.clone(), None),
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "the request body is larger than {} KiB",
                    super::BODY_LIMIT / 1024
                ),
                None,
            ),
            ApiError::UriTooLong => (
                StatusCode::URI_TOO_LONG,
                "uri_too_long",
                format!(
                    "the request URI is longer than {} KiB; names are at most 255 bytes",
                    super::MAX_URI / 1024
                ),
                None,
            ),
            ApiError::NoRoute => (
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route; GET /v1/openapi.json lists them".into(),
                None,
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method; GET /v1/openapi.json lists them".into(),
                None,
            ),
            ApiError::RateLimited { retry_after_secs } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "too many failed authentications from this address; retry after {retry_after_secs} s"
                ),
                None,
            ),
            ApiError::Unavailable { message, detail } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                (*message).to_string(),
                Some(detail.clone()),
            ),
            ApiError::NotRotatable(m) => (StatusCode::CONFLICT, "not_rotatable", m.clone(), None),
            ApiError::Internal(detail) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                INTERNAL.into(),
                Some(detail.clone()),
            ),
            ApiError::Status(status) => {
                let (code, message) = match *status {
                    StatusCode::NOT_FOUND => ("not_found", "not found"),
                    StatusCode::METHOD_NOT_ALLOWED => {
                        ("method_not_allowed", "method not allowed")
                    }
                    StatusCode::PAYLOAD_TOO_LARGE => {
                        ("payload_too_large", "the request body is too large")
                    }
                    StatusCode::URI_TOO_LONG => ("uri_too_long", "the request URI is too long"),
                    StatusCode::UNAUTHORIZED => ("unauthorized", "unauthorized"),
                    StatusCode::FORBIDDEN => ("forbidden", "forbidden"),
                    StatusCode::TOO_MANY_REQUESTS => ("rate_limited", "too many requests"),
                    StatusCode::SERVICE_UNAVAILABLE => ("unavailable", "service unavailable"),
                    s if s.is_server_error() => ("internal", INTERNAL),
                    _ => ("bad_request", "the request could not be understood (check the path and its parameters)"),
                };
                let detail = status.is_server_error().then(|| format!("status {status} from the framework"));
                (*status, code, message.into(), detail)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message, detail) = self.parts();
        if let Some(detail) = detail {
            // Errors carry names, ids and causes, never values; still, only the log sees them.
            eprintln!("error: api: {status}: {code}: {detail}");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Call(CallError::Unauthorized(_)) => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::RateLimited { retry_after_secs } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ApiError::Call(CallError::Vault(VaultError::Store(StoreError::Busy))) => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// A JSON request body. Unlike `axum::Json`, every rejection is an [`ApiError`], and a
/// deserialisation error never quotes the body (a value sent in the wrong field would
/// come back in the message).
pub(crate) struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json"
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::BadRequest(
                "expected a JSON body with Content-Type: application/json".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest("cannot read the request body".into())
            }
        })?;
        // Every body is an object: serde would also take a struct from an array of its
        // fields in order (`[null, null]`), which the document does not allow.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            wipe(bytes);
            return Err(ApiError::BadRequest(
                "expected a JSON object ({...}) as the body".into(),
            ));
        }
        let parsed = serde_json::from_slice::<T>(&bytes).map_err(|e| json_error(&e));
        wipe(bytes);
        parsed.map(JsonBody)
    }
}

/// A message for a body that did not parse, without quoting it.
fn json_error(e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let at = format!("line {} column {}", e.line(), e.column());
    let message = match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => format!("malformed JSON at {at}"),
        Category::Data => {
            let text = e.to_string();
            // "missing field `value`" names one of our fields, never the sender's input.
            if text.starts_with("missing field") {
                format!(
                    "the JSON body is incomplete: {}",
                    text.split(" at line").next().unwrap_or("")
                )
            } else {
                format!("the JSON body does not have the expected fields and types (at {at}); GET /v1/openapi.json describes it")
            }
        }
    };
    ApiError::BadRequest(message)
}

/// Zeroes a body buffer we own alone (it may hold a secret value). Best effort: a buffer
/// shared with someone else is left as it is.
fn wipe(bytes: Bytes) {
    use zeroize::Zeroize;
    if let Ok(mut owned) = bytes.try_into_mut() {
        owned.as_mut().zeroize();
    }
}

/// Query parameters, with rejections as [`ApiError`]s that do not quote the query.
pub(crate) struct QueryArgs<T>(pub T);

impl<T, S> FromRequestParts<S> for QueryArgs<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(t)| QueryArgs(t))
            .map_err(|_| {
                ApiError::BadRequest(
                    "invalid query string: a parameter has the wrong type (numbers are plain integers); \
                     GET /v1/openapi.json lists the parameters"
                        .into(),
                )
            })
    }
}
