//! The vault: the one facade the CLI (and later the API and the scheduler) calls.
//!
//! It unlocks the store with the caller's identity or passphrase, applies the
//! versioning rules (labels, compare-and-set, soft delete, destroy), and makes every
//! operation append exactly one audit entry: in the same transaction as the change
//! for writes, and committed before the value is returned for reads. When the entry
//! cannot be written the operation fails (fail closed). Refusals are logged too, with
//! their error code, in a transaction of their own.
//!
//! Adapters never touch SQL or crypto: they call this.

use std::path::Path;

use secrecy::SecretString;
use serde_json::json;

use crate::action::Action;
use crate::audit::{self, Actor, AuditFilter, Entry, ExpectedHead, Head, UnkeyedEvent};
use crate::clock::Clock;
use crate::crypto::{
    self, CryptoError, Identities, KeyCheck, MacKey, ValueSlot, VaultKey, VAULT_ID_LEN,
};
use crate::error::VaultError;
use crate::model::{
    InputError, Label, Revealed, SecretMeta, SecretName, SecretValue, VersionMeta, VersionNumber,
    VersionSelector,
};
use crate::rotation_state::{Step, StepStatus};
use crate::store::{Durability, KeyringKind, KeyringRow, Store, StoreError, Tx, VaultRow};
pub use crate::store::{RotationRow, SecretRow, StepRow, TokenRow};

mod api;
mod bulk;
mod copy;
mod keys;
mod metadata;
#[cfg(test)]
mod properties;
pub use api::{ApiCall, CallError, Op, Reply};
pub use bulk::Imported;
pub use copy::{CopyReport, CopyTarget};
pub use keys::{
    BackupEncryption, BackupReport, BackupTarget, DatabaseTarget, KeyringInfo, Proof, RekeyOptions,
    RekeyReport, RestoreOptions, RestoreReport, RestoreTarget,
};
use metadata::{checked_secret, reseal_census, reseal_secret};
mod drift;
pub use drift::{SecretPrints, VersionPrint};

/// A lazily asked passphrase: called only when the vault has a passphrase copy of its
/// key and no identity opened it.
pub type PassphraseSource = Box<dyn FnOnce() -> Result<SecretString, String>>;

/// What the caller brings to open a vault.
pub struct Unlocker {
    pub identities: Option<Identities>,
    pub passphrase: Option<PassphraseSource>,
    /// Where identities were looked for, for the "no identity found" message.
    pub identity_hint: String,
}

/// How `secret init` wraps the new vault key.
pub struct InitOptions {
    /// X25519 recipients (`age1...`), including that of any identity made for the vault.
    pub recipients: Vec<String>,
    pub passphrase: Option<SecretString>,
    /// scrypt work factor (log2 N); `None` lets age calibrate (about one second).
    pub scrypt_log_n: Option<u8>,
}

/// Options of `secret set`.
#[derive(Debug, Default)]
pub struct SetOptions {
    /// Compare-and-set: the current version must be this (0 = the secret must not exist).
    pub if_version: Option<u64>,
    pub description: Option<String>,
    pub generated: bool,
}

/// Result of `audit verify`.
#[derive(Debug)]
pub struct VerifyReport {
    /// Entries checked, not counting the one this check appended.
    pub verified: u64,
    /// Secrets and tokens whose metadata MAC was checked.
    pub secrets: u64,
    pub tokens: u64,
    /// The head after this check's own entry: `SEQ:MAC`.
    pub head: String,
}

struct Keys {
    vault_id: Vec<u8>,
    /// The key check of `key`: the vault row holds it while this key is in force.
    check: Vec<u8>,
    /// Seals and opens values.
    key: VaultKey,
    audit: MacKey,
    fingerprint: audit::Fingerprinter,
    /// Hashes API tokens.
    token: MacKey,
    /// MACs the metadata that decides what a read returns (labels, versions, tokens).
    meta: MacKey,
}

/// What an operation hands back to be recorded with it.
struct Done<T> {
    value: T,
    version: Option<u64>,
    details: serde_json::Value,
}

impl<T> Done<T> {
    fn new(value: T, version: Option<u64>, details: serde_json::Value) -> Self {
        Self {
            value,
            version,
            details,
        }
    }
}

pub struct Vault {
    store: Store,
    keys: Keys,
    actor: Actor,
    last_head: Option<Head>,
    lease: Option<Lease>,
    clock: Clock,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Vault({:?}, [keys redacted])", self.store)
    }
}

fn audit_write_error(e: StoreError) -> VaultError {
    VaultError::AuditWrite(e.to_string())
}

/// The sealed head the next entry follows, checked against the log. A vault has one
/// from its `init` entry on, so a missing head, a head whose seal fails, or a log that
/// no longer starts at 1 or ends at the head means the log was erased, truncated or
/// rewritten without the key: nothing is appended (a vault never starts a new chain
/// on its own) and the operation fails with exit 7. Costs one head read, one HMAC and
/// three index lookups.
fn chain_head(tx: &Tx<'_>, key: &MacKey) -> Result<Head, VaultError> {
    let broken = |seq: u64, reason: String| VaultError::AuditBroken {
        seq,
        reason: format!(
            "{reason}; nothing was done: restore the vault from a backup, or look at it with \
             `sqlite3` (`secret audit verify` names the first bad entry)"
        ),
    };
    let head = tx.audit_head().map_err(audit_write_error)?;
    let crate::store::AuditBounds {
        first,
        last,
        mac_at: head_entry_mac,
    } = tx
        .audit_bounds(head.as_ref().map_or(0, |h| h.seq))
        .map_err(audit_write_error)?;
    let Some(head) = head else {
        return Err(broken(
            last.map_or(1, |l| l + 1),
            "the audit log's sealed head is missing: the log was erased or its head deleted \
             without the vault key"
                .into(),
        ));
    };
    if !audit::head_is_sealed(key, &head) {
        return Err(broken(
            head.seq,
            "the audit log's sealed head was altered without the vault key".into(),
        ));
    }
    if first != Some(1) {
        return Err(broken(
            1,
            match first {
                None => "every entry of the audit log was deleted".into(),
                Some(f) => format!("entries 1 to {} of the audit log were deleted", f - 1),
            },
        ));
    }
    match last {
        Some(l) if l > head.seq => {
            return Err(broken(
                head.seq + 1,
                "entries after the sealed head were added without the vault key".into(),
            ))
        }
        Some(l) if l < head.seq => {
            return Err(broken(
                l + 1,
                format!(
                    "the log ends at {l} but its sealed head is at {} (newest entries deleted)",
                    head.seq
                ),
            ))
        }
        _ => {}
    }
    if head_entry_mac.as_deref() != Some(head.mac.as_slice()) {
        return Err(broken(
            head.seq,
            "the entry at the sealed head was replaced or renumbered".into(),
        ));
    }
    Ok(head)
}

