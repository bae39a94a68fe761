//! The Railway target: one `variableCollectionUpsert` per service with
//! `skipDeploys: true` (never `replace`, which deletes every other variable), then one
//! `serviceInstanceDeployV2`, then `deployment(id) { status }` polled until SUCCESS, a
//! failure status, or the deploy timeout, then the optional health URL must answer 2xx.
//!
//! Our GraphQL documents (`railway.graphql`) are checked against Railway's published
//! schema at compile time by `graphql_client`. GraphQL errors arrive with HTTP 200, so
//! the body is always read; "Not Authorized" is permanent, a non-JSON 403 (Cloudflare)
//! is throttling.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use graphql_client::{GraphQLQuery, QueryBody};
use serde::Serialize;

use super::{DeploymentId, Live, LiveVariables, Target, Variables};
use crate::http::{ExternalError, RetryPolicy};
use secret_core::clock::Clock;
use secret_core::model::SecretValue;
use secret_core::policy::{RailwayTarget, RailwayTokenKind};

const SERVICE: &str = "railway";

/// Railway's `EnvironmentVariables` scalar as we send it: name → value. Values are
/// exposed only when serialised into the request body.
pub struct EnvironmentVariables(BTreeMap<String, SecretValue>);

impl Serialize for EnvironmentVariables {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v.expose())?;
        }
        map.end()
    }
}

impl std::fmt::Debug for EnvironmentVariables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()?;
        f.write_str(" [values redacted]")
    }
}

#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "../standins/schemas/railway-schema.json",
    query_path = "src/targets/railway.graphql",
    variables_derives = "Debug"
)]
pub struct VariableCollectionUpsert;

#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "../standins/schemas/railway-schema.json",
    query_path = "src/targets/railway.graphql",
    variables_derives = "Debug"
)]
pub struct VariableDelete;

#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "../standins/schemas/railway-schema.json",
    query_path = "src/targets/railway.graphql",
    variables_derives = "Debug"
)]
pub struct ServiceInstanceDeployV2;

#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "../standins/schemas/railway-schema.json",
    query_path = "src/targets/railway.graphql",
    variables_derives = "Debug",
    response_derives = "Debug"
)]
pub struct DeploymentStatus;

#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "../standins/schemas/railway-schema.json",
    query_path = "src/targets/railway.graphql",
    variables_derives = "Debug",
    response_derives = "Debug"
)]
pub struct LatestDeployment;

/// The `variables` query, in a module of its own: there Railway's
/// `EnvironmentVariables` scalar is the map we read back ([`ReadVariables`]), not the
/// one we send.
mod read {
    use graphql_client::GraphQLQuery;

    pub use super::ReadVariables as EnvironmentVariables;

    #[derive(GraphQLQuery)]
    #[graphql(
        schema_path = "../standins/schemas/railway-schema.json",
        query_path = "src/targets/railway.graphql",
        variables_derives = "Debug"
    )]
    pub struct ServiceVariables;
}

/// Railway's `EnvironmentVariables` scalar as we read it back: name → value, or null for
/// a value that cannot be read (sealed). Each value is wrapped as it is parsed, and
/// wiped on drop; `Debug` shows names only.
pub struct ReadVariables(BTreeMap<String, Live>);

impl<'de> serde::Deserialize<'de> for ReadVariables {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ReadVariables;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of variable names to string values or null")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(name) = map.next_key::<String>()? {
                    let value = match map.next_value::<Option<String>>()? {
                        Some(text) => {
                            let text = zeroize::Zeroizing::new(text);
                            Live::Value(secrecy::SecretString::from(text.as_str()))
                        }
                        None => Live::Sealed,
                    };
                    out.insert(name, value);
                }
                Ok(ReadVariables(out))
            }
        }
        d.deserialize_map(Visitor)
    }
}

impl std::fmt::Debug for ReadVariables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()?;
        f.write_str(" [values redacted]")
    }
}

pub struct Railway {
    policy: RailwayTarget,
    token: SecretValue,
    http: reqwest::Client,
    retry: RetryPolicy,
    poll_interval: Duration,
    /// Reads a `Retry-After` given as a date against this.
    clock: Clock,
}

impl Railway {
    pub fn new(
        policy: RailwayTarget,
        token: SecretValue,
        http: reqwest::Client,
        retry: RetryPolicy,
        poll_interval: Duration,
        clock: Clock,
    ) -> Self {
        Self {
            policy,
            token,
            http,
            retry,
            poll_interval,
            clock,
        }
    }

    /// Sends one GraphQL operation and returns its `data`.
    async fn call<V: Serialize, D: serde::de::DeserializeOwned>(
        &self,
        body: &QueryBody<V>,
    ) -> Result<D, ExternalError> {
        self.call_redacting(body, &[]).await
    }

