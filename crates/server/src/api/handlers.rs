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
use secret_core::model::{InputError, Label, Revealed, SecretName, SecretValue, MAX_VALUE_BYTES};
use secret_core::render::{entry_json, rfc3339, rotation_body, RotationBody};
use secret_core::rotation_state::RunState;
use secret_core::vault::{CallError, Op, Reply, Vault};
use secret_rotation::Outcome;
use std::collections::HashMap;
use std::sync::Arc;

/// `limit` as documented: 0 to 2^63 - 1, more than [`MAX_LIMIT`] taken as that.
fn limit_of(limit: Option<u64>, default: u64) -> Result<u64, ApiError> {
    match limit {
        Some(n) if i64::try_from(n).is_err() => Err(ApiError::BadRequest(
            "limit: at most 9223372036854775807 (and more than 10000 is taken as 10000)".into(),
        )),
        n => Ok(n.unwrap_or(default).min(MAX_LIMIT)),
    }
}

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

/// Readiness, and which instance answers and whether it runs the rotations.
#[derive(Serialize, ToSchema)]
pub(crate) struct ReadyBody {
    #[schema(example = "ready")]
    status: &'static str,
    /// This instance's id (`secret serve --instance-id`).
    #[schema(example = "web-7f9c:41")]
    instance: String,
    /// Whether this instance holds the scheduler lease (at most one of several does).
    leader: bool,
}

impl ReadyBody {
    fn of(state: &AppState) -> Json<Self> {
        let metrics = &state.serve.metrics;
        Json(ReadyBody {
            status: "ready",
            instance: metrics.instance.clone(),
            leader: metrics.scheduler_leader.get() == 1,
        })
    }
}

/// Readiness: the vault is open and unlocked and its store takes writes. The body
/// names the instance and says whether it leads the scheduler.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready to serve", body = ReadyBody),
        (status = 503, description = "The vault cannot take writes", body = ErrorBody),
    ))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<ReadyBody>, ApiError> {
    // A success is reused for a second: this route is public, and each check takes the
    // vault's write lock, so a flood of probes must not take the vault thread's time.
    let fresh = state
        .ready_at
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_some_and(|at| at.elapsed() < READY_FOR);
    if fresh {
        return Ok(ReadyBody::of(&state));
    }
    match state.serve.vault.run(|v| v.check_writable()).await {
        Ok(Ok(())) => {
            *state.ready_at.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(std::time::Instant::now());
            Ok(ReadyBody::of(&state))
        }
        Ok(Err(e)) | Err(e) => Err(ApiError::Unavailable {
            message: "the vault is not ready: its store does not take writes",
            detail: e.to_string(),
        }),
    }
}

/// How long a successful readiness check is reused.
const READY_FOR: std::time::Duration = std::time::Duration::from_secs(1);

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
    #[param(minimum = 1, maximum = 9_223_372_036_854_775_807_u64)]
    version: Option<u64>,
    /// `current`, `previous` or `pending`. With `version` too, that version must carry
    /// the label (else 404).
    #[param(inline)]
    label: Option<LabelParam>,
}

/// `?label=`: one of the three labels.
/// A label, as the query and the document spell it.
#[derive(Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LabelParam {
    Current,
    Previous,
    Pending,
}

