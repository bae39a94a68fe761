//! The SQLite store: the embedded default backend, one file.
//!
//! One file, WAL, `synchronous=FULL` (a confirmed write survives power loss),
//! `secure_delete` (destroyed ciphertext is zeroed, not just unlinked). Writers take
//! the lock up front (`BEGIN IMMEDIATE`) with a busy timeout, so concurrent
//! processes wait briefly instead of failing with "database is locked".
//!
//! The schema lives in `migrations/sqlite/NNNN_name.sql`, embedded at build time and
//! applied in order, with the count recorded in `PRAGMA user_version`.
//!
//! A vault carries `PRAGMA application_id` [`APPLICATION_ID`] from `init` on. Before
//! anything writes to a file (even the switch to WAL), [`SqliteStore::open`] reads its
//! header and refuses a file that is not a vault — empty, not SQLite, another
//! application's database — leaving its bytes as they were.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use super::*;
use crate::audit::{AuditFilter, Entry, Head, UnkeyedEvent};
use crate::model::{SecretMeta, VersionNumber};
use crate::rotation_state::{RunOutcome, Step, StepStatus, UnknownText};

/// Embedded migrations, applied in order. Never edit one that has been released.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_init",
        include_str!("../../../../migrations/sqlite/0001_init.sql"),
    ),
    (
        "0002_rotation",
        include_str!("../../../../migrations/sqlite/0002_rotation.sql"),
    ),
    (
        "0003_tokens",
        include_str!("../../../../migrations/sqlite/0003_tokens.sql"),
    ),
    (
        "0004_rotation_checks",
        include_str!("../../../../migrations/sqlite/0004_rotation_checks.sql"),
    ),
    (
        "0005_key_epochs",
        include_str!("../../../../migrations/sqlite/0005_key_epochs.sql"),
    ),
    (
        "0006_integrity",
        include_str!("../../../../migrations/sqlite/0006_integrity.sql"),
    ),
    (
        "0007_lease_epoch",
        include_str!("../../../../migrations/sqlite/0007_lease_epoch.sql"),
    ),
];

/// `PRAGMA application_id` of a vault: "SCRT" in ASCII. Set by the first migration a
/// file receives (so at `init`, and on vaults made before it existed at their upgrade).
pub const APPLICATION_ID: i32 = 0x5343_5254;

/// The tables every vault has had since its first schema: how a vault made before the
/// application id existed is told from another application's database.
const VAULT_TABLES: &[&str] = &[
    "audit_head",
    "audit_log",
    "audit_unkeyed",
    "keyring",
    "secrets",
    "vault",
    "versions",
];

/// The first bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Reduces a SQLite error to the variant a caller can act on.
fn sqlite_error(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::FromSqlConversionFailure(_, _, inner) = &e {
        if let Some(unknown) = inner.downcast_ref::<UnknownText>() {
            return StoreError::Corrupt {
                table: "rotations",
                reason: unknown.to_string(),
            };
        }
    }
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked) => {
            StoreError::Busy
        }
        _ => StoreError::Sqlite(e),
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        sqlite_error(e)
    }
}

pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// This connection committed a change (a synced write) since it opened.
    changed: bool,
    /// The transaction begun, if any.
    open: Option<TxMode>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SqliteStore({})", self.path.display())
    }
}

fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.as_os_str().is_empty() || dir.exists() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StoreError::Create {
            path: dir.to_path_buf(),
            source,
        })
}

