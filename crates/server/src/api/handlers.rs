//! One handler per route: turn the request into an [`Op`], let the vault authenticate,
//! authorise, carry out and audit it, and shape the [`Reply`] as JSON. The
//! `#[utoipa::path]` on each handler is what `/v1/openapi.json` is built from.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_MATCH, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use zeroize::Zeroizing;

use super::error::{ApiError, ErrorBody, JsonBody, QueryArgs};
use super::{AppState, Ctx};
use crate::service::RotateRequest;
use secret_core::audit::AuditFilter;
use secret_core::crypto::Charset;
use secret_core::error::VaultError;
use secret_core::model::{InputError, Label, Revealed, SecretValue, MAX_VALUE_BYTES};
use secret_core::render::{entry_json, rfc3339, rotation_body, RotationBody};
use secret_core::vault::{Op, Reply};
use secret_rotation::Outcome;

/// Rotation records a list returns unless `limit` says otherwise.
const DEFAULT_ROTATIONS: u64 = 50;
/// Audit entries a query returns unless `limit` says otherwise.
const DEFAULT_AUDIT: u64 = 100;
/// The most either returns.
const MAX_LIMIT: u64 = 10_000;

fn unexpected(reply: &Reply) -> ApiError {
    ApiError::Internal(format!(
        "unexpected reply from the vault: {}",
        reply_kind(reply)
    ))
}

/// The variant's name only: a `Reply` may hold a value.
fn reply_kind(reply: &Reply) -> &'static str {
    match reply {
        Reply::Secrets(_) => "Secrets",
        Reply::Value(_) => "Value",
        Reply::Written(_) => "Written",
        Reply::Versions(..) => "Versions",
        Reply::Deleted(_) => "Deleted",
        Reply::Exported { .. } => "Exported",
        Reply::RotateAccepted { .. } => "RotateAccepted",
        Reply::Rotations(_) => "Rotations",
        Reply::Audit(_) => "Audit",
        Reply::Jwks(_) => "Jwks",
        Reply::Recorded => "Recorded",
    }
}

// ---------------------------------------------------------------------------------------
// Health and metrics
// ---------------------------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub(crate) struct StatusBody {
    #[schema(example = "ok")]
    status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The server is up", body = StatusBody)))]
pub(crate) async fn healthz() -> Json<StatusBody> {
    Json(StatusBody { status: "ok" })
}

/// Readiness: the vault is open and unlocked and its store takes writes.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready to serve", body = StatusBody),
        (status = 503, description = "The vault cannot take writes", body = ErrorBody),
    ))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<StatusBody>, ApiError> {
    match state.serve.vault.run(|v| v.check_writable()).await {
        Ok(Ok(())) => Ok(Json(StatusBody { status: "ready" })),
        Ok(Err(e)) | Err(e) => Err(ApiError::Unavailable {
            message: "the vault is not ready: its store does not take writes",
            detail: e.to_string(),
        }),
    }
}

/// Prometheus metrics (text exposition format). Names start with `secret_`.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", body = String,
        content_type = "text/plain; version=0.0.4; charset=utf-8")))]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.serve.metrics.render(),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub(crate) struct SecretList {
    secrets: Vec<SecretSummary>,
}

/// A secret's metadata; never its value. Everything `secret list --json` shows.
#[derive(Serialize, ToSchema)]
pub(crate) struct SecretSummary {
    name: String,
    /// The current version, if the secret has one.
    version: Option<u64>,
    /// The newest version number ever written.
    latest_version: u64,
    /// The version a rotation in progress staged, if any.
    pending_version: Option<u64>,
    /// The version before the current one, if any.
    previous_version: Option<u64>,
    /// How many versions still hold a value.
    versions: u64,
    description: Option<String>,
    /// RFC 3339.
    created_at: String,
    updated_at: String,
    /// When it was soft-deleted (only with `?all=true`).
    deleted_at: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Include soft-deleted secrets.
    all: Option<bool>,
}

