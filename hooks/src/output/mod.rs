//! The `spock_output` logical decoding output plugin: streams the changes of the tables in the
//! subscribed replication sets in spock's native protocol (see the `spock-proto` crate), or
//! in upstream's JSON format (`proto_format = json`, see `json.rs`).
//!
//! Large transactions are left to PostgreSQL's reorder buffer (which spills to disk); we never
//! hold a transaction in our own memory.

mod filter;
mod json;
mod members;
mod params;
mod tuples;

use crate::compat;
use crate::scratch::Scratch;
use crate::stats::{self, Counter};
use members::{Members, SetFlags};
use params::Params;
use pgrx::pg_sys;
use pgrx::prelude::*;
use spock_proto::{Message, Writer};
use std::ffi::CStr;

/// Per-stream state, owned by the decoding context (`output_plugin_private`).
struct Stream {
    params: Params,
    node_id: u16,
    sets: Vec<SetFlags>,
    members: Members,
    sent_startup: bool,
    /// Between `spock.repair_mode(true)` and `(false)` in the transaction being decoded: its
    /// DML and TRUNCATE stay on this node.
    repair: bool,
    /// Built-in types travel in their send/recv form (the client asked, same major).
    binary: bool,
    buf: Vec<u8>,
    /// The row being written, its buffers reused from row to row.
    row: tuples::Row,
}

#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn _PG_output_plugin_init(cb: *mut pg_sys::OutputPluginCallbacks) {
    // SAFETY: PostgreSQL hands us a zeroed callback struct to fill in.
    unsafe {
        (*cb).startup_cb = Some(startup);
        (*cb).begin_cb = Some(begin);
        (*cb).change_cb = Some(change);
        (*cb).truncate_cb = Some(truncate);
        (*cb).message_cb = Some(message);
        (*cb).commit_cb = Some(commit);
        (*cb).filter_by_origin_cb = Some(filter_by_origin);
        (*cb).shutdown_cb = Some(shutdown);
    }
}

/// The stream state of a decoding context.
///
/// # Safety
/// `ctx` must be a context whose startup callback has run (and not at slot creation).
unsafe fn stream<'a>(ctx: *mut pg_sys::LogicalDecodingContext) -> &'a mut Stream {
    // SAFETY: set in `startup` from a leaked Box and freed only in `shutdown`.
    unsafe { &mut *((*ctx).output_plugin_private as *mut Stream) }
}

/// Sends `bytes` as one protocol message. `last` is true only for a transaction's COMMIT (and a
/// message outside any transaction): the kernel's walsender (patch 0006) keeps the writes
/// before it in its send buffer, up to 8 kB, and sends a small transaction whole in one
/// `send()`. It sends what is left after each WAL record anyway, so nothing waits longer; a
/// stock walsender sends every write at once, as before. PostgreSQL puts no WAL position in
/// the header of a write that is not a last one (as for pgoutput's BEGIN), so only COMMIT
/// carries one; the apply side reads positions from COMMIT and keepalives alone.
unsafe fn send(ctx: *mut pg_sys::LogicalDecodingContext, bytes: &[u8], last: bool) {
    // SAFETY: the output functions are used the way the decoding machinery expects.
    unsafe {
        pg_sys::OutputPluginPrepareWrite(ctx, last);
        pg_sys::appendBinaryStringInfo((*ctx).out, bytes.as_ptr().cast(), bytes.len() as i32);
        pg_sys::OutputPluginWrite(ctx, last);
    }
}

