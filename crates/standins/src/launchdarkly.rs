//! LaunchDarkly stand-in: REST API v2 SDK-key reset (with the old key's expiry in epoch
//! milliseconds), mobile-key reset, and environment read. Responses are the `Environment`
//! object of `launchdarkly-openapi.yaml` with all its required fields; errors are
//! `{"code","message"}` with the codes the spec lists (`invalid_request`, `unauthorized`,
//! `forbidden`, `not_found`, `optimistic_locking_error`, `rate_limited`).
//!
//! Auth is `Authorization: <access token>` with no "Bearer". The stand-in also insists on
//! `LD-API-Version: 20240415`.

// Handlers return the refusal itself as the `Err` of their checks: it is the HTTP answer,
// built once and sent at once, so boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::SystemTime;

use axum::extract::{Request, State as AxumState};
use axum::response::Response;
use serde_json::{json, Value as Json};

use super::{
    deliver, guess_content_type, has_header, hex_id, json_response, lock, plan, text_response,
    unix_millis, uuid, Incoming, Plan, StandIn,
};

/// Host named in the Cloudflare page of [`Fault::Html403`](super::Fault::Html403).
const HOST: &str = "app.launchdarkly.com";

/// The API version the client pins.
pub const API_VERSION: &str = "20240415";

/// Below this an `expiry` is taken for seconds: 10^12 ms is September 2001.
const MILLIS_FLOOR: i64 = 1_000_000_000_000;

#[derive(Debug, Clone, Default)]
pub struct LaunchDarklyConfig {
    /// Access tokens (`api-...`), sent as the bare `Authorization` value.
    pub access_tokens: Vec<String>,
    /// (project key, environment key) pairs.
    pub environments: Vec<(String, String)>,
}

/// An environment's keys, as tests see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentInfo {
    pub api_key: String,
    pub mobile_key: String,
    /// Replaced SDK keys with the expiry (epoch ms) they were given; `None`: died at reset.
    pub previous_sdk_keys: Vec<(String, Option<i64>)>,
}

/// A running LaunchDarkly stand-in. Dropping it shuts it down.
pub type LaunchDarklyStandIn = StandIn<LdState>;

/// What a request handler of this stand-in gets.
type App = super::App<LdState>;

impl LaunchDarklyStandIn {
    /// Binds `addr` (loopback; port 0 picks one) and serves on the current runtime.
    pub async fn start(addr: SocketAddr, config: LaunchDarklyConfig) -> io::Result<Self> {
        StandIn::serve(addr, LdState::new(config), handle).await
    }

    /// `http://127.0.0.1:PORT` (paths start with `/api/v2`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    pub fn environment(&self, project: &str, environment: &str) -> Option<EnvironmentInfo> {
        lock(&self.inner.state)
            .environments
            .get(&(project.to_owned(), environment.to_owned()))
            .map(|env| EnvironmentInfo {
                api_key: env.api_key.clone(),
                mobile_key: env.mobile_key.clone(),
                previous_sdk_keys: env.previous_sdk_keys.clone(),
            })
    }

    /// Whether an SDK would be served with `key` at `now_ms`: the current key, or a
    /// replaced one whose expiry is still ahead.
    pub fn sdk_key_valid(&self, key: &str, now_ms: i64) -> bool {
        lock(&self.inner.state).environments.values().any(|env| {
            env.api_key == key
                || env
                    .previous_sdk_keys
                    .iter()
                    .any(|(old, expiry)| old == key && expiry.is_some_and(|e| now_ms < e))
        })
    }

    /// Only the current mobile key works: a reset kills the old one at once.
    pub fn mobile_key_valid(&self, key: &str) -> bool {
        lock(&self.inner.state)
            .environments
            .values()
            .any(|env| env.mobile_key == key)
    }

    /// Resets (SDK and mobile) the environment has had through the API.
    pub fn reset_count(&self, project: &str, environment: &str) -> usize {
        lock(&self.inner.state)
            .environments
            .get(&(project.to_owned(), environment.to_owned()))
            .map_or(0, |env| env.resets)
    }
}

// ---------------------------------------------------------------------------------------
// State.

struct Environment {
    id: String,
    project: String,
    key: String,
    api_key: String,
    mobile_key: String,
    previous_sdk_keys: Vec<(String, Option<i64>)>,
    resets: usize,
}

