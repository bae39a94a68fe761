//! The store: one interface over where a vault's rows live, and the row types that
//! cross it. Two backends implement it: SQLite ([`sqlite`], the embedded default: a
//! path) and PostgreSQL (the `secret-store-postgres` crate: a `postgres://` URL).
//!
//! - [`StoreTx`] is every row operation of a transaction (about sixty of them). The
//!   vault sees it as `&Tx<'_>` (`dyn StoreTx`), so vault code is the same on both.
//! - [`Backend`] is one connection: it begins, commits and rolls back transactions and
//!   answers the few questions that differ between backends (where it is, a second
//!   connection, scrubbing replaced bytes, a snapshot, a transaction on a location
//!   that is to receive a whole vault). What one backend cannot do is
//!   an error that says what to do instead ([`StoreError::Unsupported`]), never a
//!   silent no-op.
//! - [`Store`] is what the vault holds: a boxed backend with `write`/`write_with`/`read`
//!   taking closures over a transaction, committed when they return `Ok`.
//!
//! Every write transaction is serialised against every other writer of the vault,
//! across processes: SQLite by its write lock (`BEGIN IMMEDIATE`), PostgreSQL by a
//! transaction-scoped advisory lock taken first (see that crate). The audit chain is
//! appended only inside one, so it never forks.
//!
//! - [`image`] is the whole vault as rows, the same on both backends: `secret store
//!   copy`, and backups and restores of PostgreSQL vaults, move them as they are.
//!
//! Rows stay here and at the vault's boundary; this module knows nothing of crypto.

use std::path::{Path, PathBuf};

use crate::audit::{AuditFilter, Entry, Head, UnkeyedEvent};
use crate::model::{SecretMeta, VersionNumber};
use crate::rotation_state::{RunOutcome, RunState, Step, StepStatus, Trigger};

pub mod image;
pub mod sqlite;
pub use sqlite::{recognise, APPLICATION_ID, SCHEMA_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the vault at {location} has schema version {found}, newer than this build of secret \
         understands (up to {supported}); upgrade secret, and do not open it with this version again"
    )]
    NewerSchema {
        location: String,
        found: u32,
        supported: u32,
    },
    #[error("{location} is not a secret vault ({reason})")]
    NotAVault { location: String, reason: String },
    #[error("the vault is busy: another process held its write lock for more than {} s; try again", sqlite::BUSY_TIMEOUT.as_secs())]
    Busy,
    #[error("cannot create {}: {source}", .path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    /// An error of a database server (PostgreSQL), reduced to its text (which carries
    /// no value: values reach the store sealed).
    #[error("database error: {0}")]
    Database(String),
    /// The vault location is not a usable URL (exit 2). Never holds a password.
    #[error("{0}")]
    BadLocation(String),
    /// The database server cannot be reached or refused the connection (exit 1).
    #[error("cannot connect to the vault at {location}: {reason}")]
    Unreachable { location: String, reason: String },
    /// What this backend cannot do, and what to do instead (exit 2).
    #[error("{what} is not possible on the vault at {location}: {instead}")]
    Unsupported {
        what: &'static str,
        location: String,
        instead: &'static str,
    },
    #[error("corrupt row in {table}: {reason}")]
    Corrupt { table: &'static str, reason: String },
    /// A location that is to receive a whole vault (`secret store copy`, a restore into
    /// an empty database) holds something already (exit 4). Nothing was written to it.
    #[error(
        "{location} is not empty: it holds {holds}; nothing was written to it; copy into a \
         new file, or an empty database or schema"
    )]
    NotEmpty { location: String, holds: String },
}

impl StoreError {
    /// Errors that are the caller's to fix (a bad URL, a command this backend does not
    /// do): exit 2 rather than 1.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            StoreError::BadLocation(_) | StoreError::Unsupported { .. }
        )
    }
}

/// How durable a commit must be before `write` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsynced: survives power loss. Every change to secrets, keys or rotations.
    Synced,
    /// Committed to the WAL, fsynced with the next synced write or checkpoint:
    /// survives a crash of the process, not a power cut. The audit entries of reads.
    Committed,
}

