//! A small hand-written binding of libpq (the kernel's own, linked by build.rs): connections
//! follow every libpq convention (PGPASSFILE, service files, sslmode, PG* variables) because
//! libpq itself parses them. Results are copied out into owned rows at once.

use crate::output::Rows;
use anyhow::{Context, Result, bail};
use std::{
    ffi::{CStr, CString, c_char, c_int, c_void},
    ptr,
};

#[repr(C)]
struct PGconn {
    _private: [u8; 0],
}

#[repr(C)]
struct PGresult {
    _private: [u8; 0],
}

type Oid = u32;
type NoticeProcessor = extern "C" fn(arg: *mut c_void, message: *const c_char);

const CONNECTION_OK: c_int = 0;
const PGRES_COMMAND_OK: c_int = 1;
const PGRES_TUPLES_OK: c_int = 2;
const PG_DIAG_SQLSTATE: c_int = b'C' as c_int;
const PG_DIAG_MESSAGE_PRIMARY: c_int = b'M' as c_int;
const PG_DIAG_MESSAGE_DETAIL: c_int = b'D' as c_int;
const PG_DIAG_MESSAGE_HINT: c_int = b'H' as c_int;

unsafe extern "C" {
    fn PQconnectdb(conninfo: *const c_char) -> *mut PGconn;
    fn PQstatus(conn: *const PGconn) -> c_int;
    fn PQerrorMessage(conn: *const PGconn) -> *const c_char;
    fn PQfinish(conn: *mut PGconn);
    fn PQserverVersion(conn: *const PGconn) -> c_int;
    fn PQsetNoticeProcessor(
        conn: *mut PGconn,
        proc_: NoticeProcessor,
        arg: *mut c_void,
    ) -> NoticeProcessor;
    fn PQexec(conn: *mut PGconn, query: *const c_char) -> *mut PGresult;
    fn PQexecParams(
        conn: *mut PGconn,
        command: *const c_char,
        n_params: c_int,
        param_types: *const Oid,
        param_values: *const *const c_char,
        param_lengths: *const c_int,
        param_formats: *const c_int,
        result_format: c_int,
    ) -> *mut PGresult;
    fn PQresultStatus(res: *const PGresult) -> c_int;
    fn PQresultErrorField(res: *const PGresult, fieldcode: c_int) -> *const c_char;
    fn PQresultErrorMessage(res: *const PGresult) -> *const c_char;
    fn PQntuples(res: *const PGresult) -> c_int;
    fn PQnfields(res: *const PGresult) -> c_int;
    fn PQfname(res: *const PGresult, field_num: c_int) -> *const c_char;
    fn PQgetvalue(res: *const PGresult, tup_num: c_int, field_num: c_int) -> *const c_char;
    fn PQgetisnull(res: *const PGresult, tup_num: c_int, field_num: c_int) -> c_int;
    fn PQclear(res: *mut PGresult);
}