impl Environment {
    /// The `Environment` schema: every required field, plus `_access` left out (optional).
    fn json(&self) -> Json {
        json!({
            "_links": {
                "self": {
                    "href": format!("/api/v2/projects/{}/environments/{}", self.project, self.key),
                    "type": "application/json",
                },
            },
            "_id": self.id,
            "key": self.key,
            "name": self.key,
            "apiKey": self.api_key,
            "mobileKey": self.mobile_key,
            "color": "F5A623",
            "defaultTtl": 0,
            "secureMode": false,
            "defaultTrackEvents": false,
            "requireComments": false,
            "confirmChanges": false,
            "tags": [],
            "critical": false,
        })
    }
}

/// The LaunchDarkly stand-in's state (its fields stay private).
pub struct LdState {
    access_tokens: Vec<String>,
    environments: HashMap<(String, String), Environment>,
}

enum Route {
    ResetSdkKey(String, String),
    ResetMobileKey(String, String),
    GetEnvironment(String, String),
    /// A known path with the wrong method.
    MethodNotAllowed,
    Unknown,
}

impl Route {
    fn of(method: &str, path: &str) -> Route {
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        match (method, segments.as_slice()) {
            ("POST", ["", "api", "v2", "projects", p, "environments", e, "apiKey"]) => {
                Route::ResetSdkKey((*p).to_owned(), (*e).to_owned())
            }
            ("POST", ["", "api", "v2", "projects", p, "environments", e, "mobileKey"]) => {
                Route::ResetMobileKey((*p).to_owned(), (*e).to_owned())
            }
            ("GET", ["", "api", "v2", "projects", p, "environments", e]) => {
                Route::GetEnvironment((*p).to_owned(), (*e).to_owned())
            }
            (_, ["", "api", "v2", "projects", _, "environments", _, "apiKey" | "mobileKey"])
            | (_, ["", "api", "v2", "projects", _, "environments", _]) => Route::MethodNotAllowed,
            _ => Route::Unknown,
        }
    }

    fn operation(&self) -> &'static str {
        match self {
            Route::ResetSdkKey(..) => "reset_sdk_key",
            Route::ResetMobileKey(..) => "reset_mobile_key",
            Route::GetEnvironment(..) => "get_environment",
            Route::MethodNotAllowed | Route::Unknown => "unknown",
        }
    }
}

fn error(status: u16, code: &str, message: &str) -> Response {
    json_response(status, &[], &json!({ "code": code, "message": message }))
}

fn invalid_request(message: &str) -> Response {
    error(400, "invalid_request", message)
}

fn now_ms() -> i64 {
    unix_millis(SystemTime::now())
}

impl LdState {
    fn new(config: LaunchDarklyConfig) -> Self {
        let environments = config
            .environments
            .into_iter()
            .map(|(project, key)| {
                let env = Environment {
                    id: hex_id::<12>(),
                    project: project.clone(),
                    key: key.clone(),
                    api_key: format!("sdk-{}", uuid()),
                    mobile_key: format!("mob-{}", uuid()),
                    previous_sdk_keys: Vec::new(),
                    resets: 0,
                };
                ((project, key), env)
            })
            .collect();
        LdState {
            access_tokens: config.access_tokens,
            environments,
        }
    }

    fn respond(&mut self, route: &Route, incoming: &Incoming) -> Response {
        // The token first: an unauthenticated caller learns nothing about paths.
        let token = incoming.header("authorization").unwrap_or_default();
        if token.is_empty() || !self.access_tokens.iter().any(|t| t == token) {
            // A "Bearer <token>" value is just an unknown token to LaunchDarkly.
            return error(401, "unauthorized", "Invalid access token");
        }
        // The real API falls back to a default version when the header is missing; the
        // stand-in is stricter on purpose, so the client always pins the version it was
        // written against.
        if incoming.header("ld-api-version") != Some(API_VERSION) {
            return invalid_request(&format!("stand-in: send LD-API-Version: {API_VERSION}"));
        }
        let (project, environment) = match route {
            Route::ResetSdkKey(p, e)
            | Route::ResetMobileKey(p, e)
            | Route::GetEnvironment(p, e) => (p, e),
            Route::MethodNotAllowed => {
                return error(405, "method_not_allowed", "Method not allowed")
            }
            Route::Unknown => return error(404, "not_found", "Invalid resource identifier"),
        };
        let expiry = match route {
            Route::ResetSdkKey(..) => match parse_expiry(incoming) {
                Ok(expiry) => expiry,
                Err(response) => return response,
            },
            _ => None,
        };
        let Some(env) = self
            .environments
            .get_mut(&(project.clone(), environment.clone()))
        else {
            return error(404, "not_found", "Invalid resource identifier");
        };
        match route {
            Route::ResetSdkKey(..) => {
                let old = std::mem::replace(&mut env.api_key, format!("sdk-{}", uuid()));
                env.previous_sdk_keys.push((old, expiry));
                env.resets += 1;
            }
            Route::ResetMobileKey(..) => {
                // The mobile endpoint's expiry is deprecated: the old key dies at once.
                env.mobile_key = format!("mob-{}", uuid());
                env.resets += 1;
            }
            _ => {}
        }
        json_response(200, &[], &env.json())
    }
}

