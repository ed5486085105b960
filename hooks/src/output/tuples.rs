//! RELATION metadata and row tuples of a relation, in spock's native format. Values travel as
//! the type's text output, or its send/recv binary form for built-in types when the client
//! asked for it; unchanged TOASTed values as 'u' so the subscriber keeps its own.

use pgrx::pg_sys;
use spock_proto::Writer;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CStr;

thread_local! {
    /// Built-in type → its send function, if its binary form can travel (built-in types never
    /// change, so this is never invalidated).
    static SEND_FN: RefCell<HashMap<pg_sys::Oid, Option<Box<pg_sys::FmgrInfo>>>> =
        RefCell::new(HashMap::new());
    /// Type → its output function, looked up once per walsender (a type's output function
    /// cannot change while values of it exist).
    static OUTPUT_FN: RefCell<HashMap<pg_sys::Oid, Box<pg_sys::FmgrInfo>>> =
        RefCell::new(HashMap::new());
}

/// A function's call info, kept for the life of the process.
fn function_info(f: pg_sys::Oid) -> Box<pg_sys::FmgrInfo> {
    let mut info = Box::new(pg_sys::FmgrInfo::default());
    // SAFETY: fills `info`; its extra data lives in TopMemoryContext like the cache.
    unsafe { pg_sys::fmgr_info_cxt(f, &mut *info, pg_sys::TopMemoryContext) };
    info
}

/// The output function of `typid`, looked up once per walsender (a type's output function
/// cannot change while values of it exist); the call info lives as long as the process.
fn output_fn(typid: pg_sys::Oid) -> *mut pg_sys::FmgrInfo {
    OUTPUT_FN.with(|cache| {
        &mut **cache.borrow_mut().entry(typid).or_insert_with(|| {
            let mut out_fn = pg_sys::InvalidOid;
            let mut is_varlena = false;
            // SAFETY: a catalog lookup.
            unsafe { pg_sys::getTypeOutputInfo(typid, &mut out_fn, &mut is_varlena) };
            function_info(out_fn)
        }) as *mut _
    })
}

/// The send function of `typid` if values of it may travel in binary: built-in (its oid means
/// the same type on the subscriber), not composite (whose binary form names column types by
/// oid), with a send function.
fn binary_send_fn(typid: pg_sys::Oid) -> Option<*mut pg_sys::FmgrInfo> {
    if typid.to_u32() >= pg_sys::FirstNormalObjectId {
        return None;
    }
    SEND_FN.with(|cache| {
        let mut cache = cache.borrow_mut();
        let entry = cache.entry(typid).or_insert_with(|| {
            // SAFETY: catalog lookups of a built-in type.
            unsafe {
                if pg_sys::get_typtype(typid) == pg_sys::TYPTYPE_COMPOSITE as std::ffi::c_char {
                    return None;
                }
                let (mut len, mut byval, mut align, mut delim) = (0i16, false, 0, 0);
                let (mut param, mut send) = (pg_sys::InvalidOid, pg_sys::InvalidOid);
                pg_sys::get_type_io_data(
                    typid,
                    pg_sys::IOFuncSelector::IOFunc_send,
                    &mut len,
                    &mut byval,
                    &mut align,
                    &mut delim,
                    &mut param,
                    &mut send,
                );
                (send != pg_sys::InvalidOid).then(|| function_info(send))
            }
        });
        entry.as_mut().map(|info| &mut **info as *mut _)
    })
}

/// The name of schema `nsp` (ERROR rather than a null pointer if it was dropped meanwhile).
pub fn namespace_name(nsp: pg_sys::Oid) -> String {
    // SAFETY: a catalog lookup; the result is checked before it is read.
    let name = unsafe { pg_sys::get_namespace_name(nsp) };
    if name.is_null() {
        crate::raise(
            pgrx::PgSqlErrorCode::ERRCODE_INVALID_SCHEMA_NAME,
            format!("schema with OID {} does not exist", nsp.to_u32()),
        );
    }
    // SAFETY: a palloc'd C string.
    unsafe { CStr::from_ptr(name) }
        .to_string_lossy()
        .into_owned()
}

/// `VARTAG_ONDISK`: a TOAST pointer to out-of-line storage.
const VARTAG_ONDISK: u8 = 18;

