//! Large objects on lolor's two tables, accessed directly (index scans and catalog-style inserts,
//! updates and deletes that maintain the indexes), with core's semantics: pages of BLCKSZ/4
//! bytes, holes that read as zeros, MVCC snapshots chosen as core chooses them.

use crate::logic::{self, Mode};
use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::prelude::*;
use std::cell::Cell;
use std::ffi::CStr;
use std::ptr;

/// `LOBLKSIZE`: bytes per stored page.
pub const PAGE: usize = (pg_sys::BLCKSZ / 4) as usize;

const META_NATTS: usize = 3;
const DATA_NATTS: usize = 3;

unsafe extern "C" {
    /// Core's `lo_compat_privileges` setting (storage/large_object.h, not bound by pgrx).
    static lo_compat_privileges: bool;
}

/// Whether `lo_compat_privileges` is on.
pub fn compat_privileges() -> bool {
    // SAFETY: a plain bool the GUC machinery writes between statements.
    unsafe { lo_compat_privileges }
}

/// Whether the current user's privileges on large objects are checked.
pub fn privileges_apply() -> bool {
    // SAFETY: plain catalog lookup.
    logic::privileges_apply(unsafe { pg_sys::superuser() }, compat_privileges())
}

/// The OIDs of lolor's tables and their primary-key indexes.
#[derive(Debug, Clone, Copy)]
pub struct Rels {
    pub meta: Oid,
    pub meta_pkey: Oid,
    pub data: Oid,
    pub data_pkey: Oid,
}

thread_local! {
    static RELS: Cell<Option<Rels>> = const { Cell::new(None) };
}

/// Looks the tables up by name in schema `lolor`; cached until the next relcache invalidation.
pub fn rels() -> Rels {
    if let Some(r) = RELS.get() {
        return r;
    }
    // SAFETY: catalog lookups with valid C strings.
    let nsp = unsafe { pg_sys::get_namespace_oid(c"lolor".as_ptr(), true) };
    let find = |name: &CStr| -> Oid {
        let oid = if nsp == pg_sys::InvalidOid {
            pg_sys::InvalidOid
        } else {
            // SAFETY: a catalog lookup by a NUL-terminated name.
            unsafe { pg_sys::get_relname_relid(name.as_ptr(), nsp) }
        };
        if oid == pg_sys::InvalidOid {
            error!(
                "cache lookup failed for relation lolor.{}",
                name.to_string_lossy()
            );
        }
        oid
    };
    let r = Rels {
        meta: find(c"pg_largeobject_metadata"),
        meta_pkey: find(c"pg_largeobject_metadata_pkey"),
        data: find(c"pg_largeobject"),
        data_pkey: find(c"pg_largeobject_pkey"),
    };
    RELS.set(Some(r));
    r
}

/// Relcache invalidation callback: forget the cached OIDs (any invalidation, so REINDEX
/// CONCURRENTLY or a re-created extension are picked up).
#[pg_guard]
pub unsafe extern "C-unwind" fn relcache_callback(_arg: Datum, _relid: Oid) {
    RELS.set(None);
}

/// An open large object: the state behind a descriptor, or a temporary one inside a function.
#[derive(Debug)]
pub struct Handle {
    pub id: Oid,
    pub offset: i64,
    pub mode: Mode,
    /// Read-only handles read with this snapshot; writers use a fresh snapshot per operation.
    pub snapshot: pg_sys::Snapshot,
}

fn oid_key(key: &mut pg_sys::ScanKeyData, attno: i16, oid: Oid) {
    // SAFETY: initialises a caller-owned scan key.
    unsafe {
        pg_sys::ScanKeyInit(
            key,
            attno,
            pg_sys::BTEqualStrategyNumber as _,
            pg_sys::F_OIDEQ.into(),
            Datum::from(oid),
        )
    }
}

fn int4_ge_key(key: &mut pg_sys::ScanKeyData, attno: i16, value: i32) {
    // SAFETY: initialises a caller-owned scan key.
    unsafe {
        pg_sys::ScanKeyInit(
            key,
            attno,
            pg_sys::BTGreaterEqualStrategyNumber as _,
            pg_sys::F_INT4GE.into(),
            Datum::from(value),
        )
    }
}

fn empty_keys<const N: usize>() -> [pg_sys::ScanKeyData; N] {
    // SAFETY: ScanKeyData is plain data; every key used is initialised by ScanKeyInit.
    unsafe { std::mem::zeroed() }
}

