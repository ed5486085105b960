//! DDL around lolor: the event trigger run before DROP EXTENSION lolor (and DROP SCHEMA lolor,
//! DROP OWNED), and a utility hook that makes REASSIGN OWNED and DROP ROLE treat lolor's large
//! objects as core treats native ones.
//!
//! lolor records no `pg_shdepend` rows for its objects (upstream recorded owner dependencies
//! under the OID of a user table, which DROP ROLE / DROP OWNED / REASSIGN OWNED cannot handle and
//! which it never removed). Instead:
//! * DROP OWNED BY r unlinks r's lolor objects (event trigger: works whether or not the library
//!   is preloaded);
//! * REASSIGN OWNED BY r TO s gives them to s (utility hook);
//! * DROP ROLE r fails while r owns lolor objects in the current database (utility hook).
//!
//! The hook is active in every session when lolor is in `shared_preload_libraries`, otherwise in
//! sessions that have used lolor.

use crate::storage;
use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::prelude::*;
use std::ffi::CStr;

/// String nodes of a parse-tree list, as Rust strings.
unsafe fn string_list(list: *mut pg_sys::List) -> Vec<String> {
    // SAFETY: the caller's list is a parse-tree list of nodes.
    unsafe { node_list(list) }
        .into_iter()
        // SAFETY: every cell is a node; its tag is read before the node is used as a String.
        .filter(|&n| unsafe { (*n).type_ } == pg_sys::NodeTag::T_String)
        // SAFETY: a String node, whose value is a NUL-terminated string.
        .map(|n| unsafe {
            let s = n as *mut pg_sys::String;
            CStr::from_ptr((*s).sval).to_string_lossy().into_owned()
        })
        .collect()
}

unsafe fn node_list(list: *mut pg_sys::List) -> Vec<*mut pg_sys::Node> {
    if list.is_null() {
        return Vec::new();
    }
    // SAFETY: a pointer List of `length` cells.
    unsafe {
        (0..(*list).length as usize)
            .map(|i| (*(*list).elements.add(i)).ptr_value as *mut pg_sys::Node)
            .collect()
    }
}

/// Role OIDs of a list of RoleSpec nodes; `None` for roles that do not exist.
unsafe fn role_list(list: *mut pg_sys::List) -> Vec<Option<Oid>> {
    // SAFETY: the caller's list holds RoleSpec nodes.
    unsafe {
        node_list(list)
            .into_iter()
            .map(|n| {
                let oid = pg_sys::get_rolespec_oid(n as *const pg_sys::RoleSpec, true);
                (oid != pg_sys::InvalidOid).then_some(oid)
            })
            .collect()
    }
}

fn lolor_installed() -> bool {
    // SAFETY: catalog lookup.
    unsafe { pg_sys::get_extension_oid(c"lolor".as_ptr(), true) != pg_sys::InvalidOid }
}

/// Before the extension goes away: refuse while large objects are stored, otherwise give the
/// built-in functions their names back.
fn before_drop() {
    if !storage::is_empty() {
        let n = storage::count();
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST,
            "cannot drop extension lolor because it still stores large objects",
            format!(
                "lolor.pg_largeobject_metadata holds {n} large object{}; dropping the extension \
                 would destroy them.",
                if n == 1 { "" } else { "s" }
            )
        );
    }
    // Versions before 1.2.2 (databases not yet updated) have no lolor.disable().
    let has_disable = Spi::get_one::<bool>(
        "SELECT to_regprocedure('lolor.is_enabled()') IS NOT NULL \
         AND to_regprocedure('lolor.disable()') IS NOT NULL",
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    let restore = if has_disable {
        "SELECT lolor.disable() WHERE lolor.is_enabled()"
    } else {
        RESTORE_BEFORE_1_2_2
    };
    Spi::run(restore).unwrap_or_else(|e| {
        error!("lolor: cannot restore the built-in large-object functions: {e}")
    });
}

/// What `lolor.disable()` does, for versions before 1.2.2 (always enabled): each lolor function in
/// pg_catalog becomes `lolor_<name>` and the built-in `<name>_orig` of the same signature gets its
/// name back.
const RESTORE_BEFORE_1_2_2: &str = r#"
DO $$
DECLARE
    f record;
BEGIN
    FOR f IN
        SELECT ours.oid AS ours, orig.oid AS orig, ours.proname
          FROM pg_catalog.pg_proc ours
          JOIN pg_catalog.pg_proc orig
            ON orig.pronamespace = ours.pronamespace
           AND orig.proname = ours.proname || '_orig'
           AND orig.proargtypes = ours.proargtypes
         WHERE ours.pronamespace = 'pg_catalog'::regnamespace AND ours.probin = '$libdir/lolor'
    LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s RENAME TO %I',
                                  f.ours::regprocedure, 'lolor_' || f.proname);
        EXECUTE pg_catalog.format('ALTER FUNCTION %s RENAME TO %I', f.orig::regprocedure, f.proname);
    END LOOP;
END
$$
"#;