/// Appends one entry in `tx` after the checked head and returns the new head. Refuses
/// when the vault key in force is no longer this process's (see [`Keys::ensure_in_force`]).
#[allow(clippy::too_many_arguments)]
fn append(
    tx: &Tx<'_>,
    keys: &Keys,
    actor: &Actor,
    at_ms: i64,
    action: &str,
    secret: Option<&str>,
    version: Option<u64>,
    outcome: &str,
    details: &serde_json::Value,
) -> Result<Head, VaultError> {
    keys.ensure_in_force(tx)?;
    let head = chain_head(tx, &keys.audit)?;
    append_after(
        tx,
        &keys.audit,
        Some(&head),
        actor,
        at_ms,
        action,
        secret,
        version,
        outcome,
        details,
    )
}

/// Appends one entry after `head` (`None` only for a new vault's first entry).
#[allow(clippy::too_many_arguments)]
fn append_after(
    tx: &Tx<'_>,
    key: &MacKey,
    head: Option<&Head>,
    actor: &Actor,
    at_ms: i64,
    action: &str,
    secret: Option<&str>,
    version: Option<u64>,
    outcome: &str,
    details: &serde_json::Value,
) -> Result<Head, VaultError> {
    let mut entry = Entry {
        seq: 0,
        at_ms,
        actor: actor.name.clone(),
        pid: actor.pid,
        action: action.to_string(),
        secret: secret.map(str::to_string),
        version,
        outcome: outcome.to_string(),
        request_id: actor.request_id.clone(),
        details: details.to_string(),
        mac: Vec::new(),
    };
    let new_head = audit::link(key, head, &mut entry);
    tx.append_audit(&entry, &new_head)
        .map_err(audit_write_error)?;
    Ok(new_head)
}

/// Inside a rotation step's transaction: the lease on the secret must still be ours.
fn check_lease(
    tx: &Tx<'_>,
    lease: Option<&Lease>,
    secret: &str,
    now: i64,
) -> Result<(), VaultError> {
    let Some(lease) = lease else { return Ok(()) };
    if let Some((fence, epoch)) = &lease.fence {
        let leads = matches!(tx.lock(fence)?, Some((holder, _)) if holder == lease.holder)
            && tx.lock_epoch(fence)? == Some(*epoch);
        if !leads {
            return Err(VaultError::Conflict(format!(
                "this instance no longer holds the {fence} lease at epoch {epoch} (another \
                 instance took it over): it changes nothing more"
            )));
        }
    }
    let name = format!("rotation:{secret}");
    match tx.lock(&name)? {
        Some((holder, _)) if holder == lease.holder => {
            tx.put_lock(&name, &lease.holder, now + lease.ttl_ms)?;
            Ok(())
        }
        _ => Err(VaultError::Conflict(format!(
            "this process lost the rotation lock of {secret} to another; it stops here"
        ))),
    }
}

/// Reads one version's value inside a transaction.
fn read_in(
    tx: &Tx<'_>,
    keys: &Keys,
    name: &SecretName,
    selector: VersionSelector,
) -> Result<Revealed, VaultError> {
    let row = live_secret(tx, keys, name)?;
    let number = match selector {
        VersionSelector::Label(label) => {
            let v = match label {
                Label::Current => row.current_version,
                Label::Pending => row.pending_version,
                Label::Previous => row.previous_version,
            };
            v.and_then(VersionNumber::new).ok_or_else(|| {
                VaultError::NotFound(format!("{name} has no {} version", label.as_str()))
            })?
        }
        VersionSelector::Number(n) => n,
    };
    let version = tx.version(name.as_str(), number)?.ok_or_else(|| {
        VaultError::NotFound(format!(
            "{name} has no version {number} (latest is {}); `secret history {name}` lists them",
            row.latest_version
        ))
    })?;
    let (Some(nonce), Some(ciphertext)) = (&version.nonce, &version.ciphertext) else {
        return Err(VaultError::NotFound(format!(
            "version {number} of {name} was destroyed"
        )));
    };
    let integrity = || {
        VaultError::Integrity(format!(
            "version {number} of {name} does not decrypt: its stored ciphertext was altered or \
             moved from another row; restore the vault from a backup"
        ))
    };
    let slot = ValueSlot {
        vault_id: &keys.vault_id,
        name: name.as_str(),
        version: number.get(),
    };
    let plaintext = keys
        .key
        .open(&slot, nonce, ciphertext)
        .map_err(|_| integrity())?;
    let value = SecretValue::from_bytes(plaintext, true).map_err(|_| integrity())?;
    Ok(Revealed {
        name: name.clone(),
        version: number,
        created_at_ms: version.created_at_ms,
        value,
    })
}

/// Writes a new current version inside a transaction; returns it and its audit details.
fn write_in(
    tx: &Tx<'_>,
    now: i64,
    keys: &Keys,
    name: &SecretName,
    value: &SecretValue,
    options: &SetOptions,
) -> Result<(VersionNumber, serde_json::Value), VaultError> {
    let existing = checked_secret(tx, keys, name.as_str())?;
    let is_new = existing.is_none();
    let current = existing
        .as_ref()
        .and_then(|r| r.current_version)
        .unwrap_or(0);
    if let Some(row) = &existing {
        if row.deleted_at_ms.is_some() {
            return Err(VaultError::Conflict(format!(
                "{name} is deleted; `secret undelete {name}` it before writing a new version"
            )));
        }
    }
    if let Some(id) = tx.rotation_in_progress(name.as_str())? {
        return Err(VaultError::Conflict(format!(
            "rotation {id} of {name} is in progress; let it finish (`secret rotate --due`) \
                 before setting a new value"
        )));
    }
    if let Some(expected) = options.if_version {
        if expected != current {
            let state = if existing.is_none() {
                "does not exist".to_string()
            } else {
                format!("is at version {current}")
            };
            return Err(VaultError::Conflict(format!(
                "version check failed: {name} {state}, not {expected}; re-read it and retry"
            )));
        }
    }
    let mut row = existing.unwrap_or_else(|| SecretRow {
        name: name.as_str().to_string(),
        description: None,
        created_at_ms: now,
        updated_at_ms: now,
        deleted_at_ms: None,
        latest_version: 0,
        current_version: None,
        pending_version: None,
        previous_version: None,
    });
    let version = VersionNumber::new(row.latest_version + 1)
        .ok_or_else(|| VaultError::Conflict(format!("{name} has run out of version numbers")))?;
    let slot = ValueSlot {
        vault_id: &keys.vault_id,
        name: name.as_str(),
        version: version.get(),
    };
    let sealed = keys.key.seal(&slot, value.expose().as_bytes())?;
    row.latest_version = version.get();
    row.previous_version = row.current_version;
    row.current_version = Some(version.get());
    row.updated_at_ms = now;
    if options.description.is_some() {
        row.description = options.description.clone();
    }
    tx.save_secret(&row)?;
    tx.insert_version(
        name.as_str(),
        version,
        now,
        &sealed.nonce,
        &sealed.ciphertext,
        "{}",
    )?;
    reseal_secret(tx, keys, name.as_str())?;
    if is_new {
        reseal_census(tx, keys)?;
    }
    let mut details = json!({
        "fingerprint": keys.fingerprint.of(value.expose().as_bytes()),
        "generated": options.generated,
    });
    if let Some(expected) = options.if_version {
        details["if_version"] = json!(expected);
    }
    Ok((version, details))
}