/// The snapshot read-only access uses: the active one (the transaction's if none is active).
pub fn read_snapshot() -> pg_sys::Snapshot {
    // SAFETY: snapshot manager accessors.
    unsafe {
        if pg_sys::ActiveSnapshotSet() {
            pg_sys::GetActiveSnapshot()
        } else {
            pg_sys::GetTransactionSnapshot()
        }
    }
}

/// Owner and the current user's privileges (SELECT/UPDATE bits) of a large object.
struct MetaInfo {
    owner: Oid,
    mask: pg_sys::AclMode,
}

/// Reads the metadata row of `id` with `snapshot` (NULL: a fresh catalog-style snapshot);
/// computes the current user's privileges unless `with_privileges` is false.
fn lookup_meta(id: Oid, snapshot: pg_sys::Snapshot, with_privileges: bool) -> Option<MetaInfo> {
    let rels = rels();
    let mut keys = empty_keys::<1>();
    oid_key(&mut keys[0], 1, id);
    // SAFETY: standard relation/scan protocol; the tuple is used before the scan ends.
    unsafe {
        let rel = pg_sys::table_open(rels.meta, pg_sys::AccessShareLock as _);
        let scan =
            pg_sys::systable_beginscan(rel, rels.meta_pkey, true, snapshot, 1, keys.as_mut_ptr());
        let tuple = pg_sys::systable_getnext(scan);
        let info = if tuple.is_null() {
            None
        } else {
            let desc = (*rel).rd_att;
            check_natts(desc, META_NATTS, "pg_largeobject_metadata");
            let mut values = [Datum::from(0); META_NATTS];
            let mut nulls = [false; META_NATTS];
            pg_sys::heap_deform_tuple(tuple, desc, values.as_mut_ptr(), nulls.as_mut_ptr());
            let owner = Oid::from(values[1].value() as u32);
            let mask = if with_privileges {
                let acl = if nulls[2] {
                    pg_sys::acldefault(pg_sys::ObjectType::OBJECT_LARGEOBJECT, owner)
                } else {
                    pg_sys::pg_detoast_datum(values[2].cast_mut_ptr()) as *mut pg_sys::Acl
                };
                pg_sys::aclmask(
                    acl,
                    pg_sys::GetUserId(),
                    owner,
                    (pg_sys::ACL_SELECT | pg_sys::ACL_UPDATE) as _,
                    pg_sys::AclMaskHow::ACLMASK_ALL,
                )
            } else {
                0
            };
            Some(MetaInfo { owner, mask })
        };
        pg_sys::systable_endscan(scan);
        pg_sys::table_close(rel, pg_sys::AccessShareLock as _);
        info
    }
}

fn check_natts(desc: pg_sys::TupleDesc, expected: usize, table: &str) {
    // SAFETY: desc is a valid tuple descriptor of an open relation.
    let natts = unsafe { (*desc).natts } as usize;
    if natts != expected {
        error!("lolor.{table} has {natts} columns, expected {expected}");
    }
}

/// lolor.pg_largeobject must be exactly (oid, int4, bytea): pages are read at fixed offsets.
fn check_data_shape(desc: pg_sys::TupleDesc) {
    check_natts(desc, DATA_NATTS, "pg_largeobject");
    // SAFETY: desc has DATA_NATTS attributes.
    let attrs = unsafe { crate::compat::tuple_desc_attrs(desc) };
    let types = [pg_sys::OIDOID, pg_sys::INT4OID, pg_sys::BYTEAOID];
    if attrs
        .iter()
        .zip(types)
        .any(|(a, t)| a.atttypid != t || a.attisdropped)
    {
        error!("lolor.pg_largeobject must have the columns (loid oid, pageno int4, data bytea)");
    }
}

/// The owner of large object `id`, or `None` if it does not exist (fresh snapshot).
pub fn owner_of(id: Oid) -> Option<Oid> {
    lookup_meta(id, ptr::null_mut(), false).map(|m| m.owner)
}

fn permission_denied(id: Oid) -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        format!("permission denied for large object {}", id.to_u32())
    );
}

fn does_not_exist(id: Oid) -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
        format!("large object {} does not exist", id.to_u32())
    );
}