impl From<LabelParam> for Label {
    fn from(l: LabelParam) -> Self {
        match l {
            LabelParam::Current => Label::Current,
            LabelParam::Previous => Label::Previous,
            LabelParam::Pending => Label::Pending,
        }
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
    params(("name" = String, Path, description = "Secret name", pattern = "^[A-Za-z_][A-Za-z0-9_]*$", max_length = 255, min_length = 1), ReadQuery),
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
    let label = query.label.map(Label::from);
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
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WriteBody {
    /// The new value: UTF-8, 1 byte to 64 KiB (0 bytes with `allow_empty`).
    value: Option<SecretString>,
    /// Instead of `value`: the server generates one with its system RNG, and it never
    /// crosses the network.
    generate: Option<GenerateSpec>,
    /// Compare-and-set: the current version must be this (0: the secret must not exist).
    /// `If-Match: "N"` says the same.
    #[serde(default, deserialize_with = "integral")]
    if_version: Option<u64>,
    /// Replaces the secret's description.
    description: Option<String>,
    /// Accept an empty `value`.
    #[serde(default)]
    allow_empty: bool,
}

/// The document states the rule the handler keeps: exactly one of `value` (a string;
/// empty only with `allow_empty: true`) and `generate`. Three object shapes, one of
/// which a body must match; the other field may be absent or null.
impl utoipa::PartialSchema for WriteBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{Object, ObjectBuilder, OneOfBuilder, Type};
        use utoipa::openapi::Ref;
        let null = || Object::with_type(Type::Null);
        let shape = |value: Object, generate: utoipa::openapi::RefOr<_>, required: &[&str]| {
            let mut b = ObjectBuilder::new()
                .schema_type(Type::Object)
                .additional_properties(Some(
                    utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
                ))
                .property("value", value)
                .property("generate", generate)
                .property(
                    "if_version",
                    ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
                            Type::Integer,
                            Type::Null,
                        ]))
                        .minimum(Some(0))
                        .maximum(Some(9_007_199_254_740_991_u64))
                        .description(Some(
                            "Compare-and-set: the current version must be this (0: the \
                             secret must not exist). `If-Match: \"N\"` says the same.",
                        )),
                )
                .property(
                    "description",
                    ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
                            Type::String,
                            Type::Null,
                        ]))
                        .description(Some("Replaces the secret's description.")),
                );
            let allow_empty = ObjectBuilder::new()
                .schema_type(Type::Boolean)
                .description(Some("Accept an empty `value`."));
            b = if required.contains(&"allow_empty") {
                b.property("allow_empty", allow_empty.enum_values(Some([true])))
            } else {
                b.property("allow_empty", allow_empty)
            };
            for r in required {
                b = b.required(*r);
            }
            b.build()
        };
        let value = |min: usize, max: usize| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(min))
                .max_length(Some(max))
                .description(Some(
                    "The new value: UTF-8, at most 64 KiB (a longer one is 413).",
                ))
                .build()
        };
        let spec = || utoipa::openapi::RefOr::Ref(Ref::from_schema_name("GenerateSpec"));
        OneOfBuilder::new()
            .item(shape(value(1, 65536), null().into(), &["value"]))
            .item(shape(value(0, 0), null().into(), &["value", "allow_empty"]))
            .item(shape(null(), spec(), &["generate"]))
            .description(Some(
                "A write: a `value`, or a value the server generates (`generate`), never both.",
            ))
            .into()
    }
}

impl ToSchema for WriteBody {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            "GenerateSpec".into(),
            <GenerateSpec as utoipa::PartialSchema>::schema(),
        ));
        <GenerateSpec as ToSchema>::schemas(schemas);
    }
}

/// How the server generates a value (as `secret set --generate` does).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GenerateSpec {
    /// Characters, 1 to 65536 (default 32).
    #[schema(minimum = 1, maximum = 65536)]
    length: Option<u32>,
    /// `alnum` (default), `hex` or `base64url`.
    charset: Option<CharsetParam>,
}

/// The characters of a generated value.
#[derive(Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum CharsetParam {
    Alnum,
    Hex,
    Base64url,
}

