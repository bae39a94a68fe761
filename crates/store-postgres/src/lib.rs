//! `secret-store-postgres`: the vault's PostgreSQL store, behind `secret-core`'s
//! [`Backend`] and [`StoreTx`] traits. `SECRET_VAULT=postgres://...` selects it; the
//! vault above is the same code on SQLite and here.
//!
//! # Layout
//!
//! ```text
//!  PgStore (Backend: begin/commit, open/create/blank, migrations) ─► rows (StoreTx: every SQL statement)
//!     ├─► image (whole tables: a cursor to read, multi-row INSERTs to write)
//!     └─► worker (the connection's own thread) ─► location (URL, TLS via rustls)
//! ```
//!
//! - **Serialisation.** Every write transaction takes
//!   `pg_advisory_xact_lock(`[`LOCK_CLASS`]`, hashtext(current_schema()))` as its first
//!   statement, so writers of one vault — threads, CLI processes, `serve` instances on
//!   other machines — run one at a time, each seeing every commit before it (READ
//!   COMMITTED after the lock is a serial history). The audit chain is appended only
//!   inside one, so it never forks; compare-and-set reads the version it compares
//!   under the same lock. Reads are REPEATABLE READ snapshots and take no lock.
//! - **Recognition.** A vault's schema holds `secret_vault_meta` (application id
//!   "SCRT", schema version). A schema without it that holds any table is refused
//!   before anything is written; an empty one is where `secret init` creates a vault.
//! - **Migrations** (`migrations/postgres/NNNN_*.sql`, embedded) run in the same
//!   transaction as that check, under the same lock: two processes starting at once
//!   apply them once.
//! - **Durability.** A synced write commits with `synchronous_commit = on` (the
//!   server's WAL is flushed before COMMIT returns); the audit entries of reads commit
//!   with `synchronous_commit = off` (as SQLite's relaxed commits: a server crash may
//!   lose the newest ones, never the chain's consistency).
//! - **Whole vaults.** [`PgStore::blank`] connects to an empty location for `secret
//!   store copy` or a restore; its transaction makes the schema and writes every row,
//!   so a copy that does not commit leaves nothing. A snapshot (`secret backup`) is
//!   every row, read in one REPEATABLE READ transaction, as a SQLite vault image.
//! - **Async callers.** The sync client runs on its own thread (see `worker`), so the
//!   vault can be called from inside a tokio runtime.
//!
//! No async runtime leaks into `secret-core`: it knows only the traits.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

use std::sync::Arc;

use secret_core::error::VaultError;
use secret_core::store::image::sqlite_image;
use secret_core::store::{
    Backend, BackendKind, Durability, Store, StoreError, StoreTx, Tx, TxMode, APPLICATION_ID,
};

mod image;
mod location;
mod rows;
pub mod testing;
mod worker;

pub use location::{is_postgres_url, redact, PgLocation};
use worker::Worker;

/// Embedded migrations, applied in order. Never edit one that has been released.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_init",
        include_str!("../../../migrations/postgres/0001_init.sql"),
    ),
    (
        "0002_rotation",
        include_str!("../../../migrations/postgres/0002_rotation.sql"),
    ),
    (
        "0003_tokens",
        include_str!("../../../migrations/postgres/0003_tokens.sql"),
    ),
    (
        "0004_rotation_checks",
        include_str!("../../../migrations/postgres/0004_rotation_checks.sql"),
    ),
    (
        "0005_key_epochs",
        include_str!("../../../migrations/postgres/0005_key_epochs.sql"),
    ),
    (
        "0006_integrity",
        include_str!("../../../migrations/postgres/0006_integrity.sql"),
    ),
    (
        "0007_lease_epoch",
        include_str!("../../../migrations/postgres/0007_lease_epoch.sql"),
    ),
];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The first key of the advisory lock every write takes ("SCRT"); the second is a
/// hash of the vault's schema, so vaults in different schemas of one database do not
/// wait for each other (a hash collision only makes two of them wait, never wrongly
/// lets two writers of one vault through).
pub const LOCK_CLASS: i32 = APPLICATION_ID;

