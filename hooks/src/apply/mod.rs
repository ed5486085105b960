//! The apply worker of one subscription: connects to the provider in replication mode, makes
//! sure the slot and the local replication origin exist, streams from the origin's position and
//! applies each remote transaction in one local transaction that also advances the origin, so a
//! crash of either side neither loses nor re-applies a transaction. This file holds the worker's
//! start, the stream loop and the dispatch of each message; a row change goes to the row
//! engine (`rows.rs`).

mod binary;
mod conflict;
mod conflict_log;
mod exceptions;
mod exec;
mod progress;
mod queue;
mod rows;
mod sql;
mod structure;
pub(crate) mod sync;
mod sync_worker;
mod versions;

use crate::scratch::Scratch;
use crate::stats::{self, Counter};
use crate::{catalog, compat, identity, raise, remote::Received, remote::Remote, settings};
use conflict::{Kind, Local, Resolution};
use pgrx::PgSqlErrorCode as Code;
use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::prelude::*;
use rows::run_with_text_params;
use spock_proto::{Message, Value, stream::FromSender};
use sql::{RemoteRel, Statement};
use std::collections::{HashMap, HashSet};
use std::{ffi::CString, rc::Rc, time::Duration};

/// How often the worker looks for tables waiting for a copy.
const TABLE_SYNC_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How often the worker reports its position (also on the provider's request).
const FEEDBACK_INTERVAL: Duration = Duration::from_millis(200);

/// How long a provider may send nothing before the subscription counts as stalled.
const STALL_AFTER: Duration = Duration::from_secs(10);

/// What this worker is doing, in `pg_stat_activity.query` (and so for `sub_show_status`).
fn report_activity(what: &str) {
    let text = CString::new(what).expect("no NUL");
    // SAFETY: the backend's own status entry; the text is copied.
    unsafe { pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, text.as_ptr()) };
}

use crate::catalog::subscriptions::Subscription;

/// Reads subscription `sub_id` in a transaction of its own.
fn load(sub_id: u32) -> Subscription {
    BackgroundWorker::transaction(|| catalog::subscriptions::load(sub_id))
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The replication origin named after the slot, created on first use.
fn origin(slot: &str) -> pg_sys::RepOriginId {
    let name = CString::new(slot).expect("slot names have no NUL");
    BackgroundWorker::transaction(|| {
        // SAFETY: catalog functions inside a transaction.
        unsafe {
            let id = pg_sys::replorigin_by_name(name.as_ptr(), true);
            if id == 0 {
                pg_sys::replorigin_create(name.as_ptr())
            } else {
                id
            }
        }
    })
}

/// Marks the subscription synchronised (any initial sync has finished by then).
fn mark_synced(sub_id: u32) {
    BackgroundWorker::transaction(|| catalog::sync_status::subscription_ready(sub_id))
}

unsafe extern "C-unwind" {
    /// PostgreSQL's SIGTERM handler for backends (`tcop/postgres.c`), by its C symbol.
    #[link_name = "die"]
    fn backend_die(signal: std::ffi::c_int);
}

/// Makes a stop request (SIGTERM: fast shutdown, sub_drop, sub_disable) end the worker at the
/// next interrupt check, wherever it is — waiting for the provider, for a copy, inside a
/// statement or a long transaction (rolled back, the origin not advanced), or connecting — as
/// core's replication workers do. Our own loops check with `check_for_interrupts!` or `nap`.
pub(super) fn stop_on_sigterm() {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP);
    // SAFETY: installing the server's own handler.
    unsafe { compat::set_signal_handler(libc::SIGTERM, Some(backend_die)) };
}