/// Names and metadata of every secret (no values), sorted by name. Scope `secrets:list`.
#[utoipa::path(get, path = "/v1/secrets", tag = "secrets", security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, body = SecretList),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 429, body = ErrorBody),
    ))]
pub(crate) async fn list_secrets(
    State(state): State<AppState>,
    ctx: Ctx,
    QueryArgs(query): QueryArgs<ListQuery>,
) -> Result<Json<SecretList>, ApiError> {
    let op = Op::ListSecrets {
        include_deleted: query.all.unwrap_or(false),
    };
    match state.call(ctx, op).await? {
        Reply::Secrets(metas) => Ok(Json(SecretList {
            secrets: metas
                .into_iter()
                .map(|m| SecretSummary {
                    name: m.name,
                    version: m.current_version,
                    latest_version: m.latest_version,
                    pending_version: m.pending_version,
                    previous_version: m.previous_version,
                    versions: m.live_versions,
                    description: m.description,
                    created_at: rfc3339(m.created_at_ms, true),
                    updated_at: rfc3339(m.updated_at_ms, true),
                    deleted_at: m.deleted_at_ms.map(|t| rfc3339(t, true)),
                })
                .collect(),
        })),
        other => Err(unexpected(&other)),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ReadQuery {
    /// A version number; the current version when neither this nor `label` is given.
    version: Option<u64>,
    /// `current`, `previous` or `pending` (instead of `version`).
    label: Option<String>,
}

/// `?label=`: one of the three labels.
fn label_of(text: &str) -> Result<Label, ApiError> {
    match text {
        "current" => Ok(Label::Current),
        "previous" => Ok(Label::Previous),
        "pending" => Ok(Label::Pending),
        _ => Err(ApiError::BadRequest(
            "label: expected current, previous or pending".into(),
        )),
    }
}

/// A secret's value, as returned by a read.
#[derive(Serialize, ToSchema)]
pub(crate) struct SecretValueBody<'a> {
    name: &'a str,
    version: u64,
    created_at: String,
    value: &'a str,
}

/// Reads a value (the current version, `?version=N` or `?label=previous`). Scope
/// `secrets:read:<glob>`.
/// The read is in the audit log before the value is sent.
#[utoipa::path(get, path = "/v1/secrets/{name}", tag = "secrets", security(("bearer" = [])),
    params(("name" = String, Path, description = "Secret name"), ReadQuery),
    responses(
        (status = 200, body = SecretValueBody,
            headers(("ETag" = String, description = "The version, quoted"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody),
    ))]
pub(crate) async fn read_secret(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(name): Path<String>,
    QueryArgs(query): QueryArgs<ReadQuery>,
) -> Result<Response, ApiError> {
    let label = query.label.as_deref().map(label_of).transpose()?;
    let revealed = match state
        .call(
            ctx,
            Op::Read {
                name,
                version: query.version,
                label,
            },
        )
        .await?
    {
        Reply::Value(revealed) => revealed,
        other => return Err(unexpected(&other)),
    };
    let body = value_body(&revealed);
    let capacity = worst_case_json(body.value.len() + body.name.len());
    let buffer = zeroizing_json(&body, capacity)?;
    let version = revealed.version.get();
    drop(revealed);
    let mut response = no_store_json(buffer);
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{version}\"")) {
        response.headers_mut().insert(ETAG, etag);
    }
    Ok(response)
}

fn value_body(revealed: &Revealed) -> SecretValueBody<'_> {
    SecretValueBody {
        name: revealed.name.as_str(),
        version: revealed.version.get(),
        created_at: rfc3339(revealed.created_at_ms, true),
        value: revealed.value.expose(),
    }
}

/// Room for `text_bytes` of text in the worst case of JSON escaping (\u00XX: six bytes
/// for one) plus the fields around it, so the buffer never reallocates and leaves a
/// copy of a value behind.
fn worst_case_json(text_bytes: usize) -> usize {
    6 * text_bytes + 128
}

