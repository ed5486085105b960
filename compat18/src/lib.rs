//! PostgreSQL 18 specifics behind a version-neutral surface; the extensions import this crate as
//! `compat` and never test the server major themselves.

pub use pgrx;
use pgrx::pg_sys;

/// The server major this build targets.
pub const PG_MAJOR: u32 = 18;

/// The relation's physical file identity (tablespace, database, file number) as WAL records
/// carry it (`RelFileNode` up to 15, `RelFileLocator` from 16).
///
/// # Safety
/// `rel` must be an open relation.
pub unsafe fn rel_file_locator(rel: pg_sys::Relation) -> [pg_sys::Oid; 3] {
    // SAFETY: the caller guarantees an open relation.
    unsafe {
        let l = (*rel).rd_locator;
        [l.spcOid, l.dbOid, l.relNumber]
    }
}

/// Whether the relation's storage was created or replaced in the current transaction (then
/// `wal_level = minimal` may skip WAL for it).
///
/// # Safety
/// `rel` must be an open relation.
pub unsafe fn storage_is_new_in_xact(rel: pg_sys::Relation) -> bool {
    // SAFETY: the caller guarantees an open relation.
    unsafe { (*rel).rd_createSubid != 0 || (*rel).rd_firstRelfilelocatorSubid != 0 }
}

/// `XLogRegisterData` (its length type differs between majors; 18 takes `const void *`).
///
/// # Safety
/// Only between `XLogBeginInsert` and `XLogInsert`; `data` must stay valid until the insert.
pub unsafe fn xlog_register_data(data: *const u8, len: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { pg_sys::XLogRegisterData(data.cast(), len as u32) }
}

/// The attributes of a tuple descriptor (18 keeps them after the compact attributes: `TupleDescAttr`).
///
/// # Safety
/// `desc` must be a valid tuple descriptor that outlives the returned slice.
pub unsafe fn tuple_desc_attrs<'a>(desc: pg_sys::TupleDesc) -> &'a [pg_sys::FormData_pg_attribute] {
    // SAFETY: forwarded from the caller; from 18 the `FormData_pg_attribute` array follows the
    // `natts` compact attributes (`TupleDescAttrAddress`).
    unsafe {
        let natts = (*desc).natts as usize;
        let first = (*desc)
            .compact_attrs
            .as_ptr()
            .add(natts)
            .cast::<pg_sys::FormData_pg_attribute>();
        std::slice::from_raw_parts(first, natts)
    }
}

/// Installs a signal handler in a backend (`pqsignal`).
///
/// # Safety
/// `handler` must be async-signal-safe, as the server's own handlers are.
pub unsafe fn set_signal_handler(signo: i32, handler: pg_sys::pqsigfunc) {
    // SAFETY: forwarded from the caller; 18 renamed the backend's pqsignal to pqsignal_be.
    unsafe { pg_sys::pqsignal_be(signo, handler) }
}

/// `ExecCheckIndexConstraints` over the unique indexes in `arbiters` (null: all of them); false
/// when a conflicting row exists, its TID in `conflict`. 18 added the TID of a row to exclude.
///
/// # Safety
/// The result relation's indexes are open and `slot` holds the candidate row.
pub unsafe fn check_index_constraints(
    rri: *mut pg_sys::ResultRelInfo,
    slot: *mut pg_sys::TupleTableSlot,
    estate: *mut pg_sys::EState,
    conflict: *mut pg_sys::ItemPointerData,
    arbiters: *mut pg_sys::List,
) -> bool {
    // SAFETY: forwarded from the caller.
    unsafe {
        pg_sys::ExecCheckIndexConstraints(
            rri,
            slot,
            estate,
            conflict,
            // no tuple of ours to exclude: the candidate row is not inserted yet
            std::ptr::null_mut(),
            arbiters,
        )
    }
}

/// Acquires the replication slot `name` for this process (ERROR if another holds it and
/// `nowait`).
///
/// # Safety
/// Release it with `ReplicationSlotRelease` (or the transaction's error cleanup).
pub unsafe fn replication_slot_acquire(name: *const std::ffi::c_char, nowait: bool) {
    // SAFETY: forwarded from the caller; 18 added `error_if_invalid` (an invalidated slot has
    // lost the WAL we read, so it is an error, as in core's SQL decoding functions).
    unsafe { pg_sys::ReplicationSlotAcquire(name, nowait, true) }
}

/// Text of the error core raises when ownership of a missing large object is checked (e.g. by
/// a non-superuser's `lo_unlink`; 18's `lo_unlink` checks existence itself, first).
pub fn lo_ownercheck_missing_message(oid: u32) -> String {
    format!("large object {oid} does not exist")
}

/// The old and new tuple of a decoded INSERT/UPDATE/DELETE (either may be null). Up to 16 they
/// sit inside a `ReorderBufferTupleBuf`; from 17 they are plain heap tuples.
///
/// # Safety
/// `change` must be a valid row change handed to an output plugin callback.
pub unsafe fn change_tuples(
    change: *mut pg_sys::ReorderBufferChange,
) -> (pg_sys::HeapTuple, pg_sys::HeapTuple) {
    // SAFETY: forwarded from the caller.
    unsafe {
        let tp = (*change).data.tp;
        (tp.oldtuple, tp.newtuple)
    }
}

