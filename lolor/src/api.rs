//! The SQL-callable functions that take over core's large-object functions. They are plain V1
//! C functions (`lolor_<name>`, the symbols upstream uses) declared by the hand-written install
//! script; each one only unpacks its arguments and calls `storage` / `descriptors`.

use crate::logic::{self, INV_READ, INV_WRITE};
use crate::{compat, descriptors, storage};
use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::prelude::*;
use std::ffi::CStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// Declares a V1 function `$name` (with its `pg_finfo_$name` record) guarded by pgrx.
macro_rules! sql_function {
    ($finfo:ident, $name:ident, |$fcinfo:ident| { $($body:tt)* }) => {
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static pg_sys::Pg_finfo_record {
            const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }

        #[unsafe(no_mangle)]
        #[pg_guard]
        pub unsafe extern "C-unwind" fn $name(fcinfo: pg_sys::FunctionCallInfo) -> Datum {
            let body = |$fcinfo: pg_sys::FunctionCallInfo| -> Datum { $($body)* };
            body(fcinfo)
        }
    };
}
pub(crate) use sql_function;

fn arg(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> Datum {
    // SAFETY: fmgr passes a valid fcinfo; every function is STRICT, so arguments are not null.
    unsafe { pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, n) }
}

fn arg_oid(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> Oid {
    Oid::from(arg(fcinfo, n).value() as u32)
}

fn arg_i32(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> i32 {
    arg(fcinfo, n).value() as i32
}

fn arg_i64(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> i64 {
    arg(fcinfo, n).value() as i64
}

/// A bytea/text argument's bytes (detoasted; lives in the call's memory context).
fn arg_bytes<'a>(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> &'a [u8] {
    // SAFETY: the argument is a varlena datum.
    unsafe {
        let v = pg_sys::pg_detoast_datum_packed(arg(fcinfo, n).cast_mut_ptr());
        pgrx::varlena::varlena_to_byte_slice(v)
    }
}

/// A palloc'd bytea of `len` bytes and its (writable) contents.
fn new_bytea<'a>(len: usize) -> (*mut pg_sys::varlena, &'a mut [u8]) {
    // SAFETY: palloc fails (ERROR) rather than returning null; the slice covers the body.
    unsafe {
        let p = pg_sys::palloc(len + pg_sys::VARHDRSZ) as *mut pg_sys::varlena;
        pgrx::varlena::set_varsize_4b(p, (len + pg_sys::VARHDRSZ) as i32);
        let body = std::slice::from_raw_parts_mut(p.cast::<u8>().add(pg_sys::VARHDRSZ), len);
        (p, body)
    }
}

fn shrink_bytea(p: *mut pg_sys::varlena, len: usize) {
    // SAFETY: shrinking the header of a bytea made by `new_bytea`.
    unsafe { pgrx::varlena::set_varsize_4b(p, (len + pg_sys::VARHDRSZ) as i32) }
}

fn prevent_if_read_only(what: &CStr) {
    // SAFETY: raises "cannot execute %s in a read-only transaction" when appropriate.
    unsafe { pg_sys::PreventCommandIfReadOnly(what.as_ptr()) }
}

fn not_opened_for(fd: i32, what: &str) -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        format!("large object descriptor {fd} was not opened for {what}")
    );
}

// Descriptors ----------------------------------------------------------------------------------

sql_function!(pg_finfo_lolor_lo_open, lolor_lo_open, |fcinfo| {
    let id = arg_oid(fcinfo, 0);
    let mode = arg_i32(fcinfo, 1);
    if mode & INV_WRITE != 0 {
        prevent_if_read_only(c"lo_open(INV_WRITE)");
    }
    Datum::from(descriptors::add(storage::open(id, mode)))
});

sql_function!(pg_finfo_lolor_lo_close, lolor_lo_close, |fcinfo| {
    descriptors::close(arg_i32(fcinfo, 0));
    Datum::from(0i32)
});

