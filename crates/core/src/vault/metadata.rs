//! The metadata MACs (see [`crate::integrity`]) inside the vault's transactions: every
//! read of a secret's row, a token's row or the set of secrets goes through a checked
//! accessor here, and every change is followed by a reseal in the same transaction.
//!
//! A failed check is [`VaultError::Integrity`] (exit 7) naming what was changed; the
//! transaction it happens in is rolled back, so nothing is read out or written.

use super::Keys;
use crate::error::VaultError;
use crate::integrity;
use crate::store::{SecretRow, TokenRow, Tx};

const RESTORE: &str = "nothing was read or written; restore the vault from a backup";

fn tampered_secret(name: &str, missing: bool) -> VaultError {
    let what = if missing {
        "has lost its MAC"
    } else {
        "does not match its MAC"
    };
    VaultError::Integrity(format!(
        "the metadata of {name} (its labels, versions or deleted and destroyed flags) {what}: \
         it was changed without the vault key; {RESTORE}"
    ))
}

/// A secret's row, after checking its row and versions against its MAC. `None` when
/// no such secret exists — after checking that no secret was removed whole.
pub(super) fn checked_secret(
    tx: &Tx<'_>,
    keys: &Keys,
    name: &str,
) -> Result<Option<SecretRow>, VaultError> {
    let Some((row, mac)) = tx.secret_with_mac(name)? else {
        check_census(tx, keys)?;
        return Ok(None);
    };
    let versions = tx.version_facts(name)?;
    match mac {
        Some(mac) if integrity::secret_ok(&keys.meta, &row, &versions, &mac) => Ok(Some(row)),
        Some(_) => Err(tampered_secret(name, false)),
        None => Err(tampered_secret(name, true)),
    }
}

/// Renews a secret's MAC after a change to its row or its versions.
pub(super) fn reseal_secret(tx: &Tx<'_>, keys: &Keys, name: &str) -> Result<(), VaultError> {
    let row = tx.secret(name)?.ok_or_else(|| {
        VaultError::NotFound(format!(
            "no secret named {name} to seal (it was never saved)"
        ))
    })?;
    let versions = tx.version_facts(name)?;
    tx.set_secret_mac(name, &integrity::secret_mac(&keys.meta, &row, &versions))?;
    Ok(())
}

/// Checks the number of secrets against the census MAC.
pub(super) fn check_census(tx: &Tx<'_>, keys: &Keys) -> Result<(), VaultError> {
    let count = tx.count_secrets()?;
    let ok = tx
        .census()?
        .is_some_and(|mac| integrity::census_ok(&keys.meta, count, &mac));
    if ok {
        Ok(())
    } else {
        Err(VaultError::Integrity(format!(
            "the vault file holds {count} secrets, not the number its key sealed: a secret was \
             removed or added without the vault key; {RESTORE}"
        )))
    }
}

/// Renews the census after a secret was created.
pub(super) fn reseal_census(tx: &Tx<'_>, keys: &Keys) -> Result<(), VaultError> {
    let count = tx.count_secrets()?;
    tx.set_census(&integrity::census_mac(&keys.meta, count))?;
    Ok(())
}

fn tampered_token(id: &str) -> VaultError {
    VaultError::Integrity(format!(
        "the record of token {id} (its scopes, expiry or revocation) was changed without the \
         vault key; {RESTORE}"
    ))
}

/// A token's row, after checking it against its MAC.
pub(super) fn checked_token(
    tx: &Tx<'_>,
    keys: &Keys,
    id: &str,
) -> Result<Option<TokenRow>, VaultError> {
    let Some(row) = tx.token(id)? else {
        return Ok(None);
    };
    let ok = tx
        .token_mac(id)?
        .is_some_and(|mac| integrity::token_ok(&keys.meta, &row, &mac));
    if ok {
        Ok(Some(row))
    } else {
        Err(tampered_token(id))
    }
}

/// Every token, each checked against its MAC.
pub(super) fn checked_tokens(tx: &Tx<'_>, keys: &Keys) -> Result<Vec<TokenRow>, VaultError> {
    let rows = tx.tokens()?;
    for row in &rows {
        let ok = tx
            .token_mac(&row.id)?
            .is_some_and(|mac| integrity::token_ok(&keys.meta, row, &mac));
        if !ok {
            return Err(tampered_token(&row.id));
        }
    }
    Ok(rows)
}

/// Renews a token's MAC after it was created or revoked.
pub(super) fn reseal_token(tx: &Tx<'_>, keys: &Keys, id: &str) -> Result<(), VaultError> {
    let row = tx
        .token(id)?
        .ok_or_else(|| VaultError::NotFound(format!("no token {id} to seal")))?;
    tx.set_token_mac(id, &integrity::token_mac(&keys.meta, &row))?;
    Ok(())
}

/// Checks the census and each of `names` (the secrets a listing shows).
pub(super) fn check_listed<'a>(
    tx: &Tx<'_>,
    keys: &Keys,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<(), VaultError> {
    check_census(tx, keys)?;
    for name in names {
        checked_secret(tx, keys, name)?;
    }
    Ok(())
}

