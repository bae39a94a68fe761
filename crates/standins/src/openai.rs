//! OpenAI stand-in: the admin endpoints for project service accounts (create, list with
//! cursor pagination, delete), the project API-key listing, and `GET /v1/models` for
//! checking a key with itself. Shapes follow `openai-openapi.yaml`
//! (`ProjectServiceAccountCreateResponse`, `ProjectServiceAccountListResponse`,
//! `ProjectServiceAccountDeleteResponse`, `ProjectApiKeyListResponse`,
//! `ListModelsResponse`); every error is `{"error":{"message","type","param","code"}}`.
//!
//! Admin endpoints take only an admin key (`Authorization: Bearer sk-admin-...`); project
//! keys work only on `/v1/models`. Whether a brand-new key works at once is UNCONFIRMED,
//! so `new_key_warmup` makes the first checks of a new key fail with 401.

// Handlers return the refusal itself as the `Err` of their checks: it is the HTTP answer,
// built once and sent at once, so boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use std::io;
use std::net::SocketAddr;
use std::time::SystemTime;

use axum::extract::{Request, State as AxumState};
use axum::http::Method;
use axum::response::Response;
use serde_json::{json, Value as Json};

use super::{
    deliver, guess_content_type, hex_id, json_response, lock, plan, reason, text_response,
    unix_secs, Incoming, Plan, StandIn, StandInError,
};

/// Host named in the Cloudflare page of [`Fault::Html403`](super::Fault::Html403).
const HOST: &str = "api.openai.com";

/// The models `GET /v1/models` lists.
const MODELS: &[(&str, i64)] = &[("gpt-4o-mini", 1_721_172_741), ("gpt-4o", 1_715_367_049)];

const NO_KEY: &str = "You didn't provide an API key. You need to provide your API key in an \
    Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the \
    password field (with blank username) if you're accessing the API from your browser and are \
    prompted for a username. You can obtain an API key from \
    https://platform.openai.com/account/api-keys.";

#[derive(Debug, Clone, Default)]
pub struct OpenAiConfig {
    /// Admin keys (`sk-admin-...`), the only keys the admin endpoints take.
    pub admin_keys: Vec<String>,
    /// Project ids (`proj_...`).
    pub projects: Vec<String>,
    /// Archived projects: the service-account endpoints answer 400.
    pub archived_projects: Vec<String>,
    /// How many `GET /v1/models` calls with a key created through the API answer 401
    /// before the key works.
    pub new_key_warmup: u32,
}

/// A live service account, as tests see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountInfo {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    /// `None` when created with `create_service_account_only`.
    pub key_id: Option<String>,
    pub key_value: Option<String>,
}

/// A running OpenAI stand-in. Dropping it shuts it down.
pub type OpenAiStandIn = StandIn<OpenAiState>;

/// What a request handler of this stand-in gets.
type App = super::App<OpenAiState>;

