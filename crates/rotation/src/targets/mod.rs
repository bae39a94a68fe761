//! Targets deliver values to where applications read them: Railway service variables
//! (GraphQL) or a dotenv file for local development. One small trait; each target is
//! one file. Targets never see the vault: the rotation engine hands them values.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::http::{ExternalError, RetryPolicy};
use secret_core::model::SecretValue;
use secret_core::policy::TargetPolicy;

pub mod dotenv;
pub mod railway;

/// Variables to set (`Some`) or remove (`None`) in one delivery.
pub type Variables = BTreeMap<String, Option<SecretValue>>;

/// A deployment a delivery started, to be watched until it is healthy.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeploymentId(pub String);

#[async_trait]
pub trait Target: Send + Sync {
    /// Writes the variables in one call (and starts one deployment where the target
    /// redeploys). Re-sending the same values is harmless.
    async fn deliver(&self, vars: &Variables) -> Result<(), ExternalError>;

    /// The newest deployment of the service, if the target deploys.
    async fn latest_deployment(&self) -> Result<Option<DeploymentId>, ExternalError>;

    /// Starts the one deployment of this pass, if the target redeploys. `before` is the
    /// newest deployment before this pass's first attempt: if a newer one exists, an
    /// earlier attempt (lost response, or a process killed mid-call) made it, and it is
    /// returned instead of deploying again.
    async fn deploy(
        &self,
        before: Option<&DeploymentId>,
    ) -> Result<Option<DeploymentId>, ExternalError>;

    /// Waits until a deployment succeeded and the service answers its health check.
    /// `progress` is told each status seen.
    async fn wait_healthy(
        &self,
        deployment: Option<&DeploymentId>,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<(), ExternalError>;

    /// Where this target delivers, for plans and reports (no credentials).
    fn describe(&self) -> String;
}

/// Builds the target for a policy. `token` is the credential it needs, if any.
pub fn build(
    policy: &TargetPolicy,
    token: Option<SecretValue>,
    http: reqwest::Client,
    retry: RetryPolicy,
    poll_interval: std::time::Duration,
    clock: secret_core::clock::Clock,
) -> Result<Box<dyn Target>, String> {
    match policy {
        TargetPolicy::Railway(railway) => {
            let token =
                token.ok_or_else(|| format!("railway target {} needs its token", railway.name))?;
            Ok(Box::new(railway::Railway::new(
                railway.clone(),
                token,
                http,
                retry,
                poll_interval,
                clock,
            )))
        }
        TargetPolicy::Dotenv(dotenv) => Ok(Box::new(dotenv::Dotenv::new(dotenv.path.clone()))),
    }
}
