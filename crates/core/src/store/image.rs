//! The whole vault as rows: what `secret store copy` moves between backends, what a
//! backup of a PostgreSQL vault is made from, and what a restore into PostgreSQL puts
//! back. Both backends have the same tables with the same columns (BLOB/BYTEA,
//! INTEGER/BIGINT), so a row read from one is written to the other as it is: every
//! ciphertext, MAC, wrapped key and audit entry byte for byte, nothing re-encrypted.
//!
//! [`TABLES`] lists every table and column a vault has, in an order that satisfies the
//! foreign keys; a unit test in each backend checks it against the schema its
//! migrations build, so a column added later cannot be silently left behind.
//! [`copy_rows`] streams every table from one transaction into another, a page at a
//! time, and returns what it copied with a digest of the rows; [`digest_rows`] reads a
//! store back into the same digest, so the far side can prove it holds the same bytes.
//!
//! No crypto beyond that digest, and no knowledge of what the rows mean: the vault
//! (`vault::copy`) decides what is verified before and after.

use std::collections::BTreeMap;

use super::{Backend, StoreError, Tx, TxMode};
use crate::crypto::RowDigest;

/// How a column's values are stored: BIGINT/INTEGER, TEXT, BYTEA/BLOB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    Int,
    Text,
    Blob,
}

/// One table of the vault, as the copy sees it.
#[derive(Debug)]
pub struct TableSpec {
    pub name: &'static str,
    /// The columns copied, in order.
    pub columns: &'static [(&'static str, ColumnType)],
    /// The `ORDER BY` that reads it in key order.
    pub order_by: &'static str,
    /// Columns the table has that are not copied: `audit_unkeyed.id` is a generated
    /// row number (PostgreSQL's identity column refuses given values); the rows are
    /// copied in its order, so it numbers them in the same order again.
    pub generated: &'static [&'static str],
}

impl TableSpec {
    /// `a, b, c`.
    pub fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One value of a row. Never printed: a [`Cell::Blob`] may be a ciphertext.
#[derive(Clone, PartialEq, Eq)]
pub enum Cell {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

impl std::fmt::Debug for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Null => f.write_str("Null"),
            Cell::Int(_) => f.write_str("Int(..)"),
            Cell::Text(_) => f.write_str("Text(..)"),
            Cell::Blob(b) => write!(f, "Blob({} bytes)", b.len()),
        }
    }
}

/// One row: a cell per column of its [`TableSpec`], in order.
pub type RowImage = Vec<Cell>;

use ColumnType::{Blob, Int, Text};

/// Every table of a vault, parents before children. The marker tables of each backend
/// (SQLite's pragmas, PostgreSQL's `secret_vault_meta`) are made by the destination's
/// own migrations, not copied.
pub const TABLES: &[TableSpec] = &[
    TableSpec {
        name: "vault",
        columns: &[
            ("id", Int),
            ("vault_id", Blob),
            ("key_check", Blob),
            ("created_at", Int),
            ("census", Blob),
        ],
        order_by: "id",
        generated: &[],
    },
    TableSpec {
        name: "keyring",
        columns: &[
            ("kind", Text),
            ("recipients", Text),
            ("wrapped_key", Blob),
            ("updated_at", Int),
        ],
        order_by: "kind",
        generated: &[],
    },
    TableSpec {
        name: "retired_keys",
        columns: &[
            ("epoch", Int),
            ("retired_at", Int),
            ("retired_seq", Int),
            ("nonce", Blob),
            ("audit_key", Blob),
        ],
        order_by: "epoch",
        generated: &[],
    },
    TableSpec {
        name: "secrets",
        columns: &[
            ("name", Text),
            ("description", Text),
            ("created_at", Int),
            ("updated_at", Int),
            ("deleted_at", Int),
            ("latest_version", Int),
            ("current_version", Int),
            ("pending_version", Int),
            ("previous_version", Int),
            ("mac", Blob),
        ],
        order_by: "name",
        generated: &[],
    },
    TableSpec {
        name: "versions",
        columns: &[
            ("name", Text),
            ("version", Int),
            ("created_at", Int),
            ("nonce", Blob),
            ("ciphertext", Blob),
            ("destroyed_at", Int),
            ("meta", Text),
        ],
        order_by: "name, version",
        generated: &[],
    },
    TableSpec {
        name: "rotations",
        columns: &[
            ("id", Text),
            ("secret", Text),
            ("generator", Text),
            ("trigger", Text),
            ("state", Text),
            ("outcome", Text),
            ("old_version", Int),
            ("new_version", Int),
            ("started_at", Int),
            ("updated_at", Int),
            ("finished_at", Int),
            ("revoke_after", Int),
            ("revoked_at", Int),
            ("error", Text),
            ("provider_state", Text),
            ("deployments", Text),
        ],
        order_by: "id",
        generated: &[],
    },
    TableSpec {
        name: "rotation_steps",
        columns: &[
            ("rotation_id", Text),
            ("seq", Int),
            ("step", Text),
            ("status", Text),
            ("at_ms", Int),
            ("detail", Text),
        ],
        order_by: "rotation_id, seq",
        generated: &[],
    },
    TableSpec {
        name: "locks",
        columns: &[
            ("name", Text),
            ("holder", Text),
            ("expires_at", Int),
            ("epoch", Int),
        ],
        order_by: "name",
        generated: &[],
    },
    TableSpec {
        name: "tokens",
        columns: &[
            ("id", Text),
            ("name", Text),
            ("hash", Blob),
            ("scopes", Text),
            ("created_at", Int),
            ("expires_at", Int),
            ("revoked_at", Int),
            ("last_used_at", Int),
            ("mac", Blob),
        ],
        order_by: "id",
        generated: &[],
    },
    TableSpec {
        name: "audit_log",
        columns: &[
            ("seq", Int),
            ("at_ms", Int),
            ("actor", Text),
            ("pid", Int),
            ("action", Text),
            ("secret", Text),
            ("version", Int),
            ("outcome", Text),
            ("request_id", Text),
            ("details", Text),
            ("mac", Blob),
        ],
        order_by: "seq",
        generated: &[],
    },
    TableSpec {
        name: "audit_head",
        columns: &[("id", Int), ("seq", Int), ("mac", Blob), ("seal", Blob)],
        order_by: "id",
        generated: &[],
    },
    TableSpec {
        name: "audit_unkeyed",
        columns: &[
            ("at_ms", Int),
            ("actor", Text),
            ("pid", Int),
            ("action", Text),
            ("outcome", Text),
            ("request_id", Text),
            ("details", Text),
        ],
        order_by: "id",
        generated: &["id"],
    },
];