/// Opens large object `id` (core's `inv_open`): checks flags, existence and privileges. A
/// read-only handle carries the active snapshot (unregistered; descriptors register it).
pub fn open(id: Oid, flags: i32) -> Handle {
    let Some(mode) = logic::open_mode(flags) else {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid flags for opening a large object: {flags}")
        );
    };
    let snapshot = if mode.write {
        ptr::null_mut()
    } else {
        read_snapshot()
    };
    let checked = privileges_apply();
    let Some(meta) = lookup_meta(id, snapshot, checked) else {
        does_not_exist(id);
    };
    if checked {
        if mode.read && meta.mask & pg_sys::ACL_SELECT as pg_sys::AclMode == 0 {
            permission_denied(id);
        }
        if mode.write && meta.mask & pg_sys::ACL_UPDATE as pg_sys::AclMode == 0 {
            permission_denied(id);
        }
    }
    Handle {
        id,
        offset: 0,
        mode,
        snapshot,
    }
}

/// lolor's table and index, open for one operation.
struct DataRel {
    heap: pg_sys::Relation,
    index: pg_sys::Relation,
}

impl DataRel {
    fn open() -> DataRel {
        let rels = rels();
        // SAFETY: opening relations by OID; locks are kept until transaction end.
        unsafe {
            let heap = pg_sys::table_open(rels.data, pg_sys::RowExclusiveLock as _);
            check_data_shape((*heap).rd_att);
            let index = pg_sys::index_open(rels.data_pkey, pg_sys::RowExclusiveLock as _);
            DataRel { heap, index }
        }
    }

    /// Ordered scan over the pages of `id` from page `from` on.
    fn scan(&self, id: Oid, from: Option<i32>, snapshot: pg_sys::Snapshot) -> PageScan {
        let mut keys = empty_keys::<2>();
        oid_key(&mut keys[0], 1, id);
        let nkeys = match from {
            Some(p) => {
                int4_ge_key(&mut keys[1], 2, p);
                2
            }
            None => 1,
        };
        // SAFETY: the relations are open; systable_beginscan_ordered copies the keys.
        let scan = unsafe {
            pg_sys::systable_beginscan_ordered(
                self.heap,
                self.index,
                snapshot,
                nkeys,
                keys.as_mut_ptr(),
            )
        };
        PageScan { scan }
    }

    fn close(self) {
        // SAFETY: closing what `open` opened; locks stay until transaction end.
        unsafe {
            pg_sys::index_close(self.index, pg_sys::NoLock as _);
            pg_sys::table_close(self.heap, pg_sys::NoLock as _);
        }
    }
}

/// One stored page as found by a scan.
struct Found {
    tuple: pg_sys::HeapTuple,
    pageno: i32,
    data: Datum,
}

impl Found {
    /// Runs `f` on the page's bytes (detoasted if needed).
    fn with_bytes<R>(&self, id: Oid, f: impl FnOnce(&[u8]) -> R) -> R {
        // SAFETY: `data` is a bytea datum of a tuple the scan still holds.
        unsafe {
            let raw = self.data.cast_mut_ptr::<pg_sys::varlena>();
            // Plain (uncompressed, inline) values need no detoasting.
            let inline = pgrx::varlena::varatt_is_4b_u(raw)
                || (pgrx::varlena::varatt_is_1b(raw) && !pgrx::varlena::varatt_is_1b_e(raw));
            let plain = if inline {
                raw
            } else {
                pg_sys::pg_detoast_datum_packed(raw)
            };
            let bytes = pgrx::varlena::varlena_to_byte_slice(plain);
            if bytes.len() > PAGE {
                ereport!(
                    ERROR,
                    PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
                    format!(
                        "pg_largeobject entry for OID {}, page {} has invalid data field size {}",
                        id.to_u32(),
                        self.pageno,
                        bytes.len()
                    )
                );
            }
            let r = f(bytes);
            if plain != raw {
                pg_sys::pfree(plain.cast());
            }
            r
        }
    }
}

struct PageScan {
    scan: pg_sys::SysScanDesc,
}

