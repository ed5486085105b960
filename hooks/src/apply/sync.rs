//! Initial data synchronisation: the subscribed tables' rows are copied under the snapshot of
//! the new slot (created with `SNAPSHOT 'use'` inside a repeatable-read transaction on the
//! provider), then streaming starts at the slot's consistent point — so no row is lost or seen
//! twice. Each table streams from the provider's `COPY … TO STDOUT` straight into a local
//! `COPY FROM`, so constraints, indexes and replica triggers are maintained as for any insert and
//! no table is held in memory. The local copy, the "ready" marks and the origin's start position
//! commit together: a crash midway copies again.
//!
//! The copy commits with the subscription's replication origin and the snapshot's time as its
//! commit timestamp: its rows are the provider's (not forwarded to this node's own subscribers)
//! and as old as the snapshot, so last-update-wins compares later writes with that time rather
//! than with the moment of the copy.

use super::{Subscription, quote_literal, wait_for_socket};
use crate::identity;
use crate::remote::{Received, Remote};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use spock_proto::Column;
use std::cell::RefCell;
use std::ffi::{CString, c_int, c_void};

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
        .unwrap_or_else(|e| fail(e));
    let consistent_point = slot
        .first()
        .and_then(|row| row.get(1).cloned().flatten())
        .and_then(|lsn| parse_lsn(&lsn))
        .unwrap_or_else(|| fail("the provider returned no consistent point".into()));
    let snapshot_time = snapshot_time(remote).unwrap_or_else(|e| fail(e));
    let sets = set_literals(&sub.sets);
    let tables = remote
        .query(&provider_tables_sql(&sets), 2)
        .unwrap_or_else(|e| fail(e));
    for t in tables.iter().filter(|_| copy_data) {
        let (nsp, rel) = (
            t[0].clone().unwrap_or_default(),
            t[1].clone().unwrap_or_default(),
        );
        let copied = copy_table(remote, &nsp, &rel, &sets, false)
            .unwrap_or_else(|e| fail(format!("{nsp}.{rel}: {e}")));
        Spi::run_with_args(
            "INSERT INTO spock.local_sync_status (sync_kind, sync_subid, sync_nspname, sync_relname, sync_status, sync_statuslsn) \
             VALUES ('d', $1, $2, $3, 'r', $4::pg_lsn) \
             ON CONFLICT (sync_subid, sync_nspname, sync_relname) DO UPDATE SET sync_status = 'r', sync_statuslsn = EXCLUDED.sync_statuslsn",
            &[
                pg_sys::Oid::from(sub_id).into(),
                nsp.as_str().into(),
                rel.as_str().into(),
                super::exceptions::format_lsn(consistent_point).as_str().into(),
            ],
        )
        .unwrap_or_else(|e| fail(e.to_string()));
        log!(
            "subscription \"{}\": copied {copied} rows of {nsp}.{rel}",
            sub.name
        );
    }
    if copy_data {
        adopt_progress(remote).unwrap_or_else(|e| fail(e));
    }
    remote.command("COMMIT").unwrap_or_else(|e| fail(e));
    // With a structure sync, the subscription is ready once indexes and constraints are
    // restored too (the caller marks it then).
    if !sub.needs_structure_sync {
        Spi::run_with_args(
            "UPDATE spock.local_sync_status SET sync_status = 'r' WHERE sync_subid = $1 AND sync_nspname IS NULL",
            &[pg_sys::Oid::from(sub_id).into()],
        )
        .unwrap_or_else(|e| fail(e.to_string()));
    }
    // The stream starts where the snapshot ends.
    commit_as_provider(origin, consistent_point, snapshot_time);
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
        Spi::run_with_args(
            "UPDATE spock.local_sync_status SET sync_status = 'e' \
             WHERE sync_subid = $1 AND sync_nspname = $2 AND sync_relname = $3",
            &[pg_sys::Oid::from(sub_id).into(), nsp.into(), rel.into()],
        )
        .unwrap_or_else(|e| error!("cannot mark the copy failed: {e}"));
        super::exceptions::log_event(
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
    let copied = copy_table(&mut remote, nsp, rel, &set_literals(&sub.sets), true)
        .unwrap_or_else(|e| fail(e));
    adopt_progress(&remote).unwrap_or_else(|e| fail(e));
    remote.command("COMMIT").unwrap_or_else(|e| fail(e));
    Spi::run_with_args(
        "UPDATE spock.local_sync_status SET sync_status = 'r', sync_statuslsn = $4::pg_lsn \
         WHERE sync_subid = $1 AND sync_nspname = $2 AND sync_relname = $3",
        &[
            pg_sys::Oid::from(sub_id).into(),
            nsp.into(),
            rel.into(),
            lsn.as_str().into(),
        ],
    )
    .unwrap_or_else(|e| fail(e.to_string()));
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
fn adopt_progress(remote: &Remote) -> Result<(), String> {
    let rows = remote.query(
        // Timestamps as microseconds since 2000: the provider's DateStyle does not matter.
        "SELECT p.remote_node_id::text, \
         ((extract(epoch FROM p.remote_commit_ts) - 946684800) * 1000000)::bigint::text, \
         p.remote_lsn::text, \
         p.remote_insert_lsn::text FROM spock.progress p \
         JOIN spock.local_node l ON l.node_id = p.node_id",
        4,
    )?;
    for row in rows {
        let [Some(origin), commit_ts, lsn, insert_lsn] = &row[..] else {
            continue;
        };
        Spi::run_with_args(
            "INSERT INTO spock.progress (node_id, remote_node_id, remote_commit_ts, remote_lsn, \
             remote_insert_lsn, last_updated_ts, updated_by_decode) \
             SELECT l.node_id, $1::oid, \
             timestamptz '2000-01-01 00:00:00+00' + $2::bigint * interval '1 microsecond', \
             $3::pg_lsn, $4::pg_lsn, now(), false \
             FROM spock.local_node l WHERE l.node_id <> $1::oid \
             ON CONFLICT (node_id, remote_node_id) DO UPDATE SET \
             remote_commit_ts = greatest(spock.progress.remote_commit_ts, EXCLUDED.remote_commit_ts), \
             remote_lsn = greatest(spock.progress.remote_lsn, EXCLUDED.remote_lsn), \
             remote_insert_lsn = greatest(spock.progress.remote_insert_lsn, EXCLUDED.remote_insert_lsn), \
             last_updated_ts = now()",
            &[
                origin.as_str().into(),
                commit_ts.as_deref().into(),
                lsn.as_deref().into(),
                insert_lsn.as_deref().into(),
            ],
        )
        .map_err(|e| format!("cannot record the provider's progress: {e}"))?;
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
    remote.start_copy_out(&match filter {
        Some(f) => format!("COPY (SELECT {cols} FROM ONLY {table} WHERE {f}) TO STDOUT"),
        None => format!("COPY {table} ({cols}) TO STDOUT"),
    })?;

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
                    wait_for_socket(fd);
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