/// A secret and its versions with their labels, for `history` and the API's versions
/// route. No values.
fn history_in(
    tx: &Tx<'_>,
    keys: &Keys,
    name: &SecretName,
) -> Result<(SecretRow, Vec<VersionMeta>), VaultError> {
    let row = checked_secret(tx, keys, name.as_str())?.ok_or_else(|| not_found(name))?;
    let versions = tx
        .versions_of(name.as_str())?
        .into_iter()
        .map(|v| VersionMeta {
            version: v.version,
            created_at_ms: v.created_at_ms,
            destroyed_at_ms: v.destroyed_at_ms,
            labels: label_of(&row, v.version),
        })
        .collect();
    Ok((row, versions))
}

/// Soft-deletes a secret inside a transaction: whether that changed anything, and its
/// current version (for the audit entry).
fn delete_in(
    tx: &Tx<'_>,
    keys: &Keys,
    name: &SecretName,
    now: i64,
) -> Result<(bool, Option<u64>), VaultError> {
    let mut row = checked_secret(tx, keys, name.as_str())?.ok_or_else(|| not_found(name))?;
    let changed = row.deleted_at_ms.is_none();
    if changed {
        row.deleted_at_ms = Some(now);
        row.updated_at_ms = now;
        tx.save_secret(&row)?;
        reseal_secret(tx, keys, name.as_str())?;
    }
    Ok((changed, row.current_version))
}

fn not_found(name: &SecretName) -> VaultError {
    VaultError::NotFound(format!(
        "no secret named {name}; `secret list` shows what exists"
    ))
}

fn live_secret(tx: &Tx<'_>, keys: &Keys, name: &SecretName) -> Result<SecretRow, VaultError> {
    let row = checked_secret(tx, keys, name.as_str())?.ok_or_else(|| not_found(name))?;
    if row.deleted_at_ms.is_some() {
        return Err(VaultError::NotFound(format!(
            "{name} is deleted; `secret undelete {name}` restores it"
        )));
    }
    Ok(row)
}

fn label_of(row: &SecretRow, version: u64) -> Vec<&'static str> {
    let mut labels = Vec::new();
    for (label, v) in [
        (Label::Current, row.current_version),
        (Label::Pending, row.pending_version),
        (Label::Previous, row.previous_version),
    ] {
        if v == Some(version) {
            labels.push(label.as_str());
        }
    }
    labels
}

impl Vault {
    /// Creates a vault at `path` whose key is wrapped to `options`, on the system clock.
    pub fn init(path: &Path, options: InitOptions, actor: Actor) -> Result<Self, VaultError> {
        Self::init_with_clock(path, options, actor, Clock::System)
    }

    /// [`Vault::init`], with every time it records read from `clock`.
    pub fn init_with_clock(
        path: &Path,
        options: InitOptions,
        actor: Actor,
        clock: Clock,
    ) -> Result<Self, VaultError> {
        if path.exists() {
            return Err(VaultError::VaultExists(path.display().to_string()));
        }
        Self::init_with(
            || Store::create(path).map_err(VaultError::from),
            || remove_vault_files(path),
            options,
            actor,
            clock,
        )
    }

    /// Creates a vault in the store `create` makes (another backend's: a PostgreSQL
    /// database). `create` is called once the key is made and wrapped; it refuses a
    /// location that holds a vault already or is not a vault's.
    pub fn init_in(
        create: impl FnOnce() -> Result<Store, VaultError>,
        options: InitOptions,
        actor: Actor,
        clock: Clock,
    ) -> Result<Self, VaultError> {
        Self::init_with(create, || {}, options, actor, clock)
    }

