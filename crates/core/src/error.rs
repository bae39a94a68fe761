//! The error a caller of the vault sees, and the one place that decides its exit
//! code (CLI) and its stable machine-readable code (audit log, later the API).
//!
//! Variants carry names, versions and paths, never a value.

use crate::crypto::CryptoError;
use crate::model::InputError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(
        "no vault at {0}: create one with `secret init`, or point --vault / SECRET_VAULT at an existing vault"
    )]
    NoVault(String),
    #[error(
        "a vault already exists at {0}; pick another path or URL with --vault, or remove it first"
    )]
    VaultExists(String),
    #[error("cannot unlock vault: {0}")]
    Locked(String),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("integrity failure: {0}")]
    Integrity(String),
    #[error("audit chain broken at sequence {seq}: {reason}")]
    AuditBroken { seq: u64, reason: String },
    #[error("cannot write the audit log ({0}); the operation was not performed")]
    AuditWrite(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("{0}")]
    Io(String),
    /// A rotation pass that did not fully succeed; `code` is its exit code.
    #[error("{summary}")]
    Rotation { code: u8, summary: String },
    /// `secret run` could not start its command: 127 when it is not found, 126 when it
    /// cannot be run (the shells' codes, so scripts can tell).
    #[error("{message}")]
    Exec { code: u8, message: String },
    /// `secret drift` found a target that does not hold what the vault says it should.
    #[error("{0}")]
    Drift(String),
}

/// Documented exit codes (README, `secret --help`).
pub mod exit {
    pub const OK: u8 = 0;
    pub const OTHER: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NOT_FOUND: u8 = 3;
    pub const CONFLICT: u8 = 4;
    pub const LOCKED: u8 = 5;
    pub const ROTATION_FAILED: u8 = 6;
    pub const INTEGRITY: u8 = 7;
    /// `secret drift`: a target differs from the vault, or lacks a variable.
    pub const DRIFT: u8 = 8;
}

impl VaultError {
    /// The process exit code for this error: decided here and only here.
    pub fn exit_code(&self) -> u8 {
        match self {
            VaultError::Input(_) | VaultError::Usage(_) => exit::USAGE,
            // A vault URL that does not parse, a command the backend cannot do.
            VaultError::Store(e) if e.is_usage() => exit::USAGE,
            // A copy's destination (or an empty location restored into) holds something.
            VaultError::Store(StoreError::NotEmpty { .. }) => exit::CONFLICT,
            VaultError::NotFound(_) => exit::NOT_FOUND,
            VaultError::Conflict(_) | VaultError::VaultExists(_) => exit::CONFLICT,
            VaultError::Locked(_) => exit::LOCKED,
            VaultError::Integrity(_) | VaultError::AuditBroken { .. } => exit::INTEGRITY,
            VaultError::Rotation { code, .. } | VaultError::Exec { code, .. } => *code,
            VaultError::Drift(_) => exit::DRIFT,
            VaultError::NoVault(_)
            | VaultError::AuditWrite(_)
            | VaultError::Store(_)
            | VaultError::Crypto(_)
            | VaultError::Io(_) => exit::OTHER,
        }
    }

    /// A stable, machine-readable code: the audit log's `outcome` for a refusal.
    pub fn code(&self) -> &'static str {
        match self {
            VaultError::NoVault(_) => "no_vault",
            VaultError::VaultExists(_) => "vault_exists",
            VaultError::Locked(_) => "locked",
            VaultError::Input(InputError::Name(_)) => "invalid_name",
            VaultError::Input(_) => "invalid_value",
            VaultError::Usage(_) => "usage",
            VaultError::NotFound(_) => "not_found",
            VaultError::Conflict(_) => "conflict",
            VaultError::Integrity(_) => "integrity",
            VaultError::AuditBroken { .. } => "audit_broken",
            VaultError::AuditWrite(_) => "audit_unwritable",
            VaultError::Store(StoreError::NotEmpty { .. }) => "conflict",
            VaultError::Store(_) => "store",
            VaultError::Crypto(_) => "crypto",
            VaultError::Io(_) => "io",
            VaultError::Rotation { .. } => "rotation_failed",
            VaultError::Exec { .. } => "exec_failed",
            VaultError::Drift(_) => "drift",
        }
    }
}