/// `body` as JSON in a buffer that is wiped when dropped.
fn zeroizing_json(body: &impl Serialize, capacity: usize) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let mut buffer = Zeroizing::new(Vec::with_capacity(capacity));
    serde_json::to_writer(&mut *buffer, body).map_err(|e| {
        ApiError::Internal(format!(
            "cannot encode a value response: {:?}",
            e.classify()
        ))
    })?;
    Ok(buffer)
}

/// A response holding values: JSON, never cached. The body owns the zeroizing buffer,
/// so it is wiped when the server drops the body.
fn no_store_json(buffer: Zeroizing<Vec<u8>>) -> Response {
    let mut response = Body::from(Bytes::from_owner(buffer)).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A write: a `value`, or a value the server generates (`generate`). `value` is kept
/// in a zeroizing string.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WriteBody {
    /// The new value: UTF-8, 1 byte to 64 KiB (0 bytes with `allow_empty`).
    #[schema(value_type = Option<String>)]
    value: Option<SecretString>,
    /// Instead of `value`: the server generates one with its system RNG, and it never
    /// crosses the network.
    generate: Option<GenerateSpec>,
    /// Compare-and-set: the current version must be this (0: the secret must not exist).
    /// `If-Match: "N"` says the same.
    if_version: Option<u64>,
    /// Replaces the secret's description.
    description: Option<String>,
    /// Accept an empty `value`.
    #[serde(default)]
    allow_empty: bool,
}

/// How the server generates a value (as `secret set --generate` does).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GenerateSpec {
    /// Characters, 1 to 65536 (default 32).
    length: Option<u32>,
    /// `alnum` (default), `hex` or `base64url`.
    charset: Option<String>,
}

/// A generated value, or why the spec is refused.
fn generated(spec: &GenerateSpec) -> Result<Result<SecretValue, InputError>, ApiError> {
    let charset = match spec.charset.as_deref().unwrap_or("alnum") {
        "alnum" => Charset::Alnum,
        "hex" => Charset::Hex,
        "base64url" => Charset::Base64Url,
        _ => {
            return Err(ApiError::BadRequest(
                "generate.charset: expected alnum, hex or base64url".into(),
            ))
        }
    };
    let length = spec.length.unwrap_or(32) as usize;
    if !(1..=MAX_VALUE_BYTES).contains(&length) {
        return Err(ApiError::BadRequest(format!(
            "generate.length: expected 1 to {MAX_VALUE_BYTES}"
        )));
    }
    Ok(secret_core::crypto::generate_value(charset, length)
        .map_err(|e| InputError::Other(e.to_string()))
        .and_then(SecretValue::from_secret_string))
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Written {
    name: String,
    version: u64,
}

/// `If-Match: "3"` or `If-Match: 3`.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(raw) = headers.get(IF_MATCH) else {
        return Ok(None);
    };
    let bad = || ApiError::BadRequest("If-Match takes one version number, such as \"3\"".into());
    let text = raw.to_str().map_err(|_| bad())?.trim();
    let unquoted = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    unquoted.parse::<u64>().map(Some).map_err(|_| bad())
}

/// Writes a new version (given, or generated by the server) and makes it current.
/// Scope `secrets:write:<glob>`.
#[utoipa::path(put, path = "/v1/secrets/{name}", tag = "secrets", security(("bearer" = [])),
    params(("name" = String, Path, description = "Secret name"),
        ("If-Match" = Option<String>, Header, description = "Compare-and-set: the current version, e.g. \"3\"")),
    request_body = WriteBody,
    responses(
        (status = 200, body = Written),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, description = "The current version is not if_version", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody),
    ))]