/// Decides whether the file at `path` is a vault, without writing to it: its header must
/// carry our application id, or (a vault made before the id existed, or one whose newest
/// header is still in its WAL) a read-only look must find the id or every vault table.
/// Anything else — an empty file, text, another application's SQLite database — is
/// [`StoreError::NotAVault`], and the file is left byte for byte as it was.
///
/// Call it only before this process has the file open through SQLite (see
/// [`Store::open_again`]): it opens and closes the file itself.
pub fn recognise(path: &Path) -> Result<(), StoreError> {
    let not_a_vault = |reason: &str| StoreError::NotAVault {
        location: path.display().to_string(),
        reason: reason.to_string(),
    };
    let mut header = [0u8; 100];
    let read = {
        use std::io::Read;
        let mut file =
            fs::File::open(path).map_err(|e| not_a_vault(&format!("cannot read it: {e}")))?;
        let mut read = 0;
        while read < header.len() {
            match file.read(&mut header[read..]) {
                Ok(0) => break,
                Ok(n) => read += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(not_a_vault(&format!("cannot read it: {e}"))),
            }
        }
        read
    };
    if read == header.len() && header.starts_with(SQLITE_MAGIC) {
        let id = i32::from_be_bytes([header[68], header[69], header[70], header[71]]);
        if id == APPLICATION_ID {
            return Ok(());
        }
        if id != 0 {
            return Err(not_a_vault(&format!(
                "it is the SQLite database of another application (application id {id:#010x})"
            )));
        }
    } else {
        // A vault whose every page is still in its WAL (a process killed before its
        // first checkpoint) has an empty main file; anything else is not SQLite.
        let wal_len = fs::metadata(sibling(path, "-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
        if read > 0 || wal_len == 0 {
            return Err(not_a_vault(if read == 0 {
                "the file is empty; create vaults with `secret init`"
            } else {
                "not an SQLite database"
            }));
        }
    }
    recognise_by_schema(path)
}

/// The slow half of [`recognise`]: a read-only connection asks SQLite itself for the
/// application id and the tables. Without a WAL beside the file, the file alone is the
/// database, and it is opened `immutable` (no locks, no WAL or shm file created); with
/// one, SQLite must read it too, read-only.
fn recognise_by_schema(path: &Path) -> Result<(), StoreError> {
    let not_a_vault = |reason: String| StoreError::NotAVault {
        location: path.display().to_string(),
        reason,
    };
    let has_wal = fs::metadata(sibling(path, "-wal")).is_ok_and(|m| m.len() > 0);
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let opened = if has_wal {
        Connection::open_with_flags(path, flags)
    } else {
        Connection::open_with_flags(immutable_uri(path), flags | OpenFlags::SQLITE_OPEN_URI)
    };
    let conn = opened.map_err(|e| not_a_vault(format!("cannot read it as SQLite: {e}")))?;
    let looked = (|| {
        let id: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
        let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let mut stmt = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table'")?;
        let tables = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok::<_, rusqlite::Error>((id, version, tables))
    })();
    let (id, version, tables) = looked.map_err(|e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => not_a_vault("not an SQLite database".into()),
        _ => not_a_vault(format!("cannot read it as SQLite: {e}")),
    })?;
    if id == APPLICATION_ID {
        return Ok(());
    }
    if id != 0 {
        return Err(not_a_vault(format!(
            "it is the SQLite database of another application (application id {id:#010x})"
        )));
    }
    let has_vault_tables = VAULT_TABLES.iter().all(|t| tables.iter().any(|n| n == t));
    if version >= 1 && has_vault_tables {
        return Ok(());
    }
    Err(not_a_vault(if tables.is_empty() {
        "it is an SQLite database with no vault schema; create vaults with `secret init`".into()
    } else {
        "it is an SQLite database of another application (it lacks the vault's tables)".into()
    }))
}

/// A `file:` URI that opens `path` as an immutable database.
fn immutable_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file:");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/._-~".contains(&b) {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?immutable=1");
    uri
}

/// `path` with `suffix` appended (`vault.db` → `vault.db-wal`).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

impl SqliteStore {
    /// Creates a new, empty vault file (mode 0600, parent folders 0700) with the schema applied.
    pub fn create(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent() {
            create_private_dir(parent)?;
        }
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| StoreError::Create {
                path: path.to_path_buf(),
                source,
            })?;
        small_lookaside();
        let result = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(StoreError::from)
        .and_then(|conn| Self::configure(conn, path))
        .and_then(|mut store| store.migrate().map(|_| store));
        if result.is_err() {
            let _ = fs::remove_file(path);
        }
        result
    }

    /// Opens an existing vault file, applying any migrations it lacks. A file that is
    /// not a vault is refused before anything writes to it (see [`recognise`]).
    /// The caller checks that the file exists (to give the "run `secret init`" hint).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        recognise(path)?;
        Self::open_again(path)
    }

    /// Another connection to a vault file this process has open already (and so has
    /// recognised). It must not read the file itself: closing any descriptor of a file
    /// drops every POSIX lock the process holds on it, including the locks SQLite holds
    /// for the open connection; another process (even `sqlite3`) would then think it
    /// alone has the file, checkpoint, and delete the WAL and shm under it.
    pub fn open_again(path: &Path) -> Result<Self, StoreError> {
        small_lookaside();
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let mut store = Self::configure(conn, path)?;
        let version = store.user_version()?;
        if version == 0 {
            return Err(StoreError::NotAVault {
                location: path.display().to_string(),
                reason: "it has no vault schema; create vaults with `secret init`".into(),
            });
        }
        if version != SCHEMA_VERSION {
            store.migrate()?;
        }
        Ok(store)
    }

    /// An empty vault schema in memory (no file, no WAL): where `secret store copy`
    /// builds and proves a vault file before writing it, and where a PostgreSQL
    /// vault's rows become the SQLite image of a backup. [`SqliteStore::snapshot`]
    /// gives its bytes.
    pub fn in_memory() -> Result<Self, StoreError> {
        small_lookaside();
        let conn = Connection::open_in_memory()?;
        conn.execute_batch("PRAGMA foreign_keys = ON;")?;
        let mut store = Self {
            conn,
            path: PathBuf::new(),
            changed: false,
            open: None,
        };
        store.migrate()?;
        Ok(store)
    }

    /// Whether this is an [`SqliteStore::in_memory`] vault.
    fn is_memory(&self) -> bool {
        self.path.as_os_str().is_empty()
    }

    fn configure(conn: Connection, path: &Path) -> Result<Self, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let not_a_vault = |e: rusqlite::Error| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase) => StoreError::NotAVault {
                location: path.display().to_string(),
                reason: "not an SQLite database".into(),
            },
            _ => sqlite_error(e),
        };
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(not_a_vault)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NotAVault {
                location: path.display().to_string(),
                reason: format!("cannot switch it to WAL (journal mode {mode})"),
            });
        }
        conn.execute_batch(
            "PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA secure_delete = ON;",
        )?;
        // Closing is handled in `Drop` (see there), not by SQLite's checkpoint-on-close.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )?;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
            changed: false,
            open: None,
        })
    }

    fn user_version(&self) -> Result<u32, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// Applies, in order, every migration the file lacks. Refuses a file from a
    /// newer build. Idempotent.
    pub fn migrate(&mut self) -> Result<(), StoreError> {
        let found = self.user_version()?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                location: self.path.display().to_string(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        for (index, (_name, sql)) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Re-read under the lock: another process may have migrated meanwhile.
            let now: u32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if now as usize > index {
                continue;
            }
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "application_id", APPLICATION_ID)?;
            tx.pragma_update(None, "user_version", index as u32 + 1)?;
            tx.commit()?;
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw connection (tests poke the file through it).
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Moves every committed page into the main file and truncates the WAL, so old
    /// page images (e.g. of a destroyed ciphertext) do not linger in it.
    pub fn checkpoint_truncate(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// A consistent copy of the whole vault as the bytes of one SQLite file, taken with
    /// SQLite's online backup in a single step: one read transaction, so writers in
    /// other processes (a running `serve`) neither wait for it nor tear it.
    pub fn snapshot(&self) -> Result<Vec<u8>, StoreError> {
        let mut copy = Connection::open_in_memory()?;
        {
            let backup = rusqlite::backup::Backup::new(&self.conn, &mut copy)?;
            step_to_completion(&backup)?;
        }
        let image = copy.serialize(rusqlite::DatabaseName::Main)?;
        Ok(image.to_vec())
    }

    /// Replaces the whole content of the vault at `dest` with this one's, as one write
    /// transaction on `dest` (SQLite's online backup into it): another process sees the
    /// old vault or the new, and a crash leaves one or the other. Then folds the WAL
    /// into the file.
    pub fn copy_into(&self, dest: &Path) -> Result<(), StoreError> {
        let mut target = Self::open(dest)?;
        {
            let backup = rusqlite::backup::Backup::new(&self.conn, &mut target.conn)?;
            step_to_completion(&backup)?;
        }
        target.changed = true;
        target.checkpoint_truncate()
    }
}

impl Backend for SqliteStore {
    fn kind(&self) -> BackendKind {
        BackendKind::Sqlite
    }

    fn location(&self) -> String {
        if self.is_memory() {
            return "a vault in memory".into();
        }
        self.path.display().to_string()
    }

    fn schema_version(&self) -> u32 {
        SCHEMA_VERSION
    }

    /// A file already has its schema (from [`SqliteStore::create`] or
    /// [`SqliteStore::in_memory`]): this takes the write lock and checks that no
    /// table holds a row.
    fn begin_blank(&mut self) -> Result<(), StoreError> {
        self.begin(TxMode::Write(Durability::Synced))?;
        match super::image::holds_rows(self) {
            Ok(false) => Ok(()),
            Ok(true) => {
                Backend::rollback(self);
                Err(StoreError::NotEmpty {
                    location: Backend::location(self),
                    holds: "a vault".into(),
                })
            }
            Err(e) => {
                Backend::rollback(self);
                Err(e)
            }
        }
    }

    /// A write takes the lock up front (`BEGIN IMMEDIATE`), waiting out another writer
    /// for at most the busy timeout. A relaxed commit runs at `synchronous=NORMAL`:
    /// committed to the WAL, fsynced with the next synced write or checkpoint.
    fn begin(&mut self, mode: TxMode) -> Result<(), StoreError> {
        if mode == TxMode::Write(Durability::Committed) {
            self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        }
        let begun = match mode {
            TxMode::Read => self.conn.execute_batch("BEGIN DEFERRED"),
            TxMode::Write(_) => self.conn.execute_batch("BEGIN IMMEDIATE"),
        };
        match begun {
            Ok(()) => {
                self.open = Some(mode);
                Ok(())
            }
            Err(e) => {
                self.restore_synchronous(mode);
                Err(e.into())
            }
        }
    }

    fn tx(&self) -> &Tx<'_> {
        self
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        let mode = self.open.take();
        let result = self.conn.execute_batch("COMMIT");
        if result.is_err() && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        if let Some(mode) = mode {
            if result.is_ok() && mode == TxMode::Write(Durability::Synced) {
                self.changed = true;
            }
            self.restore_synchronous(mode);
        }
        Ok(result?)
    }

    fn rollback(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        if let Some(mode) = self.open.take() {
            self.restore_synchronous(mode);
        }
    }

    fn another(&self) -> Result<Box<dyn Backend>, StoreError> {
        if self.is_memory() {
            return Err(StoreError::Unsupported {
                what: "a second connection",
                location: Backend::location(self),
                instead: "write it to a file first",
            });
        }
        Ok(Box::new(Self::open_again(&self.path)?))
    }

    fn scrub(&self) -> Result<(), StoreError> {
        self.checkpoint_truncate()
    }

    fn snapshot(&self) -> Result<Vec<u8>, StoreError> {
        SqliteStore::snapshot(self)
    }

    fn as_sqlite(&self) -> Option<&SqliteStore> {
        Some(self)
    }
}

impl SqliteStore {
    fn restore_synchronous(&self, mode: TxMode) {
        if mode == TxMode::Write(Durability::Committed) {
            // If this fails the connection stays at NORMAL: durable against a crash
            // of the process, as the relaxed commit was; the next open is FULL again.
            let _ = self.conn.pragma_update(None, "synchronous", "FULL");
        }
    }
}