/// Rows per page read or written.
pub const PAGE_ROWS: usize = 1000;

/// What a copy moved: rows per table, and a digest of every row in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowCounts {
    pub tables: BTreeMap<&'static str, u64>,
    /// SHA-256 over every table's name and rows, in [`TABLES`] order.
    pub digest: [u8; 32],
}

impl RowCounts {
    pub fn total(&self) -> u64 {
        self.tables.values().sum()
    }
}

fn digest_page(digest: &mut RowDigest, rows: &[RowImage]) {
    for row in rows {
        digest.update(b"r");
        for cell in row {
            match cell {
                Cell::Null => digest.update(b"n"),
                Cell::Int(v) => {
                    digest.update(b"i");
                    digest.update(&v.to_be_bytes());
                }
                Cell::Text(t) => {
                    digest.update(b"t");
                    digest.update(&(t.len() as u64).to_be_bytes());
                    digest.update(t.as_bytes());
                }
                Cell::Blob(b) => {
                    digest.update(b"b");
                    digest.update(&(b.len() as u64).to_be_bytes());
                    digest.update(b);
                }
            }
        }
    }
}

/// How many rows `from` holds in all, for a progress bar.
pub fn count_rows(from: &Tx<'_>) -> Result<u64, StoreError> {
    let mut total = 0;
    for table in TABLES {
        total += from.count_rows(table)?;
    }
    Ok(total)
}

/// Copies every row of every table from `from` into `to` (two transactions, usually of
/// two backends), a page at a time. `progress(rows copied so far)` follows it.
pub fn copy_rows(
    from: &Tx<'_>,
    to: &Tx<'_>,
    progress: &mut dyn FnMut(u64),
) -> Result<RowCounts, StoreError> {
    let mut digest = RowDigest::new();
    let mut tables = BTreeMap::new();
    let mut done = 0u64;
    for table in TABLES {
        digest.update(table.name.as_bytes());
        let mut copied = 0u64;
        from.scan_rows(table, &mut |page| {
            digest_page(&mut digest, page);
            to.insert_rows(table, page)?;
            copied += page.len() as u64;
            done += page.len() as u64;
            progress(done);
            Ok(())
        })?;
        tables.insert(table.name, copied);
    }
    Ok(RowCounts {
        tables,
        digest: digest.finish(),
    })
}

/// Reads every row back and digests it as [`copy_rows`] did.
pub fn digest_rows(from: &Tx<'_>) -> Result<RowCounts, StoreError> {
    let mut digest = RowDigest::new();
    let mut tables = BTreeMap::new();
    for table in TABLES {
        digest.update(table.name.as_bytes());
        let mut read = 0u64;
        from.scan_rows(table, &mut |page| {
            digest_page(&mut digest, page);
            read += page.len() as u64;
            Ok(())
        })?;
        tables.insert(table.name, read);
    }
    Ok(RowCounts {
        tables,
        digest: digest.finish(),
    })
}

/// Whether a transaction holds any row of any vault table (a location that is to
/// receive a copy must hold none).
pub fn holds_rows(tx: &Tx<'_>) -> Result<bool, StoreError> {
    for table in TABLES {
        if tx.count_rows(table)? > 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Deletes every row of every table, children first (a restore replacing a vault in
/// one transaction).
pub fn clear_rows(tx: &Tx<'_>) -> Result<(), StoreError> {
    for table in TABLES.iter().rev() {
        tx.clear_rows(table)?;
    }
    Ok(())
}

/// The vault `from` holds, as the bytes of one SQLite vault file: every row copied, in
/// one read transaction of `from` (a consistent snapshot: writers neither wait for it
/// nor tear it), into a vault in memory. How a PostgreSQL vault is backed up.
pub fn sqlite_image(from: &mut dyn Backend) -> Result<Vec<u8>, StoreError> {
    let mut image = super::sqlite::SqliteStore::in_memory()?;
    from.begin(TxMode::Read)?;
    if let Err(e) = image.begin_blank() {
        from.rollback();
        return Err(e);
    }
    match copy_rows(from.tx(), image.tx(), &mut |_| {}) {
        Ok(_) => {
            from.rollback();
            image.commit()?;
        }
        Err(e) => {
            from.rollback();
            image.rollback();
            return Err(e);
        }
    }
    image.snapshot()
}
