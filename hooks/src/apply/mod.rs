//! The apply worker of one subscription: connects to the provider in replication mode, makes
//! sure the slot and the local replication origin exist, streams from the origin's position and
//! applies each remote transaction in one local transaction that also advances the origin, so a
//! crash of either side neither loses nor re-applies a transaction.

mod sql;
mod sync;

use crate::{compat, remote::Received, remote::Remote};
use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::prelude::*;
use spock_proto::{Message, stream::FromSender};
use sql::{RemoteRel, Statement};
use std::{collections::HashMap, ffi::CString, time::Duration};

/// How often the worker reports its position (also on the provider's request).
const FEEDBACK_INTERVAL: Duration = Duration::from_millis(200);

struct Subscription {
    name: String,
    slot: String,
    dsn: String,
    sets: Vec<String>,
    forward_all: bool,
    /// The subscription-level sync row asks for a data copy that has not happened yet.
    needs_data_sync: bool,
}

fn load(sub_id: u32) -> Subscription {
    BackgroundWorker::transaction(|| {
        // sub_drop holds this lock until it commits: wait for it, then see the outcome.
        Spi::run_with_args(
            "SELECT pg_advisory_xact_lock_shared($1::bigint + (1::bigint << 40))",
            &[i64::from(sub_id).into()],
        )
        .unwrap_or_else(|e| error!("{e}"));
        Spi::connect(|c| {
            let rows = c
                .select(
                    "SELECT s.sub_name::text, s.sub_slot_name::text, i.if_dsn, \
                     array_to_string(coalesce(s.sub_replication_sets, '{}'), ','), \
                     coalesce('all' = ANY (s.sub_forward_origins), false), \
                     EXISTS (SELECT 1 FROM spock.local_sync_status y WHERE y.sync_subid = s.sub_id \
                             AND y.sync_nspname IS NULL AND y.sync_kind IN ('d', 'f') AND y.sync_status <> 'r') \
                     FROM spock.subscription s JOIN spock.node_interface i ON i.if_id = s.sub_origin_if \
                     WHERE s.sub_id = $1",
                    None,
                    &[pg_sys::Oid::from(sub_id).into()],
                )
                .unwrap_or_else(|e| error!("cannot read subscription {sub_id}: {e}"));
            if rows.is_empty() {
                error!("subscription {sub_id} no longer exists");
            }
            let row = rows.first();
            let text = |i: usize| row.get::<String>(i).ok().flatten().unwrap_or_default();
            Subscription {
                name: text(1),
                slot: text(2),
                dsn: text(3),
                sets: text(4)
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
                forward_all: row.get::<bool>(5).ok().flatten().unwrap_or(false),
                needs_data_sync: row.get::<bool>(6).ok().flatten().unwrap_or(false),
            }
        })
    })
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The replication origin named after the slot, created on first use; marks the subscription
/// synchronised (initial sync is not part of this worker yet).
fn origin(sub_id: u32, slot: &str) -> pg_sys::RepOriginId {
    let name = CString::new(slot).expect("slot names have no NUL");
    BackgroundWorker::transaction(|| {
        // SAFETY: catalog functions inside a transaction.
        let id = unsafe {
            let id = pg_sys::replorigin_by_name(name.as_ptr(), true);
            if id == 0 {
                pg_sys::replorigin_create(name.as_ptr())
            } else {
                id
            }
        };
        Spi::run_with_args(
            "UPDATE spock.local_sync_status SET sync_status = 'r' \
             WHERE sync_subid = $1 AND sync_nspname IS NULL AND sync_status <> 'r'",
            &[pg_sys::Oid::from(sub_id).into()],
        )
        .unwrap_or_else(|e| error!("cannot update the sync status: {e}"));
        id
    })
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn spock_apply_main(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let sub_id = arg.value() as u32;
    let db: u32 = BackgroundWorker::get_extra()
        .parse()
        .expect("database oid in bgw_extra");
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(pg_sys::Oid::from(db)), None);
    let sub = load(sub_id);

    // Replicated changes fire only REPLICA/ALWAYS triggers (and no FK checks), like core.
    BackgroundWorker::transaction(|| {
        Spi::run("SET session_replication_role = replica").unwrap_or_else(|e| error!("{e}"));
        // sub_show_status finds the running worker by its application_name.
        Spi::run(&format!(
            "SET application_name = {}",
            quote_literal(&sub.slot)
        ))
        .unwrap_or_else(|e| error!("{e}"));
    });

    let remote = Remote::connect(&sub.dsn, &sub.slot).unwrap_or_else(|e| {
        error!(
            "subscription \"{}\": could not connect to the provider: {e}",
            sub.name
        )
    });
    if sub.needs_data_sync {
        sync::copy_tables(&remote, &sub, sub_id);
    } else {
        ensure_slot(&remote, &sub);
    }

    let origin = origin(sub_id, &sub.slot);
    compat::replorigin_session_setup(origin);
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
        // SAFETY: the database encoding name is a static string.
        (
            "expected_encoding",
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
    remote
        .start_copy_both(&command)
        .unwrap_or_else(|e| error!("subscription \"{}\": cannot start streaming: {e}", sub.name));
    log!(
        "subscription \"{}\": streaming from {:X}/{:X}",
        sub.name,
        start >> 32,
        start & 0xFFFF_FFFF
    );
    Applier {
        remote,
        sub,
        relations: HashMap::new(),
        received: start,
        in_xact: false,
    }
    .run();
}

/// Creates the subscription's slot on the provider unless it exists.
fn ensure_slot(remote: &Remote, sub: &Subscription) {
    // Query results are converted with catalog lookups, which need a transaction.
    // SAFETY: no transaction is open in a fresh worker.
    unsafe { pg_sys::StartTransactionCommand() };
    let exists = remote
        .query(
            &format!(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = {}",
                quote_literal(&sub.slot)
            ),
            1,
        )
        .unwrap_or_else(|e| error!("subscription \"{}\": {e}", sub.name));
    if exists.is_empty() {
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
}

struct Applier {
    remote: Remote,
    sub: Subscription,
    relations: HashMap<u32, RemoteRel>,
    received: u64,
    in_xact: bool,
}

impl Applier {
    fn run(&mut self) {
        let mut last_feedback = std::time::Instant::now();
        loop {
            if BackgroundWorker::sigterm_received() {
                return;
            }
            let idle = match self.remote.receive() {
                Received::Data(bytes) => {
                    let bytes = bytes.to_vec();
                    self.handle(&bytes);
                    None
                }
                Received::WouldBlock(fd) => Some(fd),
                Received::End => error!(
                    "subscription \"{}\": the provider ended the stream",
                    self.sub.name
                ),
            };
            // Report progress periodically (and when asked, see `handle`), not per transaction.
            if !self.in_xact && last_feedback.elapsed() >= FEEDBACK_INTERVAL {
                self.feedback(false);
                last_feedback = std::time::Instant::now();
            }
            if let Some(fd) = idle {
                wait_for_socket(fd);
            }
        }
    }

    fn handle(&mut self, bytes: &[u8]) {
        match FromSender::decode(bytes) {
            Ok(FromSender::XLogData { wal_end, data, .. }) => {
                self.received = self.received.max(wal_end);
                match Message::decode(data) {
                    Ok(m) => self.apply(m),
                    Err(e) => error!("subscription \"{}\": {e}", self.sub.name),
                }
            }
            Ok(FromSender::Keepalive {
                wal_end,
                reply_requested,
                ..
            }) => {
                self.received = self.received.max(wal_end);
                if reply_requested {
                    self.feedback(false);
                }
            }
            Err(e) => error!("subscription \"{}\": {e}", self.sub.name),
        }
    }

    fn apply(&mut self, message: Message) {
        match message {
            Message::Begin { .. } => {
                // SAFETY: starting the transaction that applies this remote one (SPI needs an
                // outer snapshot; each statement takes its own fresh one).
                unsafe {
                    pg_sys::StartTransactionCommand();
                    pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
                }
                self.in_xact = true;
            }
            Message::Relation {
                relid,
                nspname,
                relname,
                columns,
            } => {
                let local_types = local_types(&nspname, &relname, &columns)
                    .unwrap_or_else(|e| error!("subscription \"{}\": {e}", self.sub.name));
                self.relations.insert(
                    relid,
                    RemoteRel {
                        nspname,
                        relname,
                        columns,
                        local_types,
                    },
                );
            }
            Message::Insert { relid, new } => {
                let stmt = self.rel(relid).insert(&new);
                self.execute(stmt, "INSERT");
            }
            Message::Update { relid, old, new } => {
                let stmt = self.rel(relid).update(old.as_deref(), &new);
                self.execute(stmt, "UPDATE");
            }
            Message::Delete { relid, old } => {
                let stmt = self.rel(relid).delete(&old);
                self.execute(stmt, "DELETE");
            }
            Message::Truncate {
                relids, cascade, ..
            } => {
                let tables: Vec<String> = relids
                    .iter()
                    .map(|r| {
                        let rel = self.rel(*r);
                        format!(
                            "\"{}\".\"{}\"",
                            rel.nspname.replace('"', "\"\""),
                            rel.relname.replace('"', "\"\"")
                        )
                    })
                    .collect();
                let sql = format!(
                    "TRUNCATE {}{}",
                    tables.join(", "),
                    if cascade { " CASCADE" } else { "" }
                );
                self.execute(
                    Ok(Statement {
                        sql,
                        params: Vec::new(),
                    }),
                    "TRUNCATE",
                );
            }
            Message::Commit {
                end_lsn,
                commit_time,
                ..
            } => {
                // SAFETY: the origin advances in the same transaction as the applied changes.
                unsafe {
                    pg_sys::replorigin_session_origin_lsn = end_lsn;
                    pg_sys::replorigin_session_origin_timestamp = commit_time;
                    pg_sys::PopActiveSnapshot();
                    pg_sys::CommitTransactionCommand();
                }
                self.in_xact = false;
            }
            Message::Startup(_)
            | Message::Origin { .. }
            | Message::CommitOrder { .. }
            | Message::Message { .. } => {}
        }
    }

    fn rel(&self, relid: u32) -> &RemoteRel {
        self.relations.get(&relid).unwrap_or_else(|| {
            error!(
                "subscription \"{}\": change for relation {relid} before its RELATION message",
                self.sub.name
            )
        })
    }

    fn execute(&self, stmt: Result<Statement, String>, what: &str) {
        let stmt = stmt.unwrap_or_else(|e| error!("subscription \"{}\": {e}", self.sub.name));
        let processed = run_with_text_params(&stmt);
        if processed == 0 && (what == "UPDATE" || what == "DELETE") {
            warning!(
                "CONFLICT: remote {what} on relation found no local row (subscription \"{}\"); skipped",
                self.sub.name
            );
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
        // Between transactions, with every applied commit durable, everything received is
        // done: saying so lets the provider advance the slot and shut down cleanly.
        let flushed = if !self.in_xact && flushed >= applied {
            received
        } else {
            flushed
        };
        let msg = spock_proto::stream::status_update(received, flushed, applied, now, reply);
        self.remote.send(&msg);
    }
}

/// The local type (as SQL text) of each remote column, matched by name.
fn local_types(
    nspname: &str,
    relname: &str,
    columns: &[spock_proto::Column],
) -> Result<Vec<String>, String> {
    let qualified = format!(
        "\"{}\".\"{}\"",
        nspname.replace('"', "\"\""),
        relname.replace('"', "\"\"")
    );
    let found: Vec<(String, String)> = Spi::connect(|c| {
        c.select(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
            None,
            &[qualified.as_str().into()],
        )
        .map(|rows| {
            rows.filter_map(|r| Some((r.get::<String>(1).ok()??, r.get::<String>(2).ok()??)))
                .collect()
        })
    })
    .map_err(|e| e.to_string())?;
    if found.is_empty() {
        return Err(format!(
            "table {nspname}.{relname} does not exist on the subscriber"
        ));
    }
    columns
        .iter()
        .map(|c| {
            found
                .iter()
                .find(|(name, _)| *name == c.name)
                .map(|(_, ty)| ty.clone())
                .ok_or_else(|| {
                    format!(
                        "unknown column name \"{}\" in table {nspname}.{relname}",
                        c.name
                    )
                })
        })
        .collect()
}

thread_local! {
    /// Prepared plans by statement text: a remote row of a given shape is parsed and planned
    /// once, not once per row.
    static PLANS: std::cell::RefCell<HashMap<String, pg_sys::SPIPlanPtr>> =
        std::cell::RefCell::new(HashMap::new());
}

/// Runs a statement with text parameters and returns the number of rows it processed.
fn run_with_text_params(stmt: &Statement) -> u64 {
    let n = stmt.params.len();
    let mut values = Vec::with_capacity(n);
    let mut nulls = Vec::with_capacity(n);
    for p in &stmt.params {
        match p {
            Some(v) => {
                let c = CString::new(v.as_str())
                    .unwrap_or_else(|_| error!("value contains a NUL byte"));
                // SAFETY: copies the string into a text datum in the current memory context.
                values.push(pg_sys::Datum::from(unsafe {
                    pg_sys::cstring_to_text(c.as_ptr())
                }));
                nulls.push(b' ' as std::ffi::c_char);
            }
            None => {
                values.push(pg_sys::Datum::from(0));
                nulls.push(b'n' as std::ffi::c_char);
            }
        }
    }
    // SAFETY: SPI inside the apply transaction; a kept plan outlives the SPI connection, and
    // every array has `n` entries.
    unsafe {
        pg_sys::SPI_connect();
        let plan = PLANS.with(|plans| {
            *plans
                .borrow_mut()
                .entry(stmt.sql.clone())
                .or_insert_with(|| {
                    let sql = CString::new(stmt.sql.as_str()).expect("no NUL in generated SQL");
                    let mut types = vec![pg_sys::TEXTOID; n];
                    let plan = pg_sys::SPI_prepare(sql.as_ptr(), n as i32, types.as_mut_ptr());
                    if plan.is_null() {
                        error!("cannot prepare {}", stmt.sql);
                    }
                    pg_sys::SPI_keepplan(plan);
                    plan
                })
        });
        let rc = pg_sys::SPI_execute_plan(plan, values.as_mut_ptr(), nulls.as_ptr(), false, 0);
        if rc < 0 {
            error!("SPI failed ({rc}) running {}", stmt.sql);
        }
        let processed = pg_sys::SPI_processed;
        pg_sys::SPI_finish();
        processed
    }
}

fn wait_for_socket(fd: pg_sys::pgsocket) {
    let events = pg_sys::WL_SOCKET_READABLE
        | pg_sys::WL_LATCH_SET
        | pg_sys::WL_TIMEOUT
        | pg_sys::WL_EXIT_ON_PM_DEATH;
    // SAFETY: waiting on our own latch and the provider's socket.
    unsafe {
        pg_sys::WaitLatchOrSocket(
            pg_sys::MyLatch,
            events as i32,
            fd,
            1000,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
}