/// Runs an online backup in one step (all pages under one lock), waiting out a busy
/// peer for at most the busy timeout.
fn step_to_completion(backup: &rusqlite::backup::Backup<'_, '_>) -> Result<(), StoreError> {
    use rusqlite::backup::StepResult;
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match backup.step(-1)? {
            StepResult::Done => return Ok(()),
            StepResult::More => {}
            StepResult::Busy | StepResult::Locked => {
                if std::time::Instant::now() > deadline {
                    return Err(StoreError::Busy);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // `StepResult` is non-exhaustive.
            _ => {}
        }
    }
}

/// Shrinks SQLite's per-connection lookaside allocator from 48 KiB to 8 KiB, once, before
/// the first connection. SQLite writes through the whole lookaside block when a connection
/// opens; in a short CLI process those are a dozen fresh pages to fault in before any work
/// (a `secret get` costs a few hundred microseconds of page faults in all), while statement
/// memory beyond it comes from the heap the process already touched.
///
/// It also turns off SQLite's memory statistics, which take a mutex and update counters
/// on every allocation (opening a vault parses the whole schema: thousands of them); we
/// never read them and set no soft heap limit that would need them.
fn small_lookaside() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: SQLITE_CONFIG_LOOKASIDE takes two ints. Called before any connection
        // exists; if SQLite was already initialised it returns SQLITE_MISUSE and keeps
        // its defaults, which is harmless.
        unsafe {
            rusqlite::ffi::sqlite3_config(
                rusqlite::ffi::SQLITE_CONFIG_LOOKASIDE,
                128 as std::os::raw::c_int,
                64 as std::os::raw::c_int,
            );
        }
        // SAFETY: SQLITE_CONFIG_MEMSTATUS takes one int; same timing as above.
        unsafe {
            rusqlite::ffi::sqlite3_config(
                rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS,
                0 as std::os::raw::c_int,
            );
        }
    });
}

/// WAL frames (of a 4 KiB page) a closing connection leaves for the next process.
const WAL_KEEP_BYTES: u64 = 64 * (4096 + 24);

