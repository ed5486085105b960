//! SPI statements planned once per backend and run with text parameters: the apply worker's
//! per-row statements (the SQL row store's, and the catalog rows a conflict storm writes)
//! would otherwise be parsed and planned once per row.

use pgrx::prelude::*;
use std::collections::HashMap;
use std::ffi::CString;

thread_local! {
    /// Prepared plans by statement text.
    static PLANS: std::cell::RefCell<HashMap<String, pg_sys::SPIPlanPtr>> =
        std::cell::RefCell::new(HashMap::new());
}

/// Runs `sql` with text parameters (`None` is NULL); returns the number of rows it processed
/// and the first column of the first row it returned.
pub fn run(sql: &str, params: &[Option<String>]) -> (u64, Option<String>) {
    let n = params.len();
    let mut values = Vec::with_capacity(n);
    let mut nulls = Vec::with_capacity(n);
    for p in params {
        match p {
            Some(v) => {
                let c = CString::new(v.as_str())
                    .unwrap_or_else(|_| error!("value contains a NUL byte"));
                // SAFETY: copies the string into a text datum in the current memory context.
                values.push(pg_sys::Datum::from(unsafe {
                    pg_sys::cstring_to_text(c.as_ptr())
                }));
                nulls.push(b' ' as std::ffi::c_char);
            }
            None => {
                values.push(pg_sys::Datum::from(0));
                nulls.push(b'n' as std::ffi::c_char);
            }
        }
    }
    // SAFETY: SPI inside the caller's transaction; a kept plan outlives the SPI connection,
    // and every array has `n` entries.
    unsafe {
        pg_sys::SPI_connect();
        let plan = PLANS.with(|plans| {
            *plans
                .borrow_mut()
                .entry(sql.to_string())
                .or_insert_with(|| {
                    let text = CString::new(sql).expect("no NUL in generated SQL");
                    let mut types = vec![pg_sys::TEXTOID; n];
                    // A generic plan, planned once: the statements are small key lookups and
                    // writes, and a custom plan per execution (plancache's default for the
                    // first runs and whenever it looks cheaper) costs more than running them.
                    let plan = pg_sys::SPI_prepare_cursor(
                        text.as_ptr(),
                        n as i32,
                        types.as_mut_ptr(),
                        pg_sys::CURSOR_OPT_GENERIC_PLAN as i32,
                    );
                    if plan.is_null() {
                        error!("cannot prepare {sql}");
                    }
                    pg_sys::SPI_keepplan(plan);
                    plan
                })
        });
        let rc = pg_sys::SPI_execute_plan(plan, values.as_mut_ptr(), nulls.as_ptr(), false, 0);
        if rc < 0 {
            error!("SPI failed ({rc}) running {sql}");
        }
        let processed = pg_sys::SPI_processed;
        let tt = pg_sys::SPI_tuptable;
        let first = if processed > 0 && !tt.is_null() {
            let v = pg_sys::SPI_getvalue(*(*tt).vals, (*tt).tupdesc, 1);
            (!v.is_null()).then(|| std::ffi::CStr::from_ptr(v).to_string_lossy().into_owned())
        } else {
            None
        };
        pg_sys::SPI_finish();
        (processed, first)
    }
}
