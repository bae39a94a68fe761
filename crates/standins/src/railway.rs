//! Railway stand-in: `POST /graphql/v2` validated against Railway's real schema, with the
//! handful of fields the rotation engine uses implemented faithfully (variable upserts and
//! their automatic deploys, explicit deploys, deployment status polling), and a
//! `GET /health/{serviceId}` endpoint standing for the deployed app's health check.
//!
//! Order of checks for a GraphQL request, as a GraphQL server does it: the HTTP request
//! (method, content type, JSON body), then parsing and validation against the schema
//! (400), then "does the stand-in implement every selected field" (400), then the token
//! (`Not Authorized` arrives as a GraphQL error with HTTP 200), then execution. A queued
//! [`Fault`](super::Fault) is applied before all of these.

mod schema;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::SocketAddr;
use std::time::SystemTime;

use axum::extract::{Request, State as AxumState};
use axum::http::Method;
use axum::response::Response;
use serde_json::{json, Map, Value as Json};

use self::schema::{OpKind, Prepared, Selected};
use super::{
    deliver, has_header, json_response, lock, plan, reason, text_response, uuid, Incoming, Plan,
    StandIn, StandInError,
};

/// Host named in the Cloudflare page of [`Fault::Html403`](super::Fault::Html403).
const HOST: &str = "backboard.railway.com";

/// A project token: valid for one environment of one project.
#[derive(Debug, Clone)]
pub struct ProjectToken {
    pub token: String,
    pub project_id: String,
    pub environment_id: String,
}

/// A service instance the stand-in knows (a service in one environment of a project).
#[derive(Debug, Clone)]
pub struct ServiceRef {
    pub project_id: String,
    pub environment_id: String,
    pub service_id: String,
}

#[derive(Debug, Clone)]
pub struct RailwayConfig {
    /// Sent as `Project-Access-Token: <token>`.
    pub project_tokens: Vec<ProjectToken>,
    /// Account (or workspace) tokens, sent as `Authorization: Bearer <token>`: every project.
    pub account_tokens: Vec<String>,
    pub services: Vec<ServiceRef>,
    /// How many status reads a deployment spends in each of INITIALIZING, BUILDING and
    /// DEPLOYING. 0: deployments reach their final status at once.
    pub polls_per_step: u32,
}

impl Default for RailwayConfig {
    fn default() -> Self {
        RailwayConfig {
            project_tokens: Vec::new(),
            account_tokens: Vec::new(),
            services: Vec::new(),
            polls_per_step: 1,
        }
    }
}

/// How the next deployment of a service ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeployOutcome {
    #[default]
    Success,
    Crashed,
    Failed,
    /// Stays DEPLOYING forever.
    Hang,
}

/// The `DeploymentStatus` values the stand-in produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentStatus {
    Initializing,
    Building,
    Deploying,
    Success,
    Crashed,
    Failed,
    /// A later deployment of the same service reached SUCCESS.
    Removed,
}

impl DeploymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentStatus::Initializing => "INITIALIZING",
            DeploymentStatus::Building => "BUILDING",
            DeploymentStatus::Deploying => "DEPLOYING",
            DeploymentStatus::Success => "SUCCESS",
            DeploymentStatus::Crashed => "CRASHED",
            DeploymentStatus::Failed => "FAILED",
            DeploymentStatus::Removed => "REMOVED",
        }
    }
}

/// A deployment as tests see it: what the service runs (or tried to run) with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentInfo {
    pub id: String,
    pub service_id: String,
    pub environment_id: String,
    pub status: DeploymentStatus,
    /// The service's variables (rendered) when the deployment was created.
    pub variables: BTreeMap<String, String>,
}

/// A running Railway stand-in. Dropping it shuts it down.
pub type RailwayStandIn = StandIn<RailwayState>;

/// What a request handler of this stand-in gets.
type App = super::App<RailwayState>;

impl RailwayStandIn {
    /// Binds `addr` (loopback; port 0 picks one) and serves on the current runtime.
    pub async fn start(addr: SocketAddr, config: RailwayConfig) -> io::Result<Self> {
        StandIn::serve(addr, RailwayState::new(config), handle).await
    }

    /// `http://127.0.0.1:PORT/graphql/v2`.
    pub fn endpoint(&self) -> String {
        format!("http://{}/graphql/v2", self.addr())
    }

    /// `http://127.0.0.1:PORT/health/{service_id}`.
    pub fn health_url(&self, service_id: &str) -> String {
        format!("http://{}/health/{service_id}", self.addr())
    }

    /// The service's variables as stored (unrendered); empty for an unknown service.
    pub fn variables(
        &self,
        project_id: &str,
        environment_id: &str,
        service_id: &str,
    ) -> BTreeMap<String, String> {
        let state = lock(&self.inner.state);
        state
            .service_index(environment_id, service_id)
            .and_then(|i| state.services.get(i))
            .filter(|s| s.project_id == project_id)
            .map(|s| s.variables.clone())
            .unwrap_or_default()
    }

    /// Sets a variable without deploying: seeds one before a test, or changes one behind
    /// our back, as a person editing it in Railway's dashboard would.
    pub fn set_variable(
        &self,
        project_id: &str,
        environment_id: &str,
        service_id: &str,
        name: &str,
        value: &str,
    ) -> Result<(), StandInError> {
        let mut state = lock(&self.inner.state);
        let service = state.service_mut(project_id, environment_id, service_id)?;
        service.variables.insert(name.to_owned(), value.to_owned());
        Ok(())
    }

    /// Removes a variable behind our back, without deploying. Returns whether it was set.
    pub fn remove_variable(
        &self,
        project_id: &str,
        environment_id: &str,
        service_id: &str,
        name: &str,
    ) -> Result<bool, StandInError> {
        let mut state = lock(&self.inner.state);
        let service = state.service_mut(project_id, environment_id, service_id)?;
        service.sealed.remove(name);
        Ok(service.variables.remove(name).is_some())
    }

    /// Seals a variable, as Railway's dashboard does: deployments still get its value,
    /// but the `variables` query answers `null` for it from now on (a sealed value can
    /// never be read back through the API).
    pub fn seal_variable(
        &self,
        project_id: &str,
        environment_id: &str,
        service_id: &str,
        name: &str,
    ) -> Result<(), StandInError> {
        let mut state = lock(&self.inner.state);
        let service = state.service_mut(project_id, environment_id, service_id)?;
        if !service.variables.contains_key(name) {
            return Err(StandInError::Unknown {
                kind: "variable",
                id: name.to_owned(),
            });
        }
        service.sealed.insert(name.to_owned());
        Ok(())
    }

    /// Every deployment, oldest first.
    pub fn deployments(&self) -> Vec<DeploymentInfo> {
        lock(&self.inner.state)
            .deployments
            .iter()
            .map(Deployment::info)
            .collect()
    }

    /// How the next deployment of `service_id` ends; later ones succeed again.
    pub fn set_next_deploy_outcome(&self, service_id: &str, outcome: DeployOutcome) {
        lock(&self.inner.state)
            .next_outcome
            .insert(service_id.to_owned(), outcome);
    }

