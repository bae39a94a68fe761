//! The whole vault as rows on PostgreSQL (see `secret_core::store::image`): tables
//! read through a cursor a page at a time inside the transaction's snapshot, and
//! written with multi-row INSERTs whose parameters are cast to each column's kind
//! (so one statement shape serves INTEGER and BIGINT columns alike).

use postgres::Row;
use secret_core::store::image::{Cell, ColumnType, RowImage, TableSpec, PAGE_ROWS};
use secret_core::store::StoreError;

use crate::worker::{p, Param};
use crate::PgStore;

/// PostgreSQL allows 65,535 parameters per statement; stay well below.
const MAX_PARAMS: usize = 30_000;

/// The cursor a scan reads through (one at a time per connection).
const CURSOR: &str = "secret_copy_scan";

pub(crate) fn count_rows(store: &PgStore, table: &'static TableSpec) -> Result<u64, StoreError> {
    let sql = format!("SELECT count(*) FROM {}", table.name);
    store.worker.call(move |c| {
        let rows = c.query_text(&sql, &[])?;
        let n: i64 = rows
            .first()
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(|e| StoreError::Database(e.to_string()))?
            .unwrap_or(0);
        Ok(n as u64)
    })
}

fn select_list(table: &TableSpec) -> String {
    table
        .columns
        .iter()
        .map(|(name, kind)| match kind {
            ColumnType::Int => format!("{name}::bigint"),
            ColumnType::Text | ColumnType::Blob => name.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn cells(table: &'static TableSpec, row: &Row) -> Result<RowImage, StoreError> {
    let corrupt = |column: &str, e: postgres::Error| StoreError::Corrupt {
        table: table.name,
        reason: format!("column {column}: {e}"),
    };
    let mut out = Vec::with_capacity(table.columns.len());
    for (index, (column, kind)) in table.columns.iter().enumerate() {
        let cell = match kind {
            ColumnType::Int => row
                .try_get::<_, Option<i64>>(index)
                .map_err(|e| corrupt(column, e))?
                .map(Cell::Int),
            ColumnType::Text => row
                .try_get::<_, Option<String>>(index)
                .map_err(|e| corrupt(column, e))?
                .map(Cell::Text),
            ColumnType::Blob => row
                .try_get::<_, Option<Vec<u8>>>(index)
                .map_err(|e| corrupt(column, e))?
                .map(Cell::Blob),
        };
        out.push(cell.unwrap_or(Cell::Null));
    }
    Ok(out)
}

pub(crate) fn scan_rows(
    store: &PgStore,
    table: &'static TableSpec,
    sink: &mut dyn FnMut(&[RowImage]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let declare = format!(
        "DECLARE {CURSOR} NO SCROLL CURSOR FOR SELECT {} FROM {} ORDER BY {}",
        select_list(table),
        table.name,
        table.order_by
    );
    store.worker.call(move |c| c.batch(&declare))?;
    let scanned = (|| loop {
        let page = store.worker.call(move |c| {
            let rows = c.query_text(&format!("FETCH {PAGE_ROWS} FROM {CURSOR}"), &[])?;
            rows.iter()
                .map(|r| cells(table, r))
                .collect::<Result<Vec<_>, _>>()
        })?;
        if page.is_empty() {
            return Ok(());
        }
        sink(&page)?;
    })();
    // A failed statement has aborted the transaction (and its cursor) already.
    let closed = store.worker.call(|c| {
        if c.failed {
            Ok(())
        } else {
            c.batch(&format!("CLOSE {CURSOR}"))
        }
    });
    scanned.and(closed)
}

fn param(
    table: &'static TableSpec,
    column: &str,
    kind: ColumnType,
    cell: &Cell,
) -> Result<Param, StoreError> {
    Ok(match (kind, cell) {
        (ColumnType::Int, Cell::Null) => p(None::<i64>),
        (ColumnType::Text, Cell::Null) => p(None::<String>),
        (ColumnType::Blob, Cell::Null) => p(None::<Vec<u8>>),
        (ColumnType::Int, Cell::Int(v)) => p(Some(*v)),
        (ColumnType::Text, Cell::Text(t)) => p(Some(t.clone())),
        (ColumnType::Blob, Cell::Blob(b)) => p(Some(b.clone())),
        _ => {
            return Err(StoreError::Corrupt {
                table: table.name,
                reason: format!("a value of another kind for column {column} ({kind:?})"),
            })
        }
    })
}

pub(crate) fn insert_rows(
    store: &PgStore,
    table: &'static TableSpec,
    rows: &[RowImage],
) -> Result<(), StoreError> {
    let width = table.columns.len();
    let per_statement = (MAX_PARAMS / width.max(1)).clamp(1, PAGE_ROWS);
    for chunk in rows.chunks(per_statement) {
        let mut params = Vec::with_capacity(chunk.len() * width);
        let mut tuples = Vec::with_capacity(chunk.len());
        for row in chunk {
            if row.len() != width {
                return Err(StoreError::Corrupt {
                    table: table.name,
                    reason: format!("a row of {} cells for {width} columns", row.len()),
                });
            }
            let mut slots = Vec::with_capacity(width);
            for ((column, kind), cell) in table.columns.iter().zip(row) {
                params.push(param(table, column, *kind, cell)?);
                let cast = match kind {
                    ColumnType::Int => "bigint",
                    ColumnType::Text => "text",
                    ColumnType::Blob => "bytea",
                };
                slots.push(format!("${}::{cast}", params.len()));
            }
            tuples.push(format!("({})", slots.join(", ")));
        }
        let sql = format!(
            "INSERT INTO {} ({}) VALUES {}",
            table.name,
            table.column_list(),
            tuples.join(", ")
        );
        store
            .worker
            .call(move |c| c.query_text(&sql, &params).map(drop))?;
    }
    Ok(())
}