sql_function!(pg_finfo_lolor_loread, lolor_loread, |fcinfo| {
    let fd = arg_i32(fcinfo, 0);
    let len = arg_i32(fcinfo, 1).max(0) as usize;
    let (result, buf) = new_bytea(len);
    let n = descriptors::with(fd, |h| {
        if !h.mode.read {
            not_opened_for(fd, "reading");
        }
        storage::read(h, buf)
    });
    shrink_bytea(result, n);
    Datum::from(result)
});

sql_function!(pg_finfo_lolor_lowrite, lolor_lowrite, |fcinfo| {
    prevent_if_read_only(c"lowrite()");
    let fd = arg_i32(fcinfo, 0);
    let data = arg_bytes(fcinfo, 1);
    let n = descriptors::with(fd, |h| {
        if !h.mode.write {
            not_opened_for(fd, "writing");
        }
        storage::write(h, data)
    });
    Datum::from(n as i32)
});

fn out_of_range(what: &str, fd: i32) -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
        format!("{what} result out of range for large-object descriptor {fd}")
    );
}

sql_function!(pg_finfo_lolor_lo_lseek, lolor_lo_lseek, |fcinfo| {
    let fd = arg_i32(fcinfo, 0);
    let offset = arg_i32(fcinfo, 1) as i64;
    let whence = arg_i32(fcinfo, 2);
    let pos = descriptors::with(fd, |h| storage::seek(h, offset, whence));
    match i32::try_from(pos) {
        Ok(p) => Datum::from(p),
        Err(_) => out_of_range("lo_lseek", fd),
    }
});

sql_function!(pg_finfo_lolor_lo_lseek64, lolor_lo_lseek64, |fcinfo| {
    let fd = arg_i32(fcinfo, 0);
    let offset = arg_i64(fcinfo, 1);
    let whence = arg_i32(fcinfo, 2);
    Datum::from(descriptors::with(fd, |h| storage::seek(h, offset, whence)))
});

sql_function!(pg_finfo_lolor_lo_tell, lolor_lo_tell, |fcinfo| {
    let fd = arg_i32(fcinfo, 0);
    let pos = descriptors::with(fd, |h| h.offset);
    match i32::try_from(pos) {
        Ok(p) => Datum::from(p),
        Err(_) => out_of_range("lo_tell", fd),
    }
});

sql_function!(pg_finfo_lolor_lo_tell64, lolor_lo_tell64, |fcinfo| {
    let fd = arg_i32(fcinfo, 0);
    Datum::from(descriptors::with(fd, |h| h.offset))
});

fn truncate(fd: i32, len: i64) {
    descriptors::with(fd, |h| {
        if !h.mode.write {
            not_opened_for(fd, "writing");
        }
        storage::truncate(h, len)
    })
}

sql_function!(pg_finfo_lolor_lo_truncate, lolor_lo_truncate, |fcinfo| {
    prevent_if_read_only(c"lo_truncate()");
    truncate(arg_i32(fcinfo, 0), arg_i32(fcinfo, 1) as i64);
    Datum::from(0i32)
});

sql_function!(
    pg_finfo_lolor_lo_truncate64,
    lolor_lo_truncate64,
    |fcinfo| {
        prevent_if_read_only(c"lo_truncate64()");
        truncate(arg_i32(fcinfo, 0), arg_i64(fcinfo, 1));
        Datum::from(0i32)
    }
);

// Creating and removing ---------------------------------------------------------------------

sql_function!(pg_finfo_lolor_lo_creat, lolor_lo_creat, |_fcinfo| {
    prevent_if_read_only(c"lo_creat()");
    Datum::from(storage::create(pg_sys::InvalidOid))
});

sql_function!(pg_finfo_lolor_lo_create, lolor_lo_create, |fcinfo| {
    prevent_if_read_only(c"lo_create()");
    Datum::from(storage::create(arg_oid(fcinfo, 0)))
});