/// The vault's identity row.
pub struct VaultRow {
    pub vault_id: Vec<u8>,
    pub key_check: Vec<u8>,
    pub created_at_ms: i64,
}

/// One wrapped copy of the vault key.
pub struct KeyringRow {
    pub kind: KeyringKind,
    pub recipients: Vec<String>,
    pub wrapped_key: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyringKind {
    Recipients,
    Passphrase,
}

impl KeyringKind {
    fn as_str(self) -> &'static str {
        match self {
            KeyringKind::Recipients => "recipients",
            KeyringKind::Passphrase => "passphrase",
        }
    }
}

/// A secret's row: its labels and bookkeeping.
#[derive(Clone, Debug)]
pub struct SecretRow {
    pub name: String,
    pub description: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub deleted_at_ms: Option<i64>,
    pub latest_version: u64,
    pub current_version: Option<u64>,
    pub pending_version: Option<u64>,
    pub previous_version: Option<u64>,
}

/// The audit key of a retired key epoch, sealed under the key in force.
pub struct RetiredKeyRow {
    pub epoch: u64,
    pub retired_at_ms: i64,
    /// The rekey's audit entry: the last one MACed under this epoch's key.
    pub retired_seq: u64,
    pub nonce: Vec<u8>,
    pub sealed_key: Vec<u8>,
}

/// One version's sealed bytes, as a rekey or a restore's proof reads them.
pub struct SealedVersion {
    pub name: String,
    pub version: u64,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// One stored version. The sealed bytes are `None` once destroyed.
pub struct VersionRow {
    pub version: u64,
    pub created_at_ms: i64,
    pub nonce: Option<Vec<u8>>,
    pub ciphertext: Option<Vec<u8>>,
    pub destroyed_at_ms: Option<i64>,
    /// Provider handle of this version (JSON; ids and public keys, never a value).
    pub meta: String,
}

/// What a secret's metadata MAC covers of one of its versions: everything but the
/// sealed bytes themselves (which AES-GCM authenticates on their own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionFacts {
    pub version: u64,
    pub created_at_ms: i64,
    pub destroyed_at_ms: Option<i64>,
    /// Whether the row still holds a nonce and a ciphertext.
    pub sealed: bool,
    /// Provider handle (JSON; ids and public keys, never a value).
    pub meta: String,
}

/// A stored MAC.
pub type Mac = Vec<u8>;

/// Where the audit log starts and ends, and the MAC of the entry the head names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditBounds {
    pub first: Option<u64>,
    pub last: Option<u64>,
    pub mac_at: Option<Mac>,
}

/// One rotation run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotationRow {
    pub id: String,
    pub secret: String,
    pub generator: String,
    pub trigger: Trigger,
    pub state: RunState,
    pub outcome: Option<RunOutcome>,
    pub old_version: Option<u64>,
    pub new_version: Option<u64>,
    pub started_at_ms: i64,
    pub updated_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub revoke_after_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    pub error: Option<String>,
    pub provider_state: String,
    pub deployments: String,
}

/// An API token as stored: never the token itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub hash: Vec<u8>,
    pub scopes: Vec<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    pub last_used_at_ms: Option<i64>,
}

impl RotationRow {
    /// A run that has just begun (or been requested): no outcome, nothing recorded yet.
    pub fn begun(
        id: String,
        secret: String,
        generator: String,
        trigger: Trigger,
        state: RunState,
        old_version: Option<u64>,
        now_ms: i64,
    ) -> Self {
        Self {
            id,
            secret,
            generator,
            trigger,
            state,
            outcome: None,
            old_version,
            new_version: None,
            started_at_ms: now_ms,
            updated_at_ms: now_ms,
            finished_at_ms: None,
            revoke_after_ms: None,
            revoked_at_ms: None,
            error: None,
            provider_state: "{}".into(),
            deployments: "{}".into(),
        }
    }
}

/// One recorded step of a rotation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StepRow {
    pub seq: u64,
    pub step: Step,
    pub status: StepStatus,
    pub at_ms: i64,
    pub detail: String,
}

/// Which kind of backend a store is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    Sqlite,
    Postgres,
}

/// How a transaction begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxMode {
    /// A consistent snapshot; writes nothing.
    Read,
    /// Serialised against every other writer of the vault, committed as durable as asked.
    Write(Durability),
}