crate::api::sql_function!(
    pg_finfo_lolor_on_drop_extension,
    lolor_on_drop_extension,
    |fcinfo| {
        // SAFETY: the event trigger manager passes EventTriggerData as context.
        unsafe {
            let ctx = (*fcinfo).context;
            if ctx.is_null() || (*ctx).type_ != pg_sys::NodeTag::T_EventTriggerData {
                error!("lo_on_drop_extension: not fired by event trigger manager");
            }
            let tree = (*(ctx as *mut pg_sys::EventTriggerData)).parsetree;
            match (*tree).type_ {
                pg_sys::NodeTag::T_DropStmt => {
                    let stmt = tree as *mut pg_sys::DropStmt;
                    let names = string_list((*stmt).objects);
                    let lolor = names.iter().any(|n| n == "lolor");
                    match (*stmt).removeType {
                        pg_sys::ObjectType::OBJECT_EXTENSION if lolor => before_drop(),
                        pg_sys::ObjectType::OBJECT_SCHEMA if lolor && lolor_installed() => {
                            before_drop()
                        }
                        _ => {}
                    }
                }
                pg_sys::NodeTag::T_DropOwnedStmt => {
                    let stmt = tree as *mut pg_sys::DropOwnedStmt;
                    // Core checks the privileges afterwards and would roll this back; skip
                    // roles the user may not act for, core then reports the error.
                    let roles: Vec<Oid> = role_list((*stmt).roles)
                        .into_iter()
                        .flatten()
                        .filter(|&r| pg_sys::has_privs_of_role(pg_sys::GetUserId(), r))
                        .collect();
                    if !roles.is_empty() {
                        for id in storage::objects_owned_by(&roles) {
                            crate::descriptors::close_object(id);
                            storage::remove(id);
                        }
                    }
                }
                _ => warning!("lo_on_drop_extension: unexpected command"),
            }
        }
        Datum::from(0)
    }
);

static mut PREV_UTILITY: pg_sys::ProcessUtility_hook_type = None;

/// Installs the utility hook (once per process).
pub fn install_hook() {
    // SAFETY: single-threaded backend start-up; chains the previous hook.
    unsafe {
        PREV_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(utility_hook);
    }
}

/// Native-like refusal of DROP ROLE for owners of lolor objects (current database only).
unsafe fn check_drop_role(stmt: *mut pg_sys::DropRoleStmt) {
    // SAFETY: the caller's statement is a DropRoleStmt of the utility hook.
    unsafe {
        for role in role_list((*stmt).roles).into_iter().flatten() {
            let owned = storage::objects_owned_by(&[role]);
            if owned.is_empty() {
                continue;
            }
            let name = CStr::from_ptr(pg_sys::GetUserNameFromId(role, false))
                .to_string_lossy()
                .into_owned();
            const SHOWN: usize = 100;
            let mut lines: Vec<String> = owned
                .iter()
                .take(SHOWN)
                .map(|o| format!("owner of large object {}", o.to_u32()))
                .collect();
            if owned.len() > SHOWN {
                lines.push(format!("and {} other objects", owned.len() - SHOWN));
            }
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST,
                format!("role \"{name}\" cannot be dropped because some objects depend on it"),
                lines.join("\n")
            );
        }
    }
}

#[pg_guard]
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn utility_hook(
    pstmt: *mut pg_sys::PlannedStmt,
    query: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    // SAFETY: the utility hook's arguments, valid for the call and passed on unchanged.
    unsafe {
        let tree = (*pstmt).utilityStmt;
        let tag = if tree.is_null() {
            pg_sys::NodeTag::T_Invalid
        } else {
            (*tree).type_
        };
        let relevant = matches!(
            tag,
            pg_sys::NodeTag::T_DropRoleStmt | pg_sys::NodeTag::T_ReassignOwnedStmt
        ) && pg_sys::IsTransactionState()
            && lolor_installed();
        if relevant && tag == pg_sys::NodeTag::T_DropRoleStmt {
            check_drop_role(tree as *mut pg_sys::DropRoleStmt);
        }
        // Resolve the roles before core changes anything.
        let reassign = (relevant && tag == pg_sys::NodeTag::T_ReassignOwnedStmt).then(|| {
            let stmt = tree as *mut pg_sys::ReassignOwnedStmt;
            let from: Vec<Oid> = role_list((*stmt).roles).into_iter().flatten().collect();
            (from, (*stmt).newrole)
        });
        match PREV_UTILITY {
            Some(prev) => pg_sys::submodules::ffi::pg_guard_ffi_boundary(|| {
                prev(pstmt, query, read_only_tree, context, params, env, dest, qc)
            }),
            None => pg_sys::standard_ProcessUtility(
                pstmt,
                query,
                read_only_tree,
                context,
                params,
                env,
                dest,
                qc,
            ),
        }
        // Core has checked the privileges and reassigned the native objects.
        if let Some((from, newrole)) = reassign {
            let to = pg_sys::get_rolespec_oid(newrole, false);
            storage::reassign(&from, to);
        }
    }
}
