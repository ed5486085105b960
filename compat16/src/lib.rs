//! PostgreSQL 16 specifics behind a version-neutral surface; the extensions import this crate as
//! `compat` and never test the server major themselves.

pub use pgrx;

/// The server major this build targets.
pub const PG_MAJOR: u32 = 16;