/// What every write transaction runs first. `lock_timeout` turns a writer held up
/// for more than 10 s into [`StoreError::Busy`], as SQLite's busy timeout does.
const BEGIN_WRITE: &str = "BEGIN ISOLATION LEVEL READ COMMITTED;
     SET LOCAL lock_timeout = '10s';
     SELECT pg_advisory_xact_lock(1396920916, hashtext(COALESCE(current_schema(), '')));";
const BEGIN_RELAXED_WRITE: &str = "BEGIN ISOLATION LEVEL READ COMMITTED;
     SET LOCAL lock_timeout = '10s';
     SET LOCAL synchronous_commit = off;
     SELECT pg_advisory_xact_lock(1396920916, hashtext(COALESCE(current_schema(), '')));";
const BEGIN_READ: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

/// One connection to a vault in PostgreSQL.
pub struct PgStore {
    location: Arc<PgLocation>,
    pub(crate) worker: Worker,
    open: Option<TxMode>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgStore({})", self.location.display())
    }
}

/// What `open` found in the schema.
enum Found {
    Vault,
    Empty,
}

impl PgStore {
    fn connect(location: Arc<PgLocation>) -> Result<Self, StoreError> {
        let worker = Worker::start(location.clone())?;
        Ok(Self {
            location,
            worker,
            open: None,
        })
    }

    /// Opens the vault at `url`, applying any migrations it lacks. An empty database
    /// (or schema) is [`VaultError::NoVault`]; one holding other tables is refused
    /// before anything is written to it.
    pub fn open(url: &str) -> Result<Store, VaultError> {
        let location = Arc::new(PgLocation::parse(url)?);
        let store = Self::connect(location.clone())?;
        match store.prepare(false)? {
            Found::Vault => Ok(Store::new(Box::new(store))),
            Found::Empty => Err(VaultError::NoVault(location.display().to_string())),
        }
    }

    /// Makes an empty database (or schema) a vault's: the marker table and every
    /// migration, in one transaction. A location already holding a vault is
    /// [`VaultError::VaultExists`] (exit 4); one holding other tables is refused before
    /// anything is written.
    pub fn create(url: &str) -> Result<Store, VaultError> {
        let location = Arc::new(PgLocation::parse(url)?);
        let store = Self::connect(location)?;
        store.prepare(true)?;
        Ok(Store::new(Box::new(store)))
    }

    /// Connects to `url` as the destination of a whole vault (`secret store copy`, a
    /// restore into an empty database): nothing is written, and a location that holds
    /// anything — a vault, another application's tables — is refused now
    /// ([`StoreError::NotEmpty`], exit 4). The schema is made later, inside the copy's
    /// own transaction ([`Backend::begin_blank`]), so a copy that does not commit
    /// leaves the location as empty as it was.
    pub fn blank(url: &str) -> Result<Store, VaultError> {
        let location = Arc::new(PgLocation::parse(url)?);
        let store = Self::connect(location.clone())?;
        let display = location.display().to_string();
        store.worker.call(move |c| {
            c.failed = false;
            c.batch(BEGIN_READ)?;
            let found = occupant(c, &display);
            let _ = c.batch("ROLLBACK");
            match found? {
                Some(holds) => Err(StoreError::NotEmpty {
                    location: display,
                    holds,
                }),
                None => Ok(()),
            }
        })?;
        Ok(Store::new(Box::new(store)))
    }