/// Sleeps up to `timeout` on the process latch; a stop request or the postmaster's death ends
/// the process meanwhile.
pub(crate) fn nap(timeout: Duration) {
    let events = pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH;
    // SAFETY: waiting on our own latch.
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            events as i32,
            timeout.as_millis().min(i32::MAX as u128) as _,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
    check_for_interrupts!();
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn spock_apply_main(arg: pg_sys::Datum) {
    stop_on_sigterm();
    let sub_id = arg.value() as u32;
    let db: u32 = BackgroundWorker::get_extra()
        .parse()
        .expect("database oid in bgw_extra");
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(pg_sys::Oid::from(db)), None);
    let sub = load(sub_id);
    exec::watch_relations();

    session_setup(&sub.slot);

    let mut remote = Remote::connect(&sub.dsn, &sub.slot).unwrap_or_else(|e| {
        raise(
            Code::ERRCODE_CONNECTION_FAILURE,
            format!(
                "subscription \"{}\": could not connect to the provider: {e}",
                sub.name
            ),
        )
    });
    let origin = origin(&sub.slot);
    compat::replorigin_session_setup(origin);
    if sub.needs_structure_sync {
        structure::restore(&sub, structure::Section::PreData);
    }
    if sub.needs_data_sync || sub.needs_structure_sync {
        sync::copy_tables(&mut remote, &sub, sub_id, origin, sub.needs_data_sync);
    } else {
        ensure_slot(&remote, &sub, sub_id);
    }
    if sub.needs_structure_sync {
        structure::restore(&sub, structure::Section::PostData);
    }
    mark_synced(sub_id);

    BackgroundWorker::transaction(versions::load_nodes);
    // SAFETY: our commits from now on carry this origin.
    unsafe { pg_sys::replorigin_session_origin = origin };
    // SAFETY: reading our session origin's progress.
    let start = unsafe { pg_sys::replorigin_session_get_progress(false) };
    let options = [
        ("startup_params_format", "1".to_string()),
        (
            "min_proto_version",
            spock_proto::MIN_PROTO_VERSION.to_string(),
        ),
        (
            "max_proto_version",
            spock_proto::MAX_PROTO_VERSION.to_string(),
        ),
        ("proto_format", "native".into()),
        // Send/recv binary for built-in types when both sides run the same major.
        (
            "binary.want_binary_basetypes",
            if sub.force_text { "0" } else { "1" }.into(),
        ),
        ("binary.want_internal_basetypes", "0".into()),
        (
            "binary.basetypes_major_version",
            (pg_sys::PG_VERSION_NUM / 100).to_string(),
        ),
        (
            "expected_encoding",
            // SAFETY: the database encoding name is a static string.
            unsafe { std::ffi::CStr::from_ptr(pg_sys::GetDatabaseEncodingName()) }
                .to_string_lossy()
                .into_owned(),
        ),
        (
            "spock.replication_set_names",
            sub.sets
                .iter()
                .map(|s| format!("\"{}\"", s.replace('"', "\"\"")))
                .collect::<Vec<_>>()
                .join(","),
        ),
        (
            "spock.forward_origins",
            if sub.forward_all {
                "all".into()
            } else {
                String::new()
            },
        ),
    ];
    let options: Vec<String> = options
        .iter()
        .map(|(k, v)| format!("\"{k}\" {}", quote_literal(v)))
        .collect();
    let command = format!(
        "START_REPLICATION SLOT \"{}\" LOGICAL {:X}/{:X} ({})",
        sub.slot,
        start >> 32,
        start & 0xFFFF_FFFF,
        options.join(", ")
    );
    remote.start_copy_both(&command).unwrap_or_else(|e| {
        raise(
            Code::ERRCODE_CONNECTION_FAILURE,
            format!("subscription \"{}\": cannot start streaming: {e}", sub.name),
        )
    });
    report_activity("streaming");
    log!(
        "subscription \"{}\": streaming from {:X}/{:X}",
        sub.name,
        start >> 32,
        start & 0xFFFF_FFFF
    );
    Applier {
        remote,
        sub,
        sub_id,
        last_sync_check: std::time::Instant::now(),
        described: HashMap::new(),
        relations: HashMap::new(),
        targets: HashMap::new(),
        syncing: HashSet::new(),
        sync_worker: None,
        sync_started: None,
        received: start,
        in_xact: false,
        xact: Xact::default(),
        pending: exceptions::Pending::default(),
        stop: false,
        progress: progress::Progress::default(),
        idle_end: start,
        last_heard: std::time::Instant::now(),
        stalled: false,
        clean: HashSet::new(),
        batch: std::cell::RefCell::new(None),
        conflict_log: Default::default(),
        resolution_labels: Default::default(),
        clock: ClockSettings::read(),
        inbox: Vec::new(),
    }
    .run();
}

/// The session of an apply or sync worker. Replicated changes fire only REPLICA/ALWAYS triggers
/// (and no FK checks), like core; names in the worker's statements and in user code it runs (an
/// index expression, a trigger) cannot be redirected to someone's objects; commits do not wait
/// for their WAL flush unless `spock.synchronous_commit` asks (feedback reports only flushed
/// positions, so the provider keeps whatever a crash could lose); `sub_show_status` and
/// `sub_drop` find the subscription's workers by their application_name.
pub(super) fn session_setup(slot: &str) {
    let sync = if settings::SYNCHRONOUS_COMMIT.get() {
        "local"
    } else {
        "off"
    };
    BackgroundWorker::transaction(|| {
        Spi::run(&format!(
            "SET session_replication_role = replica; SET synchronous_commit = {sync}; \
             SET application_name = {}",
            quote_literal(slot)
        ))
        .unwrap_or_else(|e| error!("{e}"));
        identity::set_search_path(identity::SAFE_SEARCH_PATH);
    });
}

/// Creates the subscription's slot on the provider unless it exists. A slot that is gone
/// after changes were applied from it (dropped by hand, invalidated by
/// `max_slot_wal_keep_size`) is not made anew: the changes in between would be skipped
/// silently. The subscription stops instead, disabled, and says why.
fn ensure_slot(remote: &Remote, sub: &Subscription, sub_id: u32) {
    // Query results are converted with catalog lookups, which need a transaction.
    // SAFETY: no transaction is open in a fresh worker.
    unsafe { pg_sys::StartTransactionCommand() };
    let exists = remote
        .slot_exists(&sub.slot)
        .unwrap_or_else(|e| error!("subscription \"{}\": {e}", sub.name));
    // SAFETY: reading our session origin's progress.
    let applied = unsafe { pg_sys::replorigin_session_get_progress(false) };
    if !exists && applied == 0 {
        remote
            .query(
                &format!(
                    "SELECT lsn::text FROM pg_create_logical_replication_slot({}, 'spock_output')",
                    quote_literal(&sub.slot)
                ),
                1,
            )
            .unwrap_or_else(|e| error!("subscription \"{}\": cannot create slot: {e}", sub.name));
    }
    // SAFETY: the transaction started above.
    unsafe { pg_sys::CommitTransactionCommand() };
    if !exists && applied != 0 {
        slot_lost(sub, sub_id, applied);
    }
}

fn slot_lost(sub: &Subscription, sub_id: u32, applied: u64) -> ! {
    let lsn = catalog::format_lsn(applied);
    let message = format!(
        "replication slot \"{}\" does not exist on the provider, but this subscription has \
         applied changes from it up to {lsn}: the changes after that may be lost",
        sub.slot
    );
    BackgroundWorker::transaction(|| {
        catalog::subscriptions::disable(sub_id);
        catalog::logs::event(
            sub.provider,
            None,
            "SUB_DISABLE",
            &format!("disabling subscription {}: {message}", sub.name),
        );
    });
    ereport!(
        PgLogLevel::ERROR,
        PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
        format!("subscription \"{}\": {message}", sub.name),
        "The subscription was disabled. To start again from the provider's current data, \
         drop it, create it again and copy its tables with spock.sub_resync_table."
    );
    unreachable!("ereport(ERROR) does not return")
}

