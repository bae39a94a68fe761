//! Many secrets in one transaction: `secret import` writes them all or none, and
//! `secret export` / `secret run` read them all with one audit entry per secret,
//! committed before any value leaves. The API's `POST /v1/export` reads through the
//! same two functions ([`current_names`], [`reveal_each`]).

use serde_json::json;

use super::metadata::{check_listed, checked_secret};
use super::{append, read_in, write_in, Keys, Vault};
use crate::action::Action;
use crate::audit::{Actor, Head};
use crate::error::VaultError;
use crate::model::{Label, Revealed, SecretName, SecretValue, VersionNumber, VersionSelector};
use crate::store::{Durability, Tx};

/// One secret an import wrote.
#[derive(Clone, Debug)]
pub struct Imported {
    pub name: SecretName,
    pub version: VersionNumber,
    /// It existed before (and `overwrite` allowed replacing it).
    pub replaced: bool,
}

impl Vault {
    /// Writes every binding as a new current version, in one transaction with one
    /// audited `set` each: all of them, or (on any refusal) none. A name that exists
    /// already is a conflict naming every such name, unless `overwrite`.
    pub fn import(
        &mut self,
        bindings: &[(SecretName, SecretValue)],
        overwrite: bool,
    ) -> Result<Vec<Imported>, VaultError> {
        let keys = &self.keys;
        let actor = &self.actor;
        let clock = &self.clock;
        let result = self.store.write_with(Durability::Synced, |tx| {
            let now = clock.now_ms();
            let mut existing = Vec::new();
            for (name, _) in bindings {
                if checked_secret(tx, keys, name.as_str())?.is_some() {
                    existing.push(name.as_str());
                }
            }
            if !existing.is_empty() && !overwrite {
                return Err(VaultError::Conflict(format!(
                    "already in the vault: {}; pass --overwrite to replace them (nothing was imported)",
                    existing.join(", ")
                )));
            }
            let mut head = None;
            let mut out = Vec::with_capacity(bindings.len());
            for (name, value) in bindings {
                let replaced = existing.contains(&name.as_str());
                let options = super::SetOptions::default();
                let (version, mut details) = write_in(tx, now, keys, name, value, &options)?;
                if let Some(map) = details.as_object_mut() {
                    map.insert("via".into(), json!("import"));
                }
                head = Some(append(
                    tx,
                    keys,
                    actor,
                    now,
                    Action::Set.as_str(),
                    Some(name.as_str()),
                    Some(version.get()),
                    "ok",
                    &details,
                )?);
                out.push(Imported {
                    name: name.clone(),
                    version,
                    replaced,
                });
            }
            Ok((out, head))
        });
        self.settle(Action::Import, result)
    }

    /// The current value of every live secret (or of the ones in `only`, each of which
    /// must exist), sorted by name, with one audited read each (`purpose` in its
    /// details), committed before the values are returned.
    pub fn reveal_current(
        &mut self,
        only: Option<&[SecretName]>,
        purpose: &str,
    ) -> Result<Vec<Revealed>, VaultError> {
        let keys = &self.keys;
        let actor = &self.actor;
        let clock = &self.clock;
        let details = json!({ "selector": "current", "purpose": purpose });
        let result = self.store.write_with(Durability::Committed, |tx| {
            let now = clock.now_ms();
            let names = current_names(tx, keys, only)?;
            reveal_each(tx, keys, actor, now, &names, &details)
        });
        self.settle(Action::Get, result)
    }

    /// After a bulk transaction: the newest head is noted, or a refusal is recorded
    /// (as `action`, in a transaction of its own) and returned.
    fn settle<T>(
        &mut self,
        action: Action,
        result: Result<(T, Option<Head>), VaultError>,
    ) -> Result<T, VaultError> {
        match result {
            Ok((out, head)) => {
                if head.is_some() {
                    self.last_head = head;
                }
                Ok(out)
            }
            Err(err) => {
                self.record_refusal(action, None, &err);
                Err(err)
            }
        }
    }
}

/// What `reveal_current` reads: the names in `only` (each must be live with a current
/// value; the error lists every one that is not), sorted and deduplicated, or else
/// every live secret with a current value.
pub(super) fn current_names(
    tx: &Tx<'_>,
    keys: &Keys,
    only: Option<&[SecretName]>,
) -> Result<Vec<SecretName>, VaultError> {
    match only {
        Some(names) => {
            let mut missing = Vec::new();
            for name in names {
                let live = checked_secret(tx, keys, name.as_str())?
                    .is_some_and(|r| r.deleted_at_ms.is_none() && r.current_version.is_some());
                if !live {
                    missing.push(name.as_str());
                }
            }
            if !missing.is_empty() {
                return Err(VaultError::NotFound(format!(
                    "not in the vault (or without a current value): {}; `secret list` shows what is",
                    missing.join(", ")
                )));
            }
            let mut names = names.to_vec();
            names.sort();
            names.dedup();
            Ok(names)
        }
        None => {
            let listed = tx.list_secrets(false)?;
            check_listed(tx, keys, listed.iter().map(|m| m.name.as_str()))?;
            Ok(listed
                .into_iter()
                .filter(|m| m.current_version.is_some())
                .map(|m| SecretName::new(&m.name))
                .collect::<Result<_, _>>()?)
        }
    }
}

/// Reads the current value of each of `names`, appending one audited `get` per value
/// (with `details`), and returns them with the newest head.
pub(super) fn reveal_each(
    tx: &Tx<'_>,
    keys: &Keys,
    actor: &Actor,
    now: i64,
    names: &[SecretName],
    details: &serde_json::Value,
) -> Result<(Vec<Revealed>, Option<Head>), VaultError> {
    let mut head = None;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let revealed = read_in(tx, keys, name, VersionSelector::Label(Label::Current))?;
        head = Some(append(
            tx,
            keys,
            actor,
            now,
            Action::Get.as_str(),
            Some(name.as_str()),
            Some(revealed.version.get()),
            "ok",
            details,
        )?);
        out.push(revealed);
    }
    Ok((out, head))
}
