//! One typed layer over spock's own tables, for the code that runs inside this server (the
//! apply, sync and manager workers, the drop and DDL hooks): nodes, subscriptions, progress,
//! synchronisation status, tombstones, replication-set memberships and the logs spock keeps.
//! Callers get Rust values, never SQL; columns are read by name, so a reordered query cannot
//! shift a value into the wrong field.
//!
//! Reads run read-only (`Spi::connect` + `select`): pgrx's `Spi::get_one` and friends give
//! the calling transaction an xid, which a worker's polling transaction must not have. A
//! read-only query sees the caller's snapshot, though: a read that must see later commits from
//! inside a long transaction (`sync_status::table_settled`) runs in read-write mode.
//!
//! Errors: a statement that PostgreSQL rejects raises PostgreSQL's own ERROR (its SQLSTATE);
//! a row this code cannot read is `XX000` (internal_error, as core reports a broken catalog
//! lookup); a subscription that is gone is `42704` (undefined_object).
//!
//! Not here, on purpose: SQL that reads *another* node's catalog over a connection (the copy
//! in `apply::sync`, `add_node`/`remove_node` in `zodan`), the SQL API in `spock_api.sql`, and
//! the SQL row store's tombstone statements (`apply::sql`), which are generated per table for
//! its key columns and planned with the rest of that table's statements.

pub mod logs;
pub mod nodes;
pub mod progress;
pub mod sets;
pub mod subscriptions;
pub mod sync_status;
pub mod tombstones;

use pgrx::prelude::*;
use pgrx::spi::SpiHeapTupleData;
use pgrx::{FromDatum, IntoDatum};

/// The ERROR for a catalog statement whose result this code cannot read.
fn broken(what: &str, e: impl std::fmt::Display) -> ! {
    crate::raise(
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        format!("cannot {what}: {e}"),
    )
}

/// The first column of the first row of read-only query `sql` (`None` with no row or NULL).
/// Read-only, unlike pgrx's `Spi::get_one`, which gives the caller's transaction an xid; it
/// sees the caller's snapshot (see the note above).
pub(crate) fn read_one<T: IntoDatum + FromDatum>(
    sql: &str,
    args: &[pgrx::datum::DatumWithOid],
) -> Result<Option<T>, pgrx::spi::Error> {
    Spi::connect(|c| {
        let rows = c.select(sql, Some(1), args)?;
        if rows.is_empty() {
            return Ok(None);
        }
        rows.first().get_one::<T>()
    })
}

/// Column `name` of `row` (`None` when NULL); a column missing from the query or of another
/// type is a broken catalog read.
fn column<T: IntoDatum + FromDatum>(row: &SpiHeapTupleData<'_>, name: &str) -> Option<T> {
    row.get_by_name::<T, _>(name)
        .unwrap_or_else(|e| broken(&format!("read column {name} of spock's catalog"), e))
}

/// A timestamp in PostgreSQL's internal form (µs since 2000-01-01) as an SQL expression of
/// parameter `$n`, so a timestamp travels between Rust and SQL without a text round trip that
/// would depend on the session's DateStyle.
fn ts_param(n: u8) -> String {
    format!("(timestamptz '2000-01-01 00:00:00+00' + ${n}::bigint * interval '1 microsecond')")
}

/// An LSN as PostgreSQL prints it.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

#[cfg(test)]
mod tests {
    #[test]
    fn lsn_text() {
        assert_eq!(super::format_lsn(0), "0/0");
        assert_eq!(super::format_lsn(0x1_0000_00A0), "1/A0");
    }

    #[test]
    fn timestamp_parameter() {
        assert_eq!(
            super::ts_param(2),
            "(timestamptz '2000-01-01 00:00:00+00' + $2::bigint * interval '1 microsecond')"
        );
    }
}
