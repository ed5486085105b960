//! Connections from this node to another one (the provider), through PostgreSQL's walreceiver
//! library: a logical replication connection that also runs SQL. Every call through the
//! library's function pointers is guarded.

use crate::compat;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::{CaughtError, ErrorReport};
use pgrx::pg_sys::submodules::ffi::pg_guard_ffi_boundary;
use pgrx::prelude::*;
use std::ffi::{CStr, CString};
use std::ops::Range;

pub struct Remote {
    conn: *mut pg_sys::WalReceiverConn,
    /// What `wait_readable` waits on, made at its first call.
    waiter: Option<Waiter>,
}

/// A wait event set for the latch, postmaster death and the connection's socket `fd`.
struct Waiter {
    fd: pg_sys::pgsocket,
    set: *mut pg_sys::WaitEventSet,
}

fn functions() -> &'static pg_sys::WalReceiverFunctionsType {
    // SAFETY: loading a core library; WalReceiverFunctions is set by its _PG_init and then
    // never changes.
    unsafe {
        if pg_sys::WalReceiverFunctions.is_null() {
            pg_sys::load_file(c"libpqwalreceiver".as_ptr(), false);
        }
        match pg_sys::WalReceiverFunctions.as_ref() {
            Some(f) => f,
            None => crate::raise(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                "libpqwalreceiver did not register its functions".into(),
            ),
        }
    }
}

/// A function of the walreceiver library that this server lacks (ERROR rather than a panic).
fn missing(name: &str) -> ! {
    crate::raise(
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        format!("libpqwalreceiver does not provide {name}"),
    )
}

/// Checks the syntax of a connection string; ERRORs like core, with any password masked
/// (libpq's message may quote a malformed URI whole).
pub fn check_dsn(dsn: &str) {
    functions();
    let Ok(text) = CString::new(dsn) else {
        crate::raise(
            PgSqlErrorCode::ERRCODE_SYNTAX_ERROR,
            "invalid connection string syntax: the string contains a NUL byte".into(),
        );
    };
    PgTryBuilder::new(|| {
        // SAFETY: guarded call through the library's function pointer.
        unsafe { pg_guard_ffi_boundary(|| compat::walrcv_check_conninfo(text.as_ptr())) }
    })
    .catch_others(|caught| {
        // Re-raised at once (the parse has no side effects to undo), scrubbed.
        let report = match &caught {
            CaughtError::PostgresError(r)
            | CaughtError::ErrorReport(r)
            | CaughtError::RustPanic { ereport: r, .. } => r,
        };
        let mut scrubbed = ErrorReport::new(
            report.sql_error_code(),
            scrub(report.message(), dsn),
            "check_dsn",
        );
        if let Some(detail) = report.detail() {
            scrubbed = scrubbed.set_detail(scrub(detail, dsn));
        }
        if let Some(hint) = report.hint() {
            scrubbed = scrubbed.set_hint(scrub(hint, dsn));
        }
        scrubbed.report(PgLogLevel::ERROR);
    })
    .execute();
}

/// What a secret is replaced with wherever spock shows a connection string or a message
/// about one.
pub const MASK: &str = "********";

/// Connection options whose values are secrets.
const SECRET_KEYS: [&str; 2] = ["password", "sslpassword"];

/// Where the secrets of a connection string are: byte ranges of secret values, plus the start
/// of a tail libpq could not parse (masked whole: it may hold a password).
fn secret_spans(dsn: &str) -> (Vec<Range<usize>>, Option<usize>) {
    if let Some(rest) = ["postgresql://", "postgres://"]
        .iter()
        .find_map(|p| dsn.strip_prefix(p))
    {
        return (uri_spans(dsn, dsn.len() - rest.len()), None);
    }
    keyword_spans(dsn)
}

/// `key=value` form, tokenised as libpq's `conninfo_parse` does.
fn keyword_spans(dsn: &str) -> (Vec<Range<usize>>, Option<usize>) {
    let (pairs, tail) = keyword_pairs(dsn);
    let spans = pairs
        .into_iter()
        .filter(|(key, _)| SECRET_KEYS.contains(key))
        .map(|(_, value)| value)
        .collect();
    (spans, tail)
}