    /// Sends one GraphQL operation. Error text from Railway is kept for the operator,
    /// but every value in `values` is cut out of it first: a GraphQL server echoes a
    /// variable it could not coerce, and ours carry secret values.
    async fn call_redacting<V: Serialize, D: serde::de::DeserializeOwned>(
        &self,
        body: &QueryBody<V>,
        values: &[&SecretValue],
    ) -> Result<D, ExternalError> {
        let redact = |mut e: ExternalError| {
            for v in values.iter().map(|v| v.expose()).filter(|v| !v.is_empty()) {
                e.message = e.message.replace(v, "[redacted]");
            }
            e
        };
        self.call_raw(body).await.map_err(redact)
    }

    async fn call_raw<V: Serialize, D: serde::de::DeserializeOwned>(
        &self,
        body: &QueryBody<V>,
    ) -> Result<D, ExternalError> {
        let mut request = self.http.post(&self.policy.endpoint).json(body);
        request = match self.policy.token_kind {
            RailwayTokenKind::Project => {
                request.header("Project-Access-Token", self.token.expose())
            }
            RailwayTokenKind::Account => request.bearer_auth(self.token.expose()),
        };
        let (status, headers, text) = crate::http::send(SERVICE, request).await?;
        if !(200..300).contains(&status) {
            return Err(ExternalError::from_status(
                SERVICE,
                status,
                &headers,
                &text,
                self.clock.now_ms(),
            ));
        }
        let parsed: graphql_client::Response<D> = serde_json::from_str(&text).map_err(|_| {
            // A 200 that is not GraphQL JSON: a proxy page. Treat like throttling.
            ExternalError::transient(
                SERVICE,
                format!("HTTP {status} with a body that is not GraphQL JSON"),
            )
        })?;
        if let Some(errors) = parsed.errors.filter(|e| !e.is_empty()) {
            let message = errors
                .iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(ExternalError::permanent(
                SERVICE,
                format!("{} ({message})", body.operation_name),
            ));
        }
        parsed.data.ok_or_else(|| {
            ExternalError::permanent(SERVICE, format!("{}: no data", body.operation_name))
        })
    }

    async fn status_of(
        &self,
        id: &str,
    ) -> Result<deployment_status::DeploymentStatus, ExternalError> {
        let body =
            DeploymentStatus::build_query(deployment_status::Variables { id: id.to_string() });
        let data: deployment_status::ResponseData = self.retry.run(|_| self.call(&body)).await?;
        Ok(data.deployment.status)
    }

    async fn check_health(&self) -> Result<(), ExternalError> {
        let Some(url) = &self.policy.health_url else {
            return Ok(());
        };
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| ExternalError::from_reqwest("health check", &e))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(ExternalError::transient(
                "health check",
                format!("{url} answered HTTP {}", status.as_u16()),
            ))
        }
    }
}

