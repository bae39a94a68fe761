//! MACs over the metadata that decides what a read returns, so that a change made to
//! the vault file without the vault key is caught at the next read (exit 7), not
//! obeyed.
//!
//! AES-GCM already binds each ciphertext to its (vault, name, version). What it cannot
//! see is *which* version a read picks and whether it may: the labels (`current`,
//! `pending`, `previous`), `latest_version` (the next version number), the deleted
//! flag, and each version row (its number, times, destroyed flag, whether it still
//! holds a ciphertext, its provider handle — the JWKS publishes public keys from it).
//! One MAC per secret covers all of that; one per token covers its scopes, expiry
//! and revocation (not the time it was last used, which every request updates); and
//! a *census* MAC covers the number of secrets, so removing a secret whole (its row
//! and its versions) is caught as well.
//!
//! The encodings below are length-prefixed and start with their own label, so no two
//! different rows encode alike and no MAC can stand in for another kind's. The key is
//! derived from the vault key under its own HKDF label (`crypto::metadata_key`).
//!
//! Replay is out of reach for these MACs alone: someone who kept an older copy of the
//! file can put back a secret's older rows with their older MAC. That needs a copy
//! taken earlier, like rolling back the whole file, which `secret audit verify
//! --expect-head` catches for the log.

use crate::crypto::MacKey;
use crate::store::{SecretRow, TokenRow, VersionFacts};

const SECRET_LABEL: &[u8] = b"secret/metadata/secret/v1";
const TOKEN_LABEL: &[u8] = b"secret/metadata/token/v1";
const CENSUS_LABEL: &[u8] = b"secret/metadata/census/v1";

fn put(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u64).to_be_bytes());
    out.extend_from_slice(field);
}

fn put_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(&n.to_be_bytes());
}

fn put_i64(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(&n.to_be_bytes());
}

fn put_opt_u64(out: &mut Vec<u8>, n: Option<u64>) {
    match n {
        None => out.push(0),
        Some(n) => {
            out.push(1);
            put_u64(out, n);
        }
    }
}

fn put_opt_i64(out: &mut Vec<u8>, n: Option<i64>) {
    match n {
        None => out.push(0),
        Some(n) => {
            out.push(1);
            put_i64(out, n);
        }
    }
}

fn put_opt(out: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        None => out.push(0),
        Some(f) => {
            out.push(1);
            put(out, f);
        }
    }
}

/// The canonical encoding of a secret's row and its versions (oldest first).
pub fn secret_encoding(row: &SecretRow, versions: &[VersionFacts]) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + row.name.len() + versions.len() * 48);
    out.extend_from_slice(SECRET_LABEL);
    put(&mut out, row.name.as_bytes());
    put_opt(&mut out, row.description.as_deref().map(str::as_bytes));
    put_i64(&mut out, row.created_at_ms);
    put_i64(&mut out, row.updated_at_ms);
    put_opt_i64(&mut out, row.deleted_at_ms);
    put_u64(&mut out, row.latest_version);
    put_opt_u64(&mut out, row.current_version);
    put_opt_u64(&mut out, row.pending_version);
    put_opt_u64(&mut out, row.previous_version);
    put_u64(&mut out, versions.len() as u64);
    for v in versions {
        put_u64(&mut out, v.version);
        put_i64(&mut out, v.created_at_ms);
        put_opt_i64(&mut out, v.destroyed_at_ms);
        out.push(u8::from(v.sealed));
        put(&mut out, v.meta.as_bytes());
    }
    out
}

/// The MAC of a secret's metadata.
pub fn secret_mac(key: &MacKey, row: &SecretRow, versions: &[VersionFacts]) -> [u8; 32] {
    key.sign(&secret_encoding(row, versions))
}

/// Constant-time check of a secret's stored MAC.
pub fn secret_ok(key: &MacKey, row: &SecretRow, versions: &[VersionFacts], mac: &[u8]) -> bool {
    key.verify(&secret_encoding(row, versions), mac)
}

fn token_encoding(row: &TokenRow) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + row.scopes.len() * 32);
    out.extend_from_slice(TOKEN_LABEL);
    put(&mut out, row.id.as_bytes());
    put(&mut out, row.name.as_bytes());
    put(&mut out, &row.hash);
    put_u64(&mut out, row.scopes.len() as u64);
    for scope in &row.scopes {
        put(&mut out, scope.as_bytes());
    }
    put_i64(&mut out, row.created_at_ms);
    put_opt_i64(&mut out, row.expires_at_ms);
    put_opt_i64(&mut out, row.revoked_at_ms);
    out
}

