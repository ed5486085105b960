//! The version (commit timestamp, node) of local rows, read from the commit-timestamp data of
//! their xmin; the SQL function that compares two local writes (for the apply worker's
//! statements); and the subtransaction that writes a row while keeping its version.

use super::conflict::{Local, Version};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;

/// What the apply worker is applying now, and how to name local origins as nodes.
#[derive(Default)]
pub struct State {
    pub local_node: u32,
    /// Replication origin → node id (an origin per subscription, named after its slot).
    pub origins: HashMap<u16, u32>,
}

thread_local! {
    pub static STATE: RefCell<State> = RefCell::new(State::default());
}

/// Loads the local node id and the origin → node map.
pub fn load_nodes() {
    let local = crate::catalog::nodes::local_id().unwrap_or_else(|| {
        crate::raise(
            pgrx::PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "local spock node not found".into(),
        )
    });
    let map: HashMap<u16, u32> = crate::catalog::subscriptions::origins()
        .into_iter()
        .map(|(node, origin)| (origin, node))
        .collect();
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.local_node = local;
        s.origins = map;
    });
}

/// The version of the local write made by transaction `xid`.
pub fn local_version(xid: pg_sys::TransactionId) -> Local {
    // SAFETY: plain lookups of transaction status and commit-timestamp data.
    unsafe {
        if pg_sys::TransactionIdIsCurrentTransactionId(xid) {
            return Local::OwnTransaction;
        }
        if !pg_sys::track_commit_timestamp {
            return Local::Unknown;
        }
        let mut ts: pg_sys::TimestampTz = 0;
        let mut origin: pg_sys::RepOriginId = 0;
        if !pg_sys::TransactionIdGetCommitTsData(xid, &mut ts, &mut origin) {
            return Local::Unknown;
        }
        let node = STATE.with(|s| {
            let s = s.borrow();
            if origin == 0 {
                s.local_node
            } else {
                s.origins.get(&origin).copied().unwrap_or(u32::from(origin))
            }
        });
        Local::Known(Version { ts, node })
    }
}

/// The raw commit timestamp and replication origin of a committed transaction.
pub fn commit_ts_data(xid: pg_sys::TransactionId) -> Option<(i64, u16)> {
    // SAFETY: a plain lookup of commit-timestamp data.
    unsafe {
        if !pg_sys::track_commit_timestamp {
            return None;
        }
        let mut ts: pg_sys::TimestampTz = 0;
        let mut origin: pg_sys::RepOriginId = 0;
        pg_sys::TransactionIdGetCommitTsData(xid, &mut ts, &mut origin).then_some((ts, origin))
    }
}

/// True when local write `a` is newer than local write `b`.
#[pg_extern(sql = false)]
fn apply_local_newer(a: pg_sys::TransactionId, b: pg_sys::TransactionId) -> bool {
    match (local_version(a), local_version(b)) {
        (Local::Known(a), Local::Known(b)) => a.cmp_newer(&b).is_gt(),
        (Local::Known(_), Local::Unknown) => true,
        _ => false,
    }
}

/// Runs `write` (a delta merge into a local row that stays the newer one) in a subtransaction
/// stamped with `keep`, the row's own commit timestamp and origin (kernel capability), so later
/// comparisons still see the local write's version. A write that fails (a CHECK constraint on
/// the sum) rolls its subtransaction back before the error goes on, so it is an apply error
/// like any other, in a transaction state the exception handling can work with. The caller's
/// memory context is current again afterwards.
pub fn keeping_version(keep: Option<(i64, u16)>, write: impl FnOnce()) {
    // SAFETY: a subtransaction of the apply transaction, ended on both paths below.
    let context = unsafe {
        let context = pg_sys::CurrentMemoryContext;
        pg_sys::BeginInternalSubTransaction(c"SpockDeltaApply".as_ptr());
        context
    };
    PgTryBuilder::new(std::panic::AssertUnwindSafe(|| {
        write();
        if let Some((ts, origin)) = keep {
            // SAFETY: the subtransaction has an xid (it updated the row).
            let subxid = unsafe { pg_sys::GetCurrentTransactionId() };
            crate::kernel::subxact_commit_ts(subxid, ts, origin);
        }
    }))
    .catch_others(|e| {
        // SAFETY: ends the failed subtransaction begun above.
        unsafe { pg_sys::RollbackAndReleaseCurrentSubTransaction() };
        e.rethrow()
    })
    .execute();
    // SAFETY: ends the subtransaction begun above and returns to the caller's context.
    unsafe {
        pg_sys::ReleaseCurrentSubTransaction();
        pg_sys::MemoryContextSwitchTo(context);
    }
}
