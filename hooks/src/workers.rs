//! The supervisor (one per instance) starts a manager per database; a manager keeps one apply
//! worker running per enabled subscription of its database, restarting a failed one within a
//! second (upstream waits a fixed 5 s).

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, DynamicBackgroundWorker,
    SignalWakeFlags,
};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::{collections::HashMap, time::Duration};

/// How often the supervisor and managers look for work.
const TICK: Duration = Duration::from_secs(1);

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

/// Keeps one worker per key running: starts missing ones, stops unwanted ones.
fn reconcile<K: Copy + Eq + std::hash::Hash>(
    running: &mut HashMap<K, DynamicBackgroundWorker>,
    wanted: &[K],
    mut launch: impl FnMut(K) -> Option<DynamicBackgroundWorker>,
) {
    running.retain(|k, h| wanted.contains(k) && h.pid().is_ok());
    let stale: Vec<K> = running
        .keys()
        .copied()
        .filter(|k| !wanted.contains(k))
        .collect();
    for k in stale {
        if let Some(h) = running.remove(&k) {
            let _ = h.terminate();
        }
    }
    for &k in wanted {
        if !running.contains_key(&k)
            && let Some(h) = launch(k)
        {
            running.insert(k, h);
        }
    }
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn spock_supervisor_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(Some("postgres"), None);
    let mut managers: HashMap<u32, DynamicBackgroundWorker> = HashMap::new();
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
        reconcile(&mut managers, &dbs, |db| {
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
    let mut appliers: HashMap<u32, DynamicBackgroundWorker> = HashMap::new();
    while BackgroundWorker::wait_latch(Some(TICK)) {
        let subs: Vec<u32> = BackgroundWorker::transaction(|| {
            Spi::connect(|c| {
                let installed = c
                    .select(
                        "SELECT to_regclass('spock.local_node') IS NOT NULL",
                        None,
                        &[],
                    )
                    .and_then(|r| r.first().get_one::<bool>())
                    .ok()
                    .flatten()
                    .unwrap_or(false);
                if !installed {
                    return Vec::new();
                }
                c.select(
                    "SELECT s.sub_id FROM spock.subscription s \
                     JOIN spock.local_node l ON l.node_id = s.sub_target WHERE s.sub_enabled",
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
        reconcile(&mut appliers, &subs, |sub| {
            start(
                &format!("spock apply {db}:{sub}"),
                "spock_apply_main",
                pg_sys::Datum::from(sub),
                &db.to_string(),
            )
        });
    }
}