impl PageScan {
    fn next(&mut self, direction: pg_sys::ScanDirection::Type) -> Option<Found> {
        // SAFETY: scan protocol; the tuple stays valid until the next call. The layout
        // (oid, int4, bytea; no nulls) was checked when the relation was opened, so the fields
        // sit at fixed offsets, as core reads pg_largeobject through its C struct.
        unsafe {
            let tuple = pg_sys::systable_getnext_ordered(self.scan, direction);
            if tuple.is_null() {
                return None;
            }
            let header = (*tuple).t_data;
            if (*header).t_infomask as u32 & pg_sys::HEAP_HASNULL != 0 {
                error!("null field found in pg_largeobject");
            }
            let fields = header.cast::<u8>().add((*header).t_hoff as usize);
            Some(Found {
                tuple,
                pageno: ptr::read_unaligned(fields.add(4).cast::<i32>()),
                data: Datum::from(fields.add(8)),
            })
        }
    }

    fn forward(&mut self) -> Option<Found> {
        self.next(pg_sys::ScanDirection::ForwardScanDirection)
    }

    fn end(self) {
        // SAFETY: ends the scan begun in `DataRel::scan`.
        unsafe { pg_sys::systable_endscan_ordered(self.scan) }
    }
}

/// A page-sized varlena buffer with a 4-byte header, aligned for the header.
struct PageBuf(Vec<u32>);

impl PageBuf {
    fn new() -> PageBuf {
        PageBuf(vec![0; PAGE / 4 + 1])
    }

    fn body(&mut self) -> &mut [u8] {
        // SAFETY: the Vec holds 4 + PAGE bytes; u8 has no alignment needs.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<u8>().add(4), PAGE) }
    }

    /// The buffer as a bytea datum holding the first `len` bytes of the body.
    fn datum(&mut self, len: usize) -> Datum {
        let p = self.0.as_mut_ptr().cast::<pg_sys::varlena>();
        // SAFETY: the header is the first, 4-byte aligned word of the buffer.
        unsafe { pgrx::varlena::set_varsize_4b(p, (len + 4) as i32) };
        Datum::from(p)
    }
}

/// Catalog-style writes to lolor.pg_largeobject (indexes maintained, unique keys enforced).
struct Writer {
    rel: DataRel,
    indstate: pg_sys::CatalogIndexState,
    buf: PageBuf,
}

impl Writer {
    fn open() -> Writer {
        let rel = DataRel::open();
        // SAFETY: the relation is open with RowExclusiveLock.
        let indstate = unsafe { pg_sys::CatalogOpenIndexes(rel.heap) };
        Writer {
            rel,
            indstate,
            buf: PageBuf::new(),
        }
    }

    fn form(&mut self, id: Oid, pageno: i32, len: usize) -> pg_sys::HeapTuple {
        let mut values = [Datum::from(id), Datum::from(pageno), self.buf.datum(len)];
        let mut nulls = [false; DATA_NATTS];
        // SAFETY: values match the table's three columns.
        unsafe {
            pg_sys::heap_form_tuple(
                (*self.rel.heap).rd_att,
                values.as_mut_ptr(),
                nulls.as_mut_ptr(),
            )
        }
    }

    /// Inserts page `pageno` holding the first `len` bytes of the buffer.
    fn insert(&mut self, id: Oid, pageno: i32, len: usize) {
        let tuple = self.form(id, pageno, len);
        // SAFETY: tuple formed for this relation.
        unsafe {
            pg_sys::CatalogTupleInsertWithInfo(self.rel.heap, tuple, self.indstate);
            pg_sys::heap_freetuple(tuple);
        }
    }

    /// Replaces the stored page `old` with the first `len` bytes of the buffer.
    fn update(&mut self, id: Oid, old: &Found, len: usize) {
        let tuple = self.form(id, old.pageno, len);
        // SAFETY: `old` is the current version found by a scan of this relation.
        unsafe {
            pg_sys::CatalogTupleUpdateWithInfo(
                self.rel.heap,
                &mut (*old.tuple).t_self,
                tuple,
                self.indstate,
            );
            pg_sys::heap_freetuple(tuple);
        }
    }

    fn delete(&mut self, old: &Found) {
        // SAFETY: as in `update`.
        unsafe { pg_sys::CatalogTupleDelete(self.rel.heap, &mut (*old.tuple).t_self) }
    }

    fn close(self) {
        // SAFETY: closes what `open` opened.
        unsafe { pg_sys::CatalogCloseIndexes(self.indstate) };
        self.rel.close();
    }
}

fn command_counter_increment() {
    // SAFETY: makes this command's changes visible to the next operation.
    unsafe { pg_sys::CommandCounterIncrement() }
}