/// A generated value, or why the spec is refused.
fn generated(spec: &GenerateSpec) -> Result<Result<SecretValue, InputError>, ApiError> {
    let charset = match spec.charset.unwrap_or(CharsetParam::Alnum) {
        CharsetParam::Alnum => Charset::Alnum,
        CharsetParam::Hex => Charset::Hex,
        CharsetParam::Base64url => Charset::Base64Url,
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

/// A JSON integer, as JSON Schema counts them: `3` and `3.0` alike.
fn integral<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(u) = n.as_u64() {
        return Ok(Some(u));
    }
    match n.as_f64() {
        // Below 2^53 an integral f64 is exact.
        Some(f) if f.fract() == 0.0 && (0.0..9_007_199_254_740_992.0).contains(&f) => {
            Ok(Some(f as u64))
        }
        _ => Err(D::Error::custom("if_version: a whole number from 0")),
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Written {
    name: String,
    version: u64,
}

/// What `If-Match` takes, exactly: one version number, quoted or not. The document
/// states it (utoipa needs the literal there; a test keeps the two equal).
#[cfg_attr(not(test), allow(dead_code))]
const IF_MATCH_PATTERN: &str = r#"^[ \t]*("[0-9]{1,19}"|[0-9]{1,19})[ \t]*$"#;

/// `If-Match: "3"` or `If-Match: 3` ([`IF_MATCH_PATTERN`]).
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(raw) = headers.get(IF_MATCH) else {
        return Ok(None);
    };
    let bad = || ApiError::BadRequest("If-Match takes one version number, such as \"3\"".into());
    let text = raw.to_str().map_err(|_| bad())?.trim_matches([' ', '\t']);
    let digits = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    digits.parse::<u64>().map(Some).map_err(|_| bad())
}

/// Writes a new version (given, or generated by the server) and makes it current.
/// Scope `secrets:write:<glob>`.
#[utoipa::path(put, path = "/v1/secrets/{name}", tag = "secrets", security(("bearer" = [])),
    params(("name" = String, Path, description = "Secret name", pattern = "^[A-Za-z_][A-Za-z0-9_]*$", max_length = 255, min_length = 1),
        ("If-Match" = Option<String>, Header, nullable = false, description = "Compare-and-set: the current version, e.g. \"3\"",
            pattern = r#"^[ \t]*("[0-9]{1,19}"|[0-9]{1,19})[ \t]*$"#)),
    request_body = WriteBody,
    responses(
        (status = 200, body = Written),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, description = "The secret is deleted", body = ErrorBody),
        (status = 409, description = "The current version is not if_version (or If-Match), or a rotation is running", body = ErrorBody),
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
        // The current version cannot be both: at least one precondition fails.
        (Some(a), Some(b)) if a != b => {
            return Err(VaultError::Conflict(format!(
                "If-Match ({a}) and if_version ({b}) disagree: the current version cannot be both; send one of them"
            ))
            .into())
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
    params(("name" = String, Path, description = "Secret name", pattern = "^[A-Za-z_][A-Za-z0-9_]*$", max_length = 255, min_length = 1)),
    responses(
        (status = 200, body = VersionList),
        (status = 400, description = "Not a secret name", body = ErrorBody),
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
    params(("name" = String, Path, description = "Secret name", pattern = "^[A-Za-z_][A-Za-z0-9_]*$", max_length = 255, min_length = 1)),
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
    #[schema(value_type = Option<Vec<SecretNameSchema>>)]
    only: Option<Vec<String>>,
    /// `export` (default) or `run`: recorded with each read.
    purpose: Option<Purpose>,
}

/// Why values are exported: recorded with each read.
#[derive(Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Purpose {
    Export,
    Run,
}

/// A secret name, as names are everywhere: an environment variable's (the document's
/// view only; the vault validates names itself).
pub(crate) struct SecretNameSchema;

impl utoipa::PartialSchema for SecretNameSchema {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[A-Za-z_][A-Za-z0-9_]*$"))
            .min_length(Some(1))
            .max_length(Some(255))
            .into()
    }
}

impl ToSchema for SecretNameSchema {}

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
    let purpose = match body.purpose.unwrap_or(Purpose::Export) {
        Purpose::Export => "export",
        Purpose::Run => "run",
    }
    .to_string();
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

const NO_SCHEDULER: &str =
    "the scheduler is not running in this server; run `secret rotate` instead";

/// Starts a rotation now. Scope `rotate:<glob>`. The secret needs a policy with a
/// generator (not `manual`); the scheduler picks the request up. When the secret has a
/// rotation open already (requested, interrupted, or stopped in a step), that is the
/// one the answer names and the scheduler goes on with, as `secret rotate NAME` does:
/// never a second run beside it.
#[utoipa::path(post, path = "/v1/secrets/{name}/rotate", tag = "rotations", security(("bearer" = [])),
    params(("name" = String, Path, description = "Secret name", pattern = "^[A-Za-z_][A-Za-z0-9_]*$", max_length = 255, min_length = 1)),
    responses(
        (status = 202, description = "Queued; GET the Location to follow it", body = RotationQueued),
        (status = 400, description = "Not a secret name", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No policy for this secret", body = ErrorBody),
        (status = 409, description = "The secret has no value yet, or it is a manual secret (code `not_rotatable`: set by a person, never rotated)", body = ErrorBody),
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
    // caller learns nothing about the policies or whether the scheduler runs (401/403
    // before 404/409/503).
    let no_scheduler = state.serve.rotate.is_closed();
    // The same check, in the same words, as `secret rotate NAME`.
    let rotatable = if no_scheduler {
        Err(VaultError::Conflict(NO_SCHEDULER.into()))
    } else {
        secret_rotation::rotatable(&state.serve.policies, &name)
            .map(|policy| policy.generator.name().to_string())
    };
    let manual = matches!(rotatable, Err(VaultError::Usage(_)));
    let answer = state
        .call(
            ctx,
            Op::Rotate {
                name: name.clone(),
                rotation_id,
                rotatable,
            },
        )
        .await;
    let rotation_id = match answer {
        // Authenticated and in scope, but nothing here would run the rotation.
        Err(ApiError::Call(CallError::Vault(VaultError::Conflict(_)))) if no_scheduler => {
            return Err(ApiError::Unavailable {
                message: NO_SCHEDULER,
                detail: "rotate request while serving with --no-scheduler".into(),
            })
        }
        Err(ApiError::Call(CallError::Vault(VaultError::Usage(m)))) if manual => {
            return Err(ApiError::NotRotatable(m))
        }
        answer => answer?,
    };
    let rotation_id = match rotation_id {
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
    #[param(pattern = "^[A-Za-z_][A-Za-z0-9_]*$", max_length = 255, min_length = 1)]
    secret: Option<String>,
    /// At most this many, newest first (default 50; more than 10,000 is 10,000).
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_u64)]
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
    let limit = limit_of(query.limit, DEFAULT_ROTATIONS)?;
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
    /// A date (`2026-11-01`), a UTC time (`2026-11-01T12:00:00Z`), or an age (`7d`,
    /// `12h`; units s, m, h, d, w).
    #[param(
        pattern = r"^([0-9]{1,9}[smhdw]|[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z)?)$"
    )]
    since: Option<String>,
    /// The newest this many (default 100; more than 10,000 is 10,000).
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_u64)]
    limit: Option<u64>,
    /// Only entries older than this sequence number: the next page back.
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_u64)]
    before: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct AuditList {
    /// As `secret audit --json` prints them.
    #[schema(value_type = Vec<Object>)]
    entries: Vec<serde_json::Value>,
}

