//! `spock.get_lsn_from_commit_ts`: the WAL position right after the last commit made on this
//! node (not applied from another one) at or before a given time, found by reading the WAL
//! forward from a logical slot's restart point. Adding a node uses it to pick where a slot
//! should resume.

use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::{CStr, c_char, c_int};

// The WAL reader's callbacks, by their C symbols (pgrx's bindings wrap them as Rust functions,
// which cannot be handed to the reader).
unsafe extern "C-unwind" {
    #[link_name = "read_local_xlog_page_no_wait"]
    fn read_page(
        state: *mut pg_sys::XLogReaderState,
        page: pg_sys::XLogRecPtr,
        len: c_int,
        record: pg_sys::XLogRecPtr,
        buf: *mut c_char,
    ) -> c_int;
    #[link_name = "wal_segment_open"]
    fn segment_open(
        state: *mut pg_sys::XLogReaderState,
        segment: pg_sys::XLogSegNo,
        timeline: *mut pg_sys::TimeLineID,
    );
    #[link_name = "wal_segment_close"]
    fn segment_close(state: *mut pg_sys::XLogReaderState);
}

/// Commit records of local transactions between `start` and the flushed end of WAL: the end
/// position of the last one stamped at or before `until` (0 if none).
unsafe fn last_local_commit(start: u64, until: i64) -> u64 {
    // SAFETY: a WAL reader over this server's own segments that never waits for WAL (it
    // stops at the flushed end); records are read only while the reader holds them.
    unsafe {
        let end = pg_sys::GetFlushRecPtr(std::ptr::null_mut());
        let mut routine = pg_sys::XLogReaderRoutine {
            page_read: Some(read_page),
            segment_open: Some(segment_open),
            segment_close: Some(segment_close),
        };
        let private =
            pg_sys::palloc0(std::mem::size_of::<pg_sys::ReadLocalXLogPageNoWaitPrivate>())
                .cast::<pg_sys::ReadLocalXLogPageNoWaitPrivate>();
        let reader = pg_sys::XLogReaderAllocate(
            pg_sys::wal_segment_size,
            std::ptr::null(),
            &mut routine,
            private.cast(),
        );
        if reader.is_null() {
            ereport!(
                PgLogLevel::ERROR,
                PgSqlErrorCode::ERRCODE_OUT_OF_MEMORY,
                "out of memory",
                "Failed while allocating a WAL reading processor.",
            );
        }
        pg_sys::XLogBeginRead(reader, start);
        let mut found = 0;
        // The reader advances EndRecPtr through its pointer.
        loop {
            if (*reader).EndRecPtr >= end {
                break;
            }
            let mut message: *mut c_char = std::ptr::null_mut();
            let record = pg_sys::XLogReadRecord(reader, &mut message);
            if record.is_null() {
                if (*private).end_of_wal {
                    break;
                }
                let why = if message.is_null() {
                    "unknown reason".to_string()
                } else {
                    std::ffi::CStr::from_ptr(message)
                        .to_string_lossy()
                        .into_owned()
                };
                let at = (*reader).EndRecPtr;
                crate::raise(
                    PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
                    format!(
                        "could not read WAL at {:X}/{:X}: {why}",
                        at >> 32,
                        at as u32
                    ),
                );
            }
            let decoded = (*reader).record;
            let info = (*decoded).header.xl_info as u32 & pg_sys::XLOG_XACT_OPMASK;
            let is_commit = (*decoded).header.xl_rmid as u32 == pg_sys::RmgrIds::RM_XACT_ID
                && (info == pg_sys::XLOG_XACT_COMMIT || info == pg_sys::XLOG_XACT_COMMIT_PREPARED);
            if is_commit
                && (*decoded).record_origin == pg_sys::InvalidRepOriginId as u16
                && (*(*decoded).main_data.cast::<pg_sys::xl_xact_commit>()).xact_time <= until
            {
                found = (*reader).EndRecPtr;
            }
        }
        pg_sys::XLogReaderFree(reader);
        found
    }
}

/// The end LSN of the last local commit at or before `commit_ts`, read from the WAL kept by
/// logical slot `slot_name` of this database (acquired meanwhile, so it must be idle).
#[pg_extern(sql = false)]
fn get_lsn_from_commit_ts(slot_name: &CStr, commit_ts: i64) -> i64 {
    let name = slot_name;
    let slot_name = slot_name.to_string_lossy();
    // SAFETY: the slot is acquired (erroring if another process holds it) and released below;
    // an error in between releases it with the transaction's cleanup.
    unsafe {
        crate::compat::replication_slot_acquire(name.as_ptr(), true);
        let slot = pg_sys::MyReplicationSlot;
        let data = &(*slot).data;
        if data.database != pg_sys::MyDatabaseId {
            pg_sys::ReplicationSlotRelease();
            crate::raise(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("replication slot \"{slot_name}\" is not a logical slot of this database"),
            );
        }
        let start = data.restart_lsn;
        // A slot that keeps no WAL has nothing to read (and the reader cannot start at 0).
        if start == 0 {
            pg_sys::ReplicationSlotRelease();
            crate::raise(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("replication slot \"{slot_name}\" does not reserve WAL"),
            );
        }
        let found = last_local_commit(start, commit_ts);
        pg_sys::ReplicationSlotRelease();
        found as i64
    }
}