/// The published attributes of the relation: not dropped, not generated, in the column list.
unsafe fn published(
    relation: pg_sys::Relation,
    columns: &Option<Vec<String>>,
) -> Vec<(usize, pg_sys::FormData_pg_attribute)> {
    // SAFETY: the relation is open; its descriptor has `natts` attributes.
    unsafe {
        let desc = (*relation).rd_att;
        let attrs = crate::compat::tuple_desc_attrs(desc);
        attrs
            .iter()
            .enumerate()
            .filter(|(_, a)| !a.attisdropped && a.attgenerated == 0)
            .filter(|(_, a)| {
                columns
                    .as_ref()
                    .is_none_or(|cols| cols.iter().any(|c| c == pgrx::name_data_to_str(&a.attname)))
            })
            .map(|(i, a)| (i, *a))
            .collect()
    }
}

/// Appends a RELATION message.
///
/// # Safety
/// Call from a decoding callback with `relation` open.
pub unsafe fn write_relation(
    buf: &mut Vec<u8>,
    relation: pg_sys::Relation,
    columns: &Option<Vec<String>>,
) {
    // SAFETY: catalog lookups and reads of the open relation.
    unsafe {
        let form = (*relation).rd_rel;
        let nspname = namespace_name((*form).relnamespace);
        let relname = pgrx::name_data_to_str(&(*form).relname);
        let key = pg_sys::RelationGetIndexAttrBitmap(
            relation,
            pg_sys::IndexAttrBitmapKind::INDEX_ATTR_BITMAP_IDENTITY_KEY,
        );
        let atts = published(relation, columns);
        let mut w = Writer::new(buf);
        w.relation_header(
            (*relation).rd_id.to_u32(),
            &nspname,
            relname,
            atts.len() as u16,
        );
        for (_, a) in &atts {
            let is_key = pg_sys::bms_is_member(
                a.attnum as i32 - pg_sys::FirstLowInvalidHeapAttributeNumber,
                key,
            );
            w.relation_column(
                is_key,
                pgrx::name_data_to_str(&a.attname),
                a.atttypid.to_u32(),
                a.atttypmod,
            );
        }
    }
}

/// A published column as its values are written: its place in the relation's tuples and the
/// functions that turn its values into bytes (worked out once per relation and stream, not
/// per row).
#[derive(Debug, Clone, Copy)]
pub struct Column {
    index: usize,
    varlena: bool,
    output: *mut pg_sys::FmgrInfo,
    /// Set when the client takes binary values and the type's can travel.
    send: Option<*mut pg_sys::FmgrInfo>,
}

/// How the rows of `relation` are written on a stream: its published columns, in order.
///
/// # Safety
/// Call from a decoding callback with `relation` open.
pub unsafe fn layout(
    relation: pg_sys::Relation,
    columns: &Option<Vec<String>>,
    binary: bool,
) -> Vec<Column> {
    // SAFETY: forwarded from the caller.
    unsafe { published(relation, columns) }
        .into_iter()
        .map(|(index, a)| Column {
            index,
            varlena: a.attlen == -1,
            output: output_fn(a.atttypid),
            send: binary.then(|| binary_send_fn(a.atttypid)).flatten(),
        })
        .collect()
}

/// A row's values and null flags, reused from row to row.
#[derive(Default)]
pub struct Row {
    values: Vec<pg_sys::Datum>,
    nulls: Vec<bool>,
}

impl Row {
    /// Deforms `tuple` of `relation` into the buffers.
    ///
    /// # Safety
    /// `tuple` belongs to `relation`.
    unsafe fn deform(&mut self, relation: pg_sys::Relation, tuple: pg_sys::HeapTuple) {
        // SAFETY: the arrays get one entry per attribute of the descriptor deforming them.
        unsafe {
            let desc = (*relation).rd_att;
            let natts = (*desc).natts as usize;
            self.values.resize(natts, pg_sys::Datum::from(0));
            self.nulls.resize(natts, false);
            pg_sys::heap_deform_tuple(
                tuple,
                desc,
                self.values.as_mut_ptr(),
                self.nulls.as_mut_ptr(),
            );
        }
    }
}

