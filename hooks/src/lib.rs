//! spock: active-active logical replication for the pgEdge kernel.
//!
//! This crate is the `spock` shared library. The same file is installed a second time as
//! `spock_output` (the logical decoding output plugin's name), so it exports both `_PG_init` and
//! `_PG_output_plugin_init`.

use pgrx::prelude::*;

#[cfg(feature = "pg15")]
use compat15 as compat;
#[cfg(feature = "pg16")]
use compat16 as compat;
#[cfg(feature = "pg17")]
use compat17 as compat;
#[cfg(feature = "pg18")]
use compat18 as compat;

mod apply;
mod catalog;
mod commit_lsn;
mod ddl;
mod depend;
mod identity;
mod kernel;
mod naming;
mod output;
mod prepared;
mod remote;
mod scratch;
mod settings;
mod stats;
mod upgrade;
mod upstream_symbols;
mod workers;
mod zodan;

pgrx::pg_module_magic!();

/// The Spock SQL API level this library implements.
pub const SPOCK_VERSION: &str = "5.0.5";
pub const SPOCK_VERSION_NUM: i32 = 50005;

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    kernel::require("spock");
    // SAFETY: read-only flag set by the postmaster while it loads preload libraries.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        ereport!(
            PgLogLevel::ERROR,
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "spock must be loaded via shared_preload_libraries",
            format!(
                "Add spock to shared_preload_libraries and restart PostgreSQL {}.",
                compat::PG_MAJOR
            ),
        );
    }
    // pgrx attaches a Rust backtrace to the DETAIL of every ERROR that crosses its boundary
    // when the server's environment asks for backtraces (RUST_BACKTRACE=1 is common in a
    // developer's shell): users must see PostgreSQL's message, not our stack. Whoever wants
    // them sets RUST_LIB_BACKTRACE=1 explicitly.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: the postmaster is single-threaded while it loads preload libraries, and
        // backends inherit the setting by fork.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    // The slot plugin is spock_output, this same library under its second name: trust that
    // name so servers whose output_plugin_libraries omits it (Pigsty's) still replicate.
    if kernel::trust_output_plugin(c"spock_output") == kernel::Trust::Unsupported {
        ereport!(
            PgLogLevel::WARNING,
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "this kernel cannot trust spock's output plugin by itself",
            format!(
                "Spock replication needs spock_output in output_plugin_libraries on this \
                 PostgreSQL {} server (pgEdge kernel capability level 5 would trust it \
                 without that).",
                compat::PG_MAJOR
            ),
        );
    }
    settings::define();
    stats::init();
    workers::init();
    ddl::install();
    depend::install();
    // SAFETY: read-only flag.
    if unsafe { !pg_sys::IsBinaryUpgrade } {
        workers::register();
    }
}

/// Raises an ERROR with an SQLSTATE (usable where a value is expected).
pub(crate) fn raise(code: PgSqlErrorCode, message: String) -> ! {
    ereport!(PgLogLevel::ERROR, code, message);
    unreachable!("ereport(ERROR) does not return")
}

/// An SQLSTATE's five characters as PostgreSQL's packed error code (`MAKE_SQLSTATE`).
fn sqlstate_code(sqlstate: &str) -> Option<i32> {
    let bytes = sqlstate.as_bytes();
    (bytes.len() == 5
        && bytes
            .iter()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()))
    .then(|| {
        bytes
            .iter()
            .enumerate()
            .map(|(i, b)| (i32::from(b.wrapping_sub(b'0')) & 0x3F) << (6 * i))
            .sum()
    })
}

/// `spock.spock_error()`: the API's errors, raised with no error context, so that a failing
/// management function shows its message (and detail and hint) and no CONTEXT lines about
/// spock's own PL/pgSQL functions, as upstream's C functions do.
#[pg_extern(sql = false)]
fn spock_error(
    sqlstate: &str,
    message: &str,
    detail: default!(Option<&str>, "NULL"),
    hint: default!(Option<&str>, "NULL"),
) {
    let code = sqlstate_code(sqlstate)
        .map_or(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, PgSqlErrorCode::from);
    let mut report =
        pgrx::pg_sys::panic::ErrorReport::new(code, message.to_string(), "spock_error");
    if let Some(detail) = detail {
        report = report.set_detail(detail);
    }
    if let Some(hint) = hint {
        report = report.set_hint(hint);
    }
    // SAFETY: the context stack is only unlinked: whoever catches the error (PL/pgSQL's
    // exception block, the top level) restores its own saved stack.
    unsafe { pg_sys::error_context_stack = std::ptr::null_mut() };
    report.report(PgLogLevel::ERROR);
}

#[pg_extern]
fn spock_version() -> &'static str {
    SPOCK_VERSION
}

#[pg_extern]
fn spock_version_num() -> i32 {
    SPOCK_VERSION_NUM
}

pgrx::extension_sql_file!("../sql/spock_catalog.sql", name = "catalog", bootstrap);
pgrx::extension_sql_file!("../sql/spock_api.sql", name = "api", finalize);

#[pg_extern(sql = false)]
fn spock_node_id(node_name: &str) -> pg_sys::Oid {
    naming::node_id(node_name).into()
}

#[pg_extern(sql = false)]
fn spock_member_id(node_id: pg_sys::Oid, member_name: &str) -> pg_sys::Oid {
    naming::member_id(node_id.to_u32(), member_name).into()
}

#[pg_extern(sql = false)]
fn spock_sub_id(subscription_name: &str) -> pg_sys::Oid {
    naming::sub_id(subscription_name).into()
}

#[pg_extern(sql = false)]
fn spock_slot_name(dbname: &str, provider_node: &str, subscription_name: &str) -> String {
    naming::slot_name(dbname, provider_node, subscription_name)
}

