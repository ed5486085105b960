//! Growing and shrinking a live cluster ("Z0DAN", upstream's zero-downtime add node):
//! `spock.add_node` and `spock.remove_node`, run on the node joining or leaving. Every node,
//! this one included, is driven through its own libpq connection (its DSN), so each step
//! commits where it runs, the other nodes' workers see it at once, and a failure can be undone
//! step by step; the calling session itself writes nothing.

mod add;
mod remove;

use crate::remote::{self, Remote};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// A step that failed: where, why, and the SQLSTATE to report it with.
pub(crate) struct Failure {
    pub step: String,
    pub message: String,
    pub code: PgSqlErrorCode,
}

impl Failure {
    fn new(step: &str, message: impl Into<String>) -> Failure {
        Failure {
            step: step.to_string(),
            message: message.into(),
            code: PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        }
    }

    fn code(mut self, code: PgSqlErrorCode) -> Failure {
        self.code = code;
        self
    }
}

/// A node reached through its DSN.
pub(crate) struct Conn {
    pub name: String,
    pub dsn: String,
    remote: Remote,
}

impl Conn {
    /// Connects to node `name`; the error names the node, never the DSN's secrets.
    fn open(name: &str, dsn: &str, step: &str) -> Result<Conn, Failure> {
        remote::check_dsn(dsn);
        Remote::connect(dsn, "spock_zodan")
            .map(|remote| Conn {
                name: name.to_string(),
                dsn: dsn.to_string(),
                remote,
            })
            .map_err(|e| {
                Failure::new(step, format!("could not connect to node \"{name}\": {e}"))
                    .code(PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE)
            })
    }

    /// Runs a query returning `ncols` text columns.
    fn rows(
        &self,
        step: &str,
        sql: &str,
        ncols: usize,
    ) -> Result<Vec<Vec<Option<String>>>, Failure> {
        self.remote
            .query(sql, ncols)
            .map_err(|e| self.failed(step, e))
    }

    /// The first column of the first row, if any.
    fn value(&self, step: &str, sql: &str) -> Result<Option<String>, Failure> {
        Ok(self
            .rows(step, sql, 1)?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten()))
    }

    /// Runs a statement whose result does not matter (also usable after the calling
    /// transaction failed: nothing is converted locally). `sql` is an expression `PERFORM`
    /// accepts; it carries values from callers and from other nodes' catalogs (names, row
    /// filters), so the block's dollar quote is one they cannot contain (see `dollar_tag`).
    fn run(&self, step: &str, sql: &str) -> Result<(), Failure> {
        self.run_block(step, &format!("BEGIN PERFORM {sql}; END"))
    }

    /// Runs a PL/pgSQL block (`DECLARE … BEGIN … END`).
    fn run_block(&self, step: &str, block: &str) -> Result<(), Failure> {
        let tag = dollar_tag(block).map_err(|m| Failure::new(step, m))?;
        self.remote
            .command(&format!("DO {tag} {block} {tag}"))
            .map_err(|e| self.failed(step, e))
    }

    /// Runs `sql` (like `run`) on a connection of its own to this node whose setting
    /// `spock_zodan.dsn` is `dsn`; `sql` reads it with `current_setting('spock_zodan.dsn')`.
    /// The connection string then travels in the connection's startup packet, never in a
    /// statement's text: statements show in `pg_stat_activity` and in the server log
    /// (`log_statement`, `log_min_error_statement`), with any password they contain.
    fn run_with_dsn(&self, step: &str, sql: &str, dsn: &str) -> Result<(), Failure> {
        let conninfo = remote::with_setting(&self.dsn, DSN_SETTING, dsn);
        let conn = Remote::connect(&conninfo, "spock_zodan").map_err(|e| {
            Failure::new(
                step,
                format!(
                    "could not connect to node \"{}\": {}",
                    self.name,
                    remote::scrub(&remote::scrub(&e, dsn), &self.dsn)
                ),
            )
            .code(PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE)
        })?;
        let block = format!("BEGIN PERFORM {sql}; END");
        let tag = dollar_tag(&block).map_err(|m| Failure::new(step, m))?;
        conn.command(&format!("DO {tag} {block} {tag}"))
            .map_err(|e| {
                let mut f = self.failed(step, e);
                f.message = remote::scrub(&f.message, dsn);
                f
            })
    }

    fn failed(&self, step: &str, e: String) -> Failure {
        let lost = [
            "server closed the connection",
            "could not receive data",
            "could not send data",
            "no connection to the server",
            "terminating connection",
        ]
        .iter()
        .any(|m| e.contains(m));
        Failure::new(
            step,
            format!(
                "on node \"{}\": {}",
                self.name,
                remote::scrub(&e, &self.dsn)
            ),
        )
        .code(if lost {
            PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE
        } else {
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
        })
    }

    /// Whether the node still answers.
    fn alive(&self) -> bool {
        self.remote.query("SELECT 1::text", 1).is_ok()
    }

    /// `SELECT spock.sync_event()` here: a point in this node's stream.
    fn sync_event(&self, step: &str) -> Result<String, Failure> {
        self.value(step, "SELECT spock.sync_event()::text")?
            .ok_or_else(|| {
                Failure::new(
                    step,
                    format!("node \"{}\" returned no sync event", self.name),
                )
            })
    }

    /// Waits until this node has applied `origin`'s changes up to `lsn` (its spock.progress),
    /// watching that every node in `watch` still answers.
    fn wait_applied(
        &self,
        step: &str,
        origin: &str,
        lsn: &str,
        watch: &[&Conn],
        timeout: Duration,
    ) -> Result<(), Failure> {
        let sql = format!(
            "SELECT coalesce(bool_or(p.remote_lsn >= {}::pg_lsn), false)::text FROM spock.progress p \
             JOIN spock.local_node l ON l.node_id = p.node_id \
             JOIN spock.node n ON n.node_id = p.remote_node_id WHERE n.node_name = {}",
            literal(lsn),
            literal(origin)
        );
        wait(step, timeout, watch, || {
            Ok(self.value(step, &sql)?.as_deref() == Some("true"))
        })
        .map_err(|f| match f {
            Some(f) => f,
            None => Failure::new(
                step,
                format!(
                    "node \"{}\" did not apply node \"{origin}\"'s changes up to {lsn} within {} s",
                    self.name,
                    timeout.as_secs()
                ),
            ),
        })
    }
}

