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
#[cfg(feature = "pg18")]
pub(crate) use compat18 as compat;

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

/// Defines a version-1 C function under upstream's symbol name, so databases created with
/// upstream snowflake (e.g. carried over by pg_upgrade) find their functions in our library.
/// The body gets the call's argument (`None` for NULL) and returns `None` for a NULL result.
macro_rules! v1_function {
    ($symbol:ident, $finfo:ident, |$arg:ident: $ty:ty| -> $ret:ty $body:block) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn $finfo() -> &'static pg_sys::Pg_finfo_record {
            const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }

        /// # Safety
        /// Called by the function manager with a valid `fcinfo`.
        #[pg_guard]
        #[unsafe(no_mangle)]
        pub unsafe extern "C-unwind" fn $symbol(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
            // SAFETY: the executor passes a valid call frame with the declared argument.
            let $arg: Option<$ty> = unsafe { pgrx::fcinfo::pg_getarg(fcinfo, 0) };
            let result: Option<$ret> = $body;
            match result.and_then(|r| r.into_datum()) {
                Some(datum) => datum,
                // SAFETY: as above.
                None => unsafe { pgrx::fcinfo::pg_return_null(fcinfo) },
            }
        }
    };
}

fn require_node() -> i64 {
    let node = NODE.get();
    if node == 0 {
        ereport!(
            PgLogLevel::ERROR,
            PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR,
            "value for snowflake.node is not set"
        );
    }
    node as i64
}

v1_function!(
    snowflake_nextval,
    pg_finfo_snowflake_nextval,
    |seq: pg_sys::Oid| -> i64 { seq.map(|seq| seq::nextval(seq, require_node())) }
);

v1_function!(
    snowflake_currval,
    pg_finfo_snowflake_currval,
    |seq: pg_sys::Oid| -> i64 { seq.map(seq::currval) }
);

v1_function!(
    snowflake_get_epoch,
    pg_finfo_snowflake_get_epoch,
    |id: i64| -> AnyNumeric {
        id.map(|id| AnyNumeric::try_from(id::epoch_text(id).as_str()).expect("a decimal literal"))
    }
);

v1_function!(
    snowflake_get_count,
    pg_finfo_snowflake_get_count,
    |id: i64| -> i32 { id.map(|id| id::decode(id).count as i32) }
);

v1_function!(
    snowflake_get_node,
    pg_finfo_snowflake_get_node,
    |id: i64| -> i32 { id.map(|id| id::decode(id).node as i32) }
);
