//! Unguarded declarations of the server functions on `nextval`'s hot path. pgrx guards every
//! bound function one call at a time (a `sigsetjmp` each); `nextval` instead makes all of these
//! calls inside a single `pg_guard_ffi_boundary`, which keeps it as fast as core `nextval`.
//! Only call them inside such a boundary, from frames that own nothing needing `Drop`.

use pgrx::pg_sys::{
    AclMode, AclResult, BlockNumber, Buffer, Datum, HeapTuple, LOCKMODE, Oid, Page, PageHeader,
    PageXLogRecPtr, Relation, TransactionId, XLogRecPtr,
};
use std::ffi::{c_char, c_int};

unsafe extern "C-unwind" {
    pub fn relation_open(relation_id: Oid, lockmode: LOCKMODE) -> Relation;
    pub fn relation_close(relation: Relation, lockmode: LOCKMODE);
    pub fn GetUserId() -> Oid;
    pub fn pg_class_aclcheck(table_oid: Oid, roleid: Oid, mode: AclMode) -> AclResult::Type;
    pub fn PreventCommandIfReadOnly(cmdname: *const c_char);
    pub fn PreventCommandIfParallelMode(cmdname: *const c_char);
    pub fn SearchSysCache1(cache_id: c_int, key1: Datum) -> HeapTuple;
    pub fn ReleaseSysCache(tuple: HeapTuple);
    pub fn ReadBuffer(reln: Relation, block_num: BlockNumber) -> Buffer;
    pub fn LockBuffer(buffer: Buffer, mode: c_int);
    pub fn MarkBufferDirty(buffer: Buffer);
    pub fn UnlockReleaseBuffer(buffer: Buffer);
    pub fn GetRedoRecPtr() -> XLogRecPtr;
    pub fn GetTopTransactionId() -> TransactionId;
    pub fn XLogBeginInsert();
    pub fn XLogRegisterBuffer(block_id: u8, buffer: Buffer, flags: u8);
    pub fn XLogInsert(rmid: u8, info: u8) -> XLogRecPtr;
}

/// `PageGetLSN`.
///
/// # Safety
/// `page` must point to a pinned buffer page.
pub unsafe fn page_lsn(page: Page) -> XLogRecPtr {
    // SAFETY: forwarded from the caller; every page starts with its header.
    let lsn = unsafe { (*(page as PageHeader)).pd_lsn };
    ((lsn.xlogid as u64) << 32) | lsn.xrecoff as u64
}

/// `PageSetLSN`.
///
/// # Safety
/// `page` must point to an exclusively locked buffer page.
pub unsafe fn set_page_lsn(page: Page, lsn: XLogRecPtr) {
    let value = PageXLogRecPtr {
        xlogid: (lsn >> 32) as u32,
        xrecoff: lsn as u32,
    };
    // SAFETY: forwarded from the caller.
    unsafe { (*(page as PageHeader)).pd_lsn = value };
}

/// `PageGetSpecialPointer`.
///
/// # Safety
/// `page` must point to a pinned buffer page.
pub unsafe fn page_special(page: Page) -> *mut u8 {
    // SAFETY: pd_special is an offset inside the page.
    unsafe { (page as *mut u8).add((*(page as PageHeader)).pd_special as usize) }
}

/// The first item of a page: its line pointer and tuple (`PageGetItemId` + `PageGetItem`).
///
/// # Safety
/// `page` must point to a pinned buffer page with at least one item.
pub unsafe fn first_item(page: Page) -> (*mut pgrx::pg_sys::ItemIdData, *mut u8) {
    // SAFETY: line pointers follow the header; lp_off is an offset inside the page.
    unsafe {
        let item = (*(page as PageHeader)).pd_linp.as_mut_ptr();
        (item, (page as *mut u8).add((*item).lp_off() as usize))
    }
}
