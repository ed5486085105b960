//! lolor: large objects kept in ordinary, replicable tables (API level of upstream lolor 1.2.2).
//!
//! Skeleton for now: the library loads (on demand or preloaded) and the extension installs; the
//! `lo_*` takeover follows in its own issue.

#[cfg(feature = "pg15")]
use compat15 as compat;
#[cfg(feature = "pg16")]
use compat16 as compat;
#[cfg(feature = "pg17")]
use compat17 as compat;

pgrx::pg_module_magic!();

/// The lolor SQL API level implemented (upstream 1.2.2).
pub const LOLOR_VERSION: &str = "1.2.2";

/// Server major this library was built for; lets tests check the right build was installed.
#[pgrx::pg_extern]
fn build_pg_major() -> i32 {
    compat::PG_MAJOR as i32
}
