//! The staged kernel: where `make install DESTDIR=…` put it and what its `pg_config` reports.
//! The staged `pg_config` is relocatable, so it answers with staged paths.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use xshell::{Shell, cmd};

pub struct PgConfig {
    pub path: PathBuf,
}

impl PgConfig {
    /// The `pg_config` of a stage whose install prefix is `prefix`.
    pub fn in_stage(stage: &Path, prefix: &str) -> PgConfig {
        PgConfig {
            path: stage
                .join(prefix.trim_start_matches('/'))
                .join("bin/pg_config"),
        }
    }

    pub fn query(&self, flag: &str) -> Result<String> {
        let sh = Shell::new()?;
        let pg_config = &self.path;
        let out = cmd!(sh, "{pg_config} {flag}")
            .quiet()
            .read()
            .with_context(|| format!("{} {flag} failed", pg_config.display()))?;
        Ok(out.trim().to_string())
    }

    pub fn dir(&self, flag: &str) -> Result<PathBuf> {
        let dir = PathBuf::from(self.query(flag)?);
        if !dir.is_absolute() {
            bail!("{} {flag} returned a relative path", self.path.display());
        }
        Ok(dir)
    }
}
