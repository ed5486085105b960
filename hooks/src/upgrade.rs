//! Databases whose spock objects another build created: the automatic update that brings them
//! to this library's objects, and what upstream's C symbols do until it has run.
//!
//! A database created by upstream's C spock declares its functions against upstream's symbols
//! (`upstream_symbols`) and lacks objects ours needs. An older version is updated along the
//! update chain (`spock--A--B.sql`); a 5.0.5 of upstream's, whose version number already is
//! ours, through the hidden version [`CATCH_UP_VERSION`] (`spock--5.0.5--5.0.5-1.sql` turns
//! upstream's objects into ours, `spock--5.0.5-1--5.0.5.sql` is empty). The manager worker of a
//! node runs that at start and retries while it fails; a superuser calling any of upstream's
//! functions before then runs it in their own transaction and the call goes on to our definition.

use pgrx::prelude::*;
use pgrx::{PgTryBuilder, pg_sys};
use std::ffi::CStr;

/// The version between upstream's 5.0.5 objects and ours.
pub const CATCH_UP_VERSION: &str = "5.0.5-1";

/// The commands that bring spock as installed (`installed`: its `extversion`, `None` when the
/// extension is absent; `upstream_decls`: whether a function of it is still declared against
/// one of upstream's C symbols) to this library's objects, in order.
pub fn catch_up_steps(installed: Option<&str>, upstream_decls: bool) -> Vec<String> {
    let to = |v: &str| format!("ALTER EXTENSION spock UPDATE TO '{v}'");
    match installed {
        None => Vec::new(),
        Some(v) if v != crate::SPOCK_VERSION => vec![to(crate::SPOCK_VERSION)],
        Some(_) if upstream_decls => vec![to(CATCH_UP_VERSION), to(crate::SPOCK_VERSION)],
        Some(_) => Vec::new(),
    }
}

/// The installed version and whether any member function names an upstream symbol.
fn installed_state() -> (Option<String>, bool) {
    let symbols = crate::upstream_symbols::SYMBOLS
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(",");
    // One row, whether or not the extension exists.
    let sql = format!(
        "SELECT (SELECT e.extversion::text FROM pg_catalog.pg_extension e WHERE e.extname = 'spock'), \
                EXISTS (SELECT 1 FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_proc p ON p.oid = d.objid \
                         WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass \
                           AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass \
                           AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension e \
                                              WHERE e.extname = 'spock') \
                           AND d.deptype = 'e' \
                           AND p.prolang = (SELECT l.oid FROM pg_catalog.pg_language l \
                                             WHERE l.lanname = 'c') \
                           AND p.prosrc = ANY (ARRAY[{symbols}]))"
    );
    // Read-only (pgrx's `Spi::get_two` would give the manager's transaction an xid).
    match Spi::connect(|c| c.select(&sql, None, &[])?.first().get_two::<String, bool>()) {
        Ok((version, decls)) => (version, decls.unwrap_or(false)),
        Err(e) => crate::raise(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string()),
    }
}

