//! DDL replication: `replicate_ddl`'s check that a command string holds only DDL statements
//! (so data changes never travel through the queue around replication), and the utility hook
//! that queues DDL automatically (`spock.enable_ddl_replication`), files new tables into
//! replication sets (`spock.include_ddl_repset`) and refuses DDL (`spock.deny_all_ddl`).

use crate::identity::as_superuser;
use pgrx::PgList;
use pgrx::pg_sys;
use pgrx::pg_sys::submodules::ffi::pg_guard_ffi_boundary;
use pgrx::prelude::*;
use std::ffi::{CStr, CString};

/// ERRORs unless every statement of `command` is DDL (log level `ddl`, as core classifies).
#[pg_extern(sql = false)]
fn spock_check_ddl(command: &str) {
    let sql = c_command(command);
    // SAFETY: the raw parser's output is only read.
    unsafe {
        let stmts = PgList::<pg_sys::RawStmt>::from_pg(pg_sys::raw_parser(
            sql.as_ptr(),
            pg_sys::RawParseMode::RAW_PARSE_DEFAULT,
        ));
        for raw in stmts.iter_ptr() {
            if let Some(tag) = not_ddl((*raw).stmt) {
                crate::raise(
                    PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                    format!("spock.replicate_ddl() cannot execute {tag} statement"),
                );
            }
        }
    }
}

fn c_command(command: &str) -> CString {
    CString::new(command).unwrap_or_else(|_| {
        crate::raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "command contains a NUL byte".into(),
        )
    })
}

/// The command tag of a statement that is not DDL, `None` for DDL.
///
/// # Safety
/// `stmt` is a raw or analysed statement.
unsafe fn not_ddl(stmt: *mut pg_sys::Node) -> Option<String> {
    // SAFETY: forwarded from the caller.
    unsafe {
        (pg_sys::GetCommandLogLevel(stmt) != pg_sys::LogStmtLevel::LOGSTMT_DDL).then(|| {
            CStr::from_ptr(pg_sys::CreateCommandName(stmt))
                .to_string_lossy()
                .into_owned()
        })
    }
}

/// The settings a queued statement's text may set for the statements after it: those that
/// change how the text is read (the origin writes them in front of what it queues).
const QUEUED_SETTINGS: [&str; 2] = ["search_path", "standard_conforming_strings"];

/// The first statement of queued SQL and the text after it, `None` when only blanks and
/// semicolons are left. Only DDL and `SET`/`RESET` of `QUEUED_SETTINGS` pass: the queue is a
/// table any provider's superuser can write, so a subscriber checks what it is asked to run.
/// The caller runs each statement before it asks for the next, so a leading
/// `SET standard_conforming_strings` decides how the rest is read, as it did on the origin.
pub fn next_queued_statement(sql: &str) -> Option<(&str, &str)> {
    let c = c_command(sql);
    // SAFETY: the raw parser's output is only read; a syntax error is an ERROR.
    unsafe {
        let stmts = PgList::<pg_sys::RawStmt>::from_pg(pg_sys::raw_parser(
            c.as_ptr(),
            pg_sys::RawParseMode::RAW_PARSE_DEFAULT,
        ));
        let raw = stmts.get_ptr(0)?;
        let stmt = (*raw).stmt;
        let allowed_setting = (*stmt).type_ == pg_sys::NodeTag::T_VariableSetStmt && {
            let set = stmt.cast::<pg_sys::VariableSetStmt>();
            !(*set).name.is_null()
                && !(*set).is_local
                && QUEUED_SETTINGS.contains(&CStr::from_ptr((*set).name).to_str().unwrap_or(""))
        };
        if !allowed_setting && let Some(tag) = not_ddl(stmt) {
            crate::raise(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("queued SQL may hold only DDL statements, not {tag}"),
            );
        }
        let start = usize::try_from((*raw).stmt_location)
            .unwrap_or(0)
            .min(sql.len());
        let end = match (*raw).stmt_len {
            0 => sql.len(),
            len => (start + len as usize).min(sql.len()),
        };
        Some((&sql[start..end], &sql[end..]))
    }
}