/// Checks every secret, every token and the census. Returns how many secrets and
/// tokens were checked.
pub(super) fn check_everything(tx: &Tx<'_>, keys: &Keys) -> Result<(u64, u64), VaultError> {
    check_census(tx, keys)?;
    let names = tx.secret_names()?;
    for name in &names {
        checked_secret(tx, keys, name)?;
    }
    let tokens = checked_tokens(tx, keys)?;
    Ok((names.len() as u64, tokens.len() as u64))
}

/// Gives a vault made before metadata MACs its MACs (at its first unlock with the
/// key): every secret, every token, the census. Returns how many secrets and tokens.
pub(super) fn seal_everything(tx: &Tx<'_>, keys: &Keys) -> Result<(u64, u64), VaultError> {
    let names = tx.secret_names()?;
    for name in &names {
        reseal_secret(tx, keys, name)?;
    }
    let tokens = tx.tokens()?;
    for token in &tokens {
        reseal_token(tx, keys, &token.id)?;
    }
    reseal_census(tx, keys)?;
    Ok((names.len() as u64, tokens.len() as u64))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use secrecy::SecretString;

    use super::super::{InitOptions, SetOptions, Unlocker, Vault};
    use crate::audit::{Actor, AuditFilter};
    use crate::crypto::{generate_identity, Identities};
    use crate::error::VaultError;
    use crate::model::{Label, SecretValue, VersionSelector};

    fn actor() -> Actor {
        Actor {
            name: "user:test".into(),
            pid: None,
            request_id: "r".into(),
        }
    }

    fn unlocker(identity: &SecretString) -> Unlocker {
        Unlocker {
            identities: Some(Identities::parse(identity).unwrap()),
            passphrase: None,
            identity_hint: String::new(),
        }
    }

    fn value(text: &str) -> Result<SecretValue, crate::model::InputError> {
        SecretValue::from_bytes(zeroize::Zeroizing::new(text.as_bytes().to_vec()), false)
    }

    fn current(vault: &mut Vault, name: &str) -> Result<String, VaultError> {
        vault
            .get(name, VersionSelector::Label(Label::Current))
            .map(|r| r.value.expose().to_string())
    }

    /// Turns a vault made by this build back into one made before metadata MACs: no
    /// MAC columns, schema 4, no application id, the old key check.
    fn make_legacy(path: &Path, legacy_check: &[u8]) {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch(
            "ALTER TABLE locks DROP COLUMN epoch;
             ALTER TABLE secrets DROP COLUMN mac;
             ALTER TABLE tokens DROP COLUMN mac;
             ALTER TABLE vault DROP COLUMN census;
             PRAGMA user_version = 5;
             PRAGMA application_id = 0;",
        )
        .unwrap();
        conn.execute("UPDATE vault SET key_check = ?1", [legacy_check])
            .unwrap();
    }

    #[test]
    fn a_vault_from_before_metadata_macs_is_sealed_once_at_its_first_unlock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.db");
        let identity = generate_identity("2026-01-01T00:00:00Z");
        let options = InitOptions {
            recipients: vec![identity.recipient.clone()],
            passphrase: None,
            scrypt_log_n: None,
        };
        let mut vault = Vault::init(&path, options, actor()).unwrap();
        vault
            .set("A", value("one"), &SetOptions::default())
            .unwrap();
        vault
            .set("A", value("two"), &SetOptions::default())
            .unwrap();
        vault
            .create_token("t", &["secrets:read:A".into()], None)
            .unwrap();
        let legacy = vault
            .keys
            .key
            .legacy_key_check(&vault.keys.vault_id)
            .unwrap();
        drop(vault);
        make_legacy(&path, &legacy);

        let mut vault = Vault::open(&path, unlocker(&identity.file_text), actor()).unwrap();
        assert_eq!(current(&mut vault, "A").unwrap(), "two");
        let entries = vault
            .audit_entries(&AuditFilter::default(), crate::action::Action::AuditRead)
            .unwrap();
        let sealed: Vec<_> = entries
            .iter()
            .filter(|e| e.action == "vault.seal_metadata")
            .collect();
        assert_eq!(sealed.len(), 1);
        assert_eq!(sealed[0].details, r#"{"secrets":1,"tokens":1}"#);
        assert_eq!(vault.tokens().unwrap().len(), 1);
        let report = vault.audit_verify(None).unwrap();
        assert_eq!((report.secrets, report.tokens), (1, 1));
        drop(vault);

        // Sealed once: a second unlock adds no seal entry, and a MAC removed now is
        // tampering, not a vault to seal again.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("UPDATE secrets SET mac = NULL, current_version = 1")
            .unwrap();
        drop(conn);
        let mut vault = Vault::open(&path, unlocker(&identity.file_text), actor()).unwrap();
        let err = current(&mut vault, "A").unwrap_err();
        assert!(
            matches!(&err, VaultError::Integrity(m) if m.contains("metadata of A")),
            "{err}"
        );
        assert_eq!(err.exit_code(), 7);
        let entries = vault
            .audit_entries(&AuditFilter::default(), crate::action::Action::AuditRead)
            .unwrap();
        assert_eq!(
            entries
                .iter()
                .filter(|e| e.action == "vault.seal_metadata")
                .count(),
            1
        );
    }
}
