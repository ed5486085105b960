//! `synchronize_structure`: the provider's schema is copied with the kernel's own `pg_dump`
//! and `pg_restore` (found next to the running `postgres`), the `pre-data` section (types,
//! tables, functions) before the data copy and the `post-data` section (indexes, constraints,
//! triggers) after it, so rows are loaded before their indexes are built. Spock's own schema is
//! left out; objects that already exist locally are reported and kept.
//!
//! The worker runs as the bootstrap superuser on a machine other users may share, so:
//! - no file: pg_dump's custom-format archive goes through a pipe straight into pg_restore (a
//!   schema-only archive has no data blocks, so pg_restore never needs to seek). A file at a
//!   predictable path in the shared temp directory could be pre-created or symlinked by anyone.
//! - no secret on a command line, which every local user can read (`ps`, `/proc/*/cmdline`):
//!   libpq's own parser splits the provider's DSN (key/value or URI form), the password goes to
//!   pg_dump as `PGPASSWORD` (a process's environment is readable by its owner and root only)
//!   and the rest stays in `--dbname`.
//! - the local database, role, socket directory and port go to pg_restore as separate libpq
//!   parameters (`PGDATABASE`…), never spliced into a connection string, so no database name can
//!   break or extend it.
//! - the server's own `PG*` environment is not inherited: each program gets only what is set here.

use super::Subscription;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The restoring session's settings: the provider's schema is restored here only, not
/// replicated on from here.
const RESTORE_OPTIONS: &str = "-c spock.enable_ddl_replication=off -c spock.include_ddl_repset=off";

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