pub(crate) async fn write_secret(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(name): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<WriteBody>,
) -> Result<Json<Written>, ApiError> {
    let if_version = match (if_match(&headers)?, body.if_version) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::BadRequest(format!(
                "If-Match ({a}) and if_version ({b}) disagree; send one of them"
            )))
        }
        (a, b) => a.or(b),
    };
    let description = body.description.clone();
    let (value, generate) = match (&body.value, &body.generate) {
        (Some(given), None) => {
            let bytes = Zeroizing::new(given.expose_secret().as_bytes().to_vec());
            // An invalid value still goes to the vault, which audits the refusal.
            (SecretValue::from_bytes(bytes, body.allow_empty), false)
        }
        (None, Some(spec)) => (generated(spec)?, true),
        _ => {
            return Err(ApiError::BadRequest(
                "send either value or generate, not both and not neither".into(),
            ))
        }
    };
    drop(body);
    match state
        .call(
            ctx,
            Op::Write {
                name: name.clone(),
                value,
                if_version,
                description,
                generated: generate,
            },
        )
        .await?
    {
        Reply::Written(version) => Ok(Json(Written {
            name,
            version: version.get(),
        })),
        other => Err(unexpected(&other)),
    }
}

/// A secret's versions: everything `secret history --json` shows.
#[derive(Serialize, ToSchema)]
pub(crate) struct VersionList {
    name: String,
    deleted: bool,
    /// When it was soft-deleted.
    deleted_at: Option<String>,
    description: Option<String>,
    versions: Vec<VersionSummary>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct VersionSummary {
    version: u64,
    /// `current`, `pending`, `previous`.
    labels: Vec<&'static str>,
    created_at: String,
    /// The value was destroyed; only the metadata is left.
    destroyed: bool,
    /// When it was destroyed.
    destroyed_at: Option<String>,
}

/// A secret's versions, without values. Scope `secrets:list`.
#[utoipa::path(get, path = "/v1/secrets/{name}/versions", tag = "secrets", security(("bearer" = [])),
    params(("name" = String, Path, description = "Secret name")),
    responses(
        (status = 200, body = VersionList),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
    ))]
pub(crate) async fn versions(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(name): Path<String>,
) -> Result<Json<VersionList>, ApiError> {
    match state.call(ctx, Op::Versions { name }).await? {
        Reply::Versions(row, versions) => Ok(Json(VersionList {
            name: row.name,
            deleted: row.deleted_at_ms.is_some(),
            deleted_at: row.deleted_at_ms.map(|t| rfc3339(t, true)),
            description: row.description,
            versions: versions
                .into_iter()
                .map(|v| VersionSummary {
                    version: v.version,
                    labels: v.labels,
                    created_at: rfc3339(v.created_at_ms, true),
                    destroyed: v.destroyed_at_ms.is_some(),
                    destroyed_at: v.destroyed_at_ms.map(|t| rfc3339(t, true)),
                })
                .collect(),
        })),
        other => Err(unexpected(&other)),
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Deleted {
    name: String,
    deleted: bool,
    /// False when it was deleted already.
    changed: bool,
}

/// Soft-deletes a secret: it cannot be read or written until `secret undelete` on the
/// vault's host restores it. Scope `secrets:delete:<glob>` (writing a value is not
/// enough: a deleted secret fails every reader).
#[utoipa::path(delete, path = "/v1/secrets/{name}", tag = "secrets", security(("bearer" = [])),
    params(("name" = String, Path, description = "Secret name")),
    responses(
        (status = 200, body = Deleted),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody),
    ))]
pub(crate) async fn delete_secret(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(name): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    match state.call(ctx, Op::Delete { name: name.clone() }).await? {
        Reply::Deleted(changed) => Ok(Json(Deleted {
            name,
            deleted: true,
            changed,
        })),
        other => Err(unexpected(&other)),
    }
}

/// What an export asks for.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExportBody {
    /// Only these secrets (each must exist, with a current value, and be readable with
    /// the token). Absent: every live secret the token may read.
    only: Option<Vec<String>>,
    /// `export` (default) or `run`: recorded with each read.
    purpose: Option<String>,
}

