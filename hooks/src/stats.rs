//! Per-table replication counters in shared memory (`spock.get_channel_stats`): rows each
//! subscription's apply worker inserted, updated and deleted, the conflicts it resolved and
//! the delta merges it kept, and (subscription 0) the rows the walsenders sent. Each backend adds
//! its counts at the end of each transaction. Counters are not transactional, and a full table drops new keys rather than evicting.

use pgrx::prelude::*;
use pgrx::{PgLwLock, pg_shmem_init, pg_sys, shmem::PGRXSharedMemory};
use std::cell::RefCell;
use std::collections::HashMap;

/// Slots of the shared table (one per database, subscription and table).
const CAPACITY: usize = 4096;

#[derive(Copy, Clone, Default)]
pub enum Counter {
    #[default]
    Insert,
    Update,
    Delete,
    Conflict,
    DeltaApply,
}

#[derive(Copy, Clone, Default)]
struct Entry {
    used: bool,
    db: u32,
    sub: u32,
    rel: u32,
    counts: [i64; 5],
}

#[derive(Copy, Clone)]
pub struct Table([Entry; CAPACITY]);

impl Default for Table {
    fn default() -> Self {
        Table([Entry::default(); CAPACITY])
    }
}

// SAFETY: plain data with no pointers.
unsafe impl PGRXSharedMemory for Table {}

// SAFETY: a static lock, initialised once by `pg_shmem_init!` in `init` before any use.
static STATS: PgLwLock<Table> = unsafe { PgLwLock::new(c"spock_channel_stats") };

/// Reserves the shared table (from `_PG_init` of the preloaded library).
// pgrx's macro tests majors this crate has no feature for.
#[allow(unexpected_cfgs)]
pub fn init() {
    pg_shmem_init!(STATS);
}

fn slot_of(db: u32, sub: u32, rel: u32) -> usize {
    let h = (u64::from(db) << 40) ^ (u64::from(sub) << 20) ^ u64::from(rel);
    (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 51) as usize % CAPACITY
}

thread_local! {
    /// Counts of this backend not yet added to the shared table: one apply worker or
    /// walsender counts rows by the thousand per second, and a cluster-wide exclusive lock per
    /// row would serialise them all.
    static PENDING: RefCell<HashMap<(u32, u32), [i64; 5]>> = RefCell::new(HashMap::new());
}

/// Counts one event of `counter` for `rel` (`sub` 0: the output side); shown once `flush`ed.
pub fn count(sub: u32, rel: u32, counter: Counter) {
    PENDING.with(|p| p.borrow_mut().entry((sub, rel)).or_default()[counter as usize] += 1);
}

/// Adds this backend's counts to the shared table (at each transaction's end).
pub fn flush() {
    let pending = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    if pending.is_empty() {
        return;
    }
    // SAFETY: reading the backend's database id.
    let db = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let mut table = STATS.exclusive();
    for ((sub, rel), counts) in pending {
        let start = slot_of(db, sub, rel);
        for i in 0..CAPACITY {
            let e = &mut table.0[(start + i) % CAPACITY];
            if !e.used {
                *e = Entry {
                    used: true,
                    db,
                    sub,
                    rel,
                    counts: [0; 5],
                };
            }
            if (e.db, e.sub, e.rel) == (db, sub, rel) {
                e.counts.iter_mut().zip(counts).for_each(|(c, n)| *c += n);
                break;
            }
        }
    }
}

/// This database's counters.
#[pg_extern(sql = false)]
#[allow(clippy::type_complexity)]
fn get_channel_stats() -> TableIterator<
    'static,
    (
        // oid columns as plain integers: pgrx would turn oid 0 (the output side) into NULL.
        name!(subid, i64),
        name!(relid, i64),
        name!(n_tup_ins, i64),
        name!(n_tup_upd, i64),
        name!(n_tup_del, i64),
        name!(n_conflict, i64),
        name!(n_dca, i64),
    ),
> {
    // SAFETY: reading the backend's database id.
    let db = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let rows: Vec<_> = STATS
        .share()
        .0
        .iter()
        .filter(|e| e.used && e.db == db)
        .map(|e| {
            let [ins, upd, del, conflict, dca] = e.counts;
            (
                i64::from(e.sub),
                i64::from(e.rel),
                ins,
                upd,
                del,
                conflict,
                dca,
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// Clears every database's counters.
#[pg_extern(sql = false)]
fn reset_channel_stats() {
    STATS
        .exclusive()
        .0
        .iter_mut()
        .for_each(|e| *e = Entry::default());
}