struct Applier {
    remote: Remote,
    sub: Subscription,
    sub_id: u32,
    /// When the worker last looked for tables waiting for a copy (`sub_resync_table`, …).
    last_sync_check: std::time::Instant,
    /// The provider's relations as its RELATION messages described them.
    described: HashMap<u32, Rc<(String, String, Vec<spock_proto::Column>)>>,
    /// … and those mapped to a local table.
    relations: HashMap<u32, Rc<RemoteRel>>,
    /// Per remote relation: the executor-level mapping of its local table, or `None` when
    /// it takes the SQL path (built at first use, dropped when either side's definition
    /// changes).
    targets: HashMap<u32, Option<Rc<exec::Target>>>,
    received: u64,
    in_xact: bool,
    xact: Xact,
    /// The remote transaction being received, kept for a replay after an error.
    pending: exceptions::Pending,
    /// Set when the worker must exit (its subscription was disabled after an error).
    stop: bool,
    progress: progress::Progress,
    /// When something last arrived from the provider, and whether it has been silent too long.
    last_heard: std::time::Instant,
    stalled: bool,
    /// The end of the stream as of the last keepalive received between transactions with
    /// nothing failed: every transaction before it has been applied (or skipped on purpose).
    idle_end: u64,
    /// Tables that had no tombstones when the last transaction touching them committed.
    clean: HashSet<u32>,
    /// The executor state of the table the last row changes wrote, kept open while the next
    /// changes are on the same table (see `exec::Change`).
    batch: std::cell::RefCell<Option<exec::Change>>,
    /// Conflicts reported one by one in the current window (see `conflict_log`).
    conflict_log: std::cell::RefCell<conflict_log::Budget>,
    /// Tables waiting for or in a copy by the sync worker: their changes wait for it.
    syncing: HashSet<(String, String)>,
    sync_worker: Option<pgrx::bgworkers::DynamicBackgroundWorker>,
    /// When the sync worker was last started (a failing one restarts once a second at most).
    sync_started: Option<std::time::Instant>,
    /// Per local table: this node's name and the table's key index, as `spock.resolutions`
    /// rows name them (looked up at a table's first saved conflict, not at every one).
    resolution_labels: std::cell::RefCell<HashMap<u32, (String, Option<String>)>>,
    /// The commit clock settings, as of the last configuration reload.
    clock: ClockSettings,
    /// The message being handled (see `run`).
    inbox: Vec<u8>,
}

/// The kernel's commit clock settings `wait_for_clock` needs. They change in this worker only
/// when it reloads its configuration, so they are read then, not at every transaction (two
/// lookups by name were a twentieth of a one-row transaction's apply CPU).
#[derive(Clone, Copy)]
struct ClockSettings {
    /// `pgedge.commit_clock_max_skew`, when set.
    max_skew_ms: Option<i64>,
    /// `pgedge.commit_clock_test_offset`.
    offset_us: i64,
}

impl ClockSettings {
    fn read() -> ClockSettings {
        ClockSettings {
            max_skew_ms: setting_ms("pgedge.commit_clock_max_skew").filter(|&m| m > 0),
            offset_us: setting_ms("pgedge.commit_clock_test_offset").unwrap_or(0) * 1000,
        }
    }
}

/// State of the remote transaction being applied.
#[derive(Default)]
struct Xact {
    xid: u32,
    commit_lsn: u64,
    commit_time: i64,
    /// Per local table: whether it had tombstones when first touched (inserts skip the
    /// tombstone check when it had none).
    had_tombstones: HashMap<u32, bool>,
    /// Tables to check for rows older than their tombstone once this transaction commits.
    reconcile: HashSet<u32>,
}

/// How often a change is retried when concurrent local writes keep moving its row.
const MAX_ATTEMPTS: usize = 5;

impl Applier {
    fn run(&mut self) {
        let mut last_feedback = std::time::Instant::now();
        loop {
            check_for_interrupts!();
            if self.stop {
                return;
            }
            if !self.in_xact && BackgroundWorker::sighup_received() {
                // SAFETY: re-reading the configuration between transactions, as core workers do.
                unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
                self.clock = ClockSettings::read();
            }
            let idle = match self.remote.receive() {
                Received::Data(bytes) => {
                    // Copied out of libpq's buffer (the next receive reuses it) into one of
                    // ours that is reused too.
                    let mut inbox = std::mem::take(&mut self.inbox);
                    inbox.clear();
                    inbox.extend_from_slice(bytes);
                    self.heard();
                    self.handle(&inbox);
                    self.inbox = inbox;
                    None
                }
                Received::WouldBlock(fd) => Some(fd),
                Received::End => raise(
                    Code::ERRCODE_CONNECTION_FAILURE,
                    format!(
                        "subscription \"{}\": the provider ended the stream",
                        self.sub.name
                    ),
                ),
            };
            // Report progress periodically (and when asked, see `handle`), not per transaction.
            if !self.in_xact && last_feedback.elapsed() >= FEEDBACK_INTERVAL {
                // A quiet provider is asked for a keepalive: silence then means it is gone.
                let quiet = self.last_heard.elapsed() >= FEEDBACK_INTERVAL * 5;
                self.feedback(quiet);
                last_feedback = std::time::Instant::now();
                self.progress
                    .save(self.sub_id, self.sub.provider, self.received);
                self.check_stalled();
                self.report_conflict_summary();
            }
            if !self.in_xact && self.last_sync_check.elapsed() >= TABLE_SYNC_CHECK_INTERVAL {
                self.sync_waiting_tables();
                self.last_sync_check = std::time::Instant::now();
            }
            if let Some(fd) = idle {
                self.remote.wait_readable(fd);
            }
        }
    }