    /// Forces the health endpoint's status for `service_id` (`None`: back to following the
    /// latest deployment).
    pub fn set_health(&self, service_id: &str, status: Option<u16>) {
        let mut state = lock(&self.inner.state);
        match status {
            Some(code) => state.forced_health.insert(service_id.to_owned(), code),
            None => state.forced_health.remove(service_id),
        };
    }
}

// ---------------------------------------------------------------------------------------
// State.

struct Service {
    project_id: String,
    environment_id: String,
    service_id: String,
    instance_id: String,
    variables: BTreeMap<String, String>,
    /// Names whose values `variables` answers as null.
    sealed: BTreeSet<String>,
}

struct Deployment {
    id: String,
    project_id: String,
    environment_id: String,
    service_id: String,
    outcome: DeployOutcome,
    /// 0 INITIALIZING, 1 BUILDING, 2 DEPLOYING, 3 final.
    stage: u8,
    polls_at_stage: u32,
    removed: bool,
    variables: BTreeMap<String, String>,
    created_at: SystemTime,
    status_updated_at: SystemTime,
}

impl Deployment {
    fn status(&self) -> DeploymentStatus {
        if self.removed {
            return DeploymentStatus::Removed;
        }
        match (self.stage, self.outcome) {
            (0, _) => DeploymentStatus::Initializing,
            (1, _) => DeploymentStatus::Building,
            (2, _) | (_, DeployOutcome::Hang) => DeploymentStatus::Deploying,
            (_, DeployOutcome::Success) => DeploymentStatus::Success,
            (_, DeployOutcome::Crashed) => DeploymentStatus::Crashed,
            (_, DeployOutcome::Failed) => DeploymentStatus::Failed,
        }
    }

    fn info(&self) -> DeploymentInfo {
        DeploymentInfo {
            id: self.id.clone(),
            service_id: self.service_id.clone(),
            environment_id: self.environment_id.clone(),
            status: self.status(),
            variables: self.variables.clone(),
        }
    }
}

/// The Railway stand-in's state (its fields stay private).
pub struct RailwayState {
    project_tokens: Vec<ProjectToken>,
    account_tokens: Vec<String>,
    polls_per_step: u32,
    services: Vec<Service>,
    /// Shared variables per (project, environment).
    shared: HashMap<(String, String), BTreeMap<String, String>>,
    deployments: Vec<Deployment>,
    next_outcome: HashMap<String, DeployOutcome>,
    forced_health: HashMap<String, u16>,
}

/// Who is calling, from the token.
enum Caller {
    Account,
    Project {
        project_id: String,
        environment_id: String,
    },
}

impl Caller {
    fn may(&self, project_id: &str, environment_id: &str) -> bool {
        match self {
            Caller::Account => true,
            Caller::Project {
                project_id: p,
                environment_id: e,
            } => p == project_id && e == environment_id,
        }
    }
}

/// An error of one root field (becomes a GraphQL error; HTTP stays 200).
struct FieldError {
    message: String,
    code: &'static str,
}

fn not_authorized() -> FieldError {
    FieldError {
        message: "Not Authorized".to_owned(),
        code: "UNAUTHORIZED",
    }
}

fn not_found(what: &str) -> FieldError {
    FieldError {
        message: format!("{what} not found"),
        code: "NOT_FOUND",
    }
}

fn bad_input(message: &str) -> FieldError {
    FieldError {
        message: message.to_owned(),
        code: "BAD_USER_INPUT",
    }
}

fn str_arg<'a>(args: &'a Map<String, Json>, name: &str) -> Result<&'a str, FieldError> {
    args.get(name)
        .and_then(Json::as_str)
        .ok_or_else(|| bad_input(&format!("missing argument {name}")))
}

fn opt_str<'a>(args: &'a Map<String, Json>, name: &str) -> Option<&'a str> {
    args.get(name).and_then(Json::as_str)
}

fn flag(args: &Map<String, Json>, name: &str) -> bool {
    args.get(name).and_then(Json::as_bool).unwrap_or(false)
}

fn input(field: &Selected) -> Result<&Map<String, Json>, FieldError> {
    field
        .args
        .get("input")
        .and_then(Json::as_object)
        .ok_or_else(|| bad_input("missing argument input"))
}

