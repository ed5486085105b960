//! What the apply worker does when applying a remote transaction raises an error: the
//! transaction's messages are kept while it arrives, so after the error it is rolled back and
//! replayed — as is for a transient error (deadlock, serialization failure), otherwise change
//! by change in subtransactions as `spock.exception_behaviour` says, with the failed (and, as
//! `spock.exception_logging` says, the other) changes in `spock.exception_log`. The worker keeps
//! running either way: an apply error never turns into a restart loop.

use super::Applier;
use crate::catalog::{self, format_lsn};
use crate::settings::{self, ExceptionBehaviour, ExceptionLogging};
use pgrx::bgworkers::BackgroundWorker;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use spock_proto::{Message, Value};
use std::panic::AssertUnwindSafe;
use std::time::Duration;

/// How often a transaction that failed on a transient error is tried again.
const TRANSIENT_RETRIES: u32 = 10;

/// The error that stopped a transaction.
#[derive(Debug, Clone)]
pub struct Failure {
    pub code: PgSqlErrorCode,
    pub message: String,
}

impl Failure {
    fn from_caught(e: CaughtError) -> Failure {
        let report = match e {
            CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => r,
            CaughtError::RustPanic { ereport, .. } => ereport,
        };
        Failure {
            code: report.sql_error_code(),
            message: report.message().to_string(),
        }
    }

    /// Errors that go away when the transaction is simply run again.
    fn is_transient(&self) -> bool {
        use PgSqlErrorCode::*;
        matches!(
            self.code,
            ERRCODE_T_R_DEADLOCK_DETECTED
                | ERRCODE_T_R_SERIALIZATION_FAILURE
                | ERRCODE_LOCK_NOT_AVAILABLE
        )
    }
}

/// The remote transaction being received.
#[derive(Default)]
pub struct Pending {
    /// Its messages so far, for a replay.
    pub messages: Kept,
    pub bytes: usize,
    /// More than `spock.exception_replay_queue_size`: no replay possible.
    pub overflow: bool,
    pub failed: Option<Failure>,
    /// `sub_alter_skiplsn` named this transaction: it is consumed, not applied.
    pub skip: bool,
}

/// Messages kept back to back in one buffer, which the next transaction reuses: keeping a
/// message costs a copy, not an allocation.
#[derive(Default)]
pub struct Kept {
    bytes: Vec<u8>,
    /// Where each message ends in `bytes`.
    ends: Vec<usize>,
}

impl Kept {
    /// A buffer larger than this is not kept for the next transaction.
    const REUSE_UP_TO: usize = 1 << 20;

    fn push(&mut self, raw: &[u8]) {
        self.bytes.extend_from_slice(raw);
        self.ends.push(self.bytes.len());
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(from, &to)| &self.bytes[from..to])
    }

    /// Empty, for the next transaction (with the buffers' memory unless they grew large).
    pub fn reused(mut self) -> Kept {
        if self.bytes.capacity() > Self::REUSE_UP_TO {
            return Kept::default();
        }
        self.bytes.clear();
        self.ends.clear();
        self
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// As received, one transaction.
    Whole,
    /// Each change in a subtransaction; `keep` says whether successful ones stay.
    Changes { keep: bool, disable: bool },
}

impl Applier {
    /// Applies one message, turning an error into a `Failure` (the transaction is then aborted).
    pub(super) fn try_apply(&mut self, message: Message) -> Result<(), Failure> {
        let result = PgTryBuilder::new(AssertUnwindSafe(|| {
            self.apply(message);
            Ok(())
        }))
        .catch_others(|e| Err(Failure::from_caught(e)))
        .execute();
        if result.is_err() {
            self.abort();
        }
        result
    }

    /// Rolls the local transaction back after an error.
    fn abort(&mut self) {
        // SAFETY: the error was caught and flushed; this ends the failed transaction with every
        // subtransaction still open in it (AbortCurrentTransaction would end only the innermost
        // one and leave the transaction half-aborted).
        unsafe { pg_sys::AbortOutOfAnyTransaction() };
        self.forget_batch();
        self.in_xact = false;
    }

    /// Keeps a message of the transaction being received.
    pub(super) fn keep(&mut self, raw: &[u8]) {
        let p = &mut self.pending;
        if p.overflow {
            return;
        }
        p.bytes += raw.len();
        if p.bytes > settings::EXCEPTION_REPLAY_QUEUE_SIZE.get().max(0) as usize {
            p.overflow = true;
            p.messages = Kept::default();
        } else {
            p.messages.push(raw);
        }
    }

