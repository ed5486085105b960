//! The sync worker of a subscription: copies the tables `sub_resync_table` / `sub_alter_sync`
//! marked, one after another, while the apply worker goes on streaming. Its copies commit as
//! the provider's changes under the subscription's replication origin, which it shares with
//! the apply worker (PostgreSQL 16+); the apply worker holds back any change of a table until
//! that table's copy has committed, so the stream then replays the provider's later changes
//! over the copy exactly as when the apply worker copied it itself.

use super::{load, origin, sync};
use crate::compat;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;

/// The subscription's tables waiting for a copy, as (schema, table), in name order.
pub(super) fn waiting_tables(sub_id: u32) -> Vec<(String, String)> {
    BackgroundWorker::transaction(|| crate::catalog::sync_status::tables_waiting(sub_id))
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn spock_sync_main(arg: pg_sys::Datum) {
    // A SIGTERM (sub_drop, shutdown) ends the worker at the next interrupt check, in the
    // middle of a copy too (which is then rolled back).
    super::stop_on_sigterm();
    let sub_id = arg.value() as u32;
    let extra = BackgroundWorker::get_extra();
    let mut parts = extra.split(' ').map(|p| p.parse::<u32>().ok());
    let (Some(Some(db)), Some(Some(owner))) = (parts.next(), parts.next()) else {
        error!("spock sync worker started without its database and apply worker");
    };
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(pg_sys::Oid::from(db)), None);
    let sub = load(sub_id);
    // Copies fire only REPLICA/ALWAYS triggers, as the apply worker's writes do.
    super::session_setup(&sub.slot);
    let origin = origin(&sub.slot);
    compat::replorigin_session_share(origin, owner as i32);
    // SAFETY: the copies commit with the subscription's origin.
    unsafe { pg_sys::replorigin_session_origin = origin };
    while let Some((nsp, rel)) = waiting_tables(sub_id).into_iter().next() {
        sync::resync_table(&sub, sub_id, &nsp, &rel);
    }
}