    fn init_with(
        create: impl FnOnce() -> Result<Store, VaultError>,
        clean_up: impl FnOnce(),
        options: InitOptions,
        actor: Actor,
        clock: Clock,
    ) -> Result<Self, VaultError> {
        let recipients = options
            .recipients
            .iter()
            .map(|r| crypto::canonical_recipient(r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| VaultError::Usage(e.to_string()))?;
        if recipients.is_empty() && options.passphrase.is_none() {
            return Err(VaultError::Usage(
                "a vault needs at least one recipient or a passphrase".into(),
            ));
        }
        let key = VaultKey::generate()?;
        let vault_id = crypto::random_array::<VAULT_ID_LEN>()?.to_vec();
        let mut keyring = Vec::new();
        if !recipients.is_empty() {
            keyring.push(KeyringRow {
                kind: KeyringKind::Recipients,
                wrapped_key: key.wrap_to_recipients(&recipients)?,
                recipients: recipients.clone(),
            });
        }
        if let Some(passphrase) = &options.passphrase {
            keyring.push(KeyringRow {
                kind: KeyringKind::Passphrase,
                wrapped_key: key.wrap_to_passphrase(passphrase, options.scrypt_log_n)?,
                recipients: Vec::new(),
            });
        }
        let keys = Keys::derive(vault_id, key)?;
        let mut store = create()?;
        let now = clock.now_ms();
        let details = json!({
            "recipients": recipients,
            "passphrase": options.passphrase.is_some(),
            "schema": store.schema_version(),
        });
        let location = store.location();
        let result = store.write(|tx| {
            // Two inits racing on one database: the second sees the first's vault.
            if tx.vault_row()?.is_some() {
                return Err(VaultError::VaultExists(location.clone()));
            }
            tx.insert_vault_row(&VaultRow {
                vault_id: keys.vault_id.clone(),
                key_check: keys.key.key_check(&keys.vault_id)?.to_vec(),
                created_at_ms: now,
            })?;
            for row in &keyring {
                tx.put_keyring(row, now)?;
            }
            reseal_census(tx, &keys)?;
            // The one entry that starts a chain: every later one follows a checked head.
            append_after(
                tx,
                &keys.audit,
                None,
                &actor,
                now,
                Action::Init.as_str(),
                None,
                None,
                "ok",
                &details,
            )
        });
        match result {
            Ok(head) => Ok(Self {
                store,
                keys,
                actor,
                last_head: Some(head),
                lease: None,
                clock,
            }),
            Err(e) => {
                drop(store);
                if !matches!(e, VaultError::VaultExists(_)) {
                    clean_up();
                }
                Err(e)
            }
        }
    }

    /// Opens and unlocks the vault at `path`. A failed unlock is recorded (outside the
    /// chain, since there is no key) and joins the chain at the next successful unlock.
    pub fn open(path: &Path, unlocker: Unlocker, actor: Actor) -> Result<Self, VaultError> {
        Self::open_with_clock(path, unlocker, actor, Clock::System)
    }

    /// [`Vault::open`], with every time it records read from `clock`.
    pub fn open_with_clock(
        path: &Path,
        unlocker: Unlocker,
        actor: Actor,
        clock: Clock,
    ) -> Result<Self, VaultError> {
        if !path.exists() {
            return Err(VaultError::NoVault(path.display().to_string()));
        }
        Self::open_in(Store::open(path)?, unlocker, actor, clock)
    }

    /// Unlocks the vault in `store` (of either backend), opened by the caller.
    pub fn open_in(
        mut store: Store,
        unlocker: Unlocker,
        actor: Actor,
        clock: Clock,
    ) -> Result<Self, VaultError> {
        let (vault_row, keyring, has_unkeyed) = store
            .read(|tx| Ok::<_, StoreError>((tx.vault_row()?, tx.keyring()?, tx.has_unkeyed()?)))?;
        let vault_row = vault_row.ok_or_else(|| StoreError::NotAVault {
            location: store.location(),
            reason: "it was never initialised; run `secret init`".into(),
        })?;
        let key = match unlock(&keyring, unlocker) {
            Ok(key) => key,
            Err(reason) => {
                record_unkeyed(
                    &mut store,
                    &actor,
                    &clock,
                    "locked",
                    json!({ "reason": reason }),
                );
                return Err(VaultError::Locked(reason));
            }
        };
        let check = key.check(&vault_row.vault_id, &vault_row.key_check)?;
        if check == KeyCheck::Mismatch {
            record_unkeyed(
                &mut store,
                &actor,
                &clock,
                "integrity",
                json!({ "reason": "key check failed" }),
            );
            return Err(VaultError::Integrity(
                "the unwrapped vault key does not belong to this vault (its keyring was replaced); \
                 restore the vault from a backup"
                    .into(),
            ));
        }
        let keys = Keys::derive(vault_row.vault_id, key)?;
        let mut vault = Self {
            store,
            keys,
            actor,
            last_head: None,
            lease: None,
            clock,
        };
        if check == KeyCheck::Legacy {
            vault.seal_metadata()?;
        }
        if has_unkeyed {
            vault.fold_unkeyed()?;
        }
        Ok(vault)
    }

    /// Gives a vault made before metadata MACs its MACs, once, with its key, and
    /// records that in the key check (which only the key can change back) and in the
    /// audit log, in one transaction.
    fn seal_metadata(&mut self) -> Result<(), VaultError> {
        let keys = &self.keys;
        let actor = &self.actor;
        let at = self.clock.now_ms();
        let head = self.store.write(|tx| {
            let row = tx.vault_row()?.ok_or_else(|| {
                VaultError::Integrity("the vault's identity row disappeared".into())
            })?;
            // Another process may have sealed it meanwhile.
            if keys.key.check(&keys.vault_id, &row.key_check)? != KeyCheck::Legacy {
                return Ok(None);
            }
            let (secrets, tokens) = metadata::seal_everything(tx, keys)?;
            tx.set_key_check(&keys.key.key_check(&keys.vault_id)?)?;
            append(
                tx,
                keys,
                actor,
                at,
                Action::SealMetadata.as_str(),
                None,
                None,
                "ok",
                &json!({ "secrets": secrets, "tokens": tokens }),
            )
            .map(Some)
        })?;
        if head.is_some() {
            self.last_head = head;
        }
        Ok(())
    }

    /// Moves events recorded without the key (failed unlocks) into the chain.
    fn fold_unkeyed(&mut self) -> Result<(), VaultError> {
        let keys = &self.keys;
        let head = self.store.write(|tx| {
            let mut head = None;
            for event in tx.take_unkeyed()? {
                let actor = Actor {
                    name: event.actor,
                    pid: event.pid,
                    request_id: event.request_id,
                };
                let mut details: serde_json::Value =
                    serde_json::from_str(&event.details).unwrap_or_else(|_| json!({}));
                if let Some(map) = details.as_object_mut() {
                    map.insert("recorded_without_key".into(), json!(true));
                }
                head = Some(append(
                    tx,
                    keys,
                    &actor,
                    event.at_ms,
                    &event.action,
                    None,
                    None,
                    &event.outcome,
                    &details,
                )?);
            }
            Ok::<_, VaultError>(head)
        })?;
        if head.is_some() {
            self.last_head = head;
        }
        Ok(())
    }

    /// Runs `op` in one write transaction with its audit entry; on failure, logs the
    /// refusal with its error code in a transaction of its own.
    fn audited<T>(
        &mut self,
        action: Action,
        secret: Option<&str>,
        op: impl FnOnce(&Tx<'_>, &Keys, i64) -> Result<Done<T>, VaultError>,
    ) -> Result<T, VaultError> {
        let keys = &self.keys;
        let actor = &self.actor;
        let clock = &self.clock;
        let result = self.store.write_with(action.durability(), |tx| {
            // Before the operation, so a stale key is reported as such, not as a
            // ciphertext that does not open.
            keys.ensure_in_force(tx)?;
            // Read under the write lock: entry times never go backwards against `seq`.
            let at = clock.now_ms();
            let done = op(tx, keys, at)?;
            let head = append(
                tx,
                keys,
                actor,
                at,
                action.as_str(),
                secret,
                done.version,
                "ok",
                &done.details,
            )?;
            Ok::<_, VaultError>((done.value, head))
        });
        match result {
            Ok((value, head)) => {
                self.last_head = Some(head);
                Ok(value)
            }
            Err(err) => {
                self.record_refusal(action, secret, &err);
                Err(err)
            }
        }
    }

    /// Like `audited`, for operations on one secret: validates its name first.
    fn named<T>(
        &mut self,
        action: Action,
        raw_name: &str,
        op: impl FnOnce(&Tx<'_>, &Keys, &SecretName, i64) -> Result<Done<T>, VaultError>,
    ) -> Result<T, VaultError> {
        let name = match SecretName::new(raw_name) {
            Ok(name) => name,
            Err(e) => {
                // The invalid name itself is not logged: it may be a mistyped value.
                let err = VaultError::from(e);
                self.record_refusal(action, None, &err);
                return Err(err);
            }
        };
        self.audited(action, Some(name.as_str()), |tx, keys, at| {
            op(tx, keys, &name, at)
        })
    }

    /// Best effort: the operation has already failed, and that error is what the
    /// caller reports.
    fn record_refusal(&mut self, action: Action, secret: Option<&str>, err: &VaultError) {
        let keys = &self.keys;
        let actor = &self.actor;
        let clock = &self.clock;
        let details = json!({ "error": err.to_string() });
        // A refusal changed nothing: its entry needs the same durability as a read's.
        let result = self.store.write_with(Durability::Committed, |tx| {
            let at = clock.now_ms();
            append(
                tx,
                keys,
                actor,
                at,
                action.as_str(),
                secret,
                None,
                err.code(),
                &details,
            )
        });
        if let Ok(head) = result {
            self.last_head = Some(head);
        }
    }

    /// Reads a value. Its audit entry is committed before the value is returned.
    pub fn get(
        &mut self,
        raw_name: &str,
        selector: VersionSelector,
    ) -> Result<Revealed, VaultError> {
        self.read_value(raw_name, selector, None)
    }

    fn read_value(
        &mut self,
        raw_name: &str,
        selector: VersionSelector,
        purpose: Option<&str>,
    ) -> Result<Revealed, VaultError> {
        self.named(Action::Get, raw_name, |tx, keys, name, _now| {
            let revealed = read_in(tx, keys, name, selector)?;
            let selector_text = match selector {
                VersionSelector::Label(l) => l.as_str(),
                VersionSelector::Number(_) => "version",
            };
            let version = revealed.version.get();
            Ok(Done::new(
                revealed,
                Some(version),
                match purpose {
                    Some(p) => json!({ "selector": selector_text, "purpose": p }),
                    None => json!({ "selector": selector_text }),
                },
            ))
        })
    }

    /// Writes a new version and makes it current (the old current becomes previous).
    /// `value` is the already-validated input; an invalid one is refused and logged.
    pub fn set(
        &mut self,
        raw_name: &str,
        value: Result<SecretValue, InputError>,
        options: &SetOptions,
    ) -> Result<VersionNumber, VaultError> {
        self.named(Action::Set, raw_name, |tx, keys, name, now| {
            let value = value?;
            let (version, details) = write_in(tx, now, keys, name, &value, options)?;
            Ok(Done::new(version, Some(version.get()), details))
        })
    }

    /// Metadata of every secret (deleted ones too with `include_deleted`). No values.
    pub fn list(&mut self, include_deleted: bool) -> Result<Vec<SecretMeta>, VaultError> {
        self.audited(Action::List, None, |tx, keys, _now| {
            let secrets = tx.list_secrets(include_deleted)?;
            metadata::check_listed(tx, keys, secrets.iter().map(|s| s.name.as_str()))?;
            let count = secrets.len();
            Ok(Done::new(
                secrets,
                None,
                json!({ "count": count, "include_deleted": include_deleted }),
            ))
        })
    }

    /// The versions of one secret and their labels. No values.
    pub fn history(&mut self, raw_name: &str) -> Result<(SecretRow, Vec<VersionMeta>), VaultError> {
        self.named(Action::History, raw_name, |tx, keys, name, _now| {
            let (row, versions) = history_in(tx, keys, name)?;
            let count = versions.len();
            Ok(Done::new(
                (row, versions),
                None,
                json!({ "versions": count }),
            ))
        })
    }

    /// Soft-deletes a secret. Returns false when it was already deleted.
    pub fn delete(&mut self, raw_name: &str) -> Result<bool, VaultError> {
        self.named(Action::Delete, raw_name, |tx, keys, name, now| {
            let (changed, version) = delete_in(tx, keys, name, now)?;
            Ok(Done::new(changed, version, json!({ "changed": changed })))
        })
    }

    /// Restores a soft-deleted secret. Returns false when it was not deleted.
    pub fn undelete(&mut self, raw_name: &str) -> Result<bool, VaultError> {
        self.named(Action::Undelete, raw_name, |tx, keys, name, now| {
            let mut row =
                checked_secret(tx, keys, name.as_str())?.ok_or_else(|| not_found(name))?;
            let changed = row.deleted_at_ms.is_some();
            if changed {
                row.deleted_at_ms = None;
                row.updated_at_ms = now;
                tx.save_secret(&row)?;
                reseal_secret(tx, keys, name.as_str())?;
            }
            Ok(Done::new(
                changed,
                row.current_version,
                json!({ "changed": changed }),
            ))
        })
    }

    /// Wipes one version's ciphertext for good. Returns false when it was already destroyed.
    pub fn destroy(&mut self, raw_name: &str, version: VersionNumber) -> Result<bool, VaultError> {
        let changed = self.named(Action::Destroy, raw_name, |tx, keys, name, now| {
            let row = checked_secret(tx, keys, name.as_str())?.ok_or_else(|| not_found(name))?;
            let stored = tx.version(name.as_str(), version)?.ok_or_else(|| {
                VaultError::NotFound(format!(
                    "{name} has no version {version} (latest is {})",
                    row.latest_version
                ))
            })?;
            let changed = stored.destroyed_at_ms.is_none();
            if changed {
                tx.destroy_version(name.as_str(), version, now)?;
                reseal_secret(tx, keys, name.as_str())?;
            }
            let labels = label_of(&row, version.get());
            Ok(Done::new(
                changed,
                Some(version.get()),
                json!({ "changed": changed, "labels": labels }),
            ))
        })?;
        if changed {
            // Old page images of the ciphertext must not linger in the WAL. If a reader
            // holds the WAL open this is deferred to a later checkpoint.
            let _ = self.store.checkpoint_truncate();
        }
        Ok(changed)
    }

    /// Reads audit entries. The read itself is logged (as `action`) before they are returned.
    pub fn audit_entries(
        &mut self,
        filter: &AuditFilter,
        action: Action,
    ) -> Result<Vec<Entry>, VaultError> {
        // The secret column stays empty: reading the log about X is not touching X.
        self.audited(action, None, |tx, _, _now| {
            let entries = tx.query_audit(filter)?;
            let details = json!({
                "returned": entries.len(),
                "filter": {
                    "secret": filter.secret, "action": filter.action, "actor": filter.actor,
                    "since_ms": filter.since_ms, "limit": filter.limit,
                },
            });
            Ok(Done::new(entries, None, details))
        })
    }

    /// Verifies the whole chain and its sealed head (and a head noted earlier), then
    /// records the check itself. A broken chain is `AuditBroken` (exit 7).
    pub fn audit_verify(
        &mut self,
        expect: Option<ExpectedHead>,
    ) -> Result<VerifyReport, VaultError> {
        let expected_text = expect.as_ref().map(|e| audit::format_head(e.seq, &e.mac));
        let verified = self.audited(Action::AuditVerify, None, |tx, keys, _now| {
            let count = keys::verify_chain_in(tx, keys, expect)?;
            // The metadata too: every secret's labels and versions, every token, the census.
            let (secrets, tokens) = metadata::check_everything(tx, keys)?;
            Ok(Done::new(
                (count, secrets, tokens),
                None,
                json!({
                    "verified": count, "expected_head": expected_text,
                    "secrets_checked": secrets, "tokens_checked": tokens,
                }),
            ))
        })?;
        let head = self
            .last_head
            .as_ref()
            .map(|h| audit::format_head(h.seq, &h.mac))
            .unwrap_or_default();
        let (verified, secrets, tokens) = verified;
        Ok(VerifyReport {
            verified,
            secrets,
            tokens,
            head,
        })
    }
}

/// What a rotation step changes in the vault, in the same transaction that records it.
pub enum StepEffect {
    None,
    /// Store a new version and label it `pending`.
    StagePending {
        value: SecretValue,
        meta: serde_json::Value,
    },
    /// `pending` becomes `current`, `current` becomes `previous`; then prune unlabelled
    /// versions beyond `max_versions`.
    Promote {
        max_versions: Option<u32>,
    },
    /// Drop the `pending` label (the version stays, unlabelled, for the record).
    DiscardPending,
}

impl std::fmt::Debug for StepEffect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepEffect::None => f.write_str("None"),
            StepEffect::StagePending { meta, .. } => write!(f, "StagePending([redacted], {meta})"),
            StepEffect::Promote { max_versions } => write!(f, "Promote({max_versions:?})"),
            StepEffect::DiscardPending => f.write_str("DiscardPending"),
        }
    }
}

