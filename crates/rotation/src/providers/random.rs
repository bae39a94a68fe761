//! `random` (a string from a charset) and `jwt-hmac` (32/48/64 random bytes for
//! HS256/384/512, base64url without padding). Nothing external to create, check or
//! revoke; `previous_as` handles the overlap at the targets.

use async_trait::async_trait;
use base64::Engine;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::{value_of, Minted, Provider, RotationCtx};
use crate::http::ExternalError;
use secret_core::crypto;
use secret_core::policy::Charset;

pub struct Random {
    length: usize,
    charset: Charset,
}

impl Random {
    pub fn new(length: usize, charset: Charset) -> Self {
        Self { length, charset }
    }
}

#[async_trait]
impl Provider for Random {
    async fn create(&self, _ctx: &RotationCtx) -> Result<Minted, ExternalError> {
        let charset = match self.charset {
            Charset::Alnum => crypto::Charset::Alnum,
            Charset::Hex => crypto::Charset::Hex,
            Charset::Base64Url => crypto::Charset::Base64Url,
        };
        let text = crypto::generate_value(charset, self.length)
            .map_err(|e| ExternalError::permanent("random", e.to_string()))?;
        let value = secret_core::model::SecretValue::from_secret_string(text)
            .map_err(|e| ExternalError::permanent("random", e.to_string()))?;
        Ok(Minted {
            value,
            handle: json!({}),
        })
    }

    async fn recover(&self, _ctx: &RotationCtx) -> Result<Option<Minted>, ExternalError> {
        Ok(None)
    }

    async fn verify(&self, _ctx: &RotationCtx, _minted: &Minted) -> Result<(), ExternalError> {
        Ok(())
    }

    async fn revoke(&self, _ctx: &RotationCtx, _handle: &Value) -> Result<(), ExternalError> {
        Ok(())
    }
}

pub struct JwtHmac {
    key_bytes: usize,
}

impl JwtHmac {
    pub fn new(key_bytes: usize) -> Self {
        Self { key_bytes }
    }
}

#[async_trait]
impl Provider for JwtHmac {
    async fn create(&self, _ctx: &RotationCtx) -> Result<Minted, ExternalError> {
        let bytes = crypto::random_bytes(self.key_bytes)
            .map_err(|e| ExternalError::permanent("jwt-hmac", e.to_string()))?;
        let text = Zeroizing::new(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_slice()),
        );
        Ok(Minted {
            value: value_of(text, "jwt-hmac")?,
            handle: json!({ "bytes": self.key_bytes }),
        })
    }

    async fn recover(&self, _ctx: &RotationCtx) -> Result<Option<Minted>, ExternalError> {
        Ok(None)
    }

    async fn verify(&self, _ctx: &RotationCtx, minted: &Minted) -> Result<(), ExternalError> {
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(minted.value.expose())
            .map_err(|_| ExternalError::permanent("jwt-hmac", "the new key is not base64url"))?;
        if decoded.len() == self.key_bytes {
            Ok(())
        } else {
            Err(ExternalError::permanent(
                "jwt-hmac",
                "the new key has the wrong length",
            ))
        }
    }

    async fn revoke(&self, _ctx: &RotationCtx, _handle: &Value) -> Result<(), ExternalError> {
        Ok(())
    }
}
