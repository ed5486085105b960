//! Spock's settings (`spock.*`), with upstream 5.0.5's names, values and defaults.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};

#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum ConflictResolution {
    #[name = c"last_update_wins"]
    LastUpdateWins,
}

/// Server message levels for the conflict reports.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum LogLevel {
    #[name = c"debug5"]
    Debug5,
    #[name = c"debug4"]
    Debug4,
    #[name = c"debug3"]
    Debug3,
    #[name = c"debug2"]
    Debug2,
    #[name = c"debug1"]
    Debug1,
    #[name = c"info"]
    Info,
    #[name = c"notice"]
    Notice,
    #[name = c"warning"]
    Warning,
    #[name = c"log"]
    Log,
}

impl LogLevel {
    pub fn level(self) -> pgrx::PgLogLevel {
        use pgrx::PgLogLevel as L;
        match self {
            LogLevel::Debug5 => L::DEBUG5,
            LogLevel::Debug4 => L::DEBUG4,
            LogLevel::Debug3 => L::DEBUG3,
            LogLevel::Debug2 => L::DEBUG2,
            LogLevel::Debug1 => L::DEBUG1,
            LogLevel::Info => L::INFO,
            LogLevel::Notice => L::NOTICE,
            LogLevel::Warning => L::WARNING,
            LogLevel::Log => L::LOG,
        }
    }
}

#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum ExceptionBehaviour {
    #[name = c"discard"]
    Discard,
    #[name = c"transdiscard"]
    TransDiscard,
    #[name = c"sub_disable"]
    SubDisable,
}

#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum ExceptionLogging {
    #[name = c"none"]
    None,
    #[name = c"discard"]
    Discard,
    #[name = c"all"]
    All,
}

pub static CONFLICT_RESOLUTION: GucSetting<ConflictResolution> =
    GucSetting::<ConflictResolution>::new(ConflictResolution::LastUpdateWins);
pub static CONFLICT_LOG_LEVEL: GucSetting<LogLevel> = GucSetting::<LogLevel>::new(LogLevel::Log);
/// Conflicts reported one by one per worker and 10-second window (the rest are summed up).
pub static CONFLICT_LOG_LIMIT: GucSetting<i32> = GucSetting::<i32>::new(100);
pub static SAVE_RESOLUTIONS: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static EXCEPTION_BEHAVIOUR: GucSetting<ExceptionBehaviour> =
    GucSetting::<ExceptionBehaviour>::new(ExceptionBehaviour::TransDiscard);
pub static EXCEPTION_LOGGING: GucSetting<ExceptionLogging> =
    GucSetting::<ExceptionLogging>::new(ExceptionLogging::All);

pub static EXCEPTION_REPLAY_QUEUE_SIZE: GucSetting<i32> = GucSetting::<i32>::new(4_194_304);

pub static ENABLE_DDL_REPLICATION: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static INCLUDE_DDL_REPSET: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static ALLOW_DDL_FROM_FUNCTIONS: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static DENY_ALL_DDL: GucSetting<bool> = GucSetting::<bool>::new(false);
/// Apply every row change through SQL statements instead of the executor (a diagnostic).
pub static USE_SPI: GucSetting<bool> = GucSetting::<bool>::new(false);
/// Apply and sync workers commit with `synchronous_commit = local` when on, `off` otherwise.
pub static SYNCHRONOUS_COMMIT: GucSetting<bool> = GucSetting::<bool>::new(false);
/// Set by replicate_ddl around the command it runs (already queued, so not queued again).
pub static IN_REPLICATE_DDL: GucSetting<bool> = GucSetting::<bool>::new(false);
/// Set by `spock.repair_mode()` for its transaction: DDL run meanwhile is not queued.
pub static REPAIR_MODE: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static COUNTRY: GucSetting<Option<std::ffi::CString>> =
    GucSetting::<Option<std::ffi::CString>>::new(Some(c"??"));

