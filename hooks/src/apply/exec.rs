//! Executor-level apply: a remote row becomes a tuple slot handed to PostgreSQL's replication
//! executor routines — a replica-identity index lookup that locks the row, an insert through
//! speculative insertion (so a concurrent local insert of the key is a conflict, not an error),
//! updates and deletes of the locked row — so constraints, indexes, generated columns and
//! replica-mode triggers behave as for any write, with no SQL to parse or plan per row.
//!
//! A table without any index (in an insert-only set: spock sends no updates or deletes of a
//! table without a key) is served for its inserts.
//! Local columns the provider does not send take their defaults in inserted rows. Tables this
//! path cannot serve (partitioned parents, a table with indexes but no replica-identity index,
//! a remote column that is generated here) keep the SQL path in `sql.rs`. Delta-apply columns
//! merge here: `f(old, new, local)` of the locked row, also when the remote write lost (then
//! in a subtransaction that keeps the local row's version).

use super::binary::CallInfo;
use super::sql::RemoteRel;
use crate::compat;
use pgrx::pg_sys;
use pgrx::pg_sys::submodules::ffi::pg_guard_ffi_boundary;
use pgrx::prelude::*;
use spock_proto::Value;
use std::cell::RefCell;
use std::rc::Rc;

unsafe extern "C-unwind" {
    // executor/nodeModifyTable.h, which pgrx does not bind; the same in 15 to 17.
    fn ExecComputeStoredGenerated(
        rri: *mut pg_sys::ResultRelInfo,
        estate: *mut pg_sys::EState,
        slot: *mut pg_sys::TupleTableSlot,
        cmdtype: pg_sys::CmdType::Type,
    );
}

/// How a local column reads the values of one remote column.
struct Column {
    /// Index of the local attribute in the relation's descriptor.
    att: usize,
    typid: pg_sys::Oid,
    typmod: i32,
    /// The provider's type when it is a built-in one (its oid means the same type here).
    remote_builtin: Option<pg_sys::Oid>,
    input: CallInfo,
    input_param: pg_sys::Oid,
    /// The local type's receive function, looked up at the first binary value.
    receive: std::cell::OnceCell<(CallInfo, pg_sys::Oid)>,
}

/// A delta-apply column as the executor merges it.
struct Delta {
    /// Position among the remote columns.
    col: usize,
    func: pg_sys::Oid,
    name: String,
    call: CallInfo,
    strict: bool,
    collation: pg_sys::Oid,
}

/// A local table the executor path serves, with the mapping of the provider's columns.
pub struct Target {
    pub relid: pg_sys::Oid,
    /// The replica-identity index; `None` for a table without any index, whose rows only
    /// the SQL path looks for.
    index: Option<pg_sys::Oid>,
    columns: Vec<Column>,
    /// Positions (among the remote columns) of the replica-identity index's columns.
    key: Vec<usize>,
    /// Local attributes (numbers) the provider does not send and that have a default,
    /// evaluated for inserted rows as an INSERT without them would.
    defaults: Vec<i32>,
    deltas: Vec<Delta>,
}

thread_local! {
    /// Relations whose definition changed since the worker last looked (`None` entry: all).
    static INVALIDATED: RefCell<Vec<Option<pg_sys::Oid>>> = const { RefCell::new(Vec::new()) };
}

#[pg_guard]
unsafe extern "C-unwind" fn relcache_changed(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    INVALIDATED.with(|v| {
        v.borrow_mut()
            .push((relid != pg_sys::InvalidOid).then_some(relid))
    });
}

/// Makes the worker hear of relation changes (called once per process).
pub fn watch_relations() {
    // SAFETY: registering a callback that only records the relation id.
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(relcache_changed), pg_sys::Datum::from(0))
    };
}

/// The relations changed since the last call (`None`: possibly all of them).
pub fn take_invalidated() -> Vec<Option<pg_sys::Oid>> {
    INVALIDATED.with(|v| std::mem::take(&mut *v.borrow_mut()))
}

impl Target {
    /// The executor mapping of `rel`'s local table, or `None` when it needs the SQL path.
    /// Call inside a transaction.
    pub fn new(rel: &RemoteRel) -> Option<Target> {
        let relid = pg_sys::Oid::from(rel.local_relid);
        // SAFETY: the relation is opened and closed here (its lock is kept to the end of the
        // transaction); descriptor reads and catalog lookups of an open relation.
        unsafe {
            let r = pg_sys::table_open(relid, pg_sys::AccessShareLock as i32);
            let target = Self::describe(r, rel);
            pg_sys::table_close(r, pg_sys::NoLock as i32);
            target
        }
    }

