//! `openai`: each rotation creates a project service account named after the rotation
//! id, whose API key is the new value; the key is checked with `GET /v1/models`; the
//! old key is revoked after grace by deleting its service account (OpenAI refuses to
//! delete a service account's key directly).
//!
//! There is no idempotency key, and the key's value is returned exactly once. So the
//! account name is recorded before the call, and a rotation interrupted during it
//! lists the project's service accounts on resume and deletes any with that name:
//! nobody has their key, so they are orphans.

use async_trait::async_trait;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::{value_of, Minted, Provider, RotationCtx};
use crate::http::{self, ErrorKind, ExternalError};
use secret_core::policy::OpenAiSettings;

const SERVICE: &str = "openai";

pub struct OpenAi {
    settings: OpenAiSettings,
}

impl OpenAi {
    pub fn new(settings: OpenAiSettings) -> Self {
        Self { settings }
    }

    fn accounts_url(&self) -> String {
        format!(
            "{}/organization/projects/{}/service_accounts",
            self.settings.base_url, self.settings.project_id
        )
    }

    fn account_name(ctx: &RotationCtx) -> String {
        format!("secret-rotation-{}", ctx.rotation_id)
    }

    fn admin_key<'a>(&self, ctx: &'a RotationCtx) -> Result<&'a str, ExternalError> {
        ctx.credential
            .as_ref()
            .map(|c| c.expose())
            .ok_or_else(|| ExternalError::permanent(SERVICE, "no admin key"))
    }

    async fn send(
        &self,
        ctx: &RotationCtx,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, Zeroizing<String>), ExternalError> {
        let (status, headers, body) = http::send(SERVICE, request).await?;
        if (200..300).contains(&status) {
            Ok((status, body))
        } else {
            Err(ExternalError::from_status(
                SERVICE, status, &headers, &body, ctx.now_ms,
            ))
        }
    }

    /// Every service account of the project with this name (follows pagination).
    async fn accounts_named(
        &self,
        ctx: &RotationCtx,
        name: &str,
    ) -> Result<Vec<String>, ExternalError> {
        let admin = self.admin_key(ctx)?;
        let mut after: Option<String> = None;
        let mut found = Vec::new();
        loop {
            let request = || {
                let mut r = ctx
                    .http
                    .get(self.accounts_url())
                    .bearer_auth(admin)
                    .query(&[("limit", "100")]);
                if let Some(a) = &after {
                    r = r.query(&[("after", a.as_str())]);
                }
                r
            };
            let (_, body) = ctx.retry.run(|_| self.send(ctx, request())).await?;
            let page: Value = serde_json::from_str(&body).map_err(|_| {
                ExternalError::transient(SERVICE, "the service account list is not JSON")
            })?;
            let data = page
                .get("data")
                .and_then(|d| d.as_array())
                .cloned()
                .unwrap_or_default();
            found.extend(
                data.iter()
                    .filter(|a| a.get("name").and_then(|n| n.as_str()) == Some(name))
                    .filter_map(|a| a.get("id").and_then(|i| i.as_str()).map(str::to_string)),
            );
            let more = page
                .get("has_more")
                .and_then(|m| m.as_bool())
                .unwrap_or(false);
            let last = page
                .get("last_id")
                .and_then(|l| l.as_str())
                .map(str::to_string);
            if !more || data.is_empty() || last.is_none() || last == after {
                return Ok(found);
            }
            after = last;
        }
    }

    async fn delete_account(&self, ctx: &RotationCtx, id: &str) -> Result<(), ExternalError> {
        let admin = self.admin_key(ctx)?;
        let url = format!("{}/{id}", self.accounts_url());
        match ctx
            .retry
            .run(|_| self.send(ctx, ctx.http.delete(&url).bearer_auth(admin)))
            .await
        {
            Ok(_) => Ok(()),
            // Already gone: revoked.
            Err(e) if e.message.starts_with("HTTP 404") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes every account this rotation may have created. Returns how many.
    async fn delete_orphans(&self, ctx: &RotationCtx) -> Result<usize, ExternalError> {
        let ids = self.accounts_named(ctx, &Self::account_name(ctx)).await?;
        for id in &ids {
            self.delete_account(ctx, id).await?;
        }
        Ok(ids.len())
    }

    async fn create_once(&self, ctx: &RotationCtx) -> Result<Minted, ExternalError> {
        #[derive(serde::Deserialize)]
        struct Created {
            id: String,
            api_key: CreatedKey,
        }
        #[derive(serde::Deserialize)]
        struct CreatedKey {
            id: String,
            value: secrecy::SecretString,
        }
        let admin = self.admin_key(ctx)?;
        let name = Self::account_name(ctx);
        let (_, body) = self
            .send(
                ctx,
                ctx.http
                    .post(self.accounts_url())
                    .bearer_auth(admin)
                    .json(&json!({ "name": name })),
            )
            .await?;
        // Made but unreadable: the account exists and nobody has its key.
        let created: Created = serde_json::from_str(&body).map_err(|_| ExternalError {
            maybe_applied: true,
            ..ExternalError::transient(
                SERVICE,
                "the create response does not have the documented shape",
            )
        })?;
        use secrecy::ExposeSecret;
        let value = value_of(
            Zeroizing::new(created.api_key.value.expose_secret().to_string()),
            SERVICE,
        )?;
        let handle = json!({
            "project_id": self.settings.project_id,
            "service_account_id": created.id,
            "service_account_name": name,
            "key_id": created.api_key.id,
        });
        Ok(Minted { value, handle })
    }
}

#[async_trait]
impl Provider for OpenAi {
    async fn intent(&self, ctx: &RotationCtx) -> Result<Value, ExternalError> {
        Ok(
            json!({ "service_account_name": Self::account_name(ctx), "project_id": self.settings.project_id }),
        )
    }

    async fn create(&self, ctx: &RotationCtx) -> Result<Minted, ExternalError> {
        ctx.retry
            .run(|attempt| async move {
                if attempt > 1 {
                    // An earlier attempt may have created an account whose key we never
                    // saw: delete it before trying again.
                    self.delete_orphans(ctx).await?;
                }
                self.create_once(ctx).await
            })
            .await
    }

    async fn recover(&self, ctx: &RotationCtx) -> Result<Option<Minted>, ExternalError> {
        self.delete_orphans(ctx).await?;
        Ok(None)
    }

    async fn verify(&self, ctx: &RotationCtx, minted: &Minted) -> Result<(), ExternalError> {
        let url = format!("{}/models", self.settings.base_url);
        // A brand-new key may need a moment before it works: treat invalid_api_key as
        // transient here, a restricted key (401 with no code) as permanent.
        ctx.retry
            .run(|_| async {
                let request = ctx.http.get(&url).bearer_auth(minted.value.expose());
                let (status, headers, body) = http::send(SERVICE, request).await?;
                if status == 200 {
                    return Ok(());
                }
                let mut err =
                    ExternalError::from_status(SERVICE, status, &headers, &body, ctx.now_ms);
                let code = serde_json::from_str::<Value>(&body).ok().and_then(|v| {
                    v.pointer("/error/code")
                        .and_then(|c| c.as_str())
                        .map(str::to_string)
                });
                if status == 401 && code.as_deref() == Some("invalid_api_key") {
                    err.kind = ErrorKind::Transient;
                    err.message = format!("the new key is not accepted yet ({})", err.message);
                } else if status == 401 {
                    err.message = format!("the new key lacks a permission ({})", err.message);
                }
                Err(err)
            })
            .await
    }

    async fn revoke(&self, ctx: &RotationCtx, handle: &Value) -> Result<(), ExternalError> {
        match handle.get("service_account_id").and_then(|v| v.as_str()) {
            Some(id) => self.delete_account(ctx, id).await,
            // A key that came from elsewhere (set by hand): nothing we can delete.
            None => Ok(()),
        }
    }

    fn has_grace(&self) -> bool {
        true
    }
}