    /// At the COMMIT of a transaction that failed: replay it as the error and the settings say.
    pub(super) fn recover(&mut self) {
        let mut failure = self.pending.failed.take().expect("a failed transaction");
        if self.pending.overflow {
            error!(
                "subscription \"{}\": {}; the transaction is larger than \
                 spock.exception_replay_queue_size and cannot be replayed",
                self.sub.name, failure.message
            );
        }
        let mut attempt = 0;
        while failure.is_transient() && attempt < TRANSIENT_RETRIES {
            attempt += 1;
            super::nap(Duration::from_millis(10 * u64::from(attempt)));
            match self.replay(Mode::Whole) {
                Ok(()) => return,
                Err(e) => failure = e,
            }
        }
        warning!(
            "subscription \"{}\": applying remote transaction {} failed: {}",
            self.sub.name,
            self.xact.xid,
            failure.message
        );
        let mode = match settings::EXCEPTION_BEHAVIOUR.get() {
            ExceptionBehaviour::Discard => Mode::Changes {
                keep: true,
                disable: false,
            },
            ExceptionBehaviour::TransDiscard => Mode::Changes {
                keep: false,
                disable: false,
            },
            ExceptionBehaviour::SubDisable => Mode::Changes {
                keep: false,
                disable: true,
            },
        };
        self.pending.failed = Some(failure.clone());
        if let Err(e) = self.replay(mode) {
            // Even change by change it failed (e.g. at commit): stop, to be retried later.
            error!(
                "subscription \"{}\": cannot apply or skip remote transaction {}: {}",
                self.sub.name, self.xact.xid, e.message
            );
        }
    }

    fn replay(&mut self, mode: Mode) -> Result<(), Failure> {
        let messages = std::mem::take(&mut self.pending.messages);
        let result = self.replay_messages(&messages, mode);
        self.pending.messages = messages;
        result
    }

    fn replay_messages(&mut self, messages: &Kept, mode: Mode) -> Result<(), Failure> {
        let failure_text = self
            .pending
            .failed
            .as_ref()
            .map(|f| f.message.clone())
            .unwrap_or_default();
        for raw in messages.iter() {
            let message = Message::decode(raw).map_err(|e| Failure {
                code: PgSqlErrorCode::ERRCODE_PROTOCOL_VIOLATION,
                message: e.to_string(),
            })?;
            let Mode::Changes { keep, disable } = mode else {
                self.try_apply(message)?;
                continue;
            };
            match message {
                Message::Commit { .. } if disable => {
                    self.disable_subscription(&failure_text);
                    return Ok(());
                }
                Message::Insert { .. }
                | Message::Update { .. }
                | Message::Delete { .. }
                | Message::Truncate { .. }
                | Message::Relation { .. } => {
                    let logged = Logged::of(self, &message);
                    // SAFETY: inside the apply transaction.
                    unsafe {
                        pg_sys::BeginInternalSubTransaction(c"SpockExceptionReplay".as_ptr())
                    };
                    // The change's executor state ends with its subtransaction.
                    let result = PgTryBuilder::new(AssertUnwindSafe(|| {
                        self.apply(message);
                        self.end_batch();
                        Ok(())
                    }))
                    .catch_others(|e| Err(Failure::from_caught(e)))
                    .execute();
                    if result.is_err() {
                        self.forget_batch();
                    }
                    // SAFETY: ends the subtransaction begun above, keeping it only when asked.
                    unsafe {
                        if result.is_ok() && keep {
                            pg_sys::ReleaseCurrentSubTransaction();
                        } else {
                            pg_sys::RollbackAndReleaseCurrentSubTransaction();
                        }
                    }
                    // A table missing here fails each of its changes instead.
                    if logged.operation.is_empty() {
                        continue;
                    }
                    let logging = settings::EXCEPTION_LOGGING.get();
                    let log_it = match &result {
                        Err(_) => logging != ExceptionLogging::None,
                        Ok(()) => {
                            logging == ExceptionLogging::All
                                || (!keep && logging != ExceptionLogging::None)
                        }
                    };
                    if log_it {
                        let error = match &result {
                            Err(e) => e.message.clone(),
                            Ok(()) => String::new(),
                        };
                        self.log_exception(&logged, &error);
                    }
                }
                other => self.try_apply(other)?,
            }
        }
        Ok(())
    }