/// Current values, sorted by name.
#[derive(Serialize, ToSchema)]
pub(crate) struct ExportedBody<'a> {
    secrets: Vec<SecretValueBody<'a>>,
    /// Without `only`: how many live secrets the token may not read and were left out.
    /// Null unless the token also has `secrets:list` (the count is metadata too).
    omitted: Option<usize>,
}

/// The current values of several secrets in one call (`secret export`, `secret run`),
/// one audited read each, all durable before the values are sent. Scope
/// `secrets:read:<glob>` for each: with `only`, a name the token may not read refuses
/// the whole call (403, no values); without it, the secrets the token may not read are
/// left out.
#[utoipa::path(post, path = "/v1/export", tag = "secrets", security(("bearer" = [])),
    request_body = ExportBody,
    responses(
        (status = 200, body = ExportedBody),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, description = "A name in `only` is not in the vault or has no current value", body = ErrorBody),
        (status = 429, body = ErrorBody),
    ))]
pub(crate) async fn export(
    State(state): State<AppState>,
    ctx: Ctx,
    JsonBody(body): JsonBody<ExportBody>,
) -> Result<Response, ApiError> {
    let purpose = match body.purpose.as_deref().unwrap_or("export") {
        p @ ("export" | "run") => p.to_string(),
        _ => {
            return Err(ApiError::BadRequest(
                "purpose: expected export or run".into(),
            ))
        }
    };
    let (values, omitted) = match state
        .call(
            ctx,
            Op::Export {
                only: body.only,
                purpose,
            },
        )
        .await?
    {
        Reply::Exported { values, omitted } => (values, omitted),
        other => return Err(unexpected(&other)),
    };
    let text_bytes: usize = values
        .iter()
        .map(|r| r.value.len() + r.name.as_str().len() + 64)
        .sum();
    let body = ExportedBody {
        secrets: values.iter().map(value_body).collect(),
        omitted,
    };
    let buffer = zeroizing_json(&body, worst_case_json(text_bytes))?;
    drop(body);
    drop(values);
    Ok(no_store_json(buffer))
}

// ---------------------------------------------------------------------------------------
// Rotations
// ---------------------------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub(crate) struct RotationQueued {
    #[schema(example = "rot_0123456789ab")]
    rotation: String,
    secret: String,
    #[schema(example = "queued")]
    status: &'static str,
}

/// Starts a rotation now. Scope `rotate:<glob>`. The secret needs a policy with a
/// generator (not `manual`); the scheduler picks the request up. When the secret has a
/// rotation open already (requested, interrupted, or stopped in a step), that is the
/// one the answer names and the scheduler goes on with, as `secret rotate NAME` does:
/// never a second run beside it.
#[utoipa::path(post, path = "/v1/secrets/{name}/rotate", tag = "rotations", security(("bearer" = [])),
    params(("name" = String, Path, description = "Secret name")),
    responses(
        (status = 202, description = "Queued; GET the Location to follow it", body = RotationQueued),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 400, description = "A manual secret (set by a person, never rotated)", body = ErrorBody),
        (status = 404, description = "No policy for this secret", body = ErrorBody),
        (status = 409, description = "The secret has no value yet", body = ErrorBody),
        (status = 429, body = ErrorBody),
        (status = 503, description = "The scheduler is not running", body = ErrorBody),
    ))]