fn options(ctx: *mut pg_sys::LogicalDecodingContext) -> Vec<(String, Option<String>)> {
    // SAFETY: output_plugin_options is a List of DefElem with String (or no) arguments.
    unsafe {
        let list = pgrx::PgList::<pg_sys::DefElem>::from_pg((*ctx).output_plugin_options);
        list.iter_ptr()
            .map(|elem| {
                let name = CStr::from_ptr((*elem).defname)
                    .to_string_lossy()
                    .into_owned();
                let arg = (*elem).arg;
                let value = (!arg.is_null()).then(|| {
                    let s = (*(arg as *mut pg_sys::String)).sval;
                    CStr::from_ptr(s).to_string_lossy().into_owned()
                });
                (name, value)
            })
            .collect()
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn startup(
    ctx: *mut pg_sys::LogicalDecodingContext,
    opt: *mut pg_sys::OutputPluginOptions,
    is_init: bool,
) {
    // SAFETY: `opt` is valid for the duration of the callback.
    unsafe {
        (*opt).output_type = pg_sys::OutputPluginOutputType::OUTPUT_PLUGIN_BINARY_OUTPUT;
        (*opt).receive_rewrites = false;
    }
    if is_init {
        // Slot creation: nothing to check yet.
        return;
    }
    let params = match params::parse(&options(ctx)) {
        Ok(p) => p,
        Err(e) => crate::raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("spock_output: {e}"),
        ),
    };
    if params.json {
        // JSON texts: readable through pg_logical_slot_get_changes.
        // SAFETY: as above.
        unsafe {
            (*opt).output_type = pg_sys::OutputPluginOutputType::OUTPUT_PLUGIN_TEXTUAL_OUTPUT
        };
    }
    if let Some(enc) = params.expected_encoding.as_ref().filter(|_| !params.json) {
        // SAFETY: plain lookup of the database encoding name.
        let ours = unsafe { CStr::from_ptr(pg_sys::GetDatabaseEncodingName()) }.to_string_lossy();
        if !enc.eq_ignore_ascii_case(&ours) {
            crate::raise(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                format!(
                    "encoding conversion for binary datum not supported yet (client expects {enc}, database is {ours})"
                ),
            );
        }
    }
    let (node_id, sets, members) = members::load_startup(&params);
    let binary = params.binary_major == Some(pg_sys::PG_VERSION_NUM / 100);
    let stream = Box::new(Stream {
        params,
        node_id,
        sets,
        members,
        sent_startup: false,
        repair: false,
        binary,
        buf: Vec::new(),
        row: tuples::Row::default(),
    });
    // SAFETY: the context outlives the stream; `shutdown` frees it.
    unsafe { (*ctx).output_plugin_private = Box::into_raw(stream).cast() };
}

#[pg_guard]
unsafe extern "C-unwind" fn shutdown(ctx: *mut pg_sys::LogicalDecodingContext) {
    // SAFETY: the pointer was made by Box::into_raw in `startup` (or is null at slot creation).
    unsafe {
        let p = (*ctx).output_plugin_private as *mut Stream;
        if !p.is_null() {
            drop(Box::from_raw(p));
            (*ctx).output_plugin_private = std::ptr::null_mut();
        }
    }
}

/// Changes that arrived from another node are not sent back unless the subscriber forwards
/// all origins: this is what keeps changes from looping between nodes.
#[pg_guard]
unsafe extern "C-unwind" fn filter_by_origin(
    ctx: *mut pg_sys::LogicalDecodingContext,
    origin_id: pg_sys::RepOriginId,
) -> bool {
    // While a slot is created PostgreSQL asks this before any stream exists (startup returns
    // early then): nothing is sent during creation, so nothing needs filtering.
    // SAFETY: the pointer is null or the stream `startup` made.
    let Some(s) = (unsafe { ((*ctx).output_plugin_private as *const Stream).as_ref() }) else {
        return false;
    };
    origin_id != 0 && !s.params.forward_all_origins
}

#[pg_guard]
unsafe extern "C-unwind" fn begin(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
) {
    // SAFETY: startup has run; txn is valid during the callback.
    unsafe {
        let s = stream(ctx);
        s.repair = false;
        if s.params.json {
            if !s.sent_startup {
                let text = json::startup(&startup_params(s));
                send(ctx, text.as_bytes(), false);
                s.sent_startup = true;
            }
            let commit_time = (*txn).xact_time.commit_time;
            let begin = json::Begin {
                has_catalog_changes: (*txn).txn_flags & pg_sys::RBTXN_HAS_CATALOG_CHANGES != 0,
                origin_id: ((*txn).origin_id != 0).then_some((*txn).origin_id),
                xid: (*txn).xid.into(),
                first_lsn: (*txn).first_lsn,
                origin_lsn: (*txn).origin_lsn,
                commit_time: (commit_time != 0).then(|| {
                    CStr::from_ptr(pg_sys::timestamptz_to_str(commit_time))
                        .to_string_lossy()
                        .into_owned()
                }),
            };
            send(
                ctx,
                json::begin(&begin, s.params.no_txinfo).as_bytes(),
                false,
            );
            return;
        }
        if !s.sent_startup {
            let startup = Message::Startup(startup_params(s));
            s.buf.clear();
            startup.encode(&mut s.buf);
            send(ctx, &s.buf, false);
            s.sent_startup = true;
        }
        let origin = if (*txn).origin_id == 0 {
            s.node_id
        } else {
            (*txn).origin_id
        };
        s.buf.clear();
        Message::Begin {
            final_lsn: (*txn).final_lsn,
            commit_time: (*txn).xact_time.commit_time,
            xid: (*txn).xid.into(),
        }
        .encode(&mut s.buf);
        send(ctx, &s.buf, false);
        s.buf.clear();
        Message::Origin {
            origin_lsn: (*txn).origin_lsn,
            origin,
        }
        .encode(&mut s.buf);
        send(ctx, &s.buf, false);
        s.buf.clear();
        Message::CommitOrder { last_commit_ts: 0 }.encode(&mut s.buf);
        send(ctx, &s.buf, false);
    }
}

fn startup_params(s: &Stream) -> Vec<(String, String)> {
    // SAFETY: plain reads of server constants and the database encoding.
    let encoding = unsafe { CStr::from_ptr(pg_sys::GetDatabaseEncodingName()) }
        .to_string_lossy()
        .into_owned();
    let pid = std::process::id().to_string();
    [
        (
            "max_proto_version",
            spock_proto::MAX_PROTO_VERSION.to_string(),
        ),
        (
            "min_proto_version",
            spock_proto::MIN_PROTO_VERSION.to_string(),
        ),
        ("coltypes", "f".into()),
        ("pg_version_num", pg_sys::PG_VERSION_NUM.to_string()),
        (
            "pg_version",
            pg_sys::PG_VERSION.to_string_lossy().into_owned(),
        ),
        ("pg_catversion", pg_sys::CATALOG_VERSION_NO.to_string()),
        ("database_encoding", encoding.clone()),
        ("encoding", encoding),
        ("forward_changeset_origins", "t".into()),
        ("walsender_pid", pid),
        ("spock_version", crate::SPOCK_VERSION.into()),
        ("spock_version_num", crate::SPOCK_VERSION_NUM.to_string()),
        ("binary.internal_basetypes", "f".into()),
        (
            "binary.binary_basetypes",
            if s.binary { "t" } else { "f" }.into(),
        ),
        (
            "binary.basetypes_major_version",
            (pg_sys::PG_VERSION_NUM / 100).to_string(),
        ),
        ("binary.sizeof_int", "4".into()),
        ("binary.sizeof_long", "8".into()),
        ("binary.sizeof_datum", "8".into()),
        ("binary.maxalign", "8".into()),
        ("binary.bigendian", "f".into()),
        ("binary.float4_byval", "t".into()),
        ("binary.float8_byval", "t".into()),
        ("binary.integer_datetimes", "t".into()),
        (
            "binary.binary_pg_version",
            (pg_sys::PG_VERSION_NUM / 100).to_string(),
        ),
        (
            "no_txinfo",
            if s.params.no_txinfo { "t" } else { "f" }.into(),
        ),
        ("proto_version", s.params.proto_version.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[pg_guard]
unsafe extern "C-unwind" fn change(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
    relation: pg_sys::Relation,
    change: *mut pg_sys::ReorderBufferChange,
) {
    // Detoasted values and output-function results are freed after each change, so a
    // transaction of any size needs the memory of one row (as pgoutput does).
    thread_local! {
        static CHANGE: Scratch = const { Scratch::new(c"spock_output change") };
    }
    // SAFETY: the callback's arguments, passed on.
    CHANGE.with(|scratch| scratch.run(|| unsafe { send_change(ctx, txn, relation, change) }));
}

unsafe fn send_change(
    ctx: *mut pg_sys::LogicalDecodingContext,
    _txn: *mut pg_sys::ReorderBufferTXN,
    relation: pg_sys::Relation,
    change: *mut pg_sys::ReorderBufferChange,
) {
    use pg_sys::ReorderBufferChangeType as Kind;
    // SAFETY: startup has run; relation and change are valid during the callback.
    unsafe {
        let s = stream(ctx);
        let relid = (*relation).rd_id;
        if s.members.is_membership_table(relid) {
            // Set membership changed at this point of the stream: look it up again.
            s.members.forget_all();
            return;
        }
        if s.members.is_repair_switch(relid) {
            let (_, new) = compat::change_tuples(change);
            if (*change).action == pg_sys::ReorderBufferChangeType::REORDER_BUFFER_CHANGE_INSERT
                && !new.is_null()
            {
                let mut isnull = false;
                let on = pg_sys::heap_getattr(new, 1, (*relation).rd_att, &mut isnull);
                s.repair = !isnull && on.value() != 0;
            }
            return;
        }
        if s.repair {
            return;
        }
        let is_queue = s.members.is_queue(relid);
        let Some(member) = s.members.lookup(relation, &s.params, &s.sets) else {
            return;
        };
        let action = (*change).action;
        let wanted = match action {
            Kind::REORDER_BUFFER_CHANGE_INSERT => member.flags.insert,
            Kind::REORDER_BUFFER_CHANGE_UPDATE => member.flags.update,
            Kind::REORDER_BUFFER_CHANGE_DELETE => member.flags.delete,
            _ => false,
        };
        if !wanted {
            return;
        }
        let (old, new) = compat::change_tuples(change);
        if action == Kind::REORDER_BUFFER_CHANGE_DELETE && old.is_null() {
            return;
        }
        if is_queue && !Members::queued_for(relation, new, &s.params) {
            return;
        }
        // Inserts and updates are filtered on the new row, deletes on the old one (which may
        // hold only the key, so there NULL lets the delete through).
        if let Some(filter) = &member.filter {
            let passes = if action == Kind::REORDER_BUFFER_CHANGE_DELETE {
                filter.passes(old, true)
            } else {
                filter.passes(new, false)
            };
            if !passes {
                return;
            }
        }
        let relid_u32 = relid.to_u32();
        if s.params.json {
            let form = (*relation).rd_rel;
            let schema = tuples::namespace_name((*form).relnamespace);
            let table = pgrx::name_data_to_str(&(*form).relname);
            let cols = &member.columns;
            let (letter, old_json, new_json) = match action {
                Kind::REORDER_BUFFER_CHANGE_INSERT => {
                    ('I', None, Some(tuples::json_tuple(relation, new, cols)))
                }
                Kind::REORDER_BUFFER_CHANGE_UPDATE => (
                    'U',
                    (!old.is_null()).then(|| tuples::json_tuple(relation, old, cols)),
                    Some(tuples::json_tuple(relation, new, cols)),
                ),
                _ => ('D', Some(tuples::json_tuple(relation, old, cols)), None),
            };
            let text = json::change(
                letter,
                &schema,
                table,
                old_json.as_deref(),
                new_json.as_deref(),
            );
            send(ctx, text.as_bytes(), false);
            stats::count(0, relid_u32, counter(action));
            return;
        }
        if !member.relation_sent {
            s.buf.clear();
            tuples::write_relation(&mut s.buf, relation, &member.columns);
            send(ctx, &s.buf, false);
            s.members.mark_sent(relid);
        }
        let Some(member) = s.members.get(relid) else {
            crate::raise(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!(
                    "spock_output: relation {} lost its publication while decoding",
                    relid.to_u32()
                ),
            );
        };
        let layout = match &member.layout {
            Some(layout) => layout.clone(),
            None => {
                let layout: std::rc::Rc<[tuples::Column]> =
                    tuples::layout(relation, &member.columns, s.binary).into();
                s.members.set_layout(relid, layout.clone());
                layout
            }
        };
        s.buf.clear();
        let mut w = Writer::new(&mut s.buf);
        let row = &mut s.row;
        match action {
            Kind::REORDER_BUFFER_CHANGE_INSERT => {
                w.insert_header(relid_u32);
                tuples::write_tuple(&mut w, relation, new, &layout, row);
            }
            Kind::REORDER_BUFFER_CHANGE_UPDATE => {
                w.update_header(relid_u32);
                if !old.is_null() {
                    w.old_tuple();
                    tuples::write_tuple(&mut w, relation, old, &layout, row);
                }
                w.new_tuple();
                tuples::write_tuple(&mut w, relation, new, &layout, row);
            }
            _ => {
                w.delete_header(relid_u32);
                tuples::write_tuple(&mut w, relation, old, &layout, row);
            }
        }
        send(ctx, &s.buf, false);
        stats::count(0, relid_u32, counter(action));
    }
}

fn counter(action: pg_sys::ReorderBufferChangeType::Type) -> Counter {
    use pg_sys::ReorderBufferChangeType as Kind;
    match action {
        Kind::REORDER_BUFFER_CHANGE_INSERT => Counter::Insert,
        Kind::REORDER_BUFFER_CHANGE_UPDATE => Counter::Update,
        _ => Counter::Delete,
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn truncate(
    ctx: *mut pg_sys::LogicalDecodingContext,
    _txn: *mut pg_sys::ReorderBufferTXN,
    nrelations: i32,
    relations: *mut pg_sys::Relation,
    change: *mut pg_sys::ReorderBufferChange,
) {
    // SAFETY: startup has run; the relation array has `nrelations` entries.
    unsafe {
        let s = stream(ctx);
        // JSON mode has no TRUNCATE message (upstream's json writer has none): skipped.
        if s.repair || s.params.json {
            return;
        }
        let mut relids = Vec::new();
        for &relation in std::slice::from_raw_parts(relations, nrelations as usize) {
            let relid = (*relation).rd_id;
            let Some(member) = s.members.lookup(relation, &s.params, &s.sets) else {
                continue;
            };
            if !member.flags.truncate {
                continue;
            }
            if !member.relation_sent {
                s.buf.clear();
                tuples::write_relation(&mut s.buf, relation, &member.columns);
                send(ctx, &s.buf, false);
                s.members.mark_sent(relid);
            }
            relids.push(relid.to_u32());
        }
        if relids.is_empty() {
            return;
        }
        let t = (*change).data.truncate;
        s.buf.clear();
        Message::Truncate {
            relids,
            cascade: t.cascade,
            restart_seqs: t.restart_seqs,
        }
        .encode(&mut s.buf);
        send(ctx, &s.buf, false);
    }
}

/// Logical messages with prefix `Spock`: sync events (type 3) travel to the subscriber; repair
/// mode messages (types 1 and 2) are not sent.
#[pg_guard]
unsafe extern "C-unwind" fn message(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
    lsn: pg_sys::XLogRecPtr,
    transactional: bool,
    prefix: *const std::ffi::c_char,
    size: pg_sys::Size,
    data: *const std::ffi::c_char,
) {
    // SAFETY: the message bytes are valid for the duration of the callback.
    unsafe {
        if CStr::from_ptr(prefix).to_bytes() != b"Spock" || size < 4 {
            return;
        }
        let payload = std::slice::from_raw_parts(data.cast::<u8>(), size);
        let &[a, b, c, d, ..] = payload else {
            return;
        };
        let mtype = i32::from_ne_bytes([a, b, c, d]);
        // Repair mode itself is switched by spock.repair_mode_switch (see `change`): anyone
        // may write a logical message.
        if mtype != SYNC_EVENT {
            return;
        }
        let xid = if txn.is_null() { 0 } else { (*txn).xid.into() };
        let s = stream(ctx);
        // JSON mode carries no logical messages.
        if s.params.json {
            return;
        }
        s.buf.clear();
        Message::Message {
            xid,
            lsn,
            transactional,
            prefix: "Spock".into(),
            payload: payload.to_vec(),
        }
        .encode(&mut s.buf);
        send(ctx, &s.buf, !transactional);
    }
}

/// The type of a sync-event `Spock` logical message (a native-order int32 first in the payload).
pub const SYNC_EVENT: i32 = 3;

#[pg_guard]
unsafe extern "C-unwind" fn commit(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
    commit_lsn: pg_sys::XLogRecPtr,
) {
    // SAFETY: startup has run; txn is valid during the callback.
    unsafe {
        let s = stream(ctx);
        if s.params.json {
            let text = json::commit((*txn).final_lsn, (*txn).end_lsn, s.params.no_txinfo);
            send(ctx, text.as_bytes(), true);
            stats::flush();
            return;
        }
        s.buf.clear();
        Message::Commit {
            commit_lsn,
            end_lsn: (*txn).end_lsn,
            commit_time: (*txn).xact_time.commit_time,
            remote_insert_lsn: pg_sys::GetXLogInsertRecPtr(),
        }
        .encode(&mut s.buf);
        send(ctx, &s.buf, true);
    }
    stats::flush();
}