/// The utility hook that was installed before ours.
static mut PREVIOUS: pg_sys::ProcessUtility_hook_type = None;

/// Installs the utility hook (from `_PG_init`).
pub fn install() {
    // SAFETY: postmaster start-up, single-threaded; the previous hook is chained.
    unsafe {
        PREVIOUS = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
    }
}

/// How automatic DDL replication treats a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Treatment {
    /// Not replicated (databases, the server, subscriptions, tablespaces, temporary or
    /// concurrent objects).
    Skipped,
    /// Replicated with a warning (CREATE TABLE AS: its rows depend on each node's data).
    Unsafe,
    /// Replicated without the search_path prefix (tablespaces, CLUSTER).
    WithoutPath,
    Replicated,
}

/// Classifies a DDL statement.
///
/// # Safety
/// `stmt` is a parsed utility statement.
unsafe fn treatment(stmt: *mut pg_sys::Node) -> Treatment {
    use pg_sys::NodeTag as T;
    // SAFETY: each cast matches the node's tag.
    unsafe {
        let temp = |rv: *mut pg_sys::RangeVar| {
            !rv.is_null() && (*rv).relpersistence == pg_sys::RELPERSISTENCE_TEMP as std::ffi::c_char
        };
        match (*stmt).type_ {
            T::T_CreatedbStmt
            | T::T_DropdbStmt
            | T::T_AlterDatabaseStmt
            | T::T_AlterDatabaseSetStmt
            | T::T_AlterDatabaseRefreshCollStmt
            | T::T_AlterSystemStmt
            | T::T_CreateSubscriptionStmt
            | T::T_AlterSubscriptionStmt
            | T::T_DropSubscriptionStmt => Treatment::Skipped,
            T::T_RenameStmt | T::T_AlterOwnerStmt => {
                let kind = if (*stmt).type_ == T::T_RenameStmt {
                    (*stmt.cast::<pg_sys::RenameStmt>()).renameType
                } else {
                    (*stmt.cast::<pg_sys::AlterOwnerStmt>()).objectType
                };
                match kind {
                    pg_sys::ObjectType::OBJECT_DATABASE
                    | pg_sys::ObjectType::OBJECT_SUBSCRIPTION => Treatment::Skipped,
                    _ => Treatment::Replicated,
                }
            }
            T::T_CreateStmt if temp((*stmt.cast::<pg_sys::CreateStmt>()).relation) => {
                Treatment::Skipped
            }
            T::T_CreateSeqStmt if temp((*stmt.cast::<pg_sys::CreateSeqStmt>()).sequence) => {
                Treatment::Skipped
            }
            T::T_ViewStmt if temp((*stmt.cast::<pg_sys::ViewStmt>()).view) => Treatment::Skipped,
            T::T_CreateTableAsStmt => {
                let ctas = stmt.cast::<pg_sys::CreateTableAsStmt>();
                let into = (*ctas).into;
                let query = (*ctas).query.cast::<pg_sys::Query>();
                let execute = (*query).type_ == T::T_Query
                    && (*query).commandType == pg_sys::CmdType::CMD_UTILITY
                    && !(*query).utilityStmt.is_null()
                    && (*(*query).utilityStmt).type_ == T::T_ExecuteStmt;
                if (!into.is_null() && temp((*into).rel)) || execute {
                    Treatment::Skipped
                } else {
                    Treatment::Unsafe
                }
            }
            T::T_IndexStmt if (*stmt.cast::<pg_sys::IndexStmt>()).concurrent => Treatment::Skipped,
            T::T_DropStmt if (*stmt.cast::<pg_sys::DropStmt>()).concurrent => Treatment::Skipped,
            // Tablespace statements cannot run inside the subscriber's transaction.
            T::T_CreateTableSpaceStmt
            | T::T_DropTableSpaceStmt
            | T::T_AlterTableSpaceOptionsStmt => Treatment::Skipped,
            T::T_ClusterStmt => Treatment::WithoutPath,
            _ => Treatment::Replicated,
        }
    }
}

