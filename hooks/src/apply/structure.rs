//! `synchronize_structure`: the provider's schema is copied with the kernel's own `pg_dump`
//! and `pg_restore` (found next to the running `postgres`), the `pre-data` section (types,
//! tables, functions) before the data copy and the `post-data` section (indexes, constraints,
//! triggers) after it, so rows are loaded before their indexes are built. Spock's own schema is
//! left out; objects that already exist locally are reported and kept.

use super::Subscription;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::CStr;
use std::path::PathBuf;
use std::process::Command;

#[derive(Clone, Copy)]
pub enum Section {
    PreData,
    PostData,
}

impl Section {
    fn name(self) -> &'static str {
        match self {
            Section::PreData => "pre-data",
            Section::PostData => "post-data",
        }
    }
}

/// The directory of the running server's programs.
fn bindir() -> PathBuf {
    // SAFETY: my_exec_path is set once at startup to the postgres binary's path.
    let exe = unsafe { CStr::from_ptr(std::ptr::addr_of!(pg_sys::my_exec_path).cast()) }
        .to_string_lossy()
        .into_owned();
    PathBuf::from(exe)
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// A libpq connection string for this database over the server's first socket directory.
fn local_dsn() -> String {
    BackgroundWorker::transaction(|| {
        Spi::get_one::<String>(
            "SELECT format('host=%s port=%s dbname=%s user=%s', \
               split_part(current_setting('unix_socket_directories'), ',', 1), \
               current_setting('port'), quote_ident(current_database()), \
               (SELECT quote_ident(rolname) FROM pg_roles WHERE oid = 10))",
        )
        .unwrap_or_else(|e| error!("{e}"))
        .unwrap_or_default()
    })
}

/// Dumps one section of the provider's schema and restores it here.
pub fn restore(sub: &Subscription, section: Section) {
    let bin = bindir();
    let dir = std::env::temp_dir().join(format!("spock-{}-{}", std::process::id(), section.name()));
    let _ = std::fs::remove_file(&dir);
    let dump = Command::new(bin.join("pg_dump"))
        .args([
            "--schema-only",
            "--format=custom",
            "--no-publications",
            "--no-subscriptions",
        ])
        .args([
            "--exclude-schema=spock",
            "--section",
            section.name(),
            "--file",
        ])
        .arg(&dir)
        .arg("--dbname")
        .arg(&sub.dsn)
        .output()
        .unwrap_or_else(|e| error!("subscription \"{}\": cannot run pg_dump: {e}", sub.name));
    if !dump.status.success() {
        let _ = std::fs::remove_file(&dir);
        error!(
            "subscription \"{}\": could not dump the provider's schema: {}",
            sub.name,
            String::from_utf8_lossy(&dump.stderr).trim()
        );
    }
    let restored = Command::new(bin.join("pg_restore"))
        // The provider's schema is restored here only, not replicated on from here.
        .env(
            "PGOPTIONS",
            "-c spock.enable_ddl_replication=off -c spock.include_ddl_repset=off",
        )
        .arg("--dbname")
        .arg(local_dsn())
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| error!("subscription \"{}\": cannot run pg_restore: {e}", sub.name));
    let _ = std::fs::remove_file(&dir);
    let errors = String::from_utf8_lossy(&restored.stderr);
    // Objects that exist here already (the extension, the public schema) are not a failure.
    let real: Vec<&str> = errors
        .lines()
        .filter(|l| l.contains("error:") && !l.contains("already exists"))
        .collect();
    if !real.is_empty() {
        error!(
            "subscription \"{}\": could not restore the provider's schema ({}): {}",
            sub.name,
            section.name(),
            real.join("; ")
        );
    }
    log!(
        "subscription \"{}\": restored the provider's schema ({})",
        sub.name,
        section.name()
    );
}
