//! `snowflake.nextval`/`currval` on an ordinary sequence relation: the state is the sequence
//! page's own tuple, updated under the buffer lock like core `nextval`, and WAL-logged ahead with
//! the standard sequence record so crash recovery and standbys need nothing of ours.

use crate::{compat, id, raw};
use pgrx::pg_sys;
use pgrx::pg_sys::submodules::ffi::pg_guard_ffi_boundary;
use pgrx::prelude::*;
use std::{
    cell::RefCell,
    collections::HashMap,
    ffi::CStr,
    hash::{BuildHasherDefault, Hasher},
    mem::size_of,
};

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
    _seqrelid: pg_sys::Oid,
    _seqtypid: pg_sys::Oid,
    _seqstart: i64,
    seqincrement: i64,
}

/// Hashes an Oid key as itself: `currval`'s map sits on `nextval`'s hot path.
#[derive(Default)]
struct OidHasher(u64);

impl Hasher for OidHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

thread_local! {
    /// This backend's last id per sequence, for `currval`.
    static LAST: RefCell<HashMap<pg_sys::Oid, i64, BuildHasherDefault<OidHasher>>> =
        RefCell::new(HashMap::default());
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
        OpenSeq::name_of(self.relid)
    }

    fn name_of(relid: pg_sys::Oid) -> String {
        // SAFETY: get_rel_name returns a palloc'd copy or NULL.
        let p = unsafe { pg_sys::get_rel_name(relid) };
        if p.is_null() {
            return relid.to_u32().to_string();
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

/// What one `nextval` step found. Errors are raised by the caller, outside the FFI boundary.
enum Step {
    Issued(i64),
    NotSequence,
    Denied,
    BadIncrement(i64),
    BadMagic(u32),
    Exhausted,
}

/// The next id of sequence `relid` for node `node`.
pub fn nextval(relid: pg_sys::Oid, node: i64) -> i64 {
    let now = now_ms();
    // SAFETY: one boundary around all server calls of the step; `step` keeps only plain values
    // on its frame, so an ERROR's longjmp out of it skips nothing that needs dropping.
    let step = unsafe { pg_guard_ffi_boundary(|| step(relid, node, now)) };
    let name = || OpenSeq::name_of(relid);
    match step {
        Step::Issued(id) => {
            LAST.with(|l| l.borrow_mut().insert(relid, id));
            id
        }
        Step::NotSequence => error_code(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("\"{}\" is not a sequence", name()),
        ),
        Step::Denied => error_code(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("permission denied for sequence {}", name()),
        ),
        Step::BadIncrement(inc) => error_code(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "snowflake.nextval needs a positive INCREMENT, sequence \"{}\" has {inc}",
                name()
            ),
        ),
        Step::BadMagic(magic) => {
            error!("bad magic number in sequence \"{}\": {magic:08X}", name())
        }
        Step::Exhausted => error!(
            "snowflake ids of sequence \"{}\" are exhausted (year 2092)",
            name()
        ),
    }
}

/// Opens the sequence, checks it, and updates its page like core `nextval`: exclusive buffer
/// lock around reading and rewriting the single tuple, WAL record inside a critical section.
///
/// # Safety
/// Call only inside `pg_guard_ffi_boundary` (see [`raw`]).
unsafe fn step(relid: pg_sys::Oid, node: i64, now: i64) -> Step {
    // SAFETY: see the function's contract; every pointer comes from the server for this call.
    unsafe {
        let rel = raw::relation_open(relid, pg_sys::RowExclusiveLock as i32);
        let form = (*rel).rd_rel;
        let refuse = |s: Step| {
            raw::relation_close(rel, pg_sys::NoLock as i32);
            s
        };
        if (*form).relkind as u8 != pg_sys::RELKIND_SEQUENCE {
            return refuse(Step::NotSequence);
        }
        let mode = (pg_sys::ACL_USAGE | pg_sys::ACL_UPDATE) as pg_sys::AclMode;
        if raw::pg_class_aclcheck(relid, raw::GetUserId(), mode) != pg_sys::AclResult::ACLCHECK_OK {
            return refuse(Step::Denied);
        }
        if !(*rel).rd_islocaltemp {
            raw::PreventCommandIfReadOnly(c"nextval()".as_ptr());
        }
        raw::PreventCommandIfParallelMode(c"nextval()".as_ptr());

        let seqtup = raw::SearchSysCache1(
            pg_sys::SysCacheIdentifier::SEQRELID as i32,
            pg_sys::Datum::from(relid),
        );
        if seqtup.is_null() {
            return refuse(Step::BadIncrement(0));
        }
        let increment = (*(pg_sys::GETSTRUCT(seqtup) as *const PgSequenceRow)).seqincrement;
        raw::ReleaseSysCache(seqtup);
        if increment <= 0 {
            return refuse(Step::BadIncrement(increment));
        }
        // WAL unless temporary/unlogged, or new storage under wal_level = minimal.
        let needs_wal = (*form).relpersistence as u8 == pg_sys::RELPERSISTENCE_PERMANENT
            && (pg_sys::wal_level > pg_sys::WalLevel::WAL_LEVEL_MINIMAL as i32
                || !compat::storage_is_new_in_xact(rel));

        let buf = raw::ReadBuffer(rel, 0);
        raw::LockBuffer(buf, pg_sys::BUFFER_LOCK_EXCLUSIVE as i32);
        let page = pg_sys::BufferGetPage(buf);
        let magic = *(raw::page_special(page) as *const u32);
        if magic != SEQ_MAGIC {
            raw::UnlockReleaseBuffer(buf);
            return refuse(Step::BadMagic(magic));
        }
        let (item, tuple) = raw::first_item(page);
        let tuple_len = (*item).lp_len() as usize;
        let data = tuple.add((*(tuple as pg_sys::HeapTupleHeader)).t_hoff as usize) as *mut SeqData;

        let Ok(next) = id::next((*data).last_value, now, node, increment) else {
            raw::UnlockReleaseBuffer(buf);
            return refuse(Step::Exhausted);
        };
        let log =
            needs_wal && (next >= (*data).log_cnt || raw::page_lsn(page) <= raw::GetRedoRecPtr());
        if log {
            // An xid makes our commit flush this record and wait for synchronous standbys.
            raw::GetTopTransactionId();
        }
        pg_sys::CritSectionCount += 1;
        raw::MarkBufferDirty(buf);
        if log {
            let horizon = id::wal_horizon(next);
            (*data).last_value = horizon;
            (*data).log_cnt = horizon;
            (*data).is_called = true;
            let rec = XlSeqRec {
                locator: compat::rel_file_locator(rel),
            };
            raw::XLogBeginInsert();
            raw::XLogRegisterBuffer(0, buf, pg_sys::REGBUF_WILL_INIT as u8);
            compat::xlog_register_data(&rec as *const XlSeqRec as *const u8, size_of::<XlSeqRec>());
            compat::xlog_register_data(tuple, tuple_len);
            let lsn = raw::XLogInsert(pg_sys::RmgrIds::RM_SEQ_ID as u8, XLOG_SEQ_LOG);
            raw::set_page_lsn(page, lsn);
        }
        (*data).last_value = next;
        (*data).is_called = true;
        pg_sys::CritSectionCount -= 1;
        raw::UnlockReleaseBuffer(buf);
        // The lock stays until the end of the transaction, like core sequences.
        raw::relation_close(rel, pg_sys::NoLock as i32);
        Step::Issued(next)
    }
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