/// Every row operation of one transaction: the whole of the vault's SQL. Object-safe;
/// the vault sees it as [`Tx`].
pub trait StoreTx {
    fn vault_row(&self) -> Result<Option<VaultRow>, StoreError>;

    fn insert_vault_row(&self, row: &VaultRow) -> Result<(), StoreError>;

    /// The key check of the vault key in force (it changes with every rekey).
    fn key_check(&self) -> Result<Option<Vec<u8>>, StoreError>;

    fn set_key_check(&self, key_check: &[u8]) -> Result<(), StoreError>;

    fn delete_keyring(&self, kind: KeyringKind) -> Result<(), StoreError>;

    /// The audit keys of retired key epochs, oldest first.
    fn retired_keys(&self) -> Result<Vec<RetiredKeyRow>, StoreError>;

    /// Inserts a retired epoch's key, or re-seals one already kept.
    fn put_retired_key(&self, row: &RetiredKeyRow) -> Result<(), StoreError>;

    fn keyring(&self) -> Result<Vec<KeyringRow>, StoreError>;

    /// The MAC over the number of secrets (`None` before a vault's metadata is sealed).
    fn census(&self) -> Result<Option<Vec<u8>>, StoreError>;

    fn set_census(&self, mac: &[u8]) -> Result<(), StoreError>;

    /// How many secrets (deleted ones too) the vault holds.
    fn count_secrets(&self) -> Result<u64, StoreError>;

    /// Every secret's name, in order.
    fn secret_names(&self) -> Result<Vec<String>, StoreError>;

    fn put_keyring(&self, row: &KeyringRow, now_ms: i64) -> Result<(), StoreError>;

    fn secret(&self, name: &str) -> Result<Option<SecretRow>, StoreError>;

    /// A secret's row and its metadata MAC (`None` when the MAC is missing).
    fn secret_with_mac(&self, name: &str) -> Result<Option<(SecretRow, Option<Mac>)>, StoreError>;

    fn set_secret_mac(&self, name: &str, mac: &[u8]) -> Result<(), StoreError>;

    /// What the metadata MAC covers of each version of a secret, oldest first.
    fn version_facts(&self, name: &str) -> Result<Vec<VersionFacts>, StoreError>;

    /// Inserts or replaces a secret's row. Its metadata MAC must be renewed after.
    fn save_secret(&self, row: &SecretRow) -> Result<(), StoreError>;

    fn version(&self, name: &str, version: VersionNumber)
        -> Result<Option<VersionRow>, StoreError>;

    fn insert_version(
        &self,
        name: &str,
        version: VersionNumber,
        now_ms: i64,
        nonce: &[u8],
        ciphertext: &[u8],
        meta: &str,
    ) -> Result<(), StoreError>;

    /// Wipes one version's sealed bytes for good.
    fn destroy_version(
        &self,
        name: &str,
        version: VersionNumber,
        now_ms: i64,
    ) -> Result<(), StoreError>;

    /// How many versions still hold sealed bytes (not destroyed).
    fn count_sealed_versions(&self) -> Result<u64, StoreError>;

    /// The next `limit` versions holding sealed bytes after `(name, version)` (from the
    /// start when `None`), in (name, version) order: a rekey or a proof walks every
    /// sealed version a page at a time.
    fn sealed_versions_after(
        &self,
        after: Option<(&str, u64)>,
        limit: u64,
    ) -> Result<Vec<SealedVersion>, StoreError>;

