//! `replicate_ddl`'s check that a command string holds only DDL statements, so data changes
//! never travel through the queue around replication.

use pgrx::PgList;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::{CStr, CString};

/// ERRORs unless every statement of `command` is DDL (log level `ddl`, as core classifies).
#[pg_extern(sql = false)]
fn spock_check_ddl(command: &str) {
    let sql = CString::new(command).unwrap_or_else(|_| {
        crate::raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "command contains a NUL byte".into(),
        )
    });
    // SAFETY: the raw parser's output is only read.
    unsafe {
        let stmts = PgList::<pg_sys::RawStmt>::from_pg(pg_sys::raw_parser(
            sql.as_ptr(),
            pg_sys::RawParseMode::RAW_PARSE_DEFAULT,
        ));
        for raw in stmts.iter_ptr() {
            let stmt = (*raw).stmt;
            if pg_sys::GetCommandLogLevel(stmt) != pg_sys::LogStmtLevel::LOGSTMT_DDL {
                let tag = CStr::from_ptr(pg_sys::CreateCommandName(stmt)).to_string_lossy();
                crate::raise(
                    PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                    format!("spock.replicate_ddl() cannot execute {tag} statement"),
                );
            }
        }
    }
}
