//! `snowflake.nextval`/`currval` on an ordinary sequence relation: the state is the sequence
//! page's own tuple, updated under the buffer lock like core `nextval`, and WAL-logged ahead with
//! the standard sequence record so crash recovery and standbys need nothing of ours.

use crate::{compat, id};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::{cell::RefCell, collections::HashMap, ffi::CStr, mem::size_of};

/// `SEQ_MAGIC` in the page's special space (commands/sequence.c).
const SEQ_MAGIC: u32 = 0x1717;
/// `XLOG_SEQ_LOG`, the one sequence WAL record type (commands/sequence.h).
const XLOG_SEQ_LOG: u8 = 0x00;

/// `FormData_pg_sequence_data`: the sequence tuple.
#[repr(C)]
struct SeqData {
    last_value: i64,
    log_cnt: i64,
    is_called: bool,
}

/// `xl_seq_rec`: the record header naming the relation's storage.
#[repr(C)]
struct XlSeqRec {
    locator: [pg_sys::Oid; 3],
}

/// Leading fields of `FormData_pg_sequence` (catalog/pg_sequence.h).
#[repr(C)]
struct PgSequenceRow {
    seqrelid: pg_sys::Oid,
    seqtypid: pg_sys::Oid,
    seqstart: i64,
    seqincrement: i64,
}

thread_local! {
    /// This backend's last id per sequence, for `currval`.
    static LAST: RefCell<HashMap<pg_sys::Oid, i64>> = RefCell::new(HashMap::new());
}

/// Milliseconds since the snowflake epoch from the real-time clock.
fn now_ms() -> i64 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    unix - id::EPOCH_UNIX_MS
}

/// An open sequence, locked `RowExclusiveLock` until the end of the transaction.
struct OpenSeq {
    rel: pg_sys::Relation,
    relid: pg_sys::Oid,
}

impl OpenSeq {
    fn open(relid: pg_sys::Oid) -> OpenSeq {
        // SAFETY: relation_open raises an ERROR for a missing relation.
        let rel = unsafe { pg_sys::relation_open(relid, pg_sys::RowExclusiveLock as i32) };
        let seq = OpenSeq { rel, relid };
        // SAFETY: rd_rel is valid for an open relation.
        if unsafe { (*(*rel).rd_rel).relkind } as u8 != pg_sys::RELKIND_SEQUENCE {
            error_code(
                PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
                format!("\"{}\" is not a sequence", seq.name()),
            );
        }
        seq
    }

    fn name(&self) -> String {
        // SAFETY: get_rel_name returns a palloc'd copy or NULL.
        let p = unsafe { pg_sys::get_rel_name(self.relid) };
        if p.is_null() {
            return self.relid.to_u32().to_string();
        }
        // SAFETY: non-null C string from the catalog.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    fn require(&self, mode: u32) {
        // SAFETY: plain catalog lookups.
        let ok = unsafe {
            pg_sys::pg_class_aclcheck(self.relid, pg_sys::GetUserId(), mode as pg_sys::AclMode)
        } == pg_sys::AclResult::ACLCHECK_OK;
        if !ok {
            error_code(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("permission denied for sequence {}", self.name()),
            );
        }
    }

    fn increment(&self) -> i64 {
        // SAFETY: syscache lookup; the tuple is released before returning.
        unsafe {
            let tup = pg_sys::SearchSysCache1(
                pg_sys::SysCacheIdentifier::SEQRELID as i32,
                pg_sys::Datum::from(self.relid),
            );
            if tup.is_null() {
                error!("cache lookup failed for sequence {}", self.relid.to_u32());
            }
            let row = pg_sys::GETSTRUCT(tup) as *const PgSequenceRow;
            let inc = (*row).seqincrement;
            pg_sys::ReleaseSysCache(tup);
            inc
        }
    }

    /// WAL is needed unless the sequence is temporary/unlogged, or its storage is new in this
    /// transaction under `wal_level = minimal`.
    fn needs_wal(&self) -> bool {
        // SAFETY: fields of an open relation; wal_level is a plain global.
        unsafe {
            (*(*self.rel).rd_rel).relpersistence as u8 == pg_sys::RELPERSISTENCE_PERMANENT
                && (pg_sys::wal_level > pg_sys::WalLevel::WAL_LEVEL_MINIMAL as i32
                    || !compat::storage_is_new_in_xact(self.rel))
        }
    }
}

impl Drop for OpenSeq {
    fn drop(&mut self) {
        // The lock stays until the end of the transaction, like core sequences.
        // SAFETY: closing the relation opened in `open`.
        unsafe { pg_sys::relation_close(self.rel, pg_sys::NoLock as i32) };
    }
}