    unsafe fn describe(r: pg_sys::Relation, rel: &RemoteRel) -> Option<Target> {
        // SAFETY: `r` is open.
        unsafe {
            if (*(*r).rd_rel).relkind != pg_sys::RELKIND_RELATION as std::ffi::c_char {
                return None;
            }
            let index = pg_sys::RelationGetReplicaIndex(r);
            let index = (index != pg_sys::InvalidOid).then_some(index);
            // Without a replica-identity index only a table without any index: an insert
            // there can meet no conflict to resolve.
            match index {
                Some(_) if !rel.key.is_empty() => {}
                None if rel.key.is_empty() && !(*(*r).rd_rel).relhasindex => {}
                _ => return None,
            }
            let desc = (*r).rd_att;
            let attrs = compat::tuple_desc_attrs(desc);
            let mut columns = Vec::with_capacity(rel.columns.len());
            for c in &rel.columns {
                let att = attrs.iter().position(|a| {
                    !a.attisdropped && pgrx::name_data_to_str(&a.attname) == c.name
                })?;
                let a = &attrs[att];
                if a.attgenerated != 0 {
                    return None;
                }
                let mut input_fn = pg_sys::InvalidOid;
                let mut input_param = pg_sys::InvalidOid;
                pg_sys::getTypeInputInfo(a.atttypid, &mut input_fn, &mut input_param);
                let input = CallInfo::new(input_fn, pg_sys::TopMemoryContext);
                columns.push(Column {
                    att,
                    typid: a.atttypid,
                    typmod: a.atttypmod,
                    remote_builtin: (c.type_oid < pg_sys::FirstNormalObjectId)
                        .then(|| pg_sys::Oid::from(c.type_oid)),
                    input,
                    input_param,
                    receive: std::cell::OnceCell::new(),
                });
            }
            let defaults = attrs
                .iter()
                .enumerate()
                .filter(|&(i, a)| {
                    !a.attisdropped
                        && a.attgenerated == 0
                        && (a.atthasdef || a.attidentity != 0)
                        && !columns.iter().any(|c| c.att == i)
                })
                .map(|(i, _)| i as i32 + 1)
                .collect();
            let deltas = rel
                .delta
                .iter()
                .map(|d| {
                    let func = pg_sys::Oid::from(d.oid);
                    Delta {
                        col: d.col,
                        func,
                        name: d.func.clone(),
                        call: CallInfo::new(func, pg_sys::TopMemoryContext),
                        strict: pg_sys::func_strict(func),
                        collation: attrs[columns[d.col].att].attcollation,
                    }
                })
                .collect();
            Some(Target {
                relid: (*r).rd_id,
                index,
                columns,
                key: rel.key.clone(),
                defaults,
                deltas,
            })
        }
    }

    /// Whether `values` carries every key column (else the SQL path matches by the
    /// provider's own key columns).
    pub fn has_key(&self, values: &[Value]) -> bool {
        self.key
            .iter()
            .all(|&i| matches!(values.get(i), Some(Value::Text(_) | Value::Binary(_))))
    }
}

/// The executor state of a run of remote changes on one table within one remote transaction:
/// opened at the first change, reused by the next ones (so the per-table setup — opening the
/// table and its indexes, the owner switch, the executor state — is paid once per run, not per
/// row), and ended by `finish`. Nothing here calls into PostgreSQL on drop: after an error the
/// transaction's abort releases all of it, and the value is simply forgotten.
#[must_use = "a change must be finished (or forgotten after an error)"]
pub struct Change {
    target: Rc<Target>,
    rel: pg_sys::Relation,
    estate: *mut pg_sys::EState,
    rri: *mut pg_sys::ResultRelInfo,
    epq: *mut pg_sys::EPQState,
    /// Slots reused by every row: the key searched for, the locked local row, the new row, and
    /// another local row the new values collide with (`lock_colliding`).
    search: *mut pg_sys::TupleTableSlot,
    local: *mut pg_sys::TupleTableSlot,
    row: *mut pg_sys::TupleTableSlot,
    other: *mut pg_sys::TupleTableSlot,
    /// Whether `local` holds the row `lock_row` found and locked.
    found: bool,
    /// The row a unique index reported when `insert_or_skip` last skipped.
    conflicting: Option<pg_sys::ItemPointerData>,
    /// The table has triggers: their AFTER events fire at the end of each row, as for a
    /// statement of its own.
    triggers: bool,
    /// The defaults of `Target::defaults` (attribute index, expression ready to run).
    defaults: Vec<(usize, *mut pg_sys::ExprState)>,
    /// The unique and exclusion indexes checked at insert time, those a conflict is looked
    /// for on (null: none).
    arbiters: *mut pg_sys::List,
    /// The unique indexes checked at update time other than the replica identity, those
    /// `lock_colliding` searches.
    other_unique: Vec<pg_sys::Oid>,
    /// The speculative-insertion token of the run's inserts and the xid it was taken under,
    /// while locked (see `token`).
    token: Option<(pg_sys::TransactionId, u32)>,
    /// The table has an exclusion constraint: each insert releases its token (see `token`).
    token_per_row: bool,
    /// The worker's own identity, back at `finish`: the changes run as the table's owner.
    worker: crate::identity::Switched,
}

