//! Detects the pgEdge kernel's capability marker so spock refuses a stock server with a clear
//! error instead of failing later on a missing kernel symbol.

use pgrx::prelude::*;
use std::ffi::CStr;

/// Exported by kernel patch 0001 (`src/backend/utils/init/globals.c`).
const MARKER_SYMBOL: &CStr = c"PgEdgeKernelApi";

/// The kernel capability level this build of spock needs.
pub const REQUIRED_API: i32 = 1;

/// The running server's kernel capability level, or `None` on a stock PostgreSQL.
pub fn kernel_api() -> Option<i32> {
    // SAFETY: looking a name up in the global symbol table; when present it is a `const int`.
    unsafe {
        let sym = libc::dlsym(libc::RTLD_DEFAULT, MARKER_SYMBOL.as_ptr());
        (!sym.is_null()).then(|| *(sym as *const i32))
    }
}

/// Raises an ERROR unless the server is a pgEdge kernel of at least `REQUIRED_API`.
pub fn require(extension: &str) {
    match kernel_api() {
        Some(api) if api >= REQUIRED_API => {}
        found => {
            let detail = match found {
                None => "This server is a stock PostgreSQL: it does not export the pgEdge kernel \
                         marker PgEdgeKernelApi."
                    .to_string(),
                Some(api) => format!(
                    "This server's pgEdge kernel has capability level {api}; level {REQUIRED_API} \
                     is required."
                ),
            };
            ereport!(
                PgLogLevel::ERROR,
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                format!("extension \"{extension}\" requires the pgEdge kernel"),
                detail,
            );
        }
    }
}