    /// Something arrived from the provider.
    fn heard(&mut self) {
        self.last_heard = std::time::Instant::now();
        if self.stalled {
            self.stalled = false;
            report_activity("streaming");
            log!(
                "subscription \"{}\": the provider answers again",
                self.sub.name
            );
        }
    }

    /// A provider that sent nothing, not even the keepalives asked for, for `STALL_AFTER` is
    /// stalled (paused, cut off, hung): `pg_stat_activity` says so for this worker, and so
    /// `sub_show_status` shows the subscription as down.
    fn check_stalled(&mut self) {
        let silent = self.last_heard.elapsed();
        if silent < STALL_AFTER {
            return;
        }
        // Past wal_receiver_timeout, as core's receivers do, the connection is given up (a
        // partition can leave it open but dead): the worker starts again and reconnects.
        if let Some(timeout) = setting_ms("wal_receiver_timeout").filter(|&t| t > 0)
            && silent.as_millis() > timeout as u128
        {
            ereport!(
                PgLogLevel::ERROR,
                PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE,
                format!(
                    "subscription \"{}\": nothing received from the provider for {} s \
                     (wal_receiver_timeout); reconnecting",
                    self.sub.name,
                    silent.as_secs()
                )
            );
        }
        report_activity(&format!(
            "stalled: nothing received from the provider for {} s",
            silent.as_secs()
        ));
        if !self.stalled {
            self.stalled = true;
            warning!(
                "subscription \"{}\": nothing received from the provider for {} s",
                self.sub.name,
                silent.as_secs()
            );
        }
    }

    /// Has the tables `sub_resync_table` / `sub_alter_sync` marked copied: by the sync worker
    /// where the origin can be shared, else here, between transactions.
    fn sync_waiting_tables(&mut self) {
        if compat::ORIGIN_SHARING {
            self.syncing = sync_worker::waiting_tables(self.sub_id)
                .into_iter()
                .collect();
            if !self.syncing.is_empty() {
                self.ensure_sync_worker();
            }
            return;
        }
        for (nsp, rel) in sync_worker::waiting_tables(self.sub_id) {
            sync::resync_table(&self.sub, self.sub_id, &nsp, &rel);
            // The copy may take a while: tell the provider we are alive.
            self.feedback(false);
        }
    }

    /// Starts the sync worker unless it runs.
    fn ensure_sync_worker(&mut self) {
        use pgrx::bgworkers::BackgroundWorkerStatus::{PostmasterDied, Stopped};
        let running = self
            .sync_worker
            .as_ref()
            .is_some_and(|h| !matches!(h.pid(), Err(Stopped | PostmasterDied)));
        let due = self
            .sync_started
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if !running && due {
            self.sync_started = Some(std::time::Instant::now());
            // SAFETY: reading the backend's ids.
            let (db, pid) = unsafe { (pg_sys::MyDatabaseId.to_u32(), pg_sys::MyProcPid) };
            self.sync_worker = crate::workers::start_sync(db, self.sub_id, pid);
        }
    }

    /// Holds a change of a table the sync worker has yet to copy until the copy committed.
    fn wait_for_table_sync(&mut self, rel: &RemoteRel) {
        let key = (rel.nspname.clone(), rel.relname.clone());
        if !self.syncing.contains(&key) {
            return;
        }
        self.end_batch();
        loop {
            let done = catalog::sync_status::table_settled(self.sub_id, &rel.nspname, &rel.relname);
            if done {
                self.syncing.remove(&key);
                return;
            }
            self.ensure_sync_worker();
            self.feedback(false);
            nap(Duration::from_millis(100));
        }
    }

    fn handle(&mut self, bytes: &[u8]) {
        match FromSender::decode(bytes) {
            Ok(FromSender::XLogData { wal_end, data, .. }) => {
                self.received = self.received.max(wal_end);
                match Message::decode(data) {
                    Ok(m) => self.on_message(m, data),
                    Err(e) => raise(
                        Code::ERRCODE_PROTOCOL_VIOLATION,
                        format!("subscription \"{}\": {e}", self.sub.name),
                    ),
                }
            }
            Ok(FromSender::Keepalive {
                wal_end,
                reply_requested,
                ..
            }) => {
                self.received = self.received.max(wal_end);
                // Every transaction before a keepalive has been sent; between transactions,
                // with none failed or held, all of them are done here.
                if !self.in_xact && self.pending.failed.is_none() && !self.stop {
                    self.idle_end = self.idle_end.max(wal_end);
                }
                if reply_requested {
                    self.feedback(false);
                }
            }
            Err(e) => raise(
                Code::ERRCODE_PROTOCOL_VIOLATION,
                format!("subscription \"{}\": {e}", self.sub.name),
            ),
        }
    }

    /// Holds a remote transaction stamped further ahead of the local clock than the kernel's
    /// `pgedge.commit_clock_max_skew` allows until the local clock has caught up: applying it
    /// now would drag every later local commit timestamp that far into the future.
    fn wait_for_clock(&mut self, commit_time: i64) {
        let ClockSettings {
            max_skew_ms: Some(max_skew_ms),
            offset_us,
        } = self.clock
        else {
            return;
        };
        let mut warned = false;
        loop {
            // SAFETY: reading the clock.
            let now = unsafe { pg_sys::GetCurrentTimestamp() } + offset_us;
            let ahead_us = commit_time - now - max_skew_ms * 1000;
            if ahead_us <= 0 {
                return;
            }
            if !warned {
                warning!(
                    "subscription \"{}\": remote commit at {} is ahead of the local clock by more than pgedge.commit_clock_max_skew ({max_skew_ms} ms); waiting {} ms",
                    self.sub.name,
                    fmt_ts(commit_time),
                    ahead_us / 1000
                );
                warned = true;
            }
            self.feedback(false);
            nap(Duration::from_micros(ahead_us.clamp(1000, 1_000_000) as u64));
        }
    }