/// Whether an existing relation the statement works on is temporary (it concerns this session
/// only): the table of CREATE INDEX or ALTER TABLE, the relations of a DROP.
///
/// # Safety
/// `stmt` is a parsed utility statement that has not run yet, inside a transaction.
unsafe fn targets_temp_relation(stmt: *mut pg_sys::Node) -> bool {
    use pg_sys::NodeTag as T;
    let temp = |rv: *mut pg_sys::RangeVar| {
        // SAFETY: a catalog lookup of an existing relation; a missing one is not temporary.
        unsafe { existing_relation(rv) }.is_some_and(|relid| unsafe {
            pg_sys::get_rel_persistence(relid) == pg_sys::RELPERSISTENCE_TEMP as std::ffi::c_char
        })
    };
    // SAFETY: each cast matches the node's tag.
    unsafe {
        match (*stmt).type_ {
            T::T_IndexStmt => temp((*stmt.cast::<pg_sys::IndexStmt>()).relation),
            T::T_AlterTableStmt => temp((*stmt.cast::<pg_sys::AlterTableStmt>()).relation),
            T::T_DropStmt => {
                let drop = stmt.cast::<pg_sys::DropStmt>();
                use pg_sys::ObjectType as O;
                matches!(
                    (*drop).removeType,
                    O::OBJECT_TABLE
                        | O::OBJECT_INDEX
                        | O::OBJECT_SEQUENCE
                        | O::OBJECT_VIEW
                        | O::OBJECT_MATVIEW
                ) && PgList::<pg_sys::List>::from_pg((*drop).objects)
                    .iter_ptr()
                    .any(|names| temp(pg_sys::makeRangeVarFromNameList(names)))
            }
            _ => false,
        }
    }
}

/// The statement's own text within a possibly multi-statement query string.
///
/// # Safety
/// `pstmt` and `query` come from the same ProcessUtility call.
unsafe fn statement_text(
    pstmt: *mut pg_sys::PlannedStmt,
    query: *const std::ffi::c_char,
) -> String {
    // SAFETY: forwarded from the caller.
    let (full, location, len) = unsafe {
        (
            CStr::from_ptr(query).to_bytes(),
            (*pstmt).stmt_location,
            (*pstmt).stmt_len,
        )
    };
    let start = usize::try_from(location).unwrap_or(0).min(full.len());
    let end = if len > 0 {
        (start + len as usize).min(full.len())
    } else {
        full.len()
    };
    String::from_utf8_lossy(&full[start..end])
        .trim()
        .trim_end_matches(';')
        .trim()
        .to_string()
}

/// Whether this database is a spock node.
fn spock_node_here() -> bool {
    // SAFETY: a catalog lookup inside the statement's transaction.
    let installed = unsafe {
        pg_sys::IsTransactionState()
            && pg_sys::get_extension_oid(c"spock".as_ptr(), true) != pg_sys::InvalidOid
    };
    installed
        && as_superuser(|| {
            Spi::get_one::<bool>("SELECT EXISTS (SELECT 1 FROM spock.local_node)")
                .ok()
                .flatten()
                .unwrap_or(false)
        })
}