/// The MAC of a token's row (all of it but `last_used_at`).
pub fn token_mac(key: &MacKey, row: &TokenRow) -> [u8; 32] {
    key.sign(&token_encoding(row))
}

pub fn token_ok(key: &MacKey, row: &TokenRow, mac: &[u8]) -> bool {
    key.verify(&token_encoding(row), mac)
}

fn census_encoding(secrets: u64) -> Vec<u8> {
    let mut out = CENSUS_LABEL.to_vec();
    put_u64(&mut out, secrets);
    out
}

/// The MAC over the number of secrets in the vault.
pub fn census_mac(key: &MacKey, secrets: u64) -> [u8; 32] {
    key.sign(&census_encoding(secrets))
}

pub fn census_ok(key: &MacKey, secrets: u64, mac: &[u8]) -> bool {
    key.verify(&census_encoding(secrets), mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::VaultKey;

    fn row() -> SecretRow {
        SecretRow {
            name: "A".into(),
            description: None,
            created_at_ms: 1,
            updated_at_ms: 2,
            deleted_at_ms: None,
            latest_version: 2,
            current_version: Some(2),
            pending_version: None,
            previous_version: Some(1),
        }
    }

    fn versions() -> Vec<VersionFacts> {
        (1..=2)
            .map(|v| VersionFacts {
                version: v,
                created_at_ms: v as i64,
                destroyed_at_ms: None,
                sealed: true,
                meta: "{}".into(),
            })
            .collect()
    }

    #[test]
    fn every_field_that_picks_a_ciphertext_changes_the_mac() {
        let key = VaultKey::generate()
            .unwrap()
            .metadata_key(&[7; 16])
            .unwrap();
        let mac = secret_mac(&key, &row(), &versions());
        assert!(secret_ok(&key, &row(), &versions(), &mac));
        let rows: Vec<fn(&mut SecretRow)> = vec![
            |r| r.current_version = Some(1),
            |r| r.current_version = None,
            |r| r.previous_version = None,
            |r| r.pending_version = Some(2),
            |r| r.latest_version = 1,
            |r| r.deleted_at_ms = Some(3),
            |r| r.name = "B".into(),
            |r| r.description = Some(String::new()),
        ];
        for change in rows {
            let mut changed = row();
            change(&mut changed);
            assert!(!secret_ok(&key, &changed, &versions(), &mac));
        }
        let version_changes: Vec<fn(&mut Vec<VersionFacts>)> = vec![
            |v| {
                v.pop();
            },
            |v| v[0].sealed = false,
            |v| v[0].destroyed_at_ms = Some(9),
            |v| v[1].meta = r#"{"jwk":{}}"#.into(),
            |v| v[1].version = 3,
            |v| v[1].created_at_ms = 0,
            |v| v.swap(0, 1),
        ];
        for change in version_changes {
            let mut changed = versions();
            change(&mut changed);
            assert!(!secret_ok(&key, &row(), &changed, &mac));
        }
        let other = VaultKey::generate()
            .unwrap()
            .metadata_key(&[7; 16])
            .unwrap();
        assert!(!secret_ok(&other, &row(), &versions(), &mac));
    }

    #[test]
    fn a_census_or_token_mac_cannot_stand_in_for_another() {
        let key = VaultKey::generate()
            .unwrap()
            .metadata_key(&[7; 16])
            .unwrap();
        let census = census_mac(&key, 3);
        assert!(census_ok(&key, 3, &census));
        assert!(!census_ok(&key, 2, &census));
        let token = TokenRow {
            id: "tok_1".into(),
            name: "n".into(),
            hash: vec![1; 32],
            scopes: vec!["secrets:read:A".into()],
            created_at_ms: 1,
            expires_at_ms: None,
            revoked_at_ms: Some(5),
            last_used_at_ms: None,
        };
        let mac = token_mac(&key, &token);
        let mut used = token.clone();
        used.last_used_at_ms = Some(9);
        assert!(token_ok(&key, &used, &mac), "last use is not covered");
        for change in [
            |t: &mut TokenRow| t.scopes = vec!["admin".into()],
            |t: &mut TokenRow| t.revoked_at_ms = None,
            |t: &mut TokenRow| t.expires_at_ms = Some(1),
        ] {
            let mut changed = token.clone();
            change(&mut changed);
            assert!(!token_ok(&key, &changed, &mac));
        }
        assert!(!token_ok(&key, &token, &census));
    }
}