    /// `apply_delay`: holds a remote transaction until that long after its commit (the
    /// provider's commit timestamp against the local clock), answering the provider meanwhile.
    fn wait_for_delay(&mut self, commit_time: i64) {
        if self.sub.apply_delay_us == 0 {
            return;
        }
        loop {
            // SAFETY: reading the clock.
            let now = unsafe { pg_sys::GetCurrentTimestamp() };
            let left = commit_time + self.sub.apply_delay_us - now;
            if left <= 0 {
                return;
            }
            self.feedback(false);
            nap(Duration::from_micros(left.clamp(1000, 1_000_000) as u64));
        }
    }

    /// Applies a message of the stream; an error rolls the transaction back, and at its COMMIT
    /// it is replayed (see `exceptions`).
    fn on_message(&mut self, message: Message, raw: &[u8]) {
        let (begin, commit_end) = match &message {
            Message::Begin { final_lsn, .. } => (Some(*final_lsn), None),
            Message::Commit { end_lsn, .. } => (None, Some(*end_lsn)),
            _ => (None, None),
        };
        if let (Some(_), Message::Begin { commit_time, .. }) = (begin, &message) {
            self.wait_for_clock(*commit_time);
            self.wait_for_delay(*commit_time);
        }
        if let Some(final_lsn) = begin {
            let kept = std::mem::take(&mut self.pending.messages);
            self.pending = exceptions::Pending {
                skip: self.sub.skip_lsn != 0 && final_lsn == self.sub.skip_lsn,
                messages: kept.reused(),
                ..Default::default()
            };
            if let Message::Begin {
                commit_time, xid, ..
            } = &message
            {
                self.xact.commit_lsn = final_lsn;
                self.xact.commit_time = *commit_time;
                self.xact.xid = *xid;
            }
        }
        if self.pending.skip {
            if let Some(end_lsn) = commit_end {
                self.sub.skip_lsn = 0;
                self.skip_commit(end_lsn);
            } else if let Message::Relation {
                relid,
                nspname,
                relname,
                columns,
            } = message
            {
                // Later transactions refer to the relations described in this one; they are
                // mapped to local tables at their first use.
                self.targets.remove(&relid);
                self.relations.remove(&relid);
                self.resolution_labels.borrow_mut().clear();
                self.described
                    .insert(relid, Rc::new((nspname, relname, columns)));
            }
            return;
        }
        self.keep(raw);
        if self.pending.failed.is_none()
            && let Err(e) = self.try_apply(message)
        {
            self.pending.failed = Some(e);
        }
        if commit_end.is_some() && self.pending.failed.is_some() {
            self.recover();
        }
    }

    /// Applies one message. A row change works in memory of its own, freed once it is done,
    /// so a transaction of a million rows needs no more memory than one of a single row.
    fn apply(&mut self, message: Message) {
        if !matches!(
            message,
            Message::Insert { .. } | Message::Update { .. } | Message::Delete { .. }
        ) {
            return self.apply_message(message);
        }
        thread_local! {
            static CHANGE: Scratch = const { Scratch::new(c"spock apply change") };
        }
        CHANGE.with(|scratch| scratch.run(|| self.apply_message(message)));
    }

    fn apply_message(&mut self, message: Message) {
        if !matches!(
            message,
            Message::Insert { .. } | Message::Update { .. } | Message::Delete { .. }
        ) {
            self.end_batch();
        }
        match message {
            Message::Begin {
                final_lsn,
                commit_time,
                xid,
            } => {
                // SAFETY: starting the transaction that applies this remote one (SPI needs an
                // outer snapshot; each statement takes its own fresh one).
                unsafe {
                    pg_sys::StartTransactionCommand();
                    pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
                }
                // Before any xid: a snapshot for a new node's copy waits for this transaction,
                // and this one waits for the snapshot (see sync::hold_applied_commits).
                sync::commit_gate_shared();
                self.in_xact = true;
                self.xact = Xact {
                    xid,
                    commit_lsn: final_lsn,
                    commit_time,
                    ..Xact::default()
                };
            }
            Message::Relation {
                relid,
                nspname,
                relname,
                columns,
            } => {
                self.targets.remove(&relid);
                self.relations.remove(&relid);
                self.described
                    .insert(relid, Rc::new((nspname, relname, columns)));
                self.rel(relid);
            }
            Message::Insert { relid, new } => {
                let rel = self.rel(relid);
                self.wait_for_table_sync(&rel);
                if rel.nspname == "spock" && rel.relname == "queue" {
                    self.queued(&rel, &binary::as_text(&rel, &new));
                } else {
                    self.apply_insert(relid, &rel, &new);
                }
                stats::count(self.sub_id, rel.local_relid, Counter::Insert);
            }
            Message::Update { relid, old, new } => {
                let rel = self.rel(relid);
                self.wait_for_table_sync(&rel);
                self.apply_update(relid, &rel, old.as_deref(), &new);
                stats::count(self.sub_id, rel.local_relid, Counter::Update);
            }
            Message::Delete { relid, old } => {
                let rel = self.rel(relid);
                self.wait_for_table_sync(&rel);
                self.apply_delete(relid, &rel, &old);
                stats::count(self.sub_id, rel.local_relid, Counter::Delete);
            }
            Message::Truncate {
                relids, cascade, ..
            } => {
                for r in &relids {
                    let rel = self.rel(*r);
                    self.wait_for_table_sync(&rel);
                }
                self.truncate(&relids, cascade);
            }
            Message::Commit {
                end_lsn,
                commit_time,
                ..
            } => {
                self.check_new_tombstones();
                // Later local commits must be stamped after this remote one (kernel clock).
                crate::kernel::commit_clock_floor(commit_time);
                // SAFETY: the origin advances in the same transaction as the applied changes.
                unsafe {
                    pg_sys::replorigin_session_origin_lsn = end_lsn;
                    pg_sys::replorigin_session_origin_timestamp = commit_time;
                    pg_sys::PopActiveSnapshot();
                    pg_sys::CommitTransactionCommand();
                }
                self.in_xact = false;
                stats::flush();
                self.reconcile();
                self.progress.applied(commit_time, end_lsn);
            }
            Message::Startup(_)
            | Message::Origin { .. }
            | Message::CommitOrder { .. }
            | Message::Message { .. } => {}
        }
    }