/// Polls `done` (interruptibly) until it says yes; `Err(None)` on timeout, and a failure as
/// soon as one of `watch` stops answering. The first polls come after 5 ms, then each pause
/// is half again as long up to 200 ms: most waits (a sync event crossing one hop, a worker
/// starting) end within tens of milliseconds, and an add waits on many of them in turn.
fn wait(
    step: &str,
    timeout: Duration,
    watch: &[&Conn],
    mut done: impl FnMut() -> Result<bool, Failure>,
) -> Result<(), Option<Failure>> {
    let start = Instant::now();
    let mut last_check = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if done().map_err(Some)? {
            return Ok(());
        }
        if last_check.elapsed() >= Duration::from_secs(1) {
            last_check = Instant::now();
            if let Some(dead) = watch.iter().find(|c| !c.alive()) {
                return Err(Some(
                    Failure::new(
                        step,
                        format!("lost the connection to node \"{}\"", dead.name),
                    )
                    .code(PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE),
                ));
            }
        }
        if start.elapsed() >= timeout {
            return Err(None);
        }
        crate::apply::nap(pause);
        pause = (pause * 3 / 2).min(Duration::from_millis(200));
    }
}

/// An SQL string literal, right whatever `standard_conforming_strings` is on the node that
/// reads it (as core's `quote_literal`: with a backslash, an `E''` literal with it doubled).
pub(crate) fn literal(s: &str) -> String {
    let quoted = s.replace('\'', "''");
    if s.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// The setting through which `Conn::run_with_dsn` hands a connection string over.
pub(crate) const DSN_SETTING: &str = "spock_zodan.dsn";

/// The SQL that reads the connection string handed over by `Conn::run_with_dsn`.
pub(crate) const DSN_VALUE: &str = "pg_catalog.current_setting('spock_zodan.dsn')";

/// A dollar quote for a `DO` block of `body`, random per call: a fixed one would end early
/// at a value that contains it (a table named `x$spock$; DROP …`), and what follows would run
/// as SQL on that node. A body containing the tag is refused rather than run.
fn dollar_tag(body: &str) -> Result<String, String> {
    let mut bytes = [0u8; 8];
    // SAFETY: fills the buffer of the length given.
    let ok = unsafe { pg_sys::pg_strong_random(bytes.as_mut_ptr().cast(), bytes.len()) };
    if !ok {
        return Err("could not generate random bytes for a dollar quote".into());
    }
    let tag = format!(
        "$spock_{}$",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    if body.contains(&tag) {
        return Err("a value sent to another node contains a reserved dollar quote".into());
    }
    Ok(tag)
}

/// A subscription name for the stream from `from` to `to` (`sub_<from>_<to>`, made of the
/// characters subscription names allow, at most 63 of them).
pub(crate) fn sub_name(from: &str, to: &str) -> String {
    let clean = |s: &str| -> String {
        s.to_lowercase()
            .chars()
            .map(|c| {
                if c.is_ascii_lowercase() || c.is_ascii_digit() {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let name = format!("sub_{}_{}", clean(from), clean(to));
    name.chars().take(63).collect()
}

/// Checks that `dsn` reaches this very database (the node the procedure runs on).
fn check_is_here(conn: &Conn, step: &str, what: &str) -> Result<(), Failure> {
    let there = conn.value(
        step,
        "SELECT system_identifier::text || '/' || current_database() FROM pg_catalog.pg_control_system()",
    )?;
    let here = local_value(
        "SELECT system_identifier::text || '/' || current_database() FROM pg_catalog.pg_control_system()",
        &[],
    );
    if there.is_none() || there != here {
        return Err(Failure::new(
            step,
            format!(
                "{what} does not point to this database: spock.{} must run on that node",
                if what.starts_with("new") {
                    "add_node"
                } else {
                    "remove_node"
                }
            ),
        )
        .code(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE));
    }
    Ok(())
}

/// The first column of the first row of a read-only local query. (pgrx's `Spi::get_one`
/// would give the calling transaction an xid, and slots created on this node by the other
/// nodes' apply workers would wait for it to end.)
pub(crate) fn local_value(sql: &str, args: &[pgrx::datum::DatumWithOid]) -> Option<String> {
    crate::catalog::read_one::<String>(sql, args).ok().flatten()
}

/// Only superusers manage nodes (the procedures are also revoked from PUBLIC).
fn require_superuser(what: &str) {
    // SAFETY: a plain check of the session user's rights.
    if !unsafe { pg_sys::superuser() } {
        crate::raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("only superusers can run spock.{what}"),
        );
    }
}

/// Reports a failure as the procedure's error, without the PL/pgSQL caller's context.
fn raise_failure(what: &str, f: Failure, detail: Option<String>) -> ! {
    // SAFETY: only unlinks the context stack; whoever catches the error restores its own.
    unsafe { pg_sys::error_context_stack = std::ptr::null_mut() };
    let mut report = pgrx::pg_sys::panic::ErrorReport::new(
        f.code,
        format!("spock.{what} failed at step \"{}\": {}", f.step, f.message),
        "spock_zodan",
    );
    if let Some(detail) = detail {
        report = report.set_detail(detail);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ereport(ERROR) does not return")
}

/// `spock.add_node(...)` (the procedure's body; see `add.rs`).
#[pg_extern(sql = false)]
#[allow(clippy::too_many_arguments)]
fn spock_add_node(
    src_node_name: Option<&str>,
    src_dsn: Option<&str>,
    new_node_name: Option<&str>,
    new_node_dsn: Option<&str>,
    verb: Option<bool>,
    location: Option<&str>,
    country: Option<&str>,
    info: Option<&str>,
) {
    require_superuser("add_node");
    let required = |v: Option<&str>, name: &str| -> String {
        match v {
            Some(v) if !v.is_empty() => v.to_string(),
            _ => crate::raise(
                PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                format!("{name} must not be empty"),
            ),
        }
    };
    add::run(add::Request {
        src_name: required(src_node_name, "src_node_name"),
        src_dsn: required(src_dsn, "src_dsn"),
        new_name: required(new_node_name, "new_node_name"),
        new_dsn: required(new_node_dsn, "new_node_dsn"),
        verbose: verb.unwrap_or(false),
        location: location.map(String::from),
        country: country.map(String::from),
        info: info.map(String::from),
    });
}

/// `spock.remove_node(...)` (the procedure's body; see `remove.rs`).
#[pg_extern(sql = false)]
fn spock_remove_node(
    target_node_name: Option<&str>,
    target_node_dsn: Option<&str>,
    verbose_mode: Option<bool>,
) {
    require_superuser("remove_node");
    let (Some(name), Some(dsn)) = (target_node_name, target_node_dsn) else {
        crate::raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "target_node_name and target_node_dsn must not be NULL".into(),
        )
    };
    remove::run(name, dsn, verbose_mode.unwrap_or(true));
}

/// Says what a step did, when asked to be verbose.
fn say(verbose: bool, text: &str) {
    if verbose {
        notice!("{text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_names_are_valid() {
        assert_eq!(sub_name("n1", "n4"), "sub_n1_n4");
        assert_eq!(sub_name("East-1", "N 4"), "sub_east_1_n_4");
        assert_eq!(sub_name(&"x".repeat(40), &"y".repeat(40)).len(), 63);
    }

    #[test]
    fn literals_are_quoted() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal("a\\'b"), "E'a\\\\''b'");
        assert_eq!(literal("x$spock$"), "'x$spock$'");
    }
}
