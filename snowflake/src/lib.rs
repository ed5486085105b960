//! snowflake: cluster-unique 64-bit ids (API level of upstream snowflake 2.4).
//!
//! Skeleton for now: the library loads and the extension installs; the id generator and the SQL
//! surface follow in their own issue.

#[cfg(feature = "pg15")]
use compat15 as compat;
#[cfg(feature = "pg16")]
use compat16 as compat;
#[cfg(feature = "pg17")]
use compat17 as compat;

pgrx::pg_module_magic!();

/// The snowflake SQL API level implemented (upstream 2.4).
pub const SNOWFLAKE_VERSION: &str = "2.4";

/// Server major this library was built for; lets tests check the right build was installed.
#[pgrx::pg_extern]
fn build_pg_major() -> i32 {
    compat::PG_MAJOR as i32
}