/// Dumps one section of the provider's schema and restores it here.
pub fn restore(sub: &Subscription, section: Section) {
    let provider = split_password(parse_dsn(sub)).unwrap_or_else(|keyword| {
        crate::raise(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!(
                "subscription \"{}\": synchronize_structure cannot hand \"{keyword}\" of the \
                 provider's connection string to pg_dump without showing it to other local users",
                sub.name
            ),
        )
    });
    let local = Local::get();

    // Both programs write their messages (prefixed "pg_dump:" / "pg_restore:") into one pipe,
    // read to its end below: neither can block on a full pipe while the other is waited for.
    let (mut messages, errors_to) =
        std::io::pipe().unwrap_or_else(|e| raise_system(sub, format!("cannot create a pipe: {e}")));
    let errors_to_dump = errors_to
        .try_clone()
        .unwrap_or_else(|e| raise_system(sub, format!("cannot create a pipe: {e}")));

    let mut pg_dump = program("pg_dump");
    pg_dump
        .args([
            "--schema-only",
            "--format=custom",
            "--no-publications",
            "--no-subscriptions",
            "--exclude-schema=spock",
            "--section",
            section.name(),
            "--dbname",
            &provider.conninfo,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(errors_to_dump);
    if let Some(password) = &provider.password {
        pg_dump.env("PGPASSWORD", password);
    }
    let started = pg_dump.spawn();
    drop(pg_dump);
    let mut dump =
        started.unwrap_or_else(|e| raise_system(sub, format!("cannot run pg_dump: {e}")));
    let archive = dump.stdout.take().expect("stdout is piped");

    let mut pg_restore = program("pg_restore");
    pg_restore
        .env("PGDATABASE", &local.database)
        .env("PGUSER", &local.user)
        .env("PGHOST", &local.host)
        .env("PGPORT", &local.port)
        .env("PGOPTIONS", RESTORE_OPTIONS)
        // `-d` makes pg_restore restore into a database rather than print a script; libpq
        // ignores the empty value and takes every connection parameter from the environment.
        .args(["--dbname", ""])
        .stdin(archive)
        .stdout(Stdio::null())
        .stderr(errors_to);
    let started = pg_restore.spawn();
    // Dropping the Command closes this process's last write end of the message pipe, so
    // reading it ends once both programs have exited.
    drop(pg_restore);
    let mut restore = started.unwrap_or_else(|e| {
        let _ = dump.kill();
        let _ = dump.wait();
        raise_system(sub, format!("cannot run pg_restore: {e}"))
    });

    let mut text = Vec::new();
    let _ = messages.read_to_end(&mut text);
    let dumped = dump.wait();
    let restored = restore.wait();
    // libpq never prints a password; masking it anyway keeps it out of the log should a message
    // ever quote one.
    let mut text = String::from_utf8_lossy(&text).into_owned();
    if let Some(password) = provider.password.as_deref().filter(|p| !p.is_empty()) {
        text = text.replace(password, "********");
    }

    let errors: Vec<&str> = text.lines().filter(|l| l.contains("error:")).collect();
    if !dumped.as_ref().is_ok_and(|s| s.success()) {
        // pg_restore's errors are kept too: its early exit is what stops pg_dump then.
        crate::raise(
            PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE,
            format!(
                "subscription \"{}\": could not dump the provider's schema ({}): {}",
                sub.name,
                section.name(),
                if errors.is_empty() {
                    format!("pg_dump ended with {dumped:?}")
                } else {
                    errors.join("; ")
                }
            ),
        );
    }
    // pg_restore goes on after a failing statement and exits with 1 at the end; objects that
    // exist here already (the extension, the public schema) are not a failure.
    let failed: Vec<&str> = errors
        .into_iter()
        .filter(|l| !l.contains("already exists"))
        .collect();
    let killed = !restored.as_ref().is_ok_and(|s| s.code().is_some());
    if !failed.is_empty() || killed {
        raise_system(
            sub,
            format!(
                "could not restore the provider's schema ({}): {}",
                section.name(),
                if killed {
                    format!("pg_restore ended abnormally ({restored:?})")
                } else {
                    failed.join("; ")
                }
            ),
        );
    }
    log!(
        "subscription \"{}\": restored the provider's schema ({})",
        sub.name,
        section.name()
    );
}

fn raise_system(sub: &Subscription, message: String) -> ! {
    crate::raise(
        PgSqlErrorCode::ERRCODE_SYSTEM_ERROR,
        format!("subscription \"{}\": {message}", sub.name),
    )
}

/// One of the kernel's programs, without the server's own libpq environment (`PGOPTIONS`,
/// `PGDATABASE`, `PGPASSWORD`, `PGSERVICE`…), never prompting for a password.
fn program(name: &str) -> Command {
    let mut cmd = Command::new(bindir().join(name));
    for (key, _) in std::env::vars_os() {
        if key.as_bytes().starts_with(b"PG") {
            cmd.env_remove(key);
        }
    }
    cmd.arg("--no-password");
    cmd
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

/// How pg_restore reaches this database: as the bootstrap superuser over the server's first
/// socket directory.
struct Local {
    database: String,
    user: String,
    host: String,
    port: String,
}

impl Local {
    fn get() -> Local {
        let (database, user, sockets) = BackgroundWorker::transaction(|| {
            Spi::get_three::<String, String, String>(
                "SELECT current_database()::text, \
                 (SELECT rolname::text FROM pg_roles WHERE oid = 10), \
                 current_setting('unix_socket_directories')",
            )
            .unwrap_or_else(|e| {
                crate::raise(
                    PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                    format!("cannot read this database's connection parameters: {e}"),
                )
            })
        });
        // SAFETY: the port is set once at startup.
        let port = unsafe { pg_sys::PostPortNumber };
        Local {
            database: database.unwrap_or_default(),
            user: user.unwrap_or_default(),
            host: first_socket_dir(&sockets.unwrap_or_default()),
            port: port.to_string(),
        }
    }
}

/// The first entry of `unix_socket_directories` (a comma-separated list whose entries may be
/// double-quoted), or `localhost` for a server without sockets.
fn first_socket_dir(setting: &str) -> String {
    let mut dir = String::new();
    let mut chars = setting.trim_start().chars().peekable();
    if chars.peek() == Some(&'"') {
        chars.next();
        while let Some(c) = chars.next() {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    dir.push('"');
                }
                '"' => break,
                c => dir.push(c),
            }
        }
    } else {
        dir = chars.take_while(|&c| c != ',').collect();
        dir.truncate(dir.trim_end().len());
    }
    if dir.is_empty() {
        "localhost".into()
    } else {
        dir
    }
}

/// A provider DSN split for pg_dump: a connection string for its command line and the
/// password for its environment.
#[derive(Debug, PartialEq)]
struct ProviderDsn {
    conninfo: String,
    password: Option<String>,
}

/// One keyword given in a connection string; `secret` is libpq's "hide this" mark.
struct ConnOption {
    keyword: String,
    value: String,
    secret: bool,
}

/// Takes the password out of a parsed DSN. Other secrets (`sslpassword`) have no environment
/// variable, so they are refused: the keyword comes back as the error.
fn split_password(options: Vec<ConnOption>) -> Result<ProviderDsn, String> {
    let mut conninfo = Vec::new();
    let mut password = None;
    for o in options {
        if o.keyword == "password" {
            password = Some(o.value);
        } else if o.secret {
            return Err(o.keyword);
        } else {
            conninfo.push(format!("{}={}", o.keyword, quote_value(&o.value)));
        }
    }
    Ok(ProviderDsn {
        conninfo: conninfo.join(" "),
        password,
    })
}

/// A connection string value: in single quotes, where libpq reads `\'` and `\\`.
fn quote_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// libpq's `PQconninfoOption` (libpq-fe.h); pgrx binds the server's headers only. Some fields
/// are there for the layout only.
#[repr(C)]
#[allow(dead_code)]
struct PQconninfoOption {
    keyword: *mut c_char,
    envvar: *mut c_char,
    compiled: *mut c_char,
    val: *mut c_char,
    label: *mut c_char,
    dispchar: *mut c_char,
    dispsize: c_int,
}

type ConninfoParse = unsafe extern "C" fn(*const c_char, *mut *mut c_char) -> *mut PQconninfoOption;
type ConninfoFree = unsafe extern "C" fn(*mut PQconninfoOption);
type Freemem = unsafe extern "C" fn(*mut c_void);

/// A function of libpq. The server does not link libpq; libpqwalreceiver does, and the server
/// loads it with RTLD_GLOBAL, so its libpq's symbols are found by name once it is loaded.
fn libpq_function(name: &CStr) -> *mut c_void {
    // SAFETY: loads a core module (a no-op once loaded, which the apply worker has done to
    // connect to the provider); dlsym gets a NUL-terminated name and a NULL answer is handled.
    let f = unsafe {
        pg_sys::load_file(c"libpqwalreceiver".as_ptr(), false);
        libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr())
    };
    if f.is_null() {
        crate::raise(
            PgSqlErrorCode::ERRCODE_SYSTEM_ERROR,
            format!("libpq's {} is not loaded", name.to_string_lossy()),
        );
    }
    f
}