fn timestamp(at: SystemTime) -> Json {
    let at: chrono::DateTime<chrono::Utc> = at.into();
    Json::String(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// Replaces `${{shared.NAME}}` references with the environment's shared variable; other
/// references (to other services) stay as written.
fn render(value: &str, shared: Option<&BTreeMap<String, String>>) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        match after.find("}}") {
            Some(end) => {
                let reference = after[..end].trim();
                let resolved = reference
                    .strip_prefix("shared.")
                    .and_then(|name| shared.and_then(|s| s.get(name)));
                match resolved {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&rest[start..start + 3 + end + 2]),
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The fields the stand-in answers, per type. Anything else the schema allows is refused
/// as not implemented, so the client cannot come to rely on untested behaviour.
fn implemented(type_name: &str, field: &str) -> bool {
    if field == "__typename" {
        return true;
    }
    match type_name {
        "Query" => matches!(field, "variables" | "deployment" | "serviceInstance"),
        "Mutation" => matches!(
            field,
            "variableCollectionUpsert"
                | "variableUpsert"
                | "variableDelete"
                | "serviceInstanceDeployV2"
        ),
        "Deployment" => matches!(
            field,
            "id" | "status"
                | "serviceId"
                | "environmentId"
                | "projectId"
                | "createdAt"
                | "updatedAt"
                | "statusUpdatedAt"
                | "canRedeploy"
                | "canRollback"
                | "deploymentStopped"
                | "staticUrl"
                | "url"
                | "snapshotId"
        ),
        "ServiceInstance" => matches!(
            field,
            "id" | "serviceId" | "environmentId" | "latestDeployment"
        ),
        _ => false,
    }
}

fn first_unimplemented(fields: &[Selected]) -> Option<&Selected> {
    fields.iter().find_map(|f| {
        if implemented(&f.parent, &f.name) {
            first_unimplemented(&f.children)
        } else {
            Some(f)
        }
    })
}

impl RailwayState {
    fn new(config: RailwayConfig) -> Self {
        let services = config
            .services
            .into_iter()
            .map(|s| Service {
                project_id: s.project_id,
                environment_id: s.environment_id,
                service_id: s.service_id,
                instance_id: uuid(),
                variables: BTreeMap::new(),
                sealed: BTreeSet::new(),
            })
            .collect();
        RailwayState {
            project_tokens: config.project_tokens,
            account_tokens: config.account_tokens,
            polls_per_step: config.polls_per_step,
            services,
            shared: HashMap::new(),
            deployments: Vec::new(),
            next_outcome: HashMap::new(),
            forced_health: HashMap::new(),
        }
    }

    fn service_mut(
        &mut self,
        project_id: &str,
        environment_id: &str,
        service_id: &str,
    ) -> Result<&mut Service, StandInError> {
        self.services
            .iter_mut()
            .find(|s| {
                s.project_id == project_id
                    && s.environment_id == environment_id
                    && s.service_id == service_id
            })
            .ok_or_else(|| StandInError::Unknown {
                kind: "service",
                id: format!("{project_id}/{environment_id}/{service_id}"),
            })
    }

    /// `None`: no token, an unknown token, or a project token sent as Bearer.
    fn caller(&self, incoming: &Incoming) -> Option<Caller> {
        if let Some(token) = incoming.header("project-access-token") {
            return self
                .project_tokens
                .iter()
                .find(|t| t.token == token)
                .map(|t| Caller::Project {
                    project_id: t.project_id.clone(),
                    environment_id: t.environment_id.clone(),
                });
        }
        let auth = incoming.header("authorization")?;
        let (scheme, token) = auth.split_once(' ')?;
        (scheme.eq_ignore_ascii_case("bearer") && self.account_tokens.iter().any(|t| t == token))
            .then_some(Caller::Account)
    }

    fn service_index(&self, environment_id: &str, service_id: &str) -> Option<usize> {
        self.services
            .iter()
            .position(|s| s.environment_id == environment_id && s.service_id == service_id)
    }

    fn environment_known(&self, project_id: &str, environment_id: &str) -> bool {
        self.services
            .iter()
            .any(|s| s.project_id == project_id && s.environment_id == environment_id)
    }

    /// Checks the caller may act on the project's environment, which must exist.
    fn authorize(
        &self,
        caller: &Caller,
        project_id: &str,
        environment_id: &str,
    ) -> Result<(), FieldError> {
        if caller.may(project_id, environment_id)
            && self.environment_known(project_id, environment_id)
        {
            Ok(())
        } else {
            Err(not_authorized())
        }
    }

    fn find_service(
        &self,
        project_id: &str,
        environment_id: &str,
        service_id: &str,
    ) -> Result<usize, FieldError> {
        self.service_index(environment_id, service_id)
            .filter(|&i| {
                self.services
                    .get(i)
                    .is_some_and(|s| s.project_id == project_id)
            })
            .ok_or_else(|| not_found("Service"))
    }

    fn rendered_variables(&self, index: usize) -> BTreeMap<String, String> {
        let Some(service) = self.services.get(index) else {
            return BTreeMap::new();
        };
        let shared = self
            .shared
            .get(&(service.project_id.clone(), service.environment_id.clone()));
        service
            .variables
            .iter()
            .map(|(k, v)| (k.clone(), render(v, shared)))
            .collect()
    }

    /// Creates a deployment of the service at `index` with its current variables.
    fn deploy(&mut self, index: usize) -> Option<String> {
        let variables = self.rendered_variables(index);
        let service = self.services.get(index)?;
        let outcome = self
            .next_outcome
            .remove(&service.service_id)
            .unwrap_or_default();
        let now = SystemTime::now();
        let id = uuid();
        let immediate = self.polls_per_step == 0;
        self.deployments.push(Deployment {
            id: id.clone(),
            project_id: service.project_id.clone(),
            environment_id: service.environment_id.clone(),
            service_id: service.service_id.clone(),
            outcome,
            stage: if immediate { 3 } else { 0 },
            polls_at_stage: 0,
            removed: false,
            variables,
            created_at: now,
            status_updated_at: now,
        });
        if immediate {
            self.after_status_change(self.deployments.len() - 1);
        }
        Some(id)
    }

    /// A deployment that reached SUCCESS replaces the service's earlier active one.
    fn after_status_change(&mut self, index: usize) {
        let Some(dep) = self.deployments.get(index) else {
            return;
        };
        if dep.status() != DeploymentStatus::Success {
            return;
        }
        let (env, svc, id) = (
            dep.environment_id.clone(),
            dep.service_id.clone(),
            dep.id.clone(),
        );
        let now = SystemTime::now();
        for other in &mut self.deployments {
            if other.id != id
                && other.environment_id == env
                && other.service_id == svc
                && other.status() == DeploymentStatus::Success
            {
                other.removed = true;
                other.status_updated_at = now;
            }
        }
    }

    /// A status read: the deployment moves on after `polls_per_step` reads at a stage.
    fn observe(&mut self, index: usize) {
        let polls_per_step = self.polls_per_step;
        let Some(dep) = self.deployments.get_mut(index) else {
            return;
        };
        if dep.stage >= 3 || dep.removed {
            return;
        }
        dep.polls_at_stage += 1;
        if dep.polls_at_stage < polls_per_step {
            return;
        }
        if dep.stage == 2 && dep.outcome == DeployOutcome::Hang {
            return;
        }
        dep.stage += 1;
        dep.polls_at_stage = 0;
        dep.status_updated_at = SystemTime::now();
        self.after_status_change(index);
    }

    fn latest_deployment(&self, environment_id: &str, service_id: &str) -> Option<usize> {
        self.deployments
            .iter()
            .rposition(|d| d.environment_id == environment_id && d.service_id == service_id)
    }

    // --- resolvers -------------------------------------------------------------------

    /// Deploys every service `skipDeploys: false` affects: the one service, or for a
    /// shared variable every service of the environment.
    fn auto_deploy(&mut self, project_id: &str, environment_id: &str, service: Option<usize>) {
        let targets: Vec<usize> = match service {
            Some(i) => vec![i],
            None => (0..self.services.len())
                .filter(|&i| {
                    self.services.get(i).is_some_and(|s| {
                        s.project_id == project_id && s.environment_id == environment_id
                    })
                })
                .collect(),
        };
        for i in targets {
            self.deploy(i);
        }
    }

    fn target_variables(
        &mut self,
        project_id: &str,
        environment_id: &str,
        service: Option<usize>,
    ) -> Option<&mut BTreeMap<String, String>> {
        match service {
            Some(i) => self.services.get_mut(i).map(|s| &mut s.variables),
            None => Some(
                self.shared
                    .entry((project_id.to_owned(), environment_id.to_owned()))
                    .or_default(),
            ),
        }
    }

    fn scope(
        &self,
        caller: &Caller,
        input: &Map<String, Json>,
    ) -> Result<(String, String, Option<usize>), FieldError> {
        let project_id = str_arg(input, "projectId")?;
        let environment_id = str_arg(input, "environmentId")?;
        self.authorize(caller, project_id, environment_id)?;
        let service = match opt_str(input, "serviceId") {
            Some(service_id) => Some(self.find_service(project_id, environment_id, service_id)?),
            None => None,
        };
        Ok((project_id.to_owned(), environment_id.to_owned(), service))
    }

    fn variable_collection_upsert(
        &mut self,
        caller: &Caller,
        field: &Selected,
    ) -> Result<Json, FieldError> {
        let input = input(field)?;
        let (project_id, environment_id, service) = self.scope(caller, input)?;
        let variables = input
            .get("variables")
            .and_then(Json::as_object)
            .ok_or_else(|| bad_input("variables must be an object"))?;
        let target = self
            .target_variables(&project_id, &environment_id, service)
            .ok_or_else(|| not_found("Service"))?;
        let replace = flag(input, "replace");
        if replace {
            target.clear();
        }
        for (name, value) in variables {
            target.insert(name.clone(), value.as_str().unwrap_or_default().to_owned());
        }
        if replace {
            if let Some(s) = service.and_then(|i| self.services.get_mut(i)) {
                s.sealed.clear();
            }
        }
        if !flag(input, "skipDeploys") {
            self.auto_deploy(&project_id, &environment_id, service);
        }
        Ok(Json::Bool(true))
    }

    fn variable_upsert(&mut self, caller: &Caller, field: &Selected) -> Result<Json, FieldError> {
        let input = input(field)?;
        let (project_id, environment_id, service) = self.scope(caller, input)?;
        let name = str_arg(input, "name")?.to_owned();
        let value = str_arg(input, "value")?.to_owned();
        self.target_variables(&project_id, &environment_id, service)
            .ok_or_else(|| not_found("Service"))?
            .insert(name, value);
        if !flag(input, "skipDeploys") {
            self.auto_deploy(&project_id, &environment_id, service);
        }
        Ok(Json::Bool(true))
    }

    /// `VariableDeleteInput` has no `skipDeploys`: like any variable change through the
    /// API, a delete redeploys (UNCONFIRMED for deletes specifically).
    fn variable_delete(&mut self, caller: &Caller, field: &Selected) -> Result<Json, FieldError> {
        let input = input(field)?;
        let (project_id, environment_id, service) = self.scope(caller, input)?;
        let name = str_arg(input, "name")?;
        let removed = self
            .target_variables(&project_id, &environment_id, service)
            .ok_or_else(|| not_found("Service"))?
            .remove(name);
        if removed.is_none() {
            return Err(not_found("Variable"));
        }
        if let Some(s) = service.and_then(|i| self.services.get_mut(i)) {
            s.sealed.remove(name);
        }
        self.auto_deploy(&project_id, &environment_id, service);
        Ok(Json::Bool(true))
    }

    fn service_instance_deploy_v2(
        &mut self,
        caller: &Caller,
        field: &Selected,
    ) -> Result<Json, FieldError> {
        let environment_id = str_arg(&field.args, "environmentId")?;
        let service_id = str_arg(&field.args, "serviceId")?;
        let index = self
            .service_index(environment_id, service_id)
            .ok_or_else(not_authorized)?;
        let project_id = self
            .services
            .get(index)
            .map(|s| s.project_id.clone())
            .unwrap_or_default();
        if !caller.may(&project_id, environment_id) {
            return Err(not_authorized());
        }
        self.deploy(index)
            .map(Json::String)
            .ok_or_else(|| not_found("Service"))
    }

    fn variables_query(&self, caller: &Caller, field: &Selected) -> Result<Json, FieldError> {
        let (project_id, environment_id, service) = self.scope(caller, &field.args)?;
        let unrendered = flag(&field.args, "unrendered");
        let sealed = service
            .and_then(|i| self.services.get(i))
            .map(|s| s.sealed.clone())
            .unwrap_or_default();
        let map = match service {
            Some(i) if unrendered => self
                .services
                .get(i)
                .map(|s| s.variables.clone())
                .unwrap_or_default(),
            Some(i) => self.rendered_variables(i),
            None => self
                .shared
                .get(&(project_id, environment_id))
                .cloned()
                .unwrap_or_default(),
        };
        Ok(Json::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let value = if sealed.contains(&k) {
                        Json::Null
                    } else {
                        Json::String(v)
                    };
                    (k, value)
                })
                .collect(),
        ))
    }

    fn deployment_query(&mut self, caller: &Caller, field: &Selected) -> Result<Json, FieldError> {
        let id = str_arg(&field.args, "id")?;
        let index = self
            .deployments
            .iter()
            .position(|d| d.id == id)
            .ok_or_else(|| not_found("Deployment"))?;
        let allowed = self
            .deployments
            .get(index)
            .is_some_and(|d| caller.may(&d.project_id, &d.environment_id));
        if !allowed {
            return Err(not_authorized());
        }
        Ok(self.deployment_json(index, &field.children))
    }

    fn service_instance_query(
        &mut self,
        caller: &Caller,
        field: &Selected,
    ) -> Result<Json, FieldError> {
        let environment_id = str_arg(&field.args, "environmentId")?;
        let service_id = str_arg(&field.args, "serviceId")?;
        let index = self
            .service_index(environment_id, service_id)
            .ok_or_else(not_authorized)?;
        let allowed = self
            .services
            .get(index)
            .is_some_and(|s| caller.may(&s.project_id, &s.environment_id));
        if !allowed {
            return Err(not_authorized());
        }
        let mut out = Map::new();
        for child in &field.children {
            let value = match child.name.as_str() {
                "__typename" => json!("ServiceInstance"),
                "id" => json!(self.services.get(index).map(|s| s.instance_id.clone())),
                "serviceId" => json!(service_id),
                "environmentId" => json!(environment_id),
                "latestDeployment" => match self.latest_deployment(environment_id, service_id) {
                    Some(d) => self.deployment_json(d, &child.children),
                    None => Json::Null,
                },
                _ => Json::Null,
            };
            out.insert(child.key.clone(), value);
        }
        Ok(Json::Object(out))
    }

    /// The selected fields of a deployment; reading `status` counts as a poll.
    fn deployment_json(&mut self, index: usize, selection: &[Selected]) -> Json {
        let Some(dep) = self.deployments.get(index) else {
            return Json::Null;
        };
        let mut out = Map::new();
        for field in selection {
            let status = dep.status();
            let value = match field.name.as_str() {
                "__typename" => json!("Deployment"),
                "id" => json!(dep.id),
                "status" => json!(status.as_str()),
                "serviceId" => json!(dep.service_id),
                "environmentId" => json!(dep.environment_id),
                "projectId" => json!(dep.project_id),
                "createdAt" => timestamp(dep.created_at),
                "updatedAt" | "statusUpdatedAt" => timestamp(dep.status_updated_at),
                "canRedeploy" => json!(true),
                "canRollback" => json!(matches!(
                    status,
                    DeploymentStatus::Success | DeploymentStatus::Removed
                )),
                "deploymentStopped" => json!(false),
                _ => Json::Null,
            };
            out.insert(field.key.clone(), value);
        }
        if selection.iter().any(|f| f.name == "status") {
            self.observe(index);
        }
        Json::Object(out)
    }

    fn execute(&mut self, prepared: &Prepared, caller: &Caller) -> Json {
        let root = match prepared.kind {
            OpKind::Mutation => "Mutation",
            _ => "Query",
        };
        let mut data = Map::new();
        let mut errors = Vec::new();
        for field in &prepared.fields {
            let result = match field.name.as_str() {
                "__typename" => Ok(json!(root)),
                "variableCollectionUpsert" => self.variable_collection_upsert(caller, field),
                "variableUpsert" => self.variable_upsert(caller, field),
                "variableDelete" => self.variable_delete(caller, field),
                "serviceInstanceDeployV2" => self.service_instance_deploy_v2(caller, field),
                "variables" => self.variables_query(caller, field),
                "deployment" => self.deployment_query(caller, field),
                "serviceInstance" => self.service_instance_query(caller, field),
                other => Err(bad_input(&format!("stand-in does not implement {other}"))),
            };
            match result {
                Ok(value) => {
                    data.insert(field.key.clone(), value);
                }
                Err(e) => errors.push(json!({
                    "message": e.message,
                    "locations": [{"line": field.pos.line, "column": field.pos.column}],
                    "path": [field.key],
                    "extensions": {"code": e.code},
                })),
            }
        }
        if errors.is_empty() {
            json!({ "data": data })
        } else {
            // Every root field the stand-in implements is non-null: one error nulls `data`.
            json!({ "errors": errors, "data": null })
        }
    }

    /// Status and body of `GET /health/{serviceId}`.
    fn health(&self, service_id: &str) -> (u16, Json) {
        if let Some(&code) = self.forced_health.get(service_id) {
            let status = if code < 400 { "ok" } else { "unavailable" };
            return (code, json!({ "status": status }));
        }
        if !self.services.iter().any(|s| s.service_id == service_id) {
            return (404, json!({ "status": "unknown service" }));
        }
        let latest = self
            .deployments
            .iter()
            .filter(|d| d.service_id == service_id)
            .max_by_key(|d| d.created_at);
        match latest.map(Deployment::status) {
            Some(DeploymentStatus::Success) => (200, json!({ "status": "ok" })),
            Some(other) => (
                503,
                json!({ "status": "unavailable", "deployment": other.as_str() }),
            ),
            None => (503, json!({ "status": "unavailable", "deployment": null })),
        }
    }
}

// ---------------------------------------------------------------------------------------
// HTTP.

fn graphql_errors(status: u16, errors: Vec<Json>) -> Response {
    json_response(status, &[], &json!({ "errors": errors, "data": null }))
}

fn one_error(status: u16, message: &str, code: &str) -> Response {
    graphql_errors(
        status,
        vec![json!({ "message": message, "extensions": { "code": code } })],
    )
}

/// The body of a `Fault::Status`: GraphQL-shaped unless the fault brought its own.
fn render_status(status: u16, headers: &[(String, String)], body: &str) -> Response {
    let mut headers = headers.to_vec();
    if status == 429 {
        for (name, value) in [
            ("X-RateLimit-Limit", "1000"),
            ("X-RateLimit-Remaining", "0"),
        ] {
            if !has_header(&headers, name) {
                headers.push((name.to_owned(), value.to_owned()));
            }
        }
    }
    if !body.is_empty() {
        return text_response(status, super::guess_content_type(body), &headers, body);
    }
    let code = match status {
        429 => "RATE_LIMITED",
        401 => "UNAUTHORIZED",
        403 => "FORBIDDEN",
        s if s >= 500 => "INTERNAL_SERVER_ERROR",
        _ => "BAD_REQUEST",
    };
    json_response(
        status,
        &headers,
        &json!({
            "errors": [{ "message": reason(status), "extensions": { "code": code } }],
            "data": null,
        }),
    )
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphqlBody {
    query: Option<String>,
    variables: Option<Map<String, Json>>,
    operation_name: Option<String>,
}

fn parse_body(incoming: &Incoming) -> Result<GraphqlBody, String> {
    serde_json::from_slice::<GraphqlBody>(&incoming.body).map_err(|e| e.to_string())
}

async fn handle(AxumState(app): AxumState<App>, request: Request) -> Response {
    let incoming = Incoming::read(request).await;
    if incoming.path == "/graphql/v2" {
        let operations = parse_body(&incoming)
            .ok()
            .and_then(|body| {
                let query = body.query?;
                let doc = graphql_parser::parse_query::<String>(&query)
                    .ok()?
                    .into_static();
                Some(schema::root_field_names(
                    &doc,
                    body.operation_name.as_deref(),
                ))
            })
            .unwrap_or_default();
        let label = if operations.is_empty() {
            "graphql".to_owned()
        } else {
            operations.join(",")
        };
        incoming.record(&app.inner.journal, &label);
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
            Plan::Proceed { lose } => deliver(&incoming, lose, app.inner.graphql(&incoming)),
        }
    } else if let Some(service_id) = incoming.path.strip_prefix("/health/") {
        incoming.record(&app.inner.journal, "health");
        let operations = ["health".to_owned()];
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
                let (status, body) = if incoming.method == Method::GET {
                    lock(&app.inner.state).health(service_id)
                } else {
                    (405, json!({ "status": "method not allowed" }))
                };
                deliver(&incoming, lose, json_response(status, &[], &body))
            }
        }
    } else {
        incoming.record(&app.inner.journal, "unknown");
        text_response(404, "text/plain", &[], "Not Found")
    }
}