impl Drop for SqliteStore {
    /// Each CLI command is a short process. SQLite's own checkpoint-on-close would
    /// cost every command several fsyncs and delete and recreate the WAL; never
    /// checkpointing is worse, because the next process then rebuilds its WAL index by
    /// reading every frame. So a connection that changed something folds the WAL into
    /// the database and truncates it on close (the file alone then holds every change,
    /// which is what a copy of it needs), while a read-only command leaves a small WAL
    /// (at most the audit entries of a few reads) for the next process. It does not
    /// wait for readers (a running `serve`): their own checkpoints take over.
    /// Durability is unaffected either way: every commit is already in the WAL.
    fn drop(&mut self) {
        if self.is_memory() {
            return;
        }
        let wal_len = fs::metadata(sibling(&self.path, "-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
        if wal_len > 0 && (self.changed || wal_len > WAL_KEEP_BYTES) {
            let _ = self.conn.busy_timeout(Duration::ZERO);
            let _ = self.checkpoint_truncate();
        }
    }
}

fn opt_u64(v: Option<i64>) -> Option<u64> {
    v.map(|n| n as u64)
}

fn secret_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SecretRow> {
    Ok(SecretRow {
        name: r.get(0)?,
        description: r.get(1)?,
        created_at_ms: r.get(2)?,
        updated_at_ms: r.get(3)?,
        deleted_at_ms: r.get(4)?,
        latest_version: r.get::<_, i64>(5)? as u64,
        current_version: opt_u64(r.get(6)?),
        pending_version: opt_u64(r.get(7)?),
        previous_version: opt_u64(r.get(8)?),
    })
}

const SECRET_COLUMNS: &str = "name, description, created_at, updated_at, deleted_at, \
     latest_version, current_version, pending_version, previous_version";

fn entry_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    Ok(Entry {
        seq: r.get::<_, i64>(0)? as u64,
        at_ms: r.get(1)?,
        actor: r.get(2)?,
        pid: r.get::<_, Option<i64>>(3)?.map(|p| p as u32),
        action: r.get(4)?,
        secret: r.get(5)?,
        version: opt_u64(r.get(6)?),
        outcome: r.get(7)?,
        request_id: r.get(8)?,
        details: r.get(9)?,
        mac: r.get(10)?,
    })
}

const ROTATION_COLUMNS: &str = "id, secret, generator, trigger, state, outcome, old_version, \
     new_version, started_at, updated_at, finished_at, revoke_after, revoked_at, error, \
     provider_state, deployments";

/// Column `index` as one of the rotation vocabulary's enums; unknown text is corrupt.
fn text_column<T: FromStr<Err = UnknownText>>(
    r: &rusqlite::Row<'_>,
    index: usize,
) -> rusqlite::Result<T> {
    let text: String = r.get(index)?;
    text.parse().map_err(|e: UnknownText| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn rotation_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RotationRow> {
    let outcome: Option<String> = r.get(5)?;
    Ok(RotationRow {
        id: r.get(0)?,
        secret: r.get(1)?,
        generator: r.get(2)?,
        trigger: text_column(r, 3)?,
        state: text_column(r, 4)?,
        outcome: match outcome {
            Some(text) => Some(text.parse().map_err(|e: UnknownText| {
                rusqlite::Error::FromSqlConversionFailure(
                    5,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?),
            None => None,
        },
        old_version: opt_u64(r.get(6)?),
        new_version: opt_u64(r.get(7)?),
        started_at_ms: r.get(8)?,
        updated_at_ms: r.get(9)?,
        finished_at_ms: r.get(10)?,
        revoke_after_ms: r.get(11)?,
        revoked_at_ms: r.get(12)?,
        error: r.get(13)?,
        provider_state: r.get(14)?,
        deployments: r.get(15)?,
    })
}

const TOKEN_COLUMNS: &str =
    "id, name, hash, scopes, created_at, expires_at, revoked_at, last_used_at";

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
    let scopes: String = r.get(3)?;
    Ok(TokenRow {
        id: r.get(0)?,
        name: r.get(1)?,
        hash: r.get(2)?,
        scopes: serde_json::from_str(&scopes).unwrap_or_default(),
        created_at_ms: r.get(4)?,
        expires_at_ms: r.get(5)?,
        revoked_at_ms: r.get(6)?,
        last_used_at_ms: r.get(7)?,
    })
}

/// One stored value as a [`image::Cell`] of the column's declared kind; a value of
/// another kind (SQLite keeps whatever it is given) is a corrupt row, not a guess.
fn sqlite_cell(
    table: &'static str,
    column: &str,
    kind: image::ColumnType,
    value: rusqlite::types::ValueRef<'_>,
) -> Result<image::Cell, StoreError> {
    use image::{Cell, ColumnType};
    use rusqlite::types::ValueRef;
    let found = match value {
        ValueRef::Null => return Ok(Cell::Null),
        ValueRef::Integer(n) if kind == ColumnType::Int => return Ok(Cell::Int(n)),
        ValueRef::Text(t) if kind == ColumnType::Text => match std::str::from_utf8(t) {
            Ok(text) => return Ok(Cell::Text(text.to_string())),
            Err(_) => "text that is not UTF-8",
        },
        ValueRef::Blob(b) if kind == ColumnType::Blob => return Ok(Cell::Blob(b.to_vec())),
        ValueRef::Integer(_) => "an integer",
        ValueRef::Real(_) => "a real number",
        ValueRef::Text(_) => "text",
        ValueRef::Blob(_) => "a blob",
    };
    Err(StoreError::Corrupt {
        table,
        reason: format!("column {column} holds {found}, not {kind:?}"),
    })
}

/// A cell bound as a statement parameter, without copying it.
struct SqlCell<'a>(&'a image::Cell);

impl rusqlite::ToSql for SqlCell<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self.0 {
            image::Cell::Null => ValueRef::Null,
            image::Cell::Int(n) => ValueRef::Integer(*n),
            image::Cell::Text(t) => ValueRef::Text(t.as_bytes()),
            image::Cell::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

const ENTRY_COLUMNS: &str =
    "seq, at_ms, actor, pid, action, secret, version, outcome, request_id, details, mac";
impl StoreTx for SqliteStore {
    // --- vault identity and keyring -------------------------------------------------

    fn vault_row(&self) -> Result<Option<VaultRow>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT vault_id, key_check, created_at FROM vault WHERE id = 1",
                [],
                |r| {
                    Ok(VaultRow {
                        vault_id: r.get(0)?,
                        key_check: r.get(1)?,
                        created_at_ms: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    fn insert_vault_row(&self, row: &VaultRow) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO vault (id, vault_id, key_check, created_at) VALUES (1, ?1, ?2, ?3)",
            params![row.vault_id, row.key_check, row.created_at_ms],
        )?;
        Ok(())
    }

    /// The key check of the vault key in force (it changes with every rekey).
    fn key_check(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key_check FROM vault WHERE id = 1")?;
        Ok(stmt.query_row([], |r| r.get(0)).optional()?)
    }

    fn set_key_check(&self, key_check: &[u8]) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE vault SET key_check = ?1 WHERE id = 1",
            params![key_check],
        )?;
        Ok(())
    }

    fn delete_keyring(&self, kind: KeyringKind) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM keyring WHERE kind = ?1", [kind.as_str()])?;
        Ok(())
    }

    /// The audit keys of retired key epochs, oldest first.
    fn retired_keys(&self) -> Result<Vec<RetiredKeyRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT epoch, retired_at, retired_seq, nonce, audit_key FROM retired_keys ORDER BY epoch",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(RetiredKeyRow {
                epoch: r.get::<_, i64>(0)? as u64,
                retired_at_ms: r.get(1)?,
                retired_seq: r.get::<_, i64>(2)? as u64,
                nonce: r.get(3)?,
                sealed_key: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Inserts a retired epoch's key, or re-seals one already kept.
    fn put_retired_key(&self, row: &RetiredKeyRow) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO retired_keys (epoch, retired_at, retired_seq, nonce, audit_key)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (epoch) DO UPDATE SET nonce = excluded.nonce, audit_key = excluded.audit_key",
            params![
                row.epoch as i64,
                row.retired_at_ms,
                row.retired_seq as i64,
                row.nonce,
                row.sealed_key
            ],
        )?;
        Ok(())
    }

    fn keyring(&self) -> Result<Vec<KeyringRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT kind, recipients, wrapped_key FROM keyring ORDER BY kind")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (kind, recipients, wrapped_key) = row?;
            let kind = match kind.as_str() {
                "recipients" => KeyringKind::Recipients,
                "passphrase" => KeyringKind::Passphrase,
                other => {
                    return Err(StoreError::Corrupt {
                        table: "keyring",
                        reason: format!("unknown kind {other:?}"),
                    })
                }
            };
            let recipients = recipients
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            out.push(KeyringRow {
                kind,
                recipients,
                wrapped_key,
            });
        }
        Ok(out)
    }

    /// The MAC over the number of secrets (`None` before a vault's metadata is sealed).
    fn census(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT census FROM vault WHERE id = 1")?;
        Ok(stmt
            .query_row([], |r| r.get::<_, Option<Vec<u8>>>(0))
            .optional()?
            .flatten())
    }

    fn set_census(&self, mac: &[u8]) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("UPDATE vault SET census = ?1 WHERE id = 1")?;
        stmt.execute([mac])?;
        Ok(())
    }

    /// How many secrets (deleted ones too) the vault holds.
    fn count_secrets(&self) -> Result<u64, StoreError> {
        let mut stmt = self.conn.prepare_cached("SELECT count(*) FROM secrets")?;
        Ok(stmt.query_row([], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Every secret's name, in order.
    fn secret_names(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name FROM secrets ORDER BY name")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn put_keyring(&self, row: &KeyringRow, now_ms: i64) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO keyring (kind, recipients, wrapped_key, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (kind) DO UPDATE SET recipients = excluded.recipients,
               wrapped_key = excluded.wrapped_key, updated_at = excluded.updated_at",
            params![row.kind.as_str(), row.recipients.join("\n"), row.wrapped_key, now_ms],
        )?;
        Ok(())
    }

    // --- secrets and versions --------------------------------------------------------

    fn secret(&self, name: &str) -> Result<Option<SecretRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {SECRET_COLUMNS} FROM secrets WHERE name = ?1"
        ))?;
        Ok(stmt.query_row([name], secret_row).optional()?)
    }

    /// A secret's row and its metadata MAC (`None` when the MAC is missing).
    fn secret_with_mac(&self, name: &str) -> Result<Option<(SecretRow, Option<Mac>)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {SECRET_COLUMNS}, mac FROM secrets WHERE name = ?1"
        ))?;
        Ok(stmt
            .query_row([name], |r| Ok((secret_row(r)?, r.get(9)?)))
            .optional()?)
    }

    fn set_secret_mac(&self, name: &str, mac: &[u8]) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("UPDATE secrets SET mac = ?2 WHERE name = ?1")?;
        stmt.execute(params![name, mac])?;
        Ok(())
    }

    /// What the metadata MAC covers of each version of a secret, oldest first.
    fn version_facts(&self, name: &str) -> Result<Vec<VersionFacts>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT version, created_at, destroyed_at,
                    nonce IS NOT NULL AND ciphertext IS NOT NULL, meta
             FROM versions WHERE name = ?1 ORDER BY version",
        )?;
        let rows = stmt.query_map([name], |r| {
            Ok(VersionFacts {
                version: r.get::<_, i64>(0)? as u64,
                created_at_ms: r.get(1)?,
                destroyed_at_ms: r.get(2)?,
                sealed: r.get(3)?,
                meta: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Inserts or replaces a secret's row. Its metadata MAC must be renewed after.
    fn save_secret(&self, row: &SecretRow) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "INSERT INTO secrets ({SECRET_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (name) DO UPDATE SET description = excluded.description,
               updated_at = excluded.updated_at, deleted_at = excluded.deleted_at,
               latest_version = excluded.latest_version, current_version = excluded.current_version,
               pending_version = excluded.pending_version, previous_version = excluded.previous_version"
        ))?;
        stmt.execute(params![
            row.name,
            row.description,
            row.created_at_ms,
            row.updated_at_ms,
            row.deleted_at_ms,
            row.latest_version as i64,
            row.current_version.map(|v| v as i64),
            row.pending_version.map(|v| v as i64),
            row.previous_version.map(|v| v as i64),
        ])?;
        Ok(())
    }

    fn version(
        &self,
        name: &str,
        version: VersionNumber,
    ) -> Result<Option<VersionRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT version, created_at, nonce, ciphertext, destroyed_at, meta
             FROM versions WHERE name = ?1 AND version = ?2",
        )?;
        Ok(stmt
            .query_row(params![name, version.get() as i64], |r| {
                Ok(VersionRow {
                    version: r.get::<_, i64>(0)? as u64,
                    created_at_ms: r.get(1)?,
                    nonce: r.get(2)?,
                    ciphertext: r.get(3)?,
                    destroyed_at_ms: r.get(4)?,
                    meta: r.get(5)?,
                })
            })
            .optional()?)
    }

    fn insert_version(
        &self,
        name: &str,
        version: VersionNumber,
        now_ms: i64,
        nonce: &[u8],
        ciphertext: &[u8],
        meta: &str,
    ) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO versions (name, version, created_at, nonce, ciphertext, meta)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        stmt.execute(params![
            name,
            version.get() as i64,
            now_ms,
            nonce,
            ciphertext,
            meta
        ])?;
        Ok(())
    }

    /// Wipes one version's sealed bytes for good.
    fn destroy_version(
        &self,
        name: &str,
        version: VersionNumber,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE versions SET nonce = NULL, ciphertext = NULL, destroyed_at = ?3
             WHERE name = ?1 AND version = ?2",
            params![name, version.get() as i64, now_ms],
        )?;
        Ok(())
    }

    /// How many versions still hold sealed bytes (not destroyed).
    fn count_sealed_versions(&self) -> Result<u64, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM versions WHERE ciphertext IS NOT NULL")?;
        Ok(stmt.query_row([], |r| r.get::<_, i64>(0))? as u64)
    }

    /// The next `limit` versions holding sealed bytes after `(name, version)` (from the
    /// start when `None`), in (name, version) order: a rekey or a proof walks every
    /// sealed version a page at a time.
    fn sealed_versions_after(
        &self,
        after: Option<(&str, u64)>,
        limit: u64,
    ) -> Result<Vec<SealedVersion>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, version, nonce, ciphertext FROM versions
             WHERE ciphertext IS NOT NULL AND nonce IS NOT NULL
               AND (?1 IS NULL OR (name, version) > (?1, ?2))
             ORDER BY name, version LIMIT ?3",
        )?;
        let (name, version) = match after {
            Some((n, v)) => (Some(n), v as i64),
            None => (None, 0),
        };
        let rows = stmt.query_map(
            params![name, version, limit.min(i64::MAX as u64) as i64],
            |r| {
                Ok(SealedVersion {
                    name: r.get(0)?,
                    version: r.get::<_, i64>(1)? as u64,
                    nonce: r.get(2)?,
                    ciphertext: r.get(3)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Replaces one version's sealed bytes (a rekey re-encrypting it).
    fn reseal_version(
        &self,
        name: &str,
        version: u64,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE versions SET nonce = ?3, ciphertext = ?4
             WHERE name = ?1 AND version = ?2 AND ciphertext IS NOT NULL",
        )?;
        let n = stmt.execute(params![name, version as i64, nonce, ciphertext])?;
        if n != 1 {
            return Err(StoreError::Corrupt {
                table: "versions",
                reason: format!("version {version} of {name} vanished while it was re-encrypted"),
            });
        }
        Ok(())
    }

    /// Versions of one secret, oldest first, without their sealed bytes.
    fn versions_of(&self, name: &str) -> Result<Vec<VersionRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT version, created_at, destroyed_at, meta FROM versions WHERE name = ?1 ORDER BY version",
        )?;
        let rows = stmt.query_map([name], |r| {
            Ok(VersionRow {
                version: r.get::<_, i64>(0)? as u64,
                created_at_ms: r.get(1)?,
                nonce: None,
                ciphertext: None,
                destroyed_at_ms: r.get(2)?,
                meta: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every secret's metadata, by name.
    fn list_secrets(&self, include_deleted: bool) -> Result<Vec<SecretMeta>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT s.name, s.description, s.created_at, s.updated_at, s.deleted_at,
                    s.latest_version, s.current_version, s.pending_version, s.previous_version,
                    (SELECT COUNT(*) FROM versions v WHERE v.name = s.name AND v.destroyed_at IS NULL)
             FROM secrets s WHERE ?1 OR s.deleted_at IS NULL ORDER BY s.name",
        )?;
        let rows = stmt.query_map([include_deleted], |r| {
            let row = secret_row(r)?;
            Ok(SecretMeta {
                name: row.name,
                description: row.description,
                created_at_ms: row.created_at_ms,
                updated_at_ms: row.updated_at_ms,
                deleted_at_ms: row.deleted_at_ms,
                latest_version: row.latest_version,
                current_version: row.current_version,
                pending_version: row.pending_version,
                previous_version: row.previous_version,
                live_versions: r.get::<_, i64>(9)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // --- rotations ---------------------------------------------------------------------

    fn save_rotation(&self, row: &RotationRow) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "INSERT INTO rotations ({ROTATION_COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
             ON CONFLICT (id) DO UPDATE SET state = excluded.state, outcome = excluded.outcome,
               old_version = excluded.old_version, new_version = excluded.new_version,
               updated_at = excluded.updated_at, finished_at = excluded.finished_at,
               revoke_after = excluded.revoke_after, revoked_at = excluded.revoked_at,
               error = excluded.error, provider_state = excluded.provider_state,
               deployments = excluded.deployments"
        ))?;
        stmt.execute(params![
            row.id,
            row.secret,
            row.generator,
            row.trigger.as_str(),
            row.state.as_str(),
            row.outcome.map(RunOutcome::as_str),
            row.old_version.map(|v| v as i64),
            row.new_version.map(|v| v as i64),
            row.started_at_ms,
            row.updated_at_ms,
            row.finished_at_ms,
            row.revoke_after_ms,
            row.revoked_at_ms,
            row.error,
            row.provider_state,
            row.deployments,
        ])?;
        Ok(())
    }

    fn rotation(&self, id: &str) -> Result<Option<RotationRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ROTATION_COLUMNS} FROM rotations WHERE id = ?1"
        ))?;
        Ok(stmt.query_row([id], rotation_row).optional()?)
    }

    /// Rotations, newest first, optionally of one secret.
    fn rotations(&self, secret: Option<&str>, limit: u64) -> Result<Vec<RotationRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ROTATION_COLUMNS} FROM rotations WHERE (?1 IS NULL OR secret = ?1)
             ORDER BY started_at DESC, id DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(
            params![secret, limit.min(i64::MAX as u64) as i64],
            rotation_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Rotations still in progress or waiting for their revoke step, oldest first.
    fn open_rotations(&self) -> Result<Vec<RotationRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ROTATION_COLUMNS} FROM rotations
             WHERE state NOT IN ('done', 'rolled_back', 'failed') ORDER BY started_at, id"
        ))?;
        let rows = stmt.query_map([], rotation_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The id of a rotation of `secret` that is running or interrupted (not one that
    /// only waits for its revoke step).
    fn rotation_in_progress(&self, secret: &str) -> Result<Option<String>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id FROM rotations WHERE secret = ?1
             AND state NOT IN ('done', 'rolled_back', 'failed', 'grace') LIMIT 1",
        )?;
        Ok(stmt.query_row([secret], |r| r.get(0)).optional()?)
    }

    fn insert_step(
        &self,
        rotation_id: &str,
        step: Step,
        status: StepStatus,
        at_ms: i64,
        detail: &str,
    ) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO rotation_steps (rotation_id, seq, step, status, at_ms, detail)
             VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM rotation_steps WHERE rotation_id = ?1),
                     ?2, ?3, ?4, ?5)",
        )?;
        stmt.execute(params![
            rotation_id,
            step.as_str(),
            status.as_str(),
            at_ms,
            detail
        ])?;
        Ok(())
    }

    fn steps(&self, rotation_id: &str) -> Result<Vec<StepRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, step, status, at_ms, detail FROM rotation_steps
             WHERE rotation_id = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([rotation_id], |r| {
            Ok(StepRow {
                seq: r.get::<_, i64>(0)? as u64,
                step: text_column(r, 1)?,
                status: text_column(r, 2)?,
                at_ms: r.get(3)?,
                detail: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // --- savepoints: several operations in one transaction, each undone alone ----------

    fn savepoint(&self) -> Result<(), StoreError> {
        self.conn.execute_batch("SAVEPOINT op")?;
        Ok(())
    }

    fn release(&self) -> Result<(), StoreError> {
        self.conn.execute_batch("RELEASE op")?;
        Ok(())
    }

    fn rollback_to_savepoint(&self) -> Result<(), StoreError> {
        self.conn.execute_batch("ROLLBACK TO op; RELEASE op")?;
        Ok(())
    }

    // --- tokens ------------------------------------------------------------------------

    fn insert_token(&self, row: &TokenRow) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO tokens (id, name, hash, scopes, created_at, expires_at, revoked_at, last_used_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                row.id,
                row.name,
                row.hash,
                serde_json::to_string(&row.scopes).unwrap_or_else(|_| "[]".into()),
                row.created_at_ms,
                row.expires_at_ms,
                row.revoked_at_ms,
                row.last_used_at_ms
            ],
        )?;
        Ok(())
    }

    fn token(&self, id: &str) -> Result<Option<TokenRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?1"))?;
        Ok(stmt.query_row([id], token_row).optional()?)
    }

    fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at, id"
        ))?;
        let rows = stmt.query_map([], token_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn revoke_token(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, now_ms],
        )?;
        Ok(n > 0)
    }

    /// Revokes every token not yet revoked; returns how many.
    fn revoke_all_tokens(&self, now_ms: i64) -> Result<u64, StoreError> {
        let n = self.conn.execute(
            "UPDATE tokens SET revoked_at = ?1 WHERE revoked_at IS NULL",
            params![now_ms],
        )?;
        Ok(n as u64)
    }

    /// A token's metadata MAC (`None` when missing or the token does not exist).
    fn token_mac(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT mac FROM tokens WHERE id = ?1")?;
        Ok(stmt
            .query_row([id], |r| r.get::<_, Option<Vec<u8>>>(0))
            .optional()?
            .flatten())
    }

    fn set_token_mac(&self, id: &str, mac: &[u8]) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("UPDATE tokens SET mac = ?2 WHERE id = ?1")?;
        stmt.execute(params![id, mac])?;
        Ok(())
    }

    fn touch_token(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("UPDATE tokens SET last_used_at = ?2 WHERE id = ?1")?;
        stmt.execute(params![id, now_ms])?;
        Ok(())
    }

    // --- locks -------------------------------------------------------------------------

    /// The current holder of a lock and when its lease ends.
    fn lock(&self, name: &str) -> Result<Option<(String, i64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT holder, expires_at FROM locks WHERE name = ?1")?;
        Ok(stmt
            .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    fn put_lock(&self, name: &str, holder: &str, expires_at_ms: i64) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO locks (name, holder, expires_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at",
            params![name, holder, expires_at_ms],
        )?;
        Ok(())
    }

    fn delete_lock(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "DELETE FROM locks WHERE name = ?1 AND holder = ?2",
            params![name, holder],
        )?;
        Ok(())
    }

    fn lock_epoch(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT epoch FROM locks WHERE name = ?1")?;
        Ok(stmt
            .query_row([name], |r| r.get::<_, i64>(0))
            .optional()?
            .map(|e| e as u64))
    }

    fn set_lock_epoch(&self, name: &str, epoch: u64) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE locks SET epoch = ?2 WHERE name = ?1",
            params![name, epoch as i64],
        )?;
        Ok(())
    }

    fn delete_locks_held_by(&self, holder: &str) -> Result<u64, StoreError> {
        let n = self
            .conn
            .execute("DELETE FROM locks WHERE holder = ?1", params![holder])?;
        Ok(n as u64)
    }

    // --- audit -----------------------------------------------------------------------

    fn audit_head(&self) -> Result<Option<Head>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, mac, seal FROM audit_head WHERE id = 1")?;
        Ok(stmt
            .query_row([], |r| {
                Ok(Head {
                    seq: r.get::<_, i64>(0)? as u64,
                    mac: r.get(1)?,
                    seal: r.get(2)?,
                })
            })
            .optional()?)
    }

    /// The first and last sequence numbers in the log, and the MAC of entry `seq`:
    /// what the sealed head is checked against before each append. Each is one
    /// index lookup (SQLite answers a lone min() or max() from the b-tree's edge).
    fn audit_bounds(&self, seq: u64) -> Result<AuditBounds, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT (SELECT min(seq) FROM audit_log), (SELECT max(seq) FROM audit_log),
                    (SELECT mac FROM audit_log WHERE seq = ?1)",
        )?;
        Ok(stmt.query_row([seq as i64], |r| {
            Ok(AuditBounds {
                first: opt_u64(r.get(0)?),
                last: opt_u64(r.get(1)?),
                mac_at: r.get(2)?,
            })
        })?)
    }

    /// Appends one entry and moves the head to it.
    fn append_audit(&self, entry: &Entry, head: &Head) -> Result<(), StoreError> {
        let mut insert = self.conn.prepare_cached(&format!(
            "INSERT INTO audit_log ({ENTRY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
        ))?;
        insert.execute(params![
            entry.seq as i64,
            entry.at_ms,
            entry.actor,
            entry.pid.map(i64::from),
            entry.action,
            entry.secret,
            entry.version.map(|v| v as i64),
            entry.outcome,
            entry.request_id,
            entry.details,
            entry.mac,
        ])?;
        let mut head_stmt = self.conn.prepare_cached(
            "INSERT INTO audit_head (id, seq, mac, seal) VALUES (1, ?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, mac = excluded.mac, seal = excluded.seal",
        )?;
        head_stmt.execute(params![head.seq as i64, head.mac, head.seal])?;
        Ok(())
    }

    /// Moves the head record (a rekey re-seals it under the new audit key).
    fn set_audit_head(&self, head: &Head) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO audit_head (id, seq, mac, seal) VALUES (1, ?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, mac = excluded.mac, seal = excluded.seal",
        )?;
        stmt.execute(params![head.seq as i64, head.mac, head.seal])?;
        Ok(())
    }

    /// The entry with sequence number `seq`.
    fn audit_entry(&self, seq: u64) -> Result<Option<Entry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ENTRY_COLUMNS} FROM audit_log WHERE seq = ?1"
        ))?;
        Ok(stmt.query_row([seq as i64], entry_row).optional()?)
    }

    /// Entries matching a filter, oldest first (the newest `limit` when limited).
    fn query_audit(&self, filter: &AuditFilter) -> Result<Vec<Entry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT * FROM (
               SELECT {ENTRY_COLUMNS} FROM audit_log
               WHERE (?1 IS NULL OR secret = ?1)
                 AND (?2 IS NULL OR action = ?2 OR action LIKE ?2 || '.%')
                 AND (?3 IS NULL OR actor = ?3 OR actor = 'user:' || ?3 OR actor = 'token:' || ?3)
                 AND (?4 IS NULL OR at_ms >= ?4)
                 AND (?6 IS NULL OR seq < ?6)
               ORDER BY seq DESC LIMIT ?5)
             ORDER BY seq"
        ))?;
        let limit = filter
            .limit
            .map(|l| l.min(i64::MAX as u64) as i64)
            .unwrap_or(-1);
        let rows = stmt.query_map(
            params![
                filter.secret,
                filter.action,
                filter.actor,
                filter.since_ms,
                limit,
                filter.before_seq.map(|s| s.min(i64::MAX as u64) as i64)
            ],
            entry_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records an event that happened before the vault key was available.
    fn insert_unkeyed(&self, event: &UnkeyedEvent) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO audit_unkeyed (at_ms, actor, pid, action, outcome, request_id, details)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                event.at_ms,
                event.actor,
                event.pid.map(i64::from),
                event.action,
                event.outcome,
                event.request_id,
                event.details
            ],
        )?;
        Ok(())
    }

    fn has_unkeyed(&self) -> Result<bool, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM audit_unkeyed)")?;
        Ok(stmt.query_row([], |r| r.get(0))?)
    }

    /// Removes and returns every unkeyed event, oldest first.
    fn take_unkeyed(&self) -> Result<Vec<UnkeyedEvent>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT at_ms, actor, pid, action, outcome, request_id, details
             FROM audit_unkeyed ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(UnkeyedEvent {
                at_ms: r.get(0)?,
                actor: r.get(1)?,
                pid: r.get::<_, Option<i64>>(2)?.map(|p| p as u32),
                action: r.get(3)?,
                outcome: r.get(4)?,
                request_id: r.get(5)?,
                details: r.get(6)?,
            })
        })?;
        let events = rows.collect::<Result<Vec<_>, _>>()?;
        self.conn.execute("DELETE FROM audit_unkeyed", [])?;
        Ok(events)
    }

    fn audit_page(&self, after: u64, limit: u64) -> Result<Vec<Entry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ENTRY_COLUMNS} FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2"
        ))?;
        let rows = stmt.query_map(
            params![
                after.min(i64::MAX as u64) as i64,
                limit.min(i64::MAX as u64) as i64
            ],
            entry_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn delete_version(&self, name: &str, version: u64) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("DELETE FROM versions WHERE name = ?1 AND version = ?2")?;
        stmt.execute(params![name, version as i64])?;
        Ok(())
    }

    // --- the whole vault as rows -------------------------------------------------------

    fn count_rows(&self, table: &'static image::TableSpec) -> Result<u64, StoreError> {
        let n: i64 =
            self.conn
                .query_row(&format!("SELECT count(*) FROM {}", table.name), [], |r| {
                    r.get(0)
                })?;
        Ok(n as u64)
    }

    fn scan_rows(
        &self,
        table: &'static image::TableSpec,
        sink: &mut dyn FnMut(&[image::RowImage]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {} FROM {} ORDER BY {}",
            table.column_list(),
            table.name,
            table.order_by
        ))?;
        let mut rows = stmt.query([])?;
        let mut page = Vec::with_capacity(image::PAGE_ROWS);
        while let Some(row) = rows.next()? {
            let mut cells = Vec::with_capacity(table.columns.len());
            for (index, (column, kind)) in table.columns.iter().enumerate() {
                cells.push(sqlite_cell(table.name, column, *kind, row.get_ref(index)?)?);
            }
            page.push(cells);
            if page.len() == image::PAGE_ROWS {
                sink(&page)?;
                page.clear();
            }
        }
        if !page.is_empty() {
            sink(&page)?;
        }
        Ok(())
    }

    fn insert_rows(
        &self,
        table: &'static image::TableSpec,
        rows: &[image::RowImage],
    ) -> Result<(), StoreError> {
        let placeholders: Vec<String> =
            (1..=table.columns.len()).map(|i| format!("?{i}")).collect();
        let mut stmt = self.conn.prepare_cached(&format!(
            "INSERT INTO {} ({}) VALUES ({})",
            table.name,
            table.column_list(),
            placeholders.join(", ")
        ))?;
        for row in rows {
            if row.len() != table.columns.len() {
                return Err(StoreError::Corrupt {
                    table: table.name,
                    reason: format!(
                        "a row of {} cells for {} columns",
                        row.len(),
                        table.columns.len()
                    ),
                });
            }
            stmt.execute(rusqlite::params_from_iter(row.iter().map(SqlCell)))?;
        }
        Ok(())
    }

    fn clear_rows(&self, table: &'static image::TableSpec) -> Result<(), StoreError> {
        self.conn
            .execute(&format!("DELETE FROM {}", table.name), [])?;
        Ok(())
    }
}
/// The store's own tests drive a connection directly, without the vault's `Store`.
#[cfg(test)]
impl SqliteStore {
    fn run_test<T, E: From<StoreError>>(
        &mut self,
        mode: TxMode,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.begin(mode)?;
        match f(self) {
            Ok(v) => {
                Backend::commit(self)?;
                Ok(v)
            }
            Err(e) => {
                Backend::rollback(self);
                Err(e)
            }
        }
    }

