//! `spock.replication_set` and its table memberships (`spock.replication_set_table`).

use super::{broken, column};
use pgrx::prelude::*;

/// One table's membership in one replication set.
pub struct Membership {
    pub set_id: pg_sys::Oid,
    pub set_name: String,
    pub relid: pg_sys::Oid,
    pub relname: String,
    /// The replicated columns, when the set sends only some.
    pub columns: Vec<String>,
    /// The stored row filter (a node tree), if any.
    pub row_filter: Option<String>,
}

const MEMBERSHIPS: &str = "SELECT t.set_id, s.set_name::text AS set_name, \
     t.set_reloid::oid AS relid, c.relname::text AS relname, \
     coalesce(t.set_att_list, '{}')::text[] AS columns, t.set_row_filter::text AS row_filter \
     FROM spock.replication_set_table t \
     JOIN spock.replication_set s ON s.set_id = t.set_id \
     JOIN pg_catalog.pg_class c ON c.oid = t.set_reloid";

fn read(sql: &str, args: &[pgrx::datum::DatumWithOid]) -> Vec<Membership> {
    Spi::connect(|c| {
        c.select(sql, None, args)
            .unwrap_or_else(|e| broken("read the replication sets", e))
            .map(|row| Membership {
                set_id: column(&row, "set_id").unwrap_or(pg_sys::InvalidOid),
                set_name: column(&row, "set_name").unwrap_or_default(),
                relid: column(&row, "relid").unwrap_or(pg_sys::InvalidOid),
                relname: column(&row, "relname").unwrap_or_default(),
                columns: column::<Vec<Option<String>>>(&row, "columns")
                    .unwrap_or_default()
                    .into_iter()
                    .flatten()
                    .collect(),
                row_filter: column(&row, "row_filter"),
            })
            .collect()
    })
}

/// The memberships of table `relid`, by set name.
pub fn of_table(relid: pg_sys::Oid) -> Vec<Membership> {
    read(
        &format!("{MEMBERSHIPS} WHERE t.set_reloid = $1 ORDER BY s.set_name"),
        &[relid.into()],
    )
}

/// The memberships with a row filter, by table and set name.
pub fn with_row_filter() -> Vec<Membership> {
    read(
        &format!("{MEMBERSHIPS} WHERE t.set_row_filter IS NOT NULL ORDER BY c.relname, s.set_name"),
        &[],
    )
}

/// Removes the memberships (`set_ids[i]`, `relids[i]`).
pub fn remove(set_ids: Vec<pg_sys::Oid>, relids: Vec<pg_sys::Oid>) {
    Spi::run_with_args(
        "DELETE FROM spock.replication_set_table t \
          USING ROWS FROM (pg_catalog.unnest($1::pg_catalog.oid[]), \
                           pg_catalog.unnest($2::pg_catalog.oid[])) m(set_id, relid) \
          WHERE t.set_id = m.set_id AND t.set_reloid::pg_catalog.oid = m.relid",
        &[set_ids.into(), relids.into()],
    )
    .unwrap_or_else(|e| broken("remove replication set memberships", e));
}

/// What a replication set sends.
#[derive(Debug, Clone)]
pub struct SetFlags {
    pub set_id: pg_sys::Oid,
    pub insert: bool,
    pub update: bool,
    pub delete: bool,
    pub truncate: bool,
}

/// Replication set `name` of node `node`, or `None` if it has none of that name.
pub fn named(node: pg_sys::Oid, name: &str) -> Option<SetFlags> {
    Spi::connect(|c| {
        let row = c
            .select(
                "SELECT set_id, replicate_insert, replicate_update, replicate_delete, \
                 replicate_truncate FROM spock.replication_set \
                 WHERE set_nodeid = $1 AND set_name = $2",
                None,
                &[node.into(), name.into()],
            )
            .unwrap_or_else(|e| broken("read the replication sets", e))
            .next()?;
        let flag = |name| column::<bool>(&row, name).unwrap_or(false);
        Some(SetFlags {
            set_id: column(&row, "set_id")?,
            insert: flag("replicate_insert"),
            update: flag("replicate_update"),
            delete: flag("replicate_delete"),
            truncate: flag("replicate_truncate"),
        })
    })
}