    /// Remote TRUNCATE: one statement per owner, run as that owner (its truncate triggers
    /// must not run as the worker). Tables of one owner, the usual case, go together, so
    /// foreign keys among them are satisfied as on the provider.
    fn truncate(&mut self, relids: &[u32], cascade: bool) {
        let mut by_owner: Vec<(pg_sys::Oid, Vec<String>)> = Vec::new();
        for r in relids {
            let rel = self.rel(*r);
            let owner = identity::rel_owner(pg_sys::Oid::from(rel.local_relid));
            let table = format!(
                "\"{}\".\"{}\"",
                rel.nspname.replace('"', "\"\""),
                rel.relname.replace('"', "\"\"")
            );
            match by_owner.iter_mut().find(|(o, _)| *o == owner) {
                Some((_, tables)) => tables.push(table),
                None => by_owner.push((owner, vec![table])),
            }
        }
        for (owner, tables) in by_owner {
            let stmt = Statement {
                sql: format!(
                    "TRUNCATE {}{}",
                    tables.join(", "),
                    if cascade { " CASCADE" } else { "" }
                ),
                params: Vec::new(),
            };
            identity::as_owner(owner, || run_with_text_params(&stmt));
        }
    }

    /// The provider's relation `relid` mapped to its local table. The mapping is made again
    /// at each use until it succeeds: a table that was missing (or lacked a column) when its
    /// RELATION message came fails only the changes that arrive before it is fixed.
    fn rel(&mut self, relid: u32) -> Rc<RemoteRel> {
        if let Some(rel) = self.relations.get(&relid) {
            return rel.clone();
        }
        let Some(described) = self.described.get(&relid).cloned() else {
            raise(
                Code::ERRCODE_PROTOCOL_VIOLATION,
                format!(
                    "subscription \"{}\": change for relation {relid} before its RELATION message",
                    self.sub.name
                ),
            )
        };
        let (nspname, relname, columns) = &*described;
        self.end_batch();
        let local = describe_local(nspname, relname, columns).unwrap_or_else(|e| {
            ereport!(
                PgLogLevel::ERROR,
                PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                format!("subscription \"{}\": {e}", self.sub.name)
            );
            unreachable!()
        });
        let rel = Rc::new(RemoteRel {
            nspname: nspname.clone(),
            relname: relname.clone(),
            columns: columns.clone(),
            local_types: local.types,
            local_type_oids: local.type_oids,
            local_relid: local.relid,
            key: local.key,
            delta: local.delta,
        });
        self.relations.insert(relid, rel.clone());
        rel
    }

    /// A row of the provider's queue: kept here too, then carried out.
    fn queued(&mut self, rel: &RemoteRel, new: &[Value]) {
        self.exec(rel.insert(new));
        match queue::decode(&rel.columns, new, queue::json_field)
            .unwrap_or_else(|e| self.bad_change(e))
        {
            queue::Queued::Sql { role, sql } => queue::run_sql(&role, &sql),
            queue::Queued::TableSync { schema, table } => {
                queue::request_sync(self.sub_id, &schema, &table)
            }
            queue::Queued::Sequence {
                schema,
                name,
                value,
            } => queue::set_sequence(&schema, &name, value),
            queue::Queued::Other => {}
        }
    }

    /// The detailed report of one conflict.
    fn report_conflict(
        &self,
        rel: &RemoteRel,
        kind: Kind,
        level: PgLogLevel,
        resolution: Resolution,
        local: Local,
    ) {
        let remote = self.remote_version();
        let local_text = match local {
            Local::Known(v) => format!("local change at {} from node {}", fmt_ts(v.ts), v.node),
            Local::OwnTransaction => "local row written by this transaction".into(),
            Local::Unknown => "no local version".into(),
        };
        ereport!(
            level,
            PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
            format!(
                "CONFLICT: remote {} on relation {}.{} ({}). Resolution: {}.",
                kind.remote_op(),
                rel.nspname,
                rel.relname,
                kind.name(),
                resolution.name()
            ),
            format!(
                "{local_text}; remote change at {} from node {}, commit LSN {:X}/{:X}",
                fmt_ts(remote.ts),
                remote.node,
                self.xact.commit_lsn >> 32,
                self.xact.commit_lsn & 0xFFFF_FFFF
            ),
        );
    }

    /// Every few seconds: the summary of conflicts not reported one by one.
    fn report_conflict_summary(&self) {
        let summary = self
            .conflict_log
            .borrow_mut()
            .summary(std::time::Instant::now());
        if let Some(text) = summary {
            log!("subscription \"{}\": {text}", self.sub.name);
        }
    }

