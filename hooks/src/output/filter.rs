//! Row filters of replication-set memberships: parsed once when a table joins a set (like a
//! CHECK expression on that table, stored as a node tree), and evaluated by the output plugin
//! on every tuple it would publish. A table in several subscribed sets must pass all of their
//! filters.

use pgrx::PgList;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::CString;

fn invalid(message: String) -> ! {
    crate::raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, message)
}

/// Parses `filter` as a boolean expression over the columns of `relation`, resolving names with
/// `search_path` (the caller's, as upstream does), and returns its node tree (`pg_node_tree`):
/// the tree names functions, operators and types by oid, so it evaluates the same later under
/// the walsender's safe search path. Subqueries, aggregates, window functions and other tables
/// are refused, as in a CHECK constraint; stable and volatile functions are allowed (upstream
/// documents that what they write is the user's business). Errors carry upstream's context
/// line, `invalid row_filter expression "…"`, and no other.
#[pg_extern(sql = false)]
fn spock_parse_row_filter(relation: pg_sys::Oid, filter: &str, search_path: &str) -> String {
    let sql = CString::new(format!("SELECT {filter}"))
        .unwrap_or_else(|_| invalid("row_filter contains a NUL byte".into()));
    let shown = CString::new(filter).unwrap_or_default();
    // SAFETY: the callback and its argument live in the function's memory context, which
    // outlasts the report of an error raised here; the previous stack comes back on success
    // (an error restores it wherever it is caught).
    let saved = unsafe {
        let callback = pg_sys::palloc0(std::mem::size_of::<pg_sys::ErrorContextCallback>())
            .cast::<pg_sys::ErrorContextCallback>();
        (*callback).callback = Some(row_filter_context);
        (*callback).arg = pg_sys::pstrdup(shown.as_ptr()).cast();
        (*callback).previous = std::ptr::null_mut();
        let saved = pg_sys::error_context_stack;
        pg_sys::error_context_stack = callback;
        saved
    };
    // SAFETY: a nest level of our own for the caller's search_path, closed below.
    let nest = unsafe { pg_sys::NewGUCNestLevel() };
    crate::identity::set_search_path(search_path);
    let tree = parse(relation, filter, &sql);
    // SAFETY: closes the level opened above and restores the error context stack.
    unsafe {
        pg_sys::AtEOXact_GUC(false, nest);
        pg_sys::error_context_stack = saved;
    }
    tree
}

unsafe extern "C-unwind" {
    fn errcontext_msg(fmt: *const std::ffi::c_char, ...) -> std::ffi::c_int;
}

/// Adds `invalid row_filter expression "<filter>"` to an error's context.
unsafe extern "C-unwind" fn row_filter_context(arg: *mut std::ffi::c_void) {
    // SAFETY: called by errfinish with the pstrdup'd filter as argument.
    unsafe {
        pg_sys::set_errcontext_domain(std::ptr::null());
        errcontext_msg(
            c"invalid row_filter expression \"%s\"".as_ptr(),
            arg.cast::<std::ffi::c_char>(),
        );
    }
}

