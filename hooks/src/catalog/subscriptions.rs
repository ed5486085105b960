//! `spock.subscription` (with its provider's interface and its subscription-level sync rows)
//! and the local replication origins named after subscriptions' slots.

use super::{broken, column};
use pgrx::prelude::*;

/// What an apply or sync worker needs to know about its subscription.
pub struct Subscription {
    pub name: String,
    pub slot: String,
    /// The provider's connection string (`spock.node_interface.if_dsn`).
    pub dsn: String,
    pub sets: Vec<String>,
    /// `forward_origins` contains `all`: changes the provider applied from others come too.
    pub forward_all: bool,
    /// The provider's node id: the node of every change this subscription applies.
    pub provider: u32,
    /// The commit LSN of a remote transaction to skip (`sub_alter_skiplsn`), or 0.
    pub skip_lsn: u64,
    /// The subscription-level sync row asks for a data copy that has not happened yet.
    pub needs_data_sync: bool,
    /// … and for the provider's schema first (`synchronize_structure`).
    pub needs_structure_sync: bool,
    /// `force_text_transfer`: values travel as text even where both sides could use binary.
    pub force_text: bool,
    /// `apply_delay` in microseconds: each transaction is applied no sooner than this after
    /// its commit on the provider.
    pub apply_delay_us: i64,
}

/// Reads subscription `sub_id`, in the caller's transaction. `sub_drop` holds an advisory
/// lock on the subscription until it commits: this waits for it, then sees the outcome.
pub fn load(sub_id: u32) -> Subscription {
    Spi::run_with_args(
        "SELECT pg_catalog.pg_advisory_xact_lock_shared($1::bigint + (1::bigint << 40))",
        &[i64::from(sub_id).into()],
    )
    .unwrap_or_else(|e| broken("wait for the subscription's lock", e));
    Spi::connect(|c| {
        let rows = c
            .select(
                "SELECT s.sub_name::text AS name, s.sub_slot_name::text AS slot, i.if_dsn AS dsn, \
                 coalesce(s.sub_replication_sets, '{}')::text[] AS sets, \
                 coalesce('all' = ANY (s.sub_forward_origins), false) AS forward_all, \
                 EXISTS (SELECT 1 FROM spock.local_sync_status y WHERE y.sync_subid = s.sub_id \
                         AND y.sync_nspname IS NULL AND y.sync_kind IN ('d', 'f') \
                         AND y.sync_status <> 'r') AS needs_data_sync, \
                 s.sub_origin::bigint AS provider, \
                 (s.sub_skip_lsn - '0/0')::bigint AS skip_lsn, \
                 EXISTS (SELECT 1 FROM spock.local_sync_status y WHERE y.sync_subid = s.sub_id \
                         AND y.sync_nspname IS NULL AND y.sync_kind IN ('s', 'f') \
                         AND y.sync_status <> 'r') AS needs_structure_sync, \
                 coalesce(s.sub_force_text_transfer, false) AS force_text, \
                 (extract(epoch FROM coalesce(s.sub_apply_delay, '0')) * 1000000)::bigint \
                   AS apply_delay_us \
                 FROM spock.subscription s \
                 JOIN spock.node_interface i ON i.if_id = s.sub_origin_if \
                 WHERE s.sub_id = $1",
                None,
                &[pg_sys::Oid::from(sub_id).into()],
            )
            .unwrap_or_else(|e| broken(&format!("read subscription {sub_id}"), e));
        let Some(row) = rows.into_iter().next() else {
            crate::raise(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                format!("subscription {sub_id} no longer exists"),
            )
        };
        let text = |name| column::<String>(&row, name).unwrap_or_default();
        let flag = |name| column::<bool>(&row, name).unwrap_or(false);
        let number = |name| column::<i64>(&row, name).unwrap_or(0);
        Subscription {
            name: text("name"),
            slot: text("slot"),
            dsn: text("dsn"),
            sets: column::<Vec<Option<String>>>(&row, "sets")
                .unwrap_or_default()
                .into_iter()
                .flatten()
                .collect(),
            forward_all: flag("forward_all"),
            needs_data_sync: flag("needs_data_sync"),
            provider: number("provider") as u32,
            skip_lsn: number("skip_lsn") as u64,
            needs_structure_sync: flag("needs_structure_sync"),
            force_text: flag("force_text"),
            apply_delay_us: number("apply_delay_us").max(0),
        }
    })
}

/// The enabled subscriptions of this node, whose workers the manager keeps running.
pub fn enabled() -> Vec<u32> {
    Spi::connect(|c| {
        c.select(
            "SELECT s.sub_id FROM spock.subscription s \
             JOIN spock.local_node l ON l.node_id = s.sub_target WHERE s.sub_enabled",
            None,
            &[],
        )
        .unwrap_or_else(|e| broken("read the subscriptions", e))
        .filter_map(|row| column::<pg_sys::Oid>(&row, "sub_id"))
        .map(|oid| oid.to_u32())
        .collect()
    })
}

/// Disables subscription `sub_id` (its worker stops when this commits).
pub fn disable(sub_id: u32) {
    Spi::run_with_args(
        "UPDATE spock.subscription SET sub_enabled = false WHERE sub_id = $1",
        &[pg_sys::Oid::from(sub_id).into()],
    )
    .unwrap_or_else(|e| broken("disable the subscription", e));
}

/// Clears the skip-LSN of subscription `sub_id` once its transaction was skipped.
pub fn clear_skip_lsn(sub_id: u32) {
    Spi::run_with_args(
        "UPDATE spock.subscription SET sub_skip_lsn = '0/0' WHERE sub_id = $1",
        &[pg_sys::Oid::from(sub_id).into()],
    )
    .unwrap_or_else(|e| broken("clear the skip-LSN", e));
}

/// For every subscription with a local replication origin: (its provider node, the origin's
/// id). Changes applied through a subscription commit with its origin, so the pair maps a
/// row's commit origin to the node that wrote it, and back.
pub fn origins() -> Vec<(u32, u16)> {
    Spi::connect(|c| {
        c.select(
            "SELECT s.sub_origin::bigint AS node, r.roident::bigint AS origin \
             FROM spock.subscription s \
             JOIN pg_catalog.pg_replication_origin r ON r.roname = s.sub_slot_name",
            None,
            &[],
        )
        .unwrap_or_else(|e| broken("read the subscriptions' origins", e))
        .filter_map(|row| {
            Some((
                column::<i64>(&row, "node")? as u32,
                column::<i64>(&row, "origin")? as u16,
            ))
        })
        .collect()
    })
}