    /// Reports a resolved conflict in the server log (and in spock.resolutions if asked).
    fn resolved(&self, rel: &RemoteRel, kind: Kind, applied: bool, local: Local, tuple: &[Value]) {
        stats::count(self.sub_id, rel.local_relid, Counter::Conflict);
        let resolution = match (applied, kind) {
            (true, _) => Resolution::ApplyRemote,
            (false, Kind::DeleteDelete) => Resolution::Skip,
            (false, _) => Resolution::KeepLocal,
        };
        let remote = self.remote_version();
        let detailed = self.conflict_log.borrow_mut().admit(
            kind,
            std::time::Instant::now(),
            settings::CONFLICT_LOG_LIMIT.get(),
        );
        let level = if detailed {
            settings::CONFLICT_LOG_LEVEL.get().level()
        } else {
            PgLogLevel::DEBUG1
        };
        // SAFETY: asks whether a message of that level would go anywhere.
        let wanted = unsafe { pg_sys::message_level_is_interesting(level as i32) };
        if wanted {
            self.report_conflict(rel, kind, level, resolution, local);
        }
        if settings::SAVE_RESOLUTIONS.get() {
            let local_tuple = if rel.key.is_empty() {
                None
            } else {
                self.write(rel, rel.row_json(tuple)).1
            };
            let (local_origin, local_ts) = match local {
                Local::Known(v) => (Some(v.node), Some(v.ts)),
                _ => (None, None),
            };
            let (node_name, idxname) = self.resolution_labels(rel.local_relid);
            self.end_batch();
            catalog::logs::resolution(catalog::logs::Resolution {
                node_name,
                relname: format!("{}.{}", rel.nspname, rel.relname),
                idxname,
                conflict_type: kind.name(),
                resolution: resolution.name(),
                local_origin,
                local_tuple,
                local_ts,
                remote_origin: remote.node,
                remote_tuple: rel.tuple_json(tuple),
                remote_xid: self.xact.xid,
                remote_ts: remote.ts,
                remote_lsn: self.xact.commit_lsn,
            });
        }
    }

    /// This node's name and the key index of table `relid`, for `spock.resolutions`.
    fn resolution_labels(&self, relid: u32) -> (String, Option<String>) {
        if let Some(labels) = self.resolution_labels.borrow().get(&relid) {
            return labels.clone();
        }
        let node = catalog::nodes::local_name().unwrap_or_default();
        let index = self
            .exec(Ok(Statement {
                sql: "SELECT i.indexrelid::regclass::text FROM pg_catalog.pg_index i \
                      WHERE i.indrelid = $1::oid AND (i.indisreplident OR i.indisprimary) \
                      ORDER BY i.indisreplident DESC LIMIT 1"
                    .into(),
                params: vec![Some(relid.to_string())],
            }))
            .1;
        let labels = (node, index);
        self.resolution_labels
            .borrow_mut()
            .insert(relid, labels.clone());
        labels
    }

    /// Before commit: tables whose inserts skipped the tombstone check because they had none
    /// get a repair pass if tombstones appeared meanwhile.
    fn check_new_tombstones(&mut self) {
        for (&relid, &had) in &self.xact.had_tombstones {
            if !had && has_tombstones(relid) {
                self.xact.reconcile.insert(relid);
                self.clean.remove(&relid);
            } else if had {
                self.clean.remove(&relid);
            } else {
                self.clean.insert(relid);
            }
        }
    }

    /// After commit: deletes rows that lost to a tombstone committed concurrently with the
    /// transaction just applied (the other nodes already agree: they saw both writes).
    fn reconcile(&mut self) {
        if self.xact.reconcile.is_empty() {
            return;
        }
        let relids: Vec<u32> = self.xact.reconcile.drain().collect();
        let rels: Vec<Rc<RemoteRel>> = relids
            .iter()
            .filter_map(|r| {
                self.relations
                    .values()
                    .find(|x| x.local_relid == *r)
                    .cloned()
            })
            .collect();
        // SAFETY: a short transaction of our own between two remote ones.
        unsafe {
            pg_sys::StartTransactionCommand();
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        }
        for rel in rels {
            // The losing rows are found and locked with the worker's rights (tombstones are
            // spock's), and deleted with the owner's (the table's delete triggers run).
            let Some(find) = rel.reconcile_find() else {
                continue;
            };
            if let (_, Some(ctids)) = self.exec(Ok(find)) {
                let (n, _) = self.write(&rel, Ok(rel.reconcile_delete(ctids)));
                if n > 0 {
                    log!(
                        "spock: removed {n} row(s) of {}.{} older than their concurrent delete",
                        rel.nspname,
                        rel.relname
                    );
                }
            }
        }
        // SAFETY: the transaction started above.
        unsafe {
            pg_sys::PopActiveSnapshot();
            pg_sys::CommitTransactionCommand();
        }
    }

    /// Sends the standby status: received, durably applied (flushed) and applied positions.
    fn feedback(&self, reply: bool) {
        // SAFETY: reading our session origin's progress and the clock.
        let (flushed, applied, now) = unsafe {
            (
                pg_sys::replorigin_session_get_progress(true),
                pg_sys::replorigin_session_get_progress(false),
                pg_sys::GetCurrentTimestamp(),
            )
        };
        let received = self.received.max(applied);
        // Between transactions, with every applied commit durable, the provider may forget
        // up to the last keepalive that found us idle (transactions it filtered out lie
        // there): that lets it advance the slot and shut down cleanly. Never past a
        // transaction received but not applied — one that failed and waits for `sub_enable`
        // after `sub_disable`, or whose apply was interrupted.
        let flushed = if !self.in_xact && !self.stop && flushed >= applied {
            flushed.max(self.idle_end.min(received))
        } else {
            flushed
        };
        let msg = spock_proto::stream::status_update(received, flushed, applied, now, reply);
        self.remote.send(&msg);
    }
}

