//! `launchdarkly-sdk` and `launchdarkly-mobile`: reset an environment's server-side
//! SDK key (with `expiry` = now + grace, in milliseconds, so the old key keeps working
//! through the overlap) or its mobile key (no expiry: the old key dies at once).
//!
//! A reset is not idempotent: repeating it kills the key just minted. So the key
//! before the reset is recorded (as a keyed fingerprint, in the intent), and before any retry —
//! and on resume after a crash — the environment is read back: if its key changed, the
//! reset happened and that key is the new value. A reset whose rotation was rolled
//! back is reused rather than repeated: LaunchDarkly's reset cannot be undone.

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::{value_of, Minted, Provider, RotationCtx};
use crate::http::{self, ExternalError};
use secret_core::policy::LaunchDarklySettings;

const SERVICE: &str = "launchdarkly";
const API_VERSION: &str = "20240415";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sdk,
    Mobile,
}

pub struct LaunchDarkly {
    settings: LaunchDarklySettings,
    kind: Kind,
}

#[derive(serde::Deserialize)]
struct Environment {
    #[serde(rename = "apiKey")]
    api_key: SecretString,
    #[serde(rename = "mobileKey")]
    mobile_key: SecretString,
}

impl LaunchDarkly {
    pub fn sdk(settings: LaunchDarklySettings) -> Self {
        Self {
            settings,
            kind: Kind::Sdk,
        }
    }

    pub fn mobile(settings: LaunchDarklySettings) -> Self {
        Self {
            settings,
            kind: Kind::Mobile,
        }
    }

    fn env_url(&self) -> String {
        format!(
            "{}/api/v2/projects/{}/environments/{}",
            self.settings.base_url, self.settings.project_key, self.settings.environment_key
        )
    }

    fn key_of<'a>(&self, env: &'a Environment) -> &'a str {
        match self.kind {
            Kind::Sdk => env.api_key.expose_secret(),
            Kind::Mobile => env.mobile_key.expose_secret(),
        }
    }

    async fn send(
        &self,
        ctx: &RotationCtx,
        request: reqwest::RequestBuilder,
    ) -> Result<Environment, ExternalError> {
        let token = ctx
            .credential
            .as_ref()
            .ok_or_else(|| ExternalError::permanent(SERVICE, "no access token"))?;
        // LaunchDarkly takes the token as is: no "Bearer".
        let request = request
            .header("Authorization", token.expose())
            .header("LD-API-Version", API_VERSION);
        let (status, headers, body) = http::send(SERVICE, request).await?;
        if !(200..300).contains(&status) {
            return Err(ExternalError::from_status(
                SERVICE, status, &headers, &body, ctx.now_ms,
            ));
        }
        serde_json::from_str(&body).map_err(|_| ExternalError {
            maybe_applied: true,
            ..ExternalError::transient(
                SERVICE,
                "the environment in the response does not have the documented shape",
            )
        })
    }

    async fn read(&self, ctx: &RotationCtx) -> Result<Environment, ExternalError> {
        ctx.retry
            .run(|_| self.send(ctx, ctx.http.get(self.env_url())))
            .await
    }

    fn minted(&self, ctx: &RotationCtx, env: &Environment) -> Result<Minted, ExternalError> {
        let value = value_of(Zeroizing::new(self.key_of(env).to_string()), SERVICE)?;
        Ok(Minted {
            value,
            handle: json!({ "key_fingerprint": ctx.fingerprint.of(self.key_of(env).as_bytes()) }),
        })
    }

    /// The environment's key differs from the one recorded before the reset.
    fn changed(&self, ctx: &RotationCtx, env: &Environment) -> bool {
        let before = ctx.state.get("key_before").and_then(|v| v.as_str());
        before.is_some_and(|b| b != ctx.fingerprint.of(self.key_of(env).as_bytes()))
    }

    fn reset_request(&self, ctx: &RotationCtx) -> reqwest::RequestBuilder {
        match self.kind {
            Kind::Sdk => {
                let mut r = ctx.http.post(format!("{}/apiKey", self.env_url()));
                if !ctx.grace.is_zero() {
                    let expiry = ctx.now_ms + ctx.grace.as_millis() as i64;
                    r = r.query(&[("expiry", expiry.to_string())]);
                }
                r
            }
            Kind::Mobile => ctx.http.post(format!("{}/mobileKey", self.env_url())),
        }
    }
}

#[async_trait]
impl Provider for LaunchDarkly {
    async fn intent(&self, ctx: &RotationCtx) -> Result<Value, ExternalError> {
        let env = self.read(ctx).await?;
        Ok(json!({ "key_before": ctx.fingerprint.of(self.key_of(&env).as_bytes()) }))
    }

    async fn create(&self, ctx: &RotationCtx) -> Result<Minted, ExternalError> {
        let env = self.read(ctx).await?;
        if let Some(pending) = &ctx.pending {
            if pending.expose() == self.key_of(&env) {
                // An earlier reset's key, kept as pending: reuse it, do not reset again.
                return self.minted(ctx, &env);
            }
        }
        if self.changed(ctx, &env) {
            return self.minted(ctx, &env);
        }
        ctx.retry
            .run(|attempt| async move {
                if attempt > 1 {
                    // Never reset blindly twice: did the last attempt take effect?
                    let env = self.send(ctx, ctx.http.get(self.env_url())).await?;
                    if self.changed(ctx, &env) {
                        return self.minted(ctx, &env);
                    }
                }
                let env = self.send(ctx, self.reset_request(ctx)).await?;
                self.minted(ctx, &env)
            })
            .await
    }

    async fn recover(&self, ctx: &RotationCtx) -> Result<Option<Minted>, ExternalError> {
        let env = self.read(ctx).await?;
        if self.changed(ctx, &env) {
            Ok(Some(self.minted(ctx, &env)?))
        } else {
            Ok(None)
        }
    }

    async fn verify(&self, ctx: &RotationCtx, minted: &Minted) -> Result<(), ExternalError> {
        let env = self.read(ctx).await?;
        if self.key_of(&env) == minted.value.expose() {
            Ok(())
        } else {
            Err(ExternalError::permanent(
                SERVICE,
                "the environment reports a different key than the one minted",
            ))
        }
    }

    async fn revoke(&self, _ctx: &RotationCtx, _handle: &Value) -> Result<(), ExternalError> {
        // The SDK key's expiry, passed at reset, retires it; a mobile key died at reset.
        Ok(())
    }

    fn can_discard(&self) -> bool {
        false
    }

    fn caution(&self) -> Option<String> {
        match self.kind {
            Kind::Mobile => Some(
                "LaunchDarkly cannot keep an old mobile key: it stops working the moment the new one is minted"
                    .into(),
            ),
            Kind::Sdk => None,
        }
    }
}