/// A C string libpq owns (or null) as an owned Rust string.
fn text(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: libpq returns NUL-terminated strings valid until the owning object is freed; we
    // copy before that.
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// Server notices (WARNING, NOTICE) go through our logger, at warning level, naming the node.
extern "C" fn notice(arg: *mut c_void, message: *const c_char) {
    // SAFETY: `arg` is the boxed label `Conn` keeps alive as long as the connection.
    let label = unsafe { &*(arg as *const String) };
    if let Some(m) = text(message) {
        crate::output::warn(&format!("{label}: {}", m.trim_end()));
    }
}

/// Session settings of every spockctrl connection: values as text are then the same on every
/// node whatever its configuration (ISO dates in UTC, shortest exact floats, hex bytea, plain
/// money), and parsed back alike.
pub const SESSION_SETTINGS: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; \
     SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET bytea_output = 'hex'; \
     SET lc_monetary = 'C'";

/// One open connection, used by one thread at a time.
pub struct Conn {
    raw: *mut PGconn,
    /// Names the node in notices and errors. Boxed: the notice callback keeps a pointer to the
    /// String itself, which must not move when the Conn does.
    #[allow(clippy::box_collection)]
    label: Box<String>,
}

// SAFETY: libpq connections may move between threads as long as only one uses them at a time,
// which `&mut self` on every call guarantees.
unsafe impl Send for Conn {}

impl Conn {
    /// Opens a connection; `label` (a node name) prefixes errors. The error never contains the
    /// connection string (it may hold a password), only libpq's own message.
    pub fn connect(conninfo: &str, label: &str) -> Result<Conn> {
        let c = CString::new(conninfo)?;
        // SAFETY: `c` is a valid C string for the duration of the call.
        let raw = unsafe { PQconnectdb(c.as_ptr()) };
        if raw.is_null() {
            bail!("{label}: out of memory opening a connection");
        }
        let mut conn = Conn {
            raw,
            label: Box::new(label.to_string()),
        };
        // SAFETY: `raw` is a connection object from PQconnectdb.
        if unsafe { PQstatus(conn.raw) } != CONNECTION_OK {
            // SAFETY: as above; the message is copied before PQfinish (in Drop).
            let msg = text(unsafe { PQerrorMessage(conn.raw) }).unwrap_or_default();
            bail!("cannot connect to node {label}: {}", one_line(&msg));
        }
        let arg = &*conn.label as *const String as *mut c_void;
        // SAFETY: the label box lives as long as the connection (dropped after PQfinish).
        unsafe { PQsetNoticeProcessor(conn.raw, notice, arg) };
        // Values spockctrl compares across nodes (table-diff's row texts and keys) are printed
        // by each server, in its session's settings: pin every setting that changes a value's
        // text, so that nodes configured differently (another time zone, DateStyle…) print
        // equal values alike. A SET after connecting rather than libpq's `options`: that would
        // replace the user's PGOPTIONS or service-file options instead of adding to them.
        conn.exec(SESSION_SETTINGS)
            .with_context(|| format!("{label}: setting the session up"))?;
        crate::output::debug(&format!(
            "{label}: connected (server {})",
            conn.server_version()
        ));
        Ok(conn)
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The server's version number (170011 for 17.11).
    pub fn server_version(&self) -> i32 {
        // SAFETY: `raw` is an open connection.
        unsafe { PQserverVersion(self.raw) }
    }

    /// Runs one statement with text parameters (`None` is NULL) and returns its rows.
    pub fn query(&mut self, sql: &str, params: &[Option<&str>]) -> Result<Rows> {
        // Parameters may be DSNs: never log a password.
        crate::output::debug(&mask_password(&format!("{}: {sql} {params:?}", self.label)));
        let c = CString::new(sql)?;
        let owned: Vec<Option<CString>> = params
            .iter()
            .map(|p| p.map(CString::new).transpose())
            .collect::<Result<_, _>>()?;
        let ptrs: Vec<*const c_char> = owned
            .iter()
            .map(|p| p.as_ref().map_or(ptr::null(), |s| s.as_ptr()))
            .collect();
        // SAFETY: every pointer is valid for the call; null types/lengths/formats mean "infer,
        // text".
        let res = unsafe {
            PQexecParams(
                self.raw,
                c.as_ptr(),
                ptrs.len() as c_int,
                ptr::null(),
                ptrs.as_ptr(),
                ptr::null(),
                ptr::null(),
                0,
            )
        };
        self.collect(res)
    }

    /// Runs a script of one or more statements (no parameters); the rows of the last one.
    pub fn exec(&mut self, sql: &str) -> Result<Rows> {
        crate::output::debug(&mask_password(&format!("{}: {sql}", self.label)));
        let c = CString::new(sql)?;
        // SAFETY: `c` is valid for the call.
        let res = unsafe { PQexec(self.raw, c.as_ptr()) };
        self.collect(res)
    }

    /// The first value of the first row (`None` for NULL or no rows).
    pub fn value(&mut self, sql: &str, params: &[Option<&str>]) -> Result<Option<String>> {
        let rows = self.query(sql, params)?;
        Ok(rows
            .rows
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten()))
    }

    fn collect(&mut self, res: *mut PGresult) -> Result<Rows> {
        if res.is_null() {
            // SAFETY: `raw` is an open connection.
            let msg = text(unsafe { PQerrorMessage(self.raw) }).unwrap_or_default();
            bail!("{}: {}", self.label, one_line(&msg));
        }
        let guard = ResultGuard(res);
        // SAFETY: `res` is a live result until the guard drops.
        let status = unsafe { PQresultStatus(res) };
        if status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK {
            let field = |code| {
                // SAFETY: as above.
                text(unsafe { PQresultErrorField(res, code) })
            };
            let primary = field(PG_DIAG_MESSAGE_PRIMARY)
                // SAFETY: as above.
                .or_else(|| text(unsafe { PQresultErrorMessage(res) }))
                .unwrap_or_else(|| "unknown error".into());
            let mut message = format!("{}: {}", self.label, primary.trim_end());
            if let Some(d) = field(PG_DIAG_MESSAGE_DETAIL) {
                message.push_str(&format!(" (DETAIL: {d})"));
            }
            if let Some(h) = field(PG_DIAG_MESSAGE_HINT) {
                message.push_str(&format!(" (HINT: {h})"));
            }
            if let Some(state) = field(PG_DIAG_SQLSTATE) {
                crate::output::debug(&format!("{}: SQLSTATE {state}", self.label));
            }
            bail!("{message}");
        }
        let mut rows = Rows::default();
        // SAFETY: `res` is live; indexes stay within PQnfields/PQntuples.
        unsafe {
            let (n, f) = (PQntuples(res), PQnfields(res));
            for j in 0..f {
                rows.columns.push(text(PQfname(res, j)).unwrap_or_default());
            }
            for i in 0..n {
                let row = (0..f)
                    .map(|j| {
                        if PQgetisnull(res, i, j) != 0 {
                            None
                        } else {
                            text(PQgetvalue(res, i, j))
                        }
                    })
                    .collect();
                rows.rows.push(row);
            }
        }
        drop(guard);
        Ok(rows)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // SAFETY: `raw` came from PQconnectdb and is finished exactly once.
        unsafe { PQfinish(self.raw) };
    }
}

struct ResultGuard(*mut PGresult);

impl Drop for ResultGuard {
    fn drop(&mut self) {
        // SAFETY: the result is cleared exactly once, after its last use.
        unsafe { PQclear(self.0) };
    }
}

/// libpq's multi-line messages on one line.
fn one_line(msg: &str) -> String {
    msg.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quotes a value for a libpq connection string.
pub fn conninfo_value(v: &str) -> String {
    if !v.is_empty() && !v.contains([' ', '\'', '\\', '\t', '\n']) {
        return v.to_string();
    }
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A connection string with every password value replaced, for messages and output.
pub fn mask_password(dsn: &str) -> String {
    // Works on `key=value` connection strings; a URI's `:password@` is masked too.
    let mut out = String::new();
    let mut rest = dsn;
    while let Some(i) = rest.find("password") {
        let (head, tail) = rest.split_at(i);
        out.push_str(head);
        out.push_str("password");
        let tail = &tail["password".len()..];
        let t = tail.trim_start();
        if let Some(after_eq) = t.strip_prefix('=') {
            out.push_str("=********");
            let v = after_eq.trim_start();
            rest = if let Some(q) = v.strip_prefix('\'') {
                let mut end = q.len();
                let mut esc = false;
                for (k, ch) in q.char_indices() {
                    if esc {
                        esc = false;
                    } else if ch == '\\' {
                        esc = true;
                    } else if ch == '\'' {
                        end = k + 1;
                        break;
                    }
                }
                &q[end.min(q.len())..]
            } else {
                let end = v.find(char::is_whitespace).unwrap_or(v.len());
                &v[end..]
            };
        } else {
            rest = tail;
        }
    }
    out.push_str(rest);
    mask_uri_password(&out)
}

fn mask_uri_password(dsn: &str) -> String {
    let Some(scheme_end) = dsn.find("://") else {
        return dsn.to_string();
    };
    let auth_start = scheme_end + 3;
    let Some(at) = dsn[auth_start..].find('@') else {
        return dsn.to_string();
    };
    let auth = &dsn[auth_start..auth_start + at];
    match auth.find(':') {
        Some(colon) => format!(
            "{}{}:********{}",
            &dsn[..auth_start],
            &auth[..colon],
            &dsn[auth_start + at..]
        ),
        None => dsn.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_survive_masking() {
        assert_eq!(
            mask_password("host=a password=secret user=b"),
            "host=a password=******** user=b"
        );
        assert_eq!(
            mask_password("host=a password = 'se cr\\'et' user=b"),
            "host=a password=******** user=b"
        );
        assert_eq!(
            mask_password("postgresql://u:secret@h:5432/db"),
            "postgresql://u:********@h:5432/db"
        );
        assert_eq!(mask_password("host=a user=b"), "host=a user=b");
    }

    #[test]
    fn conninfo_values_are_quoted_when_needed() {
        assert_eq!(conninfo_value("plain"), "plain");
        assert_eq!(conninfo_value(""), "''");
        assert_eq!(conninfo_value("it's a"), "'it\\'s a'");
    }
}
