//! A table's memberships in replication sets are dependencies, as upstream's are: dropping a
//! member table (or a column its membership names in a column list or row filter, or a
//! function its row filter calls) without CASCADE fails with core's wording, and with CASCADE
//! the memberships go with it (NOTICE "drop cascades to table t membership in replication set
//! s"). A dropped table's synchronisation rows and tombstones go too.
//!
//! Upstream keeps `spock.depend` rows and runs its own copy of core's dependency code from an
//! object-access hook. Here the memberships themselves are the dependency records (the
//! catalog cannot disagree with them), read by the same kind of hook when core drops a
//! relation, a column or a function; `spock.depend` stays empty.

use crate::catalog;
use crate::identity::as_superuser;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use std::cell::Cell;
use std::ffi::CStr;

thread_local! {
    /// Whether the utility statement running now asked for CASCADE.
    static CASCADE: Cell<bool> = const { Cell::new(false) };
}

/// Whether a utility statement drops with CASCADE (DROP …, ALTER TABLE … DROP COLUMN,
/// DROP OWNED).
///
/// # Safety
/// `stmt` is a parsed utility statement.
pub unsafe fn statement_cascades(stmt: *mut pg_sys::Node) -> bool {
    use pg_sys::NodeTag as T;
    let cascade = pg_sys::DropBehavior::DROP_CASCADE;
    // SAFETY: each cast matches the node's tag.
    unsafe {
        match (*stmt).type_ {
            T::T_DropStmt => (*stmt.cast::<pg_sys::DropStmt>()).behavior == cascade,
            T::T_DropOwnedStmt => (*stmt.cast::<pg_sys::DropOwnedStmt>()).behavior == cascade,
            T::T_AlterTableStmt => pgrx::PgList::<pg_sys::AlterTableCmd>::from_pg(
                (*stmt.cast::<pg_sys::AlterTableStmt>()).cmds,
            )
            .iter_ptr()
            .any(|cmd| {
                (*cmd).subtype == pg_sys::AlterTableType::AT_DropColumn
                    && (*cmd).behavior == cascade
            }),
            _ => false,
        }
    }
}

/// Records the behaviour of the utility statement about to run; returns the previous one, for
/// [`restore`] once it has run.
pub fn enter_statement(cascade: bool) -> bool {
    CASCADE.with(|c| c.replace(cascade))
}

pub fn restore(previous: bool) {
    CASCADE.with(|c| c.set(previous));
}

static mut PREVIOUS: pg_sys::object_access_hook_type = None;