    pub(crate) fn write<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.run_test(TxMode::Write(Durability::Synced), f)
    }

    pub(crate) fn read<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.run_test(TxMode::Read, f)
    }
}

#[cfg(test)]
mod tests {
    use super::SqliteStore as Store;
    use super::*;

    fn tables(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// The copy's table list names every table and column the migrations make (a
    /// column added later and not listed would be silently left behind by a copy).
    #[test]
    fn the_copy_lists_every_table_and_column_of_the_schema() {
        let store = SqliteStore::in_memory().unwrap();
        let mut found = Vec::new();
        for table in tables(&store.conn) {
            let mut stmt = store
                .conn
                .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
                .unwrap();
            let mut columns: Vec<String> = stmt
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            columns.sort();
            found.push((table, columns));
        }
        let mut listed: Vec<(String, Vec<String>)> = image::TABLES
            .iter()
            .map(|t| {
                let mut columns: Vec<String> = t
                    .columns
                    .iter()
                    .map(|(c, _)| c.to_string())
                    .chain(t.generated.iter().map(|c| c.to_string()))
                    .collect();
                columns.sort();
                (t.name.to_string(), columns)
            })
            .collect();
        listed.sort();
        assert_eq!(found, listed);
    }

    /// Rows copied into another store read back byte for byte (the same digest), a
    /// store holding rows is not blank, and a copy rolled back leaves none.
    #[test]
    fn rows_copy_whole_and_a_taken_store_is_not_blank() {
        let mut from = SqliteStore::in_memory().unwrap();
        from.write(|tx| {
            tx.insert_vault_row(&vault_row(1))?;
            tx.insert_unkeyed(&UnkeyedEvent {
                at_ms: 5,
                actor: "a".into(),
                pid: None,
                action: "unlock".into(),
                outcome: "locked".into(),
                request_id: "r".into(),
                details: "{}".into(),
            })
        })
        .unwrap();
        let mut to = SqliteStore::in_memory().unwrap();
        Backend::begin(&mut from, TxMode::Read).unwrap();
        to.begin_blank().unwrap();
        let copied = image::copy_rows(&from, &to, &mut |_| {}).unwrap();
        assert_eq!(copied, image::digest_rows(&to).unwrap());
        assert_eq!(copied.total(), 2);
        Backend::rollback(&mut to);
        assert_eq!(image::digest_rows(&to).unwrap().total(), 0);
        to.begin_blank().unwrap();
        image::copy_rows(&from, &to, &mut |_| {}).unwrap();
        Backend::commit(&mut to).unwrap();
        Backend::rollback(&mut from);
        assert!(matches!(
            to.begin_blank().unwrap_err(),
            StoreError::NotEmpty { .. }
        ));
    }

    #[test]
    fn migrations_apply_to_an_empty_database_and_reapply_idempotently() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.db");
        let store = Store::create(&path).unwrap();
        assert_eq!(store.user_version().unwrap(), SCHEMA_VERSION);
        let before = tables(&store.conn);
        assert!(before.contains(&"secrets".to_string()));
        assert!(before.contains(&"audit_log".to_string()));
        drop(store);
        let mut store = Store::open(&path).unwrap();
        store.migrate().unwrap();
        assert_eq!(store.user_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(tables(&store.conn), before);
    }

    fn rotation(id: &str, state: RunState, trigger: Trigger) -> RotationRow {
        RotationRow::begun(
            id.into(),
            "S".into(),
            "random".into(),
            trigger,
            state,
            None,
            1,
        )
    }

    #[test]
    fn the_rotation_checks_accept_every_known_text_and_refuse_any_other() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::create(&dir.path().join("v.db")).unwrap();
        store
            .write(|tx| {
                for (i, state) in RunState::ALL.iter().enumerate() {
                    let trigger = Trigger::ALL[i % Trigger::ALL.len()];
                    let mut row = rotation(&format!("rot_{i}"), *state, trigger);
                    row.outcome = Some(RunOutcome::ALL[i % RunOutcome::ALL.len()]);
                    tx.save_rotation(&row)?;
                }
                for step in Step::ALL {
                    for status in StepStatus::ALL {
                        tx.insert_step("rot_0", *step, *status, 1, "{}")?;
                    }
                }
                Ok::<_, StoreError>(())
            })
            .unwrap();
        let steps = store.read(|tx| tx.steps("rot_0")).unwrap();
        assert_eq!(steps.len(), Step::ALL.len() * StepStatus::ALL.len());
        for (column, bad) in [("state", "running"), ("trigger", "cron"), ("outcome", "ok")] {
            let sql = format!("UPDATE rotations SET {column} = ?1 WHERE id = 'rot_0'");
            let err = store.conn.execute(&sql, [bad]).unwrap_err();
            assert!(err.to_string().contains("CHECK"), "{column}: {err}");
        }
        for (column, bad) in [("step", "mint"), ("status", "done")] {
            let sql =
                format!("UPDATE rotation_steps SET {column} = ?1 WHERE rotation_id = 'rot_0'");
            let err = store.conn.execute(&sql, [bad]).unwrap_err();
            assert!(err.to_string().contains("CHECK"), "{column}: {err}");
        }
    }