/// What the apply worker needs to know of the local table a remote relation maps to.
struct LocalTable {
    relid: u32,
    /// The local type (as SQL text) of each remote column, matched by name.
    types: Vec<String>,
    /// … and its oid.
    type_oids: Vec<u32>,
    /// Positions of the local replica-identity index columns among the remote columns.
    key: Vec<usize>,
    /// Delta-apply columns among the remote columns, with their merge function.
    delta: Vec<sql::DeltaColumn>,
}

fn describe_local(
    nspname: &str,
    relname: &str,
    columns: &[spock_proto::Column],
) -> Result<LocalTable, String> {
    let qualified = format!(
        "\"{}\".\"{}\"",
        nspname.replace('"', "\"\""),
        relname.replace('"', "\"\"")
    );
    let found: Vec<(String, String, pg_sys::Oid)> = Spi::connect(|c| {
        c.select(
            "SELECT attname::text, format_type(atttypid, atttypmod), atttypid FROM pg_attribute \
             WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
            None,
            &[qualified.as_str().into()],
        )
        .map(|rows| {
            rows.filter_map(|r| {
                Some((
                    r.get::<String>(1).ok()??,
                    r.get::<String>(2).ok()??,
                    r.get::<pg_sys::Oid>(3).ok()??,
                ))
            })
            .collect()
        })
    })
    .map_err(|e| e.to_string())?;
    if found.is_empty() {
        return Err(format!(
            "table {nspname}.{relname} does not exist on the subscriber"
        ));
    }
    let (relid, key_names): (u32, Vec<String>) = Spi::connect(|c| {
        let row = c.select(
            "SELECT to_regclass($1)::oid::bigint, spock.replica_identity_columns(to_regclass($1))",
            None,
            &[qualified.as_str().into()],
        )?;
        let row = row.first();
        Ok::<_, pgrx::spi::Error>((
            row.get::<i64>(1)?.unwrap_or(0) as u32,
            row.get::<Vec<String>>(2)?.unwrap_or_default(),
        ))
    })
    .map_err(|e| e.to_string())?;
    // Tombstones need every key column in the stream.
    let key: Vec<usize> = key_names
        .iter()
        .filter_map(|k| columns.iter().position(|c| c.name == *k))
        .collect();
    let key = if key.len() == key_names.len() {
        key
    } else {
        Vec::new()
    };
    let typed = columns
        .iter()
        .map(|c| {
            found
                .iter()
                .find(|(name, _, _)| *name == c.name)
                .map(|(_, ty, oid)| (ty.clone(), oid.to_u32()))
                .ok_or_else(|| {
                    format!(
                        "unknown column name \"{}\" in table {nspname}.{relname}",
                        c.name
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (types, type_oids) = typed.into_iter().unzip();
    // Delta functions must take (old, new, local) of the column's type and belong to a
    // superuser (a table owner cannot point the option at code of their own making); they
    // run as the table's owner, who needs EXECUTE on them.
    let delta: Vec<sql::DeltaColumn> = Spi::connect(|c| {
        let rows = c.select(
            "SELECT a.attname::text, format('%I.%I', n.nspname, p.proname), p.oid \
             FROM pg_attribute a CROSS JOIN LATERAL pg_options_to_table(a.attoptions) o \
             JOIN pg_proc p ON p.oid = to_regprocedure(format('%s(%s,%s,%s)', o.option_value, \
                  a.atttypid::regtype, a.atttypid::regtype, a.atttypid::regtype)) \
             JOIN pg_namespace n ON n.oid = p.pronamespace \
             JOIN pg_roles r ON r.oid = p.proowner AND r.rolsuper \
             WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped \
               AND o.option_name = 'delta_apply_function'",
            None,
            &[pg_sys::Oid::from(relid).into()],
        )?;
        let mut out = Vec::new();
        for r in rows {
            if let (Some(name), Some(func), Some(oid)) = (
                r.get::<String>(1)?,
                r.get::<String>(2)?,
                r.get::<pg_sys::Oid>(3)?,
            ) && let Some(col) = columns.iter().position(|c| c.name == name)
            {
                out.push(sql::DeltaColumn {
                    col,
                    func,
                    oid: oid.to_u32(),
                });
            }
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .map_err(|e| e.to_string())?;
    Ok(LocalTable {
        relid,
        types,
        type_oids,
        key,
        delta,
    })
}

fn has_tombstones(relid: u32) -> bool {
    catalog::tombstones::any_for(relid)
}

/// A kernel setting in milliseconds, `None` when this kernel does not have it.
fn setting_ms(name: &str) -> Option<i64> {
    let name = CString::new(name).expect("no NUL");
    // SAFETY: reading a setting's text and parsing it with its unit.
    unsafe {
        let v = pg_sys::GetConfigOption(name.as_ptr(), true, false);
        if v.is_null() {
            return None;
        }
        let mut out = 0;
        pg_sys::parse_int(
            v,
            &mut out,
            pg_sys::GUC_UNIT_MS as i32,
            std::ptr::null_mut(),
        )
        .then_some(i64::from(out))
    }
}

/// A PostgreSQL timestamp (µs since 2000-01-01) as text.
fn fmt_ts(ts: i64) -> String {
    // SAFETY: timestamptz_to_str returns a static buffer that we copy at once.
    unsafe {
        std::ffi::CStr::from_ptr(pg_sys::timestamptz_to_str(ts))
            .to_string_lossy()
            .into_owned()
    }
}
