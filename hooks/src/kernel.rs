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

/// Kernel patch 0002's commit clock: `void PgEdgeCommitClockSetFloor(TimestampTz)`.
const CLOCK_FLOOR_SYMBOL: &CStr = c"PgEdgeCommitClockSetFloor";

type SetFloor = unsafe extern "C-unwind" fn(pgrx::pg_sys::TimestampTz);

/// Makes the current transaction's commit (and every later local commit) be stamped no
/// earlier than `ts`, the remote commit being applied. A kernel without the commit clock
/// (capability level 1) is left alone: its timestamps are the wall clock's.
pub fn commit_clock_floor(ts: pgrx::pg_sys::TimestampTz) {
    static FLOOR: std::sync::OnceLock<Option<SetFloor>> = std::sync::OnceLock::new();
    let f = FLOOR.get_or_init(|| {
        // SAFETY: looking a name up in the global symbol table; when present it is a
        // function with the signature above.
        unsafe {
            let sym = libc::dlsym(libc::RTLD_DEFAULT, CLOCK_FLOOR_SYMBOL.as_ptr());
            (!sym.is_null()).then(|| std::mem::transmute::<*mut libc::c_void, SetFloor>(sym))
        }
    });
    if let Some(f) = f {
        // SAFETY: a kernel function that may raise an ERROR (skew bound), hence the boundary.
        unsafe { pgrx::pg_sys::submodules::ffi::pg_guard_ffi_boundary(|| f(ts)) };
    }
}

/// Kernel patch 0004: `SubTransactionIdSetCommitTsData(xid, ts, nodeid)`.
const SUBXACT_TS_SYMBOL: &CStr = c"SubTransactionIdSetCommitTsData";

type SetSubXactTs =
    unsafe extern "C-unwind" fn(pgrx::pg_sys::TransactionId, pgrx::pg_sys::TimestampTz, u16);

/// Gives subtransaction `xid` its own commit timestamp and origin (kernel capability level 4);
/// without the capability the subtransaction simply keeps the top-level ones.
pub fn subxact_commit_ts(xid: pgrx::pg_sys::TransactionId, ts: i64, origin: u16) -> bool {
    static SET: std::sync::OnceLock<Option<SetSubXactTs>> = std::sync::OnceLock::new();
    let f = SET.get_or_init(|| {
        // SAFETY: looking a name up in the global symbol table; when present it is a
        // function with the signature above.
        unsafe {
            let sym = libc::dlsym(libc::RTLD_DEFAULT, SUBXACT_TS_SYMBOL.as_ptr());
            (!sym.is_null()).then(|| std::mem::transmute::<*mut libc::c_void, SetSubXactTs>(sym))
        }
    });
    match f {
        Some(f) => {
            // SAFETY: a kernel function that may raise an ERROR, hence the boundary.
            unsafe { pgrx::pg_sys::submodules::ffi::pg_guard_ffi_boundary(|| f(xid, ts, origin)) };
            true
        }
        None => false,
    }
}

/// Kernel patch 0005 (majors whose server has `output_plugin_libraries`, 17.11 on):
/// `void RegisterTrustedOutputPlugin(const char *name)`.
const TRUSTED_PLUGIN_SYMBOL: &CStr = c"RegisterTrustedOutputPlugin";

/// The capability level that brings `RegisterTrustedOutputPlugin`.
const TRUSTED_PLUGIN_API: i32 = 5;

type RegisterTrusted = unsafe extern "C-unwind" fn(*const std::ffi::c_char);

/// What `trust_output_plugin` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Trust {
    /// The server has no `output_plugin_libraries` (e.g. 15.18): every plugin may be used.
    NotNeeded,
    /// The kernel now accepts the name whatever `output_plugin_libraries` lists.
    Registered,
    /// The server checks `output_plugin_libraries` but the kernel cannot trust a name itself.
    Unsupported,
}

/// Registers `name`, an output plugin name this library provides, as trusted by the kernel so
/// slots for it work whatever `output_plugin_libraries` lists. Only valid from `_PG_init` while
/// `shared_preload_libraries` is being processed (the kernel raises an ERROR otherwise).
pub fn trust_output_plugin(name: &CStr) -> Trust {
    // SAFETY: looking a name up in the global symbol table; when present (and the kernel's
    // capability level is the one that brings it) it is a function with the signature above.
    let register = unsafe {
        let sym = libc::dlsym(libc::RTLD_DEFAULT, TRUSTED_PLUGIN_SYMBOL.as_ptr());
        (!sym.is_null() && kernel_api().is_some_and(|api| api >= TRUSTED_PLUGIN_API))
            .then(|| std::mem::transmute::<*mut libc::c_void, RegisterTrusted>(sym))
    };
    match register {
        Some(f) => {
            // SAFETY: `name` is a NUL-terminated string the kernel copies; the function may
            // raise an ERROR, hence the boundary.
            unsafe { pgrx::pg_sys::submodules::ffi::pg_guard_ffi_boundary(|| f(name.as_ptr())) };
            Trust::Registered
        }
        None if server_checks_output_plugins() => Trust::Unsupported,
        None => Trust::NotNeeded,
    }
}

/// Whether the server has the `output_plugin_libraries` setting (17.11 has it, 15.18 not).
fn server_checks_output_plugins() -> bool {
    // SAFETY: a lookup of a setting by name; with missing_ok it returns NULL for an unknown
    // one instead of raising an ERROR, and it does not keep the pointer.
    unsafe {
        !pgrx::pg_sys::GetConfigOption(c"output_plugin_libraries".as_ptr(), true, false).is_null()
    }
}