    /// Recognises the schema and migrates it (creating it when `create`), in one write
    /// transaction under the vault's lock.
    fn prepare(&self, create: bool) -> Result<Found, VaultError> {
        let display = self.location.display().to_string();
        self.worker.call(move |c| {
            c.failed = false;
            c.batch(BEGIN_WRITE)?;
            let result = (|| {
                let schema: Option<String> = c
                    .query("SELECT current_schema()::text", &[])?
                    .first()
                    .and_then(|r| r.get(0));
                let Some(schema) = schema else {
                    return Err(VaultError::Usage(format!(
                        "the vault URL {display} selects no existing schema (its search_path \
                         names none that exists): create it (CREATE SCHEMA ...) or fix the \
                         URL's options=-csearch_path=..."
                    )));
                };
                let tables: Vec<String> = c
                    .query(
                        "SELECT table_name::text FROM information_schema.tables
                         WHERE table_schema = current_schema() ORDER BY 1",
                        &[],
                    )?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let not_a_vault = |reason: String| {
                    VaultError::Store(StoreError::NotAVault {
                        location: display.clone(),
                        reason,
                    })
                };
                let found = if tables.iter().any(|t| t == "secret_vault_meta") {
                    let meta = c.query(
                        "SELECT application_id, schema_version FROM secret_vault_meta WHERE id = 1",
                        &[],
                    )?;
                    let Some(row) = meta.first() else {
                        return Err(not_a_vault("its secret_vault_meta table is empty".into()));
                    };
                    let (app, version): (i64, i32) = (row.get(0), row.get(1));
                    if app != i64::from(APPLICATION_ID) {
                        return Err(not_a_vault(format!(
                            "its secret_vault_meta names another application ({app:#x})"
                        )));
                    }
                    let version = u32::try_from(version).unwrap_or(u32::MAX);
                    if version > SCHEMA_VERSION {
                        return Err(VaultError::Store(StoreError::NewerSchema {
                            location: display.clone(),
                            found: version,
                            supported: SCHEMA_VERSION,
                        }));
                    }
                    if create && tables.iter().any(|t| t == "vault") {
                        let held = c.query("SELECT EXISTS (SELECT 1 FROM vault)", &[])?;
                        if held.first().is_some_and(|r| r.get::<_, bool>(0)) {
                            return Err(VaultError::VaultExists(display.clone()));
                        }
                    }
                    migrate(c, version)?;
                    Found::Vault
                } else if !tables.is_empty() {
                    let shown: Vec<&str> = tables.iter().take(5).map(String::as_str).collect();
                    return Err(not_a_vault(format!(
                        "schema {schema} holds {} table(s) of another application ({}{}) and \
                         no secret_vault_meta; point the URL at an empty database or schema",
                        tables.len(),
                        shown.join(", "),
                        if tables.len() > 5 { ", ..." } else { "" }
                    )));
                } else if create {
                    migrate(c, 0)?;
                    Found::Vault
                } else {
                    Found::Empty
                };
                Ok(found)
            })();
            match result {
                Ok(found) if !c.failed => {
                    c.batch("COMMIT")?;
                    Ok(Ok(found))
                }
                Ok(_) => {
                    let _ = c.batch("ROLLBACK");
                    Err(StoreError::Database(
                        "the vault's schema check failed".into(),
                    ))
                }
                Err(e) => {
                    let _ = c.batch("ROLLBACK");
                    Ok(Err(e))
                }
            }
        })?
    }
}

/// What the schema the connection uses holds, if anything (`None`: no table at all).
/// A URL that selects no existing schema is [`StoreError::BadLocation`].
fn occupant(c: &mut worker::Conn, display: &str) -> Result<Option<String>, StoreError> {
    let schema: Option<String> = c
        .query("SELECT current_schema()::text", &[])?
        .first()
        .and_then(|r| r.get(0));
    let Some(schema) = schema else {
        return Err(StoreError::BadLocation(format!(
            "the vault URL {display} selects no existing schema (its search_path names none \
             that exists): create it (CREATE SCHEMA ...) or fix the URL's \
             options=-csearch_path=..."
        )));
    };
    let tables: Vec<String> = c
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = current_schema() ORDER BY 1",
            &[],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if tables.is_empty() {
        return Ok(None);
    }
    if tables.iter().any(|t| t == "secret_vault_meta") && tables.iter().any(|t| t == "vault") {
        let held = c.query("SELECT EXISTS (SELECT 1 FROM vault)", &[])?;
        if held.first().is_some_and(|r| r.get::<_, bool>(0)) {
            return Ok(Some(format!("a vault (schema {schema})")));
        }
        return Ok(Some(format!(
            "the tables of a vault that was never initialised (schema {schema}); drop them or \
             use another schema"
        )));
    }
    let shown: Vec<&str> = tables.iter().take(5).map(String::as_str).collect();
    Ok(Some(format!(
        "{} table(s) of another application in schema {schema} ({}{})",
        tables.len(),
        shown.join(", "),
        if tables.len() > 5 { ", ..." } else { "" }
    )))
}