impl Change {
    /// Opens the table for a run of changes (inside the apply transaction). Until `finish`,
    /// the changes run with the rights of the table's owner (read from the open relation, so
    /// always current): their values' input functions, triggers, constraints and index
    /// expressions never run as the worker's superuser.
    pub fn open(target: Rc<Target>) -> Change {
        // SAFETY: executor setup as for a single-table modification, in the transaction's
        // memory (the caller's context is reset after each row) that `finish` frees; an error
        // aborts the transaction, which releases all of it and restores the worker's identity.
        unsafe {
            let rel = pg_sys::table_open(target.relid, pg_sys::RowExclusiveLock as i32);
            let owner = (*(*rel).rd_rel).relowner;
            // The merges run as the owner, as the SQL path's statement would.
            if let Some(d) = target
                .deltas
                .iter()
                .find(|d| !compat::may_execute(d.func, owner))
            {
                crate::raise(
                    PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                    format!("permission denied for function {}", d.name),
                );
            }
            let worker = crate::identity::become_owner(owner);
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
            let caller = pg_sys::MemoryContextSwitchTo(pg_sys::TopTransactionContext);
            let estate = pg_sys::CreateExecutorState();
            pg_sys::MemoryContextSwitchTo((*estate).es_query_cxt);
            let rte = PgBox::<pg_sys::RangeTblEntry>::alloc_node(pg_sys::NodeTag::T_RangeTblEntry)
                .into_pg();
            (*rte).rtekind = pg_sys::RTEKind::RTE_RELATION;
            (*rte).relid = target.relid;
            (*rte).relkind = (*(*rel).rd_rel).relkind;
            (*rte).rellockmode = pg_sys::AccessShareLock as i32;
            compat::exec_init_range_table(estate, rte);
            let rri = PgBox::<pg_sys::ResultRelInfo>::alloc_node(pg_sys::NodeTag::T_ResultRelInfo)
                .into_pg();
            pg_sys::InitResultRelInfo(rri, rel, 1, std::ptr::null_mut(), 0);
            (*estate).es_opened_result_relations =
                pg_sys::lappend((*estate).es_opened_result_relations, rri.cast());
            (*estate).es_output_cid = pg_sys::GetCurrentCommandId(true);
            pg_sys::AfterTriggerBeginQuery();
            // With what the searches of `insert_or_skip` and `lock_colliding` need.
            pg_sys::ExecOpenIndices(rri, true);
            let roles = index_roles(rri, target.index);
            let epq = pg_sys::palloc0(std::mem::size_of::<pg_sys::EPQState>()).cast();
            compat::epq_init(epq, estate);
            let slot = || pg_sys::table_slot_create(rel, &mut (*estate).es_tupleTable);
            let (search, local, row, other) = (slot(), slot(), slot(), slot());
            // Defaults are planned once per run, as the owner (an INSERT of the owner's
            // would evaluate them), and run in the per-row memory.
            pg_sys::MakePerTupleExprContext(estate);
            let defaults = target
                .defaults
                .iter()
                .filter_map(|&attnum| {
                    let expr = pg_sys::build_column_default(rel, attnum);
                    (!expr.is_null()).then(|| {
                        let planned = pg_sys::expression_planner(expr.cast());
                        (
                            attnum as usize - 1,
                            pg_sys::ExecInitExpr(planned, std::ptr::null_mut()),
                        )
                    })
                })
                .collect();
            pg_sys::MemoryContextSwitchTo(caller);
            Change {
                triggers: !(*rri).ri_TrigDesc.is_null(),
                target,
                rel,
                estate,
                rri,
                epq,
                search,
                local,
                row,
                other,
                found: false,
                conflicting: None,
                defaults,
                arbiters: roles.arbiters,
                other_unique: roles.other_unique,
                token: None,
                token_per_row: roles.exclusion,
                worker,
            }
        }
    }

    /// The local table this change writes.
    pub fn relid(&self) -> pg_sys::Oid {
        self.target.relid
    }

    /// Ends the run: the last AFTER triggers fire and the executor state is freed.
    pub fn finish(mut self) {
        self.release_token();
        // SAFETY: undoes `open` in reverse; the relation lock stays to the end of the
        // transaction.
        unsafe {
            pg_sys::ExecCloseIndices(self.rri);
            pg_sys::EvalPlanQualEnd(self.epq);
            pg_sys::AfterTriggerEndQuery(self.estate);
            pg_sys::ExecResetTupleTable((*self.estate).es_tupleTable, false);
            pg_sys::FreeExecutorState(self.estate);
            pg_sys::PopActiveSnapshot();
            pg_sys::CommandCounterIncrement();
            pg_sys::table_close(self.rel, pg_sys::NoLock as i32);
        }
        self.worker.restore();
    }