    /// Replaces one version's sealed bytes (a rekey re-encrypting it).
    fn reseal_version(
        &self,
        name: &str,
        version: u64,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<(), StoreError>;

    /// Versions of one secret, oldest first, without their sealed bytes.
    fn versions_of(&self, name: &str) -> Result<Vec<VersionRow>, StoreError>;

    /// Every secret's metadata, by name.
    fn list_secrets(&self, include_deleted: bool) -> Result<Vec<SecretMeta>, StoreError>;

    fn save_rotation(&self, row: &RotationRow) -> Result<(), StoreError>;

    fn rotation(&self, id: &str) -> Result<Option<RotationRow>, StoreError>;

    /// Rotations, newest first, optionally of one secret.
    fn rotations(&self, secret: Option<&str>, limit: u64) -> Result<Vec<RotationRow>, StoreError>;

    /// Rotations still in progress or waiting for their revoke step, oldest first.
    fn open_rotations(&self) -> Result<Vec<RotationRow>, StoreError>;

    /// The id of a rotation of `secret` that is running or interrupted (not one that
    /// only waits for its revoke step).
    fn rotation_in_progress(&self, secret: &str) -> Result<Option<String>, StoreError>;

    fn insert_step(
        &self,
        rotation_id: &str,
        step: Step,
        status: StepStatus,
        at_ms: i64,
        detail: &str,
    ) -> Result<(), StoreError>;

    fn steps(&self, rotation_id: &str) -> Result<Vec<StepRow>, StoreError>;

    fn savepoint(&self) -> Result<(), StoreError>;

    fn release(&self) -> Result<(), StoreError>;

    fn rollback_to_savepoint(&self) -> Result<(), StoreError>;

    fn insert_token(&self, row: &TokenRow) -> Result<(), StoreError>;

    fn token(&self, id: &str) -> Result<Option<TokenRow>, StoreError>;

    fn tokens(&self) -> Result<Vec<TokenRow>, StoreError>;

    fn revoke_token(&self, id: &str, now_ms: i64) -> Result<bool, StoreError>;

    /// Revokes every token not yet revoked; returns how many.
    fn revoke_all_tokens(&self, now_ms: i64) -> Result<u64, StoreError>;

    /// A token's metadata MAC (`None` when missing or the token does not exist).
    fn token_mac(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError>;

    fn set_token_mac(&self, id: &str, mac: &[u8]) -> Result<(), StoreError>;

    fn touch_token(&self, id: &str, now_ms: i64) -> Result<(), StoreError>;

    /// The current holder of a lock and when its lease ends.
    fn lock(&self, name: &str) -> Result<Option<(String, i64)>, StoreError>;

    fn put_lock(&self, name: &str, holder: &str, expires_at_ms: i64) -> Result<(), StoreError>;

    fn delete_lock(&self, name: &str, holder: &str) -> Result<(), StoreError>;

    /// A lock's fencing token (`None`: no such lock). `put_lock` keeps it as it is.
    fn lock_epoch(&self, name: &str) -> Result<Option<u64>, StoreError>;

    fn set_lock_epoch(&self, name: &str, epoch: u64) -> Result<(), StoreError>;

    /// Drops every lock `holder` has (a deposed leader's); returns how many.
    fn delete_locks_held_by(&self, holder: &str) -> Result<u64, StoreError>;

    fn audit_head(&self) -> Result<Option<Head>, StoreError>;

    /// The first and last sequence numbers in the log, and the MAC of entry `seq`:
    /// what the sealed head is checked against before each append. Each is one
    /// index lookup (SQLite answers a lone min() or max() from the b-tree's edge).
    fn audit_bounds(&self, seq: u64) -> Result<AuditBounds, StoreError>;

    /// Appends one entry and moves the head to it.
    fn append_audit(&self, entry: &Entry, head: &Head) -> Result<(), StoreError>;

    /// Moves the head record (a rekey re-seals it under the new audit key).
    fn set_audit_head(&self, head: &Head) -> Result<(), StoreError>;

    /// The entry with sequence number `seq`.
    fn audit_entry(&self, seq: u64) -> Result<Option<Entry>, StoreError>;

    /// Entries matching a filter, oldest first (the newest `limit` when limited).
    fn query_audit(&self, filter: &AuditFilter) -> Result<Vec<Entry>, StoreError>;

    /// Records an event that happened before the vault key was available.
    fn insert_unkeyed(&self, event: &UnkeyedEvent) -> Result<(), StoreError>;

    fn has_unkeyed(&self) -> Result<bool, StoreError>;

    /// Removes and returns every unkeyed event, oldest first.
    fn take_unkeyed(&self) -> Result<Vec<UnkeyedEvent>, StoreError>;

    /// Up to `limit` entries with a sequence number above `after`, in order.
    fn audit_page(&self, after: u64, limit: u64) -> Result<Vec<Entry>, StoreError>;

    /// Deletes one version row (pruning).
    fn delete_version(&self, name: &str, version: u64) -> Result<(), StoreError>;

    // --- the whole vault as rows (see [`image`]) -----------------------------------

    /// How many rows `table` holds.
    fn count_rows(&self, table: &'static image::TableSpec) -> Result<u64, StoreError>;

    /// Every row of `table` in key order, handed to `sink` a page at a time.
    fn scan_rows(
        &self,
        table: &'static image::TableSpec,
        sink: &mut dyn FnMut(&[image::RowImage]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// Inserts rows into `table` exactly as given.
    fn insert_rows(
        &self,
        table: &'static image::TableSpec,
        rows: &[image::RowImage],
    ) -> Result<(), StoreError>;

    /// Deletes every row of `table`.
    fn clear_rows(&self, table: &'static image::TableSpec) -> Result<(), StoreError>;
}

/// A transaction. Every read and write of the vault goes through one.
pub type Tx<'a> = dyn StoreTx + 'a;

/// Entries per page when the whole log is walked.
const AUDIT_PAGE: u64 = 1024;

impl<'a> dyn StoreTx + 'a {
    /// Calls `f` on every entry in sequence order, stopping at its first error.
    pub fn for_each_audit<E: From<StoreError>>(
        &self,
        mut f: impl FnMut(Entry) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut after = 0;
        loop {
            let page = self.audit_page(after, AUDIT_PAGE)?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = last.seq;
            for entry in page {
                f(entry)?;
            }
        }
    }

    /// Removes the oldest versions that carry no label, keeping `keep` versions in all.
    /// Returns the version numbers removed.
    pub fn prune_versions(
        &self,
        name: &str,
        keep: u64,
        labelled: &[u64],
    ) -> Result<Vec<u64>, StoreError> {
        let all = self.versions_of(name)?;
        let excess = (all.len() as u64).saturating_sub(keep);
        let doomed: Vec<u64> = all
            .iter()
            .map(|v| v.version)
            .filter(|v| !labelled.contains(v))
            .take(excess as usize)
            .collect();
        for v in &doomed {
            self.delete_version(name, *v)?;
        }
        Ok(doomed)
    }
}

/// One connection to a vault, of either backend.
pub trait Backend: Send {
    fn kind(&self) -> BackendKind;
    /// Where the vault is, for messages: a path, or a URL without its password.
    fn location(&self) -> String;
    /// The schema version the vault is at (after the migrations this build applied).
    fn schema_version(&self) -> u32;
    /// Begins a transaction: a write waits for (and then excludes) every other writer.
    fn begin(&mut self, mode: TxMode) -> Result<(), StoreError>;
    /// The row operations of the transaction begun.
    fn tx(&self) -> &Tx<'_>;
    fn commit(&mut self) -> Result<(), StoreError>;
    /// Undoes the transaction begun (best effort: the error that led here is reported).
    fn rollback(&mut self);
    /// A second connection to the same vault, for another thread of this process.
    fn another(&self) -> Result<Box<dyn Backend>, StoreError>;
    /// After a destroy or a re-wrapped key: makes the store drop the old bytes from
    /// where it keeps replaced pages (SQLite: folds and truncates the WAL;
    /// PostgreSQL: VACUUMs the tables that held them).
    fn scrub(&self) -> Result<(), StoreError>;
    /// A consistent copy of the whole vault as the bytes of one SQLite file.
    fn snapshot(&self) -> Result<Vec<u8>, StoreError>;
    /// Begins a write transaction on a location that is to receive a whole vault,
    /// with the vault's schema made inside it when the backend can (PostgreSQL: a
    /// copy that does not commit leaves the location as empty as it was). A location
    /// that holds anything — a vault, another application's tables — is
    /// [`StoreError::NotEmpty`], and nothing is written.
    fn begin_blank(&mut self) -> Result<(), StoreError>;
    /// The SQLite connection, for what only a vault file does (restore's copy).
    fn as_sqlite(&self) -> Option<&sqlite::SqliteStore> {
        None
    }
}

/// What the vault holds: one connection of either backend.
pub struct Store {
    backend: Box<dyn Backend>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.backend.location())
    }
}

impl Store {
    pub fn new(backend: Box<dyn Backend>) -> Self {
        Self { backend }
    }

    /// Creates a new, empty SQLite vault file (mode 0600, parent folders 0700) with the
    /// schema applied.
    pub fn create(path: &Path) -> Result<Self, StoreError> {
        Ok(Self::new(Box::new(sqlite::SqliteStore::create(path)?)))
    }

    /// Opens an existing SQLite vault file, applying any migrations it lacks. A file
    /// that is not a vault is refused before anything writes to it (see [`recognise`]).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self::new(Box::new(sqlite::SqliteStore::open(path)?)))
    }

    /// Another connection to a vault file this process has open already (see
    /// [`sqlite::SqliteStore::open_again`]).
    pub fn open_again(path: &Path) -> Result<Self, StoreError> {
        Ok(Self::new(Box::new(sqlite::SqliteStore::open_again(path)?)))
    }

    pub fn kind(&self) -> BackendKind {
        self.backend.kind()
    }

    pub fn location(&self) -> String {
        self.backend.location()
    }

    pub fn schema_version(&self) -> u32 {
        self.backend.schema_version()
    }

    /// A second connection to the same vault.
    pub fn another(&self) -> Result<Store, StoreError> {
        Ok(Self::new(self.backend.another()?))
    }

    /// Runs `f` in a write transaction; commits when it returns `Ok`, rolls back
    /// otherwise. The commit is durable (fsynced) before this returns.
    pub fn write<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.write_with(Durability::Synced, f)
    }

    /// Like [`Store::write`], choosing whether the commit waits for durability.
    pub fn write_with<T, E: From<StoreError>>(
        &mut self,
        durability: Durability,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.run(TxMode::Write(durability), f)
    }

    /// Runs `f` in a write transaction on a location that holds nothing yet (see
    /// [`Backend::begin_blank`]); commits when it returns `Ok`, and otherwise leaves
    /// the location as it found it.
    pub fn write_blank<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.backend.begin_blank()?;
        match f(self.backend.tx()) {
            Ok(value) => {
                self.backend.commit()?;
                Ok(value)
            }
            Err(e) => {
                self.backend.rollback();
                Err(e)
            }
        }
    }

    /// An empty SQLite vault in memory, schema applied: where a copy into a file is
    /// built and proven before the file is written (see [`sqlite::SqliteStore::in_memory`]).
    pub fn in_memory() -> Result<Self, StoreError> {
        Ok(Self::new(Box::new(sqlite::SqliteStore::in_memory()?)))
    }

    /// Runs `f` in a read transaction (a consistent snapshot).
    pub fn read<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.run(TxMode::Read, f)
    }

