//! Whose rights spock's work runs with.
//!
//! spock's workers and its DDL hook run as a superuser, but most of what they carry out belongs
//! to someone else: a replicated row change or a table copy belongs to the table's owner, queued
//! DDL to the role recorded with it. That work runs with that role's rights, so a trigger, a
//! CHECK constraint, a default or an index expression never runs with more rights than its
//! owner has — on any node. The other way round, spock's own catalog work that a user's
//! statement sets off runs as a superuser with a search path nobody can put objects into.
//!
//! Every switch saves the current identity and opens a GUC nest level; `Switched::restore`
//! undoes both. An error in between needs no cleanup here: aborting the (sub)transaction
//! restores the identity and the settings.

use pgrx::pg_sys;
use std::ffi::CString;

/// The search path of everything spock runs with elevated rights: the catalog, and temporary
/// objects only after it (so they never shadow a catalog name).
pub const SAFE_SEARCH_PATH: &str = "pg_catalog, pg_temp";

/// An identity switched by one of the functions below.
#[must_use = "the previous identity comes back only with restore()"]
pub struct Switched {
    user: pg_sys::Oid,
    context: i32,
    nest_level: i32,
}

impl Switched {
    /// Returns to the identity saved by the switch; settings changed meanwhile are undone.
    pub fn restore(self) {
        // SAFETY: closes the nest level opened by the switch and restores the saved ids, in
        // the same transaction.
        unsafe {
            pg_sys::AtEOXact_GUC(false, self.nest_level);
            pg_sys::SetUserIdAndSecContext(self.user, self.context);
        }
    }
}

fn switch(user: pg_sys::Oid, add_context: u32) -> Switched {
    let (mut saved_user, mut saved_context) = (pg_sys::InvalidOid, 0);
    // SAFETY: reading and setting the backend's current user id, as core does for work done on
    // a role's behalf; the nest level makes every setting changed meanwhile temporary.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
        pg_sys::SetUserIdAndSecContext(user, saved_context | add_context as i32);
        Switched {
            user: saved_user,
            context: saved_context,
            nest_level: pg_sys::NewGUCNestLevel(),
        }
    }
}

/// Becomes a table's `owner` for work on that table (a replicated change, a copy). Unless the
/// owner already holds the current user's rights, this is a security-restricted operation, as
/// in core's apply worker: the owner's code cannot change the session's role, create temporary
/// objects or leave anything behind for the worker.
pub fn become_owner(owner: pg_sys::Oid) -> Switched {
    // SAFETY: catalog lookups of two roles inside a transaction.
    let trusted = unsafe {
        let mut current = pg_sys::InvalidOid;
        let mut context = 0;
        pg_sys::GetUserIdAndSecContext(&mut current, &mut context);
        pg_sys::superuser_arg(owner) || pg_sys::has_privs_of_role(owner, current)
    };
    let restricted = if trusted {
        0
    } else {
        pg_sys::SECURITY_RESTRICTED_OPERATION
    };
    switch(owner, restricted)
}

/// Runs `f` as a table's owner (see `become_owner`).
pub fn as_owner<R>(owner: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    let switched = become_owner(owner);
    let result = f();
    switched.restore();
    result
}

/// Becomes `role` for queued DDL: nothing the statements or the functions they call do (`SET
/// ROLE`, `RESET ROLE`, `SET SESSION AUTHORIZATION`, a function's `SET role`) can return to the
/// worker's superuser identity, and no temporary object can be left in the worker's session.
pub fn become_role_locked(role: pg_sys::Oid) -> Switched {
    switch(
        role,
        pg_sys::SECURITY_LOCAL_USERID_CHANGE | pg_sys::SECURITY_RESTRICTED_OPERATION,
    )
}

/// Runs `f` as the bootstrap superuser with the safe search path: spock's catalog is
/// superuser-only, and a statement of any role may need to write it (the DDL queue).
pub fn as_superuser<R>(f: impl FnOnce() -> R) -> R {
    let switched = switch(
        pg_sys::Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID),
        pg_sys::SECURITY_LOCAL_USERID_CHANGE,
    );
    set_search_path(SAFE_SEARCH_PATH);
    let result = f();
    switched.restore();
    result
}

/// Sets `search_path` for the current nest level (or the session, outside any).
pub fn set_search_path(path: &str) {
    let value = CString::new(path).expect("search paths have no NUL");
    // SAFETY: setting a GUC by name from inside a transaction, as SET does.
    unsafe {
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SET,
            true,
            0,
            false,
        );
    }
}

/// The owner of relation `relid` (from the syscache, so cheap enough per statement).
pub fn rel_owner(relid: pg_sys::Oid) -> pg_sys::Oid {
    // SAFETY: a syscache lookup released before returning.
    unsafe {
        let tuple = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::RELOID as i32,
            pg_sys::Datum::from(relid),
        );
        if tuple.is_null() {
            crate::raise(
                pgrx::PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                format!("relation with OID {} does not exist", relid.to_u32()),
            );
        }
        let form = pg_sys::GETSTRUCT(tuple).cast::<pg_sys::FormData_pg_class>();
        let owner = (*form).relowner;
        pg_sys::ReleaseSysCache(tuple);
        owner
    }
}

/// The name of role `oid`.
pub fn role_name(oid: pg_sys::Oid) -> String {
    // SAFETY: a catalog lookup that errors on a missing role; the name is copied at once.
    unsafe {
        std::ffi::CStr::from_ptr(pg_sys::GetUserNameFromId(oid, false))
            .to_string_lossy()
            .into_owned()
    }
}

/// The oid of role `name` (ERROR when there is none).
pub fn role_oid(name: &str) -> pg_sys::Oid {
    let c = CString::new(name).unwrap_or_default();
    // SAFETY: a catalog lookup that errors on a missing role.
    unsafe { pg_sys::get_role_oid(c.as_ptr(), false) }
}