impl super::Shared<RailwayState> {
    fn graphql(&self, incoming: &Incoming) -> Response {
        if incoming.method != Method::POST {
            return one_error(
                405,
                "stand-in: send GraphQL requests with POST",
                "METHOD_NOT_ALLOWED",
            );
        }
        let json_content = incoming.header("content-type").is_some_and(|ct| {
            ct.trim()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
        if !json_content {
            return one_error(
                400,
                "stand-in: send Content-Type: application/json",
                "BAD_REQUEST",
            );
        }
        let body = match parse_body(incoming) {
            Ok(body) => body,
            Err(why) => {
                return one_error(
                    400,
                    &format!("POST body sent invalid JSON: {why}"),
                    "BAD_REQUEST",
                )
            }
        };
        let Some(query) = body.query.filter(|q| !q.trim().is_empty()) else {
            return one_error(
                400,
                "GraphQL operations must contain a non-empty `query`.",
                "BAD_REQUEST",
            );
        };
        let doc = match graphql_parser::parse_query::<String>(&query) {
            Ok(doc) => doc.into_static(),
            Err(e) => {
                let detail = e.to_string();
                let detail = detail
                    .trim()
                    .trim_start_matches("query parse error:")
                    .trim();
                return one_error(
                    400,
                    &format!("Syntax Error: {detail}"),
                    "GRAPHQL_PARSE_FAILED",
                );
            }
        };
        let schema = match schema::schema() {
            Ok(schema) => schema,
            Err(why) => return one_error(500, why, "INTERNAL_SERVER_ERROR"),
        };
        let variables = body.variables.unwrap_or_default();
        let prepared =
            match schema::prepare(schema, &doc, body.operation_name.as_deref(), &variables) {
                Ok(prepared) => prepared,
                Err(errors) => {
                    let errors = errors
                        .into_iter()
                        .map(|e| {
                            let mut error = json!({
                                "message": e.message,
                                "extensions": { "code": "GRAPHQL_VALIDATION_FAILED" },
                            });
                            if let (Some(pos), Some(obj)) = (e.pos, error.as_object_mut()) {
                                obj.insert(
                                    "locations".to_owned(),
                                    json!([{ "line": pos.line, "column": pos.column }]),
                                );
                            }
                            error
                        })
                        .collect();
                    return graphql_errors(400, errors);
                }
            };
        if prepared.kind == OpKind::Subscription {
            return one_error(
                400,
                "stand-in does not implement subscriptions",
                "STANDIN_NOT_IMPLEMENTED",
            );
        }
        if let Some(field) = first_unimplemented(&prepared.fields) {
            return graphql_errors(
                400,
                vec![json!({
                    "message": format!(
                        "stand-in does not implement \"{}.{}\" (it exists in Railway's schema; \
                         implement it in src/standin/railway.rs before relying on it)",
                        field.parent, field.name
                    ),
                    "locations": [{ "line": field.pos.line, "column": field.pos.column }],
                    "extensions": { "code": "STANDIN_NOT_IMPLEMENTED" },
                })],
            );
        }
        let mut state = lock(&self.state);
        let Some(caller) = state.caller(incoming) else {
            return one_error(200, "Not Authorized", "UNAUTHORIZED");
        };
        json_response(200, &[], &state.execute(&prepared, &caller))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Fault;
    use std::time::{Duration, Instant};

    const PROJECT: &str = "proj-1";
    const ENV: &str = "env-prod";
    const OTHER_ENV: &str = "env-staging";
    const ACCOUNT: &str = "acct-token";
    const PROJECT_TOKEN: &str = "proj-token";

    fn config() -> RailwayConfig {
        let svc = |env: &str, id: &str| ServiceRef {
            project_id: PROJECT.into(),
            environment_id: env.into(),
            service_id: id.into(),
        };
        RailwayConfig {
            project_tokens: vec![ProjectToken {
                token: PROJECT_TOKEN.into(),
                project_id: PROJECT.into(),
                environment_id: ENV.into(),
            }],
            account_tokens: vec![ACCOUNT.into()],
            services: vec![
                svc(ENV, "svc-api"),
                svc(ENV, "svc-worker"),
                svc(OTHER_ENV, "svc-api"),
            ],
            polls_per_step: 1,
        }
    }

    async fn start() -> RailwayStandIn {
        RailwayStandIn::start("127.0.0.1:0".parse().unwrap(), config())
            .await
            .unwrap()
    }

    enum Auth<'a> {
        None,
        Bearer(&'a str),
        Project(&'a str),
    }

    async fn gql_with(
        rw: &RailwayStandIn,
        auth: Auth<'_>,
        query: &str,
        variables: Json,
    ) -> (u16, Json) {
        let mut request = reqwest::Client::new()
            .post(rw.endpoint())
            .json(&json!({ "query": query, "variables": variables }));
        request = match auth {
            Auth::None => request,
            Auth::Bearer(t) => request.bearer_auth(t),
            Auth::Project(t) => request.header("Project-Access-Token", t),
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn gql(rw: &RailwayStandIn, query: &str, variables: Json) -> (u16, Json) {
        gql_with(rw, Auth::Bearer(ACCOUNT), query, variables).await
    }

    const UPSERT: &str = "mutation Upsert($input: VariableCollectionUpsertInput!) {
        variableCollectionUpsert(input: $input)
    }";
    const DEPLOY: &str = "mutation Deploy($environmentId: String!, $serviceId: String!) {
        serviceInstanceDeployV2(environmentId: $environmentId, serviceId: $serviceId)
    }";
    const STATUS: &str = "query Status($id: String!) { deployment(id: $id) { id status } }";

    fn upsert_input(vars: Json, extra: Json) -> Json {
        let mut input = json!({
            "projectId": PROJECT, "environmentId": ENV, "serviceId": "svc-api", "variables": vars,
        });
        for (k, v) in extra.as_object().unwrap() {
            input[k] = v.clone();
        }
        json!({ "input": input })
    }

    async fn deploy(rw: &RailwayStandIn, service: &str) -> String {
        let (status, body) = gql(
            rw,
            DEPLOY,
            json!({"environmentId": ENV, "serviceId": service}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        body["data"]["serviceInstanceDeployV2"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn poll(rw: &RailwayStandIn, id: &str) -> String {
        let (_, body) = gql(rw, STATUS, json!({ "id": id })).await;
        body["data"]["deployment"]["status"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[tokio::test]
    async fn upsert_with_skip_deploys_merges_variables_without_deploying() {
        let rw = start().await;
        rw.set_variable(PROJECT, ENV, "svc-api", "KEEP", "1")
            .unwrap();
        let (status, body) = gql(
            &rw,
            UPSERT,
            upsert_input(json!({"API_KEY": "new"}), json!({"skipDeploys": true})),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body, json!({"data": {"variableCollectionUpsert": true}}));
        let expected = BTreeMap::from([
            ("API_KEY".into(), "new".into()),
            ("KEEP".into(), "1".into()),
        ]);
        assert_eq!(rw.variables(PROJECT, ENV, "svc-api"), expected);
        assert!(rw.deployments().is_empty());

        let (_, body) = gql(
            &rw,
            "query($p: String!, $e: String!, $s: String) { variables(projectId: $p, environmentId: $e, serviceId: $s, unrendered: true) }",
            json!({"p": PROJECT, "e": ENV, "s": "svc-api"}),
        )
        .await;
        assert_eq!(
            body["data"]["variables"],
            json!({"API_KEY": "new", "KEEP": "1"})
        );
    }

    #[tokio::test]
    async fn variables_changed_behind_our_back_show_in_the_query_without_a_deploy() {
        let rw = start().await;
        const READ: &str = "query($p: String!, $e: String!, $s: String) { variables(projectId: $p, environmentId: $e, serviceId: $s) }";
        let read = || async {
            let (status, body) =
                gql(&rw, READ, json!({ "p": PROJECT, "e": ENV, "s": "svc-api" })).await;
            assert_eq!(status, 200, "{body}");
            body["data"]["variables"].clone()
        };
        rw.set_variable(PROJECT, ENV, "svc-api", "A", "1").unwrap();
        rw.set_variable(PROJECT, ENV, "svc-api", "B", "2").unwrap();
        rw.set_variable(PROJECT, ENV, "svc-api", "A", "pasted by hand")
            .unwrap();
        assert_eq!(read().await, json!({ "A": "pasted by hand", "B": "2" }));
        assert!(rw.remove_variable(PROJECT, ENV, "svc-api", "B").unwrap());
        assert!(!rw.remove_variable(PROJECT, ENV, "svc-api", "B").unwrap());
        rw.seal_variable(PROJECT, ENV, "svc-api", "A").unwrap();
        assert_eq!(
            read().await,
            json!({ "A": null }),
            "sealed: never read back"
        );
        assert!(rw.seal_variable(PROJECT, ENV, "svc-api", "B").is_err());
        assert!(rw
            .set_variable(PROJECT, ENV, "svc-unknown", "A", "x")
            .is_err());
        // A sealed value still reaches the app, and nothing here deployed.
        assert_eq!(rw.variables(PROJECT, ENV, "svc-api")["A"], "pasted by hand");
        assert!(rw.deployments().is_empty());
    }

    #[tokio::test]
    async fn upsert_without_skip_deploys_deploys_once_with_the_new_values() {
        let rw = start().await;
        let (_, body) = gql(
            &rw,
            UPSERT,
            upsert_input(json!({"API_KEY": "v2"}), json!({})),
        )
        .await;
        assert_eq!(body["data"]["variableCollectionUpsert"], json!(true));
        let deployments = rw.deployments();
        assert_eq!(deployments.len(), 1);
        assert_eq!(deployments[0].service_id, "svc-api");
        assert_eq!(deployments[0].environment_id, ENV);
        assert_eq!(
            deployments[0].variables.get("API_KEY").map(String::as_str),
            Some("v2")
        );

        // variableUpsert follows the same rule.
        let (_, body) = gql(
            &rw,
            "mutation { variableUpsert(input: {projectId: \"proj-1\", environmentId: \"env-prod\", serviceId: \"svc-worker\", name: \"X\", value: \"1\", skipDeploys: true}) }",
            json!({}),
        )
        .await;
        assert_eq!(body["data"]["variableUpsert"], json!(true));
        assert_eq!(rw.deployments().len(), 1);
    }

    #[tokio::test]
    async fn replace_true_deletes_every_other_variable() {
        let rw = start().await;
        rw.set_variable(PROJECT, ENV, "svc-api", "DATABASE_URL", "postgres://x")
            .unwrap();
        rw.set_variable(PROJECT, ENV, "svc-api", "API_KEY", "old")
            .unwrap();
        gql(
            &rw,
            UPSERT,
            upsert_input(
                json!({"API_KEY": "new"}),
                json!({"replace": true, "skipDeploys": true}),
            ),
        )
        .await;
        assert_eq!(
            rw.variables(PROJECT, ENV, "svc-api"),
            BTreeMap::from([("API_KEY".into(), "new".into())])
        );
    }

    #[tokio::test]
    async fn variable_delete_removes_the_variable_and_redeploys() {
        let rw = start().await;
        rw.set_variable(PROJECT, ENV, "svc-api", "OLD", "x")
            .unwrap();
        let (_, body) = gql(
            &rw,
            "mutation($i: VariableDeleteInput!) { variableDelete(input: $i) }",
            json!({"i": {"projectId": PROJECT, "environmentId": ENV, "serviceId": "svc-api", "name": "OLD"}}),
        )
        .await;
        assert_eq!(body["data"]["variableDelete"], json!(true));
        assert!(rw.variables(PROJECT, ENV, "svc-api").is_empty());
        assert_eq!(rw.deployments().len(), 1);
    }

    #[tokio::test]
    async fn deployment_status_progresses_to_success_and_health_follows() {
        let rw = start().await;
        rw.set_variable(PROJECT, ENV, "svc-api", "API_KEY", "k1")
            .unwrap();
        let id = deploy(&rw, "svc-api").await;
        assert_eq!(id.len(), 36);
        assert_eq!(
            rw.deployments()[0]
                .variables
                .get("API_KEY")
                .map(String::as_str),
            Some("k1")
        );
        let health = reqwest::get(rw.health_url("svc-api")).await.unwrap();
        assert_eq!(health.status().as_u16(), 503);

        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(poll(&rw, &id).await);
        }
        assert_eq!(
            seen,
            [
                "INITIALIZING",
                "BUILDING",
                "DEPLOYING",
                "SUCCESS",
                "SUCCESS"
            ]
        );
        let health = reqwest::get(rw.health_url("svc-api")).await.unwrap();
        assert_eq!(health.status().as_u16(), 200);
        assert_eq!(
            health.json::<Json>().await.unwrap(),
            json!({"status": "ok"})
        );

        // Aliases, and only the selected sub-fields.
        let (_, body) = gql(
            &rw,
            "query { si: serviceInstance(environmentId: \"env-prod\", serviceId: \"svc-api\") { latest: latestDeployment { id } } }",
            json!({}),
        )
        .await;
        assert_eq!(body, json!({"data": {"si": {"latest": {"id": id}}}}));

        // A second successful deploy replaces the first.
        let second = deploy(&rw, "svc-api").await;
        for _ in 0..4 {
            poll(&rw, &second).await;
        }
        let statuses: Vec<_> = rw.deployments().iter().map(|d| d.status).collect();
        assert_eq!(
            statuses,
            [DeploymentStatus::Removed, DeploymentStatus::Success]
        );
    }

    #[tokio::test]
    async fn crashed_outcome_ends_crashed_once_then_deploys_succeed_again() {
        let rw = start().await;
        rw.set_next_deploy_outcome("svc-api", DeployOutcome::Crashed);
        let id = deploy(&rw, "svc-api").await;
        let mut last = String::new();
        for _ in 0..4 {
            last = poll(&rw, &id).await;
        }
        assert_eq!(last, "CRASHED");
        assert_eq!(rw.deployments()[0].status, DeploymentStatus::Crashed);
        let health = reqwest::get(rw.health_url("svc-api")).await.unwrap();
        assert_eq!(health.status().as_u16(), 503);

        let next = deploy(&rw, "svc-api").await;
        for _ in 0..4 {
            last = poll(&rw, &next).await;
        }
        assert_eq!(last, "SUCCESS");
    }

    #[tokio::test]
    async fn hang_outcome_stays_deploying() {
        let rw = start().await;
        rw.set_next_deploy_outcome("svc-api", DeployOutcome::Hang);
        let id = deploy(&rw, "svc-api").await;
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.push(poll(&rw, &id).await);
        }
        assert_eq!(&seen[2..], ["DEPLOYING"; 4]);
    }

    #[tokio::test]
    async fn schema_validation_refuses_unknown_fields_and_input_keys_with_400() {
        let rw = start().await;
        let (status, body) = gql(
            &rw,
            "mutation { variableCollectionUpsertt(input: {}) }",
            json!({}),
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(
            body["errors"][0]["message"],
            json!("Cannot query field \"variableCollectionUpsertt\" on type \"Mutation\".")
        );
        assert_eq!(
            body["errors"][0]["extensions"]["code"],
            json!("GRAPHQL_VALIDATION_FAILED")
        );

        let (status, body) = gql(
            &rw,
            UPSERT,
            upsert_input(json!({"A": "1"}), json!({"skipDeploy": true})),
        )
        .await;
        assert_eq!(status, 400);
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.contains(
                "Field \"skipDeploy\" is not defined by type \"VariableCollectionUpsertInput\"."
            ),
            "{message}"
        );
        assert!(rw.variables(PROJECT, ENV, "svc-api").is_empty());

        let (status, body) = gql(
            &rw,
            "query { deployment(id: \"x\") { id colour } }",
            json!({}),
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(
            body["errors"][0]["message"],
            json!("Cannot query field \"colour\" on type \"Deployment\".")
        );
    }

    #[tokio::test]
    async fn fields_in_the_schema_that_the_stand_in_lacks_are_refused() {
        let rw = start().await;
        let (status, body) =
            gql(&rw, "mutation { deploymentRollback(id: \"x\") }", json!({})).await;
        assert_eq!(status, 400);
        assert_eq!(
            body["errors"][0]["extensions"]["code"],
            json!("STANDIN_NOT_IMPLEMENTED")
        );
        assert!(body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("Mutation.deploymentRollback"));

        let (status, _) = gql(
            &rw,
            "query { deployment(id: \"x\") { id meta } }",
            json!({}),
        )
        .await;
        assert_eq!(status, 400);
    }

    #[tokio::test]
    async fn tokens_are_checked_per_header_and_scope() {
        let rw = start().await;
        let upsert = upsert_input(json!({"A": "1"}), json!({"skipDeploys": true}));
        let not_authorized = json!({
            "errors": [{"message": "Not Authorized", "extensions": {"code": "UNAUTHORIZED"}}],
            "data": null,
        });
        for auth in [
            Auth::None,
            Auth::Bearer("unknown"),
            Auth::Bearer(PROJECT_TOKEN),
            Auth::Project("unknown"),
            Auth::Project(ACCOUNT),
        ] {
            let (status, body) = gql_with(&rw, auth, UPSERT, upsert.clone()).await;
            assert_eq!(status, 200);
            assert_eq!(body, not_authorized);
        }
        assert!(rw.variables(PROJECT, ENV, "svc-api").is_empty());

        // A project token works in its own environment only.
        let (_, body) = gql_with(&rw, Auth::Project(PROJECT_TOKEN), UPSERT, upsert.clone()).await;
        assert_eq!(body["data"]["variableCollectionUpsert"], json!(true));
        let mut elsewhere = upsert.clone();
        elsewhere["input"]["environmentId"] = json!(OTHER_ENV);
        let (status, body) = gql_with(&rw, Auth::Project(PROJECT_TOKEN), UPSERT, elsewhere).await;
        assert_eq!(status, 200);
        assert_eq!(body["errors"][0]["message"], json!("Not Authorized"));
        assert_eq!(
            body["errors"][0]["path"],
            json!(["variableCollectionUpsert"])
        );
        assert_eq!(body["data"], Json::Null);

        // Unknown ids.
        let (_, body) = gql(&rw, STATUS, json!({"id": "nope"})).await;
        assert_eq!(body["errors"][0]["message"], json!("Deployment not found"));
        let mut unknown = upsert;
        unknown["input"]["serviceId"] = json!("svc-nope");
        let (_, body) = gql(&rw, UPSERT, unknown).await;
        assert_eq!(body["errors"][0]["message"], json!("Service not found"));
    }

    #[tokio::test]
    async fn status_and_rate_limit_faults_answer_without_acting() {
        let rw = start().await;
        rw.faults()
            .inject("variableCollectionUpsert", Fault::rate_limited(3));
        rw.faults()
            .inject("variableCollectionUpsert", Fault::status(502));
        let input = upsert_input(json!({"A": "1"}), json!({"skipDeploys": true}));
        let client = reqwest::Client::new();
        let send = || {
            client
                .post(rw.endpoint())
                .bearer_auth(ACCOUNT)
                .json(&json!({"query": UPSERT, "variables": input}))
                .send()
        };

        let response = send().await.unwrap();
        assert_eq!(response.status().as_u16(), 429);
        assert_eq!(response.headers()["retry-after"], "3");
        let body: Json = response.json().await.unwrap();
        assert_eq!(
            body["errors"][0]["extensions"]["code"],
            json!("RATE_LIMITED")
        );

        let response = send().await.unwrap();
        assert_eq!(response.status().as_u16(), 502);
        assert!(rw.variables(PROJECT, ENV, "svc-api").is_empty());

        let response = send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(rw.variables(PROJECT, ENV, "svc-api").len(), 1);
        assert_eq!(rw.journal_count("variableCollectionUpsert"), 3);
    }

    #[tokio::test]
    async fn delay_fault_waits_then_acts() {
        let rw = start().await;
        rw.faults().inject(
            "serviceInstanceDeployV2",
            Fault::Delay(Duration::from_millis(300)),
        );
        let started = Instant::now();
        deploy(&rw, "svc-api").await;
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(rw.deployments().len(), 1);
    }

    #[tokio::test]
    async fn lost_response_still_deploys_but_the_client_gets_an_error() {
        let rw = start().await;
        rw.faults()
            .inject("serviceInstanceDeployV2", Fault::LoseResponse);
        let result = reqwest::Client::new()
            .post(rw.endpoint())
            .bearer_auth(ACCOUNT)
            .json(&json!({"query": DEPLOY, "variables": {"environmentId": ENV, "serviceId": "svc-api"}}))
            .send()
            .await;
        assert!(result.is_err(), "{result:?}");
        assert_eq!(rw.deployments().len(), 1);
        // The next call is answered normally.
        deploy(&rw, "svc-api").await;
        assert_eq!(rw.deployments().len(), 2);
    }

    #[tokio::test]
    async fn hang_fault_holds_the_request_without_acting() {
        let rw = start().await;
        rw.faults().inject("serviceInstanceDeployV2", Fault::Hang);
        let result = reqwest::Client::new()
            .post(rw.endpoint())
            .bearer_auth(ACCOUNT)
            .timeout(Duration::from_millis(300))
            .json(&json!({"query": DEPLOY, "variables": {"environmentId": ENV, "serviceId": "svc-api"}}))
            .send()
            .await;
        assert!(result.unwrap_err().is_timeout());
        assert_eq!(rw.journal_count("serviceInstanceDeployV2"), 1);
        assert!(rw.deployments().is_empty());
    }

    #[tokio::test]
    async fn html_403_fault_returns_cloudflares_page() {
        let rw = start().await;
        rw.faults().inject("deployment", Fault::Html403);
        let response = reqwest::Client::new()
            .post(rw.endpoint())
            .bearer_auth(ACCOUNT)
            .json(&json!({"query": STATUS, "variables": {"id": "x"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 403);
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let text = response.text().await.unwrap();
        assert!(text
            .contains("Access denied | backboard.railway.com used Cloudflare to restrict access"));
    }

    #[tokio::test]
    async fn health_faults_and_forced_status() {
        let rw = start().await;
        rw.set_health("svc-api", Some(200));
        assert_eq!(
            reqwest::get(rw.health_url("svc-api"))
                .await
                .unwrap()
                .status()
                .as_u16(),
            200
        );
        rw.faults().inject("health", Fault::status(500));
        assert_eq!(
            reqwest::get(rw.health_url("svc-api"))
                .await
                .unwrap()
                .status()
                .as_u16(),
            500
        );
        rw.set_health("svc-api", None);
        assert_eq!(
            reqwest::get(rw.health_url("svc-api"))
                .await
                .unwrap()
                .status()
                .as_u16(),
            503
        );
        assert_eq!(rw.journal_count("health"), 3);
    }

    #[tokio::test]
    async fn journal_records_every_request_in_order() {
        let rw = start().await;
        let client = reqwest::Client::new();
        client
            .post(rw.endpoint())
            .body("not json")
            .send()
            .await
            .unwrap();
        gql_with(&rw, Auth::None, STATUS, json!({"id": "x"})).await;
        gql(&rw, "{ a: deployment(id: \"x\") { id } b: variables(projectId: \"p\", environmentId: \"e\") }", json!({})).await;
        client
            .get(format!("http://{}/elsewhere", rw.addr()))
            .send()
            .await
            .unwrap();
        let received = rw.received();
        let ops: Vec<_> = received.iter().map(|r| r.operation.as_str()).collect();
        assert_eq!(
            ops,
            ["graphql", "deployment", "deployment,variables", "unknown"]
        );
        assert_eq!(received[1].method, "POST");
        assert_eq!(received[1].path, "/graphql/v2");
        assert!(received[1].body.contains("deployment"));
        assert_eq!(
            received[2].header("authorization"),
            Some("Bearer acct-token")
        );
        assert_eq!(rw.journal_count("deployment"), 2);
        assert_eq!(rw.journal_count("variables"), 1);
    }

    #[test]
    fn shared_references_render() {
        let shared = BTreeMap::from([("TOKEN".to_owned(), "t".to_owned())]);
        assert_eq!(render("a${{ shared.TOKEN }}b", Some(&shared)), "atb");
        assert_eq!(
            render("${{Postgres.URL}}", Some(&shared)),
            "${{Postgres.URL}}"
        );
        assert_eq!(render("x${{", None), "x${{");
    }

    #[tokio::test]
    async fn seeding_an_unknown_service_is_refused() {
        let rw = start().await;
        assert!(rw.set_variable(PROJECT, ENV, "svc-nope", "A", "1").is_err());
    }
}