    fn run<T, E: From<StoreError>>(
        &mut self,
        mode: TxMode,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.backend.begin(mode)?;
        match f(self.backend.tx()) {
            Ok(value) => {
                self.backend.commit()?;
                Ok(value)
            }
            Err(e) => {
                self.backend.rollback();
                Err(e)
            }
        }
    }

    /// Drops replaced bytes (a destroyed ciphertext, an old key copy) from where the
    /// store keeps old pages (see [`Backend::scrub`]).
    pub fn checkpoint_truncate(&self) -> Result<(), StoreError> {
        self.backend.scrub()
    }

    /// A consistent copy of the whole vault as the bytes of one SQLite file.
    pub fn snapshot(&self) -> Result<Vec<u8>, StoreError> {
        self.backend.snapshot()
    }

    /// Replaces the whole content of the vault file at `dest` with this one's (see
    /// [`sqlite::SqliteStore::copy_into`]). Only between SQLite vaults.
    pub fn copy_into(&self, dest: &Path) -> Result<(), StoreError> {
        match self.backend.as_sqlite() {
            Some(store) => store.copy_into(dest),
            None => Err(StoreError::Unsupported {
                what: "replacing a vault file with this vault",
                location: self.location(),
                instead: "restore a backup into a SQLite vault file (--vault PATH)",
            }),
        }
    }

    /// The SQLite connection (tests and SQLite-only paths).
    pub fn as_sqlite(&self) -> Option<&sqlite::SqliteStore> {
        self.backend.as_sqlite()
    }
}
