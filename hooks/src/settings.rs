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
pub static SAVE_RESOLUTIONS: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static EXCEPTION_BEHAVIOUR: GucSetting<ExceptionBehaviour> =
    GucSetting::<ExceptionBehaviour>::new(ExceptionBehaviour::TransDiscard);
pub static EXCEPTION_LOGGING: GucSetting<ExceptionLogging> =
    GucSetting::<ExceptionLogging>::new(ExceptionLogging::All);

pub static EXCEPTION_REPLAY_QUEUE_SIZE: GucSetting<i32> = GucSetting::<i32>::new(4_194_304);

pub fn define() {
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