/// Applies every migration after `from`, recording each in `secret_vault_meta`.
fn migrate(c: &mut worker::Conn, from: u32) -> Result<(), StoreError> {
    for (index, (_name, sql)) in MIGRATIONS.iter().enumerate().skip(from as usize) {
        c.batch(sql)?;
        c.batch(&format!(
            "UPDATE secret_vault_meta SET schema_version = {} WHERE id = 1",
            index + 1
        ))?;
    }
    Ok(())
}

impl Backend for PgStore {
    fn kind(&self) -> BackendKind {
        BackendKind::Postgres
    }

    fn location(&self) -> String {
        self.location.display().to_string()
    }

    fn schema_version(&self) -> u32 {
        SCHEMA_VERSION
    }

    fn begin(&mut self, mode: TxMode) -> Result<(), StoreError> {
        let sql = match mode {
            TxMode::Read => BEGIN_READ,
            TxMode::Write(Durability::Synced) => BEGIN_WRITE,
            TxMode::Write(Durability::Committed) => BEGIN_RELAXED_WRITE,
        };
        self.worker.call(move |c| {
            c.ensure_connected()?;
            c.failed = false;
            let begun = c.batch(sql);
            if begun.is_err() {
                let _ = c.batch("ROLLBACK");
            }
            begun
        })?;
        self.open = Some(mode);
        Ok(())
    }

    fn tx(&self) -> &Tx<'_> {
        self
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        self.open = None;
        self.worker.call(|c| {
            if c.failed {
                let _ = c.batch("ROLLBACK");
                return Err(StoreError::Database(
                    "a statement of the transaction failed, so it was rolled back".into(),
                ));
            }
            let committed = c.batch("COMMIT");
            if committed.is_err() {
                let _ = c.batch("ROLLBACK");
            }
            committed
        })
    }

    fn rollback(&mut self) {
        self.open = None;
        let _ = self.worker.call(|c| {
            let _ = c.batch("ROLLBACK");
            Ok(())
        });
    }

    fn another(&self) -> Result<Box<dyn Backend>, StoreError> {
        Ok(Box::new(Self::connect(self.location.clone())?))
    }

    /// PostgreSQL keeps replaced row versions until VACUUM: this prunes them from the
    /// tables that held a destroyed ciphertext or a re-wrapped key. (The server's WAL
    /// and any base backups or replicas keep what they have: those bytes are sealed.)
    fn scrub(&self) -> Result<(), StoreError> {
        self.worker.call(|c| c.batch("VACUUM versions, keyring"))
    }

    /// Every row, read in one REPEATABLE READ snapshot on a connection of its own
    /// (writers neither wait for it nor tear it), copied into a SQLite vault in
    /// memory: the same bytes a SQLite vault's backup holds.
    fn snapshot(&self) -> Result<Vec<u8>, StoreError> {
        let mut reader = Self::connect(self.location.clone())?;
        sqlite_image(&mut reader)
    }

    /// The schema is made inside the transaction, after checking under the vault's
    /// lock that the location still holds nothing.
    fn begin_blank(&mut self) -> Result<(), StoreError> {
        let display = self.location.display().to_string();
        self.worker.call(move |c| {
            c.ensure_connected()?;
            c.failed = false;
            if let Err(e) = c.batch(BEGIN_WRITE) {
                let _ = c.batch("ROLLBACK");
                return Err(e);
            }
            let made = match occupant(c, &display) {
                Ok(None) => migrate(c, 0),
                Ok(Some(holds)) => Err(StoreError::NotEmpty {
                    location: display,
                    holds,
                }),
                Err(e) => Err(e),
            };
            if made.is_err() {
                let _ = c.batch("ROLLBACK");
            }
            made
        })?;
        self.open = Some(TxMode::Write(Durability::Synced));
        Ok(())
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if self.open.is_some() {
            Backend::rollback(self);
        }
    }
}

/// Makes sure `StoreTx` stays object-safe with this implementation behind it.
#[allow(dead_code)]
fn assert_object_safe(store: &PgStore) -> &dyn StoreTx {
    store
}