    #[test]
    fn an_unknown_state_that_got_past_the_checks_reads_as_a_corrupt_row() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::create(&dir.path().join("v.db")).unwrap();
        store
            .write(|tx| tx.save_rotation(&rotation("rot_x", RunState::Push, Trigger::Manual)))
            .unwrap();
        store
            .conn
            .execute_batch(
                "PRAGMA ignore_check_constraints = ON;
                 UPDATE rotations SET state = 'pushing' WHERE id = 'rot_x';",
            )
            .unwrap();
        let err = store.read(|tx| tx.rotation("rot_x")).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { table: "rotations", reason } if reason.contains("pushing")),
            "{err}"
        );
    }

    #[test]
    fn every_earlier_schema_version_migrates_to_the_latest() {
        for start in 0..SCHEMA_VERSION {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("v.db");
            {
                let conn = Connection::open(&path).unwrap();
                for (_, sql) in &MIGRATIONS[..start as usize] {
                    conn.execute_batch(sql).unwrap();
                }
                conn.pragma_update(None, "user_version", start).unwrap();
                if start >= 2 {
                    // A rotation recorded before the CHECKs survives their migration.
                    conn.execute_batch(
                        "PRAGMA foreign_keys = ON;
                         INSERT INTO rotations (id, secret, generator, trigger, state, outcome,
                             started_at, updated_at)
                         VALUES ('rot_a', 'S', 'random', 'api', 'grace', 'finished', 1, 2);
                         INSERT INTO rotation_steps VALUES ('rot_a', 1, 'request', 'ok', 1, '{}');
                         INSERT INTO rotation_steps VALUES ('rot_a', 2, 'finish', 'ok', 2, '{}');",
                    )
                    .unwrap();
                }
            }
            let conn = Connection::open(&path).unwrap();
            let mut store = Store::configure(conn, &path).unwrap();
            store.migrate().unwrap();
            assert_eq!(
                store.user_version().unwrap(),
                SCHEMA_VERSION,
                "from {start}"
            );
            if start >= 2 {
                let row = store.read(|tx| tx.rotation("rot_a")).unwrap().unwrap();
                assert_eq!(
                    (row.state, row.outcome, row.trigger),
                    (RunState::Grace, Some(RunOutcome::Finished), Trigger::Api)
                );
                let steps = store.read(|tx| tx.steps("rot_a")).unwrap();
                assert_eq!(
                    steps.iter().map(|s| s.step).collect::<Vec<_>>(),
                    [Step::Request, Step::Finish]
                );
            }
        }
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.db");
        drop(Store::create(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(
            matches!(err, StoreError::NewerSchema { found: 99, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("upgrade secret"));
    }

    #[test]
    fn files_are_private_and_wal_is_on() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/deeper/v.db");
        let store = Store::create(&path).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let journal: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(journal, "wal");
        let sync: i64 = store
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
    }

    fn vault_row(id: u8) -> VaultRow {
        VaultRow {
            vault_id: vec![id; 16],
            key_check: vec![id; 32],
            created_at_ms: 1,
        }
    }

    #[test]
    fn a_snapshot_is_a_whole_database_and_copy_into_replaces_another() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.db");
        let b = dir.path().join("b.db");
        let mut store_a = Store::create(&a).unwrap();
        store_a
            .write(|tx| tx.insert_vault_row(&vault_row(1)))
            .unwrap();
        let mut store_b = Store::create(&b).unwrap();
        store_b
            .write(|tx| tx.insert_vault_row(&vault_row(2)))
            .unwrap();

        let image = store_a.snapshot().unwrap();
        assert!(image.starts_with(b"SQLite format 3\0"));
        let copy = dir.path().join("copy.db");
        fs::write(&copy, &image).unwrap();
        let mut from_image = Store::open(&copy).unwrap();
        let row = from_image.read(|tx| tx.vault_row()).unwrap().unwrap();
        assert_eq!(row.vault_id, vec![1; 16]);

        drop(store_b);
        store_a.copy_into(&b).unwrap();
        let mut store_b = Store::open(&b).unwrap();
        let row = store_b.read(|tx| tx.vault_row()).unwrap().unwrap();
        assert_eq!(row.vault_id, vec![1; 16]);
        assert_eq!(store_b.user_version().unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn sealed_versions_come_a_page_at_a_time_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::create(&dir.path().join("v.db")).unwrap();
        store
            .write(|tx| {
                for name in ["B", "A"] {
                    tx.save_secret(&SecretRow {
                        name: name.into(),
                        description: None,
                        created_at_ms: 0,
                        updated_at_ms: 0,
                        deleted_at_ms: None,
                        latest_version: 3,
                        current_version: Some(3),
                        pending_version: None,
                        previous_version: Some(2),
                    })?;
                    for v in 1..=3 {
                        let n = VersionNumber::new(v).unwrap();
                        tx.insert_version(name, n, 0, &[v as u8; 12], b"ct", "{}")?;
                    }
                }
                tx.destroy_version("A", VersionNumber::new(2).unwrap(), 1)
            })
            .unwrap();
        let mut seen = vec![];
        store
            .read(|tx| {
                assert_eq!(tx.count_sealed_versions()?, 5);
                let mut after: Option<(String, u64)> = None;
                loop {
                    let page =
                        tx.sealed_versions_after(after.as_ref().map(|(n, v)| (n.as_str(), *v)), 2)?;
                    let Some(last) = page.last() else { break };
                    after = Some((last.name.clone(), last.version));
                    seen.extend(page.iter().map(|s| format!("{}{}", s.name, s.version)));
                }
                Ok::<_, StoreError>(())
            })
            .unwrap();
        assert_eq!(seen, ["A1", "A3", "B1", "B2", "B3"]);
    }

    #[test]
    fn garbage_files_are_not_vaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.db");
        fs::write(
            &path,
            b"this is not sqlite at all, just some text padding it out....",
        )
        .unwrap();
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::NotAVault { .. })
        ));
        let empty = dir.path().join("e.db");
        Connection::open(&empty)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        assert!(matches!(
            Store::open(&empty),
            Err(StoreError::NotAVault { .. })
        ));
    }
}