/// Checks a DSN's syntax, connects to it and returns `spock.node_info()` of that node as text.
#[pg_extern(sql = false)]
fn spock_remote_node_info(dsn: &str, appname: &str) -> Vec<Option<String>> {
    let remote = connect(dsn, appname);
    let rows = remote
        .query(
            "SELECT node_id::text, node_name, sysid, dbname, replication_sets, location, country, \
             info::text FROM spock.node_info()",
            8,
        )
        .unwrap_or_else(|e| {
            raise(
                PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE,
                format!("could not fetch remote node info: {e}"),
            )
        });
    match rows.into_iter().next() {
        Some(row) => row,
        None => raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "the remote database is not a spock node (spock.node_create was not run there)".into(),
        ),
    }
}

/// The provider's tables in the given replication sets (for `sub_alter_sync`).
#[pg_extern(sql = false)]
fn spock_remote_tables(
    dsn: &str,
    sets: Vec<String>,
    appname: &str,
) -> TableIterator<'static, (name!(nspname, String), name!(relname, String))> {
    let remote = connect(dsn, appname);
    let sql = apply::sync::provider_tables_sql(&apply::sync::set_literals(&sets));
    let rows = remote.query(&sql, 2).unwrap_or_else(|e| {
        raise(
            PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE,
            format!("could not list the provider's tables: {e}"),
        )
    });
    TableIterator::new(rows.into_iter().map(|r| {
        let mut r = r.into_iter();
        (
            r.next().flatten().unwrap_or_default(),
            r.next().flatten().unwrap_or_default(),
        )
    }))
}

/// The payload of a `Spock` logical message: its type as a native-order int32, then for a
/// sync event the node id and an empty 64-byte name, as upstream lays it out.
#[pg_extern(sql = false)]
fn spock_message(mtype: i32, node_id: pg_sys::Oid) -> Vec<u8> {
    let mut payload = mtype.to_ne_bytes().to_vec();
    if mtype == output::SYNC_EVENT {
        payload.extend_from_slice(&node_id.to_u32().to_ne_bytes());
        payload.extend_from_slice(&[0; pg_sys::NAMEDATALEN as usize]);
    }
    payload
}

/// Checks that a DSN can be connected to (in replication mode).
#[pg_extern(sql = false)]
fn spock_check_connection(dsn: &str, appname: &str) {
    drop(connect(dsn, appname));
}

/// Whether a replication slot of this name exists on the provider.
#[pg_extern(sql = false)]
fn spock_remote_slot_exists(dsn: &str, slot: &str, appname: &str) -> bool {
    connect(dsn, appname)
        .slot_exists(slot)
        .unwrap_or_else(|e| raise(PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE, e))
}

/// Drops a slot on the provider if it exists, waiting up to 10 s for its walsender to go.
#[pg_extern(sql = false)]
fn spock_drop_remote_slot(dsn: &str, slot: &str, appname: &str) -> bool {
    let remote = connect(dsn, appname);
    let literal = slot.replace('\'', "''");
    let started = std::time::Instant::now();
    loop {
        let rows = remote
            .query(
                &format!(
                    "SELECT active::text FROM pg_replication_slots WHERE slot_name = '{literal}'"
                ),
                1,
            )
            .unwrap_or_else(|e| raise(PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE, e));
        match rows.first().and_then(|r| r[0].as_deref()) {
            None => return false,
            Some("false") => {
                remote
                    .query(
                        &format!("SELECT pg_drop_replication_slot('{literal}')::text"),
                        1,
                    )
                    .unwrap_or_else(|e| raise(PgSqlErrorCode::ERRCODE_OBJECT_IN_USE, e));
                return true;
            }
            _ if started.elapsed() > std::time::Duration::from_secs(10) => raise(
                PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
                format!("replication slot \"{slot}\" is still in use on the provider"),
            ),
            // Interruptible, and ends with the postmaster.
            _ => apply::nap(std::time::Duration::from_millis(100)),
        }
    }
}

/// A connection string with its passwords masked, for anything shown to users
/// (`sub_show_status`, messages naming a DSN).
#[pg_extern(sql = false)]
fn spock_mask_dsn(dsn: &str) -> String {
    remote::mask_dsn(dsn)
}

/// Connects for a SQL function; errors carry no secret of `dsn` (see `remote::scrub`).
fn connect(dsn: &str, appname: &str) -> remote::Remote {
    remote::check_dsn(dsn);
    remote::Remote::connect(dsn, appname).unwrap_or_else(|e| {
        // Reported as upstream's C function reports it: no CONTEXT about the PL/pgSQL caller.
        // SAFETY: only unlinks the stack; whoever catches the error restores its own.
        unsafe { pg_sys::error_context_stack = std::ptr::null_mut() };
        raise(
            PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE,
            format!("could not connect to the postgresql server in replication mode: {e}"),
        )
    })
}

/// The pgEdge kernel capability level of the running server (NULL on a stock server).
#[pg_extern]
fn kernel_api_level() -> Option<i32> {
    kernel::kernel_api()
}

#[cfg(test)]
mod tests {
    use super::sqlstate_code;
    use pgrx::PgSqlErrorCode;

    #[test]
    fn sqlstates_pack_as_core_does() {
        for (text, code) in [
            ("22023", PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE),
            (
                "2BP01",
                PgSqlErrorCode::ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST,
            ),
            (
                "55000",
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            ),
            ("0A000", PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED),
        ] {
            assert_eq!(sqlstate_code(text), Some(code as i32), "{text}");
        }
        assert_eq!(sqlstate_code("2201"), None);
        assert_eq!(sqlstate_code("2201x"), None);
    }
}
