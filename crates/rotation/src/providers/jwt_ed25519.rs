//! `jwt-ed25519`: an Ed25519 key pair from ring. The private key is stored in the
//! vault as a PKCS#8 PEM; the public key is kept with the version (as a JWK with a
//! `kid`) so a JWKS can serve current and previous keys.

use async_trait::async_trait;
use base64::Engine;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::{value_of, Minted, Provider, RotationCtx};
use crate::http::ExternalError;
use secret_core::crypto;

pub struct JwtEd25519;

/// PEM-encodes PKCS#8 DER.
fn pem(der: &[u8]) -> Zeroizing<String> {
    let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der));
    let mut out = Zeroizing::new(String::from("-----BEGIN PRIVATE KEY-----\n"));
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END PRIVATE KEY-----\n");
    out
}

#[async_trait]
impl Provider for JwtEd25519 {
    async fn create(&self, _ctx: &RotationCtx) -> Result<Minted, ExternalError> {
        let (der, public) = crypto::generate_ed25519()
            .map_err(|e| ExternalError::permanent("jwt-ed25519", e.to_string()))?;
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&public);
        let kid = crypto::sha256_hex(&public)[..16].to_string();
        let jwk = json!({ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig" });
        Ok(Minted {
            value: value_of(pem(&der), "jwt-ed25519")?,
            handle: json!({ "kid": kid, "jwk": jwk }),
        })
    }

    async fn recover(&self, _ctx: &RotationCtx) -> Result<Option<Minted>, ExternalError> {
        Ok(None)
    }

    async fn verify(&self, _ctx: &RotationCtx, minted: &Minted) -> Result<(), ExternalError> {
        if minted
            .value
            .expose()
            .starts_with("-----BEGIN PRIVATE KEY-----")
            && minted.handle.get("jwk").is_some()
        {
            Ok(())
        } else {
            Err(ExternalError::permanent(
                "jwt-ed25519",
                "the new key pair is malformed",
            ))
        }
    }

    /// Retiring the old key is the end of its grace: the JWKS lists the previous key
    /// only while its rotation is in grace, so there is nothing to call.
    async fn revoke(&self, _ctx: &RotationCtx, _handle: &Value) -> Result<(), ExternalError> {
        Ok(())
    }

    /// Tokens signed with the old key a moment before the rotation must keep
    /// verifying: its public key stays in the JWKS for `grace`.
    fn has_grace(&self) -> bool {
        true
    }
}
