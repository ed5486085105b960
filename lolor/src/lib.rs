//! lolor: large objects kept in ordinary, replicable tables (API level of upstream lolor 1.2.2).
//!
//! The install script (`sql/lolor.sql`) creates `lolor.pg_largeobject` and
//! `lolor.pg_largeobject_metadata`, renames core's large-object functions in `pg_catalog` to
//! `<name>_orig` and puts this library's functions (`api`) in their place. `storage` does the
//! page I/O on lolor's tables with core's semantics, `descriptors` keeps the per-transaction
//! descriptors, `ddl` handles DROP EXTENSION / DROP OWNED / REASSIGN OWNED / DROP ROLE, and
//! `logic` holds the server-independent arithmetic (unit-tested without a server).

#[cfg(feature = "pg15")]
use compat15 as compat;
#[cfg(feature = "pg16")]
use compat16 as compat;
#[cfg(feature = "pg17")]
use compat17 as compat;
#[cfg(feature = "pg18")]
use compat18 as compat;

mod api;
mod ddl;
mod descriptors;
pub mod logic;
mod storage;

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use pgrx::prelude::*;

pgrx::pg_module_magic!();

/// The lolor SQL API level implemented (upstream 1.2.2).
pub const LOLOR_VERSION: &str = "1.2.2";

/// `lolor.node`: this node's id, appended to automatically generated OIDs (0 = unset).
static NODE: GucSetting<i32> = GucSetting::<i32>::new(0);

/// The current `lolor.node`.
pub fn node() -> i32 {
    NODE.get()
}

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    GucRegistry::define_int_guc(
        c"lolor.node",
        c"Unique id of current node.",
        c"Appended to the OIDs of large objects created without an explicit OID, so that nodes \
          never generate the same OID; 1-15 give that guarantee, 0 means unset (automatic OIDs \
          fail). 16 is accepted for compatibility but overlaps the counter bits.",
        &NODE,
        0,
        16,
        GucContext::Suset,
        GucFlags::default(),
    );
    // SAFETY: registration calls made once while the library loads.
    unsafe {
        pg_sys::MarkGUCPrefixReserved(c"lolor".as_ptr());
        pg_sys::RegisterXactCallback(Some(descriptors::xact_callback), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(descriptors::subxact_callback), std::ptr::null_mut());
        pg_sys::CacheRegisterRelcacheCallback(
            Some(storage::relcache_callback),
            pg_sys::Datum::from(0),
        );
    }
    ddl::install_hook();
}

/// Server major this library was built for; lets tests check the right build was installed.
#[pg_extern]
fn build_pg_major() -> i32 {
    compat::PG_MAJOR as i32
}

extension_sql_file!("../sql/lolor.sql", name = "lolor_objects");