    /// After each written row: its AFTER triggers fire, and the next row sees it (a remote
    /// transaction may change the same row twice), as between two statements.
    fn row_done(&mut self) {
        // SAFETY: the executor state is open; the active snapshot is the one `open` pushed.
        unsafe {
            if self.triggers {
                pg_sys::AfterTriggerEndQuery(self.estate);
                pg_sys::AfterTriggerBeginQuery();
            }
            pg_sys::ExecClearTuple(self.local);
            pg_sys::ExecClearTuple(self.other);
            self.found = false;
            pg_sys::CommandCounterIncrement();
            (*self.estate).es_output_cid = pg_sys::GetCurrentCommandId(true);
            pg_sys::UpdateActiveSnapshotCommandId();
            let econtext = (*self.estate).es_per_tuple_exprcontext;
            if !econtext.is_null() {
                pg_sys::MemoryContextReset((*econtext).ecxt_per_tuple_memory);
            }
        }
    }

    /// `row` holding `values`; columns the provider left unchanged (TOAST) or did not send
    /// keep `base`'s values.
    fn fill_row(&self, values: &[Value], base: Option<*mut pg_sys::TupleTableSlot>) {
        let slot = self.row;
        // SAFETY: the slot's arrays have one entry per attribute of the relation, which every
        // `Column::att` indexes; datums are made in the caller's (per-row) memory.
        unsafe {
            let natts = (*(*slot).tts_tupleDescriptor).natts as usize;
            pg_sys::ExecClearTuple(slot);
            let out_values = std::slice::from_raw_parts_mut((*slot).tts_values, natts);
            let out_nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, natts);
            match base {
                Some(b) => {
                    pg_sys::slot_getallattrs(b);
                    out_values.copy_from_slice(std::slice::from_raw_parts((*b).tts_values, natts));
                    out_nulls.copy_from_slice(std::slice::from_raw_parts((*b).tts_isnull, natts));
                }
                None => {
                    out_nulls.fill(true);
                    let econtext = (*self.estate).es_per_tuple_exprcontext;
                    for &(att, state) in &self.defaults {
                        let mut isnull = false;
                        out_values[att] =
                            pg_sys::ExecEvalExprSwitchContext(state, econtext, &mut isnull);
                        out_nulls[att] = isnull;
                    }
                }
            }
            for (c, v) in self.target.columns.iter().zip(values) {
                match v {
                    Value::Null => out_nulls[c.att] = true,
                    Value::UnchangedToast if base.is_some() => {}
                    Value::UnchangedToast => error!(
                        "remote row for {} has an unchanged TOAST value but no local row to take it from",
                        self.name()
                    ),
                    v => {
                        out_values[c.att] = datum(c, v);
                        out_nulls[c.att] = false;
                    }
                }
            }
            pg_sys::ExecStoreVirtualTuple(slot);
        }
    }

    fn name(&self) -> String {
        // SAFETY: the relation is open.
        unsafe {
            let form = (*self.rel).rd_rel;
            let nsp = pg_sys::get_namespace_name((*form).relnamespace);
            format!(
                "{}.{}",
                std::ffi::CStr::from_ptr(nsp).to_string_lossy(),
                pgrx::name_data_to_str(&(*form).relname)
            )
        }
    }

    /// Finds the local row with `values`' key and locks it; returns its xmin. Without an
    /// index nothing is found here (the SQL path looks).
    pub fn lock_row(&mut self, values: &[Value]) -> Option<pg_sys::TransactionId> {
        let search = self.search;
        let index = self.target.index?;
        // SAFETY: only the key columns are read by the index lookup.
        unsafe {
            let natts = (*(*search).tts_tupleDescriptor).natts as usize;
            pg_sys::ExecClearTuple(search);
            std::slice::from_raw_parts_mut((*search).tts_isnull, natts).fill(true);
            for &i in &self.target.key {
                let c = &self.target.columns[i];
                *(*search).tts_values.add(c.att) = datum(c, &values[i]);
                *(*search).tts_isnull.add(c.att) = false;
            }
            pg_sys::ExecStoreVirtualTuple(search);
            pg_sys::ExecClearTuple(self.local);
            self.found = pg_sys::RelationFindReplTupleByIndex(
                self.rel,
                index,
                pg_sys::LockTupleMode::LockTupleExclusive,
                search,
                self.local,
            );
            self.found.then(|| xmin_of(self.local))
        }
    }

    /// Inserts the row unless a unique index already holds its key (then returns false and
    /// changes nothing). A concurrent insert of the same key waits or loses, like
    /// `INSERT … ON CONFLICT DO NOTHING`.
    ///
    /// The insert is tried first, speculatively, and unique indexes report a duplicate instead
    /// of raising an error; only then is the conflict looked at (waiting for an insert still
    /// in progress). The usual case — a new key — thus costs one index search, not two.
    pub fn insert_or_skip(&mut self, values: &[Value]) -> bool {
        self.fill_row(values, None);
        let slot = self.row;
        // SAFETY: the executor steps of an insert, with speculative insertion for the unique
        // indexes opened in `open`; the table AM calls go through pgrx's shims.
        unsafe {
            if !self.before_insert(slot) {
                self.row_done();
                return true;
            }
            loop {
                let token = self.token();
                pg_sys::table_tuple_insert_speculative(
                    self.rel,
                    slot,
                    (*self.estate).es_output_cid,
                    0,
                    std::ptr::null_mut(),
                    token,
                );
                let mut spec_conflict = false;
                let recheck = compat::insert_index_tuples(
                    self.rri,
                    slot,
                    self.estate,
                    true,
                    &mut spec_conflict,
                );
                pg_sys::table_tuple_complete_speculative(self.rel, slot, token, !spec_conflict);
                if self.token_per_row {
                    self.release_token();
                }
                if !spec_conflict {
                    pg_sys::ExecARInsertTriggers(
                        self.estate,
                        self.rri,
                        slot,
                        recheck,
                        std::ptr::null_mut(),
                    );
                    pg_sys::list_free(recheck);
                    self.row_done();
                    return true;
                }
                pg_sys::list_free(recheck);
                // The row was taken back: whoever waits on the token may go on, before this
                // worker waits in turn.
                self.release_token();
                // A unique index holds the key, perhaps by an insert still in progress: wait
                // for it; if it went away (rolled back), insert again.
                let mut conflict = pg_sys::ItemPointerData::default();
                if !compat::check_index_constraints(
                    self.rri,
                    slot,
                    self.estate,
                    &mut conflict,
                    self.arbiters,
                ) {
                    self.conflicting = Some(conflict);
                    return false;
                }
            }
        }
    }

    /// The speculative-insertion token of this run's inserts, locked at the first one.
    ///
    /// One token serves every row of the run instead of one per row, which saves a lock
    /// acquired and released per row (a tenth of a bulk insert's apply CPU). Whoever finds one
    /// of these rows while it is being inserted waits on the token, and is let go when the run
    /// ends instead of when the row is confirmed; but a unique index's check then waits for a
    /// confirmed row's transaction, this one, anyway. The case where it must not wait — the
    /// row was taken back after a conflict — releases the token at once. An exclusion
    /// constraint's check during another speculative insertion waits only while a row is
    /// speculative (and otherwise takes its own row back first), so on a table with one the
    /// token is released after each row, as core does.
    fn token(&mut self) -> u32 {
        // SAFETY: inside the apply transaction, which has (or here takes) an xid.
        let xid = unsafe { pg_sys::GetCurrentTransactionId() };
        if let Some((taken_by, token)) = self.token {
            if taken_by == xid {
                return token;
            }
            // Waiters look the token up under the row's xmin, so a subtransaction's rows need
            // one under its own xid. The other one stays with the (sub)transaction that took
            // it (only its resource owner may release it) until that ends.
            self.token = None;
        }
        // SAFETY: the lock is released by `release_token` or by the transaction's end.
        let token = unsafe { pg_sys::SpeculativeInsertionLockAcquire(xid) };
        self.token = Some((xid, token));
        token
    }

    /// Releases the token `token` locked, if any. By its own lock tag: the backend-wide
    /// "current token" that `SpeculativeInsertionLockRelease` uses may have moved on if user
    /// code of this run (a default, a trigger) ran an `INSERT … ON CONFLICT` of its own.
    fn release_token(&mut self) {
        let Some((xid, token)) = self.token.take() else {
            return;
        };
        // Taken at another (sub)transaction level: left to that level's end (`token`).
        // SAFETY: reads the current (sub)transaction's xid.
        if xid != unsafe { pg_sys::GetCurrentTransactionIdIfAny() } {
            return;
        }
        let tag = pg_sys::LOCKTAG {
            locktag_field1: xid.into(),
            locktag_field2: token,
            locktag_field3: 0,
            locktag_field4: 0,
            locktag_type: pg_sys::LockTagType::LOCKTAG_SPECULATIVE_TOKEN as u8,
            locktag_lockmethodid: pg_sys::DEFAULT_LOCKMETHOD as u8,
        };
        // SAFETY: the lock `SpeculativeInsertionLockAcquire` took for this tag, still held
        // (only this function releases it before the transaction ends).
        unsafe { pg_sys::LockRelease(&tag, pg_sys::ExclusiveLock as i32, false) };
    }

    /// BEFORE ROW triggers, generated columns and constraints of a new row; false when a
    /// trigger suppressed it.
    unsafe fn before_insert(&self, slot: *mut pg_sys::TupleTableSlot) -> bool {
        // SAFETY: the caller's slot belongs to this relation.
        unsafe {
            let trig = (*self.rri).ri_TrigDesc;
            if !trig.is_null()
                && (*trig).trig_insert_before_row
                && !pg_sys::ExecBRInsertTriggers(self.estate, self.rri, slot)
            {
                return false;
            }
            let constr = (*(*self.rel).rd_att).constr;
            if !constr.is_null() {
                if (*constr).has_generated_stored {
                    pg_guard_ffi_boundary(|| {
                        ExecComputeStoredGenerated(
                            self.rri,
                            self.estate,
                            slot,
                            pg_sys::CmdType::CMD_INSERT,
                        )
                    });
                }
                pg_sys::ExecConstraints(self.rri, slot, self.estate);
            }
            if (*(*self.rel).rd_rel).relispartition {
                pg_sys::ExecPartitionCheck(self.rri, slot, self.estate, true);
            }
            true
        }
    }

    /// Locks the row a unique index reported when `insert_or_skip` last skipped (it may hold
    /// another key: the conflict was on a unique index other than the replica identity) and
    /// returns its xmin; `None` when that row changed meanwhile (try the insert again).
    pub fn lock_conflicting(&mut self) -> Option<pg_sys::TransactionId> {
        let tid = self.conflicting.take()?;
        self.found = self.lock_tid(tid, self.local).is_some();
        // SAFETY: `local` holds the row just locked, if any.
        self.found.then(|| unsafe { xmin_of(self.local) })
    }

    /// Before updating the row `lock_row` found: another local row holding the new values of
    /// a unique index other than the replica identity. Locks it into `other` and returns its
    /// xmin; `delete_other` removes it.
    pub fn lock_colliding(&mut self, values: &[Value]) -> Option<pg_sys::TransactionId> {
        assert!(self.found, "lock_colliding without a locked row");
        // Most tables have no other unique index: then the row is not even built.
        if self.other_unique.is_empty() {
            return None;
        }
        self.fill_row(values, Some(self.local));
        // SAFETY: the indexes opened in `open` (with what unique checks need); each check
        // reads the index's columns or expressions of `row`, waiting for inserts in progress.
        unsafe {
            for i in 0..self.other_unique.len() {
                let oid = self.other_unique[i];
                let only = pg_sys::lappend_oid(std::ptr::null_mut(), oid);
                let mut tid = pg_sys::ItemPointerData::default();
                let free = compat::check_index_constraints(
                    self.rri,
                    self.row,
                    self.estate,
                    &mut tid,
                    only,
                );
                pg_sys::list_free(only);
                // The row being updated holds this value already: no one else does.
                if free || pg_sys::ItemPointerEquals(&mut tid, &mut (*self.local).tts_tid) {
                    continue;
                }
                if self.lock_tid(tid, self.other).is_some() {
                    return Some(xmin_of(self.other));
                }
            }
            None
        }
    }

    /// Locks the current version of the tuple at `tid` into `slot`; `None` when it was
    /// updated or deleted meanwhile.
    fn lock_tid(
        &mut self,
        mut tid: pg_sys::ItemPointerData,
        slot: *mut pg_sys::TupleTableSlot,
    ) -> Option<()> {
        // SAFETY: locks a tuple of the open relation into one of its slots, as
        // RelationFindReplTupleByIndex does after its index scan.
        unsafe {
            pg_sys::ExecClearTuple(slot);
            let mut failure = pg_sys::TM_FailureData::default();
            let result = pg_sys::table_tuple_lock(
                self.rel,
                &mut tid,
                pg_sys::GetLatestSnapshot(),
                slot,
                pg_sys::GetCurrentCommandId(false),
                pg_sys::LockTupleMode::LockTupleExclusive,
                pg_sys::LockWaitPolicy::LockWaitBlock,
                0,
                &mut failure,
            );
            (result == pg_sys::TM_Result::TM_Ok).then_some(())
        }
    }

    /// Deletes the row `lock_colliding` found, so the update can take its values.
    pub fn delete_other(&mut self) {
        // SAFETY: `other` holds the locked colliding row's tid.
        unsafe {
            pg_sys::ExecSimpleRelationDelete(self.rri, self.estate, self.epq, self.other);
            pg_sys::ExecClearTuple(self.other);
            // The update that follows must see the delete.
            pg_sys::CommandCounterIncrement();
            (*self.estate).es_output_cid = pg_sys::GetCurrentCommandId(true);
            pg_sys::UpdateActiveSnapshotCommandId();
        }
    }

    /// The merged values of the delta-apply columns for a remote update from `old` to `new`
    /// of the row `lock_row` found: (attribute index, datum, is null). Columns whose old
    /// value was not sent are left out (they follow last-update-wins).
    pub fn merged_deltas(&self, old: Option<&[Value]>, new: &[Value]) -> Vec<Merged> {
        let Some(old) = old else { return Vec::new() };
        assert!(self.found, "merged_deltas without a locked row");
        let mut out = Vec::new();
        for d in &self.target.deltas {
            let (Some(o @ (Value::Text(_) | Value::Binary(_))), Some(n)) =
                (old.get(d.col), new.get(d.col))
            else {
                continue;
            };
            let c = &self.target.columns[d.col];
            let new_value = match n {
                Value::Null => (pg_sys::Datum::from(0), true),
                Value::UnchangedToast => continue,
                v => (datum(c, v), false),
            };
            let mut isnull = false;
            // SAFETY: `local` holds the locked row; `att` indexes the relation's attributes.
            let local = unsafe { pg_sys::slot_getattr(self.local, c.att as i32 + 1, &mut isnull) };
            let (value, isnull) = call3(d, [(datum(c, o), false), new_value, (local, isnull)]);
            out.push(Merged {
                att: c.att,
                value,
                isnull,
            });
        }
        out
    }

    /// `row` with the merged delta values put in.
    fn put_merged(&self, merged: &[Merged]) {
        // SAFETY: `row` holds a virtual tuple of the relation, whose arrays `att` indexes.
        unsafe {
            for m in merged {
                *(*self.row).tts_values.add(m.att) = m.value;
                *(*self.row).tts_isnull.add(m.att) = m.isnull;
            }
        }
    }

    /// The delta-apply columns of a remote update that lost merge into the row `lock_row`
    /// found, which keeps its other values and, through a subtransaction stamped with `keep`
    /// (its own commit timestamp and origin; kernel capability), its version: later
    /// comparisons still see the local write's.
    pub fn merge_found(&mut self, merged: &[Merged], keep: Option<(i64, u16)>) {
        assert!(self.found, "merge_found without a locked row");
        self.fill_row(&[], Some(self.local));
        self.put_merged(merged);
        // The executor state (the parent transaction's) stays valid in the subtransaction.
        super::versions::keeping_version(keep, || {
            // SAFETY: `local` holds the locked row's tid; both slots belong to this relation.
            unsafe {
                pg_sys::ExecSimpleRelationUpdate(
                    self.rri,
                    self.estate,
                    self.epq,
                    self.local,
                    self.row,
                )
            }
        });
        self.row_done();
    }

    /// Updates the row `lock_row` found with `values` (unchanged TOAST values kept) and the
    /// merged delta values.
    pub fn update_found(&mut self, values: &[Value], merged: &[Merged]) {
        assert!(self.found, "update_found without a locked row");
        self.fill_row(values, Some(self.local));
        self.put_merged(merged);
        // SAFETY: `local` holds the locked row's tid; both slots belong to this relation.
        unsafe {
            pg_sys::ExecSimpleRelationUpdate(self.rri, self.estate, self.epq, self.local, self.row)
        };
        self.row_done();
    }

    /// Deletes the row `lock_row` found.
    pub fn delete_found(&mut self) {
        assert!(self.found, "delete_found without a locked row");
        // SAFETY: `local` holds the locked row's tid.
        unsafe { pg_sys::ExecSimpleRelationDelete(self.rri, self.estate, self.epq, self.local) };
        self.row_done();
    }

    /// Updates the row `lock_row` found when the remote change `wins` last-update-wins, else
    /// lets go of it unchanged.
    pub fn update_if(&mut self, wins: bool, values: &[Value], merged: &[Merged]) {
        if wins {
            self.update_found(values, merged);
        } else {
            self.keep_found();
        }
    }

    /// Lets go of the row `lock_row` found without changing it (last-update-wins kept it).
    pub fn keep_found(&mut self) {
        self.row_done();
    }
}