/// Opens a logical replication connection (`replication=database`, which also runs SQL) with
/// the walreceiver library, which must be loaded. Returns the connection or libpq's message.
///
/// # Safety
/// Call inside `pg_guard_ffi_boundary`: this calls through a function pointer.
pub unsafe fn walrcv_connect(
    dsn: *const std::ffi::c_char,
    appname: *const std::ffi::c_char,
) -> Result<*mut pg_sys::WalReceiverConn, *mut std::ffi::c_char> {
    // SAFETY: forwarded from the caller; WalReceiverFunctions is set once the library is loaded.
    unsafe {
        let f = (*pg_sys::WalReceiverFunctions)
            .walrcv_connect
            .expect("walreceiver loaded");
        let mut err: *mut std::ffi::c_char = std::ptr::null_mut();
        let conn = f(dsn, true, true, false, appname, &mut err);
        if conn.is_null() { Err(err) } else { Ok(conn) }
    }
}

/// Checks a connection string's syntax through the walreceiver library (ERROR if invalid).
///
/// # Safety
/// Call inside `pg_guard_ffi_boundary` with the library loaded.
pub unsafe fn walrcv_check_conninfo(dsn: *const std::ffi::c_char) {
    // SAFETY: forwarded from the caller.
    unsafe {
        let f = (*pg_sys::WalReceiverFunctions)
            .walrcv_check_conninfo
            .expect("walreceiver loaded");
        f(dsn, false)
    }
}

/// Makes `origin` this session's replication origin (16 added the `acquired_by` argument).
pub fn replorigin_session_setup(origin: pg_sys::RepOriginId) {
    // SAFETY: a guarded pgrx call.
    unsafe { pg_sys::replorigin_session_setup(origin, 0) }
}

/// Gives `estate` a range table holding the one relation `rte` describes (16 added the
/// permission-info list; 18 the set of range table indexes that survived initial pruning, here
/// the one relation, index 1).
///
/// # Safety
/// `estate` is a fresh executor state and `rte` a relation entry, both in the current context.
pub unsafe fn exec_init_range_table(estate: *mut pg_sys::EState, rte: *mut pg_sys::RangeTblEntry) {
    // SAFETY: forwarded from the caller.
    unsafe {
        let mut perminfos: *mut pg_sys::List = std::ptr::null_mut();
        pg_sys::addRTEPermissionInfo(&mut perminfos, rte);
        let rtable = pg_sys::lappend(std::ptr::null_mut(), rte.cast());
        let unpruned = pg_sys::bms_make_singleton(1);
        pg_sys::ExecInitRangeTable(estate, rtable, perminfos, unpruned);
    }
}

/// `ExecInsertIndexTuples` for a freshly inserted row (16 added `onlySummarizing`).
///
/// # Safety
/// The result relation's indexes are open and `slot` holds the row just inserted.
pub unsafe fn insert_index_tuples(
    rri: *mut pg_sys::ResultRelInfo,
    slot: *mut pg_sys::TupleTableSlot,
    estate: *mut pg_sys::EState,
    no_dup_err: bool,
    spec_conflict: *mut bool,
) -> *mut pg_sys::List {
    // SAFETY: forwarded from the caller.
    unsafe {
        pg_sys::ExecInsertIndexTuples(
            rri,
            slot,
            estate,
            false,
            no_dup_err,
            spec_conflict,
            std::ptr::null_mut(),
            false,
        )
    }
}

/// An EvalPlanQual state for the single-row updates and deletes of `estate`.
///
/// # Safety
/// `epq` points to writable memory that outlives its use with `estate`.
pub unsafe fn epq_init(epq: *mut pg_sys::EPQState, estate: *mut pg_sys::EState) {
    // SAFETY: forwarded from the caller.
    unsafe {
        pg_sys::EvalPlanQualInit(
            epq,
            estate,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            -1,
            std::ptr::null_mut(),
        )
    }
}

/// Whether a second process may use a replication origin another process has set up (16 added
/// `acquired_by`, for parallel apply); without it, table copies run in the apply worker.
pub const ORIGIN_SHARING: bool = true;

/// Makes `origin`, set up by process `owner`, this session's origin too. Only where
/// `ORIGIN_SHARING` holds.
pub fn replorigin_session_share(origin: pg_sys::RepOriginId, owner: i32) {
    // SAFETY: a guarded pgrx call; the owner keeps the origin acquired.
    unsafe { pg_sys::replorigin_session_setup(origin, owner) }
}

/// Whether `role` may execute function `func` (EXECUTE privilege).
pub fn may_execute(func: pg_sys::Oid, role: pg_sys::Oid) -> bool {
    // SAFETY: a catalog lookup.
    unsafe {
        pg_sys::object_aclcheck(
            pg_sys::ProcedureRelationId,
            func,
            role,
            pg_sys::ACL_EXECUTE as pg_sys::AclMode,
        ) == pg_sys::AclResult::ACLCHECK_OK
    }
}

/// A wait event set of `nevents` events that lives until `FreeWaitEventSet` (in
/// TopMemoryContext, owned by no resource owner).
///
/// # Safety
/// Call inside a backend; free the set with `FreeWaitEventSet`.
pub unsafe fn wait_event_set(nevents: i32) -> *mut pg_sys::WaitEventSet {
    // SAFETY: forwarded from the caller; without an owner the set is not released with any
    // transaction's resources.
    unsafe { pg_sys::CreateWaitEventSet(std::ptr::null_mut(), nevents) }
}