#[async_trait]
impl Target for Railway {
    async fn deliver(&self, vars: &Variables) -> Result<(), ExternalError> {
        let set: BTreeMap<String, SecretValue> = vars
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect();
        if !set.is_empty() {
            let values: Vec<&SecretValue> = vars.values().flatten().collect();
            let body =
                VariableCollectionUpsert::build_query(variable_collection_upsert::Variables {
                    input: variable_collection_upsert::VariableCollectionUpsertInput {
                        project_id: self.policy.project_id.clone(),
                        environment_id: self.policy.environment_id.clone(),
                        service_id: Some(self.policy.service_id.clone()),
                        variables: EnvironmentVariables(set),
                        // Never `replace: true`: it deletes every variable not in the map.
                        replace: Some(false),
                        skip_deploys: Some(true),
                    },
                });
            let _: variable_collection_upsert::ResponseData = self
                .retry
                .run(|_| self.call_redacting(&body, &values))
                .await?;
        }
        for name in vars.iter().filter(|(_, v)| v.is_none()).map(|(k, _)| k) {
            let body = VariableDelete::build_query(variable_delete::Variables {
                input: variable_delete::VariableDeleteInput {
                    project_id: self.policy.project_id.clone(),
                    environment_id: self.policy.environment_id.clone(),
                    service_id: Some(self.policy.service_id.clone()),
                    name: name.clone(),
                },
            });
            let result: Result<variable_delete::ResponseData, _> =
                self.retry.run(|_| self.call(&body)).await;
            match result {
                Ok(_) => {}
                // Deleting what is not there is done.
                Err(e) if e.message.to_ascii_lowercase().contains("not found") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn latest_deployment(&self) -> Result<Option<DeploymentId>, ExternalError> {
        let body = LatestDeployment::build_query(latest_deployment::Variables {
            environment_id: self.policy.environment_id.clone(),
            service_id: self.policy.service_id.clone(),
        });
        let data: latest_deployment::ResponseData = self.retry.run(|_| self.call(&body)).await?;
        Ok(data
            .service_instance
            .latest_deployment
            .map(|d| DeploymentId(d.id)))
    }

    async fn deploy(
        &self,
        before: Option<&DeploymentId>,
    ) -> Result<Option<DeploymentId>, ExternalError> {
        if !self.policy.redeploy {
            return Ok(None);
        }
        let body = ServiceInstanceDeployV2::build_query(service_instance_deploy_v2::Variables {
            environment_id: self.policy.environment_id.clone(),
            service_id: self.policy.service_id.clone(),
        });
        // A second call is a second deployment: never repeat one that may have
        // happened. Whether it did shows in the service's latest deployment, compared
        // with the one before the call.
        let body = &body;
        self.retry
            .run(|_| async move {
                let latest = self.latest_deployment().await?;
                if latest.is_some() && latest.as_ref() != before {
                    return Ok(latest);
                }
                let data: service_instance_deploy_v2::ResponseData = self.call(body).await?;
                Ok(Some(DeploymentId(data.service_instance_deploy_v2)))
            })
            .await
    }

    async fn wait_healthy(
        &self,
        deployment: Option<&DeploymentId>,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<(), ExternalError> {
        use deployment_status::DeploymentStatus as S;
        if let Some(DeploymentId(id)) = deployment {
            let started = Instant::now();
            loop {
                let status = self.status_of(id).await?;
                let label = format!("{status:?}").to_ascii_uppercase();
                progress(format!("deploy {id} on {}: {label}", self.policy.name));
                match status {
                    S::SUCCESS => break,
                    S::FAILED | S::CRASHED | S::REMOVED | S::SKIPPED => {
                        return Err(ExternalError::permanent(
                            SERVICE,
                            format!("deployment {id} of {} ended {label}", self.policy.name),
                        ))
                    }
                    _ => {}
                }
                if started.elapsed() >= self.policy.deploy_timeout {
                    return Err(ExternalError::permanent(
                        SERVICE,
                        format!(
                            "deployment {id} of {} did not succeed within {} (last status {label})",
                            self.policy.name,
                            humantime::format_duration(self.policy.deploy_timeout)
                        ),
                    ));
                }
                tokio::time::sleep(self.poll_interval).await;
            }
        }
        // The service may need a moment after SUCCESS: retry the check with backoff.
        self.retry.run(|_| self.check_health()).await
    }

    async fn live(&self, names: &[String]) -> Result<LiveVariables, ExternalError> {
        let body = read::ServiceVariables::build_query(read::service_variables::Variables {
            project_id: self.policy.project_id.clone(),
            environment_id: self.policy.environment_id.clone(),
            service_id: Some(self.policy.service_id.clone()),
        });
        let data: read::service_variables::ResponseData =
            self.retry.run(|_| self.call(&body)).await?;
        let mut all = data.variables.0;
        Ok(names
            .iter()
            .filter_map(|name| all.remove(name).map(|v| (name.clone(), v)))
            .collect())
    }

    fn describe(&self) -> String {
        format!(
            "railway {} (project {}, environment {}, service {})",
            self.policy.name,
            self.policy.project_id,
            self.policy.environment_id,
            self.policy.service_id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secret_core::policy::RailwayTokenKind;
    use secret_standins::{Fault, ProjectToken, RailwayConfig, RailwayStandIn, ServiceRef};
    use zeroize::Zeroizing;

    fn value(s: &str) -> SecretValue {
        SecretValue::from_bytes(Zeroizing::new(s.as_bytes().to_vec()), false).unwrap()
    }

    #[tokio::test]
    async fn railway_error_text_never_carries_the_values_we_sent() {
        let standin = RailwayStandIn::start(
            "127.0.0.1:0".parse().unwrap(),
            RailwayConfig {
                project_tokens: vec![ProjectToken {
                    token: "tok".into(),
                    project_id: "p".into(),
                    environment_id: "e".into(),
                }],
                services: vec![ServiceRef {
                    project_id: "p".into(),
                    environment_id: "e".into(),
                    service_id: "s".into(),
                }],
                ..Default::default()
            },
        )
        .await
        .unwrap();
        // A GraphQL server echoes an input it could not coerce, values and all.
        let echo = r#"{"errors":[{"message":"Variable \"$input\" got invalid value {\"variables\":{\"K\":\"super-secret-value-123\"}}"}],"data":null}"#;
        standin.faults().inject(
            "variableCollectionUpsert",
            Fault::Status {
                status: 400,
                headers: vec![],
                body: echo.into(),
            },
        );
        let target = Railway::new(
            RailwayTarget {
                name: "api".into(),
                file: "t.toml".into(),
                project_id: "p".into(),
                environment_id: "e".into(),
                service_id: "s".into(),
                token: secret_core::model::SecretName::new("RAILWAY_TOKEN").unwrap(),
                token_kind: RailwayTokenKind::Project,
                redeploy: true,
                health_url: None,
                endpoint: standin.endpoint(),
                deploy_timeout: Duration::from_secs(5),
            },
            value("tok"),
            reqwest::Client::new(),
            RetryPolicy {
                attempts: 1,
                ..Default::default()
            },
            Duration::from_millis(10),
            Clock::System,
        );
        let mut vars = Variables::new();
        vars.insert("K".into(), Some(value("super-secret-value-123")));
        let err = target.deliver(&vars).await.unwrap_err();
        assert!(!err.to_string().contains("super-secret-value-123"), "{err}");
        assert!(err.to_string().contains("[redacted]"), "{err}");
    }
}
