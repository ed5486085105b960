//! `spock.local_sync_status`: per subscription, whether its initial copy (the row with no
//! table) and each table's copy are pending (`i`), done (`r`) or failed for good (`e`).

use super::{broken, column};
use pgrx::prelude::*;

fn sub(sub_id: u32) -> pgrx::datum::DatumWithOid<'static> {
    pg_sys::Oid::from(sub_id).into()
}

/// The subscription's initial synchronisation is done.
pub fn subscription_ready(sub_id: u32) {
    Spi::run_with_args(
        "UPDATE spock.local_sync_status SET sync_status = 'r' \
         WHERE sync_subid = $1 AND sync_nspname IS NULL AND sync_status <> 'r'",
        &[sub(sub_id)],
    )
    .unwrap_or_else(|e| broken("update the sync status", e));
}

/// The initial copy brought `nsp.rel` up to the provider's `lsn`.
pub fn table_copied(sub_id: u32, nsp: &str, rel: &str, lsn: u64) {
    Spi::run_with_args(
        "INSERT INTO spock.local_sync_status (sync_kind, sync_subid, sync_nspname, sync_relname, \
         sync_status, sync_statuslsn) VALUES ('d', $1, $2, $3, 'r', $4::pg_lsn) \
         ON CONFLICT (sync_subid, sync_nspname, sync_relname) DO UPDATE \
         SET sync_status = 'r', sync_statuslsn = EXCLUDED.sync_statuslsn",
        &[sub(sub_id), nsp.into(), rel.into(), lsn_arg(lsn)],
    )
    .unwrap_or_else(|e| broken("update the sync status", e));
}

/// A later copy of `nsp.rel` (`sub_resync_table`) finished at the provider's `lsn`. A table
/// dropped meanwhile has no row any more and gets none.
pub fn table_recopied(sub_id: u32, nsp: &str, rel: &str, lsn: u64) {
    Spi::run_with_args(
        "UPDATE spock.local_sync_status SET sync_status = 'r', \
         sync_statuslsn = $4::pg_lsn \
         WHERE sync_subid = $1 AND sync_nspname = $2 AND sync_relname = $3",
        &[sub(sub_id), nsp.into(), rel.into(), lsn_arg(lsn)],
    )
    .unwrap_or_else(|e| broken("update the sync status", e));
}

/// The copy of `nsp.rel` cannot succeed and is not retried until asked again.
pub fn table_failed(sub_id: u32, nsp: &str, rel: &str) {
    Spi::run_with_args(
        "UPDATE spock.local_sync_status SET sync_status = 'e' \
         WHERE sync_subid = $1 AND sync_nspname = $2 AND sync_relname = $3",
        &[sub(sub_id), nsp.into(), rel.into()],
    )
    .unwrap_or_else(|e| broken("mark the copy failed", e));
}

/// Asks for a copy of `nsp.rel` (a sync request from the provider's queue): a new one, or
/// again after a copy that finished or failed. Returns false when one is pending already.
pub fn request_table(sub_id: u32, nsp: &str, rel: &str) -> bool {
    Spi::connect_mut(|c| {
        c.update(
            "INSERT INTO spock.local_sync_status (sync_kind, sync_subid, sync_nspname, \
             sync_relname, sync_status, sync_statuslsn) VALUES ('d', $1, $2, $3, 'i', '0/0') \
             ON CONFLICT (sync_subid, sync_nspname, sync_relname) DO UPDATE SET sync_status = 'i' \
               WHERE spock.local_sync_status.sync_status IN ('r', 'e') \
             RETURNING true",
            None,
            &[sub(sub_id), nsp.into(), rel.into()],
        )
        .map(|rows| !rows.is_empty())
    })
    .unwrap_or_else(|e| broken(&format!("request the sync of {nsp}.{rel}"), e))
}

/// The subscription's tables waiting for a copy, as (schema, table), in name order.
pub fn tables_waiting(sub_id: u32) -> Vec<(String, String)> {
    Spi::connect(|c| {
        c.select(
            "SELECT sync_nspname::text AS nsp, sync_relname::text AS rel \
             FROM spock.local_sync_status \
             WHERE sync_subid = $1 AND sync_nspname IS NOT NULL AND sync_status NOT IN ('r', 'e') \
             ORDER BY 1, 2",
            None,
            &[sub(sub_id)],
        )
        .unwrap_or_else(|e| broken("read the sync status", e))
        .filter_map(|row| Some((column(&row, "nsp")?, column(&row, "rel")?)))
        .collect()
    })
}

/// Whether no copy of `nsp.rel` is pending (done, failed, or never asked for). The apply
/// worker polls this inside its transaction while the sync worker copies: the query must see
/// commits made since that transaction's snapshot, so it runs in read-write mode, which takes
/// a new snapshot per query (a read-only SPI query would reuse the transaction's snapshot and
/// never see the copy finish — or, taken before the request, see no copy pending at all).
pub fn table_settled(sub_id: u32, nsp: &str, rel: &str) -> bool {
    Spi::get_one_with_args::<bool>(
        "SELECT coalesce(bool_and(sync_status IN ('r', 'e')), true) FROM spock.local_sync_status \
         WHERE sync_subid = $1 AND sync_nspname = $2 AND sync_relname = $3",
        &[sub(sub_id), nsp.into(), rel.into()],
    )
    .unwrap_or_else(|e| broken("read the sync status", e))
    .unwrap_or(true)
}

/// A dropped table's rows (subscriptions know tables by name).
pub fn forget_relation(relid: pg_sys::Oid) {
    Spi::run_with_args(
        "DELETE FROM spock.local_sync_status s \
          USING pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
          WHERE c.oid = $1 AND s.sync_nspname = n.nspname AND s.sync_relname = c.relname",
        &[relid.into()],
    )
    .unwrap_or_else(|e| broken("forget a dropped table's sync status", e));
}

/// An LSN parameter, as text (`$n::pg_lsn` in SQL).
fn lsn_arg(lsn: u64) -> pgrx::datum::DatumWithOid<'static> {
    super::format_lsn(lsn).into()
}
