//! `spock.progress` (per provider node, upstream's: how far this node has applied each other
//! node's changes) and `spock.subscription_progress` (per subscription, the commit timestamp
//! its stream has reached; the horizon of tombstone collection).

use super::{broken, format_lsn, ts_param};
use pgrx::prelude::*;

/// Records that this node has applied `provider`'s changes up to `lsn` (commit timestamp
/// `commit_ts`, µs since 2000) and received up to `received`. An LSN never moves back.
pub fn applied(provider: u32, commit_ts: i64, lsn: u64, received: u64) {
    Spi::run_with_args(
        &format!(
            "INSERT INTO spock.progress (node_id, remote_node_id, remote_commit_ts, remote_lsn, \
             remote_insert_lsn, last_updated_ts, updated_by_decode) \
             SELECT l.node_id, $1::oid, {}, $3::text::pg_lsn, $4::text::pg_lsn, now(), false \
             FROM spock.local_node l \
             ON CONFLICT (node_id, remote_node_id) DO UPDATE SET \
             remote_commit_ts = EXCLUDED.remote_commit_ts, \
             remote_lsn = greatest(spock.progress.remote_lsn, EXCLUDED.remote_lsn), \
             remote_insert_lsn = EXCLUDED.remote_insert_lsn, last_updated_ts = now()",
            ts_param(2)
        ),
        &[
            pg_sys::Oid::from(provider).into(),
            commit_ts.into(),
            format_lsn(lsn).into(),
            format_lsn(received).into(),
        ],
    )
    .unwrap_or_else(|e| broken("save the replication progress", e));
}

/// Records that subscription `sub_id` has applied everything committed up to `commit_ts`.
pub fn subscription_applied(sub_id: u32, commit_ts: i64) {
    Spi::run_with_args(
        &format!(
            "INSERT INTO spock.subscription_progress (sub_id, commit_ts) VALUES ($1, {}) \
             ON CONFLICT (sub_id) DO UPDATE SET commit_ts = EXCLUDED.commit_ts",
            ts_param(2)
        ),
        &[pg_sys::Oid::from(sub_id).into(), commit_ts.into()],
    )
    .unwrap_or_else(|e| broken("save the replication progress", e));
}

/// One of a provider's `spock.progress` rows, as a copy from it carries them over.
pub struct Adopted<'a> {
    pub origin: u32,
    /// µs since 2000; `None` when the provider has none (`-infinity` then).
    pub commit_ts: Option<i64>,
    pub lsn: Option<&'a str>,
    pub insert_lsn: Option<&'a str>,
}

/// Takes a provider's progress row as ours when it is ahead (never moving one back), as
/// upstream's sync records them. A row about this node itself is left out.
pub fn adopt(row: &Adopted) {
    Spi::run_with_args(
        &format!(
            "INSERT INTO spock.progress (node_id, remote_node_id, remote_commit_ts, remote_lsn, \
             remote_insert_lsn, last_updated_ts, updated_by_decode) \
             SELECT l.node_id, $1::oid, coalesce({}, '-infinity'), $3::pg_lsn, $4::pg_lsn, \
             now(), false FROM spock.local_node l WHERE l.node_id <> $1::oid \
             ON CONFLICT (node_id, remote_node_id) DO UPDATE SET \
             remote_commit_ts = greatest(spock.progress.remote_commit_ts, EXCLUDED.remote_commit_ts), \
             remote_lsn = greatest(spock.progress.remote_lsn, EXCLUDED.remote_lsn), \
             remote_insert_lsn = greatest(spock.progress.remote_insert_lsn, EXCLUDED.remote_insert_lsn), \
             last_updated_ts = now()",
            ts_param(2)
        ),
        &[
            pg_sys::Oid::from(row.origin).into(),
            row.commit_ts.into(),
            row.lsn.into(),
            row.insert_lsn.into(),
        ],
    )
    .unwrap_or_else(|e| broken("record the provider's progress", e));
}

/// Records that a copy contains `origin`'s changes up to `lsn` exactly (read under the copy's
/// snapshot), moving only the LSN forward; `commit_ts` (µs since 2000) fills a new row.
pub fn adopt_position(origin: u32, lsn: &str, commit_ts: Option<i64>) {
    Spi::run_with_args(
        &format!(
            "INSERT INTO spock.progress (node_id, remote_node_id, remote_commit_ts, remote_lsn, \
             remote_insert_lsn, last_updated_ts, updated_by_decode) \
             SELECT l.node_id, $1, coalesce({}, '-infinity'), $2::pg_lsn, $2::pg_lsn, now(), false \
             FROM spock.local_node l WHERE l.node_id <> $1 \
             ON CONFLICT (node_id, remote_node_id) DO UPDATE SET \
             remote_lsn = greatest(spock.progress.remote_lsn, EXCLUDED.remote_lsn)",
            ts_param(3)
        ),
        &[
            pg_sys::Oid::from(origin).into(),
            lsn.into(),
            commit_ts.into(),
        ],
    )
    .unwrap_or_else(|e| broken("record the provider's progress", e));
}
