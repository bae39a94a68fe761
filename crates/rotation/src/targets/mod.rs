//! Targets deliver values to where applications read them: Railway service variables
//! (GraphQL) or a dotenv file for local development. One small trait; each target is
//! one file. Targets never see the vault: the rotation engine hands them values, and a
//! drift check reads back what they hold ([`Target::live`]) to compare by fingerprint.

use std::collections::BTreeMap;

use async_trait::async_trait;
use secrecy::SecretString;

use crate::http::{ExternalError, RetryPolicy};
use secret_core::error::VaultError;
use secret_core::model::{Label, SecretValue, VersionSelector};
use secret_core::policy::{PolicySet, TargetPolicy};
use secret_core::vault::Vault;

pub mod dotenv;
pub mod railway;

/// Variables to set (`Some`) or remove (`None`) in one delivery.
pub type Variables = BTreeMap<String, Option<SecretValue>>;

/// What a target holds under one name, read back for a drift check.
pub enum Live {
    /// The value itself: compared by keyed fingerprint, never shown.
    Value(SecretString),
    /// Set, but it cannot be read back (a sealed Railway variable): not comparable.
    Sealed,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Live::Value(_) => f.write_str("Value([redacted])"),
            Live::Sealed => f.write_str("Sealed"),
        }
    }
}

/// What a target holds of the names asked for; a name it does not hold is absent.
pub type LiveVariables = BTreeMap<String, Live>;

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

    /// What the target holds now under each of `names` (absent names are left out).
    /// Reads only: nothing is written or deployed.
    async fn live(&self, names: &[String]) -> Result<LiveVariables, ExternalError>;

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

/// How a target opened by [`open`] talks to its service.
#[derive(Clone, Debug)]
pub struct Connection {
    pub http: reqwest::Client,
    pub retry: RetryPolicy,
    pub poll_interval: std::time::Duration,
}

/// Opens the target named `name` in `policies`, with the credential it needs read from
/// the vault (audited as a read for `purpose`).
pub fn open(
    vault: &mut Vault,
    policies: &PolicySet,
    name: &str,
    purpose: &str,
    connection: &Connection,
) -> Result<Box<dyn Target>, ExternalError> {
    let policy = policies
        .targets
        .get(name)
        .ok_or_else(|| ExternalError::permanent("policy", format!("no target named {name}")))?;
    let token = match policy {
        TargetPolicy::Railway(r) => {
            let token = match vault.reveal(
                r.token.as_str(),
                VersionSelector::Label(Label::Current),
                purpose,
            ) {
                Ok(revealed) => revealed.value,
                Err(VaultError::NotFound(_)) => {
                    return Err(ExternalError::permanent(
                        "vault",
                        format!("the Railway token {} is not in the vault", r.token),
                    ))
                }
                Err(e) => return Err(ExternalError::permanent("vault", e.to_string())),
            };
            Some(token)
        }
        TargetPolicy::Dotenv(_) => None,
    };
    build(
        policy,
        token,
        connection.http.clone(),
        connection.retry.clone(),
        connection.poll_interval,
        vault.clock(),
    )
    .map_err(|e| ExternalError::permanent("policy", e))
}