/// `expiry` of an SDK-key reset: absent, or a future time in epoch milliseconds.
fn parse_expiry(incoming: &Incoming) -> Result<Option<i64>, Response> {
    let Some(text) = incoming.query_param("expiry") else {
        return Ok(None);
    };
    let expiry: i64 = text.trim().parse().map_err(|_| {
        invalid_request(&format!(
            "expiry must be an integer (UNIX milliseconds), got '{text}'"
        ))
    })?;
    if expiry < MILLIS_FLOOR {
        // Stricter on purpose: a value this small is almost surely seconds, a client bug
        // that would make the old key die at once.
        return Err(invalid_request(&format!(
            "expiry is in UNIX milliseconds; {expiry} looks like seconds"
        )));
    }
    if expiry <= now_ms() {
        return Err(invalid_request(&format!("expiry {expiry} is in the past")));
    }
    Ok(Some(expiry))
}

/// The body of a `Fault::Status`: LaunchDarkly's error object unless the fault brought its
/// own; a 429 also gets the rate-limit headers (`X-Ratelimit-Reset` in epoch ms).
fn render_status(status: u16, headers: &[(String, String)], body: &str) -> Response {
    let mut headers = headers.to_vec();
    if status == 429 {
        let retry_secs: i64 = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("retry-after"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(1);
        if !has_header(&headers, "X-Ratelimit-Reset") {
            let reset = now_ms().saturating_add(retry_secs.saturating_mul(1000));
            headers.push(("X-Ratelimit-Reset".to_owned(), reset.to_string()));
        }
        if !has_header(&headers, "X-Ratelimit-Route-Remaining") {
            headers.push(("X-Ratelimit-Route-Remaining".to_owned(), "0".to_owned()));
        }
    }
    if !body.is_empty() {
        return text_response(status, guess_content_type(body), &headers, body);
    }
    let (code, message) = match status {
        400 => ("invalid_request", "Invalid request body"),
        401 => ("unauthorized", "Invalid access token"),
        403 => (
            "forbidden",
            "Forbidden. Access to the requested resource was denied.",
        ),
        404 => ("not_found", "Invalid resource identifier"),
        409 => (
            "optimistic_locking_error",
            "Conflict. Optimistic lock error. Try again later.",
        ),
        429 => (
            "rate_limited",
            "You've exceeded the API rate limit. Try again later.",
        ),
        503 => ("service_unavailable", "Service unavailable"),
        _ => ("internal_server_error", "Internal server error"),
    };
    json_response(
        status,
        &headers,
        &json!({ "code": code, "message": message }),
    )
}

async fn handle(AxumState(app): AxumState<App>, request: Request) -> Response {
    let incoming = Incoming::read(request).await;
    let route = Route::of(incoming.method.as_str(), &incoming.path);
    let operation = route.operation();
    incoming.record(&app.inner.journal, operation);
    let operations = [operation.to_owned()];
    match plan(
        &app.inner.faults,
        &operations,
        &incoming,
        &app.shutdown,
        HOST,
        &render_status,
    )
    .await
    {
        Plan::Respond(response) => response,
        Plan::Proceed { lose } => {
            let response = lock(&app.inner.state).respond(&route, &incoming);
            deliver(&incoming, lose, response)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Fault;
    use std::time::{Duration, Instant};

    const TOKEN: &str = "api-0123456789abcdef";

    async fn start() -> LaunchDarklyStandIn {
        LaunchDarklyStandIn::start(
            "127.0.0.1:0".parse().unwrap(),
            LaunchDarklyConfig {
                access_tokens: vec![TOKEN.into()],
                environments: vec![("web".into(), "production".into())],
            },
        )
        .await
        .unwrap()
    }

    fn env_url(ld: &LaunchDarklyStandIn) -> String {
        format!(
            "{}/api/v2/projects/web/environments/production",
            ld.base_url()
        )
    }

    fn post(ld: &LaunchDarklyStandIn, suffix: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .post(format!("{}/{suffix}", env_url(ld)))
            .header("Authorization", TOKEN)
            .header("LD-API-Version", API_VERSION)
    }

    async fn send(request: reqwest::RequestBuilder) -> (u16, Json) {
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    #[tokio::test]
    async fn sdk_reset_returns_the_environment_and_keeps_the_old_key_until_expiry() {
        let ld = start().await;
        let before = ld.environment("web", "production").unwrap();
        let expiry = now_ms() + 3_600_000;
        let (status, body) = send(post(&ld, "apiKey").query(&[("expiry", expiry)])).await;
        assert_eq!(status, 200);
        for field in [
            "_links",
            "_id",
            "key",
            "name",
            "apiKey",
            "mobileKey",
            "color",
            "defaultTtl",
            "secureMode",
            "defaultTrackEvents",
            "requireComments",
            "confirmChanges",
            "tags",
            "critical",
        ] {
            assert!(body.get(field).is_some(), "missing {field}");
        }
        assert_eq!(body["key"], json!("production"));
        assert_eq!(
            body["_links"]["self"]["href"],
            json!("/api/v2/projects/web/environments/production")
        );
        let new_key = body["apiKey"].as_str().unwrap();
        assert!(new_key.starts_with("sdk-") && new_key != before.api_key);
        assert_eq!(body["mobileKey"], json!(before.mobile_key));

        let after = ld.environment("web", "production").unwrap();
        assert_eq!(after.api_key, new_key);
        assert_eq!(
            after.previous_sdk_keys,
            [(before.api_key.clone(), Some(expiry))]
        );
        assert!(ld.sdk_key_valid(new_key, now_ms()));
        assert!(ld.sdk_key_valid(&before.api_key, expiry - 1));
        assert!(!ld.sdk_key_valid(&before.api_key, expiry));
        assert_eq!(ld.reset_count("web", "production"), 1);

        // The read shows the same keys.
        let (status, body) = send(
            reqwest::Client::new()
                .get(env_url(&ld))
                .header("Authorization", TOKEN)
                .header("LD-API-Version", API_VERSION),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["apiKey"], json!(new_key));
    }

    #[tokio::test]
    async fn sdk_reset_without_expiry_kills_the_old_key_at_once() {
        let ld = start().await;
        let before = ld.environment("web", "production").unwrap();
        assert_eq!(send(post(&ld, "apiKey")).await.0, 200);
        assert!(!ld.sdk_key_valid(&before.api_key, now_ms()));
    }

    #[tokio::test]
    async fn bad_expiries_are_refused_without_resetting() {
        let ld = start().await;
        let seconds = now_ms() / 1000 + 3600;
        for expiry in [
            "soon".to_owned(),
            seconds.to_string(),
            (now_ms() - 60_000).to_string(),
        ] {
            let (status, body) = send(post(&ld, "apiKey").query(&[("expiry", &expiry)])).await;
            assert_eq!(status, 400, "expiry={expiry}");
            assert_eq!(body["code"], json!("invalid_request"));
        }
        let (_, body) = send(post(&ld, "apiKey").query(&[("expiry", seconds)])).await;
        assert!(body["message"].as_str().unwrap().contains("milliseconds"));
        assert_eq!(ld.reset_count("web", "production"), 0);
    }

    #[tokio::test]
    async fn mobile_reset_kills_the_old_mobile_key_at_once() {
        let ld = start().await;
        let before = ld.environment("web", "production").unwrap();
        let (status, body) = send(post(&ld, "mobileKey")).await;
        assert_eq!(status, 200);
        let new_key = body["mobileKey"].as_str().unwrap();
        assert!(new_key.starts_with("mob-") && new_key != before.mobile_key);
        assert!(!ld.mobile_key_valid(&before.mobile_key));
        assert!(ld.mobile_key_valid(new_key));
        assert_eq!(body["apiKey"], json!(before.api_key));
        assert_eq!(ld.reset_count("web", "production"), 1);
    }

    #[tokio::test]
    async fn auth_and_version_headers_are_checked() {
        let ld = start().await;
        let url = format!("{}/apiKey", env_url(&ld));
        let client = reqwest::Client::new();
        let unauthorized = json!({ "code": "unauthorized", "message": "Invalid access token" });
        for auth in [
            None,
            Some(format!("Bearer {TOKEN}")),
            Some("api-unknown".to_owned()),
        ] {
            let mut request = client.post(&url).header("LD-API-Version", API_VERSION);
            if let Some(auth) = auth {
                request = request.header("Authorization", auth);
            }
            assert_eq!(send(request).await, (401, unauthorized.clone()));
        }
        for version in [None, Some("20191212")] {
            let mut request = client.post(&url).header("Authorization", TOKEN);
            if let Some(version) = version {
                request = request.header("LD-API-Version", version);
            }
            let (status, body) = send(request).await;
            assert_eq!(status, 400);
            assert_eq!(body["code"], json!("invalid_request"));
            assert!(body["message"]
                .as_str()
                .unwrap()
                .contains("LD-API-Version: 20240415"));
        }
        let (status, body) = send(
            client
                .post(format!(
                    "{}/api/v2/projects/web/environments/nope/apiKey",
                    ld.base_url()
                ))
                .header("Authorization", TOKEN)
                .header("LD-API-Version", API_VERSION),
        )
        .await;
        assert_eq!((status, body["code"].clone()), (404, json!("not_found")));
        assert_eq!(ld.reset_count("web", "production"), 0);
    }

    #[tokio::test]
    async fn status_faults_use_launchdarkly_error_shapes() {
        let ld = start().await;
        ld.faults().inject("reset_sdk_key", Fault::rate_limited(5));
        ld.faults().inject("reset_sdk_key", Fault::status(409));
        ld.faults().inject("reset_sdk_key", Fault::status(403));
        let response = post(&ld, "apiKey").send().await.unwrap();
        assert_eq!(response.status().as_u16(), 429);
        let headers = response.headers().clone();
        assert_eq!(headers["retry-after"], "5");
        assert_eq!(headers["x-ratelimit-route-remaining"], "0");
        let reset: i64 = headers["x-ratelimit-reset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            reset > now_ms() + 3_000 && reset < now_ms() + 10_000,
            "reset={reset}"
        );
        let body: Json = response.json().await.unwrap();
        assert_eq!(body["code"], json!("rate_limited"));
        let (status, body) = send(post(&ld, "apiKey")).await;
        assert_eq!(
            (status, body["code"].clone()),
            (409, json!("optimistic_locking_error"))
        );
        let (status, body) = send(post(&ld, "apiKey")).await;
        assert_eq!((status, body["code"].clone()), (403, json!("forbidden")));
        assert_eq!(ld.reset_count("web", "production"), 0);
    }

    #[tokio::test]
    async fn lost_response_resets_but_the_client_cannot_tell() {
        let ld = start().await;
        let before = ld.environment("web", "production").unwrap();
        ld.faults().inject("reset_sdk_key", Fault::LoseResponse);
        assert!(post(&ld, "apiKey").send().await.is_err());
        assert_eq!(ld.reset_count("web", "production"), 1);
        assert_ne!(
            ld.environment("web", "production").unwrap().api_key,
            before.api_key
        );
    }

    #[tokio::test]
    async fn delay_hang_and_html_faults() {
        let ld = start().await;
        ld.faults()
            .inject("get_environment", Fault::Delay(Duration::from_millis(250)));
        let started = Instant::now();
        let get = || {
            reqwest::Client::new()
                .get(env_url(&ld))
                .header("Authorization", TOKEN)
                .header("LD-API-Version", API_VERSION)
        };
        assert_eq!(send(get()).await.0, 200);
        assert!(started.elapsed() >= Duration::from_millis(250));

        ld.faults().inject("reset_sdk_key", Fault::Hang);
        let result = post(&ld, "apiKey")
            .timeout(Duration::from_millis(300))
            .send()
            .await;
        assert!(result.unwrap_err().is_timeout());
        assert_eq!(ld.journal_count("reset_sdk_key"), 1);
        assert_eq!(ld.reset_count("web", "production"), 0);

        ld.faults().inject("get_environment", Fault::Html403);
        let response = get().send().await.unwrap();
        assert_eq!(response.status().as_u16(), 403);
        assert!(response.text().await.unwrap().contains("Access denied"));
    }

    #[tokio::test]
    async fn journal_records_every_request() {
        let ld = start().await;
        reqwest::Client::new()
            .post(format!("{}/apiKey", env_url(&ld)))
            .send()
            .await
            .unwrap();
        post(&ld, "mobileKey").send().await.unwrap();
        reqwest::get(format!("{}/api/v2/flags", ld.base_url()))
            .await
            .unwrap();
        let received = ld.received();
        let ops: Vec<_> = received.iter().map(|r| r.operation.as_str()).collect();
        assert_eq!(ops, ["reset_sdk_key", "reset_mobile_key", "unknown"]);
        assert_eq!(received[1].header("ld-api-version"), Some(API_VERSION));
        assert_eq!(
            received[1].path,
            "/api/v2/projects/web/environments/production/mobileKey"
        );
        assert_eq!(ld.journal_count("reset_sdk_key"), 1);
    }
}
