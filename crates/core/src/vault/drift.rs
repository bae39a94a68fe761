//! The vault's side of a drift check (`secret drift`, and `serve` on a schedule): keyed
//! fingerprints of every readable version of a secret, so a value read from a target
//! can be recognised — current, an older version, or one the vault never had — without
//! any value leaving the vault; and the audit entry of a fix, with its outcome.
//!
//! The fingerprints are the ones `set` records in the audit log (HMAC-SHA256 under a
//! key derived from the vault key, truncated): they identify a value, they do not
//! reveal it, and nobody without the vault key can compute one to guess with.

use super::{append, read_in, Vault};
use crate::action::Action;
use crate::error::VaultError;
use crate::model::{SecretName, VersionNumber, VersionSelector};
use crate::store::SecretRow;

/// One readable version of a secret, known by its keyed fingerprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionPrint {
    pub version: u64,
    pub fingerprint: String,
}

/// A secret's labels and the fingerprints of its readable versions, oldest first.
/// A deleted secret has its row and no versions (none of them may be read).
#[derive(Clone, Debug)]
pub struct SecretPrints {
    pub row: SecretRow,
    pub versions: Vec<VersionPrint>,
}

impl SecretPrints {
    /// The version whose value has this fingerprint, if the vault holds it.
    pub fn version_of(&self, fingerprint: &str) -> Option<u64> {
        self.versions
            .iter()
            .rev()
            .find(|v| v.fingerprint == fingerprint)
            .map(|v| v.version)
    }

    /// The fingerprint of `version`, if it is readable.
    pub fn of_version(&self, version: u64) -> Option<&str> {
        self.versions
            .iter()
            .find(|v| v.version == version)
            .map(|v| v.fingerprint.as_str())
    }
}

impl Vault {
    /// Fingerprints of every readable version of a secret (`None`: no such secret).
    /// Destroyed versions have no value left to fingerprint and are skipped; a version
    /// that does not decrypt is an integrity failure, as on any read.
    ///
    /// Not audited on its own: no value leaves the vault, and the drift check that
    /// uses this records one `drift.check` entry with what it found.
    pub fn fingerprints(&mut self, raw_name: &str) -> Result<Option<SecretPrints>, VaultError> {
        let name = SecretName::new(raw_name)?;
        let keys = &self.keys;
        self.store.read(|tx| {
            let Some(row) = super::metadata::checked_secret(tx, keys, name.as_str())? else {
                return Ok(None);
            };
            let mut versions = Vec::new();
            if row.deleted_at_ms.is_none() {
                for stored in tx.versions_of(name.as_str())? {
                    let Some(number) = VersionNumber::new(stored.version) else {
                        continue;
                    };
                    if stored.destroyed_at_ms.is_some() {
                        continue;
                    }
                    let revealed = read_in(tx, keys, &name, VersionSelector::Number(number))?;
                    versions.push(VersionPrint {
                        version: stored.version,
                        fingerprint: keys.fingerprint.of(revealed.value.expose().as_bytes()),
                    });
                }
            }
            Ok(Some(SecretPrints { row, versions }))
        })
    }

    /// Records an operation on the targets with its outcome (`ok`, or an error code
    /// such as `transient`): a drift fix that failed at a target is in the log too.
    /// `action` decides how durable the entry is before this returns.
    pub fn record_outcome(
        &mut self,
        action: Action,
        secret: Option<&str>,
        outcome: &str,
        details: serde_json::Value,
    ) -> Result<(), VaultError> {
        let keys = &self.keys;
        let actor = &self.actor;
        let clock = &self.clock;
        let head = self.store.write_with(action.durability(), |tx| {
            let at = clock.now_ms();
            append(
                tx,
                keys,
                actor,
                at,
                action.as_str(),
                secret,
                None,
                outcome,
                &details,
            )
        })?;
        self.last_head = Some(head);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Actor, AuditFilter};
    use crate::model::SecretValue;
    use crate::vault::{InitOptions, SetOptions};
    use serde_json::json;
    use zeroize::Zeroizing;

    fn vault(dir: &std::path::Path) -> Vault {
        let identity = crate::crypto::generate_identity("t");
        Vault::init(
            &dir.join("v.db"),
            InitOptions {
                recipients: vec![identity.recipient],
                passphrase: None,
                scrypt_log_n: None,
            },
            Actor {
                name: "user:test".into(),
                pid: None,
                request_id: "t".into(),
            },
        )
        .unwrap()
    }

    fn set(v: &mut Vault, name: &str, value: &str) {
        let value = SecretValue::from_bytes(Zeroizing::new(value.as_bytes().to_vec()), false);
        v.set(name, value, &SetOptions::default()).unwrap();
    }

    #[test]
    fn fingerprints_name_each_readable_version_and_match_what_set_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = vault(dir.path());
        set(&mut v, "K", "first");
        set(&mut v, "K", "second");
        set(&mut v, "K", "third");
        v.destroy("K", VersionNumber::new(1).unwrap()).unwrap();
        let prints = v.fingerprints("K").unwrap().unwrap();
        assert_eq!(prints.row.current_version, Some(3));
        let versions: Vec<u64> = prints.versions.iter().map(|p| p.version).collect();
        assert_eq!(versions, [2, 3], "a destroyed version has no fingerprint");
        let fp = v.fingerprinter();
        assert_eq!(prints.version_of(&fp.of(b"second")), Some(2));
        assert_eq!(prints.version_of(&fp.of(b"first")), None);
        assert_eq!(prints.version_of(&fp.of(b"never")), None);
        assert_eq!(prints.of_version(3), Some(fp.of(b"third").as_str()));
        // The same fingerprint `set` put in the audit log.
        let entries = v
            .audit_entries(&AuditFilter::default(), Action::AuditRead)
            .unwrap();
        let last_set = entries.iter().rev().find(|e| e.action == "set").unwrap();
        assert!(last_set.details.contains(&fp.of(b"third")));
        assert!(v.fingerprints("NOPE").unwrap().is_none());
    }

    #[test]
    fn a_deleted_secret_has_no_readable_versions() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = vault(dir.path());
        set(&mut v, "K", "value");
        v.delete("K").unwrap();
        let prints = v.fingerprints("K").unwrap().unwrap();
        assert!(prints.row.deleted_at_ms.is_some());
        assert!(prints.versions.is_empty());
    }

    #[test]
    fn outcomes_are_recorded_in_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = vault(dir.path());
        v.record_outcome(
            Action::DriftFix,
            Some("K"),
            "transient",
            json!({ "target": "api" }),
        )
        .unwrap();
        let entries = v
            .audit_entries(&AuditFilter::default(), Action::AuditRead)
            .unwrap();
        let fix = entries.iter().find(|e| e.action == "drift.fix").unwrap();
        assert_eq!(fix.outcome, "transient");
        assert_eq!(fix.secret.as_deref(), Some("K"));
        assert_eq!(
            v.audit_verify(None).unwrap().verified as usize,
            entries.len() + 1
        );
    }
}
