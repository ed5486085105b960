//! snowflake: cluster-unique, time-ordered 64-bit ids from ordinary sequences, with the SQL API
//! of upstream snowflake 2.4. The id layout and the state machine live in [`id`]; the sequence
//! page handling in [`seq`]; the SQL objects in `sql/snowflake.sql`.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::prelude::*;

#[cfg(feature = "pg15")]
pub(crate) use compat15 as compat;
#[cfg(feature = "pg16")]
pub(crate) use compat16 as compat;
#[cfg(feature = "pg17")]
pub(crate) use compat17 as compat;

pub mod id;
mod raw;
mod seq;

pgrx::pg_module_magic!();

/// The snowflake SQL API level implemented (upstream 2.4).
pub const SNOWFLAKE_VERSION: &str = "2.4";

/// `snowflake.node`: this node's number, 1..1023 (0 = unset).
static NODE: GucSetting<i32> = GucSetting::<i32>::new(0);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    GucRegistry::define_int_guc(
        c"snowflake.node",
        c"Unique id of current node.",
        c"Goes into bits 12-21 of every id; must differ between the nodes of a cluster.",
        &NODE,
        0,
        id::MAX_NODE as i32,
        GucContext::Suset,
        GucFlags::default(),
    );
    // SAFETY: called once while loading the library.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"snowflake".as_ptr()) };
}

pgrx::extension_sql_file!("../sql/snowflake.sql", name = "snowflake_api", finalize);

#[pg_extern(sql = false)]
fn snowflake_nextval(seq: Option<pg_sys::Oid>) -> Option<i64> {
    let seq = seq?;
    let node = NODE.get();
    if node == 0 {
        ereport!(
            PgLogLevel::ERROR,
            PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR,
            "value for snowflake.node is not set"
        );
    }
    Some(seq::nextval(seq, node as i64))
}

#[pg_extern(sql = false)]
fn snowflake_currval(seq: Option<pg_sys::Oid>) -> Option<i64> {
    Some(seq::currval(seq?))
}

#[pg_extern(sql = false)]
fn snowflake_get_epoch(id: Option<i64>) -> Option<AnyNumeric> {
    Some(AnyNumeric::try_from(id::epoch_text(id?).as_str()).expect("a decimal literal"))
}

#[pg_extern(sql = false)]
fn snowflake_get_count(id: Option<i64>) -> Option<i32> {
    Some(id::decode(id?).count as i32)
}

#[pg_extern(sql = false)]
fn snowflake_get_node(id: Option<i64>) -> Option<i32> {
    Some(id::decode(id?).node as i32)
}
