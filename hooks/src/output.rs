//! The `spock_output` logical decoding output plugin entry point. For now it accepts a slot and
//! decodes without emitting rows; the wire protocol arrives with the spock core work.

use pgrx::pg_sys;
use pgrx::prelude::*;

#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn _PG_output_plugin_init(cb: *mut pg_sys::OutputPluginCallbacks) {
    // SAFETY: PostgreSQL hands us a zeroed callback struct to fill in.
    unsafe {
        (*cb).startup_cb = Some(startup);
        (*cb).begin_cb = Some(begin);
        (*cb).change_cb = Some(change);
        (*cb).commit_cb = Some(commit);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn startup(
    _ctx: *mut pg_sys::LogicalDecodingContext,
    opt: *mut pg_sys::OutputPluginOptions,
    _is_init: bool,
) {
    // SAFETY: `opt` is valid for the duration of the callback.
    unsafe {
        (*opt).output_type = pg_sys::OutputPluginOutputType::OUTPUT_PLUGIN_BINARY_OUTPUT;
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn begin(
    _ctx: *mut pg_sys::LogicalDecodingContext,
    _txn: *mut pg_sys::ReorderBufferTXN,
) {
}

#[pg_guard]
unsafe extern "C-unwind" fn change(
    _ctx: *mut pg_sys::LogicalDecodingContext,
    _txn: *mut pg_sys::ReorderBufferTXN,
    _relation: pg_sys::Relation,
    _change: *mut pg_sys::ReorderBufferChange,
) {
}

#[pg_guard]
unsafe extern "C-unwind" fn commit(
    _ctx: *mut pg_sys::LogicalDecodingContext,
    _txn: *mut pg_sys::ReorderBufferTXN,
    _commit_lsn: pg_sys::XLogRecPtr,
) {
}