/// `lo_unlink`: ownership check as core's, then closes this backend's descriptors on the object
/// and deletes it.
pub fn unlink(id: Oid) {
    if storage::privileges_apply() {
        match storage::owner_of(id) {
            None => {
                ereport!(
                    ERROR,
                    PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                    compat::lo_ownercheck_missing_message(id.to_u32())
                );
            }
            // SAFETY: role membership lookup.
            Some(owner) if !unsafe { pg_sys::has_privs_of_role(pg_sys::GetUserId(), owner) } => {
                ereport!(
                    ERROR,
                    PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                    format!("must be owner of large object {}", id.to_u32())
                );
            }
            Some(_) => {}
        }
    }
    descriptors::close_object(id);
    storage::remove(id);
}

sql_function!(pg_finfo_lolor_lo_unlink, lolor_lo_unlink, |fcinfo| {
    prevent_if_read_only(c"lo_unlink()");
    unlink(arg_oid(fcinfo, 0));
    Datum::from(1i32)
});

// Whole-object and fragment access ---------------------------------------------------------------

fn get_fragment(id: Oid, offset: i64, nbytes: Option<i32>) -> Datum {
    let mut h = storage::open(id, INV_READ);
    let size = storage::seek(&mut h, 0, 2);
    let len = logic::fragment_len(size, offset, nbytes);
    if len > logic::MAX_READ_RESULT {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            "large object read request is too large"
        );
    }
    let (result, buf) = new_bytea(len as usize);
    storage::seek(&mut h, offset, 0);
    let n = storage::read(&mut h, buf);
    shrink_bytea(result, n);
    Datum::from(result)
}

sql_function!(pg_finfo_lolor_lo_get, lolor_lo_get, |fcinfo| {
    get_fragment(arg_oid(fcinfo, 0), 0, None)
});

sql_function!(
    pg_finfo_lolor_lo_get_fragment,
    lolor_lo_get_fragment,
    |fcinfo| {
        let nbytes = arg_i32(fcinfo, 2);
        if nbytes < 0 {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                "requested length cannot be negative"
            );
        }
        get_fragment(arg_oid(fcinfo, 0), arg_i64(fcinfo, 1), Some(nbytes))
    }
);

sql_function!(
    pg_finfo_lolor_lo_from_bytea,
    lolor_lo_from_bytea,
    |fcinfo| {
        prevent_if_read_only(c"lo_from_bytea()");
        let id = storage::create(arg_oid(fcinfo, 0));
        let mut h = storage::open(id, INV_WRITE);
        storage::write(&mut h, arg_bytes(fcinfo, 1));
        Datum::from(id)
    }
);

sql_function!(pg_finfo_lolor_lo_put, lolor_lo_put, |fcinfo| {
    prevent_if_read_only(c"lo_put()");
    let mut h = storage::open(arg_oid(fcinfo, 0), INV_WRITE);
    storage::seek(&mut h, arg_i64(fcinfo, 1), 0);
    storage::write(&mut h, arg_bytes(fcinfo, 2));
    pgrx::fcinfo::pg_return_void()
});

// Server files --------------------------------------------------------------------------------

unsafe extern "C" {
    /// libc's umask (mode_t is 32 bits on Linux); cannot fail, so no guard is needed.
    fn umask(mask: u32) -> u32;
}

/// Refuses server-file access unless the current user is a superuser or has the privileges of
/// `role` (core's rule for server files), whatever EXECUTE grants exist on the function.
fn require_server_file_role(fcinfo: pg_sys::FunctionCallInfo, role: u32, action: &str) {
    // SAFETY: role membership lookup; has_privs_of_role is true for superusers.
    if unsafe { pg_sys::has_privs_of_role(pg_sys::GetUserId(), Oid::from(role)) } {
        return;
    }
    let name = function_name(
        fcinfo,
        if role == pg_sys::ROLE_PG_READ_SERVER_FILES {
            "lo_import"
        } else {
            "lo_export"
        },
    );
    let role_name = if role == pg_sys::ROLE_PG_READ_SERVER_FILES {
        "pg_read_server_files"
    } else {
        "pg_write_server_files"
    };
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        format!("permission denied for function {name}"),
        format!(
            "Only roles with privileges of the \"{role_name}\" role may {action} server files."
        )
    );
}

