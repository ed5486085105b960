//! Initial data synchronisation: the subscribed tables' rows are copied under the snapshot of
//! the new slot (created with `SNAPSHOT 'use'` inside a repeatable-read transaction on the
//! provider), then streaming starts at the slot's consistent point — so no row is lost or seen
//! twice. Each table streams from the provider's `COPY … TO STDOUT` straight into a local
//! `COPY FROM`, so constraints, indexes and replica triggers are maintained as for any insert and
//! no table is held in memory. The local copy, the "ready" marks and the origin's start position
//! commit together: a crash midway copies again.
//!
//! The copy commits with the subscription's replication origin: its rows are the provider's
//! (not forwarded to this node's own subscribers). Rows keep the version (commit timestamp and
//! origin node) they have on the provider where it can matter: a row written after the oldest
//! point up to which the provider has applied another node's changes is inserted in a
//! subtransaction stamped with its own version (kernel capability), so last-update-wins here
//! compares it with the changes still to come from that node exactly as the provider did. Older
//! rows share one stamp just below that point — every change still to come is newer than both
//! that stamp and the row's own version, so the outcome is the same, and the bulk of a table
//! goes in with one plain COPY. The provider's tombstones come along the same way.
//!
//! While the provider takes the copy's snapshot its apply workers cannot commit (a lock they
//! take at each remote BEGIN), so the position of each of its replication origins at that
//! moment is exactly how far the copy contains that origin's changes. They are recorded in
//! `spock.progress`; `spock.add_node` starts the new node's streams from the other nodes there.

use super::{Subscription, quote_literal};
use crate::catalog;
use crate::identity;
use crate::remote::{Received, Remote};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use spock_proto::Column;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{CString, c_int, c_void};

/// Key of the advisory lock every apply worker holds shared from a remote BEGIN to its COMMIT
/// and a copy's snapshot takes exclusively on the provider (`pg_advisory_lock(bigint)`).
const COMMIT_GATE: i64 = (3 << 40) | 0x5a0d;

/// Takes the commit gate shared for the current transaction (apply workers, at BEGIN).
pub(super) fn commit_gate_shared() {
    // SAFETY: a lock tag filled as SET_LOCKTAG_INT64 does for pg_advisory_xact_lock_shared;
    // the transaction-level lock is released at commit or abort.
    unsafe {
        let mut tag: pg_sys::LOCKTAG = std::mem::zeroed();
        tag.locktag_field1 = pg_sys::MyDatabaseId.to_u32();
        tag.locktag_field2 = (COMMIT_GATE >> 32) as u32;
        tag.locktag_field3 = COMMIT_GATE as u32;
        tag.locktag_field4 = 1;
        tag.locktag_type = pg_sys::LockTagType::LOCKTAG_ADVISORY as u8;
        tag.locktag_lockmethodid = pg_sys::USER_LOCKMETHOD as u8;
        pg_sys::LockAcquire(&tag, pg_sys::ShareLock as pg_sys::LOCKMODE, false, false);
    }
}

/// How long one attempt to take the commit gate may wait. While the exclusive request waits,
/// the provider's apply workers queue behind it at their next BEGIN: the wait stays short.
const GATE_WAIT_MS: u64 = 2_000;
/// Attempts to take the gate (with a growing pause between them) before the copy fails.
const GATE_ATTEMPTS: u32 = 5;
/// How long the slot creation may wait, gate held, for the provider's running transactions
/// (each wait on one is a lock wait, which `lock_timeout` bounds).
const SNAPSHOT_WAIT_MS: u64 = 10_000;

/// Holds the provider's apply commits (the gate taken exclusively on a second connection)
/// until dropped: meanwhile the positions of its replication origins match what a snapshot
/// taken now contains. Apply workers wait for the gate before they get an xid, so the slot
/// creation, which waits for running transactions, cannot wait for them.
///
/// Each attempt waits at most `GATE_WAIT_MS`: a long apply transaction on the provider must
/// not stall its other workers behind the queued request.
fn hold_applied_commits(dsn: &str, appname: &str) -> Result<Remote, String> {
    let gate = Remote::connect(dsn, appname)?;
    // The session must live as long as the gate is needed (see `gate_still_held`).
    gate.command(&format!(
        "SET lock_timeout = {GATE_WAIT_MS}; SET idle_session_timeout = 0; \
         SET idle_in_transaction_session_timeout = 0; SET statement_timeout = 0"
    ))?;
    for attempt in 0..GATE_ATTEMPTS {
        if attempt > 0 {
            super::nap(std::time::Duration::from_millis(500 << attempt));
        }
        // A lock timeout is told by its SQLSTATE on the provider (its message is in the
        // provider's language): caught there, and the gate then is simply not held.
        gate.command(&format!(
            "DO $spock$ BEGIN PERFORM pg_catalog.pg_advisory_lock({COMMIT_GATE}); \
             EXCEPTION WHEN lock_not_available THEN NULL; END $spock$"
        ))?;
        if gate_still_held(&gate) {
            return Ok(gate);
        }
    }
    Err(format!(
        "could not take the provider's commit gate in {GATE_ATTEMPTS} attempts of {GATE_WAIT_MS} ms \
         (an apply transaction on the provider kept it)"
    ))
}