impl OpenAiStandIn {
    /// Binds `addr` (loopback; port 0 picks one) and serves on the current runtime.
    pub async fn start(addr: SocketAddr, config: OpenAiConfig) -> io::Result<Self> {
        StandIn::serve(addr, OpenAiState::new(config), handle).await
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr())
    }

    /// The project's live (not deleted) service accounts, oldest first.
    pub fn service_accounts(&self, project_id: &str) -> Vec<ServiceAccountInfo> {
        let state = lock(&self.inner.state);
        state
            .project(project_id)
            .map(|p| {
                p.accounts
                    .iter()
                    .filter(|a| !a.deleted)
                    .map(Account::info)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Seeds a service account with a key that works at once (no warm-up), as if it had
    /// been created before the test.
    pub fn create_service_account(
        &self,
        project_id: &str,
        name: &str,
    ) -> Result<ServiceAccountInfo, StandInError> {
        let mut state = lock(&self.inner.state);
        let project = state
            .projects
            .iter_mut()
            .find(|p| p.id == project_id)
            .ok_or_else(|| StandInError::Unknown {
                kind: "project",
                id: project_id.to_owned(),
            })?;
        let account = Account::new(name, true, 0);
        let info = account.info();
        project.accounts.push(account);
        Ok(info)
    }

    /// Whether `value` is a key of a live service account (warm-up aside).
    pub fn is_key_live(&self, value: &str) -> bool {
        lock(&self.inner.state).live_key(value).is_some()
    }

    /// Every live key value.
    pub fn live_keys(&self) -> Vec<String> {
        let state = lock(&self.inner.state);
        state
            .projects
            .iter()
            .flat_map(|p| p.accounts.iter())
            .filter(|a| !a.deleted)
            .filter_map(|a| a.key.as_ref().map(|k| k.value.clone()))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// State.

struct Key {
    id: String,
    value: String,
    created_at: i64,
    last_used_at: Option<i64>,
    warmup_left: u32,
}

struct Account {
    id: String,
    name: String,
    role: &'static str,
    created_at: i64,
    /// Deleted accounts stay as tombstones so a pagination cursor naming one still works.
    deleted: bool,
    key: Option<Key>,
}

impl Account {
    fn new(name: &str, with_key: bool, warmup: u32) -> Self {
        let now = unix_secs(SystemTime::now());
        Account {
            id: format!("svc_acct_{}", hex_id::<12>()),
            name: name.to_owned(),
            role: if with_key { "member" } else { "none" },
            created_at: now,
            deleted: false,
            key: with_key.then(|| Key {
                id: format!("key_{}", hex_id::<8>()),
                value: format!("sk-svcacct-{}", hex_id::<32>()),
                created_at: now,
                last_used_at: None,
                warmup_left: warmup,
            }),
        }
    }

    fn info(&self) -> ServiceAccountInfo {
        ServiceAccountInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            created_at: self.created_at,
            key_id: self.key.as_ref().map(|k| k.id.clone()),
            key_value: self.key.as_ref().map(|k| k.value.clone()),
        }
    }

    /// `ProjectServiceAccount`.
    fn json(&self) -> Json {
        json!({
            "object": "organization.project.service_account",
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "created_at": self.created_at,
        })
    }
}

struct Project {
    id: String,
    archived: bool,
    accounts: Vec<Account>,
}

/// The OpenAI stand-in's state (its fields stay private).
pub struct OpenAiState {
    admin_keys: Vec<String>,
    projects: Vec<Project>,
    new_key_warmup: u32,
}

/// What a request asks for, from its method and path.
enum Route {
    ListModels,
    CreateServiceAccount(String),
    ListServiceAccounts(String),
    DeleteServiceAccount(String, String),
    ListApiKeys(String),
    /// An endpoint that exists but the stand-in does not implement.
    NotImplemented,
    Unknown,
}

impl Route {
    fn of(method: &Method, path: &str) -> Route {
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        match (method.as_str(), segments.as_slice()) {
            ("GET", ["", "v1", "models"]) => Route::ListModels,
            ("POST", ["", "v1", "organization", "projects", p, "service_accounts"]) => {
                Route::CreateServiceAccount((*p).to_owned())
            }
            ("GET", ["", "v1", "organization", "projects", p, "service_accounts"]) => {
                Route::ListServiceAccounts((*p).to_owned())
            }
            ("DELETE", ["", "v1", "organization", "projects", p, "service_accounts", id]) => {
                Route::DeleteServiceAccount((*p).to_owned(), (*id).to_owned())
            }
            ("GET", ["", "v1", "organization", "projects", p, "api_keys"]) => {
                Route::ListApiKeys((*p).to_owned())
            }
            ("GET" | "POST", ["", "v1", "organization", "projects", _, "service_accounts", _])
            | ("GET" | "DELETE", ["", "v1", "organization", "projects", _, "api_keys", _])
            | (_, ["", "v1", "organization", ..])
            | ("GET", ["", "v1", "models", _]) => Route::NotImplemented,
            _ => Route::Unknown,
        }
    }

    fn operation(&self) -> &'static str {
        match self {
            Route::ListModels => "list_models",
            Route::CreateServiceAccount(_) => "create_service_account",
            Route::ListServiceAccounts(_) => "list_service_accounts",
            Route::DeleteServiceAccount(..) => "delete_service_account",
            Route::ListApiKeys(_) => "list_api_keys",
            Route::NotImplemented => "not_implemented",
            Route::Unknown => "unknown",
        }
    }
}

fn error(
    status: u16,
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response {
    json_response(
        status,
        &[("x-request-id".to_owned(), format!("req_{}", hex_id::<16>()))],
        &json!({ "error": { "message": message, "type": kind, "param": param, "code": code } }),
    )
}

fn invalid_request(message: &str, param: Option<&str>, code: Option<&str>) -> Response {
    error(400, message, "invalid_request_error", param, code)
}

fn ok(value: &Json) -> Response {
    json_response(
        200,
        &[("x-request-id".to_owned(), format!("req_{}", hex_id::<16>()))],
        value,
    )
}

/// How OpenAI shows a key in an error: the start and the last four characters.
fn redact_for_error(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() < 12 {
        return "*".repeat(chars.len());
    }
    let head: String = chars.iter().take(3).collect();
    let tail: String = chars.iter().skip(chars.len() - 4).collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 7))
}

/// `redacted_value` of the key listing (`sk-abc...def`).
fn redact_for_listing(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() < 12 {
        return "*".repeat(chars.len());
    }
    let head: String = chars.iter().take(6).collect();
    let tail: String = chars.iter().skip(chars.len() - 3).collect();
    format!("{head}...{tail}")
}

fn incorrect_key(key: &str) -> Response {
    error(
        401,
        &format!(
            "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
            redact_for_error(key)
        ),
        "invalid_request_error",
        None,
        Some("invalid_api_key"),
    )
}

/// An endpoint OpenAI has but the stand-in does not: refused, so the client cannot come to
/// rely on untested behaviour.
fn not_implemented(incoming: &Incoming) -> Response {
    let message = format!(
        "stand-in does not implement {} {} (it exists in OpenAI's API; implement it in \
         src/standin/openai.rs before relying on it)",
        incoming.method, incoming.path
    );
    error(501, &message, "invalid_request_error", None, None)
}

fn no_key() -> Response {
    error(401, NO_KEY, "invalid_request_error", None, None)
}

/// The bearer token of the request, or the "no key" answer.
fn bearer(incoming: &Incoming) -> Result<&str, Response> {
    incoming
        .header("authorization")
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
        .map(|(_, token)| token.trim())
        .ok_or_else(no_key)
}

/// A page of a list: `limit` (1..=100, default 20) items after the cursor.
struct Page {
    limit: usize,
    after: Option<String>,
}

fn page(incoming: &Incoming) -> Result<Page, Response> {
    let limit = match incoming.query_param("limit") {
        None => 20,
        Some(text) => match text.parse::<i64>() {
            Err(_) => {
                return Err(invalid_request(
                    &format!("Invalid 'limit': expected an integer, but got '{text}' instead."),
                    Some("limit"),
                    Some("invalid_type"),
                ))
            }
            Ok(n) if n < 1 => {
                return Err(invalid_request(
                    &format!("Invalid 'limit': integer below minimum value. Expected a value >= 1, but got {n} instead."),
                    Some("limit"),
                    Some("integer_below_min_value"),
                ))
            }
            Ok(n) if n > 100 => {
                return Err(invalid_request(
                    &format!("Invalid 'limit': integer above maximum value. Expected a value <= 100, but got {n} instead."),
                    Some("limit"),
                    Some("integer_above_max_value"),
                ))
            }
            Ok(n) => usize::try_from(n).unwrap_or(20),
        },
    };
    Ok(Page {
        limit,
        after: incoming.query_param("after").filter(|a| !a.is_empty()),
    })
}

/// Pages `items` (id, visible, json), oldest first, into a list object.
fn list(items: &[(String, bool, Json)], page: &Page) -> Result<Json, Response> {
    let start = match &page.after {
        None => 0,
        Some(after) => match items.iter().position(|(id, _, _)| id == after) {
            Some(i) => i + 1,
            None => {
                return Err(invalid_request(
                    &format!("Invalid 'after': no object with id '{after}' in this list."),
                    Some("after"),
                    None,
                ))
            }
        },
    };
    let visible: Vec<&(String, bool, Json)> = items
        .iter()
        .skip(start)
        .filter(|(_, live, _)| *live)
        .collect();
    let data: Vec<Json> = visible
        .iter()
        .take(page.limit)
        .map(|(_, _, j)| j.clone())
        .collect();
    let first = visible
        .first()
        .filter(|_| !data.is_empty())
        .map(|(id, _, _)| id.clone());
    let last = visible
        .get(data.len().saturating_sub(1))
        .filter(|_| !data.is_empty())
        .map(|(id, _, _)| id.clone());
    Ok(json!({
        "object": "list",
        "data": data,
        "first_id": first,
        "last_id": last,
        "has_more": visible.len() > page.limit,
    }))
}

impl OpenAiState {
    fn new(config: OpenAiConfig) -> Self {
        let mut projects: Vec<Project> = config
            .projects
            .iter()
            .map(|id| Project {
                id: id.clone(),
                archived: false,
                accounts: Vec::new(),
            })
            .collect();
        for id in config.archived_projects {
            match projects.iter_mut().find(|p| p.id == id) {
                Some(p) => p.archived = true,
                None => projects.push(Project {
                    id,
                    archived: true,
                    accounts: Vec::new(),
                }),
            }
        }
        OpenAiState {
            admin_keys: config.admin_keys,
            projects,
            new_key_warmup: config.new_key_warmup,
        }
    }

    fn project(&self, id: &str) -> Option<&Project> {
        self.projects.iter().find(|p| p.id == id)
    }

    fn live_key(&self, value: &str) -> Option<(usize, usize)> {
        self.projects.iter().enumerate().find_map(|(pi, p)| {
            p.accounts
                .iter()
                .position(|a| !a.deleted && a.key.as_ref().is_some_and(|k| k.value == value))
                .map(|ai| (pi, ai))
        })
    }

    /// Admin endpoints: an admin key, nothing else.
    fn admin(&self, incoming: &Incoming) -> Result<(), Response> {
        let token = bearer(incoming)?;
        if self.admin_keys.iter().any(|k| k == token) {
            Ok(())
        } else if self.live_key(token).is_some() {
            Err(error(
                401,
                "You have insufficient permissions for this operation. Missing scopes: \
                 api.management.read. Check that you have the correct role in your \
                 organization (Owner), and if you're using a restricted API key, that it has \
                 the necessary scopes.",
                "invalid_request_error",
                None,
                None,
            ))
        } else {
            Err(incorrect_key(token))
        }
    }

    /// The project, which must exist and not be archived.
    fn open_project(&mut self, id: &str) -> Result<&mut Project, Response> {
        let project = self
            .projects
            .iter_mut()
            .find(|p| p.id == id)
            .ok_or_else(|| {
                error(
                    404,
                    &format!("No such project: '{id}'."),
                    "invalid_request_error",
                    None,
                    None,
                )
            })?;
        if project.archived {
            return Err(invalid_request(
                &format!("Project '{id}' is archived."),
                None,
                None,
            ));
        }
        Ok(project)
    }

    fn respond(&mut self, route: &Route, incoming: &Incoming) -> Response {
        let result = match route {
            Route::ListModels => self.list_models(incoming),
            Route::CreateServiceAccount(p) => {
                self.admin(incoming).and_then(|()| self.create(p, incoming))
            }
            Route::ListServiceAccounts(p) => self
                .admin(incoming)
                .and_then(|()| self.list_accounts(p, incoming)),
            Route::DeleteServiceAccount(p, id) => {
                self.admin(incoming).and_then(|()| self.delete(p, id))
            }
            Route::ListApiKeys(p) => self
                .admin(incoming)
                .and_then(|()| self.list_keys(p, incoming)),
            Route::NotImplemented => Err(not_implemented(incoming)),
            Route::Unknown => Err(error(
                404,
                &format!("Invalid URL ({} {})", incoming.method, incoming.path),
                "invalid_request_error",
                None,
                None,
            )),
        };
        result.unwrap_or_else(|response| response)
    }

    fn list_models(&mut self, incoming: &Incoming) -> Result<Response, Response> {
        let token = bearer(incoming)?;
        let Some((pi, ai)) = self.live_key(token) else {
            // Unknown, revoked and admin keys alike: admin keys do not work here.
            return Err(incorrect_key(token));
        };
        let key = self
            .projects
            .get_mut(pi)
            .and_then(|p| p.accounts.get_mut(ai))
            .and_then(|a| a.key.as_mut())
            .ok_or_else(|| incorrect_key(token))?;
        if key.warmup_left > 0 {
            key.warmup_left -= 1;
            return Err(incorrect_key(token));
        }
        key.last_used_at = Some(unix_secs(SystemTime::now()));
        let data: Vec<Json> = MODELS
            .iter()
            .map(|(id, created)| {
                json!({ "id": id, "object": "model", "created": created, "owned_by": "system" })
            })
            .collect();
        Ok(ok(&json!({ "object": "list", "data": data })))
    }

    fn create(&mut self, project_id: &str, incoming: &Incoming) -> Result<Response, Response> {
        let body: Json = serde_json::from_slice(&incoming.body).map_err(|_| {
            invalid_request(
                "We could not parse the JSON body of your request. (HINT: This likely means \
                 you aren't using your HTTP library correctly. The OpenAI API expects a JSON \
                 payload, but what was sent was not valid JSON. If you have trouble figuring \
                 out how to fix this, please contact us through our help center at \
                 help.openai.com.)",
                None,
                None,
            )
        })?;
        let Json::Object(body) = body else {
            return Err(invalid_request(
                "Invalid type for request body: expected an object.",
                None,
                Some("invalid_type"),
            ));
        };
        if let Some(unknown) = body
            .keys()
            .find(|k| !matches!(k.as_str(), "name" | "create_service_account_only"))
        {
            return Err(invalid_request(
                &format!("Unrecognized request argument supplied: {unknown}"),
                None,
                None,
            ));
        }
        let name = match body.get("name") {
            None | Some(Json::Null) => {
                return Err(invalid_request(
                    "Missing required parameter: 'name'.",
                    Some("name"),
                    Some("missing_required_parameter"),
                ))
            }
            Some(Json::String(name)) if name.is_empty() => {
                return Err(invalid_request(
                    "Invalid 'name': string too short. Expected a string with minimum length 1, but got an empty string instead.",
                    Some("name"),
                    Some("string_below_min_length"),
                ))
            }
            Some(Json::String(name)) => name.clone(),
            Some(other) => {
                return Err(invalid_request(
                    &format!(
                        "Invalid type for 'name': expected a string, but got {} instead.",
                        json_kind(other)
                    ),
                    Some("name"),
                    Some("invalid_type"),
                ))
            }
        };
        let account_only = match body.get("create_service_account_only") {
            None | Some(Json::Null) => false,
            Some(Json::Bool(b)) => *b,
            Some(other) => {
                return Err(invalid_request(
                    &format!(
                        "Invalid type for 'create_service_account_only': expected a boolean, but got {} instead.",
                        json_kind(other)
                    ),
                    Some("create_service_account_only"),
                    Some("invalid_type"),
                ))
            }
        };
        let warmup = self.new_key_warmup;
        let project = self.open_project(project_id)?;
        let account = Account::new(&name, !account_only, warmup);
        let api_key = account.key.as_ref().map(|k| {
            json!({
                "object": "organization.project.service_account.api_key",
                "value": k.value,
                "name": "Secret Key",
                "created_at": k.created_at,
                "id": k.id,
            })
        });
        let response = json!({
            "object": "organization.project.service_account",
            "id": account.id,
            "name": account.name,
            "role": account.role,
            "created_at": account.created_at,
            "api_key": api_key,
        });
        project.accounts.push(account);
        Ok(ok(&response))
    }

    fn list_accounts(
        &mut self,
        project_id: &str,
        incoming: &Incoming,
    ) -> Result<Response, Response> {
        let page = page(incoming)?;
        let project = self.open_project(project_id)?;
        let items: Vec<(String, bool, Json)> = project
            .accounts
            .iter()
            .map(|a| (a.id.clone(), !a.deleted, a.json()))
            .collect();
        list(&items, &page).map(|l| ok(&l))
    }

    fn delete(&mut self, project_id: &str, account_id: &str) -> Result<Response, Response> {
        let project = self.open_project(project_id)?;
        let account = project
            .accounts
            .iter_mut()
            .find(|a| a.id == account_id && !a.deleted)
            .ok_or_else(|| {
                error(
                    404,
                    &format!("No such service account: '{account_id}'."),
                    "invalid_request_error",
                    None,
                    None,
                )
            })?;
        // Deleting the account revokes its key.
        account.deleted = true;
        Ok(ok(&json!({
            "object": "organization.project.service_account.deleted",
            "id": account_id,
            "deleted": true,
        })))
    }

    fn list_keys(&mut self, project_id: &str, incoming: &Incoming) -> Result<Response, Response> {
        let page = page(incoming)?;
        let project = self.open_project(project_id)?;
        let items: Vec<(String, bool, Json)> = project
            .accounts
            .iter()
            .filter_map(|a| {
                let key = a.key.as_ref()?;
                let owner = json!({
                    "type": "service_account",
                    "service_account": {
                        "id": a.id, "name": a.name, "created_at": a.created_at, "role": a.role,
                    },
                });
                let item = json!({
                    "object": "organization.project.api_key",
                    "redacted_value": redact_for_listing(&key.value),
                    "name": "Secret Key",
                    "created_at": key.created_at,
                    "last_used_at": key.last_used_at,
                    "id": key.id,
                    "owner_project_access": "active",
                    "owner": owner,
                });
                Some((key.id.clone(), !a.deleted, item))
            })
            .collect();
        list(&items, &page).map(|l| ok(&l))
    }
}

fn json_kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Json::Number(_) => "a decimal",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// The body of a `Fault::Status`: OpenAI's error object unless the fault brought its own.
fn render_status(status: u16, headers: &[(String, String)], body: &str) -> Response {
    if !body.is_empty() {
        return text_response(status, guess_content_type(body), headers, body);
    }
    let (message, kind, code): (&str, &str, Option<&str>) = match status {
        429 => (
            "Rate limit reached for requests. Please try again in a moment.",
            "requests",
            Some("rate_limit_exceeded"),
        ),
        500 => (
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
        ),
        503 => (
            "The server is overloaded or not ready yet.",
            "server_error",
            None,
        ),
        s if s >= 500 => (reason(s), "server_error", None),
        401 => (
            "Unauthorized.",
            "invalid_request_error",
            Some("invalid_api_key"),
        ),
        s => (reason(s), "invalid_request_error", None),
    };
    let mut all = headers.to_vec();
    all.push(("x-request-id".to_owned(), format!("req_{}", hex_id::<16>())));
    json_response(
        status,
        &all,
        &json!({ "error": { "message": message, "type": kind, "param": null, "code": code } }),
    )
}

async fn handle(AxumState(app): AxumState<App>, request: Request) -> Response {
    let incoming = Incoming::read(request).await;
    let route = Route::of(&incoming.method, &incoming.path);
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

    const ADMIN: &str = "sk-admin-test-0123456789";
    const PROJECT: &str = "proj_live";
    const ARCHIVED: &str = "proj_old";

    async fn start_with(warmup: u32) -> OpenAiStandIn {
        OpenAiStandIn::start(
            "127.0.0.1:0".parse().unwrap(),
            OpenAiConfig {
                admin_keys: vec![ADMIN.into()],
                projects: vec![PROJECT.into()],
                archived_projects: vec![ARCHIVED.into()],
                new_key_warmup: warmup,
            },
        )
        .await
        .unwrap()
    }

    async fn start() -> OpenAiStandIn {
        start_with(0).await
    }

    fn accounts_url(oa: &OpenAiStandIn, project: &str) -> String {
        format!(
            "{}/organization/projects/{project}/service_accounts",
            oa.base_url()
        )
    }

    async fn create(oa: &OpenAiStandIn, name: &str) -> (u16, Json) {
        let response = reqwest::Client::new()
            .post(accounts_url(oa, PROJECT))
            .bearer_auth(ADMIN)
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn get(url: &str, key: Option<&str>) -> (u16, Json) {
        let mut request = reqwest::Client::new().get(url);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn models(oa: &OpenAiStandIn, key: &str) -> (u16, Json) {
        get(&format!("{}/models", oa.base_url()), Some(key)).await
    }

    #[tokio::test]
    async fn create_returns_the_documented_shape_and_a_working_key() {
        let oa = start().await;
        let (status, body) = create(&oa, "secret-rotation-r1").await;
        assert_eq!(status, 200);
        let object = body.as_object().unwrap();
        let mut keys: Vec<_> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["api_key", "created_at", "id", "name", "object", "role"]
        );
        assert_eq!(
            body["object"],
            json!("organization.project.service_account")
        );
        assert!(body["id"].as_str().unwrap().starts_with("svc_acct_"));
        assert_eq!(body["name"], json!("secret-rotation-r1"));
        assert_eq!(body["role"], json!("member"));
        assert!(body["created_at"].is_i64());
        let key = &body["api_key"];
        assert_eq!(
            key["object"],
            json!("organization.project.service_account.api_key")
        );
        assert_eq!(key["name"], json!("Secret Key"));
        assert!(key["id"].as_str().unwrap().starts_with("key_"));
        assert!(key["created_at"].is_i64());
        let value = key["value"].as_str().unwrap();
        assert!(value.starts_with("sk-svcacct-"));
        assert!(oa.is_key_live(value));
        assert_eq!(oa.live_keys(), [value]);
        let accounts = oa.service_accounts(PROJECT);
        assert_eq!(accounts.len(), 1);
        assert_eq!(accounts[0].key_value.as_deref(), Some(value));

        let (status, body) = models(&oa, value).await;
        assert_eq!(status, 200);
        assert_eq!(body["object"], json!("list"));
        assert_eq!(body["data"][0]["object"], json!("model"));
        assert_eq!(body["data"][0]["id"], json!("gpt-4o-mini"));
    }

    #[tokio::test]
    async fn create_validates_the_body_and_the_project() {
        let oa = start().await;
        let client = reqwest::Client::new();
        let post = |project: &str, body: Json| {
            client
                .post(accounts_url(&oa, project))
                .bearer_auth(ADMIN)
                .json(&body)
                .send()
        };
        let response = post(PROJECT, json!({})).await.unwrap();
        assert_eq!(response.status().as_u16(), 400);
        let body: Json = response.json().await.unwrap();
        assert_eq!(body["error"]["param"], json!("name"));
        assert_eq!(body["error"]["code"], json!("missing_required_parameter"));
        let response = post(PROJECT, json!({ "name": 5 })).await.unwrap();
        assert_eq!(response.status().as_u16(), 400);
        let response = post(ARCHIVED, json!({ "name": "x" })).await.unwrap();
        assert_eq!(response.status().as_u16(), 400);
        let body: Json = response.json().await.unwrap();
        assert_eq!(body["error"]["type"], json!("invalid_request_error"));
        let response = post("proj_nope", json!({ "name": "x" })).await.unwrap();
        assert_eq!(response.status().as_u16(), 404);
        assert!(oa.service_accounts(PROJECT).is_empty());
    }

    #[tokio::test]
    async fn list_paginates_with_after_and_limit() {
        let oa = start().await;
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(
                create(&oa, &format!("sa-{i}")).await.1["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        let url = accounts_url(&oa, PROJECT);
        let (status, page1) = get(&format!("{url}?limit=2"), Some(ADMIN)).await;
        assert_eq!(status, 200);
        assert_eq!(page1["object"], json!("list"));
        assert_eq!(page1["data"].as_array().unwrap().len(), 2);
        assert_eq!(page1["first_id"], json!(ids[0]));
        assert_eq!(page1["last_id"], json!(ids[1]));
        assert_eq!(page1["has_more"], json!(true));
        let item = page1["data"][0].as_object().unwrap();
        let mut keys: Vec<_> = item.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["created_at", "id", "name", "object", "role"]);

        // Deleting a listed account does not break its use as a cursor.
        reqwest::Client::new()
            .delete(format!("{url}/{}", ids[1]))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let (_, page2) = get(&format!("{url}?limit=2&after={}", ids[1]), Some(ADMIN)).await;
        assert_eq!(page2["first_id"], json!(ids[2]));
        assert_eq!(page2["last_id"], json!(ids[3]));
        assert_eq!(page2["has_more"], json!(true));
        let (_, page3) = get(&format!("{url}?limit=2&after={}", ids[3]), Some(ADMIN)).await;
        assert_eq!(page3["data"].as_array().unwrap().len(), 1);
        assert_eq!(page3["has_more"], json!(false));

        let (_, all) = get(&url, Some(ADMIN)).await;
        assert_eq!(all["data"].as_array().unwrap().len(), 4);

        for bad in ["0", "101", "ten"] {
            let (status, body) = get(&format!("{url}?limit={bad}"), Some(ADMIN)).await;
            assert_eq!(status, 400, "limit={bad}");
            assert_eq!(body["error"]["param"], json!("limit"));
        }
    }

    #[tokio::test]
    async fn delete_kills_the_key() {
        let oa = start().await;
        let (_, created) = create(&oa, "old").await;
        let id = created["id"].as_str().unwrap();
        let key = created["api_key"]["value"].as_str().unwrap();
        let url = format!("{}/{id}", accounts_url(&oa, PROJECT));
        let response = reqwest::Client::new()
            .delete(&url)
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(
            response.json::<Json>().await.unwrap(),
            json!({ "object": "organization.project.service_account.deleted", "id": id, "deleted": true })
        );
        assert!(!oa.is_key_live(key));
        assert!(oa.service_accounts(PROJECT).is_empty());
        let (status, body) = models(&oa, key).await;
        assert_eq!(status, 401);
        assert_eq!(body["error"]["code"], json!("invalid_api_key"));
        assert!(!body["error"]["message"].as_str().unwrap().contains(key));

        let response = reqwest::Client::new()
            .delete(&url)
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 404);
    }

    #[tokio::test]
    async fn api_keys_list_shows_redacted_values_and_owners() {
        let oa = start().await;
        let (_, created) = create(&oa, "svc").await;
        let key = created["api_key"]["value"].as_str().unwrap().to_owned();
        models(&oa, &key).await;
        let (status, body) = get(
            &format!("{}/organization/projects/{PROJECT}/api_keys", oa.base_url()),
            Some(ADMIN),
        )
        .await;
        assert_eq!(status, 200);
        let item = &body["data"][0];
        assert_eq!(item["object"], json!("organization.project.api_key"));
        assert_eq!(item["id"], created["api_key"]["id"]);
        let redacted = item["redacted_value"].as_str().unwrap();
        assert!(
            redacted.starts_with("sk-svc...") && redacted != key,
            "{redacted}"
        );
        assert!(item["last_used_at"].is_i64());
        assert_eq!(item["owner"]["type"], json!("service_account"));
        assert_eq!(item["owner"]["service_account"]["id"], created["id"]);
        assert_eq!(body["has_more"], json!(false));
    }

    #[tokio::test]
    async fn new_keys_can_need_a_warmup() {
        let oa = start_with(2).await;
        let (_, created) = create(&oa, "new").await;
        let key = created["api_key"]["value"].as_str().unwrap();
        assert_eq!(models(&oa, key).await.0, 401);
        assert_eq!(models(&oa, key).await.0, 401);
        assert_eq!(models(&oa, key).await.0, 200);
        // Seeded accounts work at once.
        let seeded = oa.create_service_account(PROJECT, "seeded").unwrap();
        assert_eq!(
            models(&oa, seeded.key_value.as_deref().unwrap()).await.0,
            200
        );
    }

    #[tokio::test]
    async fn admin_endpoints_refuse_anything_but_an_admin_key() {
        let oa = start().await;
        let seeded = oa.create_service_account(PROJECT, "seeded").unwrap();
        let project_key = seeded.key_value.unwrap();
        let url = accounts_url(&oa, PROJECT);

        let (status, body) = get(&url, None).await;
        assert_eq!(status, 401);
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("You didn't provide an API key"));
        assert_eq!(body["error"]["code"], Json::Null);

        let response = reqwest::Client::new()
            .get(&url)
            .header("Authorization", ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401);

        let (status, body) = get(&url, Some("sk-unknown-abcdefghijklmnop")).await;
        assert_eq!(status, 401);
        assert_eq!(body["error"]["code"], json!("invalid_api_key"));
        assert_eq!(body["error"]["type"], json!("invalid_request_error"));
        assert_eq!(body["error"]["param"], Json::Null);
        assert!(body["error"]["message"].as_str().unwrap().contains("mnop"));
        assert!(!body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sk-unknown-abcdefghijklmnop"));

        let (status, body) = get(&url, Some(&project_key)).await;
        assert_eq!(status, 401);
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("insufficient permissions"));

        // And the admin key does not work for model calls.
        assert_eq!(models(&oa, ADMIN).await.0, 401);
        assert_eq!(get(&url, Some(ADMIN)).await.0, 200);
    }

    #[tokio::test]
    async fn status_and_rate_limit_faults() {
        let oa = start().await;
        oa.faults()
            .inject("create_service_account", Fault::rate_limited(2));
        oa.faults()
            .inject("create_service_account", Fault::status(500));
        let response = reqwest::Client::new()
            .post(accounts_url(&oa, PROJECT))
            .bearer_auth(ADMIN)
            .json(&json!({ "name": "x" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 429);
        assert_eq!(response.headers()["retry-after"], "2");
        let body: Json = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], json!("rate_limit_exceeded"));
        let (status, body) = create(&oa, "x").await;
        assert_eq!(status, 500);
        assert_eq!(body["error"]["type"], json!("server_error"));
        assert!(oa.service_accounts(PROJECT).is_empty());
        assert_eq!(create(&oa, "x").await.0, 200);
    }

    #[tokio::test]
    async fn delay_lose_hang_and_html_faults() {
        let oa = start().await;
        oa.faults().inject(
            "create_service_account",
            Fault::Delay(Duration::from_millis(250)),
        );
        let started = Instant::now();
        assert_eq!(create(&oa, "slow").await.0, 200);
        assert!(started.elapsed() >= Duration::from_millis(250));

        // Lost response: the account and its key exist, the client never saw them.
        oa.faults()
            .inject("create_service_account", Fault::LoseResponse);
        let result = reqwest::Client::new()
            .post(accounts_url(&oa, PROJECT))
            .bearer_auth(ADMIN)
            .json(&json!({ "name": "secret-rotation-lost" }))
            .send()
            .await;
        assert!(result.is_err());
        assert!(oa
            .service_accounts(PROJECT)
            .iter()
            .any(|a| a.name == "secret-rotation-lost"));

        oa.faults().inject("list_service_accounts", Fault::Hang);
        let result = reqwest::Client::new()
            .get(accounts_url(&oa, PROJECT))
            .bearer_auth(ADMIN)
            .timeout(Duration::from_millis(300))
            .send()
            .await;
        assert!(result.unwrap_err().is_timeout());
        assert_eq!(oa.journal_count("list_service_accounts"), 1);

        oa.faults().inject("list_models", Fault::Html403);
        let response = reqwest::get(format!("{}/models", oa.base_url()))
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 403);
        assert!(response
            .text()
            .await
            .unwrap()
            .contains("api.openai.com used Cloudflare"));

        // A refused connection: no answer, and nothing done.
        let accounts = oa.service_accounts(PROJECT).len();
        oa.faults().inject("create_service_account", Fault::Refuse);
        let result = reqwest::Client::new()
            .post(accounts_url(&oa, PROJECT))
            .bearer_auth(ADMIN)
            .json(&json!({ "name": "refused" }))
            .send()
            .await;
        assert!(result.is_err(), "{result:?}");
        assert_eq!(
            oa.service_accounts(PROJECT).len(),
            accounts,
            "nothing was created"
        );

        // Malformed JSON: 200 with a JSON content type, a body that does not parse, and
        // nothing done.
        oa.faults()
            .inject("create_service_account", Fault::MalformedJson);
        let response = reqwest::Client::new()
            .post(accounts_url(&oa, PROJECT))
            .bearer_auth(ADMIN)
            .json(&json!({ "name": "malformed" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert!(response.json::<Json>().await.is_err());
        assert_eq!(
            oa.service_accounts(PROJECT).len(),
            accounts,
            "nothing was created"
        );
    }

    #[tokio::test]
    async fn journal_records_every_request() {
        let oa = start().await;
        get(&accounts_url(&oa, PROJECT), None).await;
        create(&oa, "a").await;
        let response = reqwest::get(format!("{}/nowhere", oa.base_url()))
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 404);
        let body: Json = response.json().await.unwrap();
        assert_eq!(
            body["error"]["message"],
            json!("Invalid URL (GET /v1/nowhere)")
        );
        let ops: Vec<_> = oa.received().into_iter().map(|r| r.operation).collect();
        assert_eq!(
            ops,
            ["list_service_accounts", "create_service_account", "unknown"]
        );
        let received = oa.received();
        assert_eq!(received[1].method, "POST");
        assert_eq!(received[1].body, r#"{"name":"a"}"#);
        assert_eq!(
            received[1].header("authorization"),
            Some(format!("Bearer {ADMIN}").as_str())
        );
    }
}
