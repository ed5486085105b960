//! What spock records for people to read: `spock.resolutions` (resolved conflicts, when
//! `spock.save_resolutions` is on), `spock.exception_log` (failed changes and subscription
//! events) and `spock.queue` (DDL for the subscribers to replay).
//!
//! The per-change rows go through prepared plans (`crate::prepared`): a conflict storm writes
//! thousands of them.

use super::{broken, ts_param};
use crate::prepared;
use pgrx::prelude::*;
use std::sync::LazyLock;

/// One `spock.resolutions` row. Timestamps are µs since 2000.
pub struct Resolution {
    pub node_name: String,
    /// `schema.table`.
    pub relname: String,
    pub idxname: Option<String>,
    pub conflict_type: &'static str,
    pub resolution: &'static str,
    /// The local row's origin node, -1 when unknown.
    pub local_origin: Option<u32>,
    pub local_tuple: Option<String>,
    pub local_ts: Option<i64>,
    pub remote_origin: u32,
    pub remote_tuple: String,
    pub remote_xid: u32,
    pub remote_ts: i64,
    pub remote_lsn: u64,
}

pub fn resolution(r: Resolution) {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO spock.resolutions (node_name, log_time, relname, idxname, \
             conflict_type, conflict_resolution, local_origin, local_tuple, local_xid, \
             local_timestamp, remote_origin, remote_tuple, remote_xid, remote_timestamp, \
             remote_lsn) \
             VALUES ($1::text::name, now(), $2::text, $3::text, $4::text, $5::text, \
             coalesce($6::bigint, -1), $7::text, NULL, {}, $9::bigint, $10::text, $11::text::xid, \
             {}, $13::text::pg_lsn)",
            ts_param(8),
            ts_param(12)
        )
    });
    prepared::run(
        &SQL,
        &[
            Some(r.node_name),
            Some(r.relname),
            r.idxname,
            Some(r.conflict_type.into()),
            Some(r.resolution.into()),
            r.local_origin.map(|n| n.to_string()),
            r.local_tuple,
            r.local_ts.map(|t| t.to_string()),
            Some(r.remote_origin.to_string()),
            Some(r.remote_tuple),
            Some(r.remote_xid.to_string()),
            Some(r.remote_ts.to_string()),
            Some(super::format_lsn(r.remote_lsn)),
        ],
    );
}

/// One `spock.exception_log` row about a change of a remote transaction. The tuples are JSON.
pub struct Exception<'a> {
    pub remote_origin: u32,
    /// µs since 2000.
    pub remote_commit_ts: i64,
    pub command_counter: i32,
    pub remote_xid: u32,
    pub table_schema: Option<&'a str>,
    pub table_name: Option<&'a str>,
    pub operation: &'a str,
    pub remote_old_tup: Option<&'a str>,
    pub remote_new_tup: Option<&'a str>,
    pub error_message: &'a str,
}

pub fn exception(e: Exception) {
    let text = |v: Option<&str>| v.map(String::from);
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO spock.exception_log (remote_origin, remote_commit_ts, command_counter, \
             retry_errored_at, remote_xid, table_schema, table_name, operation, remote_old_tup, \
             remote_new_tup, error_message) VALUES ($1::oid, {}, $3::int, clock_timestamp(), \
             $4::bigint, $5::text, $6::text, $7::text, $8::jsonb, $9::jsonb, $10::text)",
            ts_param(2)
        )
    });
    prepared::run(
        &SQL,
        &[
            Some(e.remote_origin.to_string()),
            Some(e.remote_commit_ts.to_string()),
            Some(e.command_counter.to_string()),
            Some(e.remote_xid.to_string()),
            text(e.table_schema),
            text(e.table_name),
            Some(e.operation.into()),
            text(e.remote_old_tup),
            text(e.remote_new_tup),
            Some(e.error_message.into()),
        ],
    );
}

/// An `exception_log` row about a subscription rather than a remote transaction (a lost
/// slot, a copy that cannot succeed), written by the caller's transaction.
pub fn event(provider: u32, table: Option<(&str, &str)>, operation: &str, message: &str) {
    Spi::run_with_args(
        "INSERT INTO spock.exception_log (remote_origin, remote_commit_ts, command_counter, \
         retry_errored_at, remote_xid, table_schema, table_name, operation, error_message) \
         VALUES ($1, pg_catalog.now(), 0, pg_catalog.clock_timestamp(), 0, $2, $3, $4, $5)",
        &[
            pg_sys::Oid::from(provider).into(),
            table.map(|t| t.0).into(),
            table.map(|t| t.1).into(),
            operation.into(),
            message.into(),
        ],
    )
    .unwrap_or_else(|e| broken("write to spock.exception_log", e));
}

/// Queues a DDL statement `sql` for the subscribers (set `default_insert_only`), to run there
/// as `role` (none: the applying worker's default).
pub fn queue_ddl(role: Option<&str>, sql: &str) {
    Spi::run_with_args(
        "INSERT INTO spock.queue (queued_at, role, replication_sets, message_type, message) \
         VALUES (pg_catalog.now(), $1, ARRAY['default_insert_only'], 'D', \
                 pg_catalog.to_json($2::pg_catalog.text))",
        &[role.into(), sql.into()],
    )
    .unwrap_or_else(|e| broken("queue the DDL statement", e));
}
