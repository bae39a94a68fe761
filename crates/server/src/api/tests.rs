//! The API end to end on a real vault in a temp dir, through `app(state)` with no
//! socket (one test binds 127.0.0.1:0 to check client addresses).
//!
//! `tower` is not a direct dependency, so there is no `ServiceExt::oneshot`; the
//! router is wrapped in a `MethodRouter` (`any_service`), whose `Handler::call` sends
//! one request through it the same way.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::handler::Handler;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::any_service;
use secrecy::ExposeSecret;
use serde_json::Value;
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use super::*;
use crate::metrics::Metrics;
use crate::service::{RotateRequest, ServeState, VaultService};
use secret_core::audit::{Actor, AuditFilter, Entry};
use secret_core::model::{SecretValue, VersionSelector};
use secret_core::vault::{InitOptions, SetOptions, Vault};
use secret_rotation::{Engine, EngineOptions, Request as RotationRequest};

const OPENAI_VALUE: &str = "sk-openai-TESTVALUE-1111";
const JWT_VALUE: &str = "jwt-TESTVALUE-2222";

const POLICY: &str = r#"
[secrets.SIGNING_KEY]
generator = "jwt-ed25519"
every = "30d"

[secrets.JWT_SECRET]
generator = "jwt-hmac"
algorithm = "HS256"
every = "30d"

[secrets.LEGACY_PASSWORD]
generator = "manual"
max_age = "90d"
"#;

struct Token {
    id: String,
    text: String,
}

struct Env {
    _dir: tempfile::TempDir,
    state: ServeState,
    app: Router,
    queued: mpsc::Receiver<RotateRequest>,
    /// The private key the engine minted for SIGNING_KEY.
    signing_value: String,
    admin: Token,
    openai_reader: Token,
    lister: Token,
    jwt_rotator: Token,
    writer: Token,
    auditor: Token,
    expired: Token,
    revoked: Token,
}

fn value(text: &str) -> Result<SecretValue, secret_core::model::InputError> {
    SecretValue::from_bytes(Zeroizing::new(text.as_bytes().to_vec()), false)
}

fn token(vault: &mut Vault, name: &str, scopes: &[&str], ttl: Option<Duration>) -> Token {
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    let (row, text) = vault.create_token(name, &scopes, ttl).unwrap();
    Token {
        id: row.id,
        text: text.expose_secret().to_string(),
    }
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let identity = secret_core::crypto::generate_identity("2026-01-01T00:00:00Z");
    let actor = Actor {
        name: "user:test".into(),
        pid: None,
        request_id: "test".into(),
    };
    let options = InitOptions {
        recipients: vec![identity.recipient.clone()],
        passphrase: None,
        scrypt_log_n: None,
    };
    let mut vault = Vault::init(&dir.path().join("vault.db"), options, actor).unwrap();
    vault
        .set(
            "OPENAI_API_KEY",
            value(OPENAI_VALUE),
            &SetOptions::default(),
        )
        .unwrap();
    vault
        .set("JWT_SECRET", value(JWT_VALUE), &SetOptions::default())
        .unwrap();
    vault
        .set(
            "LEGACY_PASSWORD",
            value("legacy-TESTVALUE-3333"),
            &SetOptions::default(),
        )
        .unwrap();
    let admin = token(&mut vault, "admin", &["admin"], None);
    let openai_reader = token(&mut vault, "openai", &["secrets:read:OPENAI_*"], None);
    let lister = token(&mut vault, "lister", &["secrets:list"], None);
    let jwt_rotator = token(&mut vault, "rotator", &["rotate:JWT_*"], None);
    let writer = token(
        &mut vault,
        "writer",
        &["secrets:write:APP_*", "secrets:read:APP_*"],
        None,
    );
    let auditor = token(&mut vault, "auditor", &["audit:read"], None);
    let expired = token(
        &mut vault,
        "expired",
        &["admin"],
        Some(Duration::from_millis(1)),
    );
    let revoked = token(&mut vault, "revoked", &["admin"], None);
    assert!(vault.revoke_token(&revoked.id).unwrap());
    std::thread::sleep(Duration::from_millis(5));

    // A real rotation of an Ed25519 key, for /v1/rotations and /v1/jwks.
    let policies = secret_core::policy::parse_str(Path::new("policies/test.toml"), POLICY).unwrap();
    let mut engine = Engine::new(
        vault.another_connection().unwrap(),
        policies.clone(),
        EngineOptions::default(),
    )
    .unwrap();
    let report = engine
        .run(RotationRequest::Names(vec!["SIGNING_KEY".into()]))
        .await
        .unwrap();
    assert_eq!(report.exit_code(), 0);
    let signing_value = vault
        .get(
            "SIGNING_KEY",
            VersionSelector::Label(secret_core::model::Label::Current),
        )
        .unwrap()
        .value
        .expose()
        .to_string();
    drop(engine);

    let clock = vault.clock();
    let (service, _thread) = VaultService::start(vault);
    let (rotate, queued) = mpsc::channel(16);
    let state = ServeState {
        clock,
        vault: service,
        metrics: Arc::new(Metrics::new()),
        passes: Arc::new(crate::passes::PassLog::default()),
        rotate,
        policies: Arc::new(policies),
        trust_forwarded_for: false,
        tally: Default::default(),
    };
    Env {
        _dir: dir,
        app: app(state.clone()),
        state,
        queued,
        signing_value,
        admin,
        openai_reader,
        lister,
        jwt_rotator,
        writer,
        auditor,
        expired,
        revoked,
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// Asserts the error shape and returns its code.
    fn error_code(&self) -> String {
        let v = self.json();
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "an error has a message: {}", self.body);
        v["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code: {}", self.body))
            .to_string()
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

fn request(method: Method, path: &str, token: Option<&Token>) -> axum::http::request::Builder {
    let mut builder = axum::http::Request::builder().method(method).uri(path);
    if let Some(t) = token {
        builder = builder.header("authorization", format!("Bearer {}", t.text));
    }
    builder
}

/// Sends one request through the router (no socket).
async fn send(app: &Router, request: axum::http::Request<Body>) -> Answer {
    let response = Handler::call(any_service(app.clone()), request, ()).await;
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

async fn get(env: &Env, path: &str, token: Option<&Token>) -> Answer {
    send(
        &env.app,
        request(Method::GET, path, token)
            .body(Body::empty())
            .unwrap(),
    )
    .await
}

async fn put(env: &Env, path: &str, token: Option<&Token>, body: &str) -> Answer {
    let req = request(Method::PUT, path, token)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    send(&env.app, req).await
}

async fn post(env: &Env, path: &str, token: Option<&Token>) -> Answer {
    send(
        &env.app,
        request(Method::POST, path, token)
            .body(Body::empty())
            .unwrap(),
    )
    .await
}

async fn audit_log(env: &Env) -> Vec<Entry> {
    env.state
        .vault
        .run(|v| {
            v.audit_entries(
                &AuditFilter::default(),
                secret_core::action::Action::AuditRead,
            )
        })
        .await
        .unwrap()
        .unwrap()
}

fn assert_no_values(env: &Env, what: &str, body: &str) {
    for v in [
        OPENAI_VALUE,
        JWT_VALUE,
        "legacy-TESTVALUE-3333",
        env.signing_value.as_str(),
    ] {
        assert!(!body.contains(v), "{what} leaks a value: {body}");
    }
    assert!(
        !body.contains("TESTVALUE") && !body.contains("PRIVATE KEY"),
        "{what} leaks a value: {body}"
    );
}

#[tokio::test]
async fn health_readiness_and_metrics_need_no_token() {
    let env = env().await;
    let health = get(&env, "/healthz", None).await;
    assert_eq!(
        (health.status, health.json()),
        (StatusCode::OK, serde_json::json!({"status": "ok"}))
    );
    let ready = get(&env, "/readyz", None).await;
    assert_eq!(
        (ready.status, ready.json()),
        (
            StatusCode::OK,
            serde_json::json!({"status": "ready", "instance": "local", "leader": false})
        )
    );
    get(&env, "/v1/secrets/OPENAI_API_KEY", Some(&env.admin)).await;
    get(&env, "/v1/secrets", None).await;
    get(&env, "/no/such/route", None).await;

    let metrics = get(&env, "/metrics", None).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert_eq!(
        metrics.header("content-type"),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    for line in metrics
        .body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, number) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line}"));
        assert!(number.parse::<f64>().is_ok(), "not a float in {line:?}");
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "bad labels in {line:?}"
            );
        }
    }
    let text = &metrics.body;
    assert!(text.contains("secret_api_requests_total"), "{text}");
    for series in [
        r#"secret_api_requests_total{route="/healthz",status="200"} 1"#,
        r#"secret_api_requests_total{route="/v1/secrets/{name}",status="200"} 1"#,
        r#"secret_api_requests_total{route="/v1/secrets",status="401"} 1"#,
        r#"secret_api_requests_total{route="unmatched",status="404"} 1"#,
    ] {
        assert!(text.contains(series), "{series} missing from:\n{text}");
    }
    assert_no_values(&env, "/metrics", text);
}