#[pg_guard]
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    // SAFETY: the arguments are PostgreSQL's, passed on unchanged; the previous hook is called
    // through the FFI boundary.
    unsafe {
        let stmt = (*pstmt).utilityStmt;
        let ddl = pg_sys::GetCommandLogLevel(stmt) == pg_sys::LogStmtLevel::LOGSTMT_DDL;
        if ddl && crate::settings::DENY_ALL_DDL.get() {
            let tag = CStr::from_ptr(pg_sys::CreateCommandName(stmt)).to_string_lossy();
            crate::raise(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("cannot execute {tag} within spock cluster"),
            );
        }
        // Looked at before the statement runs: a DROP's objects are gone afterwards.
        let touched_temp = ddl
            && crate::settings::ENABLE_DDL_REPLICATION.get()
            && pg_sys::IsTransactionState()
            && targets_temp_relation(stmt);
        let cascade = crate::depend::enter_statement(crate::depend::statement_cascades(stmt));
        match PREVIOUS {
            Some(previous) => pg_guard_ffi_boundary(|| {
                previous(pstmt, query, read_only_tree, context, params, env, dest, qc)
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
        crate::depend::restore(cascade);
        if ddl {
            after_ddl(pstmt, query, context, touched_temp);
        }
    }
}

/// Queues a DDL statement that just ran for the other nodes, and files the table it created or
/// altered into a replication set, as the settings ask.
///
/// # Safety
/// The arguments of the ProcessUtility call that ran the statement.
unsafe fn after_ddl(
    pstmt: *mut pg_sys::PlannedStmt,
    query: *const std::ffi::c_char,
    context: pg_sys::ProcessUtilityContext::Type,
    touched_temp: bool,
) {
    use crate::settings as s;
    let replicate = s::ENABLE_DDL_REPLICATION.get();
    let file_tables = s::INCLUDE_DDL_REPSET.get();
    // SAFETY: plain flags and the statement from the caller.
    let (applying, skip_context, stmt) = unsafe {
        (
            pg_sys::replorigin_session_origin != 0,
            pg_sys::creating_extension
                || context == pg_sys::ProcessUtilityContext::PROCESS_UTILITY_SUBCOMMAND,
            (*pstmt).utilityStmt,
        )
    };
    if (!replicate && !file_tables) || skip_context || !spock_node_here() {
        return;
    }
    // Statements run by the apply worker or by replicate_ddl were queued where they came from.
    let by_replicate_ddl = s::IN_REPLICATE_DDL.get();
    // In repair mode (spock.repair_mode(true)) the transaction's DDL stays here too.
    let ours = !applying
        && !by_replicate_ddl
        && !s::REPAIR_MODE.get()
        && (context == pg_sys::ProcessUtilityContext::PROCESS_UTILITY_TOPLEVEL
            || s::ALLOW_DDL_FROM_FUNCTIONS.get());
    if replicate && ours {
        let treatment = if touched_temp {
            Treatment::Skipped
        } else {
            // SAFETY: forwarded from the caller.
            unsafe { treatment(stmt) }
        };
        if treatment == Treatment::Skipped {
            warning!("This DDL statement will not be replicated.");
        } else {
            // SAFETY: forwarded from the caller.
            let text = unsafe { statement_text(pstmt, query) };
            // The role and the effective schemas (each quoted) as the caller sees them.
            let (role, path) = Spi::connect(|c| {
                let row = c.select(
                    "SELECT current_user::text, \
                     coalesce(pg_catalog.string_agg(pg_catalog.quote_ident(n), ', '), '''''') \
                     FROM pg_catalog.unnest(pg_catalog.current_schemas(false)) n",
                    None,
                    &[],
                )?;
                let row = row.first();
                Ok::<_, pgrx::spi::Error>((row.get::<String>(1)?, row.get::<String>(2)?))
            })
            .unwrap_or_else(|e| error!("cannot queue the DDL statement: {e}"));
            let mut prefix = match (treatment, path) {
                (Treatment::WithoutPath, _) | (_, None) => String::new(),
                (_, Some(path)) => format!("SET search_path TO {path}; "),
            };
            // Subscribers read the text as it was read here (a backslash in a literal).
            // SAFETY: reading a core setting's variable.
            if unsafe { !pg_sys::standard_conforming_strings } {
                prefix.insert_str(0, "SET standard_conforming_strings TO off; ");
            }
            as_superuser(|| {
                crate::catalog::logs::queue_ddl(role.as_deref(), &format!("{prefix}{text}"))
            });
            if treatment == Treatment::Unsafe {
                warning!("DDL statement replicated, but could be unsafe.");
            } else {
                info!("DDL statement replicated.");
            }
        }
    }
    if file_tables && !touched_temp && (ours || applying || by_replicate_ddl) {
        // SAFETY: forwarded from the caller.
        for relid in unsafe { created_or_altered_tables(stmt) } {
            as_superuser(|| Spi::run_with_args("SELECT spock.ddl_file_table($1)", &[relid.into()]))
                .unwrap_or_else(|e| error!("cannot add the table to a replication set: {e}"));
        }
    }
}

/// The tables a CREATE TABLE, CREATE TABLE AS, ALTER TABLE or CREATE SCHEMA statement made or
/// changed. (The tables of CREATE SCHEMA … CREATE TABLE are created by sub-statements, which
/// are not filed on their own: they are part of the statement queued.)
///
/// # Safety
/// `stmt` is a parsed utility statement that has run.
unsafe fn created_or_altered_tables(stmt: *mut pg_sys::Node) -> Vec<pg_sys::Oid> {
    // SAFETY: each cast matches the node's tag; the lookups do not lock.
    unsafe {
        if (*stmt).type_ != pg_sys::NodeTag::T_CreateSchemaStmt {
            return created_or_altered_table(stmt).into_iter().collect();
        }
        let schema = stmt.cast::<pg_sys::CreateSchemaStmt>();
        let name = if (*schema).schemaname.is_null() {
            // CREATE SCHEMA AUTHORIZATION role: the schema is named after the role.
            let role = (*schema).authrole;
            if role.is_null() || (*role).rolename.is_null() {
                return Vec::new();
            }
            (*role).rolename
        } else {
            (*schema).schemaname
        };
        PgList::<pg_sys::Node>::from_pg((*schema).schemaElts)
            .iter_ptr()
            .filter(|&element| (*element).type_ == pg_sys::NodeTag::T_CreateStmt)
            .filter_map(|element| {
                let rv =
                    pg_sys::copyObjectImpl((*element.cast::<pg_sys::CreateStmt>()).relation.cast())
                        .cast::<pg_sys::RangeVar>();
                (*rv).schemaname = name;
                existing_relation(rv)
            })
            .collect()
    }
}

/// The table a CREATE TABLE, CREATE TABLE AS or ALTER TABLE statement made or changed.
///
/// # Safety
/// `stmt` is a parsed utility statement that has run.
unsafe fn created_or_altered_table(stmt: *mut pg_sys::Node) -> Option<pg_sys::Oid> {
    use pg_sys::NodeTag as T;
    // SAFETY: each cast matches the node's tag; the lookup does not lock.
    unsafe {
        let rv = match (*stmt).type_ {
            T::T_CreateStmt => (*stmt.cast::<pg_sys::CreateStmt>()).relation,
            T::T_CreateTableAsStmt => {
                let into = (*stmt.cast::<pg_sys::CreateTableAsStmt>()).into;
                if into.is_null() {
                    return None;
                }
                (*into).rel
            }
            T::T_AlterTableStmt => (*stmt.cast::<pg_sys::AlterTableStmt>()).relation,
            _ => return None,
        };
        existing_relation(rv)
    }
}

/// The relation a statement names, if it exists (looked up without locking).
///
/// # Safety
/// Inside a transaction; `rv` is null or a parsed RangeVar.
unsafe fn existing_relation(rv: *mut pg_sys::RangeVar) -> Option<pg_sys::Oid> {
    if rv.is_null() {
        return None;
    }
    // SAFETY: forwarded from the caller.
    let relid = unsafe {
        pg_sys::RangeVarGetRelidExtended(
            rv,
            pg_sys::NoLock as pg_sys::LOCKMODE,
            pg_sys::RVROption::RVR_MISSING_OK,
            None,
            std::ptr::null_mut(),
        )
    };
    (relid != pg_sys::InvalidOid).then_some(relid)
}