pub(crate) async fn rotate(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let random =
        secret_core::crypto::random_array::<6>().map_err(|e| ApiError::Internal(e.to_string()))?;
    let rotation_id = format!("rot_{}", secret_core::crypto::hex(&random));
    // The policy check travels with the call: the vault refuses (and audits the
    // refusal) only after authentication and scope, so an unauthenticated or unscoped
    // caller learns nothing about the policies (401/403 before 404/409).
    if state.serve.rotate.is_closed() {
        return Err(ApiError::Unavailable {
            message: "the scheduler is not running in this server; run `secret rotate` instead",
            detail: "rotate request while serving with --no-scheduler".into(),
        });
    }
    // The same check, in the same words, as `secret rotate NAME`.
    let rotatable = secret_rotation::rotatable(&state.serve.policies, &name)
        .map(|policy| policy.generator.name().to_string());
    let rotation_id = match state
        .call(
            ctx,
            Op::Rotate {
                name: name.clone(),
                rotation_id,
                rotatable,
            },
        )
        .await?
    {
        Reply::RotateAccepted { rotation_id } => rotation_id,
        other => return Err(unexpected(&other)),
    };
    let request = RotateRequest {
        secret: name.clone(),
        rotation_id: rotation_id.clone(),
    };
    // The request is recorded in the vault; this only wakes the scheduler. A full
    // queue is fine: the next tick picks the request up anyway.
    let _ = state.serve.rotate.try_send(request);
    let location = HeaderValue::from_str(&format!("/v1/rotations/{rotation_id}"))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let body = RotationQueued {
        rotation: rotation_id,
        secret: name,
        status: "queued",
    };
    Ok((StatusCode::ACCEPTED, [(LOCATION, location)], Json(body)).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RotationsQuery {
    /// Only this secret's rotations.
    secret: Option<String>,
    /// At most this many, newest first (default 50).
    limit: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct RotationList {
    rotations: Vec<RotationBody>,
}

/// Rotation runs with their steps, newest first. Scope `audit:read`, or
/// `rotate:<glob>` with `?secret=` a name it covers.
#[utoipa::path(get, path = "/v1/rotations", tag = "rotations", security(("bearer" = [])),
    params(RotationsQuery),
    responses(
        (status = 200, body = RotationList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
    ))]
pub(crate) async fn rotations(
    State(state): State<AppState>,
    ctx: Ctx,
    QueryArgs(query): QueryArgs<RotationsQuery>,
) -> Result<Json<RotationList>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_ROTATIONS).min(MAX_LIMIT);
    match state
        .call(
            ctx,
            Op::Rotations {
                id: None,
                secret: query.secret,
                limit,
            },
        )
        .await?
    {
        Reply::Rotations(runs) => Ok(Json(RotationList {
            rotations: runs.into_iter().map(|(r, s)| rotation_body(r, s)).collect(),
        })),
        other => Err(unexpected(&other)),
    }
}

/// One run, and what the scheduler's pass that ran it reported.
#[derive(Serialize, ToSchema)]
pub(crate) struct RotationStatus {
    #[serde(flatten)]
    run: RotationBody,
    /// Once the scheduler pass that ran this rotation has ended: that pass's outcomes
    /// for its secret (an early revoke of the previous run in grace, then this run),
    /// as `secret rotate --json` reports them. Null while it is queued or running, or
    /// when this server process did not run it.
    #[schema(value_type = Option<Vec<Object>>)]
    pass: Option<Vec<Outcome>>,
}

/// One rotation run with its steps. Scope `audit:read` or `rotate:<its secret>`.
#[utoipa::path(get, path = "/v1/rotations/{id}", tag = "rotations", security(("bearer" = [])),
    params(("id" = String, Path, description = "Rotation id, rot_...")),
    responses(
        (status = 200, body = RotationStatus),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
    ))]