/// A delta-apply column's merged value (see `Change::merged_deltas`).
pub struct Merged {
    att: usize,
    value: pg_sys::Datum,
    isnull: bool,
}

/// What a run needs to know of the table's indexes, from one pass over them.
struct IndexRoles {
    /// The indexes a new row's key may collide on at insert time: unique and exclusion
    /// indexes checked at once (a deferrable one is checked at commit, as for any insert), as
    /// a list in the current memory context.
    arbiters: *mut pg_sys::List,
    /// Of those, the unique ones other than the replica identity, for `lock_colliding`.
    other_unique: Vec<pg_sys::Oid>,
    /// One of the indexes backs an exclusion constraint.
    exclusion: bool,
}

/// The `IndexRoles` of `rri`'s indexes, `key` being the replica identity's. Indexes not ready
/// for inserts (a `CREATE INDEX CONCURRENTLY` under way, or one that failed) are no
/// arbiters: `ExecCheckIndexConstraints` passes over them and then reports a missing arbiter.
///
/// # Safety
/// `rri`'s indexes are open (`ExecOpenIndices`).
unsafe fn index_roles(rri: *mut pg_sys::ResultRelInfo, key: Option<pg_sys::Oid>) -> IndexRoles {
    let mut roles = IndexRoles {
        arbiters: std::ptr::null_mut(),
        other_unique: Vec::new(),
        exclusion: false,
    };
    // SAFETY: the arrays hold `ri_NumIndices` open indexes and their infos.
    unsafe {
        let n = (*rri).ri_NumIndices as usize;
        let descs = std::slice::from_raw_parts((*rri).ri_IndexRelationDescs, n);
        let infos = std::slice::from_raw_parts((*rri).ri_IndexRelationInfo, n);
        for (&index, &info) in descs.iter().zip(infos) {
            let exclusion = !(*info).ii_ExclusionOps.is_null();
            roles.exclusion |= exclusion;
            let checked_now = (*info).ii_ReadyForInserts && (*(*index).rd_index).indimmediate;
            if !checked_now || !((*info).ii_Unique || exclusion) {
                continue;
            }
            let oid = (*index).rd_id;
            roles.arbiters = pg_sys::lappend_oid(roles.arbiters, oid);
            if (*info).ii_Unique && Some(oid) != key {
                roles.other_unique.push(oid);
            }
        }
    }
    roles
}