/// Size of the object: offset of the last byte of its last page plus one.
pub fn size(h: &Handle) -> i64 {
    let rel = DataRel::open();
    let mut scan = rel.scan(h.id, None, h.snapshot);
    let size = scan
        .next(pg_sys::ScanDirection::BackwardScanDirection)
        .map_or(0, |last| {
            last.pageno as i64 * PAGE as i64 + last.with_bytes(h.id, |b| b.len()) as i64
        });
    scan.end();
    rel.close();
    size
}

/// Reads up to `buf.len()` bytes at the handle's offset; returns the number read.
pub fn read(h: &mut Handle, buf: &mut [u8]) -> usize {
    if !h.mode.read {
        permission_denied(h.id);
    }
    if buf.is_empty() {
        return 0;
    }
    let (first, _) = logic::page_of(h.offset, PAGE);
    let rel = DataRel::open();
    let mut scan = rel.scan(h.id, Some(first), h.snapshot);
    let mut filled = 0;
    while let Some(page) = scan.forward() {
        page.with_bytes(h.id, |data| {
            logic::read_page(&mut h.offset, buf, &mut filled, page.pageno, data, PAGE)
        });
        if filled >= buf.len() {
            break;
        }
    }
    scan.end();
    rel.close();
    filled
}

/// Writes `src` at the handle's offset; returns the number of bytes written.
pub fn write(h: &mut Handle, src: &[u8]) -> usize {
    if !h.mode.write {
        permission_denied(h.id);
    }
    if src.is_empty() {
        return 0;
    }
    if !logic::write_fits(h.offset, src.len(), PAGE) {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid large object write request size: {}", src.len())
        );
    }
    let (mut pageno, _) = logic::page_of(h.offset, PAGE);
    let mut w = Writer::open();
    let mut scan = w.rel.scan(h.id, Some(pageno), h.snapshot);
    let mut written = 0;
    let mut old: Option<Found> = None;
    let mut need_next = true;
    while written < src.len() {
        if need_next {
            old = scan.forward();
            need_next = false;
        }
        let (_, off) = logic::page_of(h.offset, PAGE);
        let rest = &src[written..];
        let n = match &old {
            Some(page) if page.pageno == pageno => {
                let (n, len) = page.with_bytes(h.id, |data| {
                    logic::merge_page(Some(data), off, rest, w.buf.body(), PAGE)
                });
                w.update(h.id, page, len);
                need_next = true;
                n
            }
            _ => {
                let (n, len) = logic::merge_page(None, off, rest, w.buf.body(), PAGE);
                w.insert(h.id, pageno, len);
                n
            }
        };
        if need_next {
            old = None;
        }
        written += n;
        h.offset += n as i64;
        pageno += 1;
    }
    scan.end();
    w.close();
    command_counter_increment();
    written
}

/// Truncates (or extends with a hole) the object to `len` bytes.
pub fn truncate(h: &mut Handle, len: i64) {
    if !h.mode.write {
        permission_denied(h.id);
    }
    if !logic::truncate_target_ok(len, PAGE) {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid large object truncation target: {len}")
        );
    }
    let (pageno, off) = logic::page_of(len, PAGE);
    let mut w = Writer::open();
    let mut scan = w.rel.scan(h.id, Some(pageno), h.snapshot);
    let first = scan.forward();
    match &first {
        Some(page) if page.pageno == pageno => {
            let n = page.with_bytes(h.id, |data| {
                logic::truncate_page(Some(data), off, w.buf.body())
            });
            w.update(h.id, page, n);
        }
        _ => {
            // In a hole or beyond the end: a page marks the new end. A later page found first
            // is deleted here, as the loop below will not see it again.
            if let Some(later) = &first {
                w.delete(later);
            }
            let n = logic::truncate_page(None, off, w.buf.body());
            w.insert(h.id, pageno, n);
        }
    }
    if first.is_some() {
        while let Some(page) = scan.forward() {
            w.delete(&page);
        }
    }
    scan.end();
    w.close();
    command_counter_increment();
}

