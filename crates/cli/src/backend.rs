//! The one seam between the commands and where the secrets are: a local [`Vault`], or a
//! `secret serve` in remote mode ([`Client`]). Both answer with the same domain types,
//! so each command renders its output once, from the same values, and the two modes
//! print the same bytes. A command that has no remote form calls
//! [`crate::Context::open`] instead, which refuses in remote mode.

use serde_json::json;

use crate::remote::{Client, NewValue};
use secret_core::action::Action;
use secret_core::audit::{AuditFilter, Entry};
use secret_core::crypto;
use secret_core::error::VaultError;
use secret_core::model::{
    InputError, Revealed, SecretMeta, SecretName, SecretValue, VersionMeta, VersionNumber,
    VersionSelector,
};
use secret_core::vault::{RotationRow, SetOptions, StepRow, Vault};

/// Where the commands read and write. One lives per process, on the stack: the size
/// of its variants does not matter, and neither is boxed (no allocation for it).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Backend {
    Local(Vault),
    Remote(Client),
}

/// A secret's versions and labels, as `secret history` shows them. No values.
pub(crate) struct History {
    pub name: String,
    pub description: Option<String>,
    pub deleted_at_ms: Option<i64>,
    pub versions: Vec<VersionMeta>,
}

impl Backend {
    pub(crate) fn get(
        &mut self,
        name: &str,
        selector: VersionSelector,
    ) -> Result<Revealed, VaultError> {
        match self {
            Backend::Local(vault) => vault.get(name, selector),
            Backend::Remote(client) => client.get(name, selector),
        }
    }

    /// Writes `value` as the new current version; `options.generated` is set from it.
    pub(crate) fn set(
        &mut self,
        name: &str,
        value: NewValue,
        options: &SetOptions,
    ) -> Result<VersionNumber, VaultError> {
        match self {
            Backend::Local(vault) => {
                let value = match value {
                    NewValue::Given { value, .. } => value,
                    NewValue::Generate { charset, length } => {
                        crypto::generate_value(charset, length as usize)
                            .map_err(|e| InputError::Other(e.to_string()))
                            .and_then(SecretValue::from_secret_string)
                    }
                };
                vault.set(name, value, options)
            }
            Backend::Remote(client) => client.set(
                name,
                value,
                options.if_version,
                options.description.as_deref(),
            ),
        }
    }

    pub(crate) fn list(&mut self, include_deleted: bool) -> Result<Vec<SecretMeta>, VaultError> {
        match self {
            Backend::Local(vault) => vault.list(include_deleted),
            Backend::Remote(client) => client.list(include_deleted),
        }
    }

    pub(crate) fn history(&mut self, name: &str) -> Result<History, VaultError> {
        match self {
            Backend::Local(vault) => {
                let (row, versions) = vault.history(name)?;
                Ok(History {
                    name: row.name,
                    description: row.description,
                    deleted_at_ms: row.deleted_at_ms,
                    versions,
                })
            }
            Backend::Remote(client) => client.history(name),
        }
    }

    /// Soft delete; false when the secret was deleted already.
    pub(crate) fn delete(&mut self, name: &str) -> Result<bool, VaultError> {
        match self {
            Backend::Local(vault) => vault.delete(name),
            Backend::Remote(client) => client.delete(name),
        }
    }

    /// `secret audit`: entries matching `filter`, oldest first. The query is audited.
    pub(crate) fn audit_entries(&mut self, filter: &AuditFilter) -> Result<Vec<Entry>, VaultError> {
        match self {
            Backend::Local(vault) => vault.audit_entries(filter, Action::AuditRead),
            Backend::Remote(client) => client.audit_entries(filter),
        }
    }

    /// Current values for `export` and `run`, one audited read each.
    pub(crate) fn reveal_current(
        &mut self,
        only: Option<&[SecretName]>,
        purpose: &str,
    ) -> Result<Vec<Revealed>, VaultError> {
        match self {
            Backend::Local(vault) => vault.reveal_current(only, purpose),
            Backend::Remote(client) => client.reveal_current(only, purpose),
        }
    }

    /// Rotation runs, newest first, with their steps when `with_steps`. Audited.
    pub(crate) fn rotations(
        &mut self,
        name: Option<&str>,
        limit: u64,
        with_steps: bool,
    ) -> Result<Vec<(RotationRow, Vec<StepRow>)>, VaultError> {
        match self {
            Backend::Local(vault) => {
                let runs = vault.rotations(name, limit)?;
                vault.record(
                    Action::RotationsRead,
                    name,
                    json!({ "returned": runs.len() }),
                )?;
                let mut out = Vec::with_capacity(runs.len());
                for r in runs {
                    let steps = if with_steps {
                        vault.rotation_steps(&r.id)?
                    } else {
                        Vec::new()
                    };
                    out.push((r, steps));
                }
                Ok(out)
            }
            Backend::Remote(client) => client.rotations(name, limit),
        }
    }
}
