//! Initial data synchronisation: the subscribed tables' rows are copied under the snapshot of
//! the new slot (created with `SNAPSHOT 'use'` inside a repeatable-read transaction on the
//! provider), then streaming starts at the slot's consistent point — so no row is lost or seen
//! twice. The local copy and the "ready" mark commit together: a crash midway copies again.

use super::{Subscription, quote_literal};
use crate::remote::Remote;
use pgrx::pg_sys;
use pgrx::prelude::*;
use spock_proto::Column;
use std::ffi::CString;

fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Creates the subscription's slot with its snapshot and, when `copy_data`, copies the
/// subscribed tables under it.
pub fn copy_tables(remote: &Remote, sub: &Subscription, sub_id: u32, copy_data: bool) {
    let fail =
        |e: String| -> ! { error!("subscription \"{}\": initial sync failed: {e}", sub.name) };
    // SAFETY: the local transaction that receives the copy (and converts remote results).
    unsafe {
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
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
    remote
        .query(
            &format!(
                "CREATE_REPLICATION_SLOT {} LOGICAL spock_output (SNAPSHOT 'use')",
                ident(&sub.slot)
            ),
            4,
        )
        .unwrap_or_else(|e| fail(e));
    let sets: Vec<String> = sub.sets.iter().map(|s| quote_literal(s)).collect();
    let tables = remote
        .query(
            &format!(
                "SELECT DISTINCT n.nspname::text, c.relname::text \
                 FROM spock.replication_set_table t \
                 JOIN spock.replication_set s ON s.set_id = t.set_id \
                 JOIN spock.local_node l ON l.node_id = s.set_nodeid \
                 JOIN pg_class c ON c.oid = t.set_reloid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE s.set_name = ANY (ARRAY[{}]::text[]) AND c.relkind = 'r' ORDER BY 1, 2",
                if sets.is_empty() {
                    "NULL".to_string()
                } else {
                    sets.join(", ")
                }
            ),
            2,
        )
        .unwrap_or_else(|e| fail(e));
    for t in tables.iter().filter(|_| copy_data) {
        let (nsp, rel) = (
            t[0].clone().unwrap_or_default(),
            t[1].clone().unwrap_or_default(),
        );
        let copied =
            copy_table(remote, &nsp, &rel).unwrap_or_else(|e| fail(format!("{nsp}.{rel}: {e}")));
        Spi::run_with_args(
            "INSERT INTO spock.local_sync_status (sync_kind, sync_subid, sync_nspname, sync_relname, sync_status, sync_statuslsn) \
             VALUES ('d', $1, $2, $3, 'r', '0/0') \
             ON CONFLICT (sync_subid, sync_nspname, sync_relname) DO UPDATE SET sync_status = 'r'",
            &[pg_sys::Oid::from(sub_id).into(), nsp.as_str().into(), rel.as_str().into()],
        )
        .unwrap_or_else(|e| fail(e.to_string()));
        log!(
            "subscription \"{}\": copied {copied} rows of {nsp}.{rel}",
            sub.name
        );
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
    // SAFETY: ending the transaction started above.
    unsafe {
        pg_sys::PopActiveSnapshot();
        pg_sys::CommitTransactionCommand();
    }
}

/// Copies one table's rows (columns matched by name) and returns how many.
fn copy_table(remote: &Remote, nsp: &str, rel: &str) -> Result<u64, String> {
    let table = format!("{}.{}", ident(nsp), ident(rel));
    let names: Vec<String> = remote
        .query(
            &format!(
                "SELECT attname::text FROM pg_attribute WHERE attrelid = {}::regclass \
                 AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
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
    let types = super::describe_local(nsp, rel, &columns)?.types;
    let select: Vec<String> = names
        .iter()
        .map(|n| format!("{}::text", ident(n)))
        .collect();
    let rows = remote.query(
        &format!("SELECT {} FROM {table}", select.join(", ")),
        names.len(),
    )?;

    let cols: Vec<String> = names.iter().map(|n| ident(n)).collect();
    let params: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{t}", i + 1))
        .collect();
    let sql = CString::new(format!(
        "INSERT INTO {table} ({}) VALUES ({})",
        cols.join(", "),
        params.join(", ")
    ))
    .map_err(|_| "bad column name".to_string())?;
    let argtypes = vec![pg_sys::TEXTOID; names.len()];
    // SAFETY: SPI inside the sync transaction; every array has one entry per column.
    unsafe {
        pg_sys::SPI_connect();
        let plan = pg_sys::SPI_prepare(
            sql.as_ptr(),
            names.len() as i32,
            argtypes.as_ptr().cast_mut(),
        );
        if plan.is_null() {
            pg_sys::SPI_finish();
            return Err(format!("cannot prepare the insert into {table}"));
        }
        for row in &rows {
            let mut values = Vec::with_capacity(row.len());
            let mut nulls = Vec::with_capacity(row.len());
            for v in row {
                match v {
                    Some(text) => {
                        let c = CString::new(text.as_str())
                            .map_err(|_| "value contains a NUL byte".to_string())?;
                        values.push(pg_sys::Datum::from(pg_sys::cstring_to_text(c.as_ptr())));
                        nulls.push(b' ' as std::ffi::c_char);
                    }
                    None => {
                        values.push(pg_sys::Datum::from(0));
                        nulls.push(b'n' as std::ffi::c_char);
                    }
                }
            }
            let rc = pg_sys::SPI_execute_plan(plan, values.as_mut_ptr(), nulls.as_ptr(), false, 0);
            if rc < 0 {
                pg_sys::SPI_finish();
                return Err(format!("insert into {table} failed ({rc})"));
            }
        }
        pg_sys::SPI_finish();
    }
    Ok(rows.len() as u64)
}