/// A lock held by someone else.
#[derive(Debug)]
pub struct Held {
    pub holder: String,
}

/// Whether a lock's recorded holder still runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Seen running (same machine and boot): holds the lock whatever its lease says.
    Alive,
    /// Known gone: the lock is free.
    Dead,
    /// Cannot tell (another machine): holds the lock until its lease expires.
    Unknown,
}

/// The lease a rotating process holds on each secret it touches. Every rotation step
/// checks it (inside the step's transaction) and extends it, so a process that lost
/// its lock can never write over another's progress.
#[derive(Clone, Debug)]
struct Lease {
    holder: String,
    ttl_ms: i64,
    /// A leader's lease and the epoch it took it at: every step also checks that the
    /// lease still names this holder at that epoch (the fencing token).
    fence: Option<(String, u64)>,
}

/// A lease taken (or kept) by [`Vault::take_lease`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leadership {
    /// The fencing token: it grows by one each time the lease passes to a new holder.
    pub epoch: u64,
    /// The holder it was taken from (`None`: renewed, or it was free).
    pub took_over_from: Option<String>,
}

impl Vault {
    /// The name under which the audit log records this process.
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// Records an operation that changes nothing in the vault (a plan, a dry run, a
    /// read of rotation records) so the audit log shows it happened.
    pub fn record(
        &mut self,
        action: Action,
        secret: Option<&str>,
        details: serde_json::Value,
    ) -> Result<(), VaultError> {
        self.audited(action, secret, |_, _, _now| {
            Ok(Done::new((), None, details))
        })
    }