pub(crate) async fn rotation(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Json<RotationStatus>, ApiError> {
    match state
        .call(
            ctx,
            Op::Rotations {
                id: Some(id.clone()),
                secret: None,
                limit: 1,
            },
        )
        .await?
    {
        Reply::Rotations(runs) => runs
            .into_iter()
            .next()
            .map(|(r, s)| {
                let pass = state.serve.passes.get(&r.id);
                Json(RotationStatus {
                    run: rotation_body(r, s),
                    pass,
                })
            })
            .ok_or_else(|| VaultError::NotFound(format!("no rotation {id}")).into()),
        other => Err(unexpected(&other)),
    }
}

// ---------------------------------------------------------------------------------------
// Audit and JWKS
// ---------------------------------------------------------------------------------------

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// Only entries about this secret.
    secret: Option<String>,
    /// Only entries with this action (`get`, `set`, `rotate.request`, ...).
    action: Option<String>,
    /// Only entries by this actor (`token:tok_...`, `user:NAME`, `scheduler`).
    actor: Option<String>,
    /// A date (`2026-11-01`), an RFC 3339 time, or an age (`7d`, `12h`).
    since: Option<String>,
    /// The newest this many (default 100, at most 10,000).
    limit: Option<u64>,
    /// Only entries older than this sequence number: the next page back.
    before: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct AuditList {
    /// As `secret audit --json` prints them.
    #[schema(value_type = Vec<Object>)]
    entries: Vec<serde_json::Value>,
}

/// `since`: a date, an RFC 3339 time, or an age such as `7d`; in unix milliseconds.
pub(crate) fn parse_since(text: &str, now_ms: i64) -> Result<i64, ApiError> {
    secret_core::audit::parse_since(text, now_ms).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "since: expected {}",
            secret_core::audit::SINCE_FORMS
        ))
    })
}

/// Audit entries in sequence order: the newest `limit` that match (page back with
/// `before`, the oldest `seq` of the page). Scope `audit:read`. The query itself is
/// audited.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", security(("bearer" = [])),
    params(AuditQuery),
    responses(
        (status = 200, body = AuditList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
    ))]
pub(crate) async fn audit(
    State(state): State<AppState>,
    ctx: Ctx,
    QueryArgs(query): QueryArgs<AuditQuery>,
) -> Result<Json<AuditList>, ApiError> {
    let since_ms = match query.since.as_deref() {
        Some(text) => Some(parse_since(text, state.serve.clock.now_ms())?),
        None => None,
    };
    let filter = AuditFilter {
        secret: query.secret,
        action: query.action,
        actor: query.actor,
        since_ms,
        before_seq: query.before,
        limit: Some(query.limit.unwrap_or(DEFAULT_AUDIT).min(MAX_LIMIT)),
    };
    match state.call(ctx, Op::Audit { filter }).await? {
        Reply::Audit(entries) => Ok(Json(AuditList {
            entries: entries.iter().map(entry_json).collect(),
        })),
        other => Err(unexpected(&other)),
    }
}

/// Public keys of a `jwt-ed25519` secret (a JSON Web Key Set). No token needed.
#[utoipa::path(get, path = "/v1/jwks/{name}", tag = "secrets",
    params(("name" = String, Path, description = "Secret name")),
    responses(
        (status = 200, description = "JSON Web Key Set", body = Object,
            example = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "...", "x": "..."}]})),
        (status = 404, body = ErrorBody),
    ))]
pub(crate) async fn jwks(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    match state.call(ctx, Op::Jwks { name }).await? {
        Reply::Jwks(keys) => Ok(Json(keys)),
        other => Err(unexpected(&other)),
    }
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "health",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub(crate) async fn openapi(State(state): State<AppState>) -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        state.openapi.as_ref().clone(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_dates_times_and_ages() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_since("7d", now).unwrap(), now - 7 * 86_400_000);
        assert_eq!(parse_since("2026-11-01", now).unwrap(), 1_793_491_200_000);
        assert_eq!(
            parse_since("2026-11-01T12:00:00Z", now).unwrap(),
            1_793_534_400_000
        );
        assert!(parse_since("yesterday", now).is_err());
    }

    #[test]
    fn if_match_takes_quoted_or_bare_versions() {
        let mut h = HeaderMap::new();
        assert_eq!(if_match(&h).unwrap(), None);
        h.insert(IF_MATCH, HeaderValue::from_static("\"3\""));
        assert_eq!(if_match(&h).unwrap(), Some(3));
        h.insert(IF_MATCH, HeaderValue::from_static("4"));
        assert_eq!(if_match(&h).unwrap(), Some(4));
        h.insert(IF_MATCH, HeaderValue::from_static("*"));
        assert!(if_match(&h).is_err());
    }
}