/// The SQL name the function was called by (lo_import, or lolor_lo_import when disabled).
fn function_name(fcinfo: pg_sys::FunctionCallInfo, default: &str) -> String {
    // SAFETY: fmgr sets flinfo for SQL calls; get_func_name returns a palloc'd name or null.
    unsafe {
        let flinfo = (*fcinfo).flinfo;
        if flinfo.is_null() {
            return default.into();
        }
        let name = pg_sys::get_func_name((*flinfo).fn_oid);
        if name.is_null() {
            default.into()
        } else {
            CStr::from_ptr(name).to_string_lossy().into_owned()
        }
    }
}

fn file_error(err: &std::io::Error, what: &str, path: &str) -> ! {
    use PgSqlErrorCode as E;
    use logic::FileErrorClass as C;
    let code = match logic::classify_errno(err.raw_os_error().unwrap_or(0)) {
        C::InsufficientPrivilege => E::ERRCODE_INSUFFICIENT_PRIVILEGE,
        C::UndefinedFile => E::ERRCODE_UNDEFINED_FILE,
        C::DuplicateFile => E::ERRCODE_DUPLICATE_FILE,
        C::WrongObjectType => E::ERRCODE_WRONG_OBJECT_TYPE,
        C::DiskFull => E::ERRCODE_DISK_FULL,
        C::InsufficientResources => E::ERRCODE_INSUFFICIENT_RESOURCES,
        C::IoError => E::ERRCODE_IO_ERROR,
        C::ObjectInUse => E::ERRCODE_OBJECT_IN_USE,
        C::Internal => E::ERRCODE_INTERNAL_ERROR,
    };
    ereport!(
        ERROR,
        code,
        format!("{what} \"{path}\": {}", logic::strerror_text(err))
    );
}

fn import(fcinfo: pg_sys::FunctionCallInfo, id: Oid) -> Datum {
    prevent_if_read_only(c"lo_import()");
    require_server_file_role(fcinfo, pg_sys::ROLE_PG_READ_SERVER_FILES, "read");
    let raw = arg_bytes(fcinfo, 0);
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(raw));
    let shown = String::from_utf8_lossy(raw);
    let mut file = std::fs::File::open(&path)
        .unwrap_or_else(|e| file_error(&e, "could not open server file", &shown));
    let id = storage::create(id);
    let mut h = storage::open(id, INV_WRITE);
    let mut buf = vec![0u8; logic::FILE_CHUNK];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                storage::write(&mut h, &buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => file_error(&e, "could not read server file", &shown),
        }
    }
    Datum::from(id)
}

sql_function!(pg_finfo_lolor_lo_import, lolor_lo_import, |fcinfo| {
    import(fcinfo, pg_sys::InvalidOid)
});

sql_function!(
    pg_finfo_lolor_lo_import_with_oid,
    lolor_lo_import_with_oid,
    |fcinfo| { import(fcinfo, arg_oid(fcinfo, 1)) }
);

sql_function!(pg_finfo_lolor_lo_export, lolor_lo_export, |fcinfo| {
    require_server_file_role(fcinfo, pg_sys::ROLE_PG_WRITE_SERVER_FILES, "write");
    let mut h = storage::open(arg_oid(fcinfo, 0), INV_READ);
    let raw = arg_bytes(fcinfo, 1);
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(raw));
    let shown = String::from_utf8_lossy(raw);
    // Like core: umask 022 instead of the backend's 077, file mode 0644.
    // SAFETY: umask only swaps the process's mask; restored right after the open.
    let old_mask = unsafe { umask(0o022) };
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&path);
    // SAFETY: restores the process's file mode mask saved above.
    unsafe { umask(old_mask) };
    let mut file =
        opened.unwrap_or_else(|e| file_error(&e, "could not create server file", &shown));
    let mut buf = vec![0u8; logic::FILE_CHUNK];
    loop {
        let n = storage::read(&mut h, &mut buf);
        if n == 0 {
            break;
        }
        if let Err(e) = file.write_all(&buf[..n]) {
            file_error(&e, "could not write server file", &shown);
        }
    }
    if let Err(e) = file.flush() {
        file_error(&e, "could not close file", &shown);
    }
    Datum::from(1i32)
});