fn parse(relation: pg_sys::Oid, filter: &str, sql: &CString) -> String {
    // SAFETY: parser and analyser calls inside the caller's transaction; every pointer comes
    // from them and is checked before use.
    unsafe {
        let stmts = PgList::<pg_sys::RawStmt>::from_pg(pg_sys::raw_parser(
            sql.as_ptr(),
            pg_sys::RawParseMode::RAW_PARSE_DEFAULT,
        ));
        let select = stmts
            .get_ptr(0)
            .filter(|_| stmts.len() == 1)
            .map(|raw| (*raw).stmt)
            .filter(|&stmt| (*stmt).type_ == pg_sys::NodeTag::T_SelectStmt)
            .map(|stmt| stmt.cast::<pg_sys::SelectStmt>());
        let single = |s: *mut pg_sys::SelectStmt| {
            let s = &*s;
            s.op == pg_sys::SetOperation::SETOP_NONE
                && PgList::<pg_sys::ResTarget>::from_pg(s.targetList).len() == 1
                && s.distinctClause.is_null()
                && s.intoClause.is_null()
                && s.fromClause.is_null()
                && s.whereClause.is_null()
                && s.groupClause.is_null()
                && s.havingClause.is_null()
                && s.windowClause.is_null()
                && s.valuesLists.is_null()
                && s.sortClause.is_null()
                && s.limitOffset.is_null()
                && s.limitCount.is_null()
                && s.lockingClause.is_null()
                && s.withClause.is_null()
        };
        let Some(target) = select
            .filter(|&s| single(s))
            .and_then(|s| PgList::<pg_sys::ResTarget>::from_pg((*s).targetList).get_ptr(0))
            .filter(|&t| (*t).name.is_null())
        else {
            invalid(format!(
                "row_filter must be a single expression, not \"{filter}\""
            ));
        };
        let rel = pg_sys::relation_open(relation, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let pstate = pg_sys::make_parsestate(std::ptr::null_mut());
        (*pstate).p_sourcetext = sql.as_ptr();
        let item = pg_sys::addRangeTableEntryForRelation(
            pstate,
            rel,
            pg_sys::AccessShareLock as pg_sys::LOCKMODE,
            std::ptr::null_mut(),
            false,
            true,
        );
        pg_sys::addNSItemToQuery(pstate, item, true, true, true);
        let expr = pg_sys::transformExpr(
            pstate,
            (*target).val,
            pg_sys::ParseExprKind::EXPR_KIND_CHECK_CONSTRAINT,
        );
        let expr = pg_sys::coerce_to_boolean(pstate, expr, c"row_filter".as_ptr());
        pg_sys::assign_expr_collations(pstate, expr);
        let tree = std::ffi::CStr::from_ptr(pg_sys::nodeToString(expr.cast()))
            .to_string_lossy()
            .into_owned();
        pg_sys::relation_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        tree
    }
}

/// The prepared filters of one published relation.
pub struct RowFilter {
    context: pg_sys::MemoryContext,
    estate: *mut pg_sys::EState,
    econtext: *mut pg_sys::ExprContext,
    state: *mut pg_sys::ExprState,
    slot: *mut pg_sys::TupleTableSlot,
    /// The table's owner: the filter runs with their rights, not the walsender's (a function
    /// it calls, an operator's or a domain's code are someone's).
    owner: pg_sys::Oid,
}

impl std::fmt::Debug for RowFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RowFilter")
    }
}

impl RowFilter {
    /// Prepares the AND of the node trees `trees` for tuples of `relation`.
    ///
    /// # Safety
    /// Inside a transaction; `relation` is open.
    pub unsafe fn new(relation: pg_sys::Relation, trees: &[String]) -> RowFilter {
        // SAFETY: everything is allocated in a context of its own, deleted on drop.
        unsafe {
            let context = pg_sys::AllocSetContextCreateInternal(
                pg_sys::TopMemoryContext,
                c"spock row filter".as_ptr(),
                0,
                8 * 1024,
                8 * 1024 * 1024,
            );
            let old = pg_sys::MemoryContextSwitchTo(context);
            let mut parts: *mut pg_sys::List = std::ptr::null_mut();
            for tree in trees {
                // A stored pg_node_tree is text, which cannot hold a NUL.
                let Ok(tree) = CString::new(tree.as_str()) else {
                    crate::raise(
                        PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
                        "row filter of a replication set member is not a valid node tree".into(),
                    );
                };
                parts = pg_sys::lappend(parts, pg_sys::stringToNode(tree.as_ptr()));
            }
            let expr = match PgList::<pg_sys::Expr>::from_pg(parts).get_ptr(0) {
                Some(only) if trees.len() == 1 => only,
                _ => pg_sys::make_andclause(parts),
            };
            let estate = pg_sys::CreateExecutorState();
            let state = pg_sys::ExecPrepareExpr(expr, estate);
            let econtext = pg_sys::CreateExprContext(estate);
            // A copy of the descriptor: the relation's own is pinned per transaction, and this
            // slot outlives the transaction it is made in.
            let slot = pg_sys::MakeSingleTupleTableSlot(
                pg_sys::CreateTupleDescCopyConstr((*relation).rd_att),
                &pg_sys::TTSOpsHeapTuple,
            );
            pg_sys::MemoryContextSwitchTo(old);
            RowFilter {
                context,
                estate,
                econtext,
                state,
                slot,
                owner: (*(*relation).rd_rel).relowner,
            }
        }
    }

