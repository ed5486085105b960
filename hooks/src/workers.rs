//! The supervisor (one per instance) starts a manager per database; a manager keeps one apply
//! worker running per enabled subscription of its database, restarting a failed one within a
//! second (upstream waits a fixed 5 s).

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, BgWorkerStartTime,
    DynamicBackgroundWorker, SignalWakeFlags,
};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{PgLwLock, pg_shmem_init, shmem::PGRXSharedMemory};
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

/// How often the supervisor and managers look for work.
const TICK: Duration = Duration::from_secs(1);
/// The shortest time between two starts of the same worker (upstream waits a fixed 5 s).
const RESTART_DELAY: Duration = Duration::from_secs(1);
/// How often a provider commits an empty transaction so idle peers' progress moves on.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// Managers a backend can wake (databases beyond this many are found by the manager's tick).
const MANAGER_SLOTS: usize = 64;

/// Where each database's manager sleeps: a backend that changed the database's subscriptions
/// sets that process's latch at commit, so the manager starts or stops apply workers at once
/// instead of at its next tick (a node joining a mesh waits on several such starts).
#[derive(Copy, Clone, Default)]
struct ManagerSlot {
    db: u32,
    /// Index of the manager's PGPROC in `ProcGlobal->allProcs`, plus one (0: none).
    proc: u32,
}

#[derive(Copy, Clone)]
pub struct Managers([ManagerSlot; MANAGER_SLOTS]);

impl Default for Managers {
    fn default() -> Self {
        Managers([ManagerSlot::default(); MANAGER_SLOTS])
    }
}

// SAFETY: plain data with no pointers.
unsafe impl PGRXSharedMemory for Managers {}

// SAFETY: a static lock, initialised once by `pg_shmem_init!` in `init` before any use.
static MANAGERS: PgLwLock<Managers> = unsafe { PgLwLock::new(c"spock_managers") };

/// Reserves the managers' table (from `_PG_init` of the preloaded library).
// pgrx's macro tests majors this crate has no feature for.
#[allow(unexpected_cfgs)]
pub fn init() {
    pg_shmem_init!(MANAGERS);
}

/// Records this process as the manager of `db`. A slot left by a manager that exited is
/// taken over by the next one of the same database; waking a process that reused its PGPROC
/// costs that process a spurious latch wake-up, which every latch wait allows for.
fn register_manager(db: u32) {
    // SAFETY: MyProc and ProcGlobal are set up before a background worker's main runs; the
    // offset of our own PGPROC in the array of all of them is its index.
    let proc = unsafe {
        (pg_sys::MyProc as usize - (*pg_sys::ProcGlobal).allProcs as usize)
            / std::mem::size_of::<pg_sys::PGPROC>()
    } as u32
        + 1;
    let mut table = MANAGERS.exclusive();
    let slot = table
        .0
        .iter()
        .position(|s| s.db == db)
        .or_else(|| table.0.iter().position(|s| s.proc == 0));
    if let Some(i) = slot {
        table.0[i] = ManagerSlot { db, proc };
    }
}

/// Wakes the manager of this backend's database, if it has one.
fn wake_manager() {
    // SAFETY: reading the backend's database id.
    let db = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let proc = MANAGERS
        .share()
        .0
        .iter()
        .find(|s| s.db == db)
        .map(|s| s.proc);
    if let Some(proc) = proc.filter(|&p| p > 0) {
        // SAFETY: ProcGlobal's array is fixed for the postmaster's lifetime and the index was
        // taken from it (checked against its length); SetLatch on any PGPROC's latch is
        // safe from any backend.
        unsafe {
            let global = &*pg_sys::ProcGlobal;
            if proc <= global.allProcCount {
                pg_sys::SetLatch(&raw mut (*global.allProcs.add(proc as usize - 1)).procLatch);
            }
        }
    }
}

/// Called by the SQL functions that change subscriptions: the manager of this database is
/// woken when the transaction commits (post-commit, so it sees the change).
#[pg_extern(sql = false)]
fn spock_subscriptions_changed() {
    pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Commit, wake_manager);
}

