//! `spock.tombstones`: the keys of rows deleted by replicated or local deletes, kept until
//! every peer has moved past them (the version of a tombstone is its own xmin's commit).

use super::broken;
use pgrx::prelude::*;

/// Deletes the tombstones every subscription of this node has moved past: only when every
/// subscription has a progress row (the slowest one sets the horizon) and none forwards
/// other nodes' changes (forwarded commit timestamps are not in order).
pub fn collect() {
    Spi::run(
        "DELETE FROM spock.tombstones t USING ( \
           SELECT min(p.commit_ts) AS horizon, \
           count(p.*) = count(*) AND NOT EXISTS (SELECT 1 FROM spock.subscription f \
             WHERE 'all' = ANY (f.sub_forward_origins)) AS complete \
           FROM spock.subscription s JOIN spock.local_node l ON l.node_id = s.sub_target \
           LEFT JOIN spock.subscription_progress p ON p.sub_id = s.sub_id) h \
         WHERE h.complete AND pg_catalog.pg_xact_commit_timestamp(t.xmin) < h.horizon",
    )
    .unwrap_or_else(|e| broken("collect tombstones", e));
}

/// Whether table `relid` has any tombstone. An empty tombstone table (never written since
/// it was created or truncated) needs no query: insert-only workloads pay only a file-size
/// check per transaction.
pub fn any_for(relid: u32) -> bool {
    if table_is_empty() {
        return false;
    }
    crate::prepared::run(
        "SELECT EXISTS (SELECT 1 FROM spock.tombstones WHERE relid = $1::oid)",
        &[Some(relid.to_string())],
    )
    .1
    .as_deref()
        == Some("t")
}

/// Whether `spock.tombstones` has no pages at all.
fn table_is_empty() -> bool {
    thread_local! {
        static OID: std::cell::Cell<pg_sys::Oid> = const { std::cell::Cell::new(pg_sys::InvalidOid) };
    }
    let oid = OID.with(|o| {
        if o.get() == pg_sys::InvalidOid {
            o.set(relation().unwrap_or_else(|| broken("find spock.tombstones", "it is missing")));
        }
        o.get()
    });
    // SAFETY: opening a relation of our own extension inside a transaction, briefly.
    unsafe {
        let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
        let rel = pg_sys::relation_open(oid, lock);
        let blocks = pg_sys::RelationGetNumberOfBlocksInFork(rel, pg_sys::ForkNumber::MAIN_FORKNUM);
        pg_sys::relation_close(rel, lock);
        blocks == 0
    }
}

/// The oid of `spock.tombstones`; `None` in a database still on upstream's objects (before
/// its update), which has none.
fn relation() -> Option<pg_sys::Oid> {
    // SAFETY: catalog lookups by name inside a transaction.
    let oid = unsafe {
        let nsp = pg_sys::get_namespace_oid(c"spock".as_ptr(), true);
        if nsp == pg_sys::InvalidOid {
            return None;
        }
        pg_sys::get_relname_relid(c"tombstones".as_ptr(), nsp)
    };
    (oid != pg_sys::InvalidOid).then_some(oid)
}

/// A dropped table's tombstones go with it.
pub fn forget_relation(relid: pg_sys::Oid) {
    if relation().is_none() {
        return;
    }
    Spi::run_with_args(
        "DELETE FROM spock.tombstones WHERE relid = $1",
        &[relid.into()],
    )
    .unwrap_or_else(|e| broken("forget a dropped table's tombstones", e));
}

/// A tombstone copied from a provider: `table` as its qualified name there, `key_hex` the
/// key's bytes in hex. A table missing here is skipped; a tombstone already here is kept.
pub fn copy_in(table: &str, key_hex: &str) {
    Spi::run_with_args(
        "INSERT INTO spock.tombstones (relid, key) \
         SELECT pg_catalog.to_regclass($1)::oid, pg_catalog.decode($2, 'hex') \
         WHERE pg_catalog.to_regclass($1) IS NOT NULL ON CONFLICT DO NOTHING",
        &[table.into(), key_hex.into()],
    )
    .unwrap_or_else(|e| broken(&format!("copy a tombstone of {table}"), e));
}