#[cfg(test)]
mod recognise_tests {
    use super::SqliteStore as Store;
    use super::*;

    fn header_id(path: &Path) -> Option<i32> {
        let bytes = fs::read(path).unwrap();
        (bytes.len() >= 72)
            .then(|| i32::from_be_bytes([bytes[68], bytes[69], bytes[70], bytes[71]]))
    }

    #[test]
    fn a_vault_whose_newest_header_is_still_in_its_wal_is_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.db");
        // Migrations alone leave their pages in the WAL (no checkpoint on close).
        drop(Store::create(&path).unwrap());
        assert!(fs::metadata(sibling(&path, "-wal")).unwrap().len() > 0);
        assert_ne!(
            header_id(&path),
            Some(APPLICATION_ID),
            "the slow path is under test"
        );
        recognise(&path).unwrap();
        let store = Store::open(&path).unwrap();
        store.checkpoint_truncate().unwrap();
        drop(store);
        assert_eq!(header_id(&path), Some(APPLICATION_ID));
        recognise(&path).unwrap();
    }

    #[test]
    fn a_vault_made_before_the_application_id_is_recognised_by_its_tables_and_gets_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.db");
        {
            let conn = Connection::open(&path).unwrap();
            for (_, sql) in &MIGRATIONS[..4] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 4).unwrap();
        }
        assert_eq!(header_id(&path), Some(0));
        recognise(&path).unwrap();
        let store = Store::open(&path).unwrap();
        assert_eq!(store.user_version().unwrap(), SCHEMA_VERSION);
        store.checkpoint_truncate().unwrap();
        drop(store);
        assert_eq!(header_id(&path), Some(APPLICATION_ID));
    }

    #[test]
    fn files_that_are_not_vaults_are_refused_with_their_reason_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        type Make = fn(&Path);
        let cases: Vec<(&str, Make, &str)> = vec![
            ("empty", |p| fs::write(p, b"").unwrap(), "empty"),
            (
                "text",
                |p| fs::write(p, "x".repeat(4096)).unwrap(),
                "not an SQLite database",
            ),
            (
                "tables",
                |p| {
                    Connection::open(p)
                        .unwrap()
                        .execute_batch("CREATE TABLE vault (x); PRAGMA user_version = 2;")
                        .unwrap()
                },
                "lacks the vault's tables",
            ),
            (
                "foreign-id",
                |p| {
                    Connection::open(p)
                        .unwrap()
                        .execute_batch("PRAGMA application_id = -7; CREATE TABLE t (x);")
                        .unwrap()
                },
                "another application (application id 0xfffffff9)",
            ),
        ];
        for (name, make, reason) in cases {
            let path = dir.path().join(name);
            make(&path);
            let before = fs::read(&path).unwrap();
            let err = Store::open(&path).unwrap_err();
            assert!(
                matches!(&err, StoreError::NotAVault { reason: r, .. } if r.contains(reason)),
                "{name}: {err}"
            );
            assert_eq!(fs::read(&path).unwrap(), before, "{name}");
            assert!(!sibling(&path, "-wal").exists(), "{name}");
            assert!(!sibling(&path, "-shm").exists(), "{name}");
        }
    }

    #[test]
    fn immutable_uris_escape_what_sqlite_would_read_as_syntax() {
        assert_eq!(
            immutable_uri(Path::new("/tmp/a b/v?x#%.db")),
            "file:/tmp/a%20b/v%3Fx%23%25.db?immutable=1"
        );
    }
}