    /// A second connection to the same vault, already unlocked (the scheduler's, beside
    /// the API's): the same keys, actor and clock.
    pub fn another_connection(&self) -> Result<Vault, VaultError> {
        // Not Store::open: this process holds a vault file open already (see
        // `SqliteStore::open_again`).
        let store = self.store.another()?;
        let keys = Keys::derive(self.keys.vault_id.clone(), self.keys.key.try_clone()?)?;
        Ok(Vault {
            store,
            keys,
            actor: self.actor.clone(),
            last_head: None,
            lease: None,
            clock: self.clock.clone(),
        })
    }

    /// Records this process's operations as `actor` from now on (the scheduler's
    /// connection is `scheduler`).
    pub fn set_actor(&mut self, actor: Actor) {
        self.actor = actor;
    }

    /// Takes time from `clock` for rotation records and leases (tests use a paused clock).
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// The clock this vault records time by.
    pub fn clock(&self) -> Clock {
        self.clock.clone()
    }

    /// Now, by this vault's clock.
    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Keyed fingerprints of values, for records that must identify a value without
    /// revealing it.
    pub fn fingerprinter(&self) -> audit::Fingerprinter {
        self.keys.fingerprint.clone()
    }

    /// A secret's labels and bookkeeping, without its value (`None` if it does not exist).
    /// Not audited on its own: the rotation steps that use it are.
    pub fn secret_state(&mut self, raw_name: &str) -> Result<Option<SecretRow>, VaultError> {
        let name = SecretName::new(raw_name)?;
        let keys = &self.keys;
        self.store
            .read(|tx| checked_secret(tx, keys, name.as_str()))
    }

    /// When a version was written.
    pub fn version_created(
        &mut self,
        raw_name: &str,
        version: u64,
    ) -> Result<Option<i64>, VaultError> {
        let name = SecretName::new(raw_name)?;
        let Some(number) = VersionNumber::new(version) else {
            return Ok(None);
        };
        let keys = &self.keys;
        Ok(self
            .store
            .read(|tx| {
                checked_secret(tx, keys, name.as_str())?;
                Ok::<_, VaultError>(tx.version(name.as_str(), number)?)
            })?
            .map(|r| r.created_at_ms))
    }

    /// The provider handle stored with a version (JSON; never a value).
    pub fn version_meta(
        &mut self,
        raw_name: &str,
        version: u64,
    ) -> Result<serde_json::Value, VaultError> {
        let name = SecretName::new(raw_name)?;
        let number = VersionNumber::new(version)
            .ok_or_else(|| VaultError::NotFound(format!("{name} has no version {version}")))?;
        let keys = &self.keys;
        let row = self
            .store
            .read(|tx| {
                checked_secret(tx, keys, name.as_str())?;
                Ok::<_, VaultError>(tx.version(name.as_str(), number)?)
            })?
            .ok_or_else(|| VaultError::NotFound(format!("{name} has no version {version}")))?;
        // A handle that does not parse is not "no handle": a revoke would then do nothing.
        serde_json::from_str(&row.meta).map_err(|_| {
            VaultError::Store(StoreError::Corrupt {
                table: "versions",
                reason: format!("the provider handle of version {version} of {name} is not JSON"),
            })
        })
    }

    /// Reads a value for a purpose other than showing it (a credential a rotation
    /// needs, the old value pushed back). Audited like `get`, with the purpose.
    pub fn reveal(
        &mut self,
        raw_name: &str,
        selector: VersionSelector,
        purpose: &str,
    ) -> Result<Revealed, VaultError> {
        self.read_value(raw_name, selector, Some(purpose))
    }

    /// Records a new rotation run.
    pub fn begin_rotation(
        &mut self,
        row: &RotationRow,
        detail: serde_json::Value,
    ) -> Result<(), VaultError> {
        let secret = row.secret.clone();
        let lease = self.lease.clone();
        self.audited(
            Action::Rotate(Step::Start),
            Some(&secret),
            |tx, keys, _now| {
                check_lease(tx, lease.as_ref(), &row.secret, row.started_at_ms)?;
                if let Some(open) = tx.rotation_in_progress(&row.secret)? {
                    return Err(VaultError::Conflict(format!(
                    "rotation {open} of {} is still open: `secret rotate --due` finishes it first",
                    row.secret
                )));
                }
                if checked_secret(tx, keys, &row.secret)?.is_none() {
                    // The first rotation of a secret creates it.
                    tx.save_secret(&SecretRow {
                        name: row.secret.clone(),
                        description: None,
                        created_at_ms: row.started_at_ms,
                        updated_at_ms: row.started_at_ms,
                        deleted_at_ms: None,
                        latest_version: 0,
                        current_version: None,
                        pending_version: None,
                        previous_version: None,
                    })?;
                    reseal_secret(tx, keys, &row.secret)?;
                    reseal_census(tx, keys)?;
                }
                tx.save_rotation(row)?;
                tx.insert_step(
                    &row.id,
                    Step::Start,
                    StepStatus::Ok,
                    row.started_at_ms,
                    &detail.to_string(),
                )?;
                let mut details = detail.clone();
                details["rotation"] = json!(row.id);
                Ok(Done::new((), None, details))
            },
        )
    }