/// `f(old, new, local)` of a delta column (a strict function of a NULL is NULL).
fn call3(d: &Delta, args: [(pg_sys::Datum, bool); 3]) -> (pg_sys::Datum, bool) {
    if d.strict && args.iter().any(|a| a.1) {
        return (pg_sys::Datum::from(0), true);
    }
    // SAFETY: a call frame of three arguments (as the server's LOCAL_FCINFO sizes it) for a
    // function whose call info `Target::describe` set up; the call goes through the guard.
    unsafe {
        let size = std::mem::size_of::<pg_sys::FunctionCallInfoBaseData>()
            + 3 * std::mem::size_of::<pg_sys::NullableDatum>();
        let fcinfo = pg_sys::palloc0(size).cast::<pg_sys::FunctionCallInfoBaseData>();
        (*fcinfo).flinfo = d.call.as_ptr();
        (*fcinfo).fncollation = d.collation;
        (*fcinfo).nargs = 3;
        let slots = (*fcinfo).args.as_mut_slice(3);
        for (slot, (value, isnull)) in slots.iter_mut().zip(args) {
            slot.value = value;
            slot.isnull = isnull;
        }
        let f = (*d.call.as_ptr())
            .fn_addr
            .unwrap_or_else(|| error!("delta function {} has no address", d.name));
        let value = pg_guard_ffi_boundary(|| f(fcinfo));
        let isnull = (*fcinfo).isnull;
        pg_sys::pfree(fcinfo.cast());
        (value, isnull)
    }
}