fn error_code(code: PgSqlErrorCode, message: String) -> ! {
    ereport!(PgLogLevel::ERROR, code, message);
    unreachable!("ereport(ERROR) does not return")
}

/// The next id of sequence `relid` for node `node`.
pub fn nextval(relid: pg_sys::Oid, node: i64) -> i64 {
    let seq = OpenSeq::open(relid);
    seq.require(pg_sys::ACL_USAGE | pg_sys::ACL_UPDATE);
    // SAFETY: plain flags and checks that raise ERRORs.
    unsafe {
        if !(*seq.rel).rd_islocaltemp {
            pg_sys::PreventCommandIfReadOnly(c"nextval()".as_ptr());
        }
        pg_sys::PreventCommandIfParallelMode(c"nextval()".as_ptr());
    }
    let increment = seq.increment();
    if increment <= 0 {
        error_code(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "snowflake.nextval needs a positive INCREMENT, sequence \"{}\" has {increment}",
                seq.name()
            ),
        );
    }
    let needs_wal = seq.needs_wal();

    // SAFETY: the page handling mirrors core nextval: exclusive buffer lock around reading and
    // updating the single tuple; WAL insert inside a critical section; nothing in between can
    // raise an ERROR.
    let result = unsafe {
        let buf = pg_sys::ReadBuffer(seq.rel, 0);
        pg_sys::LockBuffer(buf, pg_sys::BUFFER_LOCK_EXCLUSIVE as i32);
        let page = pg_sys::BufferGetPage(buf);
        let special = pg_sys::PageGetSpecialPointer(page) as *const u32;
        if *special != SEQ_MAGIC {
            pg_sys::UnlockReleaseBuffer(buf);
            error!(
                "bad magic number in sequence \"{}\": {:08X}",
                seq.name(),
                *special
            );
        }
        let item = pg_sys::PageGetItemId(page, pg_sys::FirstOffsetNumber as pg_sys::OffsetNumber);
        let tuple = pg_sys::PageGetItem(page, item) as pg_sys::HeapTupleHeader;
        let tuple_len = (*item).lp_len() as usize;
        let data = (tuple as *mut u8).add((*tuple).t_hoff as usize) as *mut SeqData;

        let next = id::next((*data).last_value, now_ms(), node, increment);
        let Ok(next) = next else {
            pg_sys::UnlockReleaseBuffer(buf);
            error!(
                "snowflake ids of sequence \"{}\" are exhausted (year 2092)",
                seq.name()
            );
        };

        let log = needs_wal
            && (next >= (*data).log_cnt || compat::page_lsn(page) <= pg_sys::GetRedoRecPtr());
        if log {
            // An xid makes our commit flush this record and wait for synchronous standbys.
            pg_sys::GetTopTransactionId();
        }
        pg_sys::CritSectionCount += 1;
        pg_sys::MarkBufferDirty(buf);
        if log {
            let horizon = id::wal_horizon(next);
            (*data).last_value = horizon;
            (*data).log_cnt = horizon;
            (*data).is_called = true;
            let rec = XlSeqRec {
                locator: compat::rel_file_locator(seq.rel),
            };
            pg_sys::XLogBeginInsert();
            pg_sys::XLogRegisterBuffer(0, buf, pg_sys::REGBUF_WILL_INIT as u8);
            compat::xlog_register_data(&rec as *const XlSeqRec as *const u8, size_of::<XlSeqRec>());
            compat::xlog_register_data(tuple as *const u8, tuple_len);
            let lsn = pg_sys::XLogInsert(pg_sys::RmgrIds::RM_SEQ_ID as u8, XLOG_SEQ_LOG);
            compat::set_page_lsn(page, lsn);
        }
        (*data).last_value = next;
        (*data).is_called = true;
        pg_sys::CritSectionCount -= 1;
        pg_sys::UnlockReleaseBuffer(buf);
        next
    };
    LAST.with(|l| l.borrow_mut().insert(relid, result));
    result
}

/// This session's last `nextval` of sequence `relid`.
pub fn currval(relid: pg_sys::Oid) -> i64 {
    let seq = OpenSeq::open(relid);
    seq.require(pg_sys::ACL_SELECT | pg_sys::ACL_USAGE);
    match LAST.with(|l| l.borrow().get(&relid).copied()) {
        Some(v) => v,
        None => error_code(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!(
                "currval of sequence \"{}\" is not yet defined in this session",
                seq.name()
            ),
        ),
    }
}