/// Appends a tuple ('T', natts, values) of `tuple` restricted to the columns of `layout`.
///
/// # Safety
/// Call from a decoding callback; `tuple` belongs to `relation`, `layout` was made for it.
pub unsafe fn write_tuple(
    w: &mut Writer<'_>,
    relation: pg_sys::Relation,
    tuple: pg_sys::HeapTuple,
    layout: &[Column],
    row: &mut Row,
) {
    // SAFETY: the tuple is deformed with its relation's descriptor; output strings are copied
    // before being freed; the call infos live as long as the process.
    unsafe {
        row.deform(relation, tuple);
        w.tuple_header(layout.len() as u16);
        for c in layout {
            if row.nulls[c.index] {
                w.null_value();
                continue;
            }
            let value = row.values[c.index];
            if c.varlena && is_ondisk_pointer(value) {
                w.unchanged_toast_value();
                continue;
            }
            if let Some(send) = c.send {
                let bytes = pg_sys::SendFunctionCall(send, value);
                w.binary_value(pgrx::varlena::varlena_to_byte_slice(bytes));
                pg_sys::pfree(bytes.cast());
                continue;
            }
            let text = pg_sys::OutputFunctionCall(c.output, value);
            w.text_value(CStr::from_ptr(text).to_bytes());
            pg_sys::pfree(text.cast());
        }
    }
}

/// Whether the (non-null) `value` of attribute `a` is a TOAST pointer the change left
/// unchanged: decoding has no data for it.
///
/// # Safety
/// `value` is a non-null value of `a`.
unsafe fn unchanged_toast(a: &pg_sys::FormData_pg_attribute, value: pg_sys::Datum) -> bool {
    // SAFETY: forwarded from the caller.
    a.attlen == -1 && unsafe { is_ondisk_pointer(value) }
}

/// Whether a varlena `value` is a pointer to out-of-line TOAST storage.
///
/// # Safety
/// `value` is a non-null varlena.
unsafe fn is_ondisk_pointer(value: pg_sys::Datum) -> bool {
    let p = value.cast_mut_ptr::<u8>();
    // SAFETY: a varlena value has at least its header's first two bytes.
    unsafe { *p == 0x01 && *p.add(1) == VARTAG_ONDISK }
}

/// The JSON object of `tuple` restricted to the published columns, built by PostgreSQL's own
/// `row_to_json` (so values follow `to_json`: bare numbers and booleans, ISO timestamps, nested
/// arrays and composites). Unchanged TOASTed values are left out.
///
/// # Safety
/// Call from a decoding callback; `tuple` belongs to `relation`.
pub unsafe fn json_tuple(
    relation: pg_sys::Relation,
    tuple: pg_sys::HeapTuple,
    columns: &Option<Vec<String>>,
) -> String {
    // SAFETY: the tuple is deformed with its relation's descriptor; the row built from its
    // values uses a blessed descriptor of the same column types, so row_to_json can read it.
    unsafe {
        let mut row = Row::default();
        row.deform(relation, tuple);
        let (values, nulls) = (&row.values, &row.nulls);
        let atts: Vec<_> = published(relation, columns)
            .into_iter()
            .filter(|(i, a)| nulls[*i] || !unchanged_toast(a, values[*i]))
            .collect();
        let row_desc = pg_sys::CreateTemplateTupleDesc(atts.len() as i32);
        let mut row_values = Vec::with_capacity(atts.len());
        let mut row_nulls = Vec::with_capacity(atts.len());
        for (k, (i, a)) in atts.iter().enumerate() {
            // attndims is an int up to 16 and an int16 from 17.
            #[allow(clippy::unnecessary_cast)]
            pg_sys::TupleDescInitEntry(
                row_desc,
                (k + 1) as pg_sys::AttrNumber,
                a.attname.data.as_ptr(),
                a.atttypid,
                a.atttypmod,
                a.attndims as i32,
            );
            row_values.push(values[*i]);
            row_nulls.push(nulls[*i]);
        }
        let row_desc = pg_sys::BlessTupleDesc(row_desc);
        let row =
            pg_sys::heap_form_tuple(row_desc, row_values.as_mut_ptr(), row_nulls.as_mut_ptr());
        let datum = pg_sys::heap_copy_tuple_as_datum(row, row_desc);
        let json = pg_sys::OidFunctionCall1Coll(
            pg_sys::Oid::from(pg_sys::F_ROW_TO_JSON_RECORD),
            pg_sys::InvalidOid,
            datum,
        );
        let text = json.cast_mut_ptr::<pg_sys::varlena>();
        String::from_utf8_lossy(pgrx::varlena::varlena_to_byte_slice(text)).into_owned()
    }
}