/// Registers the supervisor; called from `_PG_init` while preloading.
pub fn register() {
    BackgroundWorkerBuilder::new("spock supervisor")
        .set_type("spock supervisor")
        .set_library("spock")
        .set_function("spock_supervisor_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(1)))
        .load();
}

fn start(
    name: &str,
    function: &str,
    arg: pg_sys::Datum,
    extra: &str,
) -> Option<DynamicBackgroundWorker> {
    let started = BackgroundWorkerBuilder::new(name)
        .set_type(
            name.split(' ')
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
                .as_str(),
        )
        .set_library("spock")
        .set_function(function)
        .enable_spi_access()
        .set_argument(Some(arg))
        .set_extra(extra)
        .set_restart_time(None)
        // SAFETY: reading our own pid.
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
        .load_dynamic();
    match started {
        Ok(handle) => Some(handle),
        Err(e) => {
            warning!("could not start {name}: {e:?} (raise max_worker_processes?)");
            None
        }
    }
}

/// Starts the sync worker of subscription `sub` in database `db`, sharing the replication
/// origin of the apply worker `owner`.
pub fn start_sync(db: u32, sub: u32, owner: i32) -> Option<DynamicBackgroundWorker> {
    start(
        &format!("spock sync {db}:{sub}"),
        "spock_sync_main",
        pg_sys::Datum::from(sub),
        &format!("{db} {owner}"),
    )
}

/// One worker per key: unwanted ones are stopped, exited ones restarted — at most once per
/// `RESTART_DELAY`, so an unreachable provider does not turn into a tight restart loop.
struct Workers<K> {
    running: HashMap<K, DynamicBackgroundWorker>,
    started: HashMap<K, Instant>,
}

impl<K: Copy + Eq + std::hash::Hash> Workers<K> {
    fn new() -> Self {
        Workers {
            running: HashMap::new(),
            started: HashMap::new(),
        }
    }

    fn reconcile(
        &mut self,
        wanted: &[K],
        mut launch: impl FnMut(K) -> Option<DynamicBackgroundWorker>,
    ) {
        let unwanted: Vec<K> = self
            .running
            .keys()
            .copied()
            .filter(|k| !wanted.contains(k))
            .collect();
        for k in unwanted {
            if let Some(h) = self.running.remove(&k) {
                let _ = h.terminate();
            }
        }
        self.running.retain(|_, h| {
            !matches!(
                h.pid(),
                Err(BackgroundWorkerStatus::Stopped | BackgroundWorkerStatus::PostmasterDied)
            )
        });
        self.started.retain(|k, _| wanted.contains(k));
        for &k in wanted {
            let due = self
                .started
                .get(&k)
                .is_none_or(|t| t.elapsed() >= RESTART_DELAY);
            if !self.running.contains_key(&k)
                && due
                && let Some(h) = launch(k)
            {
                self.running.insert(k, h);
                self.started.insert(k, Instant::now());
            }
        }
    }
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn spock_supervisor_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(Some("postgres"), None);
    let mut managers = Workers::new();
    while BackgroundWorker::wait_latch(Some(TICK)) {
        let dbs: Vec<u32> = BackgroundWorker::transaction(|| {
            Spi::connect(|c| {
                c.select(
                    "SELECT oid FROM pg_database WHERE datallowconn AND NOT datistemplate",
                    None,
                    &[],
                )
                .map(|rows| {
                    rows.filter_map(|r| r.get::<pg_sys::Oid>(1).ok().flatten())
                        .map(|o| o.to_u32())
                        .collect()
                })
                .unwrap_or_default()
            })
        });
        managers.reconcile(&dbs, |db| {
            start(
                &format!("spock manager {db}"),
                "spock_manager_main",
                pg_sys::Datum::from(db),
                "",
            )
        });
    }
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn spock_manager_main(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = arg.value() as u32;
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(pg_sys::Oid::from(db)), None);
    register_manager(db);
    let mut appliers = Workers::new();
    let mut last_heartbeat = Instant::now();
    let mut catch_up = CatchUp::default();
    while BackgroundWorker::wait_latch(Some(TICK)) {
        catch_up.attempt(db);
        let subs: Vec<u32> = BackgroundWorker::transaction(|| {
            // Read-only: this runs once a second and must not take an xid.
            let installed = crate::catalog::read_one::<bool>(
                "SELECT pg_catalog.to_regclass('spock.local_node') IS NOT NULL",
                &[],
            )
            .ok()
            .flatten()
            .unwrap_or(false);
            if installed {
                crate::catalog::subscriptions::enabled()
            } else {
                Vec::new()
            }
        });
        // A heartbeat every few seconds, which the peers' apply workers receive as progress
        // even when nothing is written here (tombstone GC). It must be decoded: a
        // transactional logical message is (a transaction with only an xid is not).
        if last_heartbeat.elapsed() >= HEARTBEAT {
            // Only where a peer streams from this database: a node nobody subscribes to
            // writes nothing while idle (the message needs an xid and a commit record).
            BackgroundWorker::transaction(|| {
                let streamed = crate::catalog::read_one::<bool>(
                    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots \
                     WHERE plugin = 'spock_output' AND database = pg_catalog.current_database())",
                    &[],
                )
                .unwrap_or_else(|e| error!("{e}"))
                .unwrap_or(false);
                if streamed {
                    Spi::run(
                        "SELECT pg_catalog.pg_logical_emit_message(true, 'spock_heartbeat', '')",
                    )
                    .unwrap_or_else(|e| error!("{e}"));
                }
            });
            last_heartbeat = Instant::now();
        }
        appliers.reconcile(&subs, |sub| {
            start(
                &format!("spock apply {db}:{sub}"),
                "spock_apply_main",
                pg_sys::Datum::from(sub),
                &db.to_string(),
            )
        });
    }
}

/// The manager's automatic update of the database's spock objects (`upgrade`): tried at start,
/// and again every `CATCH_UP_RETRY` while it fails, reporting each new failure once as a
/// WARNING; the manager keeps running either way.
#[derive(Default)]
struct CatchUp {
    done: bool,
    next: Option<Instant>,
    reported: Option<String>,
}

const CATCH_UP_RETRY: Duration = Duration::from_secs(60);

impl CatchUp {
    fn attempt(&mut self, db: u32) {
        if self.done || self.next.is_some_and(|t| Instant::now() < t) {
            return;
        }
        match crate::upgrade::catch_up_in_worker() {
            Ok(steps) => {
                if !steps.is_empty() {
                    log!(
                        "spock manager {db}: brought the spock objects up to this library: {}",
                        steps.join("; ")
                    );
                }
                self.done = true;
            }
            Err(e) => {
                if self.reported.as_deref() != Some(e.as_str()) {
                    warning!(
                        "spock manager {db}: could not bring the spock objects up to this \
                         library (retrying every {} s): {e}",
                        CATCH_UP_RETRY.as_secs()
                    );
                    self.reported = Some(e);
                }
                self.next = Some(Instant::now() + CATCH_UP_RETRY);
            }
        }
    }
}
