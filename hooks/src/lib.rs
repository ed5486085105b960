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

mod kernel;
mod output;

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
                "Add spock to shared_preload_libraries (and spock_output to \
                 output_plugin_libraries) and restart PostgreSQL {}.",
                compat::PG_MAJOR
            ),
        );
    }
}

#[pg_extern]
fn spock_version() -> &'static str {
    SPOCK_VERSION
}

#[pg_extern]
fn spock_version_num() -> i32 {
    SPOCK_VERSION_NUM
}

/// The pgEdge kernel capability level of the running server (NULL on a stock server).
#[pg_extern]
fn kernel_api_level() -> Option<i32> {
    kernel::kernel_api()
}