/// Seeks (core's `inv_seek`); returns the new offset.
pub fn seek(h: &mut Handle, offset: i64, whence: i32) -> i64 {
    let base = match logic::Whence::from_sql(whence) {
        Some(logic::Whence::Set) => 0,
        Some(logic::Whence::Cur) => h.offset,
        Some(logic::Whence::End) => size(h),
        None => {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("invalid whence setting: {whence}")
            );
        }
    };
    match logic::seek_target(base, offset, PAGE) {
        Ok(target) => {
            h.offset = target;
            target
        }
        Err(bad) => {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("invalid large object seek target: {bad}")
            );
        }
    }
}

/// Creates a large object owned by the current user: with OID `id`, or a generated one when
/// `id` is InvalidOid. A duplicate OID fails on the primary key.
pub fn create(id: Oid) -> Oid {
    let rels = rels();
    // SAFETY: relation protocol; the tuple matches the metadata table's columns.
    unsafe {
        let rel = pg_sys::table_open(rels.meta, pg_sys::RowExclusiveLock as _);
        check_natts((*rel).rd_att, META_NATTS, "pg_largeobject_metadata");
        let id = if id == pg_sys::InvalidOid {
            new_oid(rel, rels.meta_pkey)
        } else {
            id
        };
        let mut values = [
            Datum::from(id),
            Datum::from(pg_sys::GetUserId()),
            Datum::from(0),
        ];
        let mut nulls = [false, false, true];
        let tuple = pg_sys::heap_form_tuple((*rel).rd_att, values.as_mut_ptr(), nulls.as_mut_ptr());
        pg_sys::CatalogTupleInsert(rel, tuple);
        pg_sys::heap_freetuple(tuple);
        pg_sys::table_close(rel, pg_sys::NoLock as _);
        command_counter_increment();
        id
    }
}

/// A cluster-unique OID: `16 * (GetNewObjectId() mod 2^28) + lolor.node`, retried while the
/// metadata table holds the candidate in any tuple version.
unsafe fn new_oid(rel: pg_sys::Relation, pkey: Oid) -> Oid {
    let node = crate::node();
    if node == 0 {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR,
            "value for lolor.node is not set"
        );
    }
    let mut retries: u64 = 0;
    let mut next_log = logic::OID_RETRY_LOG_FIRST;
    loop {
        // SAFETY: the next value of the cluster's OID counter.
        let candidate = unsafe {
            let counter = pg_sys::GetNewObjectId().to_u32();
            Oid::from(logic::compose_oid(counter, node as u32))
        };
        let mut keys = empty_keys::<1>();
        oid_key(&mut keys[0], 1, candidate);
        // SAFETY: the caller holds `rel` open; SnapshotAny sees dead and uncommitted rows too.
        let taken = unsafe {
            let scan = pg_sys::systable_beginscan(
                rel,
                pkey,
                true,
                &raw mut pg_sys::SnapshotAnyData,
                1,
                keys.as_mut_ptr(),
            );
            let taken = !pg_sys::systable_getnext(scan).is_null();
            pg_sys::systable_endscan(scan);
            taken
        };
        if !taken {
            if retries >= logic::OID_RETRY_LOG_FIRST {
                log!(
                    "new OID assigned in relation \"pg_largeobject_metadata\" after {retries} retries"
                );
            }
            return candidate;
        }
        retries += 1;
        if retries >= next_log {
            log!(
                "still searching for an unused OID in relation \"pg_largeobject_metadata\": \
                 OID candidates have been checked {retries} times"
            );
            next_log = logic::next_retry_log(next_log);
        }
    }
}

/// Deletes large object `id` (metadata and pages); fails if it does not exist.
pub fn remove(id: Oid) {
    let rels = rels();
    let mut keys = empty_keys::<1>();
    oid_key(&mut keys[0], 1, id);
    // SAFETY: relation/scan protocol; the tuple is deleted while the scan holds it.
    let found = unsafe {
        let rel = pg_sys::table_open(rels.meta, pg_sys::RowExclusiveLock as _);
        let scan = pg_sys::systable_beginscan(
            rel,
            rels.meta_pkey,
            true,
            ptr::null_mut(),
            1,
            keys.as_mut_ptr(),
        );
        let tuple = pg_sys::systable_getnext(scan);
        let found = !tuple.is_null();
        if found {
            pg_sys::CatalogTupleDelete(rel, &mut (*tuple).t_self);
        }
        pg_sys::systable_endscan(scan);
        pg_sys::table_close(rel, pg_sys::NoLock as _);
        found
    };
    if !found {
        does_not_exist(id);
    }
    let mut w = Writer::open();
    let mut scan = w.rel.scan(id, None, ptr::null_mut());
    while let Some(page) = scan.forward() {
        w.delete(&page);
    }
    scan.end();
    w.close();
    command_counter_increment();
}