/// Whether the gate's session is still there with the gate held. If it went away (killed,
/// timed out, connection reset), the provider's apply workers may have committed while the
/// positions were read, and the positions may be past the snapshot.
fn gate_still_held(gate: &Remote) -> bool {
    gate.query(
        &format!(
            "SELECT count(*)::text FROM pg_catalog.pg_locks WHERE pid = pg_catalog.pg_backend_pid() \
             AND locktype = 'advisory' AND mode = 'ExclusiveLock' AND granted \
             AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()) \
             AND ((classid::bigint << 32) | objid::bigint) = {COMMIT_GATE} AND objsubid = 1"
        ),
        1,
    )
    .ok()
    .and_then(|rows| rows.first().and_then(|r| r[0].clone()))
    .as_deref()
        == Some("1")
}

/// What the copy needs to keep rows' versions: from when a row's own version matters
/// (`recent_from`, µs since 2000; `None`: never) and the local replication origin that
/// stands for each node.
struct Versions {
    recent_from: Option<i64>,
    origins: HashMap<u32, u16>,
    /// The subscription's own origin: what a version from a node without a subscription
    /// here is stamped with (the provider's, as the rest of the copy).
    fallback: u16,
}

/// Per origin node of the provider: how far the snapshot contains its changes (LSN text)
/// and the commit timestamp of the provider's progress for it (µs since 2000), if known.
type Positions = HashMap<u32, (Option<String>, Option<i64>)>;

/// Reads, under the gate, the provider's origin positions (exact: no apply commit can
/// happen meanwhile) and the progress timestamps (a lower bound: saved now and then).
fn origin_positions(remote: &Remote) -> Result<Positions, String> {
    let rows = remote.query(
        "SELECT s.sub_origin::text, \
         min(pg_catalog.pg_replication_origin_progress(s.sub_slot_name, false))::text, \
         min(CASE WHEN pg_catalog.isfinite(p.remote_commit_ts) THEN \
         ((extract(epoch FROM p.remote_commit_ts) - 946684800) * 1000000)::bigint END)::text \
         FROM spock.subscription s JOIN spock.local_node l ON l.node_id = s.sub_target \
         JOIN pg_catalog.pg_replication_origin r ON r.roname = s.sub_slot_name \
         LEFT JOIN spock.progress p ON p.node_id = l.node_id AND p.remote_node_id = s.sub_origin \
         GROUP BY s.sub_origin",
        3,
    )?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let node = r[0].as_deref()?.parse().ok()?;
            Some((
                node,
                (r[1].clone(), r[2].as_deref().and_then(|t| t.parse().ok())),
            ))
        })
        .collect())
}

/// The local replication origin of the subscription from each node (rows of the copy made
/// there are stamped with it, so they read as that node's).
fn local_origins() -> HashMap<u32, u16> {
    catalog::subscriptions::origins().into_iter().collect()
}

fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Creates the subscription's slot with its snapshot and, when `copy_data`, copies the
/// subscribed tables under it. `origin` is the subscription's replication origin, already set
/// up for this session.
pub(super) fn copy_tables(
    remote: &mut Remote,
    sub: &Subscription,
    sub_id: u32,
    origin: pg_sys::RepOriginId,
    copy_data: bool,
) {
    let fail =
        |e: String| -> ! { error!("subscription \"{}\": initial sync failed: {e}", sub.name) };
    // The local transaction also converts remote results.
    begin_local();
    // A slot left by an interrupted attempt has the wrong snapshot: start over.
    remote
        .query(
            &format!(
                "SELECT pg_drop_replication_slot(slot_name)::text FROM pg_replication_slots WHERE slot_name = {}",
                quote_literal(&sub.slot)
            ),
            1,
        )
        .unwrap_or_else(|e| fail(e));
    let gate = copy_data
        .then(|| hold_applied_commits(&sub.dsn, &format!("{}_snap", sub.name)))
        .transpose()
        .unwrap_or_else(|e| fail(e));
    // With the gate held, the slot creation's waits for the provider's running transactions
    // are bounded: one that stays open (prepared, or a session idle in transaction) would
    // otherwise hold every apply worker there for as long.
    if gate.is_some() {
        remote
            .command(&format!("SET lock_timeout = {SNAPSHOT_WAIT_MS}"))
            .unwrap_or_else(|e| fail(e));
    }
    remote
        .command("BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ")
        .unwrap_or_else(|e| fail(e));
    let slot = remote
        .query(
            &format!(
                "CREATE_REPLICATION_SLOT {} LOGICAL spock_output (SNAPSHOT 'use')",
                ident(&sub.slot)
            ),
            4,
        )
        .unwrap_or_else(|e| {
            if gate.is_some() && e.contains("lock timeout") {
                fail(format!(
                    "the provider could not take the copy's snapshot within {SNAPSHOT_WAIT_MS} ms: \
                     a transaction there that holds an xid stays open (a prepared transaction, or \
                     a session idle in transaction; see pg_prepared_xacts and pg_stat_activity); \
                     its apply commits, held meanwhile, go on, and the copy is tried again ({e})"
                ))
            }
            fail(e)
        });
    if gate.is_some() {
        remote
            .command("RESET lock_timeout")
            .unwrap_or_else(|e| fail(e));
    }
    let consistent_point = slot
        .first()
        .and_then(|row| row.get(1).cloned().flatten())
        .and_then(|lsn| parse_lsn(&lsn))
        .unwrap_or_else(|| fail("the provider returned no consistent point".into()));
    let positions = if copy_data {
        origin_positions(remote).unwrap_or_else(|e| fail(e))
    } else {
        Positions::new()
    };
    if let Some(gate) = &gate
        && !gate_still_held(gate)
    {
        fail("the provider's commit gate was lost while the snapshot was taken (its session ended); \
              the positions read may be past the snapshot, so the copy is tried again"
            .into())
    }
    // The snapshot and the positions are taken: the provider's apply workers may go on.
    drop(gate);
    let snapshot_time = snapshot_time(remote).unwrap_or_else(|e| fail(e));
    let local = Spi::get_one::<i64>("SELECT node_id::bigint FROM spock.local_node")
        .unwrap_or_else(|e| fail(e.to_string()))
        .unwrap_or(0) as u32;
    // Changes still to come from another node are all newer than the provider's progress for
    // it; the oldest such progress is where a row's own version starts to matter. Without a
    // known progress for some node, every row's does.
    let others: Vec<Option<i64>> = positions
        .iter()
        .filter(|(node, _)| **node != local)
        .map(|(_, (_, ts))| *ts)
        .collect();
    let recent_from = if others.iter().any(Option::is_none) {
        Some(i64::MIN)
    } else {
        others.iter().flatten().min().copied()
    };
    let versions = Versions {
        recent_from,
        origins: local_origins(),
        fallback: origin,
    };
    // Older rows share a stamp below every change still to come.
    let stamp = match recent_from {
        Some(from) => snapshot_time.min(from.saturating_sub(1)),
        None => snapshot_time,
    };
    let sets = set_literals(&sub.sets);
    let tables = remote
        .query(&provider_tables_sql(&sets), 2)
        .unwrap_or_else(|e| fail(e));
    for t in tables.iter().filter(|_| copy_data) {
        let (nsp, rel) = (
            t[0].clone().unwrap_or_default(),
            t[1].clone().unwrap_or_default(),
        );
        let copied = copy_table(remote, &nsp, &rel, &sets, false, Some(&versions))
            .unwrap_or_else(|e| fail(format!("{nsp}.{rel}: {e}")));
        catalog::sync_status::table_copied(sub_id, &nsp, &rel, consistent_point);
        log!(
            "subscription \"{}\": copied {copied} rows of {nsp}.{rel}",
            sub.name
        );
    }
    if copy_data {
        copy_tombstones(remote, &versions).unwrap_or_else(|e| fail(e));
        adopt_progress(remote, &positions).unwrap_or_else(|e| fail(e));
    }
    remote.command("COMMIT").unwrap_or_else(|e| fail(e));
    // With a structure sync, the subscription is ready once indexes and constraints are
    // restored too (the caller marks it then).
    if !sub.needs_structure_sync {
        catalog::sync_status::subscription_ready(sub_id);
    }
    // The stream starts where the snapshot ends.
    commit_as_provider(origin, consistent_point, stamp);
}

