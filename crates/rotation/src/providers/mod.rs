//! Providers mint, check and revoke credentials: `random`, `jwt-hmac`, `jwt-ed25519`,
//! `openai`, `launchdarkly-sdk`, `launchdarkly-mobile`. One small trait; each provider
//! is one file. Providers never see the vault or the store: the engine hands them a
//! [`RotationCtx`] with the credentials and values they need and records what they
//! return. Time comes in through the context, never read inside.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::http::{ExternalError, RetryPolicy};
use secret_core::model::SecretValue;
use secret_core::policy::Generator;

pub mod jwt_ed25519;
pub mod launchdarkly;
pub mod openai;
pub mod random;

/// What a provider needs to know about the rotation it serves.
pub struct RotationCtx {
    pub rotation_id: String,
    pub secret: String,
    /// Milliseconds since the epoch, for this step.
    pub now_ms: i64,
    pub grace: Duration,
    /// What the provider recorded before its create call (its intent) and after.
    pub state: Value,
    /// The value currently live (the one being replaced), if any.
    pub current: Option<SecretValue>,
    /// A pending value left by an earlier, interrupted or rolled-back rotation.
    pub pending: Option<SecretValue>,
    /// The credential the provider acts with (OpenAI admin key, LaunchDarkly token).
    pub credential: Option<SecretValue>,
    pub http: reqwest::Client,
    pub retry: RetryPolicy,
    /// Keyed fingerprints, for recording which credential a service holds without
    /// recording the credential.
    pub fingerprint: secret_core::audit::Fingerprinter,
}

/// A newly minted credential: its value and the handle needed to revoke it later
/// (ids, public keys; never a value).
pub struct Minted {
    pub value: SecretValue,
    pub handle: Value,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Minted([redacted], {})", self.handle)
    }
}

#[async_trait]
pub trait Provider: Send + Sync {
    /// What to record before `create`, so a crash during the call can be recovered
    /// (e.g. the name of the service account about to be made).
    async fn intent(&self, ctx: &RotationCtx) -> Result<Value, ExternalError> {
        let _ = ctx;
        Ok(Value::Object(Default::default()))
    }

    /// Mints the new credential. Revokes nothing.
    async fn create(&self, ctx: &RotationCtx) -> Result<Minted, ExternalError>;

    /// A rotation was interrupted during `create`: find what the call left behind.
    /// `Some` is a credential that exists and should be used; `None` means it is safe
    /// to call `create` again (orphans, if any, were cleaned up).
    async fn recover(&self, ctx: &RotationCtx) -> Result<Option<Minted>, ExternalError>;

    /// Proves the new credential works.
    async fn verify(&self, ctx: &RotationCtx, minted: &Minted) -> Result<(), ExternalError>;

    /// Revokes a credential identified by its handle (the old one after grace, or the
    /// new one on rollback).
    async fn revoke(&self, ctx: &RotationCtx, handle: &Value) -> Result<(), ExternalError>;

    /// Whether a new credential can be revoked on rollback without harm. LaunchDarkly's
    /// reset cannot be undone: the old key only lives until its expiry.
    fn can_discard(&self) -> bool {
        true
    }

    /// Whether the old credential stays valid (or published) through a grace period
    /// and is retired by a revoke step after it: an OpenAI key until its service
    /// account is deleted, an Ed25519 public key while the JWKS still lists it.
    fn has_grace(&self) -> bool {
        false
    }

    /// A caution for `secret plan` (e.g. the old key dies at once).
    fn caution(&self) -> Option<String> {
        None
    }
}

/// The provider for a generator; `None` for `manual`.
pub fn build(generator: &Generator) -> Option<Box<dyn Provider>> {
    match generator {
        Generator::Random { length, charset } => {
            Some(Box::new(random::Random::new(*length, *charset)))
        }
        Generator::JwtHmac { algorithm } => {
            Some(Box::new(random::JwtHmac::new(algorithm.key_bytes())))
        }
        Generator::JwtEd25519 => Some(Box::new(jwt_ed25519::JwtEd25519)),
        Generator::OpenAi(settings) => Some(Box::new(openai::OpenAi::new(settings.clone()))),
        Generator::LaunchDarklySdk(settings) => {
            Some(Box::new(launchdarkly::LaunchDarkly::sdk(settings.clone())))
        }
        Generator::LaunchDarklyMobile(settings) => Some(Box::new(
            launchdarkly::LaunchDarkly::mobile(settings.clone()),
        )),
        Generator::Manual => None,
    }
}

/// Wraps provider-made text as a value.
pub(crate) fn value_of(
    text: zeroize::Zeroizing<String>,
    service: &'static str,
) -> Result<SecretValue, ExternalError> {
    SecretValue::from_bytes(zeroize::Zeroizing::new(text.as_bytes().to_vec()), false)
        .map_err(|e| ExternalError::permanent(service, format!("unusable value: {e}")))
}