/// Visits every metadata row (fresh snapshot) as (tuple, oid, owner, acl datum or None); the
/// relation is open with `lock` for the visit.
fn for_each_meta(
    lock: u32,
    mut f: impl FnMut(pg_sys::Relation, pg_sys::HeapTuple, Oid, Oid, Option<Datum>),
) {
    let rels = rels();
    // SAFETY: heap scan protocol; each tuple is used only inside `f`.
    unsafe {
        let rel = pg_sys::table_open(rels.meta, lock as _);
        let desc = (*rel).rd_att;
        check_natts(desc, META_NATTS, "pg_largeobject_metadata");
        let scan = pg_sys::systable_beginscan(
            rel,
            pg_sys::InvalidOid,
            false,
            ptr::null_mut(),
            0,
            ptr::null_mut(),
        );
        loop {
            let tuple = pg_sys::systable_getnext(scan);
            if tuple.is_null() {
                break;
            }
            let mut values = [Datum::from(0); META_NATTS];
            let mut nulls = [false; META_NATTS];
            pg_sys::heap_deform_tuple(tuple, desc, values.as_mut_ptr(), nulls.as_mut_ptr());
            let oid = Oid::from(values[0].value() as u32);
            let owner = Oid::from(values[1].value() as u32);
            f(rel, tuple, oid, owner, (!nulls[2]).then_some(values[2]));
        }
        pg_sys::systable_endscan(scan);
        pg_sys::table_close(rel, pg_sys::NoLock as _);
    }
}

/// The large objects owned by any of `roles`, in OID order.
pub fn objects_owned_by(roles: &[Oid]) -> Vec<Oid> {
    let mut found = Vec::new();
    for_each_meta(pg_sys::AccessShareLock, |_, _, oid, owner, _| {
        if roles.contains(&owner) {
            found.push(oid);
        }
    });
    found.sort_by_key(|o| o.to_u32());
    found
}

/// Gives the large objects of `roles` to `new_owner`, rewriting their ACLs as core's REASSIGN
/// OWNED does (`aclnewowner`).
pub fn reassign(roles: &[Oid], new_owner: Oid) {
    for_each_meta(pg_sys::RowExclusiveLock, |rel, tuple, oid, owner, acl| {
        if !roles.contains(&owner) || owner == new_owner {
            return;
        }
        // SAFETY: rewrites the current version of a row this scan returned.
        unsafe {
            let acl_datum = match acl {
                Some(a) => {
                    let old = pg_sys::pg_detoast_datum(a.cast_mut_ptr()) as *const pg_sys::Acl;
                    Datum::from(pg_sys::aclnewowner(old, owner, new_owner))
                }
                None => Datum::from(0),
            };
            let mut values = [Datum::from(oid), Datum::from(new_owner), acl_datum];
            let mut nulls = [false, false, acl.is_none()];
            let new =
                pg_sys::heap_form_tuple((*rel).rd_att, values.as_mut_ptr(), nulls.as_mut_ptr());
            pg_sys::CatalogTupleUpdate(rel, &mut (*tuple).t_self, new);
            pg_sys::heap_freetuple(new);
        }
    });
    command_counter_increment();
}

/// Whether lolor stores no large object (no metadata row and no page).
pub fn is_empty() -> bool {
    let mut any = false;
    for_each_meta(pg_sys::AccessShareLock, |_, _, _, _, _| any = true);
    if any {
        return false;
    }
    let rel = DataRel::open();
    let mut keys = empty_keys::<1>();
    // SAFETY: a plain heap scan of the page table, stopped at the first row.
    let page = unsafe {
        let scan = pg_sys::systable_beginscan(
            rel.heap,
            pg_sys::InvalidOid,
            false,
            ptr::null_mut(),
            0,
            keys.as_mut_ptr(),
        );
        let found = !pg_sys::systable_getnext(scan).is_null();
        pg_sys::systable_endscan(scan);
        found
    };
    rel.close();
    !page
}

/// Number of metadata rows.
pub fn count() -> usize {
    let mut n = 0;
    for_each_meta(pg_sys::AccessShareLock, |_, _, _, _, _| n += 1);
    n
}
