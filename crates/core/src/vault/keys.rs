//! Keys and recovery: who can unlock the vault (its age recipients and an optional
//! passphrase), replacing the vault key (`rekey`), and backups that a restore proves
//! before it replaces anything.
//!
//! - **Recipients and passphrase** re-wrap the vault key; the last way to unlock can
//!   never be removed. Removing one does not change the key itself: whoever held the
//!   removed identity or passphrase could have kept the key, which is what `rekey` is for.
//! - **Rekey** makes a new vault key and, in one transaction, re-encrypts every stored
//!   version, re-wraps the key to the same recipients (and passphrase), seals the retired
//!   audit key under the new key (one per key epoch, so the chain verifies across the
//!   change), revokes every API token (their hashes were keyed by the old key), and
//!   appends the `rekey` entry — the last one MACed under the old key. A crash at any
//!   point leaves the old key or the new one fully in force: SQLite commits it whole.
//! - **Backup** appends its audit entry, then takes one consistent snapshot of the vault
//!   as a SQLite file (SQLite's online backup; on PostgreSQL, every row read in one
//!   snapshot into a SQLite vault in memory) and encrypts it with age to the vault's
//!   recipients, or to its passphrase; the plain `age -d` gives back a vault file.
//! - **Restore** decrypts a backup into a private temporary folder, unlocks it, verifies
//!   its audit chain and opens every ciphertext; only then does it keep the current vault
//!   aside and replace it in one transaction (a file: SQLite's backup into it; a
//!   database: every row deleted and the backup's inserted, then read back, before the
//!   commit; the replaced vault kept as a SQLite vault file beside the backup). A backup
//!   older than the vault (by audit head) needs `force`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde_json::json;

use super::{
    append, remove_vault_files, Done, Keys, PassphraseSource, Unlocker, Vault, VaultError,
};
use crate::action::Action;
use crate::audit::{self, Actor, EpochKeys, ExpectedHead, Verifier};
use crate::clock::Clock;
use crate::crypto::{self, AgeKey, AgeTo, CryptoError, MacKey, ValueSlot, VaultKey};
use crate::private_file::{self, PrivateFileError};
use crate::render::rfc3339;
use crate::store::{image, KeyringKind, KeyringRow, RetiredKeyRow, Store, StoreError, Tx};

/// Versions re-encrypted or checked per page.
const PAGE: u64 = 512;

/// Who can unlock the vault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyringInfo {
    /// The age recipients the vault key is wrapped to.
    pub recipients: Vec<String>,
    /// Whether a passphrase copy of the key exists.
    pub passphrase: bool,
    /// The key epoch in force: 1 for the key made at init, one more per rekey.
    pub epoch: u64,
}

/// Options of `secret rekey`.
pub struct RekeyOptions {
    /// The vault's passphrase, required when it has a passphrase copy of its key (the
    /// new key is wrapped to it too).
    pub passphrase: Option<SecretString>,
    /// scrypt work factor of the new passphrase copy (`None`: age calibrates it).
    pub scrypt_log_n: Option<u8>,
}

/// What a rekey did.
#[derive(Debug)]
pub struct RekeyReport {
    /// The key epoch now in force.
    pub epoch: u64,
    /// Versions re-encrypted under the new key.
    pub versions: u64,
    /// API tokens revoked.
    pub tokens_revoked: u64,
}

/// Whom a backup is encrypted to.
pub enum BackupEncryption {
    /// The vault's age recipients: any of their identities opens it (`age -d -i`).
    Recipients,
    /// The vault's passphrase (a scrypt age file); it must open the vault's passphrase
    /// copy, so that one passphrase opens both the backup and the vault inside it.
    Passphrase {
        passphrase: SecretString,
        scrypt_log_n: Option<u8>,
    },
}