/// The xmin of the row in `slot`.
///
/// # Safety
/// `slot` holds a heap tuple.
unsafe fn xmin_of(slot: *mut pg_sys::TupleTableSlot) -> pg_sys::TransactionId {
    let mut isnull = false;
    // SAFETY: the caller's slot holds a tuple with system columns.
    let xmin = unsafe {
        pg_sys::slot_getsysattr(slot, pg_sys::MinTransactionIdAttributeNumber, &mut isnull)
    };
    pg_sys::TransactionId::from(xmin.value() as u32)
}

/// The local datum of a sent value (text through the input function, binary through the
/// receive function of the provider's built-in type, or of the local type otherwise).
fn datum(c: &Column, v: &Value) -> pg_sys::Datum {
    match v {
        Value::Text(t) => input(c, t),
        Value::Binary(b) => {
            let wire_type = c.remote_builtin.unwrap_or(c.typid);
            if wire_type == c.typid {
                let (info, param) = c.receive.get_or_init(|| {
                    // SAFETY: the call info lives as long as the worker's cache.
                    super::binary::receive_info(c.typid, unsafe { pg_sys::TopMemoryContext })
                });
                super::binary::receive_with(info, *param, c.typmod, b)
            } else {
                let d = super::binary::receive(wire_type, c.typmod, b);
                // Same-named built-in types differ between the nodes: go through text.
                input(c, &super::binary::output(wire_type, d))
            }
        }
        Value::Null | Value::UnchangedToast => unreachable!("handled by the caller"),
        Value::Internal(_) => {
            error!("internal-format values are not accepted by this apply worker")
        }
    }
}

/// The local datum of a value's text form, by the column's input function.
fn input(c: &Column, text: &[u8]) -> pg_sys::Datum {
    // SAFETY: a NUL-terminated copy for the input function, which returns a datum in the
    // current (executor) memory.
    unsafe {
        let s = pg_sys::pnstrdup(text.as_ptr().cast(), text.len());
        pg_sys::InputFunctionCall(c.input.as_ptr(), s, c.input_param, c.typmod)
    }
}