/// Starts the local transaction that receives a copy.
fn begin_local() {
    // SAFETY: called between transactions by the apply worker.
    unsafe {
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
}

/// Commits the transaction `begin_local` started as a change of the provider's made at
/// `snapshot_time`: with the subscription's `origin`, moving its position to `origin_lsn`
/// (0 leaves it where it is).
fn commit_as_provider(origin: pg_sys::RepOriginId, origin_lsn: u64, snapshot_time: i64) {
    // SAFETY: the session's origin (set up by the caller) stamps this commit only; the
    // previous values come back afterwards.
    unsafe {
        let previous = pg_sys::replorigin_session_origin;
        pg_sys::replorigin_session_origin = origin;
        pg_sys::replorigin_session_origin_lsn = origin_lsn;
        pg_sys::replorigin_session_origin_timestamp = snapshot_time;
        pg_sys::PopActiveSnapshot();
        pg_sys::CommitTransactionCommand();
        pg_sys::replorigin_session_origin = previous;
        pg_sys::replorigin_session_origin_lsn = 0;
        pg_sys::replorigin_session_origin_timestamp = 0;
    }
}

/// On the provider: its replication sets' table memberships (`t`, with the set as `s`).
const MEMBERSHIPS: &str = "spock.replication_set_table t \
     JOIN spock.replication_set s ON s.set_id = t.set_id \
     JOIN spock.local_node l ON l.node_id = s.set_nodeid";

/// The provider's query for the tables of the subscribed sets (`sets`: a list of SQL literals),
/// as (schema, table) rows.
pub fn provider_tables_sql(sets: &str) -> String {
    format!(
        "SELECT DISTINCT n.nspname::text, c.relname::text FROM {MEMBERSHIPS} \
         JOIN pg_class c ON c.oid = t.set_reloid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE s.set_name = ANY (ARRAY[{sets}]::text[]) AND c.relkind = 'r' ORDER BY 1, 2"
    )
}

/// The subscribed sets as a list of SQL literals (`NULL` when there are none).
pub fn set_literals(sets: &[String]) -> String {
    if sets.is_empty() {
        "NULL".to_string()
    } else {
        sets.iter()
            .map(|s| quote_literal(s))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Copies one table again while the subscription streams (`sub_resync_table`,
/// `sub_alter_sync`; they truncate first when asked): under a fresh snapshot on its own
/// connection, keeping rows already here, committed with the subscription's origin and the
/// snapshot's time. The stream then replays the provider's
/// changes between its position and the snapshot over the copy; they are the provider's own
/// earlier writes, so each row ends where the provider's is.
///
/// A copy that fails for a reason another try cannot fix (a column missing here, a row the
/// table refuses, a filter the provider cannot evaluate) is not retried: the table is marked
/// failed (`sub_show_table`: `sync_failed`), the reason goes to `spock.exception_log`, and
/// the rest of the subscription goes on. `sub_resync_table` tries again once it is fixed.
/// Connection trouble, deadlocks, lack of resources and stop requests are tried again.
pub(super) fn resync_table(sub: &Subscription, sub_id: u32, nsp: &str, rel: &str) {
    let failed = PgTryBuilder::new(std::panic::AssertUnwindSafe(|| {
        copy_again(sub, sub_id, nsp, rel);
        None
    }))
    .catch_others(|e| {
        let report = match &e {
            CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => r,
            CaughtError::RustPanic { ereport, .. } => ereport,
        };
        if retry_may_help(report.sql_error_code()) {
            e.rethrow()
        }
        let reason = report.message().to_string();
        // SAFETY: the error was caught; this ends the failed copy's transaction.
        unsafe { pg_sys::AbortOutOfAnyTransaction() };
        Some(reason)
    })
    .execute();
    if let Some(reason) = failed {
        mark_failed(sub, sub_id, nsp, rel, &reason);
    }
}

/// Whether an error of a copy may go away by itself: SQLSTATE class 08 (connection), 40
/// (transaction rollback), 53 (resources), 57 (operator intervention) or 58 (system), or
/// 55P03 (lock not available).
fn retry_may_help(code: PgSqlErrorCode) -> bool {
    let state = sqlstate(code);
    ["08", "40", "53", "57", "58"].contains(&&state[..2]) || state == "55P03"
}

/// The five-character SQLSTATE of `code` (PostgreSQL packs each character in six bits).
fn sqlstate(code: PgSqlErrorCode) -> String {
    let packed = code as i64;
    (0..5)
        .map(|i| char::from(b'0' + ((packed >> (6 * i)) & 0x3F) as u8))
        .collect()
}

/// Marks a table whose copy cannot succeed, says why, and lets the rest go on.
fn mark_failed(sub: &Subscription, sub_id: u32, nsp: &str, rel: &str, reason: &str) {
    warning!(
        "subscription \"{}\": copying {nsp}.{rel} failed and is not retried: {reason}",
        sub.name
    );
    pgrx::bgworkers::BackgroundWorker::transaction(|| {
        catalog::sync_status::table_failed(sub_id, nsp, rel);
        catalog::logs::event(
            sub.provider,
            Some((nsp, rel)),
            "SYNC",
            &format!(
                "copying the table failed and is not retried (fix the cause, then \
                 spock.sub_resync_table): {reason}"
            ),
        );
    });
}

/// One attempt of `resync_table`.
fn copy_again(sub: &Subscription, sub_id: u32, nsp: &str, rel: &str) {
    // Connection trouble is worth another try; anything else the provider or this node says
    // about the copy is not.
    let fail = |e: String| -> ! {
        let lost = [
            "server closed the connection",
            "could not receive data",
            "could not send data",
            "connection to server",
            "no connection to the server",
            "terminating connection",
            "SSL",
        ]
        .iter()
        .any(|m| e.contains(m));
        ereport!(
            PgLogLevel::ERROR,
            if lost {
                PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE
            } else {
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
            },
            format!(
                "subscription \"{}\": synchronising {nsp}.{rel} failed: {e}",
                sub.name
            )
        );
        unreachable!("ereport(ERROR) does not return")
    };
    let mut remote = Remote::connect(&sub.dsn, &format!("{}_sync", sub.slot)).unwrap_or_else(|e| {
        ereport!(
            PgLogLevel::ERROR,
            PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE,
            format!(
                "subscription \"{}\": synchronising {nsp}.{rel} failed: {e}",
                sub.name
            )
        );
        unreachable!("ereport(ERROR) does not return")
    });
    begin_local();
    remote
        .command("BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ")
        .unwrap_or_else(|e| fail(e));
    let lsn = remote
        .query("SELECT pg_current_wal_lsn()::text", 1)
        .unwrap_or_else(|e| fail(e))
        .first()
        .and_then(|r| r[0].clone())
        .unwrap_or_else(|| fail("the provider returned no WAL position".into()));
    let snapshot_time = snapshot_time(&remote).unwrap_or_else(|e| fail(e));
    let copied = copy_table(&mut remote, nsp, rel, &set_literals(&sub.sets), true, None)
        .unwrap_or_else(|e| fail(e));
    adopt_progress(&remote, &Positions::new()).unwrap_or_else(|e| fail(e));
    remote.command("COMMIT").unwrap_or_else(|e| fail(e));
    let lsn = parse_lsn(&lsn)
        .unwrap_or_else(|| fail(format!("the provider returned a bad WAL position {lsn}")));
    catalog::sync_status::table_recopied(sub_id, nsp, rel, lsn);
    // The origin's position stays where the stream is.
    // SAFETY: reading the worker's session origin.
    commit_as_provider(
        unsafe { pg_sys::replorigin_session_origin },
        0,
        snapshot_time,
    );
    log!(
        "subscription \"{}\": copied {copied} rows of {nsp}.{rel}",
        sub.name
    );
}

/// The copied rows include what the provider had applied from other nodes: its `spock.progress`
/// rows under the copy's snapshot say how far, per origin node, and become ours (never moving
/// one back), as upstream's sync records them. Rows about this node itself are left out.
/// Where the exact position of an origin under the snapshot is known (`positions`), it is
/// the one recorded: the progress rows themselves are saved only now and then.
fn adopt_progress(remote: &Remote, positions: &Positions) -> Result<(), String> {
    let rows = remote.query(
        // Timestamps as microseconds since 2000: the provider's DateStyle does not matter. A
        // position adopted there without a timestamp has -infinity (no bigint).
        "SELECT p.remote_node_id::text, \
         CASE WHEN pg_catalog.isfinite(p.remote_commit_ts) THEN \
         ((extract(epoch FROM p.remote_commit_ts) - 946684800) * 1000000)::bigint END::text, \
         p.remote_lsn::text, \
         p.remote_insert_lsn::text FROM spock.progress p \
         JOIN spock.local_node l ON l.node_id = p.node_id",
        4,
    )?;
    for row in rows {
        let [Some(origin), commit_ts, lsn, insert_lsn] = &row[..] else {
            continue;
        };
        let origin = origin
            .parse()
            .map_err(|_| format!("the provider sent a bad node id {origin}"))?;
        catalog::progress::adopt(&catalog::progress::Adopted {
            origin,
            commit_ts: commit_ts.as_deref().and_then(|t| t.parse().ok()),
            lsn: lsn.as_deref(),
            insert_lsn: insert_lsn.as_deref(),
        });
    }
    // Upserted: the provider may have no progress row for an origin it has a position for
    // (none saved yet).
    for (node, (lsn, ts)) in positions {
        if let Some(lsn) = lsn {
            catalog::progress::adopt_position(*node, lsn, *ts);
        }
    }
    Ok(())
}

/// On the provider: the version of the row or tombstone aliased `t` as (µs since 2000, node
/// id), through a LATERAL over its xmin; the node of a local write is the provider itself,
/// that of an applied one the subscription's origin node.
fn version_sql(xmin: &str) -> String {
    format!(
        "((extract(epoch FROM spock_v.timestamp) - 946684800) * 1000000)::bigint, \
         CASE WHEN spock_v.roident = 0 THEN (SELECT node_id FROM spock.local_node) \
         ELSE coalesce((SELECT s.sub_origin FROM spock.subscription s \
         JOIN pg_catalog.pg_replication_origin r ON r.roname = s.sub_slot_name \
         WHERE r.roident = spock_v.roident LIMIT 1), spock_v.roident) END \
         FROM pg_catalog.pg_xact_commit_timestamp_origin({xmin}) spock_v"
    )
}

/// A timestamp literal from µs since 2000.
fn ts_literal(us: i64) -> String {
    format!("(timestamptz '2000-01-01 00:00:00+00' + {us}::bigint * interval '1 microsecond')")
}

/// Runs `f` in a subtransaction whose commit timestamp and origin become `version` (when it
/// wrote anything, and the kernel can). One per distinct version, however many rows share it.
fn stamped<R>(versions: &Versions, ts: i64, node: u32, f: impl FnOnce() -> R) -> R {
    // SAFETY: a subtransaction of the copy's transaction; an error aborts the whole copy
    // (its transaction, subtransactions included).
    unsafe { pg_sys::BeginInternalSubTransaction(c"SpockCopyVersion".as_ptr()) };
    let result = f();
    // SAFETY: reading and ending the subtransaction begun above; the lock released is the
    // one on its own xid, now held by the parent.
    unsafe {
        let xid = pg_sys::GetCurrentTransactionIdIfAny();
        if xid != pg_sys::InvalidTransactionId {
            // A node with no subscription here has no origin of its own: its rows read as
            // the provider's, as the rest of the copy (never some unrelated local origin).
            let origin = versions
                .origins
                .get(&node)
                .copied()
                .unwrap_or(versions.fallback);
            crate::kernel::subxact_commit_ts(xid, ts, origin);
        }
        pg_sys::ReleaseCurrentSubTransaction();
        if xid != pg_sys::InvalidTransactionId {
            // A committed subtransaction's xid lock would stay in the shared lock table until
            // the copy commits: thousands of versions would exhaust it ("out of shared
            // memory"). Nobody needs it: a waiter on the xid (XactLockTableWait) finds it
            // still in progress and waits for the top-level transaction instead, as for an
            // aborted subtransaction, whose lock core releases the same way.
            pg_sys::XactLockTableDelete(xid);
        }
    }
    result
}

/// The provider's tombstones of the copied tables, with their versions kept as rows' are.
fn copy_tombstones(remote: &Remote, versions: &Versions) -> Result<(), String> {
    let rows = remote.query(
        &format!(
            "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname), \
             pg_catalog.encode(t.key, 'hex'), spock_x.* FROM spock.tombstones t \
             JOIN pg_catalog.pg_class c ON c.oid = t.relid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace, \
             LATERAL (SELECT {}) spock_x",
            version_sql("t.xmin")
        ),
        4,
    )?;
    // Those whose version is kept go in by version, one subtransaction each.
    let mut by_version: std::collections::BTreeMap<(i64, u32), Vec<(String, String)>> =
        Default::default();
    for row in rows {
        let [Some(table), Some(key), ts, node] = &row[..] else {
            continue;
        };
        let ts: Option<i64> = ts.as_deref().and_then(|t| t.parse().ok());
        let node: Option<u32> = node.as_deref().and_then(|n| n.parse().ok());
        match (ts, node, versions.recent_from) {
            (Some(ts), Some(node), Some(from)) if ts >= from => by_version
                .entry((ts, node))
                .or_default()
                .push((table.clone(), key.clone())),
            _ => catalog::tombstones::copy_in(table, key),
        }
    }
    for ((ts, node), group) in by_version {
        stamped(versions, ts, node, || {
            for (table, key) in &group {
                catalog::tombstones::copy_in(table, key);
            }
        });
    }
    Ok(())
}

/// The provider's commit time as of the snapshot: no row in it was committed later. Its last
/// commit's timestamp can be ahead of the wall clock (the pgEdge commit clock), hence both.
fn snapshot_time(remote: &Remote) -> Result<i64, String> {
    let rows = remote.query(
        "SELECT ((extract(epoch FROM CASE WHEN current_setting('track_commit_timestamp')::bool \
                  THEN greatest(now(), (pg_last_committed_xact()).timestamp) ELSE now() END) \
                  - 946684800) * 1000000)::bigint::text",
        1,
    )?;
    rows.first()
        .and_then(|r| r[0].as_deref())
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| "the provider returned no snapshot time".to_string())
}

fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// Copies one table's replicated columns (those of the subscribed sets' column lists, or all)
/// and returns how many rows. With `merge`, rows whose key already exists here are left alone
/// (the copy goes through a temporary table and `INSERT … ON CONFLICT DO NOTHING`).
fn copy_table(
    remote: &mut Remote,
    nsp: &str,
    rel: &str,
    sets: &str,
    merge: bool,
    versions: Option<&Versions>,
) -> Result<u64, String> {
    let table = format!("{}.{}", ident(nsp), ident(rel));
    let names: Vec<String> = remote
        .query(
            &format!(
                "SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = {}::regclass \
                 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
                 AND EXISTS (SELECT 1 FROM {MEMBERSHIPS} \
                             WHERE t.set_reloid = a.attrelid \
                               AND s.set_name = ANY (ARRAY[{sets}]::text[]) \
                               AND (t.set_att_list IS NULL OR a.attname::text = ANY (t.set_att_list))) \
                 ORDER BY a.attnum",
                quote_literal(&table)
            ),
            1,
        )?
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect();
    let columns: Vec<Column> = names
        .iter()
        .map(|n| Column {
            key: false,
            name: n.clone(),
            type_oid: 0,
            typmod: -1,
        })
        .collect();
    if names.is_empty() {
        return Err("no column of the table is replicated".into());
    }
    // Every copied column must exist here.
    let relid = pg_sys::Oid::from(super::describe_local(nsp, rel, &columns)?.relid);
    // The rows go in with the rights of the table's owner: its replica triggers, constraints,
    // defaults and index expressions (and its column types' input) never run as the worker.
    let owner = identity::rel_owner(relid);
    let cols = names
        .iter()
        .map(|n| ident(n))
        .collect::<Vec<_>>()
        .join(", ");
    // Without a unique key, rows already here cannot be told apart from copied ones: the copy
    // replaces them instead (in this transaction, as the provider's change).
    let merge = merge && {
        let keyed = Spi::get_one_with_args::<bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = to_regclass($1) \
             AND indisunique AND indisvalid AND indimmediate)",
            &[table.as_str().into()],
        )
        .map_err(|e| e.to_string())?
        .unwrap_or(false);
        if !keyed {
            identity::as_owner(owner, || Spi::run(&format!("TRUNCATE ONLY {table}")))
                .map_err(|e| e.to_string())?;
        }
        keyed
    };
    let (into_nsp, into_rel) = if merge {
        // The stage is the worker's (the owner may not create temporary tables), lent to the
        // owner for this copy.
        Spi::run(&format!(
            "CREATE TEMP TABLE spock_sync_stage ON COMMIT DROP AS SELECT {cols} FROM {table} WITH NO DATA"
        ))
        .map_err(|e| e.to_string())?;
        Spi::run(&format!(
            "GRANT SELECT, INSERT ON pg_temp.spock_sync_stage TO {}",
            ident(&identity::role_name(owner))
        ))
        .map_err(|e| e.to_string())?;
        ("pg_temp", "spock_sync_stage")
    } else {
        (nsp, rel)
    };
    // Rows must pass the row filter of every subscribed set that has one, as in the stream.
    let filter = remote
        .query(
            &format!(
                "SELECT string_agg('(' || pg_get_expr(t.set_row_filter, t.set_reloid) || ')', ' AND ') \
                 FROM {MEMBERSHIPS} \
                 WHERE t.set_reloid = {}::regclass AND s.set_name = ANY (ARRAY[{sets}]::text[]) \
                   AND t.set_row_filter IS NOT NULL",
                quote_literal(&table)
            ),
            1,
        )?
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next().flatten());
    if let Some((versions, from)) = versions
        .and_then(|v| Some((v, v.recent_from?)))
        .filter(|_| !merge)
    {
        return copy_keeping_versions(
            remote,
            Keeping {
                table: &table,
                nsp,
                rel,
                names: &names,
                cols: &cols,
                filter: filter.as_deref(),
                owner,
                versions,
                from,
            },
        );
    }
    let command = match filter {
        Some(f) => format!("COPY (SELECT {cols} FROM ONLY {table} WHERE {f}) TO STDOUT"),
        None => format!("COPY {table} ({cols}) TO STDOUT"),
    };
    let copied = copy_in(remote, &command, into_nsp, into_rel, &names, owner)?;
    if !merge {
        return Ok(copied);
    }
    let inserted = identity::as_owner(owner, || {
        Spi::connect_mut(|c| {
            c.update(
                &format!(
                    "INSERT INTO {table} ({cols}) OVERRIDING SYSTEM VALUE \
                     SELECT {cols} FROM pg_temp.spock_sync_stage ON CONFLICT DO NOTHING"
                ),
                None,
                &[],
            )
            .map(|t| t.len() as u64)
        })
    })
    .map_err(|e| e.to_string())?;
    Spi::run("DROP TABLE pg_temp.spock_sync_stage").map_err(|e| e.to_string())?;
    Ok(inserted)
}