/// The grammar of `since` that the API documents and accepts, exactly: an age (`7d`:
/// 1 to 9 digits and one of s, m, h, d, w), a date (`2026-11-01`, midnight UTC), or a
/// UTC time (`2026-11-01T12:00:00Z`, optional fraction). Fields past their range roll
/// over (`2026-02-30` is 2 March), as `timegm` does: every string this pattern matches
/// is a point in time. The document states it (a test keeps the two equal).
#[cfg_attr(not(test), allow(dead_code))]
const SINCE_PATTERN: &str = r"^([0-9]{1,9}[smhdw]|[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z)?)$";

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's `days_from_civil`),
/// with the month and day allowed past their range (they roll over).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let months = year * 12 + (month - 1);
    let (y, m) = (months.div_euclid(12), months.rem_euclid(12) + 1);
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468 + (day - 1)
}

/// `since` ([`SINCE_PATTERN`]) in unix milliseconds, or `None` if it does not match.
fn since_ms(text: &str, now_ms: i64) -> Option<i64> {
    let b = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        (!digits.is_empty() && digits.iter().all(u8::is_ascii_digit)).then(|| {
            digits
                .iter()
                .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'))
        })
    };
    if let Some((&unit, digits)) = b.split_last() {
        if (1..=9).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit) {
            let unit_ms: i64 = match unit {
                b's' => 1_000,
                b'm' => 60_000,
                b'h' => 3_600_000,
                b'd' => 86_400_000,
                b'w' => 604_800_000,
                _ => return None,
            };
            let n = number(0..digits.len())?;
            return Some(now_ms.saturating_sub(n.saturating_mul(unit_ms)));
        }
    }
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let day = days_from_civil(number(0..4)?, number(5..7)?, number(8..10)?);
    let mut ms = day * 86_400_000;
    if b.len() == 10 {
        return Some(ms);
    }
    if b.len() < 20 || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[b.len() - 1] != b'Z' {
        return None;
    }
    ms += ((number(11..13)? * 60 + number(14..16)?) * 60 + number(17..19)?) * 1_000;
    let fraction = &b[19..b.len() - 1];
    if !fraction.is_empty() {
        if fraction[0] != b'.' || !(2..=10).contains(&fraction.len()) {
            return None;
        }
        let digits = number(20..b.len() - 1)?;
        // Milliseconds: the first three digits of the fraction.
        let places = u32::try_from(fraction.len() - 1).ok()?;
        ms += if places >= 3 {
            digits / 10_i64.pow(places - 3)
        } else {
            digits * 10_i64.pow(3 - places)
        };
    }
    Some(ms)
}

