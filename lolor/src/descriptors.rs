//! Large-object descriptors: per-backend slots valid until the end of the transaction, as in
//! core's be-fsstubs.c. Read-only descriptors keep their snapshot registered on the top
//! transaction's resource owner; commit closes them, abort forgets them, a subtransaction's
//! commit hands them to its parent and its abort closes them.

use crate::storage::Handle;
use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;
use std::cell::RefCell;
use std::ffi::c_void;

struct Desc {
    handle: Handle,
    subid: pg_sys::SubTransactionId,
}

thread_local! {
    static DESCS: RefCell<Vec<Option<Desc>>> = const { RefCell::new(Vec::new()) };
}

fn invalid(fd: i32) -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
        format!("invalid large-object descriptor: {fd}")
    );
}

/// Stores an open handle and returns its descriptor (the lowest free slot).
pub fn add(mut handle: Handle) -> i32 {
    if !handle.snapshot.is_null() {
        // SAFETY: keeps the snapshot alive until the descriptor is closed or the xact ends.
        handle.snapshot = unsafe {
            pg_sys::RegisterSnapshotOnOwner(handle.snapshot, pg_sys::TopTransactionResourceOwner)
        };
    }
    // SAFETY: plain accessor.
    let subid = unsafe { pg_sys::GetCurrentSubTransactionId() };
    DESCS.with_borrow_mut(|descs| {
        let desc = Some(Desc { handle, subid });
        match descs.iter().position(Option::is_none) {
            Some(i) => {
                descs[i] = desc;
                i as i32
            }
            None => {
                descs.push(desc);
                (descs.len() - 1) as i32
            }
        }
    })
}

/// Runs `f` on the open handle behind `fd`.
pub fn with<R>(fd: i32, f: impl FnOnce(&mut Handle) -> R) -> R {
    DESCS.with_borrow_mut(|descs| {
        match usize::try_from(fd)
            .ok()
            .and_then(|i| descs.get_mut(i))
            .and_then(Option::as_mut)
        {
            Some(desc) => f(&mut desc.handle),
            None => invalid(fd),
        }
    })
}

fn release(desc: Desc) {
    if !desc.handle.snapshot.is_null() {
        // SAFETY: registered in `add` on the same owner, which is still alive.
        unsafe {
            pg_sys::UnregisterSnapshotFromOwner(
                desc.handle.snapshot,
                pg_sys::TopTransactionResourceOwner,
            )
        }
    }
}

/// Closes descriptor `fd`.
pub fn close(fd: i32) {
    let desc = DESCS.with_borrow_mut(|descs| {
        usize::try_from(fd)
            .ok()
            .and_then(|i| descs.get_mut(i))
            .and_then(Option::take)
    });
    match desc {
        Some(desc) => release(desc),
        None => invalid(fd),
    }
}

/// Closes every descriptor of this backend open on large object `id`.
pub fn close_object(id: Oid) {
    let closing: Vec<Desc> = DESCS.with_borrow_mut(|descs| {
        descs
            .iter_mut()
            .filter(|d| d.as_ref().is_some_and(|d| d.handle.id == id))
            .filter_map(Option::take)
            .collect()
    });
    closing.into_iter().for_each(release);
}

fn take_all() -> Vec<Desc> {
    DESCS.with_borrow_mut(|descs| descs.drain(..).flatten().collect())
}

#[pg_guard]
pub unsafe extern "C-unwind" fn xact_callback(event: pg_sys::XactEvent::Type, _arg: *mut c_void) {
    use pg_sys::XactEvent::*;
    match event {
        // Still inside the transaction: unregister snapshots so commit sees no leaked ones.
        XACT_EVENT_PRE_COMMIT | XACT_EVENT_PARALLEL_PRE_COMMIT | XACT_EVENT_PRE_PREPARE => {
            take_all().into_iter().for_each(release)
        }
        // Abort releases the resource owner (and with it the snapshots) itself.
        _ => drop(take_all()),
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn subxact_callback(
    event: pg_sys::SubXactEvent::Type,
    my_subid: pg_sys::SubTransactionId,
    parent_subid: pg_sys::SubTransactionId,
    _arg: *mut c_void,
) {
    use pg_sys::SubXactEvent::*;
    match event {
        SUBXACT_EVENT_COMMIT_SUB => DESCS.with_borrow_mut(|descs| {
            for d in descs.iter_mut().flatten() {
                if d.subid == my_subid {
                    d.subid = parent_subid;
                }
            }
        }),
        SUBXACT_EVENT_ABORT_SUB => {
            let closing: Vec<Desc> = DESCS.with_borrow_mut(|descs| {
                descs
                    .iter_mut()
                    .filter(|d| d.as_ref().is_some_and(|d| d.subid == my_subid))
                    .filter_map(Option::take)
                    .collect()
            });
            closing.into_iter().for_each(release);
        }
        _ => {}
    }
}