/// What `copy_keeping_versions` copies.
struct Keeping<'a> {
    table: &'a str,
    nsp: &'a str,
    rel: &'a str,
    names: &'a [String],
    cols: &'a str,
    filter: Option<&'a str>,
    owner: pg_sys::Oid,
    versions: &'a Versions,
    /// µs since 2000 from which a row's own version is kept (`i64::MIN`: every row's).
    from: i64,
}

/// On the provider: whether the commit timestamp `ts` is one whose version is kept.
fn recent(ts: &str, from: i64) -> String {
    if from == i64::MIN {
        format!("{ts} IS NOT NULL")
    } else {
        format!("{ts} >= {}", ts_literal(from))
    }
}

/// The initial copy of one table in two parts: rows whose version does not matter in one
/// plain COPY (they share the copy's stamp), the others through a stage, each version's
/// rows inserted in a subtransaction stamped with it.
fn copy_keeping_versions(remote: &mut Remote, k: Keeping) -> Result<u64, String> {
    let Keeping {
        table,
        nsp,
        rel,
        names,
        cols,
        filter,
        owner,
        versions,
        from,
    } = k;
    let filter = filter.map_or(String::new(), |f| format!("({f}) AND "));
    let fast = format!(
        "COPY (SELECT {cols} FROM ONLY {table} WHERE {filter}\
         NOT coalesce({}, false)) TO STDOUT",
        recent("pg_catalog.pg_xact_commit_timestamp(xmin)", from)
    );
    let mut copied = copy_in(remote, &fast, nsp, rel, names, owner)?;

    Spi::run(&format!(
        "CREATE TEMP TABLE spock_sync_versions ON COMMIT DROP AS \
         SELECT 0::bigint AS spock_v_ts, 0::oid AS spock_v_node, {cols} FROM {table} WITH NO DATA"
    ))
    .map_err(|e| e.to_string())?;
    Spi::run(&format!(
        "GRANT SELECT, INSERT ON pg_temp.spock_sync_versions TO {}",
        ident(&identity::role_name(owner))
    ))
    .map_err(|e| e.to_string())?;
    let inner = names
        .iter()
        .map(|n| format!("spock_t.{}", ident(n)))
        .collect::<Vec<_>>()
        .join(", ");
    let slow = format!(
        "COPY (SELECT spock_x.*, {inner} FROM (SELECT xmin AS spock_xmin, {cols} FROM ONLY {table} \
         WHERE {filter}{}) spock_t, LATERAL (SELECT {}) spock_x) TO STDOUT",
        recent("pg_catalog.pg_xact_commit_timestamp(xmin)", from),
        version_sql("spock_t.spock_xmin")
    );
    let mut stage_names = vec!["spock_v_ts".to_string(), "spock_v_node".to_string()];
    stage_names.extend(names.iter().cloned());
    copy_in(
        remote,
        &slow,
        "pg_temp",
        "spock_sync_versions",
        &stage_names,
        owner,
    )?;
    Spi::run("CREATE INDEX ON pg_temp.spock_sync_versions (spock_v_ts, spock_v_node)")
        .map_err(|e| e.to_string())?;
    let groups: Vec<(i64, u32)> = Spi::connect(|c| {
        c.select(
            "SELECT DISTINCT spock_v_ts, spock_v_node::bigint FROM pg_temp.spock_sync_versions \
             ORDER BY 1, 2",
            None,
            &[],
        )
        .map(|rows| {
            rows.filter_map(|r| Some((r.get::<i64>(1).ok()??, r.get::<i64>(2).ok()?? as u32)))
                .collect()
        })
    })
    .map_err(|e| e.to_string())?;
    let insert = format!(
        "INSERT INTO {table} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} \
         FROM pg_temp.spock_sync_versions WHERE spock_v_ts = $1 AND spock_v_node = $2::bigint::oid"
    );
    for (ts, node) in groups {
        copied += stamped(versions, ts, node, || {
            identity::as_owner(owner, || {
                Spi::connect_mut(|c| {
                    c.update(&insert, None, &[ts.into(), i64::from(node).into()])
                        .map(|t| t.len() as u64)
                })
            })
        })
        .map_err(|e| e.to_string())?;
    }
    Spi::run("DROP TABLE pg_temp.spock_sync_versions").map_err(|e| e.to_string())?;
    Ok(copied)
}