/// `since` in unix milliseconds, or 400 saying what it takes.
pub(crate) fn parse_since(text: &str, now_ms: i64) -> Result<i64, ApiError> {
    since_ms(text, now_ms).ok_or_else(|| {
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
        before_seq: match query.before {
            Some(n) if i64::try_from(n).is_err() => {
                return Err(ApiError::BadRequest(
                    "before: a sequence number, at most 9223372036854775807".into(),
                ))
            }
            n => n,
        },
        limit: Some(limit_of(query.limit, DEFAULT_AUDIT)?),
    };
    match state.call(ctx, Op::Audit { filter }).await? {
        Reply::Audit(entries) => Ok(Json(AuditList {
            entries: entries.iter().map(entry_json).collect(),
        })),
        other => Err(unexpected(&other)),
    }
}

/// Public keys of a `jwt-ed25519` secret (a JSON Web Key Set). No token needed.
/// Not one audit entry per request: this route is public, so its reads are counted in
/// the tally (see [`super::tally`]).
#[utoipa::path(get, path = "/v1/jwks/{name}", tag = "secrets",
    params(("name" = String, Path, description = "Secret name", pattern = "^[A-Za-z_][A-Za-z0-9_]*$", max_length = 255, min_length = 1)),
    responses(
        (status = 200, description = "JSON Web Key Set", body = Object,
            example = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "...", "x": "..."}]})),
        (status = 400, description = "Not a secret name", body = ErrorBody),
        (status = 404, description = "No such secret, or it has no public keys", body = ErrorBody),
    ))]
pub(crate) async fn jwks(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let cache = state.jwks.clone();
    let keys = state
        .serve
        .vault
        .run(move |vault| public_keys(vault, &name, &cache))
        .await??;
    Ok(Json(keys.as_ref().clone()))
}

/// Which versions a JWKS lists: current, previous while its rotation is in grace, and
/// pending. The keys only change when these do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Published {
    current: Option<u64>,
    previous: Option<u64>,
    pending: Option<u64>,
}

/// Public keys by secret name, with the versions they were read from.
#[derive(Debug, Default)]
pub(crate) struct JwksCache {
    // A std Mutex: used on the vault thread for a map lookup, never across an await.
    by_name: std::sync::Mutex<HashMap<String, (Published, Arc<serde_json::Value>)>>,
}

/// Secrets whose keys are cached at most (only names that have keys are cached).
const MAX_CACHED_JWKS: usize = 256;