    /// Records one step of a rotation and applies its effect, atomically with its
    /// audit entry. `status` is `ok`, `failed` or `retry`; the audit outcome is `ok`
    /// or the step's error code.
    pub fn rotation_step(
        &mut self,
        rotation: &mut RotationRow,
        step: Step,
        status: StepStatus,
        detail: serde_json::Value,
        effect: StepEffect,
    ) -> Result<(), VaultError> {
        let keys = &self.keys;
        let actor = &self.actor;
        let clock = &self.clock;
        let action = Action::Rotate(step);
        let outcome = if status == StepStatus::Ok {
            "ok".to_string()
        } else {
            detail
                .get("code")
                .and_then(|c| c.as_str())
                .unwrap_or(status.as_str())
                .to_string()
        };
        let lease = self.lease.clone();
        let result = self.store.write(|tx| {
            let at = clock.now_ms();
            check_lease(tx, lease.as_ref(), &rotation.secret, at)?;
            let mut row = checked_secret(tx, keys, &rotation.secret)?.ok_or_else(|| {
                VaultError::NotFound(format!("no secret named {}", rotation.secret))
            })?;
            let mut version = rotation.new_version;
            let changes_secret = !matches!(effect, StepEffect::None);
            match effect {
                StepEffect::None => {}
                StepEffect::StagePending { value, meta } => {
                    let number = VersionNumber::new(row.latest_version + 1).ok_or_else(|| {
                        VaultError::Conflict(format!("{} has run out of version numbers", row.name))
                    })?;
                    let slot = ValueSlot {
                        vault_id: &keys.vault_id,
                        name: &row.name,
                        version: number.get(),
                    };
                    let sealed = keys.key.seal(&slot, value.expose().as_bytes())?;
                    row.latest_version = number.get();
                    row.pending_version = Some(number.get());
                    row.updated_at_ms = at;
                    tx.save_secret(&row)?;
                    tx.insert_version(
                        &row.name,
                        number,
                        at,
                        &sealed.nonce,
                        &sealed.ciphertext,
                        &meta.to_string(),
                    )?;
                    rotation.new_version = Some(number.get());
                    version = Some(number.get());
                }
                StepEffect::Promote { max_versions } => {
                    if row.pending_version != rotation.new_version || row.current_version != rotation.old_version {
                        return Err(VaultError::Conflict(format!(
                            "{} changed while rotation {} ran (its current or pending version moved); \
                             it was not promoted",
                            row.name, rotation.id
                        )));
                    }
                    let Some(pending) = row.pending_version else {
                        return Err(VaultError::Conflict(format!(
                            "{} has no pending version to promote",
                            row.name
                        )));
                    };
                    row.previous_version = row.current_version;
                    row.current_version = Some(pending);
                    row.pending_version = None;
                    row.updated_at_ms = at;
                    tx.save_secret(&row)?;
                    if let Some(keep) = max_versions {
                        let labelled: Vec<u64> = [row.current_version, row.previous_version]
                            .into_iter()
                            .flatten()
                            .collect();
                        tx.prune_versions(&row.name, u64::from(keep), &labelled)?;
                    }
                }
                StepEffect::DiscardPending => {
                    if row.pending_version.is_some() {
                        row.pending_version = None;
                        row.updated_at_ms = at;
                        tx.save_secret(&row)?;
                    }
                }
            }
            if changes_secret {
                reseal_secret(tx, keys, &rotation.secret)?;
            }
            rotation.updated_at_ms = at;
            tx.save_rotation(rotation)?;
            tx.insert_step(&rotation.id, step, status, at, &detail.to_string())?;
            let mut details = detail.clone();
            details["rotation"] = json!(rotation.id);
            details["status"] = json!(status);
            append(
                tx,
                keys,
                actor,
                at,
                action.as_str(),
                Some(&rotation.secret),
                version,
                &outcome,
                &details,
            )
        });
        let head = result?;
        self.last_head = Some(head);
        Ok(())
    }

    /// Rotation runs, newest first.
    pub fn rotations(
        &mut self,
        secret: Option<&str>,
        limit: u64,
    ) -> Result<Vec<RotationRow>, VaultError> {
        Ok(self.store.read(|tx| tx.rotations(secret, limit))?)
    }

    pub fn rotation(&mut self, id: &str) -> Result<Option<RotationRow>, VaultError> {
        Ok(self.store.read(|tx| tx.rotation(id))?)
    }

    pub fn rotation_steps(&mut self, id: &str) -> Result<Vec<StepRow>, VaultError> {
        Ok(self.store.read(|tx| tx.steps(id))?)
    }

    /// Rotations that are running, interrupted, or waiting for their revoke step.
    pub fn open_rotations(&mut self) -> Result<Vec<RotationRow>, VaultError> {
        Ok(self.store.read(|tx| tx.open_rotations())?)
    }

    /// Takes a lease named `name` for `holder` until `now + ttl`, unless another holder
    /// has it: one seen alive holds it whatever its lease says; one that cannot be
    /// checked holds it until the lease expires; a dead one has lost it.
    pub fn acquire_lock(
        &mut self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
        liveness: impl Fn(&str) -> Liveness,
    ) -> Result<Result<(), Held>, VaultError> {
        let now = self.clock.now_ms();
        Ok(self.store.write(|tx| {
            if let Some((current, expires)) = tx.lock(name)? {
                let held = current != holder
                    && match liveness(&current) {
                        Liveness::Alive => true,
                        Liveness::Unknown => expires > now,
                        Liveness::Dead => false,
                    };
                if held {
                    return Ok::<_, StoreError>(Err(Held { holder: current }));
                }
            }
            tx.put_lock(name, holder, now + ttl_ms)?;
            Ok(Ok(()))
        })?)
    }

    /// From now on every rotation step must hold `rotation:<secret>` as `holder`, and
    /// extends it by `ttl_ms`.
    pub fn hold_leases_as(&mut self, holder: &str, ttl_ms: i64) {
        self.lease = Some(Lease {
            holder: holder.to_string(),
            ttl_ms,
            fence: None,
        });
    }

    /// From now on every rotation step also checks, in its own transaction, that lease
    /// `name` is held by this vault's lease holder at `epoch` (see [`Vault::take_lease`]):
    /// once another instance has taken the lease, the next step fails. `None` lifts it.
    pub fn fence_with(&mut self, fence: Option<(&str, u64)>) {
        if let Some(lease) = &mut self.lease {
            lease.fence = fence.map(|(name, epoch)| (name.to_string(), epoch));
        }
    }