/// Runs `command` (a `COPY … TO STDOUT`) on the provider into a local `COPY FROM` of the
/// table `into_nsp.into_rel` (columns `names`) as `owner`; returns the rows copied.
fn copy_in(
    remote: &mut Remote,
    command: &str,
    into_nsp: &str,
    into_rel: &str,
    names: &[String],
    owner: pg_sys::Oid,
) -> Result<u64, String> {
    remote.start_copy_out(command)?;
    let nsp_c = CString::new(into_nsp).map_err(|_| "bad schema name".to_string())?;
    let rel_c = CString::new(into_rel).map_err(|_| "bad table name".to_string())?;
    let names_c = names
        .iter()
        .map(|n| CString::new(n.as_str()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "bad column name".to_string())?;
    SOURCE.with(|s| {
        *s.borrow_mut() = Some(Source {
            remote: remote as *mut Remote,
            pending: Vec::new(),
            pos: 0,
            done: false,
        })
    });
    let as_owner = identity::become_owner(owner);
    // SAFETY: a COPY FROM into the table inside the sync transaction, fed by `read_copy_data`;
    // the names are copied into palloc'd memory before use. An error clears the source, so
    // no pointer to the connection outlives the copy.
    let copy = || unsafe {
        let rv = pg_sys::makeRangeVar(
            pg_sys::pstrdup(nsp_c.as_ptr()),
            pg_sys::pstrdup(rel_c.as_ptr()),
            -1,
        );
        let lock = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
        let relation = pg_sys::table_openrv(rv, lock);
        let pstate = pg_sys::make_parsestate(std::ptr::null_mut());
        pg_sys::addRangeTableEntryForRelation(
            pstate,
            relation,
            lock,
            std::ptr::null_mut(),
            false,
            false,
        );
        let mut attnames: *mut pg_sys::List = std::ptr::null_mut();
        for n in &names_c {
            attnames = pg_sys::lappend(
                attnames,
                pg_sys::makeString(pg_sys::pstrdup(n.as_ptr())).cast(),
            );
        }
        let cstate = pg_sys::BeginCopyFrom(
            pstate,
            relation,
            std::ptr::null_mut(),
            std::ptr::null(),
            false,
            Some(read_copy_data),
            attnames,
            std::ptr::null_mut(),
        );
        let copied = pg_sys::CopyFrom(cstate);
        pg_sys::EndCopyFrom(cstate);
        pg_sys::table_close(relation, pg_sys::NoLock as pg_sys::LOCKMODE);
        copied
    };
    let copied = PgTryBuilder::new(std::panic::AssertUnwindSafe(copy))
        .catch_others(|e| {
            SOURCE.with(|s| s.borrow_mut().take());
            e.rethrow()
        })
        .execute();
    as_owner.restore();
    let done = SOURCE.with(|s| s.borrow_mut().take().is_some_and(|s| s.done));
    if !done {
        return Err("the local COPY ended before the provider's".into());
    }
    Ok(copied)
}

/// The provider's COPY stream the local COPY FROM reads (it takes a plain callback).
struct Source {
    remote: *mut Remote,
    pending: Vec<u8>,
    pos: usize,
    done: bool,
}

thread_local! {
    static SOURCE: RefCell<Option<Source>> = const { RefCell::new(None) };
}

/// COPY FROM's data source: at least `minread` and at most `maxread` bytes of the provider's
/// COPY data, fewer only at its end (0 then).
#[pg_guard]
unsafe extern "C-unwind" fn read_copy_data(
    outbuf: *mut c_void,
    minread: c_int,
    maxread: c_int,
) -> c_int {
    SOURCE.with(|s| {
        let mut s = s.borrow_mut();
        let src = s.as_mut().expect("a table copy is running");
        // SAFETY: COPY hands us a buffer of `maxread` bytes.
        let out = unsafe { std::slice::from_raw_parts_mut(outbuf.cast::<u8>(), maxread as usize) };
        let mut filled = 0;
        while filled < minread.max(1) as usize && !src.done {
            check_for_interrupts!();
            if src.pos < src.pending.len() {
                let n = (out.len() - filled).min(src.pending.len() - src.pos);
                out[filled..filled + n].copy_from_slice(&src.pending[src.pos..src.pos + n]);
                filled += n;
                src.pos += n;
                continue;
            }
            // SAFETY: the connection outlives the copy (`copy_table` holds it, mutably borrowed,
            // and clears this pointer however the copy ends).
            match unsafe { &mut *src.remote }.receive() {
                Received::Data(d) => {
                    src.pending.clear();
                    src.pending.extend_from_slice(d);
                    src.pos = 0;
                }
                Received::WouldBlock(fd) => {
                    // SAFETY: as above; the received data's borrow ended with the match arm.
                    unsafe { &mut *src.remote }.wait_readable(fd);
                    check_for_interrupts!();
                }
                Received::End => src.done = true,
            }
        }
        filled as c_int
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_retried_only_where_it_may_help() {
        use PgSqlErrorCode::*;
        assert_eq!(sqlstate(ERRCODE_LOCK_NOT_AVAILABLE), "55P03");
        assert_eq!(sqlstate(ERRCODE_UNDEFINED_COLUMN), "42703");
        for code in [
            ERRCODE_CONNECTION_FAILURE,
            ERRCODE_T_R_DEADLOCK_DETECTED,
            ERRCODE_ADMIN_SHUTDOWN,
            ERRCODE_OUT_OF_MEMORY,
            ERRCODE_LOCK_NOT_AVAILABLE,
        ] {
            assert!(retry_may_help(code), "{code:?}");
        }
        for code in [
            ERRCODE_UNDEFINED_COLUMN,
            ERRCODE_CHECK_VIOLATION,
            ERRCODE_UNIQUE_VIOLATION,
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            ERRCODE_INTERNAL_ERROR,
        ] {
            assert!(!retry_may_help(code), "{code:?}");
        }
    }
}