/// Where a backup goes.
pub enum BackupTarget<'a> {
    /// A file (0600, through an exclusive temporary file); an existing one is replaced
    /// only with `overwrite`.
    File { path: &'a Path, overwrite: bool },
    /// A stream (stdout).
    Writer(&'a mut dyn Write),
}

/// What a backup holds.
#[derive(Debug)]
pub struct BackupReport {
    /// Size of the age file.
    pub bytes: u64,
    /// The recipients it is encrypted to (empty when it is encrypted to the passphrase).
    pub recipients: Vec<String>,
    pub passphrase: bool,
    /// The backup's own audit entry, `SEQ:MAC`: the snapshot holds it and everything
    /// before it.
    pub head: String,
    pub secrets: u64,
    pub versions: u64,
}

/// What a restore proved about a vault: its chain verifies and every ciphertext opens.
#[derive(Debug)]
pub struct Proof {
    pub vault_id: Vec<u8>,
    /// The newest audit entry.
    pub head_seq: u64,
    pub head_mac: Vec<u8>,
    pub entries: u64,
    pub secrets: u64,
    pub versions: u64,
    pub epoch: u64,
}

/// Options of `secret restore`.
pub struct RestoreOptions {
    /// Restore even a backup older than the vault, or over a vault that cannot be read.
    pub force: bool,
    /// Where the backup came from, for messages and the audit log.
    pub source: String,
}

/// What a restore did.
#[derive(Debug)]
pub struct RestoreReport {
    /// The backup's newest entry before the restore's own, `SEQ:MAC`.
    pub backup_head: String,
    /// Where the vault that was replaced is kept (a plain copy of its file).
    pub kept_aside: Option<PathBuf>,
    /// What `force` let through: changes lost, an older key put back.
    pub warnings: Vec<String>,
    pub secrets: u64,
    pub versions: u64,
    pub epoch: u64,
}

fn broken(b: audit::Break) -> VaultError {
    VaultError::AuditBroken {
        seq: b.seq,
        reason: b.reason,
    }
}

pub(super) fn epoch_after(retired: &[RetiredKeyRow]) -> u64 {
    retired.last().map(|r| r.epoch + 1).unwrap_or(1)
}

/// The epoch in force and the audit keys of the retired ones.
fn epoch_keys_in(tx: &Tx<'_>, keys: &Keys) -> Result<(u64, BTreeMap<u64, MacKey>), VaultError> {
    let rows = tx.retired_keys()?;
    let mut retired = BTreeMap::new();
    for row in &rows {
        let key = keys
            .key
            .open_retired(&keys.vault_id, row.epoch, &row.nonce, &row.sealed_key)
            .map_err(|_| VaultError::AuditBroken {
                seq: row.retired_seq,
                reason: format!(
                    "the retired audit key of key epoch {} does not open (it was altered)",
                    row.epoch
                ),
            })?;
        retired.insert(row.epoch, key.mac_key());
    }
    Ok((epoch_after(&rows), retired))
}

/// Verifies the whole chain, every epoch with its own key, and the sealed head.
/// Returns the number of entries.
pub(super) fn verify_chain_in(
    tx: &Tx<'_>,
    keys: &Keys,
    expect: Option<ExpectedHead>,
) -> Result<u64, VaultError> {
    let (epoch, retired) = epoch_keys_in(tx, keys)?;
    let mut verifier = Verifier::new(EpochKeys::new(epoch, &keys.audit, retired), expect);
    tx.for_each_audit(|entry| verifier.feed(&entry).map_err(broken))?;
    let head = tx.audit_head()?;
    verifier.finish(head.as_ref()).map_err(broken)
}

/// Calls `f` on every sealed version, a page at a time, then `progress(done, total)`.
pub(super) fn for_each_sealed(
    tx: &Tx<'_>,
    progress: &mut dyn FnMut(u64, u64),
    mut f: impl FnMut(&crate::store::SealedVersion) -> Result<(), VaultError>,
) -> Result<u64, VaultError> {
    let total = tx.count_sealed_versions()?;
    progress(0, total);
    let mut done = 0;
    let mut after: Option<(String, u64)> = None;
    loop {
        let page = tx.sealed_versions_after(after.as_ref().map(|(n, v)| (n.as_str(), *v)), PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some((last.name.clone(), last.version));
        for sealed in &page {
            f(sealed)?;
        }
        done += page.len() as u64;
        progress(done.min(total), total);
    }
    Ok(done)
}

pub(super) fn undecryptable(name: &str, version: u64) -> VaultError {
    VaultError::Integrity(format!(
        "version {version} of {name} does not decrypt: its stored ciphertext was altered or \
         moved from another row"
    ))
}

/// Opens every sealed version with the vault key; returns how many.
pub(super) fn open_every_ciphertext(tx: &Tx<'_>, keys: &super::Keys) -> Result<u64, VaultError> {
    for_each_sealed(tx, &mut |_, _| {}, |sealed| {
        let slot = ValueSlot {
            vault_id: &keys.vault_id,
            name: &sealed.name,
            version: sealed.version,
        };
        keys.key
            .open(&slot, &sealed.nonce, &sealed.ciphertext)
            .map(drop)
            .map_err(|_| undecryptable(&sealed.name, sealed.version))
    })
}

/// A pasted identity (secret key) must not be echoed or recorded anywhere.
fn canonical_recipient(text: &str) -> Result<String, VaultError> {
    if text
        .trim()
        .to_ascii_uppercase()
        .starts_with("AGE-SECRET-KEY-")
    {
        return Err(VaultError::Usage(
            "that is an age identity (a secret key), not a recipient: give its public key \
             (`age-keygen -y IDENTITY_FILE` prints it)"
                .into(),
        ));
    }
    crypto::canonical_recipient(text).map_err(|e| VaultError::Usage(e.to_string()))
}

fn last_way_to_unlock(what: &str) -> VaultError {
    VaultError::Conflict(format!(
        "{what} is the vault's last way to unlock and cannot be removed; add another \
         recipient (`secret recipients add`) or a passphrase (`secret passphrase add`) first"
    ))
}

/// `vault.db` → `vault.db.before-restore-20261126T101500.123Z`.
fn aside_path(vault_path: &Path, now_ms: i64) -> PathBuf {
    let stamp: String = rfc3339(now_ms, true)
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let mut name = vault_path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "vault.db".into());
    name.push(format!(".before-restore-{stamp}"));
    vault_path.with_file_name(name)
}

pub(super) fn file_error(e: PrivateFileError) -> VaultError {
    match e {
        PrivateFileError::Exists(path) => VaultError::Conflict(format!(
            "{} already exists; pass --force to replace it",
            path.display()
        )),
        other => VaultError::Io(other.to_string()),
    }
}

impl Vault {
    /// Who can unlock the vault. Not audited on its own (commands decide with it
    /// whether to ask for a passphrase); `recipients` is the audited listing.
    pub fn keyring_info(&mut self) -> Result<KeyringInfo, VaultError> {
        Ok(self.store.read(keyring_info_in)?)
    }

    /// `secret recipients list`.
    pub fn recipients(&mut self) -> Result<KeyringInfo, VaultError> {
        self.audited(Action::RecipientsList, None, |tx, _, _now| {
            let info = keyring_info_in(tx)?;
            let details =
                json!({ "recipients": info.recipients.len(), "passphrase": info.passphrase });
            Ok(Done::new(info, None, details))
        })
    }

    /// Wraps the vault key to one more recipient. Returns false when it already was one.
    pub fn add_recipient(&mut self, recipient: &str) -> Result<bool, VaultError> {
        let recipient = canonical_recipient(recipient)?;
        let changed = self.audited(Action::RecipientsAdd, None, |tx, keys, now| {
            let mut list = recipients_in(tx)?;
            if list.contains(&recipient) {
                return Ok(Done::new(
                    false,
                    None,
                    json!({ "recipient": recipient, "changed": false }),
                ));
            }
            list.push(recipient.clone());
            tx.put_keyring(
                &KeyringRow {
                    kind: KeyringKind::Recipients,
                    wrapped_key: keys.key.wrap_to_recipients(&list)?,
                    recipients: list.clone(),
                },
                now,
            )?;
            Ok(Done::new(
                true,
                None,
                json!({ "recipient": recipient, "changed": true, "recipients": list.len() }),
            ))
        })?;
        self.fold_wal();
        Ok(changed)
    }

    /// Re-wraps the vault key without `recipient`. The key itself is unchanged.
    pub fn remove_recipient(&mut self, recipient: &str) -> Result<(), VaultError> {
        let recipient = canonical_recipient(recipient)?;
        self.audited(Action::RecipientsRemove, None, |tx, keys, now| {
            let mut list = recipients_in(tx)?;
            if !list.contains(&recipient) {
                return Err(VaultError::NotFound(format!(
                    "{recipient} is not a recipient of this vault; `secret recipients list` shows them"
                )));
            }
            list.retain(|r| *r != recipient);
            if list.is_empty() {
                if !has_passphrase_in(tx)? {
                    return Err(last_way_to_unlock(&format!("recipient {recipient}")));
                }
                tx.delete_keyring(KeyringKind::Recipients)?;
            } else {
                tx.put_keyring(
                    &KeyringRow {
                        kind: KeyringKind::Recipients,
                        wrapped_key: keys.key.wrap_to_recipients(&list)?,
                        recipients: list.clone(),
                    },
                    now,
                )?;
            }
            Ok(Done::new(
                (),
                None,
                json!({ "recipient": recipient, "recipients": list.len() }),
            ))
        })?;
        self.fold_wal();
        Ok(())
    }

    /// Adds a passphrase copy of the vault key (scrypt).
    pub fn add_passphrase(
        &mut self,
        passphrase: &SecretString,
        scrypt_log_n: Option<u8>,
    ) -> Result<(), VaultError> {
        // scrypt takes about a second: outside the write lock.
        let wrapped = self.keys.key.wrap_to_passphrase(passphrase, scrypt_log_n)?;
        self.audited(Action::PassphraseAdd, None, |tx, _, now| {
            if has_passphrase_in(tx)? {
                return Err(VaultError::Conflict(
                    "the vault already has a passphrase; to change it, `secret passphrase \
                     remove` it and add the new one"
                        .into(),
                ));
            }
            tx.put_keyring(
                &KeyringRow {
                    kind: KeyringKind::Passphrase,
                    wrapped_key: wrapped,
                    recipients: Vec::new(),
                },
                now,
            )?;
            Ok(Done::new((), None, json!({})))
        })
    }

    /// Removes the passphrase copy of the vault key. The key itself is unchanged.
    pub fn remove_passphrase(&mut self) -> Result<(), VaultError> {
        self.audited(Action::PassphraseRemove, None, |tx, _, _now| {
            if !has_passphrase_in(tx)? {
                return Err(VaultError::NotFound(
                    "the vault has no passphrase to remove".into(),
                ));
            }
            if recipients_in(tx)?.is_empty() {
                return Err(last_way_to_unlock("the passphrase"));
            }
            tx.delete_keyring(KeyringKind::Passphrase)?;
            Ok(Done::new((), None, json!({})))
        })?;
        self.fold_wal();
        Ok(())
    }

    /// Old page images of a replaced key copy must not linger in the WAL.
    fn fold_wal(&mut self) {
        let _ = self.store.checkpoint_truncate();
    }

    /// Checks that `passphrase` opens the vault's passphrase copy (to this vault's key).
    fn check_passphrase(&mut self, passphrase: &SecretString) -> Result<(), VaultError> {
        let keyring = self.store.read(|tx| tx.keyring())?;
        let Some(row) = keyring.iter().find(|r| r.kind == KeyringKind::Passphrase) else {
            return Err(VaultError::Usage(
                "the vault has no passphrase copy of its key (`secret passphrase add` makes one)"
                    .into(),
            ));
        };
        let wrong = || VaultError::Locked("the passphrase given is not the vault's".into());
        let key =
            VaultKey::unwrap_with_passphrase(&row.wrapped_key, passphrase).map_err(|_| wrong())?;
        if key.check(&self.keys.vault_id, &self.keys.check)? != crate::crypto::KeyCheck::Sealed {
            return Err(wrong());
        }
        Ok(())
    }

    /// Replaces the vault key (see the module doc). `progress(done, total)` follows the
    /// re-encryption. Refused while a rotation is running or interrupted: its records
    /// hold keyed fingerprints that a new key would no longer match.
    pub fn rekey(
        &mut self,
        options: RekeyOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<RekeyReport, VaultError> {
        let result = self.rekey_inner(options, progress);
        match result {
            Ok((report, head, new_keys)) => {
                self.keys = new_keys;
                self.last_head = Some(head);
                self.fold_wal();
                Ok(report)
            }
            Err(e) => {
                self.record_refusal(Action::Rekey, None, &e);
                Err(e)
            }
        }
    }

    fn rekey_inner(
        &mut self,
        options: RekeyOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(RekeyReport, audit::Head, Keys), VaultError> {
        let new_keys = Keys::derive(self.keys.vault_id.clone(), VaultKey::generate()?)?;
        // scrypt takes about a second: the passphrase copy is made before the write lock.
        let has_passphrase = self.store.read(has_passphrase_in)?;
        let passphrase_copy = if has_passphrase {
            let passphrase = options.passphrase.ok_or_else(|| {
                VaultError::Usage(
                    "the vault has a passphrase copy of its key: give the passphrase \
                     (SECRET_PASSPHRASE, or on a terminal) so the new key is wrapped to it too"
                        .into(),
                )
            })?;
            self.check_passphrase(&passphrase)?;
            Some(
                new_keys
                    .key
                    .wrap_to_passphrase(&passphrase, options.scrypt_log_n)?,
            )
        } else {
            None
        };
        let keys = &self.keys;
        let actor = &self.actor;
        let clock = &self.clock;
        let new = &new_keys;
        let (report, head) = self.store.write(|tx| {
            keys.ensure_in_force(tx)?;
            // Metadata changed without the key must not be blessed with the new key's MACs.
            super::metadata::check_everything(tx, keys)?;
            for secret in tx.list_secrets(true)? {
                if let Some(id) = tx.rotation_in_progress(&secret.name)? {
                    return Err(VaultError::Conflict(format!(
                        "rotation {id} of {} is in progress; finish it (`secret rotate --due`) \
                         before a rekey: its records hold fingerprints keyed by the current key",
                        secret.name
                    )));
                }
            }
            let now = clock.now_ms();
            let vault_id = &keys.vault_id;
            // Who can unlock: the same recipients and passphrase, the new key.
            let mut recipients = Vec::new();
            for row in tx.keyring()? {
                let wrapped_key = match row.kind {
                    KeyringKind::Recipients => {
                        recipients = row.recipients.clone();
                        new.key.wrap_to_recipients(&row.recipients)?
                    }
                    KeyringKind::Passphrase => passphrase_copy.clone().ok_or_else(|| {
                        VaultError::Conflict(
                            "a passphrase was added while the rekey started; run it again".into(),
                        )
                    })?,
                };
                tx.put_keyring(
                    &KeyringRow {
                        kind: row.kind,
                        recipients: row.recipients,
                        wrapped_key,
                    },
                    now,
                )?;
            }
            // Every stored version, under the new key.
            let versions = for_each_sealed(tx, progress, |sealed| {
                let slot = ValueSlot {
                    vault_id,
                    name: &sealed.name,
                    version: sealed.version,
                };
                let plaintext = keys
                    .key
                    .open(&slot, &sealed.nonce, &sealed.ciphertext)
                    .map_err(|_| undecryptable(&sealed.name, sealed.version))?;
                let resealed = new.key.seal(&slot, &plaintext)?;
                tx.reseal_version(
                    &sealed.name,
                    sealed.version,
                    &resealed.nonce,
                    &resealed.ciphertext,
                )?;
                Ok(())
            })?;
            // The retired audit keys, re-sealed under the new key.
            let retired = tx.retired_keys()?;
            let epoch = epoch_after(&retired);
            for row in retired {
                let key = keys
                    .key
                    .open_retired(vault_id, row.epoch, &row.nonce, &row.sealed_key)
                    .map_err(|_| VaultError::AuditBroken {
                        seq: row.retired_seq,
                        reason: format!(
                            "the retired audit key of key epoch {} does not open (it was altered)",
                            row.epoch
                        ),
                    })?;
                let sealed = new.key.seal_retired(vault_id, row.epoch, &key)?;
                tx.put_retired_key(&RetiredKeyRow {
                    nonce: sealed.nonce,
                    sealed_key: sealed.ciphertext,
                    ..row
                })?;
            }
            // Token hashes were keyed by the old key: whoever may hold it could forge one.
            let tokens_revoked = tx.revoke_all_tokens(now)?;
            // Labels, versions, tokens and the census, MACed under the new key.
            super::metadata::seal_everything(tx, new)?;
            // The last entry under the old key names the epoch that follows it.
            let details = json!({
                "epoch": epoch + 1,
                "versions": versions,
                "tokens_revoked": tokens_revoked,
                "recipients": recipients,
                "passphrase": has_passphrase,
            });
            let head = append(
                tx,
                keys,
                actor,
                now,
                Action::Rekey.as_str(),
                None,
                None,
                "ok",
                &details,
            )?;
            let sealed =
                new.key
                    .seal_retired(vault_id, epoch, &keys.key.retire_audit_key(vault_id)?)?;
            tx.put_retired_key(&RetiredKeyRow {
                epoch,
                retired_at_ms: now,
                retired_seq: head.seq,
                nonce: sealed.nonce,
                sealed_key: sealed.ciphertext,
            })?;
            // From here on the new key is the vault's.
            tx.set_key_check(&new.check)?;
            let head = audit::seal_head(&new.audit, head.seq, &head.mac);
            tx.set_audit_head(&head)?;
            Ok::<_, VaultError>((
                RekeyReport {
                    epoch: epoch + 1,
                    versions,
                    tokens_revoked,
                },
                head,
            ))
        })?;
        Ok((report, head, new_keys))
    }

    /// Checks what a restore relies on: the audit chain verifies in every key epoch,
    /// and every stored ciphertext opens. Not audited (the restore is).
    pub fn prove(&mut self) -> Result<Proof, VaultError> {
        let keys = &self.keys;
        self.store.read(|tx| {
            let entries = verify_chain_in(tx, keys, None)?;
            // Labels, versions, tokens and the census: a backup whose metadata was
            // changed without the key would otherwise be restored and obeyed.
            super::metadata::check_everything(tx, keys)?;
            let head = tx.audit_head()?.ok_or_else(|| VaultError::AuditBroken {
                seq: 1,
                reason: "the sealed head record is missing".into(),
            })?;
            let versions = open_every_ciphertext(tx, keys)?;
            Ok(Proof {
                vault_id: keys.vault_id.clone(),
                head_seq: head.seq,
                head_mac: head.mac,
                entries,
                secrets: tx.list_secrets(true)?.len() as u64,
                versions,
                epoch: epoch_after(&tx.retired_keys()?),
            })
        })
    }

    /// Writes an age-encrypted snapshot of the whole vault to `target`. Its audit entry
    /// is committed first (nothing leaves unrecorded), so the snapshot holds it.
    pub fn backup(
        &mut self,
        target: BackupTarget<'_>,
        encryption: BackupEncryption,
    ) -> Result<BackupReport, VaultError> {
        if let BackupEncryption::Passphrase { passphrase, .. } = &encryption {
            if let Err(e) = self.check_passphrase(passphrase) {
                self.record_refusal(Action::Backup, None, &e);
                return Err(e);
            }
        }
        let to = match &target {
            BackupTarget::File { path, .. } => path.display().to_string(),
            BackupTarget::Writer(_) => "stdout".to_string(),
        };
        let is_passphrase = matches!(encryption, BackupEncryption::Passphrase { .. });
        let (info, secrets, versions) = self.audited(Action::Backup, None, |tx, _, _now| {
            let info = keyring_info_in(tx)?;
            if !is_passphrase && info.recipients.is_empty() {
                return Err(VaultError::Usage(
                    "the vault has no recipients, only a passphrase: back it up to the \
                     passphrase (`secret backup --passphrase`)"
                        .into(),
                ));
            }
            let secrets = tx.list_secrets(true)?.len() as u64;
            let versions = tx.count_sealed_versions()?;
            let details = json!({
                "to": to,
                "encrypted_to": if is_passphrase { "passphrase" } else { "recipients" },
                "recipients": if is_passphrase { Vec::new() } else { info.recipients.clone() },
                "secrets": secrets,
                "versions": versions,
            });
            Ok(Done::new((info, secrets, versions), None, details))
        })?;
        let head = self
            .last_head
            .as_ref()
            .map(|h| audit::format_head(h.seq, &h.mac))
            .unwrap_or_default();
        let written = (|| {
            let image = self.store.snapshot()?;
            let mut file = Vec::with_capacity(image.len() + 1024);
            let age_to = match &encryption {
                BackupEncryption::Recipients => AgeTo::Recipients(&info.recipients),
                BackupEncryption::Passphrase {
                    passphrase,
                    scrypt_log_n,
                } => AgeTo::Passphrase {
                    passphrase,
                    log_n: *scrypt_log_n,
                },
            };
            crypto::age_encrypt(age_to, &image, &mut file)?;
            match target {
                BackupTarget::File { path, overwrite } => {
                    private_file::write(path, &file, overwrite).map_err(file_error)?
                }
                BackupTarget::Writer(out) => out
                    .write_all(&file)
                    .and_then(|_| out.flush())
                    .map_err(|e| VaultError::Io(format!("cannot write the backup: {e}")))?,
            }
            Ok::<_, VaultError>(file.len() as u64)
        })();
        match written {
            Ok(bytes) => Ok(BackupReport {
                bytes,
                recipients: if is_passphrase {
                    Vec::new()
                } else {
                    info.recipients
                },
                passphrase: is_passphrase,
                head,
                secrets,
                versions,
            }),
            Err(e) => {
                self.record_refusal(Action::Backup, None, &e);
                Err(e)
            }
        }
    }

    /// Restores the vault at `target` from an age-encrypted backup (see the module
    /// doc). Nothing at `target` changes unless the backup proves out and, for a
    /// backup older than the vault, `force` is given.
    pub fn restore(
        target: RestoreTarget<'_>,
        backup: &[u8],
        unlocker: Unlocker,
        options: RestoreOptions,
        actor: Actor,
        clock: Clock,
    ) -> Result<RestoreReport, VaultError> {
        let source = options.source.clone();
        let not_intact = |why: String| {
            VaultError::Integrity(format!(
                "{source} is not an intact vault backup ({why}); nothing was changed"
            ))
        };
        // 1. Decrypt.
        let Unlocker {
            identities,
            passphrase: ask_passphrase,
            identity_hint,
        } = unlocker;
        let needs_passphrase =
            crypto::age_needs_passphrase(backup).map_err(|e| not_intact(e.to_string()))?;
        let (image, passphrase, ask_passphrase) = if needs_passphrase {
            let ask = ask_passphrase.ok_or_else(|| {
                VaultError::Locked(format!(
                    "{source} is encrypted to a passphrase: set SECRET_PASSPHRASE or run on a terminal"
                ))
            })?;
            let passphrase = ask().map_err(VaultError::Locked)?;
            let image = crypto::age_decrypt(backup, AgeKey::Passphrase(&passphrase));
            (image, Some(passphrase), None)
        } else {
            let ids = identities.as_ref().ok_or_else(|| {
                VaultError::Locked(format!("no identity found ({identity_hint})"))
            })?;
            let image = crypto::age_decrypt(backup, AgeKey::Identities(ids));
            (image, None, ask_passphrase)
        };
        let image = image.map_err(|e| match e {
            CryptoError::NoMatchingIdentity => VaultError::Locked(format!(
                "no identity given opens {source}: it is encrypted to other recipients"
            )),
            CryptoError::WrongPassphrase => {
                VaultError::Locked(format!("the passphrase does not open {source}"))
            }
            other => not_intact(other.to_string()),
        })?;
        if !image.starts_with(b"SQLite format 3\0") {
            return Err(not_intact("it decrypts, but not to a vault file".into()));
        }
        // 2. Unlock and prove it, in a private folder beside the vault (a database's:
        //    beside the backup).
        let (vault_path, mut database) = match target {
            RestoreTarget::File(path) => (Some(path), None),
            RestoreTarget::Database(db) => (None, Some(db)),
        };
        let shown = match (&vault_path, &database) {
            (Some(path), _) => path.display().to_string(),
            (None, Some(db)) => db.location.clone(),
            (None, None) => String::new(),
        };
        let folder = match (&vault_path, &database) {
            (Some(path), _) => match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            },
            (None, Some(db)) => db.folder.to_path_buf(),
            (None, None) => PathBuf::from("."),
        };
        private_file::create_private_dir(&folder).map_err(|e| VaultError::Io(e.to_string()))?;
        let scratch = tempfile::Builder::new()
            .prefix(".secret-restore-")
            .tempdir_in(&folder)
            .map_err(|e| {
                VaultError::Io(format!(
                    "cannot create a folder in {}: {e}",
                    folder.display()
                ))
            })?;
        let staged = scratch.path().join("vault.db");
        private_file::write(&staged, &image, false).map_err(|e| VaultError::Io(e.to_string()))?;
        drop(image);
        let unlock_staged = Unlocker {
            identities,
            passphrase: match passphrase {
                Some(p) => Some(Box::new(move || Ok(p)) as PassphraseSource),
                None => ask_passphrase,
            },
            identity_hint,
        };
        let mut staged_vault = Vault::open_with_clock(&staged, unlock_staged, actor, clock.clone())
            .map_err(|e| match e {
                VaultError::Locked(reason) => VaultError::Locked(format!(
                    "{source} decrypts, but its vault key does not unwrap: {reason}"
                )),
                VaultError::Store(StoreError::NewerSchema {
                    found, supported, ..
                }) => VaultError::Usage(format!(
                    "{source} holds a vault of schema version {found}, newer than this \
                             build of secret understands (up to {supported}); restore it with a \
                             newer secret"
                )),
                VaultError::Store(other) => not_intact(other.to_string()),
                VaultError::Integrity(why) => not_intact(why),
                other => other,
            })?;
        let proof = staged_vault.prove().map_err(|e| match e {
            VaultError::Integrity(why) => not_intact(why),
            VaultError::AuditBroken { seq, reason } => not_intact(format!(
                "its audit chain is broken at sequence {seq}: {reason}"
            )),
            other => other,
        })?;
        let backup_head = audit::format_head(proof.head_seq, &proof.head_mac);
        // 3. Compare with the vault it would replace.
        let mut warnings = Vec::new();
        let current = match (&vault_path, &mut database) {
            (Some(path), _) => inspect(path),
            (None, Some(db)) => match db.current.as_mut() {
                Some(store) => inspect_store(store),
                None => Current::Absent,
            },
            (None, None) => Current::Absent,
        };
        let mut replaced_head = None;
        match &current {
            Current::Absent => {}
            Current::Unreadable(why) => {
                if !options.force {
                    return Err(VaultError::Conflict(format!(
                        "the vault at {shown} cannot be read ({why}); pass --force to replace \
                         it with the backup (it is kept aside first)"
                    )));
                }
                warnings.push(format!(
                    "the vault at {shown} could not be read ({why}); it was replaced"
                ));
            }
            Current::Vault {
                vault_id,
                head,
                key_check,
            } => {
                if *vault_id != proof.vault_id {
                    return Err(not_intact(format!(
                        "it is a backup of another vault (id {}), not of the vault at {shown} \
                         (id {}); restore it to another path with --vault",
                        crypto::hex(&proof.vault_id),
                        crypto::hex(vault_id)
                    )));
                }
                if let Some((seq, mac)) = head {
                    replaced_head = Some(audit::format_head(*seq, mac));
                    let contained = staged_vault
                        .store
                        .read(|tx| tx.audit_entry(*seq))?
                        .is_some_and(|e| e.mac == *mac);
                    if !contained {
                        let lost = if *seq > proof.head_seq {
                            format!(
                                "the backup ends at audit entry {} but the vault is at {seq}: \
                                 every change after the backup ({} entries) would be lost",
                                proof.head_seq,
                                seq - proof.head_seq
                            )
                        } else {
                            format!(
                                "the vault's audit head {seq} is not in the backup's chain (they \
                                 went separate ways): changes in the vault that are not in the \
                                 backup would be lost"
                            )
                        };
                        if !options.force {
                            return Err(VaultError::Conflict(format!(
                                "{lost}; pass --force to restore it anyway (the current vault is \
                                 kept aside first)"
                            )));
                        }
                        warnings.push(lost);
                    }
                }
                let staged_check = staged_vault.keys.check.clone();
                if *key_check != staged_check {
                    warnings.push(format!(
                        "the backup's vault key is not the current one (it is from key epoch {}): \
                         restoring puts that key back in force",
                        proof.epoch
                    ));
                }
            }
        }
        // 4. Keep the current vault aside, record the restore in the restored chain, and
        //    replace the vault in one transaction.
        let now = clock.now_ms();
        let kept_aside = match (&vault_path, &database, &current) {
            (_, _, Current::Absent) => None,
            (Some(path), _, Current::Vault { .. }) => {
                let aside = aside_path(path, now);
                let image = Store::open(path)?.snapshot()?;
                private_file::write(&aside, &image, false).map_err(file_error)?;
                Some(aside)
            }
            (Some(path), _, Current::Unreadable(_)) => {
                let aside = aside_path(path, now);
                let raw = std::fs::read(path)
                    .map_err(|e| VaultError::Io(format!("cannot read {}: {e}", path.display())))?;
                private_file::write(&aside, &raw, false).map_err(file_error)?;
                Some(aside)
            }
            // A database's vault is kept as a SQLite vault file of its rows (one
            // snapshot), beside the backup.
            (None, Some(db), _) => match &db.current {
                Some(store) => {
                    let aside = aside_path(&db.folder.join(DATABASE_ASIDE), now);
                    let image = store.snapshot()?;
                    private_file::write(&aside, &image, false).map_err(file_error)?;
                    Some(aside)
                }
                None => None,
            },
            (None, None, _) => None,
        };
        staged_vault.record(
            Action::Restore,
            None,
            json!({
                "from": source,
                "backup_head": backup_head,
                "replaced_head": replaced_head,
                "kept_aside": kept_aside.as_ref().map(|p| p.display().to_string()),
                "forced": options.force,
                "warnings": warnings,
            }),
        )?;
        match (vault_path, database) {
            (Some(vault_path), _) => {
                let created = match current {
                    Current::Vault { .. } => false,
                    Current::Absent => {
                        drop(Store::create(vault_path)?);
                        true
                    }
                    Current::Unreadable(_) => {
                        remove_vault_files(vault_path);
                        drop(Store::create(vault_path)?);
                        true
                    }
                };
                if let Err(e) = staged_vault.store.copy_into(vault_path) {
                    // An empty vault file must not stay where the restored one was to go.
                    if created {
                        remove_vault_files(vault_path);
                    }
                    return Err(e.into());
                }
            }
            (None, Some(db)) => {
                // One transaction: the old rows out, the backup's in, read back.
                let staged = &mut staged_vault.store;
                let mut replace = |dst: &Tx<'_>, clear: bool| {
                    if clear {
                        image::clear_rows(dst)?;
                    }
                    let copied = staged.read(|src| image::copy_rows(src, dst, &mut |_| {}))?;
                    if image::digest_rows(dst)? != copied {
                        return Err(VaultError::Integrity(format!(
                            "the rows read back from {shown} differ from the backup's; the \
                             restore was rolled back"
                        )));
                    }
                    Ok::<_, VaultError>(())
                };
                match db.current {
                    Some(mut store) => store.write(|dst| replace(dst, true))?,
                    None => (db.blank)()?.write_blank(|dst| replace(dst, false))?,
                }
            }
            (None, None) => {}
        }
        drop(staged_vault);
        drop(scratch);
        Ok(RestoreReport {
            backup_head,
            kept_aside,
            warnings,
            secrets: proof.secrets,
            versions: proof.versions,
            epoch: proof.epoch,
        })
    }
}

/// The name (before `.before-restore-<time>`) of the file a restore into a database
/// keeps the replaced vault in, beside the backup.
const DATABASE_ASIDE: &str = "database-vault.db";

/// Where a restore puts the vault.
pub enum RestoreTarget<'a> {
    /// A SQLite vault file, made if absent.
    File(&'a Path),
    /// A vault in a database (PostgreSQL).
    Database(DatabaseTarget<'a>),
}

/// A database a restore replaces the rows of, in one transaction.
pub struct DatabaseTarget<'a> {
    /// The vault there (`None`: the location holds nothing yet).
    pub current: Option<Store>,
    /// Connects to an empty location for a copy into it (when `current` is `None`).
    pub blank: Box<dyn FnOnce() -> Result<Store, VaultError> + 'a>,
    /// Where the backup is staged and the replaced vault kept (the backup's folder).
    pub folder: &'a Path,
    /// For messages: the URL without its password.
    pub location: String,
}

/// The vault a restore would replace, read without its key.
enum Current {
    Absent,
    Unreadable(String),
    Vault {
        vault_id: Vec<u8>,
        head: Option<(u64, Vec<u8>)>,
        key_check: Vec<u8>,
    },
}

fn inspect_store(store: &mut Store) -> Current {
    match store.read(|tx| Ok::<_, StoreError>((tx.vault_row()?, tx.audit_head()?))) {
        Ok((Some(row), head)) => Current::Vault {
            vault_id: row.vault_id,
            head: head.map(|h| (h.seq, h.mac)),
            key_check: row.key_check,
        },
        Ok((None, _)) => Current::Unreadable("it was never initialised".into()),
        Err(e) => Current::Unreadable(e.to_string()),
    }
}

fn inspect(vault_path: &Path) -> Current {
    if !vault_path.exists() {
        return Current::Absent;
    }
    let read = Store::open(vault_path).and_then(|mut store| {
        store.read(|tx| Ok::<_, StoreError>((tx.vault_row()?, tx.audit_head()?)))
    });
    match read {
        Ok((Some(row), head)) => Current::Vault {
            vault_id: row.vault_id,
            head: head.map(|h| (h.seq, h.mac)),
            key_check: row.key_check,
        },
        Ok((None, _)) => Current::Unreadable("it was never initialised".into()),
        Err(e) => Current::Unreadable(e.to_string()),
    }
}

fn recipients_in(tx: &Tx<'_>) -> Result<Vec<String>, StoreError> {
    Ok(tx
        .keyring()?
        .into_iter()
        .find(|r| r.kind == KeyringKind::Recipients)
        .map(|r| r.recipients)
        .unwrap_or_default())
}

fn has_passphrase_in(tx: &Tx<'_>) -> Result<bool, StoreError> {
    Ok(tx
        .keyring()?
        .iter()
        .any(|r| r.kind == KeyringKind::Passphrase))
}

fn keyring_info_in(tx: &Tx<'_>) -> Result<KeyringInfo, StoreError> {
    Ok(KeyringInfo {
        recipients: recipients_in(tx)?,
        passphrase: has_passphrase_in(tx)?,
        epoch: epoch_after(&tx.retired_keys()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{generate_identity, Identities};
    use crate::model::{Label, SecretValue, VersionSelector};
    use crate::vault::{InitOptions, SetOptions};
    use zeroize::Zeroizing;

    fn actor() -> Actor {
        Actor {
            name: "user:test".into(),
            pid: Some(1),
            request_id: "r".into(),
        }
    }

    fn value(text: &str) -> Result<SecretValue, crate::model::InputError> {
        SecretValue::from_bytes(Zeroizing::new(text.as_bytes().to_vec()), false)
    }

    fn unlocker(identity: &crate::crypto::GeneratedIdentity) -> Unlocker {
        Unlocker {
            identities: Some(Identities::parse(&identity.file_text).unwrap()),
            passphrase: None,
            identity_hint: String::new(),
        }
    }

    fn read(vault: &mut Vault, name: &str) -> Result<String, VaultError> {
        vault
            .get(name, VersionSelector::Label(Label::Current))
            .map(|r| r.value.expose().to_string())
    }

    #[test]
    fn rekey_keeps_every_value_and_the_chain_and_locks_out_a_stale_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.db");
        let identity = generate_identity("x");
        let options = InitOptions {
            recipients: vec![identity.recipient.clone()],
            passphrase: None,
            scrypt_log_n: None,
        };
        let mut vault = Vault::init(&path, options, actor()).unwrap();
        for i in 0..1200 {
            let name = format!("S{}", i % 7);
            vault
                .set(&name, value(&format!("v{i}")), &SetOptions::default())
                .unwrap();
        }
        let mut stale = Vault::open(&path, unlocker(&identity), actor()).unwrap();
        let mut seen = vec![];
        let report = vault
            .rekey(
                RekeyOptions {
                    passphrase: None,
                    scrypt_log_n: None,
                },
                &mut |done, total| seen.push((done, total)),
            )
            .unwrap();
        assert_eq!((report.epoch, report.versions), (2, 1200));
        assert_eq!(seen.first(), Some(&(0, 1200)));
        assert_eq!(seen.last(), Some(&(1200, 1200)));
        assert_eq!(read(&mut vault, "S3").unwrap(), "v1193");
        // A process that unlocked before the rekey can neither read nor write now.
        for result in [
            read(&mut stale, "S3").map(drop),
            stale
                .set("S3", value("from-the-past"), &SetOptions::default())
                .map(drop),
        ] {
            let err = result.unwrap_err();
            assert!(matches!(err, VaultError::Locked(_)), "{err}");
            assert!(err.to_string().contains("key was replaced"), "{err}");
        }
        drop(stale);
        // A fresh unlock gets the new key; the chain verifies across both epochs.
        let mut reopened = Vault::open(&path, unlocker(&identity), actor()).unwrap();
        assert_eq!(read(&mut reopened, "S0").unwrap(), "v1197");
        assert!(reopened.audit_verify(None).unwrap().verified > 1200);
        assert_eq!(reopened.keyring_info().unwrap().epoch, 2);
        // And again: three epochs, the first key re-sealed under the third.
        reopened
            .rekey(
                RekeyOptions {
                    passphrase: None,
                    scrypt_log_n: None,
                },
                &mut |_, _| {},
            )
            .unwrap();
        let proof = reopened.prove().unwrap();
        assert_eq!((proof.epoch, proof.versions), (3, 1200));
        reopened.audit_verify(None).unwrap();
    }

    #[test]
    fn the_last_way_to_unlock_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.db");
        let identity = generate_identity("x");
        let other = generate_identity("y");
        let options = InitOptions {
            recipients: vec![identity.recipient.clone()],
            passphrase: None,
            scrypt_log_n: None,
        };
        let mut vault = Vault::init(&path, options, actor()).unwrap();
        assert!(vault.add_recipient(&other.recipient).unwrap());
        assert!(!vault.add_recipient(&other.recipient).unwrap());
        vault.remove_recipient(&identity.recipient).unwrap();
        let err = vault.remove_recipient(&other.recipient).unwrap_err();
        assert!(matches!(err, VaultError::Conflict(_)), "{err}");
        assert!(matches!(
            vault.remove_passphrase().unwrap_err(),
            VaultError::NotFound(_)
        ));
        let pass = SecretString::from("pass".to_string());
        vault.add_passphrase(&pass, Some(4)).unwrap();
        vault.remove_recipient(&other.recipient).unwrap();
        assert!(matches!(
            vault.remove_passphrase().unwrap_err(),
            VaultError::Conflict(_)
        ));
        assert_eq!(
            vault.keyring_info().unwrap(),
            KeyringInfo {
                recipients: vec![],
                passphrase: true,
                epoch: 1
            }
        );
        let secret_key = Identities::parse(&identity.file_text).unwrap();
        drop(secret_key);
        let pasted = identity.file_text.clone();
        let line = secrecy::ExposeSecret::expose_secret(&pasted)
            .lines()
            .last()
            .unwrap()
            .to_string();
        let err = vault.add_recipient(&line).unwrap_err();
        assert!(!err.to_string().contains(&line[15..]), "{err}");
    }
}
