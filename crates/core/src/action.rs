//! What the audit log records an operation as. Every entry the vault writes names
//! one [`Action`]; its text (`get`, `rotate.push`, `token.create`, ...) is what the
//! chain's MAC covers and what `secret audit --action` filters on.
//!
//! Entries read back keep their action as text ([`crate::audit::Entry::action`]): the
//! log is a historical record, and an entry written by a newer `secret` with an action
//! this one does not know must still verify and print.

use std::fmt;

use crate::rotation_state::Step;
use crate::store::Durability;

/// One kind of audited operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Init,
    /// A failed unlock, recorded without the key and folded into the chain later.
    Unlock,
    Get,
    /// An API request for several values at once (each value read is its own `get`).
    Export,
    Set,
    /// An import refused as a whole (each imported secret is its own `set`).
    Import,
    List,
    History,
    Delete,
    Undelete,
    Destroy,
    AuditRead,
    AuditExport,
    AuditVerify,
    Plan,
    PolicyCheck,
    RotationsRead,
    RotateDryRun,
    /// One step of a rotation run (`rotate.start`, `rotate.push`, ...).
    Rotate(Step),
    TokenCreate,
    TokenList,
    TokenRevoke,
    JwksRead,
    /// An API request refused before it reached the vault (bad token, brake).
    ApiRefused,
    RecipientsList,
    RecipientsAdd,
    RecipientsRemove,
    PassphraseAdd,
    PassphraseRemove,
    Backup,
    Restore,
    /// The vault key was replaced: the last entry under the old key (see
    /// [`crate::audit::REKEY_ACTION`]).
    Rekey,
    /// A comparison of what the targets hold with the vault (`secret drift`, `serve`).
    DriftCheck,
    /// The vault's values pushed to a target that drifted (`secret drift --fix`).
    DriftFix,
    /// A vault made before metadata MACs got them, at its first unlock with the key.
    SealMetadata,
    /// The whole vault copied to another store (`secret store copy`): the source's entry.
    StoreCopy,
    /// The destination's entry of a copy, the first after the copied log.
    StoreCopied,
}

impl Action {
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Init => "init",
            Action::Unlock => "unlock",
            Action::Get => "get",
            Action::Export => "export",
            Action::Set => "set",
            Action::Import => "import",
            Action::List => "list",
            Action::History => "history",
            Action::Delete => "delete",
            Action::Undelete => "undelete",
            Action::Destroy => "destroy",
            Action::AuditRead => "audit.read",
            Action::AuditExport => "audit.export",
            Action::AuditVerify => "audit.verify",
            Action::Plan => "plan",
            Action::PolicyCheck => "policy.check",
            Action::RotationsRead => "rotations.read",
            Action::RotateDryRun => "rotate.dry_run",
            Action::Rotate(step) => match step {
                Step::Request => "rotate.request",
                Step::Start => "rotate.start",
                Step::Resume => "rotate.resume",
                Step::Intent => "rotate.intent",
                Step::Create => "rotate.create",
                Step::Deploying => "rotate.deploying",
                Step::Push => "rotate.push",
                Step::Verify => "rotate.verify",
                Step::Finish => "rotate.finish",
                Step::Rollback => "rotate.rollback",
                Step::Revoke => "rotate.revoke",
            },
            Action::TokenCreate => "token.create",
            Action::TokenList => "token.list",
            Action::TokenRevoke => "token.revoke",
            Action::JwksRead => "jwks.read",
            Action::ApiRefused => "api.refused",
            Action::RecipientsList => "recipients.list",
            Action::RecipientsAdd => "recipients.add",
            Action::RecipientsRemove => "recipients.remove",
            Action::PassphraseAdd => "passphrase.add",
            Action::PassphraseRemove => "passphrase.remove",
            Action::Backup => "backup",
            Action::Restore => "restore",
            Action::Rekey => crate::audit::REKEY_ACTION,
            Action::DriftCheck => "drift.check",
            Action::DriftFix => "drift.fix",
            Action::SealMetadata => "vault.seal_metadata",
            Action::StoreCopy => "store.copy",
            Action::StoreCopied => "store.copied",
        }
    }

    /// How durable the entry must be before the operation answers: a change is
    /// fsynced; an operation that changes nothing commits its entry before its result
    /// leaves (so a crashed process never hides a read), and the entry is fsynced with
    /// the next change or checkpoint.
    pub fn durability(self) -> Durability {
        match self {
            Action::Get
            | Action::Export
            | Action::List
            | Action::History
            | Action::AuditRead
            | Action::AuditExport
            | Action::AuditVerify
            | Action::Plan
            | Action::RotationsRead
            | Action::RotateDryRun
            | Action::PolicyCheck
            | Action::DriftCheck => Durability::Committed,
            _ => Durability::Synced,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rotation_step_has_its_own_action() {
        let texts: std::collections::BTreeSet<_> = Step::ALL
            .iter()
            .map(|s| Action::Rotate(*s).as_str())
            .collect();
        assert_eq!(texts.len(), Step::ALL.len());
        for step in Step::ALL {
            assert_eq!(
                Action::Rotate(*step).as_str(),
                format!("rotate.{}", step.as_str())
            );
        }
    }

    #[test]
    fn the_rekey_entry_is_the_one_the_verifier_switches_keys_at() {
        assert_eq!(Action::Rekey.as_str(), "rekey");
        assert_eq!(Action::Rekey.as_str(), crate::audit::REKEY_ACTION);
    }

    #[test]
    fn reads_commit_and_changes_sync() {
        assert_eq!(Action::Get.durability(), Durability::Committed);
        assert_eq!(Action::Set.durability(), Durability::Synced);
        assert_eq!(Action::Rotate(Step::Push).durability(), Durability::Synced);
        // A drift check reads; a fix changes what a target holds.
        assert_eq!(Action::DriftCheck.durability(), Durability::Committed);
        assert_eq!(Action::DriftFix.durability(), Durability::Synced);
    }
}