    /// Takes (or renews) the lease `name` for `holder` until `now + ttl`. A lease held
    /// by another is taken only when `free(holder, expires_at_ms)` says its holder is
    /// gone. Taking it from another holder, in the same transaction: the epoch grows by
    /// one (so that holder's fenced steps fail from now on) and every lock that holder
    /// had (its per-secret rotation locks) is dropped, for the new holder to resume.
    pub fn take_lease(
        &mut self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
        free: impl FnOnce(&str, i64) -> bool,
    ) -> Result<Result<Leadership, Held>, VaultError> {
        let now = self.clock.now_ms();
        Ok(self.store.write(|tx| {
            let epoch = tx.lock_epoch(name)?.unwrap_or(0);
            let current = tx.lock(name)?.filter(|(h, _)| !h.is_empty());
            if let Some((current, expires)) = &current {
                if current == holder {
                    tx.put_lock(name, holder, now + ttl_ms)?;
                    return Ok::<_, StoreError>(Ok(Leadership {
                        epoch,
                        took_over_from: None,
                    }));
                }
                if !free(current, *expires) {
                    return Ok(Err(Held {
                        holder: current.clone(),
                    }));
                }
                tx.delete_locks_held_by(current)?;
            }
            tx.put_lock(name, holder, now + ttl_ms)?;
            tx.set_lock_epoch(name, epoch + 1)?;
            Ok(Ok(Leadership {
                epoch: epoch + 1,
                took_over_from: current.map(|(h, _)| h),
            }))
        })?)
    }

    /// Extends lease `name` if `holder` still has it at `epoch`; false when it has lost
    /// it (another instance took it over).
    pub fn renew_lease(
        &mut self,
        name: &str,
        holder: &str,
        epoch: u64,
        ttl_ms: i64,
    ) -> Result<bool, VaultError> {
        let now = self.clock.now_ms();
        Ok(self.store.write(|tx| {
            let held = matches!(tx.lock(name)?, Some((h, _)) if h == holder)
                && tx.lock_epoch(name)? == Some(epoch);
            if held {
                tx.put_lock(name, holder, now + ttl_ms)?;
            }
            Ok::<_, StoreError>(held)
        })?)
    }

    /// Gives lease `name` up if `holder` has it: the row stays, naming nobody, so that
    /// its epoch keeps growing with the next holder.
    pub fn release_lease(&mut self, name: &str, holder: &str) -> Result<(), VaultError> {
        Ok(self.store.write(|tx| {
            if matches!(tx.lock(name)?, Some((h, _)) if h == holder) {
                tx.put_lock(name, "", 0)?;
            }
            Ok::<_, StoreError>(())
        })?)
    }

    /// Lease `name` as it stands: its holder (`None` when nobody holds it), when it
    /// ends, and its epoch.
    pub fn lease(&mut self, name: &str) -> Result<Option<(String, i64, u64)>, VaultError> {
        Ok(self.store.read(|tx| {
            let epoch = tx.lock_epoch(name)?.unwrap_or(0);
            Ok::<_, StoreError>(
                tx.lock(name)?
                    .filter(|(h, _)| !h.is_empty())
                    .map(|(h, e)| (h, e, epoch)),
            )
        })?)
    }

    pub fn release_lock(&mut self, name: &str, holder: &str) -> Result<(), VaultError> {
        Ok(self.store.write(|tx| tx.delete_lock(name, holder))?)
    }
}

impl Keys {
    /// A process that opened the vault before another process rekeyed or restored it
    /// holds a key that is no longer in force: whatever it sealed or chained now could
    /// not be read or verified. Every audit append (so every change) checks this
    /// first, inside its transaction.
    fn ensure_in_force(&self, tx: &Tx<'_>) -> Result<(), VaultError> {
        match tx.key_check()? {
            Some(check) if check == self.check => Ok(()),
            _ => Err(VaultError::Locked(
                "its key was replaced (by `secret rekey` or `secret restore` in another \
                 process) after this process opened it; open it again (restart `secret serve`)"
                    .into(),
            )),
        }
    }

    fn derive(vault_id: Vec<u8>, key: VaultKey) -> Result<Self, CryptoError> {
        Ok(Self {
            check: key.key_check(&vault_id)?.to_vec(),
            audit: key.audit_key(&vault_id)?,
            fingerprint: audit::Fingerprinter::new(key.fingerprint_key(&vault_id)?),
            token: key.token_key(&vault_id)?,
            meta: key.metadata_key(&vault_id)?,
            vault_id,
            key,
        })
    }
}

fn unlock(keyring: &[KeyringRow], unlocker: Unlocker) -> Result<VaultKey, String> {
    let by_recipients = keyring.iter().find(|r| r.kind == KeyringKind::Recipients);
    let by_passphrase = keyring.iter().find(|r| r.kind == KeyringKind::Passphrase);
    let mut reason = None;
    if let (Some(identities), Some(row)) = (&unlocker.identities, by_recipients) {
        match VaultKey::unwrap_with_identities(&row.wrapped_key, identities) {
            Ok(key) => return Ok(key),
            Err(CryptoError::NoMatchingIdentity) => {
                reason = Some("no identity matches its recipients".to_string())
            }
            Err(e) => reason = Some(e.to_string()),
        }
    }
    if let Some(row) = by_passphrase {
        match unlocker.passphrase {
            Some(ask) => {
                let passphrase = ask()?;
                return VaultKey::unwrap_with_passphrase(&row.wrapped_key, &passphrase)
                    .map_err(|e| e.to_string());
            }
            None if reason.is_none() => {
                reason = Some(
                    "it is protected by a passphrase: set SECRET_PASSPHRASE or run on a terminal"
                        .into(),
                )
            }
            None => {}
        }
    }
    Err(reason.unwrap_or_else(|| {
        if by_recipients.is_some() {
            format!("no identity found ({})", unlocker.identity_hint)
        } else {
            "the vault has no usable key copy".to_string()
        }
    }))
}

fn record_unkeyed(
    store: &mut Store,
    actor: &Actor,
    clock: &Clock,
    outcome: &str,
    details: serde_json::Value,
) {
    let event = UnkeyedEvent {
        at_ms: clock.now_ms(),
        actor: actor.name.clone(),
        pid: actor.pid,
        action: Action::Unlock.as_str().into(),
        outcome: outcome.into(),
        request_id: actor.request_id.clone(),
        details: details.to_string(),
    };
    // Best effort: a read-only vault file still refuses with "cannot unlock".
    let _ = store.write(|tx| tx.insert_unkeyed(&event));
}

fn remove_vault_files(path: &Path) {
    let _ = std::fs::remove_file(path);
    for suffix in ["-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(std::path::PathBuf::from(p));
    }
}