/// Whether this database is a spock node (has a local node row).
fn is_node() -> bool {
    crate::catalog::read_one::<bool>("SELECT EXISTS (SELECT 1 FROM spock.local_node)", &[])
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Runs the steps this database needs in the current transaction; returns them.
fn catch_up(only_nodes: bool) -> Vec<String> {
    let (installed, decls) = installed_state();
    let steps = catch_up_steps(installed.as_deref(), decls);
    if steps.is_empty() || (only_nodes && !is_node()) {
        return Vec::new();
    }
    for step in &steps {
        Spi::run(step).unwrap_or_else(|e| {
            crate::raise(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("{step}: {e}"),
            )
        });
    }
    steps
}

/// The manager's automatic update, in a transaction of its own. A failure is returned (the
/// transaction keeps nothing of it), so the manager can report it and try again later instead
/// of exiting and being restarted into the same failure.
pub fn catch_up_in_worker() -> Result<Vec<String>, String> {
    pgrx::bgworkers::BackgroundWorker::transaction(|| {
        // SAFETY: a subtransaction of the worker's transaction, ended on both paths, after
        // which the memory context and resource owner in use before it are restored.
        unsafe {
            let context = pg_sys::CurrentMemoryContext;
            let owner = pg_sys::CurrentResourceOwner;
            pg_sys::BeginInternalSubTransaction(std::ptr::null());
            let result = PgTryBuilder::new(|| Ok(catch_up(true)))
                .catch_others(|e| Err(message(&e)))
                .execute();
            if result.is_ok() {
                pg_sys::ReleaseCurrentSubTransaction();
            } else {
                pg_sys::RollbackAndReleaseCurrentSubTransaction();
            }
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
            result
        }
    })
}

fn message(e: &pg_sys::panic::CaughtError) -> String {
    use pg_sys::panic::CaughtError;
    match e {
        CaughtError::PostgresError(r)
        | CaughtError::ErrorReport(r)
        | CaughtError::RustPanic { ereport: r, .. } => r.message().to_string(),
    }
}

/// A function declared against one of upstream's symbols: brings the database's spock objects
/// up to this library's (which replaces the declaration), then hands the call, and any later
/// call through the same `FmgrInfo`, to the new definition of the same SQL function.
///
/// # Safety
/// `fcinfo` is the function manager's valid call frame.
pub unsafe fn forward(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: fmgr passes a frame whose flinfo describes the function being called.
    let flinfo = unsafe { &mut *(*fcinfo).flinfo };
    let (identity, symbol) = Spi::get_two_with_args::<String, String>(
        "SELECT p.oid::pg_catalog.regprocedure::text, p.prosrc FROM pg_catalog.pg_proc p \
          WHERE p.oid = $1",
        &[flinfo.fn_oid.into()],
    )
    .ok()
    .and_then(|(i, s)| i.zip(s))
    .unwrap_or_else(|| {
        crate::raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_FUNCTION,
            format!(
                "function with OID {} does not exist",
                flinfo.fn_oid.to_u32()
            ),
        )
    });
    // SAFETY: reads the session's user.
    if !unsafe { pg_sys::superuser() } {
        ereport!(
            PgLogLevel::ERROR,
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!(
                "function {identity} is declared against C symbol \"{symbol}\" of another spock build"
            ),
            "This database's spock objects predate this library. The spock manager of a node \
             brings them up to date at start; a superuser's call of any spock function does so too."
        );
    }
    if catch_up(false).is_empty() {
        crate::raise(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!(
                "function {identity} is declared against C symbol \"{symbol}\", which this \
                 spock library serves only for functions of the spock extension"
            ),
        );
    }
    let target = Spi::get_one_with_args::<pg_sys::Oid>(
        "SELECT pg_catalog.to_regprocedure($1)::oid",
        &[identity.as_str().into()],
    )
    .ok()
    .flatten()
    .filter(|&oid| oid != flinfo.fn_oid)
    .unwrap_or_else(|| {
        crate::raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_FUNCTION,
            format!("spock was brought up to date, but it has no function {identity} any more"),
        )
    });
    let mut info = pg_sys::FmgrInfo::default();
    // SAFETY: fills `info` for an existing function in the caller's FmgrInfo context.
    unsafe { pg_sys::fmgr_info_cxt(target, &mut info, flinfo.fn_mcxt) };
    info.fn_expr = flinfo.fn_expr;
    *flinfo = info;
    // SAFETY: the frame holds `nargs` arguments.
    let null_arg = unsafe {
        let frame = &*fcinfo;
        frame
            .args
            .as_slice(frame.nargs as usize)
            .iter()
            .any(|a| a.isnull)
    };
    if info.fn_strict && !info.fn_retset && null_arg {
        // SAFETY: as above.
        unsafe { (*fcinfo).isnull = true };
        return pg_sys::Datum::from(0);
    }
    let call = info.fn_addr.unwrap_or_else(|| {
        crate::raise(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("function {identity} has no entry point"),
        )
    });
    // SAFETY: the frame now describes the new definition, whose arguments are the same.
    unsafe { call(fcinfo) }
}

/// `spock_version()`.
///
/// # Safety
/// `fcinfo` is the function manager's valid call frame.
pub unsafe fn version(_fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    crate::SPOCK_VERSION
        .into_datum()
        .unwrap_or(pg_sys::Datum::from(0))
}

/// `spock_version_num()`.
///
/// # Safety
/// As [`version`].
pub unsafe fn version_num(_fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    pg_sys::Datum::from(crate::SPOCK_VERSION_NUM)
}

/// `spock_max_proto_version()`.
///
/// # Safety
/// As [`version`].
pub unsafe fn max_proto_version(_fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    pg_sys::Datum::from(spock_proto::MAX_PROTO_VERSION as i32)
}

/// `spock_min_proto_version()`.
///
/// # Safety
/// As [`version`].
pub unsafe fn min_proto_version(_fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    pg_sys::Datum::from(spock_proto::MIN_PROTO_VERSION as i32)
}

/// `spock_gen_slot_name(dbname name, provider_node name, subscription name) RETURNS name`
/// (declared STRICT, so no argument is NULL).
///
/// # Safety
/// As [`version`], with three `name` arguments.
pub unsafe fn gen_slot_name(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    let arg = |i: usize| -> String {
        // SAFETY: argument `i` of the frame is a non-NULL `name` datum.
        unsafe {
            let datum = (*fcinfo).args.as_slice(3)[i].value;
            CStr::from_ptr(datum.cast_mut_ptr::<pg_sys::NameData>().cast())
                .to_string_lossy()
                .into_owned()
        }
    };
    let slot = crate::naming::slot_name(&arg(0), &arg(1), &arg(2));
    // SAFETY: a zeroed NAMEDATALEN block in the current context, filled (truncated) by
    // namestrcpy from a NUL-free string.
    unsafe {
        let name = pg_sys::palloc0(pg_sys::NAMEDATALEN as usize).cast::<pg_sys::NameData>();
        let text = std::ffi::CString::new(slot).unwrap_or_default();
        pg_sys::namestrcpy(name, text.as_ptr());
        pg_sys::Datum::from(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_state_has_its_steps() {
        let to = |v: &str| format!("ALTER EXTENSION spock UPDATE TO '{v}'");
        assert!(catch_up_steps(None, true).is_empty());
        assert!(catch_up_steps(Some("5.0.5"), false).is_empty());
        assert_eq!(
            catch_up_steps(Some("5.0.5"), true),
            [to("5.0.5-1"), to("5.0.5")]
        );
        assert_eq!(catch_up_steps(Some("5.0.2"), true), [to("5.0.5")]);
        assert_eq!(catch_up_steps(Some("4.0.10"), false), [to("5.0.5")]);
        assert_eq!(catch_up_steps(Some("5.0.5-1"), false), [to("5.0.5")]);
    }
}