/// The settings that decide what is replicated (DDL queueing, set membership, the flag
/// replicate_ddl sets) are superuser-only (upstream lets any user set the first three): a user
/// could otherwise keep their DDL from the other nodes, or queue it where the DBA does not.
pub fn define() {
    GucRegistry::define_bool_guc(
        c"spock.enable_ddl_replication",
        c"Replicate DDL statements to the other nodes automatically.",
        c"Statements are queued for the default_insert_only set and run by subscribers.",
        &ENABLE_DDL_REPLICATION,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"spock.include_ddl_repset",
        c"Add created or altered tables to the default (or default_insert_only) set.",
        c"",
        &INCLUDE_DDL_REPSET,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"spock.allow_ddl_from_functions",
        c"Also replicate DDL run inside functions.",
        c"",
        &ALLOW_DDL_FROM_FUNCTIONS,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"spock.deny_all_ddl",
        c"Refuse every DDL statement.",
        c"",
        &DENY_ALL_DDL,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"spock.use_spi",
        c"Apply replicated row changes through SQL statements instead of the executor.",
        c"Slower; for diagnosis. Tables without a replica identity index always use SQL.",
        &USE_SPI,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"spock.synchronous_commit",
        c"Make apply and sync workers wait for each applied transaction's WAL flush.",
        c"Off (the default), as in PostgreSQL's own apply worker: the provider is told only \
          positions whose local commit is flushed, so a crash loses nothing.",
        &SYNCHRONOUS_COMMIT,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"spock.in_replicate_ddl",
        c"Set by spock.replicate_ddl while it runs the command it has queued.",
        c"",
        &IN_REPLICATE_DDL,
        GucContext::Suset,
        GucFlags::NO_SHOW_ALL,
    );
    GucRegistry::define_bool_guc(
        c"spock.replication_repair_mode",
        c"Set by spock.repair_mode(): this transaction's changes stay on this node.",
        c"",
        &REPAIR_MODE,
        GucContext::Internal,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"spock.country",
        c"The country this node is in (spock.get_country()).",
        c"",
        &COUNTRY,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"spock.exception_replay_queue_size",
        c"Sets how much of a remote transaction (bytes) is kept for a replay after an error.",
        c"A larger transaction that fails makes the apply worker restart instead.",
        &EXCEPTION_REPLAY_QUEUE_SIZE,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"spock.conflict_resolution",
        c"Sets how conflicting remote changes are resolved.",
        c"Only last_update_wins (by commit timestamp, ties broken by node id) is available.",
        &CONFLICT_RESOLUTION,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"spock.conflict_log_level",
        c"Sets the log level for reporting detected conflicts.",
        c"",
        &CONFLICT_LOG_LEVEL,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"spock.conflict_log_limit",
        c"Sets how many conflicts each apply worker reports one by one in 10 seconds.",
        c"Further conflicts in the same 10 seconds are reported at DEBUG1 and summed up in one \
          LOG line; -1 reports every one at spock.conflict_log_level.",
        &CONFLICT_LOG_LIMIT,
        -1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"spock.save_resolutions",
        c"Log conflict resolutions to the spock.resolutions table.",
        c"",
        &SAVE_RESOLUTIONS,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"spock.exception_behaviour",
        c"Sets what happens when applying a remote transaction raises an error.",
        c"discard skips the failing changes, transdiscard skips the whole transaction, \
          sub_disable disables the subscription.",
        &EXCEPTION_BEHAVIOUR,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"spock.exception_logging",
        c"Sets which changes of a failed transaction go to spock.exception_log.",
        c"",
        &EXCEPTION_LOGGING,
        GucContext::Sighup,
        GucFlags::default(),
    );
}

/// `spock.repair_mode()`'s switch of `spock.replication_repair_mode`, until the transaction ends.
#[pgrx::pg_extern(sql = false)]
fn spock_set_repair_mode(enabled: bool) {
    let value = if enabled { c"on" } else { c"off" };
    // SAFETY: setting an internal GUC by name inside a transaction (LOCAL: it ends with it).
    unsafe {
        pgrx::pg_sys::set_config_option(
            c"spock.replication_repair_mode".as_ptr(),
            value.as_ptr(),
            pgrx::pg_sys::GucContext::PGC_INTERNAL,
            pgrx::pg_sys::GucSource::PGC_S_OVERRIDE,
            pgrx::pg_sys::GucAction::GUC_ACTION_LOCAL,
            true,
            0,
            false,
        );
    }
}