    /// Whether `tuple` is published. A NULL result publishes it only when `null_passes`
    /// (deletes: their old tuple may hold the key columns alone).
    ///
    /// # Safety
    /// `tuple` is a tuple of the relation the filter was prepared for.
    pub unsafe fn passes(&self, tuple: pg_sys::HeapTuple, null_passes: bool) -> bool {
        // SAFETY: evaluation in the filter's own per-tuple memory, reset afterwards; the
        // snapshot pushed here is popped before returning (an ERROR pops it with the abort).
        unsafe {
            pg_sys::ExecStoreHeapTuple(tuple, self.slot, false);
            // An unchanged TOASTed value of an UPDATE is still a pointer into the table, which
            // cannot be read while decoding: publish such a row rather than guess.
            if has_ondisk_toast(self.slot) {
                pg_sys::ExecClearTuple(self.slot);
                return true;
            }
            (*self.econtext).ecxt_scantuple = self.slot;
            // A filter calling a PL/pgSQL (or other non-inlined) function needs an active
            // snapshot ("cannot execute SQL without an outer snapshot or portal"); while
            // decoding, the transaction snapshot is the historic one of this WAL position. A
            // copy: popping must never free the reorder buffer's own snapshot.
            let push = !pg_sys::ActiveSnapshotSet();
            if push {
                pg_sys::PushCopiedSnapshot(pg_sys::GetTransactionSnapshot());
            }
            let mut isnull = false;
            let owner = crate::identity::become_owner(self.owner);
            let result = pg_sys::ExecEvalExprSwitchContext(self.state, self.econtext, &mut isnull);
            owner.restore();
            if push {
                pg_sys::PopActiveSnapshot();
            }
            let passes = if isnull {
                null_passes
            } else {
                result.value() != 0
            };
            pg_sys::MemoryContextReset((*self.econtext).ecxt_per_tuple_memory);
            pg_sys::ExecClearTuple(self.slot);
            passes
        }
    }
}

/// Whether a stored tuple holds a value that still points into its TOAST table.
///
/// # Safety
/// `slot` holds a tuple.
unsafe fn has_ondisk_toast(slot: *mut pg_sys::TupleTableSlot) -> bool {
    // SAFETY: the slot's descriptor and values, deformed here.
    unsafe {
        let desc = (*slot).tts_tupleDescriptor;
        let natts = (*desc).natts as usize;
        pg_sys::slot_getsomeattrs_int(slot, natts as i32);
        let attrs = crate::compat::tuple_desc_attrs(desc);
        (0..natts).any(|i| {
            let isnull = *(*slot).tts_isnull.add(i);
            if isnull || attrs[i].attlen != -1 || attrs[i].attisdropped {
                return false;
            }
            let value = (*(*slot).tts_values.add(i)).cast_mut_ptr::<pg_sys::varlena>();
            pgrx::varlena::varatt_is_1b_e(value)
                && u32::from(pgrx::varlena::vartag_1b_e(value))
                    == pg_sys::vartag_external::VARTAG_ONDISK
        })
    }
}

impl Drop for RowFilter {
    fn drop(&mut self) {
        // SAFETY: these were created in `new` and are not used after this.
        unsafe {
            pg_sys::ExecDropSingleTupleTableSlot(self.slot);
            pg_sys::FreeExecutorState(self.estate);
            pg_sys::MemoryContextDelete(self.context);
        }
    }
}