/// Installs the object-access hook (from `_PG_init`).
pub fn install() {
    // SAFETY: postmaster start-up, single-threaded; the previous hook is chained.
    unsafe {
        PREVIOUS = pg_sys::object_access_hook;
        pg_sys::object_access_hook = Some(object_access);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn object_access(
    access: pg_sys::ObjectAccessType::Type,
    class_id: pg_sys::Oid,
    object_id: pg_sys::Oid,
    sub_id: std::ffi::c_int,
    arg: *mut std::ffi::c_void,
) {
    // SAFETY: the previous hook gets PostgreSQL's arguments unchanged.
    unsafe {
        if let Some(previous) = PREVIOUS {
            pg_sys::submodules::ffi::pg_guard_ffi_boundary(|| {
                previous(access, class_id, object_id, sub_id, arg)
            });
        }
    }
    if access != pg_sys::ObjectAccessType::OAT_DROP || sub_id < 0 {
        return;
    }
    // SAFETY: a drop's argument is an ObjectAccessDrop; the flag reads need no lock.
    let internal = unsafe {
        !arg.is_null()
            && (*arg.cast::<pg_sys::ObjectAccessDrop>()).dropflags
                & pg_sys::PERFORM_DELETION_INTERNAL as i32
                != 0
    };
    if internal {
        return;
    }
    if class_id == pg_sys::RelationRelationId {
        // SAFETY: syscache lookups of the relation being dropped (still in the catalog).
        let (relkind, nsp) = unsafe {
            (
                pg_sys::get_rel_relkind(object_id) as u8,
                pg_sys::get_rel_namespace(object_id),
            )
        };
        if matches!(relkind, b'r' | b'p') && catalog_present(nsp) {
            dropping_relation(object_id, sub_id);
        }
    } else if class_id == pg_sys::ProcedureRelationId {
        // SAFETY: a syscache lookup of the function being dropped.
        let nsp = unsafe { pg_sys::get_func_namespace(object_id) };
        if catalog_present(nsp) {
            dropping_function(object_id);
        }
    }
}

/// Whether this database has spock's membership catalog and the object being dropped (in
/// namespace `object_nsp`) is not part of spock (DROP EXTENSION drops spock's objects one by
/// one).
fn catalog_present(object_nsp: pg_sys::Oid) -> bool {
    // SAFETY: catalog lookups inside the dropping transaction.
    unsafe {
        if pg_sys::get_extension_oid(c"spock".as_ptr(), true) == pg_sys::InvalidOid {
            return false;
        }
        let nsp = pg_sys::get_namespace_oid(c"spock".as_ptr(), true);
        nsp != pg_sys::InvalidOid
            && object_nsp != nsp
            && [
                c"replication_set_table",
                c"replication_set",
                c"local_sync_status",
            ]
            .iter()
            .all(|name| pg_sys::get_relname_relid(name.as_ptr(), nsp) != pg_sys::InvalidOid)
    }
}

/// One membership that depends on what is being dropped.
struct Member {
    set_id: pg_sys::Oid,
    relid: pg_sys::Oid,
    description: String,
}

/// Core's description of an object ("table t", "column c of table t", "function f(text)").
fn describe(class_id: pg_sys::Oid, object_id: pg_sys::Oid, sub_id: i32) -> String {
    let address = pg_sys::ObjectAddress {
        classId: class_id,
        objectId: object_id,
        objectSubId: sub_id,
    };
    // SAFETY: the object exists (it is being dropped); the result is a palloc'd string.
    unsafe {
        CStr::from_ptr(pg_sys::getObjectDescription(&address, false))
            .to_string_lossy()
            .into_owned()
    }
}

/// Whether the stored row filter `tree` reads column `attnum`.
fn filter_reads(tree: &str, attnum: i32) -> bool {
    let Ok(tree) = std::ffi::CString::new(tree) else {
        return false;
    };
    // SAFETY: the stored filter is a node tree written by nodeToString; the bitmap is read.
    unsafe {
        let node = pg_sys::stringToNode(tree.as_ptr()).cast::<pg_sys::Node>();
        let mut attnos: *mut pg_sys::Bitmapset = std::ptr::null_mut();
        pg_sys::pull_varattnos(node, 1, &mut attnos);
        pg_sys::bms_is_member(attnum - pg_sys::FirstLowInvalidHeapAttributeNumber, attnos)
    }
}

/// The memberships of `relid` that depend on it (`sub_id` 0) or on its column `sub_id`.
fn dependents(relid: pg_sys::Oid, sub_id: i32) -> Vec<Member> {
    let rows = as_superuser(|| catalog::sets::of_table(relid));
    let column = (sub_id > 0).then(|| {
        // SAFETY: the column exists (it is being dropped); a palloc'd name.
        unsafe {
            CStr::from_ptr(pg_sys::get_attname(relid, sub_id as i16, false))
                .to_string_lossy()
                .into_owned()
        }
    });
    rows.into_iter()
        .filter(|m| match &column {
            None => true,
            Some(name) => {
                m.columns.iter().any(|c| c == name)
                    || m.row_filter
                        .as_deref()
                        .is_some_and(|f| filter_reads(f, sub_id))
            }
        })
        .map(|m| Member {
            set_id: m.set_id,
            relid,
            description: membership_description(&m.relname, &m.set_name),
        })
        .collect()
}

/// Whether the stored row filter `tree` calls function `funcid` (directly or as an
/// operator's implementation).
fn filter_calls(tree: &str, funcid: pg_sys::Oid) -> bool {
    let oid = funcid.to_u32();
    [format!(":funcid {oid} "), format!(":opfuncid {oid} ")]
        .iter()
        .any(|token| tree.contains(token.as_str()))
}

/// The memberships whose row filter calls function `funcid`.
fn function_dependents(funcid: pg_sys::Oid) -> Vec<Member> {
    as_superuser(catalog::sets::with_row_filter)
        .into_iter()
        .filter(|m| {
            m.row_filter
                .as_deref()
                .is_some_and(|f| filter_calls(f, funcid))
        })
        .map(|m| Member {
            set_id: m.set_id,
            relid: m.relid,
            description: membership_description(&m.relname, &m.set_name),
        })
        .collect()
}

/// How a membership is named in dependency messages (upstream's wording).
pub fn membership_description(relname: &str, set: &str) -> String {
    format!("table {relname} membership in replication set {set}")
}

/// Whether spock's dependencies are dropped as with CASCADE: the statement said so, or DDL
/// is replicated automatically, or the statement came from another node (upstream's rule).
fn cascading() -> bool {
    // SAFETY: reading the session's replication origin.
    let applying = unsafe { pg_sys::replorigin_session_origin } != 0;
    CASCADE.with(Cell::get) || crate::settings::ENABLE_DDL_REPLICATION.get() || applying
}

/// The relation `relid` (or its column `sub_id`) is being dropped.
fn dropping_relation(relid: pg_sys::Oid, sub_id: i32) {
    let members = dependents(relid, sub_id);
    if !members.is_empty() {
        drop_members(
            &describe(pg_sys::RelationRelationId, relid, sub_id),
            &members,
        );
    }
    if sub_id == 0 {
        forget_table(relid);
    }
}

/// The function `funcid` is being dropped: row filters calling it depend on it.
fn dropping_function(funcid: pg_sys::Oid) {
    let members = function_dependents(funcid);
    if !members.is_empty() {
        drop_members(&describe(pg_sys::ProcedureRelationId, funcid, 0), &members);
    }
}

/// Refuses the drop of `what` (core's error), or drops the memberships that depend on it.
fn drop_members(what: &str, members: &[Member]) {
    if !cascading() {
        let detail = members
            .iter()
            .map(|m| format!("{} depends on {what}", m.description))
            .collect::<Vec<_>>()
            .join("\n");
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST,
            format!("cannot drop {what} because other objects depend on it"),
            "drop_members",
        )
        .set_detail(detail)
        .set_hint("Use DROP ... CASCADE to drop the dependent objects too.")
        .report(PgLogLevel::ERROR);
    }
    report_cascade(members);
    let sets: Vec<pg_sys::Oid> = members.iter().map(|m| m.set_id).collect();
    let rels: Vec<pg_sys::Oid> = members.iter().map(|m| m.relid).collect();
    as_superuser(|| catalog::sets::remove(sets, rels));
}

/// Core's NOTICE for objects dropped by CASCADE.
fn report_cascade(members: &[Member]) {
    match members {
        [one] => notice!("drop cascades to {}", one.description),
        many => {
            let detail = many
                .iter()
                .map(|m| format!("drop cascades to {}", m.description))
                .collect::<Vec<_>>()
                .join("\n");
            ereport!(
                PgLogLevel::NOTICE,
                PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
                format!("drop cascades to {} other objects", many.len()),
                detail
            );
        }
    }
}

/// A dropped table's synchronisation rows (matched by name, as subscriptions know tables)
/// and tombstones go with it.
fn forget_table(relid: pg_sys::Oid) {
    as_superuser(|| {
        catalog::sync_status::forget_relation(relid);
        catalog::tombstones::forget_relation(relid);
    });
}