/// The keywords the subscription's DSN sets, parsed by libpq itself (key/value or URI form),
/// so the split matches what libpq would connect with.
fn parse_dsn(sub: &Subscription) -> Vec<ConnOption> {
    let dsn = CString::new(sub.dsn.as_str()).unwrap_or_default();
    // SAFETY: non-NULL addresses of libpq functions with these documented signatures.
    let (parse, free, freemem) = unsafe {
        (
            std::mem::transmute::<*mut c_void, ConninfoParse>(libpq_function(c"PQconninfoParse")),
            std::mem::transmute::<*mut c_void, ConninfoFree>(libpq_function(c"PQconninfoFree")),
            std::mem::transmute::<*mut c_void, Freemem>(libpq_function(c"PQfreemem")),
        )
    };
    let mut message: *mut c_char = std::ptr::null_mut();
    // SAFETY: a NUL-terminated string and a place for libpq's message.
    let options = unsafe { parse(dsn.as_ptr(), &mut message) };
    if options.is_null() {
        if !message.is_null() {
            // SAFETY: libpq's message, freed with its own allocator.
            unsafe { freemem(message.cast()) };
        }
        // libpq's message may quote the string, and with it a password: it is left out.
        crate::raise(
            PgSqlErrorCode::ERRCODE_SYNTAX_ERROR,
            format!(
                "subscription \"{}\": invalid provider connection string",
                sub.name
            ),
        );
    }
    let text = |p: *const c_char| {
        // SAFETY: a NUL-terminated string inside libpq's array, copied before it is freed.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    };
    let mut set = Vec::new();
    // SAFETY: libpq's array ends with a NULL keyword; it is freed once, after the copies.
    unsafe {
        let mut o = options;
        while !(*o).keyword.is_null() {
            if !(*o).val.is_null() {
                set.push(ConnOption {
                    keyword: text((*o).keyword),
                    value: text((*o).val),
                    secret: !(*o).dispchar.is_null() && *(*o).dispchar == b'*' as c_char,
                });
            }
            o = o.add(1);
        }
        free(options);
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opt(keyword: &str, value: &str) -> ConnOption {
        ConnOption {
            keyword: keyword.into(),
            value: value.into(),
            secret: keyword.contains("password"),
        }
    }

    #[test]
    fn password_leaves_the_connection_string() {
        let dsn = split_password(vec![
            opt("host", "127.0.0.1"),
            opt("password", "Secr3t 'pw\\"),
            opt("dbname", "d b='x"),
            opt("user", "u"),
        ])
        .unwrap();
        assert_eq!(
            dsn,
            ProviderDsn {
                conninfo: r"host='127.0.0.1' dbname='d b=\'x' user='u'".into(),
                password: Some("Secr3t 'pw\\".into()),
            }
        );
        let none = split_password(vec![opt("host", "h")]).unwrap();
        assert_eq!(none.password, None);
        assert_eq!(none.conninfo, "host='h'");
    }

    #[test]
    fn other_secrets_are_refused() {
        let e = split_password(vec![opt("host", "h"), opt("sslpassword", "k")]).unwrap_err();
        assert_eq!(e, "sslpassword");
    }

    #[test]
    fn values_are_quoted_for_libpq() {
        assert_eq!(quote_value(""), "''");
        assert_eq!(quote_value("a b"), "'a b'");
        assert_eq!(quote_value(r"it's \ here"), r"'it\'s \\ here'");
    }

    #[test]
    fn first_socket_directory() {
        assert_eq!(first_socket_dir("/tmp"), "/tmp");
        assert_eq!(first_socket_dir(" /run/pg , /tmp"), "/run/pg");
        assert_eq!(first_socket_dir(r#""/a, ""b"" c",/tmp"#), r#"/a, "b" c"#);
        assert_eq!(first_socket_dir(""), "localhost");
    }
}