#[tokio::test]
async fn listing_shows_metadata_and_needs_the_list_scope() {
    let env = env().await;
    for t in [&env.admin, &env.lister] {
        let list = get(&env, "/v1/secrets", Some(t)).await;
        assert_eq!(list.status, StatusCode::OK, "{}", list.body);
        let v = list.json();
        let names: BTreeSet<&str> = v["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert!(
            names.contains("OPENAI_API_KEY") && names.contains("JWT_SECRET"),
            "{names:?}"
        );
        let openai = v["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "OPENAI_API_KEY")
            .unwrap();
        assert_eq!(
            (openai["version"].as_u64(), openai["versions"].as_u64()),
            (Some(1), Some(1))
        );
        assert!(openai["created_at"].as_str().unwrap().ends_with('Z'));
        assert_no_values(&env, "the list", &list.body);
    }
    let forbidden = get(&env, "/v1/secrets", Some(&env.openai_reader)).await;
    assert_eq!(
        (forbidden.status, forbidden.error_code().as_str()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let anonymous = get(&env, "/v1/secrets", None).await;
    assert_eq!(
        (anonymous.status, anonymous.error_code().as_str()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    assert_eq!(anonymous.header("www-authenticate"), "Bearer");
}

#[tokio::test]
async fn a_token_scoped_to_openai_reads_openai_but_not_the_jwt_secret() {
    let env = env().await;
    let read = get(&env, "/v1/secrets/OPENAI_API_KEY", Some(&env.openai_reader)).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    let v = read.json();
    assert_eq!(
        (
            v["name"].as_str(),
            v["version"].as_u64(),
            v["value"].as_str()
        ),
        (Some("OPENAI_API_KEY"), Some(1), Some(OPENAI_VALUE))
    );
    assert!(v["created_at"].as_str().is_some());
    assert_eq!(read.header("etag"), "\"1\"");
    assert_eq!(read.header("cache-control"), "no-store");
    assert_eq!(read.header("content-type"), "application/json");

    let denied = get(&env, "/v1/secrets/JWT_SECRET", Some(&env.openai_reader)).await;
    assert_eq!(
        (denied.status, denied.error_code().as_str()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    assert_no_values(&env, "a 403", &denied.body);

    let by_number = get(
        &env,
        "/v1/secrets/OPENAI_API_KEY?version=1",
        Some(&env.admin),
    )
    .await;
    assert_eq!(by_number.json()["value"], OPENAI_VALUE);
    let missing_version = get(
        &env,
        "/v1/secrets/OPENAI_API_KEY?version=9",
        Some(&env.admin),
    )
    .await;
    assert_eq!(
        (
            missing_version.status,
            missing_version.error_code().as_str()
        ),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let missing = get(&env, "/v1/secrets/NO_SUCH_SECRET", Some(&env.admin)).await;
    assert_eq!(
        (missing.status, missing.error_code().as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let bad_query = get(
        &env,
        "/v1/secrets/OPENAI_API_KEY?version=abc",
        Some(&env.admin),
    )
    .await;
    assert_eq!(
        (bad_query.status, bad_query.error_code().as_str()),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
    let bad_name = get(
        &env,
        "/v1/secrets/sk-live-looks-like-a-value",
        Some(&env.admin),
    )
    .await;
    assert_eq!(
        (bad_name.status, bad_name.error_code().as_str()),
        (StatusCode::BAD_REQUEST, "invalid_name")
    );
    assert!(!bad_name.body.contains("sk-live"), "{}", bad_name.body);
}

#[tokio::test]
async fn expired_revoked_unknown_and_malformed_tokens_get_401() {
    let env = env().await;
    let unknown = Token {
        id: String::new(),
        text: format!("secret_0123456789abcdef.{}", "x".repeat(43)),
    };
    let garbage = Token {
        id: String::new(),
        text: "not-a-token".into(),
    };
    for (what, t) in [
        ("expired", &env.expired),
        ("revoked", &env.revoked),
        ("unknown", &unknown),
        ("garbage", &garbage),
    ] {
        let answer = get(&env, "/v1/secrets/OPENAI_API_KEY", Some(t)).await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{what}: {}",
            answer.body
        );
        assert_eq!(answer.error_code(), "unauthorized", "{what}");
        assert_eq!(answer.header("www-authenticate"), "Bearer");
        assert_no_values(&env, what, &answer.body);
    }
    let basic = send(
        &env.app,
        request(Method::GET, "/v1/secrets", None)
            .header("authorization", "Basic YTpi")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(basic.status, StatusCode::UNAUTHORIZED);
    // The vault says why, by token id.
    let revoked = get(&env, "/v1/secrets", Some(&env.revoked)).await;
    assert!(revoked.body.contains("revoked"), "{}", revoked.body);
    let expired = get(&env, "/v1/secrets", Some(&env.expired)).await;
    assert!(expired.body.contains("expired"), "{}", expired.body);
}

#[tokio::test]
async fn writes_make_versions_and_honour_compare_and_set() {
    let env = env().await;
    let first = put(
        &env,
        "/v1/secrets/APP_KEY",
        Some(&env.writer),
        r#"{"value":"app-TESTVALUE-a"}"#,
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(
        first.json(),
        serde_json::json!({"name": "APP_KEY", "version": 1})
    );
    let second = put(
        &env,
        "/v1/secrets/APP_KEY",
        Some(&env.writer),
        r#"{"value":"app-TESTVALUE-b","if_version":1}"#,
    )
    .await;
    assert_eq!(second.json()["version"], 2);
    assert_no_values(&env, "a write answer", &(first.body + &second.body));

    // If-Match: quoted or bare; a stale one is a conflict.
    let stale = send(
        &env.app,
        request(Method::PUT, "/v1/secrets/APP_KEY", Some(&env.writer))
            .header("content-type", "application/json")
            .header("if-match", "\"1\"")
            .body(Body::from(r#"{"value":"app-TESTVALUE-c"}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(
        (stale.status, stale.error_code().as_str()),
        (StatusCode::CONFLICT, "conflict")
    );
    let current = send(
        &env.app,
        request(Method::PUT, "/v1/secrets/APP_KEY", Some(&env.writer))
            .header("content-type", "application/json")
            .header("if-match", "2")
            .body(Body::from(r#"{"value":"app-TESTVALUE-c"}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(current.json()["version"], 3, "{}", current.body);
    let disagree = send(
        &env.app,
        request(Method::PUT, "/v1/secrets/APP_KEY", Some(&env.writer))
            .header("content-type", "application/json")
            .header("if-match", "\"3\"")
            .body(Body::from(r#"{"value":"app-TESTVALUE-d","if_version":2}"#))
            .unwrap(),
    )
    .await;
    // The current version cannot be both: a failed precondition, like any CAS miss.
    assert_eq!(
        (disagree.status, disagree.error_code().as_str()),
        (StatusCode::CONFLICT, "conflict")
    );
    let new_only = put(
        &env,
        "/v1/secrets/APP_KEY",
        Some(&env.writer),
        r#"{"value":"x","if_version":0}"#,
    )
    .await;
    assert_eq!(new_only.status, StatusCode::CONFLICT);

    let read = get(&env, "/v1/secrets/APP_KEY", Some(&env.writer)).await;
    assert_eq!(
        (read.json()["value"].as_str(), read.header("etag")),
        (Some("app-TESTVALUE-c"), "\"3\"")
    );

    // Scope, name and value checks.
    let denied = put(
        &env,
        "/v1/secrets/OPENAI_API_KEY",
        Some(&env.writer),
        r#"{"value":"nope"}"#,
    )
    .await;
    assert_eq!(
        (denied.status, denied.error_code().as_str()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let read_only = put(
        &env,
        "/v1/secrets/OPENAI_API_KEY",
        Some(&env.openai_reader),
        r#"{"value":"nope"}"#,
    )
    .await;
    assert_eq!(read_only.status, StatusCode::FORBIDDEN);
    let empty = put(
        &env,
        "/v1/secrets/APP_KEY",
        Some(&env.writer),
        r#"{"value":""}"#,
    )
    .await;
    assert_eq!(
        (empty.status, empty.error_code().as_str()),
        (StatusCode::BAD_REQUEST, "invalid_value")
    );
    let anonymous = put(&env, "/v1/secrets/APP_KEY", None, r#"{"value":"nope"}"#).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

    // The vault audited the refused empty value.
    let log = audit_log(&env).await;
    assert!(log.iter().any(|e| e.action == "set"
        && e.outcome == "invalid_value"
        && e.actor == format!("token:{}", env.writer.id)));
    assert!(log
        .iter()
        .any(|e| e.action == "set" && e.outcome == "conflict"));
}

#[tokio::test]
async fn malformed_json_and_wrong_content_types_get_400_with_a_message() {
    let env = env().await;
    let truncated = put(
        &env,
        "/v1/secrets/APP_KEY",
        Some(&env.writer),
        r#"{"value": "app-TESTVALUE"#,
    )
    .await;
    assert_eq!(
        (truncated.status, truncated.error_code().as_str()),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
    assert!(
        truncated.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("malformed JSON"),
        "{}",
        truncated.body
    );
    assert!(!truncated.body.contains("TESTVALUE"));

    let missing = put(
        &env,
        "/v1/secrets/APP_KEY",
        Some(&env.writer),
        r#"{"if_version": 1}"#,
    )
    .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert!(
        missing.body.contains("send either value or generate"),
        "{}",
        missing.body
    );

    // A value in the wrong field never comes back in the error.
    let misplaced = put(
        &env,
        "/v1/secrets/APP_KEY",
        Some(&env.writer),
        r#"{"value":"x","if_version":"sk-TESTVALUE-wrong-place"}"#,
    )
    .await;
    assert_eq!(misplaced.status, StatusCode::BAD_REQUEST);
    assert!(!misplaced.body.contains("TESTVALUE"), "{}", misplaced.body);
    let unknown_field = put(
        &env,
        "/v1/secrets/APP_KEY",
        Some(&env.writer),
        r#"{"value":"x","extra":true}"#,
    )
    .await;
    assert_eq!(unknown_field.status, StatusCode::BAD_REQUEST);

    let plain = send(
        &env.app,
        request(Method::PUT, "/v1/secrets/APP_KEY", Some(&env.writer))
            .header("content-type", "text/plain")
            .body(Body::from(r#"{"value":"x"}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(
        (plain.status, plain.error_code().as_str()),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
    assert!(plain.body.contains("application/json"), "{}", plain.body);
    let none = send(
        &env.app,
        request(Method::PUT, "/v1/secrets/APP_KEY", Some(&env.writer))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(none.status, StatusCode::BAD_REQUEST);

    let untouched = get(&env, "/v1/secrets/APP_KEY", Some(&env.writer)).await;
    assert_eq!(
        untouched.status,
        StatusCode::NOT_FOUND,
        "nothing was written"
    );
}

#[tokio::test]
async fn oversize_bodies_and_values_get_413() {
    let env = env().await;
    let huge = format!(r#"{{"value":"{}"}}"#, "a".repeat(BODY_LIMIT + 1));
    let answer = put(&env, "/v1/secrets/APP_KEY", Some(&env.writer), &huge).await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    // Under the body limit but over the 64 KiB value limit: the vault refuses it.
    let big_value = format!(
        r#"{{"value":"{}"}}"#,
        "a".repeat(secret_core::model::MAX_VALUE_BYTES + 1)
    );
    let answer = put(&env, "/v1/secrets/APP_KEY", Some(&env.writer), &big_value).await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    // 64 KiB of quotes: 128 KiB escaped, still accepted.
    let escaped = format!(
        r#"{{"value":"{}"}}"#,
        "\\\"".repeat(secret_core::model::MAX_VALUE_BYTES - 8)
    );
    let answer = put(&env, "/v1/secrets/APP_KEY", Some(&env.writer), &escaped).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let env = env().await;
    let missing = get(&env, "/v2/anything", Some(&env.admin)).await;
    assert_eq!(
        (missing.status, missing.error_code().as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    assert_eq!(
        missing.header("x-request-id").len(),
        16,
        "every answer has a request id"
    );
    let method = send(
        &env.app,
        request(Method::PATCH, "/v1/secrets/X", Some(&env.admin))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        (method.status, method.error_code().as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    let post_list = post(&env, "/v1/secrets", Some(&env.admin)).await;
    assert_eq!(post_list.status, StatusCode::METHOD_NOT_ALLOWED);
    post_list.error_code();
}

#[tokio::test]
async fn versions_list_labels_without_values() {
    let env = env().await;
    put(
        &env,
        "/v1/secrets/APP_KEY",
        Some(&env.writer),
        r#"{"value":"app-TESTVALUE-a"}"#,
    )
    .await;
    put(
        &env,
        "/v1/secrets/APP_KEY",
        Some(&env.writer),
        r#"{"value":"app-TESTVALUE-b"}"#,
    )
    .await;
    let answer = get(&env, "/v1/secrets/APP_KEY/versions", Some(&env.lister)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let v = answer.json();
    assert_eq!(
        (v["name"].as_str(), v["deleted"].as_bool()),
        (Some("APP_KEY"), Some(false))
    );
    let versions = v["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    let labels_of = |n: u64| versions.iter().find(|x| x["version"] == n).unwrap()["labels"].clone();
    assert_eq!(labels_of(2), serde_json::json!(["current"]));
    assert_eq!(labels_of(1), serde_json::json!(["previous"]));
    assert_eq!(versions[0]["destroyed"], false);
    assert_no_values(&env, "versions", &answer.body);

    let missing = get(&env, "/v1/secrets/NOPE/versions", Some(&env.admin)).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let denied = get(
        &env,
        "/v1/secrets/APP_KEY/versions",
        Some(&env.openai_reader),
    )
    .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let anonymous = get(&env, "/v1/secrets/APP_KEY/versions", None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn rotate_queues_a_request_for_a_secret_with_a_policy() {
    let mut env = env().await;
    let accepted = post(
        &env,
        "/v1/secrets/JWT_SECRET/rotate",
        Some(&env.jwt_rotator),
    )
    .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.body);
    let v = accepted.json();
    let id = v["rotation"].as_str().unwrap().to_string();
    assert!(
        id.len() == 16 && id.starts_with("rot_") && id[4..].bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(
        (v["secret"].as_str(), v["status"].as_str()),
        (Some("JWT_SECRET"), Some("queued"))
    );
    assert_eq!(accepted.header("location"), format!("/v1/rotations/{id}"));
    let queued = env.queued.try_recv().unwrap();
    assert_eq!(
        (queued.secret.as_str(), queued.rotation_id.as_str()),
        ("JWT_SECRET", id.as_str())
    );

    // 401 and 403 come before anything about policies.
    let anonymous = post(&env, "/v1/secrets/NO_POLICY/rotate", None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    for name in ["OPENAI_API_KEY", "NO_POLICY", "LEGACY_PASSWORD"] {
        let denied = post(
            &env,
            &format!("/v1/secrets/{name}/rotate"),
            Some(&env.jwt_rotator),
        )
        .await;
        assert_eq!(
            denied.status,
            StatusCode::FORBIDDEN,
            "{name}: {}",
            denied.body
        );
    }
    let no_policy = post(&env, "/v1/secrets/OPENAI_API_KEY/rotate", Some(&env.admin)).await;
    assert_eq!(
        (no_policy.status, no_policy.error_code().as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let manual = post(&env, "/v1/secrets/LEGACY_PASSWORD/rotate", Some(&env.admin)).await;
    // The refusal `secret rotate LEGACY_PASSWORD` prints; a 409 with its own code, which
    // remote mode turns into the same exit code (2, usage).
    assert_eq!(
        (manual.status, manual.error_code().as_str()),
        (StatusCode::CONFLICT, "not_rotatable")
    );
    assert!(
        manual
            .body
            .contains("LEGACY_PASSWORD is a manual secret: it is not rotated here"),
        "{}",
        manual.body
    );
    assert!(
        no_policy.body.contains(
            "no policy for OPENAI_API_KEY: add [secrets.OPENAI_API_KEY] to a file in the policies directory"
        ),
        "{}",
        no_policy.body
    );
    assert!(env.queued.try_recv().is_err(), "nothing else was queued");

    let log = audit_log(&env).await;
    let requested = log
        .iter()
        .find(|e| e.action == "rotate.request" && e.outcome == "ok")
        .unwrap();
    assert_eq!(requested.actor, format!("token:{}", env.jwt_rotator.id));
    assert!(requested.details.contains(&id));

    // Without a scheduler to take it (its end of the channel is gone): 503, not a hang.
    drop(std::mem::replace(&mut env.queued, mpsc::channel(1).1));
    let nobody = post(&env, "/v1/secrets/JWT_SECRET/rotate", Some(&env.admin)).await;
    assert_eq!(
        (nobody.status, nobody.error_code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    );
}

#[tokio::test]
async fn rotations_list_and_show_runs_with_their_steps() {
    let env = env().await;
    let list = get(&env, "/v1/rotations", Some(&env.auditor)).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    let runs = list.json()["rotations"].as_array().unwrap().clone();
    assert_eq!(runs.len(), 1, "{}", list.body);
    let run = &runs[0];
    assert_eq!(
        (run["secret"].as_str(), run["generator"].as_str()),
        (Some("SIGNING_KEY"), Some("jwt-ed25519"))
    );
    assert!(!run["steps"].as_array().unwrap().is_empty());
    assert!(run["started_at"].as_str().unwrap().ends_with('Z'));
    assert_no_values(&env, "rotations", &list.body);

    let id = run["id"].as_str().unwrap();
    let one = get(&env, &format!("/v1/rotations/{id}"), Some(&env.admin)).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json()["id"], id);
    assert_eq!(one.json()["steps"], run["steps"]);

    let filtered = get(
        &env,
        "/v1/rotations?secret=JWT_SECRET&limit=5",
        Some(&env.jwt_rotator),
    )
    .await;
    assert_eq!(
        (
            filtered.status,
            filtered.json()["rotations"].as_array().map(Vec::len)
        ),
        (StatusCode::OK, Some(0))
    );
    let not_theirs = get(&env, &format!("/v1/rotations/{id}"), Some(&env.jwt_rotator)).await;
    assert_eq!(not_theirs.status, StatusCode::FORBIDDEN);
    let all_denied = get(&env, "/v1/rotations", Some(&env.jwt_rotator)).await;
    assert_eq!(all_denied.status, StatusCode::FORBIDDEN);
    let missing = get(&env, "/v1/rotations/rot_000000000000", Some(&env.admin)).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let anonymous = get(&env, "/v1/rotations", None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let bad_limit = get(&env, "/v1/rotations?limit=-1", Some(&env.admin)).await;
    assert_eq!(bad_limit.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn audit_returns_entries_filtered_and_never_values() {
    let env = env().await;
    get(&env, "/v1/secrets/OPENAI_API_KEY", Some(&env.openai_reader)).await;
    let answer = get(
        &env,
        "/v1/audit?secret=OPENAI_API_KEY&since=7d&limit=5",
        Some(&env.auditor),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let entries = answer.json()["entries"].as_array().unwrap().clone();
    assert!(!entries.is_empty() && entries.len() <= 5);
    assert!(entries.iter().all(|e| e["secret"] == "OPENAI_API_KEY"));
    let read = entries
        .iter()
        .find(|e| e["actor"] == format!("token:{}", env.openai_reader.id))
        .unwrap();
    assert_eq!(
        (read["action"].as_str(), read["outcome"].as_str()),
        (Some("get"), Some("ok"))
    );
    assert!(read["mac"].as_str().is_some());
    assert_no_values(&env, "audit", &answer.body);

    let full = get(&env, "/v1/audit?since=2020-01-01", Some(&env.admin)).await;
    assert_eq!(full.status, StatusCode::OK);
    assert_no_values(&env, "the full audit log", &full.body);
    let future = get(
        &env,
        "/v1/audit?since=2999-01-01T00:00:00Z",
        Some(&env.admin),
    )
    .await;
    assert_eq!(future.json()["entries"].as_array().map(Vec::len), Some(0));
    let bad_since = get(&env, "/v1/audit?since=last-tuesday", Some(&env.admin)).await;
    assert_eq!(
        (bad_since.status, bad_since.error_code().as_str()),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
    let denied = get(&env, "/v1/audit", Some(&env.openai_reader)).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let anonymous = get(&env, "/v1/audit", None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn jwks_serves_public_keys_without_a_token() {
    let env = env().await;
    let answer = get(&env, "/v1/jwks/SIGNING_KEY", None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let keys = answer.json()["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "OKP");
    assert!(keys[0].get("d").is_none(), "no private part");
    assert_no_values(&env, "jwks", &answer.body);
    let not_asymmetric = get(&env, "/v1/jwks/JWT_SECRET", None).await;
    assert_eq!(
        (not_asymmetric.status, not_asymmetric.error_code().as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    assert_no_values(&env, "a jwks 404", &not_asymmetric.body);
    let missing = get(&env, "/v1/jwks/NOPE", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn every_request_is_audited_with_its_token_and_request_id() {
    let env = env().await;
    let with_id = send(
        &env.app,
        request(
            Method::GET,
            "/v1/secrets/OPENAI_API_KEY",
            Some(&env.openai_reader),
        )
        .header("x-request-id", "req-abc-123")
        .body(Body::empty())
        .unwrap(),
    )
    .await;
    assert_eq!(with_id.header("x-request-id"), "req-abc-123");
    let junk_id = send(
        &env.app,
        request(
            Method::GET,
            "/v1/secrets/JWT_SECRET",
            Some(&env.openai_reader),
        )
        .header("x-request-id", "x".repeat(200))
        .body(Body::empty())
        .unwrap(),
    )
    .await;
    let generated = junk_id.header("x-request-id").to_string();
    assert!(
        generated.len() == 16 && generated.bytes().all(|b| b.is_ascii_hexdigit()),
        "{generated}"
    );
    let revoked = get(&env, "/v1/secrets", Some(&env.revoked)).await;
    let revoked_id = revoked.header("x-request-id").to_string();
    let anonymous = get(&env, "/v1/secrets", None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    flush_tally(&env.state).await.unwrap();

    let log = audit_log(&env).await;
    let by_request = |id: &str| {
        log.iter()
            .find(|e| e.request_id == id)
            .unwrap_or_else(|| panic!("no entry for {id}"))
    };
    let read = by_request("req-abc-123");
    assert_eq!((read.action.as_str(), read.outcome.as_str()), ("get", "ok"));
    assert_eq!(read.actor, format!("token:{}", env.openai_reader.id));
    assert_eq!(read.secret.as_deref(), Some("OPENAI_API_KEY"));
    assert!(
        read.details.contains("\"remote\":\"unknown\""),
        "{}",
        read.details
    );
    let refused = by_request(&generated);
    assert_eq!(
        (refused.outcome.as_str(), refused.actor.clone()),
        ("forbidden", format!("token:{}", env.openai_reader.id))
    );
    let revoked = by_request(&revoked_id);
    assert_eq!(
        (revoked.outcome.as_str(), revoked.actor.clone()),
        ("unauthorized", format!("token:{}", env.revoked.id))
    );
    // A request without a token is counted, not recorded on its own.
    let tally: Vec<&Entry> = log.iter().filter(|e| e.outcome == "tally").collect();
    assert_eq!(tally.len(), 1);
    assert_eq!(tally[0].actor, "anonymous");
    let details: Value = serde_json::from_str(&tally[0].details).unwrap();
    assert_eq!(
        details["by"],
        serde_json::json!([{ "route": "/v1/secrets", "status": 401, "remote": "unknown", "count": 1 }])
    );
    for e in &log {
        assert_no_values(&env, "an audit entry", &format!("{e:?}"));
    }
}

#[tokio::test]
async fn a_value_appears_only_in_the_read_of_that_value() {
    let env = env().await;
    let mut bodies = Vec::new();
    for (path, t) in [
        ("/v1/secrets", Some(&env.admin)),
        ("/v1/secrets/OPENAI_API_KEY/versions", Some(&env.admin)),
        ("/v1/secrets/JWT_SECRET", Some(&env.openai_reader)),
        ("/v1/secrets/JWT_SECRET", Some(&env.revoked)),
        ("/v1/secrets/JWT_SECRET?version=7", Some(&env.admin)),
        ("/v1/rotations", Some(&env.admin)),
        ("/v1/jwks/SIGNING_KEY", None),
        ("/v1/openapi.json", None),
    ] {
        bodies.push((path, get(&env, path, t).await.body));
    }
    bodies.push((
        "write",
        put(
            &env,
            "/v1/secrets/OPENAI_API_KEY",
            Some(&env.admin),
            r#"{"value":"new"}"#,
        )
        .await
        .body,
    ));
    bodies.push((
        "audit",
        get(&env, "/v1/audit?limit=1000", Some(&env.admin))
            .await
            .body,
    ));
    bodies.push(("metrics", get(&env, "/metrics", None).await.body));
    for (what, body) in &bodies {
        assert_no_values(&env, what, body);
    }
    let read = get(&env, "/v1/secrets/JWT_SECRET", Some(&env.admin)).await;
    assert!(read.body.contains(JWT_VALUE) && !read.body.contains(OPENAI_VALUE));
}

#[tokio::test]
async fn ten_failed_authentications_brake_the_address() {
    let env = env().await;
    let from = |ip: [u8; 4], t: Option<&Token>| {
        let mut req = request(Method::GET, "/v1/secrets", t)
            .body(Body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((ip, 40000))));
        req
    };
    let bad = Token {
        id: String::new(),
        text: format!("secret_0123456789abcdef.{}", "g".repeat(43)),
    };
    for i in 0..brake::MAX_FAILURES {
        let answer = send(&env.app, from([10, 0, 0, 1], Some(&bad))).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let braked = send(&env.app, from([10, 0, 0, 1], Some(&bad))).await;
    assert_eq!(
        (braked.status, braked.error_code().as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    let wait: u64 = braked.header("retry-after").parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // Even a good token from that address waits; other addresses do not.
    let good_same = send(&env.app, from([10, 0, 0, 1], Some(&env.admin))).await;
    assert_eq!(good_same.status, StatusCode::TOO_MANY_REQUESTS);
    let good_other = send(&env.app, from([10, 0, 0, 2], Some(&env.admin))).await;
    assert_eq!(good_other.status, StatusCode::OK);
    // Public routes stay open.
    let health = send(
        &env.app,
        axum::http::Request::get("/healthz")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(health.status, StatusCode::OK);

    // Braked requests never reached the vault: ten refusals in the log, not twelve.
    let log = audit_log(&env).await;
    let refused = log
        .iter()
        .filter(|e| e.outcome == "unauthorized" && e.details.contains("10.0.0.1"))
        .count();
    assert_eq!(refused, brake::MAX_FAILURES as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reads_all_succeed_and_each_is_audited() {
    let env = env().await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let app = env.app.clone();
        let req = request(
            Method::GET,
            "/v1/secrets/OPENAI_API_KEY",
            Some(&env.openai_reader),
        )
        .header("x-request-id", format!("concurrent-{i}"))
        .body(Body::empty())
        .unwrap();
        tasks.push(tokio::spawn(async move { send(&app, req).await }));
    }
    for task in tasks {
        let answer = task.await.unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(answer.json()["value"], OPENAI_VALUE);
    }
    let log = audit_log(&env).await;
    let ids: BTreeSet<&str> = log
        .iter()
        .filter(|e| {
            e.action == "get" && e.outcome == "ok" && e.request_id.starts_with("concurrent-")
        })
        .map(|e| e.request_id.as_str())
        .collect();
    assert_eq!(ids.len(), 50);
}

#[tokio::test]
async fn openapi_lists_every_route_with_bearer_auth_and_the_error_schema() {
    let env = env().await;
    let answer = get(&env, "/v1/openapi.json", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-type"), "application/json");
    let doc = answer.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for (path, method) in [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/v1/secrets", "get"),
        ("/v1/secrets/{name}", "get"),
        ("/v1/secrets/{name}", "put"),
        ("/v1/secrets/{name}", "delete"),
        ("/v1/secrets/{name}/versions", "get"),
        ("/v1/export", "post"),
        ("/v1/secrets/{name}/rotate", "post"),
        ("/v1/rotations", "get"),
        ("/v1/rotations/{id}", "get"),
        ("/v1/audit", "get"),
        ("/v1/jwks/{name}", "get"),
        ("/v1/openapi.json", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    assert_eq!(doc["paths"].as_object().unwrap().len(), 13);
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    assert_eq!(
        doc["paths"]["/v1/secrets"]["get"]["security"][0]["bearer"],
        serde_json::json!([])
    );
    assert!(doc["paths"]["/v1/jwks/{name}"]["get"]
        .get("security")
        .is_none());
    assert_eq!(
        doc,
        serde_json::to_value(openapi()).unwrap(),
        "served as generated"
    );
}

#[tokio::test]
async fn serves_over_tcp_and_audits_the_client_address() {
    let env = env().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = env
        .app
        .clone()
        .into_make_service_with_connect_info::<SocketAddr>();
    let server = tokio::spawn(async move { axum::serve(listener, service).await });
    let client = reqwest::Client::new();
    let answer = client
        .get(format!("http://{addr}/v1/secrets/OPENAI_API_KEY"))
        .bearer_auth(&env.openai_reader.text)
        .header("x-request-id", "over-tcp")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["etag"], "\"1\"");
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["value"], OPENAI_VALUE);
    let oversize = client
        .put(format!("http://{addr}/v1/secrets/APP_KEY"))
        .bearer_auth(&env.writer.text)
        .header("content-type", "application/json")
        .body(vec![b' '; BODY_LIMIT + 10])
        .send()
        .await
        .unwrap();
    assert_eq!(oversize.status(), 413);
    server.abort();
    let log = audit_log(&env).await;
    let read = log.iter().find(|e| e.request_id == "over-tcp").unwrap();
    assert!(
        read.details.contains("\"remote\":\"127.0.0.1\""),
        "{}",
        read.details
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_brake_and_the_audit_see_the_forwarded_client() {
    let env = env().await;
    let mut state = env.state.clone();
    state.trust_forwarded_for = true;
    let proxied = app(state);
    let from = |client: &str, t: Option<&Token>| {
        let mut req = request(Method::GET, "/v1/secrets", t)
            .header("x-forwarded-for", format!("203.0.113.9, {client}"))
            .body(Body::empty())
            .unwrap();
        // Every request arrives from the proxy's own address.
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 254], 40000))));
        req
    };
    let bad = Token {
        id: String::new(),
        text: format!("secret_0123456789abcdef.{}", "g".repeat(43)),
    };
    for _ in 0..brake::MAX_FAILURES {
        send(&proxied, from("198.51.100.7", Some(&bad))).await;
    }
    let braked = send(&proxied, from("198.51.100.7", Some(&bad))).await;
    assert_eq!(braked.status, StatusCode::TOO_MANY_REQUESTS);
    // Another client behind the same proxy is not braked.
    let other = send(&proxied, from("198.51.100.8", Some(&env.admin))).await;
    assert_eq!(other.status, StatusCode::OK);
    let log = audit_log(&env).await;
    assert!(
        log.iter()
            .any(|e| e.details.contains("\"remote\":\"198.51.100.8\"")),
        "the client, not the proxy"
    );
    // Without trust, the header is ignored.
    let plain = send(&env.app, from("198.51.100.9", Some(&env.admin))).await;
    assert_eq!(plain.status, StatusCode::OK);
}

#[tokio::test]
async fn requests_refused_before_the_vault_are_audited_too() {
    let env = env().await;
    // The admin token authenticates once: its refusals are then recorded by name.
    assert_eq!(
        get(&env, "/v1/secrets", Some(&env.admin)).await.status,
        StatusCode::OK
    );
    let bad_json = put(
        &env,
        "/v1/secrets/OPENAI_API_KEY",
        Some(&env.admin),
        "{not json",
    )
    .await;
    assert_eq!(bad_json.status, StatusCode::BAD_REQUEST);
    let huge = put(
        &env,
        "/v1/secrets/OPENAI_API_KEY",
        Some(&env.admin),
        &"x".repeat(BODY_LIMIT + 10),
    )
    .await;
    assert_eq!(huge.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Without a token (or with one never seen to authenticate): counted in the tally.
    let unknown = get(&env, "/v1/no-such-route/sk-live-looks-like-a-value", None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let unproven = put(
        &env,
        "/v1/secrets/OPENAI_API_KEY",
        Some(&env.writer),
        "{not json",
    )
    .await;
    assert_eq!(unproven.status, StatusCode::BAD_REQUEST);
    flush_tally(&env.state).await.unwrap();
    let log = audit_log(&env).await;
    let refused: Vec<(&str, &str)> = log
        .iter()
        .filter(|e| e.action == "api.refused")
        .map(|e| (e.outcome.as_str(), e.actor.as_str()))
        .collect();
    let admin = format!("token:{}", env.admin.id);
    assert_eq!(
        refused,
        vec![
            ("bad_request", admin.as_str()),
            ("payload_too_large", admin.as_str()),
            ("tally", "anonymous")
        ]
    );
    let tally = log.iter().find(|e| e.outcome == "tally").unwrap();
    let details: Value = serde_json::from_str(&tally.details).unwrap();
    assert_eq!(details["requests"], 2);
    assert_eq!(
        details["by"],
        serde_json::json!([
            { "route": "/v1/secrets/{name}", "status": 400, "remote": "unknown", "count": 1 },
            { "route": "unmatched", "status": 404, "remote": "unknown", "count": 1 },
        ])
    );
    for e in log.iter().filter(|e| e.action == "api.refused") {
        assert!(
            !e.details.contains("sk-live"),
            "only the route template is recorded: {}",
            e.details
        );
    }
}

async fn send_json(
    env: &Env,
    method: Method,
    path: &str,
    token: Option<&Token>,
    body: &str,
) -> Answer {
    let req = request(method, path, token)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    send(&env.app, req).await
}

async fn delete(env: &Env, path: &str, token: Option<&Token>) -> Answer {
    send(
        &env.app,
        request(Method::DELETE, path, token)
            .body(Body::empty())
            .unwrap(),
    )
    .await
}

/// A token made after the server started, through the vault thread.
async fn late_token(env: &Env, name: &str, scopes: &[&str]) -> Token {
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    let name = name.to_string();
    let (row, text) = env
        .state
        .vault
        .run(move |v| v.create_token(&name, &scopes, None))
        .await
        .unwrap()
        .unwrap();
    Token {
        id: row.id,
        text: text.expose_secret().to_string(),
    }
}

#[tokio::test]
async fn delete_needs_its_own_scope_and_hides_the_secret() {
    let env = env().await;
    put(
        &env,
        "/v1/secrets/APP_KEY",
        Some(&env.writer),
        r#"{"value":"app-TESTVALUE-a"}"#,
    )
    .await;
    // Writing values is not deleting the secret.
    let denied = delete(&env, "/v1/secrets/APP_KEY", Some(&env.writer)).await;
    assert_eq!(
        (denied.status, denied.error_code().as_str()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    assert!(
        denied.body.contains("secrets:delete:APP_KEY"),
        "{}",
        denied.body
    );
    let read = get(&env, "/v1/secrets/APP_KEY", Some(&env.writer)).await;
    assert_eq!(
        read.status,
        StatusCode::OK,
        "a refused delete changes nothing"
    );

    let deleter = late_token(&env, "deleter", &["secrets:delete:APP_*"]).await;
    let deleted = delete(&env, "/v1/secrets/APP_KEY", Some(&deleter)).await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
    assert_eq!(
        deleted.json(),
        serde_json::json!({"name": "APP_KEY", "deleted": true, "changed": true})
    );
    let again = delete(&env, "/v1/secrets/APP_KEY", Some(&deleter)).await;
    assert_eq!(again.json()["changed"], false);

    let gone = get(&env, "/v1/secrets/APP_KEY", Some(&env.writer)).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert!(gone.body.contains("APP_KEY is deleted"), "{}", gone.body);
    let listed = get(&env, "/v1/secrets", Some(&env.admin)).await.json();
    assert!(listed["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["name"] != "APP_KEY"));
    let all = get(&env, "/v1/secrets?all=true", Some(&env.admin))
        .await
        .json();
    let row = all["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "APP_KEY")
        .unwrap()
        .clone();
    assert!(row["deleted_at"].as_str().unwrap().ends_with('Z'), "{row}");
    let versions = get(&env, "/v1/secrets/APP_KEY/versions", Some(&env.admin))
        .await
        .json();
    assert_eq!(versions["deleted"], true);
    assert!(versions["deleted_at"].is_string());

    let missing = delete(&env, "/v1/secrets/NOPE", Some(&env.admin)).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let bad = delete(&env, "/v1/secrets/sk-live-TESTVALUE", Some(&env.admin)).await;
    assert_eq!(
        (bad.status, bad.error_code().as_str()),
        (StatusCode::BAD_REQUEST, "invalid_name")
    );
    assert!(!bad.body.contains("TESTVALUE"));
    let log = audit_log(&env).await;
    let entries: Vec<(&str, &str)> = log
        .iter()
        .filter(|e| e.action == "delete")
        .map(|e| (e.actor.as_str(), e.outcome.as_str()))
        .collect();
    let writer = format!("token:{}", env.writer.id);
    let by_deleter = format!("token:{}", deleter.id);
    assert!(
        entries.contains(&(writer.as_str(), "forbidden")),
        "{entries:?}"
    );
    assert!(
        entries.contains(&(by_deleter.as_str(), "ok")),
        "{entries:?}"
    );
}

#[tokio::test]
async fn export_returns_what_the_token_reads_with_one_audited_read_each() {
    let env = env().await;
    let all = send_json(&env, Method::POST, "/v1/export", Some(&env.admin), "{}").await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(all.header("cache-control"), "no-store");
    let body = all.json();
    let names: Vec<&str> = body["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "JWT_SECRET",
            "LEGACY_PASSWORD",
            "OPENAI_API_KEY",
            "SIGNING_KEY"
        ],
        "sorted by name"
    );
    assert_eq!(body["secrets"][2]["value"], OPENAI_VALUE);
    assert_eq!(body["secrets"][2]["version"], 1);
    assert_eq!(body["omitted"], 0);
    let log = audit_log(&env).await;
    let admin = format!("token:{}", env.admin.id);
    let reads: Vec<&Entry> = log
        .iter()
        .filter(|e| e.actor == admin && e.action == "get")
        .collect();
    assert_eq!(reads.len(), 4, "one audited read per value");
    assert!(reads
        .iter()
        .all(|e| e.details.contains("\"purpose\":\"export\"")));
    let call = log.iter().rev().find(|e| e.action == "export").unwrap();
    assert_eq!(
        (call.actor.as_str(), call.outcome.as_str()),
        (admin.as_str(), "ok")
    );
    assert!(log.iter().all(|e| !e.details.contains(OPENAI_VALUE)));

    // A narrower token gets what it may read; the rest is left out, and it is not told
    // how many (it may not list names).
    let narrow = send_json(
        &env,
        Method::POST,
        "/v1/export",
        Some(&env.openai_reader),
        r#"{"purpose":"run"}"#,
    )
    .await
    .json();
    assert_eq!(narrow["secrets"].as_array().unwrap().len(), 1);
    assert_eq!(narrow["secrets"][0]["name"], "OPENAI_API_KEY");
    assert!(narrow["omitted"].is_null());
    let listing_reader = late_token(&env, "lr", &["secrets:read:OPENAI_*", "secrets:list"]).await;
    let counted = send_json(
        &env,
        Method::POST,
        "/v1/export",
        Some(&listing_reader),
        "{}",
    )
    .await
    .json();
    assert_eq!(counted["omitted"], 3);

    // Naming one it may not read refuses the whole call: no value leaves, no read.
    let before = audit_log(&env).await.len();
    let refused = send_json(
        &env,
        Method::POST,
        "/v1/export",
        Some(&env.openai_reader),
        r#"{"only":["OPENAI_API_KEY","JWT_SECRET"]}"#,
    )
    .await;
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    assert!(
        refused.body.contains("secrets:read:JWT_SECRET"),
        "{}",
        refused.body
    );
    assert!(!refused.body.contains(OPENAI_VALUE));
    let after = audit_log(&env).await;
    assert_eq!(
        after.len(),
        before + 2,
        "the audit read, then the refusal, only"
    );
    assert_eq!(
        (
            after[before + 1].action.as_str(),
            after[before + 1].outcome.as_str()
        ),
        ("export", "forbidden")
    );

    let missing = send_json(
        &env,
        Method::POST,
        "/v1/export",
        Some(&env.admin),
        r#"{"only":["OPENAI_API_KEY","NOPE"]}"#,
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(
        missing.body.contains("not in the vault"),
        "{}",
        missing.body
    );
    assert!(!missing.body.contains(OPENAI_VALUE));
    let bad = send_json(
        &env,
        Method::POST,
        "/v1/export",
        Some(&env.admin),
        r#"{"only":["sk-TESTVALUE"]}"#,
    )
    .await;
    assert_eq!(bad.error_code(), "invalid_name");
    assert!(!bad.body.contains("TESTVALUE"));
    let purpose = send_json(
        &env,
        Method::POST,
        "/v1/export",
        Some(&env.admin),
        r#"{"purpose":"steal"}"#,
    )
    .await;
    assert_eq!(purpose.status, StatusCode::BAD_REQUEST);
    let no_read = send_json(&env, Method::POST, "/v1/export", Some(&env.lister), "{}").await;
    assert_eq!(no_read.status, StatusCode::FORBIDDEN);
    let anonymous = send_json(&env, Method::POST, "/v1/export", None, "{}").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn reads_take_a_label_and_writes_a_generated_value_and_a_description() {
    let env = env().await;
    for v in ["a", "b"] {
        let put = put(
            &env,
            "/v1/secrets/APP_KEY",
            Some(&env.writer),
            &format!(r#"{{"value":"app-TESTVALUE-{v}","description":"the app key"}}"#),
        )
        .await;
        assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    }
    let previous = get(
        &env,
        "/v1/secrets/APP_KEY?label=previous",
        Some(&env.writer),
    )
    .await;
    assert_eq!(
        (
            previous.json()["value"].as_str(),
            previous.json()["version"].as_u64()
        ),
        (Some("app-TESTVALUE-a"), Some(1))
    );
    let bogus = get(&env, "/v1/secrets/APP_KEY?label=latest", Some(&env.writer)).await;
    assert_eq!(bogus.status, StatusCode::BAD_REQUEST);
    let both = get(
        &env,
        "/v1/secrets/APP_KEY?label=previous&version=1",
        Some(&env.writer),
    )
    .await;
    // Both: version 1 is the previous one, so it is read; a label it does not carry is 404.
    assert_eq!(both.status, StatusCode::OK);
    assert_eq!(both.json()["version"].as_u64(), Some(1));
    let mismatch = get(
        &env,
        "/v1/secrets/APP_KEY?label=current&version=1",
        Some(&env.writer),
    )
    .await;
    assert_eq!(mismatch.status, StatusCode::NOT_FOUND);
    assert!(
        mismatch
            .body
            .contains("version 1 of APP_KEY is not its current version"),
        "{}",
        mismatch.body
    );
    let no_pending = get(&env, "/v1/secrets/APP_KEY?label=pending", Some(&env.writer)).await;
    assert_eq!(no_pending.status, StatusCode::NOT_FOUND);
    assert!(no_pending.body.contains("APP_KEY has no pending version"));

    let generated = put(
        &env,
        "/v1/secrets/APP_TOKEN",
        Some(&env.writer),
        r#"{"generate":{"length":40,"charset":"hex"}}"#,
    )
    .await;
    assert_eq!(generated.json()["version"], 1, "{}", generated.body);
    let value = get(&env, "/v1/secrets/APP_TOKEN", Some(&env.writer))
        .await
        .json()["value"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(value.len(), 40);
    assert!(value.chars().all(|c| c.is_ascii_hexdigit()), "{value}");
    let log = audit_log(&env).await;
    let set = log
        .iter()
        .rev()
        .find(|e| e.action == "set" && e.secret.as_deref() == Some("APP_TOKEN"))
        .unwrap();
    assert!(
        set.details.contains("\"generated\":true"),
        "{}",
        set.details
    );
    let versions = get(&env, "/v1/secrets/APP_KEY/versions", Some(&env.admin))
        .await
        .json();
    assert_eq!(versions["description"], "the app key");

    for bad in [
        r#"{"value":"x","generate":{}}"#,
        r#"{"generate":{"length":0}}"#,
        r#"{"generate":{"charset":"emoji"}}"#,
    ] {
        let refused = put(&env, "/v1/secrets/APP_TOKEN", Some(&env.writer), bad).await;
        assert_eq!(
            refused.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            refused.body
        );
    }
    let empty = put(
        &env,
        "/v1/secrets/APP_EMPTY",
        Some(&env.writer),
        r#"{"value":""}"#,
    )
    .await;
    assert_eq!(empty.error_code(), "invalid_value");
    let allowed = put(
        &env,
        "/v1/secrets/APP_EMPTY",
        Some(&env.writer),
        r#"{"value":"","allow_empty":true}"#,
    )
    .await;
    assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.body);

    let listed = get(&env, "/v1/secrets", Some(&env.admin)).await.json();
    let app = listed["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "APP_KEY")
        .unwrap()
        .clone();
    assert_eq!(
        (
            app["latest_version"].as_u64(),
            app["previous_version"].as_u64(),
            app["description"].as_str()
        ),
        (Some(2), Some(1), Some("the app key"))
    );
    assert!(app["deleted_at"].is_null());
}

#[tokio::test]
async fn audit_pages_back_with_before() {
    let env = env().await;
    let newest = get(&env, "/v1/audit?limit=3", Some(&env.admin))
        .await
        .json()["entries"]
        .as_array()
        .unwrap()
        .clone();
    let seqs: Vec<u64> = newest.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs.len(), 3);
    assert!(
        seqs.windows(2).all(|w| w[0] + 1 == w[1]),
        "oldest first: {seqs:?}"
    );
    let page = get(
        &env,
        &format!("/v1/audit?limit=3&before={}", seqs[0]),
        Some(&env.admin),
    )
    .await
    .json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect::<Vec<_>>();
    assert_eq!(page, [seqs[0] - 3, seqs[0] - 2, seqs[0] - 1]);
}

#[tokio::test]
async fn a_requested_rotation_shows_its_pass_once_the_scheduler_ran_it() {
    let env = env().await;
    let accepted = post(&env, "/v1/secrets/JWT_SECRET/rotate", Some(&env.admin)).await;
    let id = accepted.json()["rotation"].as_str().unwrap().to_string();
    let queued = get(&env, &format!("/v1/rotations/{id}"), Some(&env.admin))
        .await
        .json();
    assert_eq!(queued["state"], "requested");
    assert!(queued["pass"].is_null(), "not run yet: {queued}");
    // Asked again while it is open: the same run, never a second one beside it.
    let again = post(&env, "/v1/secrets/JWT_SECRET/rotate", Some(&env.admin)).await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.body);
    assert_eq!(again.json()["rotation"], id.as_str());
    let runs = get(&env, "/v1/rotations?secret=JWT_SECRET", Some(&env.admin))
        .await
        .json();
    let open: Vec<_> = runs["rotations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == "requested")
        .collect();
    assert_eq!(open.len(), 1, "{runs:#}");
    let report = secret_rotation::RunReport {
        outcomes: vec![secret_rotation::Outcome {
            secret: "JWT_SECRET".into(),
            rotation: Some(id.clone()),
            result: secret_rotation::PassResult::Finished,
            old_version: Some(1),
            new_version: Some(2),
            error: None,
            duration_ms: 12,
        }],
    };
    let asked = [RotateRequest {
        secret: "JWT_SECRET".into(),
        rotation_id: id.clone(),
    }];
    env.state.passes.record(&asked, &report);
    let ran = get(&env, &format!("/v1/rotations/{id}"), Some(&env.admin))
        .await
        .json();
    assert_eq!(
        ran["id"],
        id.as_str(),
        "the run's own fields stay at the top"
    );
    assert_eq!(
        ran["pass"],
        serde_json::json!([{
            "secret": "JWT_SECRET", "rotation": id, "result": "finished",
            "old_version": 1, "new_version": 2, "error": null, "duration_ms": 12
        }])
    );
}

#[tokio::test]
async fn jwks_reads_and_anonymous_refusals_cost_one_tally_entry_not_one_each() {
    let env = env().await;
    // Reading the log is itself recorded: count everything else.
    async fn written(env: &Env) -> usize {
        audit_log(env)
            .await
            .iter()
            .filter(|e| e.action != "audit.read")
            .count()
    }
    let before = written(&env).await;
    for _ in 0..200 {
        assert_eq!(
            get(&env, "/v1/jwks/SIGNING_KEY", None).await.status,
            StatusCode::OK
        );
        assert_eq!(
            get(&env, "/v1/jwks/NO_SUCH_KEY", None).await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(&env, "/v1/secrets", None).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        written(&env).await,
        before,
        "nothing is written per anonymous request"
    );
    flush_tally(&env.state).await.unwrap();
    assert_eq!(written(&env).await, before + 1, "one tally entry");
    let log = audit_log(&env).await;
    let tally = log.iter().find(|e| e.outcome == "tally").unwrap();
    let details: Value = serde_json::from_str(&tally.details).unwrap();
    assert_eq!(details["requests"], 600);
    flush_tally(&env.state).await.unwrap();
    assert_eq!(
        written(&env).await,
        before + 1,
        "an empty tally writes nothing"
    );
}

#[tokio::test]
async fn an_unauthenticated_rotate_is_401_even_without_a_scheduler() {
    let env = env().await;
    let mut state = env.state.clone();
    let (closed, rx) = mpsc::channel(1);
    drop(rx);
    state.rotate = closed;
    let no_scheduler = app(state);
    for t in [None, Some(&env.lister)] {
        let req = request(Method::POST, "/v1/secrets/JWT_SECRET/rotate", t)
            .body(Body::empty())
            .unwrap();
        let answer = send(&no_scheduler, req).await;
        let want = if t.is_none() {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(answer.status, want, "{}", answer.body);
        assert!(!answer.body.contains("scheduler"), "{}", answer.body);
    }
    let req = request(
        Method::POST,
        "/v1/secrets/JWT_SECRET/rotate",
        Some(&env.jwt_rotator),
    )
    .body(Body::empty())
    .unwrap();
    let answer = send(&no_scheduler, req).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    assert!(answer.body.contains("scheduler"), "{}", answer.body);
    let runs = get(&env, "/v1/rotations?secret=JWT_SECRET", Some(&env.admin))
        .await
        .json();
    assert_eq!(
        runs["rotations"],
        serde_json::json!([]),
        "nothing was queued"
    );
}