/// The keywords of a `key=value` string with the byte range of each value as written, plus
/// the start of a tail libpq could not parse.
fn keyword_pairs(dsn: &str) -> (Vec<(&str, Range<usize>)>, Option<usize>) {
    let b = dsn.as_bytes();
    let mut pairs = Vec::new();
    let mut i = 0;
    let skip_space = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    loop {
        i = skip_space(i);
        if i == b.len() {
            return (pairs, None);
        }
        let key_start = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &dsn[key_start..i];
        i = skip_space(i);
        if i == b.len() || b[i] != b'=' {
            return (pairs, Some(key_start));
        }
        i = skip_space(i + 1);
        let value_start = i;
        if b.get(i) == Some(&b'\'') {
            i += 1;
            loop {
                match b.get(i) {
                    None => return (pairs, Some(value_start)),
                    Some(b'\\') => i += 2,
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
        } else {
            while i < b.len() && !b[i].is_ascii_whitespace() {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
        }
        i = i.min(b.len());
        pairs.push((key, value_start..i));
    }
}

/// `dsn` with the server setting `name` = `value` added to its `options` (those it has
/// already are kept): the value reaches the server in the startup packet, not in a statement.
pub fn with_setting(dsn: &str, name: &str, value: &str) -> String {
    // `options` is split at whitespace, a backslash escaping the next character.
    let mut arg = format!("-c {name}=");
    for c in value.chars() {
        if c == '\\' || c.is_whitespace() {
            arg.push('\\');
        }
        arg.push(c);
    }
    if let Some(rest) = ["postgresql://", "postgres://"]
        .iter()
        .find_map(|p| dsn.strip_prefix(p))
    {
        // URI form: a later `options` parameter replaces an earlier one.
        let start = dsn.len() - rest.len();
        let query = dsn[start..].find('?').map(|q| start + q + 1);
        let existing = query
            .into_iter()
            .flat_map(|q| dsn[q..].split('&'))
            .filter_map(|p| p.split_once('='))
            .filter(|(k, _)| percent_decode(k) == "options")
            .map(|(_, v)| percent_decode(v))
            .next_back();
        let options = existing.map_or(arg.clone(), |e| format!("{e} {arg}"));
        let encoded: String = options
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let sep = if query.is_some() { '&' } else { '?' };
        return format!("{dsn}{sep}options={encoded}");
    }
    // Keyword form: a later keyword replaces an earlier one.
    let (pairs, _) = keyword_pairs(dsn);
    let existing = pairs
        .iter()
        .filter(|(k, _)| *k == "options")
        .map(|(_, v)| unquote(&dsn[v.clone()]))
        .next_back();
    let options = existing.map_or(arg.clone(), |e| format!("{e} {arg}"));
    let quoted = options.replace('\\', "\\\\").replace('\'', "\\'");
    format!("{dsn} options='{quoted}'")
}

/// URI form: the password of `user:password@` and `password=` query parameters, found as
/// libpq's `conninfo_uri_parse_options` finds them.
fn uri_spans(dsn: &str, start: usize) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let rest = &dsn[start..];
    let mut query_from = start;
    // The user part ends at the first '@' that comes before any '/'.
    if let Some(at) = rest
        .find(['@', '/'])
        .filter(|&p| rest.as_bytes()[p] == b'@')
    {
        if let Some(colon) = rest[..at].find(':') {
            spans.push(start + colon + 1..start + at);
        }
        query_from = start + at + 1;
    }
    if let Some(q) = dsn[query_from..].find('?') {
        let mut pos = query_from + q + 1;
        for param in dsn[pos..].split('&') {
            if let Some(eq) = param.find('=')
                && SECRET_KEYS.contains(&percent_decode(&param[..eq]).as_str())
            {
                spans.push(pos + eq + 1..pos + param.len());
            }
            pos += param.len() + 1;
        }
    }
    spans
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A keyword value as libpq reads it: without its quotes, backslash escapes resolved.
fn unquote(value: &str) -> String {
    let inner = value
        .strip_prefix('\'')
        .map(|v| v.strip_suffix('\'').unwrap_or(v))
        .unwrap_or(value);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// `dsn` with every password masked, for anything shown to a user or written to the log.
pub fn mask_dsn(dsn: &str) -> String {
    let (spans, tail) = secret_spans(dsn);
    let mut out = String::with_capacity(dsn.len());
    let mut pos = 0;
    for span in spans {
        out.push_str(&dsn[pos..span.start]);
        out.push_str(MASK);
        pos = span.end;
    }
    match tail {
        Some(t) if t >= pos => {
            out.push_str(&dsn[pos..t]);
            out.push_str(MASK);
        }
        _ => out.push_str(&dsn[pos..]),
    }
    out
}

/// `message` (an error about connecting with `dsn`) without the secrets of `dsn`: the string
/// itself is masked, then every password as written and as decoded.
pub fn scrub(message: &str, dsn: &str) -> String {
    if dsn.is_empty() {
        return message.to_string();
    }
    let mut out = message.replace(dsn, &mask_dsn(dsn));
    let (spans, tail) = secret_spans(dsn);
    let mut secrets: Vec<String> = Vec::new();
    for span in spans {
        let raw = &dsn[span];
        secrets.extend([raw.to_string(), unquote(raw), percent_decode(raw)]);
    }
    if let Some(t) = tail {
        secrets.push(dsn[t..].trim().to_string());
    }
    // Longest first, so a secret containing another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret.as_str(), MASK);
    }
    out
}

impl Remote {
    /// Connects as `application_name` = `appname`; the error is libpq's message with the
    /// secrets of `dsn` masked (callers log it and show it to users).
    pub fn connect(dsn: &str, appname: &str) -> Result<Remote, String> {
        functions();
        let text =
            CString::new(dsn).map_err(|_| "connection string contains a NUL byte".to_string())?;
        let appname = CString::new(appname).map_err(|_| "bad application name".to_string())?;
        close_orphans();
        watch_orphans();
        // The connection's state lives in TopMemoryContext: a connection dropped while an
        // error unwinds is closed later (see `Drop`), after the error's memory contexts are
        // gone.
        // SAFETY: guarded call through the library's function pointer, in a context that
        // outlives every caller.
        let conn = unsafe {
            pgrx::PgMemoryContexts::TopMemoryContext.switch_to(|_| {
                pg_guard_ffi_boundary(|| compat::walrcv_connect(text.as_ptr(), appname.as_ptr()))
            })
        };
        conn.map(|conn| Remote { conn, waiter: None })
            .map_err(|err| {
                if err.is_null() {
                    "unknown error".into()
                } else {
                    // SAFETY: libpq's message, a C string palloc'd in TopMemoryContext above and
                    // freed here once copied.
                    unsafe {
                        let message = CStr::from_ptr(err).to_string_lossy().into_owned();
                        pg_sys::pfree(err.cast());
                        scrub(message.trim(), dsn)
                    }
                }
            })
    }

    /// Runs `sql` and returns its result if the status is `want`, else the error text. The
    /// caller clears the result.
    fn exec(
        &self,
        sql: &str,
        types: &[pg_sys::Oid],
        want: pg_sys::WalRcvExecStatus::Type,
    ) -> Result<*mut pg_sys::WalRcvExecResult, String> {
        let exec = functions()
            .walrcv_exec
            .unwrap_or_else(|| missing("walrcv_exec"));
        let sql = CString::new(sql).map_err(|_| "query contains a NUL byte".to_string())?;
        let n = types.len() as i32;
        // SAFETY: guarded call through the library's function pointer; on error the result is
        // cleared here.
        unsafe {
            let res = pg_guard_ffi_boundary(|| exec(self.conn, sql.as_ptr(), n, types.as_ptr()));
            if (*res).status == want {
                return Ok(res);
            }
            let err = if (*res).err.is_null() {
                format!("unexpected result status {}", (*res).status)
            } else {
                CStr::from_ptr((*res).err)
                    .to_string_lossy()
                    .trim()
                    .to_string()
            };
            pg_sys::walrcv_clear_result(res);
            Err(err)
        }
    }

    /// Runs a command that returns no rows (BEGIN, COMMIT, SET …).
    pub fn command(&self, sql: &str) -> Result<(), String> {
        let res = self.exec(sql, &[], pg_sys::WalRcvExecStatus::WALRCV_OK_COMMAND)?;
        // SAFETY: the result returned by `exec`.
        unsafe { pg_sys::walrcv_clear_result(res) };
        Ok(())
    }

    /// Runs a query and returns its rows as text (NULL as `None`); the error is the remote one.
    pub fn query(&self, sql: &str, ncols: usize) -> Result<Vec<Vec<Option<String>>>, String> {
        let types = vec![pg_sys::TEXTOID; ncols];
        let res = self.exec(sql, &types, pg_sys::WalRcvExecStatus::WALRCV_OK_TUPLES)?;
        // SAFETY: reading the result's tuplestore; slot and result are released before returning.
        unsafe {
            let slot =
                pg_sys::MakeSingleTupleTableSlot((*res).tupledesc, &pg_sys::TTSOpsMinimalTuple);
            let mut rows = Vec::new();
            while pg_sys::tuplestore_gettupleslot((*res).tuplestore, true, false, slot) {
                let mut row = Vec::with_capacity(ncols);
                for col in 1..=ncols as i32 {
                    let mut isnull = false;
                    let d = pg_sys::slot_getattr(slot, col, &mut isnull);
                    row.push((!isnull).then(|| {
                        let text = pg_sys::text_to_cstring(d.cast_mut_ptr());
                        CStr::from_ptr(text).to_string_lossy().into_owned()
                    }));
                }
                rows.push(row);
            }
            pg_sys::ExecDropSingleTupleTableSlot(slot);
            pg_sys::walrcv_clear_result(res);
            Ok(rows)
        }
    }

    /// Runs a command that switches the connection to COPY BOTH (START_REPLICATION).
    /// Whether a replication slot of this name exists on the remote node.
    pub fn slot_exists(&self, slot: &str) -> Result<bool, String> {
        let rows = self.query(
            &format!(
                "SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = '{}'",
                slot.replace('\'', "''")
            ),
            1,
        )?;
        Ok(!rows.is_empty())
    }

    pub fn start_copy_both(&self, command: &str) -> Result<(), String> {
        let res = self.exec(command, &[], pg_sys::WalRcvExecStatus::WALRCV_OK_COPY_BOTH)?;
        // SAFETY: the result returned by `exec`.
        unsafe { pg_sys::walrcv_clear_result(res) };
        Ok(())
    }

    /// Runs a `COPY … TO STDOUT`; its rows then come from `receive` until it reports the end.
    pub fn start_copy_out(&self, command: &str) -> Result<(), String> {
        let res = self.exec(command, &[], pg_sys::WalRcvExecStatus::WALRCV_OK_COPY_OUT)?;
        // SAFETY: the result returned by `exec`.
        unsafe { pg_sys::walrcv_clear_result(res) };
        Ok(())
    }

    /// The next CopyData payload, if one is buffered. ERRORs when the connection breaks.
    pub fn receive(&mut self) -> Received<'_> {
        let receive = functions()
            .walrcv_receive
            .unwrap_or_else(|| missing("walrcv_receive"));
        let mut buf: *mut std::ffi::c_char = std::ptr::null_mut();
        let mut fd: pg_sys::pgsocket = -1;
        // SAFETY: guarded call; the buffer stays valid until the next call on the connection,
        // which the mutable borrow of the returned data rules out.
        unsafe {
            let len = pg_guard_ffi_boundary(|| receive(self.conn, &mut buf, &mut fd));
            match len {
                n if n > 0 => {
                    Received::Data(std::slice::from_raw_parts(buf.cast::<u8>(), n as usize))
                }
                0 => Received::WouldBlock(fd),
                _ => Received::End,
            }
        }
    }

    pub fn send(&self, bytes: &[u8]) {
        let send = functions()
            .walrcv_send
            .unwrap_or_else(|| missing("walrcv_send"));
        // SAFETY: guarded call with a valid buffer.
        unsafe {
            pg_guard_ffi_boundary(|| send(self.conn, bytes.as_ptr().cast(), bytes.len() as i32))
        };
    }
}

impl Remote {
    /// Waits until the socket `receive` named (`Received::WouldBlock`) is readable, the
    /// process latch is set, or a second has passed; exits if the postmaster dies.
    ///
    /// One wait event set serves every wait on the connection. `WaitLatchOrSocket` builds
    /// and tears down an epoll set at each wait (five system calls), which with small
    /// transactions arriving one message at a time is a large part of applying them.
    pub fn wait_readable(&mut self, fd: pg_sys::pgsocket) {
        if let Some(old) = self.waiter.take_if(|w| w.fd != fd) {
            // SAFETY: a set made below and used by nothing else.
            unsafe { pg_sys::FreeWaitEventSet(old.set) };
        }
        let set = match &self.waiter {
            Some(w) => w.set,
            None => {
                let set = new_wait_set(fd);
                self.waiter = Some(Waiter { fd, set });
                set
            }
        };
        // SAFETY: waiting on the set made above; the latch is ours.
        unsafe {
            let mut event = pg_sys::WaitEvent::default();
            pg_sys::WaitEventSetWait(set, 1000, &mut event, 1, pg_sys::PG_WAIT_EXTENSION);
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
    }
}

/// A session-lifetime wait event set for the latch, postmaster death and `fd`; freed again
/// if adding an event fails, so no half-made set is ever kept.
fn new_wait_set(fd: pg_sys::pgsocket) -> *mut pg_sys::WaitEventSet {
    // SAFETY: a set owned by no resource owner, in TopMemoryContext.
    let set = unsafe { compat::wait_event_set(3) };
    PgTryBuilder::new(|| {
        let none = pg_sys::PGINVALID_SOCKET;
        let (no_latch, no_data) = (std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: events added to the set just made; the latch is ours.
        unsafe {
            let latch = pg_sys::MyLatch;
            pg_sys::AddWaitEventToSet(set, pg_sys::WL_LATCH_SET, none, latch, no_data);
            let death = pg_sys::WL_EXIT_ON_PM_DEATH;
            pg_sys::AddWaitEventToSet(set, death, none, no_latch, no_data);
            let readable = pg_sys::WL_SOCKET_READABLE;
            pg_sys::AddWaitEventToSet(set, readable, fd, no_latch, no_data);
        }
        set
    })
    .catch_others(|e| {
        // SAFETY: the set made above, used by nothing else.
        unsafe { pg_sys::FreeWaitEventSet(set) };
        e.rethrow()
    })
    .execute()
}

/// What a read from a streaming connection gave.
pub enum Received<'a> {
    Data(&'a [u8]),
    /// Nothing buffered; wait for the socket.
    WouldBlock(pg_sys::pgsocket),
    /// The sender ended the stream.
    End,
}

impl Drop for Remote {
    fn drop(&mut self) {
        // While an error unwinds, nothing calls into PostgreSQL: the connection is closed at
        // the end of the transaction (or by the next connect).
        let set = self.waiter.take().map_or(std::ptr::null_mut(), |w| w.set);
        if std::thread::panicking() {
            ORPHANS.with(|o| o.borrow_mut().push((self.conn, set)));
            return;
        }
        disconnect(self.conn, set);
    }
}

thread_local! {
    /// Connections (and their wait sets, if any) whose `Remote` was dropped while an error
    /// unwound, not yet closed.
    #[allow(clippy::type_complexity)]
    static ORPHANS: std::cell::RefCell<Vec<(*mut pg_sys::WalReceiverConn, *mut pg_sys::WaitEventSet)>> =
        const { std::cell::RefCell::new(Vec::new()) };
    static WATCHING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Closes a connection opened by `connect` (libpq's PQfinish and a pfree in
/// TopMemoryContext: neither raises an error), and frees its wait set (a close and a pfree).
fn disconnect(conn: *mut pg_sys::WalReceiverConn, set: *mut pg_sys::WaitEventSet) {
    // SAFETY: the library was loaded by `connect` (so the table is there), and the connection
    // is one it opened, closed once; the set, if any, is the connection's, freed once.
    unsafe {
        if !set.is_null() {
            pg_sys::FreeWaitEventSet(set);
        }
        if let Some(disconnect) = pg_sys::WalReceiverFunctions
            .as_ref()
            .and_then(|f| f.walrcv_disconnect)
        {
            pg_guard_ffi_boundary(|| disconnect(conn));
        }
    }
}

fn close_orphans() {
    for (conn, set) in ORPHANS.with(|o| std::mem::take(&mut *o.borrow_mut())) {
        disconnect(conn, set);
    }
}

/// Has orphaned connections closed at every transaction's end (registered once per backend).
fn watch_orphans() {
    if WATCHING.with(|w| w.replace(true)) {
        return;
    }
    #[pg_guard]
    unsafe extern "C-unwind" fn at_end(
        event: pg_sys::XactEvent::Type,
        _arg: *mut std::ffi::c_void,
    ) {
        if event == pg_sys::XactEvent::XACT_EVENT_ABORT
            || event == pg_sys::XactEvent::XACT_EVENT_COMMIT
        {
            close_orphans();
        }
    }
    // SAFETY: registering a callback that lives as long as the library.
    unsafe { pg_sys::RegisterXactCallback(Some(at_end), std::ptr::null_mut()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &str = "Secr3t-pw";

    #[test]
    fn settings_go_into_options() {
        assert_eq!(
            with_setting("host=h dbname=d", "a.b", "x y\\z'"),
            "host=h dbname=d options='-c a.b=x\\\\ y\\\\\\\\z\\''"
        );
        assert_eq!(
            with_setting("host=h options='-c work_mem=1MB'", "a.b", "v"),
            "host=h options='-c work_mem=1MB' options='-c work_mem=1MB -c a.b=v'"
        );
        assert_eq!(
            with_setting("postgresql://u@h/d", "a.b", "p q"),
            "postgresql://u@h/d?options=-c%20a.b%3Dp%5C%20q"
        );
        assert_eq!(
            with_setting("postgresql://h/d?options=-c%20x%3D1", "a.b", "v"),
            "postgresql://h/d?options=-c%20x%3D1&options=-c%20x%3D1%20-c%20a.b%3Dv"
        );
    }

    #[test]
    fn keyword_passwords_are_masked() {
        assert_eq!(
            mask_dsn("host=h password=Secr3t-pw dbname=x"),
            "host=h password=******** dbname=x"
        );
        assert_eq!(
            mask_dsn("password = Secr3t-pw port=5432"),
            "password = ******** port=5432"
        );
        assert_eq!(
            mask_dsn(r"host=h password='a b\'c' sslpassword=k user=u"),
            "host=h password=******** sslpassword=******** user=u"
        );
        assert_eq!(
            mask_dsn(r"password=x\ y host=h"),
            "password=******** host=h"
        );
        // Several values (libpq takes the last): all masked.
        assert_eq!(
            mask_dsn("password=a password=b"),
            "password=******** password=********"
        );
        // Nothing secret: unchanged.
        let plain = "host=127.0.0.1 port=5432 dbname=postgres user=postgres";
        assert_eq!(mask_dsn(plain), plain);
        assert_eq!(mask_dsn(""), "");
    }

    #[test]
    fn unparsable_tails_are_masked_whole() {
        assert_eq!(
            mask_dsn("host=h password='Secr3t-pw"),
            "host=h password=********"
        );
        assert_eq!(mask_dsn("host=h Secr3t-pw"), "host=h ********");
        assert_eq!(mask_dsn("host=h password"), "host=h ********");
    }

    #[test]
    fn uri_passwords_are_masked() {
        assert_eq!(
            mask_dsn("postgresql://u:Secr3t-pw@h:5432/db"),
            "postgresql://u:********@h:5432/db"
        );
        assert_eq!(
            mask_dsn("postgres://u:p%40ss@h1,h2/db?sslmode=disable"),
            "postgres://u:********@h1,h2/db?sslmode=disable"
        );
        assert_eq!(
            mask_dsn("postgresql://h/db?user=u&password=Secr3t-pw&sslmode=disable"),
            "postgresql://h/db?user=u&password=********&sslmode=disable"
        );
        assert_eq!(
            mask_dsn("postgresql://u:a@h/db?pass%77ord=b"),
            "postgresql://u:********@h/db?pass%77ord=********"
        );
        for plain in [
            "postgresql://u@h/db",
            "postgresql://h:5432/db?user=u",
            "postgresql:///db",
        ] {
            assert_eq!(mask_dsn(plain), plain);
        }
    }

    #[test]
    fn messages_lose_the_dsn_and_its_passwords() {
        let uri = format!("postgresql://u:{PW}@[::1]x/db");
        let message =
            format!("invalid connection string syntax: unexpected character \"x\": \"{uri}\"");
        let got = scrub(&message, &uri);
        assert!(!got.contains(PW), "{got}");
        assert!(got.contains("postgresql://u:********@[::1]x/db"), "{got}");

        // As written (quoted, escaped) and as libpq read it.
        let dsn = r"host=h password='Secr\'3t pw'";
        let got = scrub("failed for Secr'3t pw and 'Secr\\'3t pw'", dsn);
        assert!(!got.contains("Secr"), "{got}");

        // Percent-encoded in a URI: both forms.
        let dsn = "postgresql://u:p%40ss-word@h/db";
        let got = scrub("p@ss-word or p%40ss-word", dsn);
        assert_eq!(got, "******** or ********");

        // Nothing secret: untouched.
        let message = "connection to server at \"h\" failed";
        assert_eq!(scrub(message, "host=h"), message);
        assert_eq!(scrub(message, ""), message);
    }
}