    /// `sub_disable`: the subscription is disabled and the transaction left unapplied, so
    /// enabling the subscription again retries it (unless `sub_alter_skiplsn` names it).
    fn disable_subscription(&mut self, failure: &str) {
        let lsn = format_lsn(self.xact.commit_lsn);
        self.log_exception(
            &Logged {
                operation: "SUB_DISABLE",
                ..Logged::default()
            },
            &format!(
                "disabling subscription {} due to exception(s) - skip_lsn = {lsn}: {failure}",
                self.sub.name
            ),
        );
        self.end_batch();
        catalog::subscriptions::disable(self.sub_id);
        // SAFETY: commits without advancing the origin.
        unsafe {
            pg_sys::replorigin_session_origin_lsn = 0;
            pg_sys::PopActiveSnapshot();
            pg_sys::CommitTransactionCommand();
        }
        self.in_xact = false;
        log!(
            "subscription \"{}\": disabled after an error in remote transaction {} (commit LSN {lsn})",
            self.sub.name,
            self.xact.xid
        );
        self.stop = true;
    }

    /// One row of `spock.exception_log`.
    fn log_exception(&self, logged: &Logged, error: &str) {
        static COUNTER: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
        let counter = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        self.end_batch();
        catalog::logs::exception(catalog::logs::Exception {
            remote_origin: self.sub.provider,
            remote_commit_ts: self.xact.commit_time,
            command_counter: counter,
            remote_xid: self.xact.xid,
            table_schema: logged.schema.as_deref(),
            table_name: logged.table.as_deref(),
            operation: logged.operation,
            remote_old_tup: logged.old.as_deref(),
            remote_new_tup: logged.new.as_deref(),
            error_message: error,
        });
    }

    /// The COMMIT of a transaction named by `sub_alter_skiplsn`: it counts as done.
    pub(super) fn skip_commit(&mut self, end_lsn: u64) {
        BackgroundWorker::transaction(|| {
            // SAFETY: the origin advances past the skipped transaction.
            unsafe { pg_sys::replorigin_session_origin_lsn = end_lsn };
            catalog::subscriptions::clear_skip_lsn(self.sub_id);
        });
        warning!(
            "skip-LSN of subscription \"{}\" cleared: remote transaction {} at LSN {} was skipped",
            self.sub.name,
            self.xact.xid,
            format_lsn(self.xact.commit_lsn)
        );
    }
}

/// What the exception log says about a change.
#[derive(Default)]
struct Logged {
    operation: &'static str,
    schema: Option<String>,
    table: Option<String>,
    old: Option<String>,
    new: Option<String>,
}

impl Logged {
    fn of(applier: &Applier, message: &Message) -> Logged {
        let (operation, relid, old, new): (_, u32, Option<&[Value]>, Option<&[Value]>) =
            match message {
                Message::Insert { relid, new } => ("INSERT", *relid, None, Some(new)),
                Message::Update { relid, old, new } => {
                    ("UPDATE", *relid, old.as_deref(), Some(new))
                }
                Message::Delete { relid, old } => ("DELETE", *relid, Some(old), None),
                Message::Truncate { relids, .. } => {
                    ("TRUNCATE", relids.first().copied().unwrap_or(0), None, None)
                }
                _ => ("", 0, None, None),
            };
        match applier.relations.get(&relid) {
            Some(rel) => Logged {
                operation,
                schema: Some(rel.nspname.clone()),
                table: Some(rel.relname.clone()),
                old: old.map(|v| rel.tuple_json(&super::binary::as_text_for_report(rel, v))),
                new: new.map(|v| rel.tuple_json(&super::binary::as_text_for_report(rel, v))),
            },
            None => Logged {
                operation,
                schema: applier.described.get(&relid).map(|d| d.0.clone()),
                table: applier.described.get(&relid).map(|d| d.1.clone()),
                ..Logged::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Kept;

    #[test]
    fn kept_messages_come_back_in_order_and_the_buffer_is_reused() {
        let mut kept = Kept::default();
        for m in [&b"B1"[..], b"", b"I-row", b"C"] {
            kept.push(m);
        }
        let back: Vec<&[u8]> = kept.iter().collect();
        assert_eq!(back, [&b"B1"[..], b"", b"I-row", b"C"]);
        let capacity = kept.bytes.capacity();
        let kept = kept.reused();
        assert_eq!(kept.iter().count(), 0);
        assert_eq!(kept.bytes.capacity(), capacity);
        let mut big = Kept::default();
        big.push(&vec![0; Kept::REUSE_UP_TO + 1]);
        assert_eq!(big.reused().bytes.capacity(), 0);
    }
}