/// The JWKS of `raw`, read without an audit entry: the labels on every request (so a
/// rotation shows at once), the keys only when the labels changed.
fn public_keys(
    vault: &mut Vault,
    raw: &str,
    cache: &JwksCache,
) -> Result<Arc<serde_json::Value>, VaultError> {
    let name = SecretName::new(raw)?;
    // One answer for "no such secret", "deleted" and "not an Ed25519 secret": this
    // route needs no token, so it must not tell which names exist.
    let none = || VaultError::NotFound(format!("no JWKS for {name}"));
    let row = vault
        .secret_state(name.as_str())?
        .filter(|row| row.deleted_at_ms.is_none())
        .ok_or_else(none)?;
    // The previous key stays published only while its rotation is in grace: removing
    // it from the JWKS is what retires it.
    let in_grace = vault.open_rotations()?.iter().any(|r| {
        r.secret == name.as_str()
            && r.state == RunState::Grace
            && r.old_version == row.previous_version
    });
    let published = Published {
        current: row.current_version,
        previous: row.previous_version.filter(|_| in_grace),
        pending: row.pending_version,
    };
    let mut by_name = cache.by_name.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((seen, keys)) = by_name.get(name.as_str()) {
        if *seen == published {
            return Ok(keys.clone());
        }
    }
    let mut keys = Vec::new();
    for version in [published.current, published.previous, published.pending]
        .into_iter()
        .flatten()
    {
        match vault.version_meta(name.as_str(), version) {
            Ok(meta) => {
                if let Some(jwk) = meta.get("jwk") {
                    keys.push(jwk.clone());
                }
            }
            Err(VaultError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    if keys.is_empty() {
        by_name.remove(name.as_str());
        return Err(none());
    }
    let keys = Arc::new(serde_json::json!({ "keys": keys }));
    if by_name.len() >= MAX_CACHED_JWKS && !by_name.contains_key(name.as_str()) {
        by_name.clear();
    }
    by_name.insert(name.to_string(), (published, keys.clone()));
    Ok(keys)
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
    fn since_takes_exactly_its_documented_grammar() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_since("12h", now).unwrap(), now - 12 * 3_600_000);
        assert_eq!(parse_since("3w", now).unwrap(), now - 3 * 604_800_000);
        assert_eq!(parse_since("1970-01-01", now).unwrap(), 0);
        assert_eq!(parse_since("2000-03-01", now).unwrap(), 951_868_800_000);
        assert_eq!(
            parse_since("2026-11-01T12:00:00.5Z", now).unwrap(),
            1_793_534_400_500
        );
        assert_eq!(
            parse_since("2026-11-01T12:00:00.123456789Z", now).unwrap(),
            1_793_534_400_123
        );
        // Out-of-range fields roll over: 30 February is 2 March (2026 is no leap year).
        assert_eq!(
            parse_since("2026-02-30", now).unwrap(),
            parse_since("2026-03-02", now).unwrap()
        );
        assert_eq!(
            parse_since("2026-13-01", now).unwrap(),
            parse_since("2027-01-01", now).unwrap()
        );
        assert!(
            parse_since("0000-00-00", now).is_ok(),
            "every match is a time"
        );
        assert_eq!(
            parse_since("999999999w", now).unwrap(),
            now - 999_999_999 * 604_800_000
        );
        for bad in [
            "",
            "7",
            "d",
            "7 d",
            "7days",
            "1h30m",
            "1234567890s",
            "2026-11-1",
            "2026-11-01T12:00:00",
            "2026-11-01T12:00Z",
            "2026-11-01T12:00:00.Z",
            "2026-11-01T12:00:00+01:00",
            "2026-11-01 12:00:00Z",
            "+7d",
            "-7d",
            "٣d",
        ] {
            assert!(parse_since(bad, now).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_document_states_the_grammars_the_handlers_enforce() {
        let doc = serde_json::to_value(super::super::openapi()).unwrap();
        let params = |path: &str, method: &str| {
            doc["paths"][path][method]["parameters"]
                .as_array()
                .unwrap()
                .clone()
        };
        let pattern_of = |params: &[serde_json::Value], name: &str| {
            params
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("no {name}"))["schema"]["pattern"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            pattern_of(&params("/v1/audit", "get"), "since"),
            SINCE_PATTERN
        );
        assert_eq!(
            pattern_of(&params("/v1/secrets/{name}", "put"), "If-Match"),
            IF_MATCH_PATTERN
        );
        for (path, method) in [
            ("/v1/secrets/{name}", "get"),
            ("/v1/secrets/{name}", "put"),
            ("/v1/secrets/{name}/versions", "get"),
            ("/v1/secrets/{name}/rotate", "post"),
            ("/v1/jwks/{name}", "get"),
        ] {
            let p = params(path, method);
            let name = p.iter().find(|p| p["name"] == "name").unwrap();
            assert_eq!(
                name["schema"]["pattern"], "^[A-Za-z_][A-Za-z0-9_]*$",
                "{method} {path}"
            );
            assert_eq!(name["schema"]["maxLength"], 255, "{method} {path}");
            let answers = doc["paths"][path][method]["responses"].as_object().unwrap();
            assert!(
                answers.contains_key("400"),
                "{method} {path} answers 400 to a bad name"
            );
        }
        // A write is one of three shapes, each closed: a value (1 byte on), an empty
        // value with allow_empty, or generate.
        let shapes = doc["components"]["schemas"]["WriteBody"]["oneOf"]
            .as_array()
            .unwrap();
        assert_eq!(shapes.len(), 3);
        assert_eq!(shapes[0]["properties"]["value"]["minLength"], 1);
        assert_eq!(shapes[1]["properties"]["value"]["maxLength"], 0);
        assert_eq!(shapes[1]["properties"]["allow_empty"]["enum"][0], true);
        assert_eq!(shapes[2]["required"][0], "generate");
        for shape in shapes {
            assert_eq!(shape["additionalProperties"], false, "{shape}");
        }
    }

    #[test]
    fn if_match_takes_quoted_or_bare_versions() {
        let mut h = HeaderMap::new();
        assert_eq!(if_match(&h).unwrap(), None);
        h.insert(IF_MATCH, HeaderValue::from_static("\"3\""));
        assert_eq!(if_match(&h).unwrap(), Some(3));
        h.insert(IF_MATCH, HeaderValue::from_static("4"));
        assert_eq!(if_match(&h).unwrap(), Some(4));
        h.insert(IF_MATCH, HeaderValue::from_static(" \"5\"\t"));
        assert_eq!(if_match(&h).unwrap(), Some(5));
        for bad in [
            "*",
            "null",
            "+5",
            "\"5",
            "5\"",
            "",
            "12345678901234567890",
            "W/\"5\"",
        ] {
            h.insert(IF_MATCH, HeaderValue::from_str(bad).unwrap());
            assert!(if_match(&h).is_err(), "{bad:?}");
        }
    }
}
