//! Connections from this node to another one (the provider), through PostgreSQL's walreceiver
//! library: a logical replication connection that also runs SQL. Every call through the
//! library's function pointers is guarded.

use crate::compat;
use pgrx::pg_sys;
use pgrx::pg_sys::submodules::ffi::pg_guard_ffi_boundary;
use std::ffi::{CStr, CString};

pub struct Remote {
    conn: *mut pg_sys::WalReceiverConn,
}

fn functions() -> &'static pg_sys::WalReceiverFunctionsType {
    // SAFETY: loading a core library; WalReceiverFunctions is set by its _PG_init.
    unsafe {
        if pg_sys::WalReceiverFunctions.is_null() {
            pg_sys::load_file(c"libpqwalreceiver".as_ptr(), false);
        }
        &*pg_sys::WalReceiverFunctions
    }
}

/// Checks the syntax of a connection string; ERRORs like core (the string is not echoed).
pub fn check_dsn(dsn: &str) {
    functions();
    let dsn = CString::new(dsn).unwrap_or_default();
    // SAFETY: guarded call through the library's function pointer.
    unsafe { pg_guard_ffi_boundary(|| compat::walrcv_check_conninfo(dsn.as_ptr())) };
}

impl Remote {
    /// Connects as `application_name` = `appname`; the error is libpq's message.
    pub fn connect(dsn: &str, appname: &str) -> Result<Remote, String> {
        functions();
        let dsn =
            CString::new(dsn).map_err(|_| "connection string contains a NUL byte".to_string())?;
        let appname = CString::new(appname).map_err(|_| "bad application name".to_string())?;
        // SAFETY: guarded call through the library's function pointer.
        let conn = unsafe {
            pg_guard_ffi_boundary(|| compat::walrcv_connect(dsn.as_ptr(), appname.as_ptr()))
        };
        conn.map(|conn| Remote { conn }).map_err(|err| {
            if err.is_null() {
                "unknown error".into()
            } else {
                // SAFETY: libpq's message, a palloc'd C string.
                unsafe { CStr::from_ptr(err) }
                    .to_string_lossy()
                    .trim()
                    .to_string()
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
        let exec = functions().walrcv_exec.expect("walreceiver loaded");
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
    pub fn receive(&self) -> Received<'_> {
        let receive = functions().walrcv_receive.expect("walreceiver loaded");
        let mut buf: *mut std::ffi::c_char = std::ptr::null_mut();
        let mut fd: pg_sys::pgsocket = -1;
        // SAFETY: guarded call; the buffer stays valid until the next receive.
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
        let send = functions().walrcv_send.expect("walreceiver loaded");
        // SAFETY: guarded call with a valid buffer.
        unsafe {
            pg_guard_ffi_boundary(|| send(self.conn, bytes.as_ptr().cast(), bytes.len() as i32))
        };
    }
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
        let disconnect = functions().walrcv_disconnect.expect("walreceiver loaded");
        // SAFETY: closing the connection opened in `connect`.
        unsafe { pg_guard_ffi_boundary(|| disconnect(self.conn)) };
    }
}
