//! Configures, builds and installs the patched server into a staging root (DESTDIR), with every
//! command's output in a log file. The configure flags live here and nowhere else.

use anyhow::{Context, Result, bail};
use std::{
    fs::{self, File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};
use xshell::{Cmd, Shell, cmd};

use crate::progress::{self, Meter};

/// Installation prefix of major `major` (see packaging spec: one private prefix per major).
pub fn prefix(major: u32) -> String {
    format!("/usr/pgedge-{major}")
}

/// The configure flags, in one place. What each is for:
/// - `--prefix=/usr/pgedge-<M>`: our private prefix; PostgreSQL appends `/postgresql` to the
///   share, lib-module, include and doc directories because the path does not name postgres,
///   so always ask `pg_config` for them.
/// - `--with-extra-version`: marks `version()`/`postgres --version` as a pgEdge build.
/// - `--with-openssl`: TLS for client connections and replication links.
/// - `--with-icu`: ICU collations (what distributions ship).
/// - `--with-lz4`, `--with-zstd`: WAL/TOAST/base-backup compression.
/// - `--with-libxml`, `--with-libxslt`: the xml type and contrib/xml2.
/// - `--with-uuid=e2fs`: contrib/uuid-ossp through libuuid, as Debian and PGDG build it.
/// - readline is on by default (psql line editing).
/// - `--with-system-tzdata`: use the OS time zone database, as distributions do.
/// - rpath stays enabled (upstream default): binaries find `/usr/pgedge-<M>/lib` once installed.
pub fn configure_args(major: u32, extra_version: &str) -> Vec<String> {
    [
        format!("--prefix={}", prefix(major)),
        format!("--with-extra-version= ({extra_version})"),
        "--with-openssl".into(),
        "--with-icu".into(),
        "--with-lz4".into(),
        "--with-zstd".into(),
        "--with-libxml".into(),
        "--with-libxslt".into(),
        "--with-uuid=e2fs".into(),
        "--with-readline".into(),
        "--with-system-tzdata=/usr/share/zoneinfo".into(),
    ]
    .into()
}

/// Variables that break a make started from cargo (pgrx strips the same ones).
const POISONED_VARS: &[&str] = &[
    "MAKEFLAGS",
    "MAKELEVEL",
    "MFLAGS",
    "DEBUG",
    "OPT_LEVEL",
    "TARGET",
    "PROFILE",
    "OUT_DIR",
    "HOST",
    "NUM_JOBS",
    "LIBRARY_PATH",
    "DYLD_FALLBACK_LIBRARY_PATH",
];

/// Runs configure (once per tree), `make world-bin` and `make install-world-bin` into `stage`.
pub fn build_and_install(
    src: &Path,
    stage: &Path,
    log: &Path,
    args: &[String],
    jobs: usize,
) -> Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(src);
    let mut log_file = Log::open(log)?;
    let configured = src.join(".pgedge-configured");
    if !configured.exists() {
        log_file.run(cmd!(sh, "./configure {args...}"), "configure")?;
        fs::write(&configured, args.join("\n"))?;
    }
    let jobs = format!("-j{jobs}");
    log_file.run_expecting(
        cmd!(sh, "make {jobs} world-bin"),
        "make world-bin",
        progress::estimate_objects(src),
    )?;
    let tmp = stage.with_extension("tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    let destdir = format!("DESTDIR={}", tmp.display());
    log_file.run(
        cmd!(sh, "make install-world-bin {destdir}"),
        "make install-world-bin",
    )?;
    if stage.exists() {
        fs::remove_dir_all(stage)?;
    }
    fs::rename(&tmp, stage)?;
    Ok(())
}

/// A build log that commands append to; a failure shows the log's tail and path.
pub struct Log {
    path: PathBuf,
    file: File,
}

impl Log {
    pub fn open(path: &Path) -> Result<Log> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Log {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Runs `cmd` with its output in the log, showing its progress (see `progress`).
    pub fn run(&mut self, cmd: Cmd<'_>, what: &str) -> Result<()> {
        self.run_expecting(cmd, what, None)
    }

    /// `run`, with an estimate of the units the step will count if no earlier run is known.
    pub fn run_expecting(
        &mut self,
        cmd: Cmd<'_>,
        what: &str,
        estimate: Option<usize>,
    ) -> Result<()> {
        let cmd = clean_env(cmd);
        eprintln!("$ {cmd}    (output in {})", self.path.display());
        writeln!(self.file, "\n$ {cmd}")?;
        let mut command = Command::from(cmd);
        command
            .stdout(self.file.try_clone()?)
            .stderr(self.file.try_clone()?);
        let mut meter = Meter::start(&self.path, what, estimate);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {what}"))?;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            meter.tick();
            std::thread::sleep(Duration::from_millis(500));
        };
        meter.finish(status.success());
        if !status.success() {
            bail!(
                "{what} failed ({status}). Last lines of {}:\n{}",
                self.path.display(),
                tail(&self.path, 40)
            );
        }
        Ok(())
    }
}

/// Removes cargo's and make's variables from a command started by the xtask.
pub fn clean_env(mut cmd: Cmd<'_>) -> Cmd<'_> {
    for var in POISONED_VARS {
        cmd = cmd.env_remove(var);
    }
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO") || k.starts_with("RUSTC") || k == "RUSTFLAGS" {
            cmd = cmd.env_remove(&*k);
        }
    }
    cmd
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_carry_the_required_features() {
        let args = configure_args(17, "pgEdge 0.1.0");
        for want in [
            "--prefix=/usr/pgedge-17",
            "--with-extra-version= (pgEdge 0.1.0)",
            "--with-openssl",
            "--with-icu",
            "--with-lz4",
            "--with-zstd",
            "--with-libxml",
            "--with-uuid=e2fs",
            "--with-readline",
        ] {
            assert!(args.iter().any(|a| a == want), "missing {want}");
        }
    }

    #[test]
    fn failure_shows_log_tail_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("build.log");
        let mut log = Log::open(&log_path).unwrap();
        let sh = Shell::new().unwrap();
        let e = log
            .run(
                cmd!(sh, "sh -c 'echo compiling; echo boom >&2; exit 3'"),
                "make",
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("make failed") && e.contains("boom"), "{e}");
        assert!(e.contains(&log_path.display().to_string()), "{e}");
    }
}
