//! The pinned source table (`sources.toml` at the repository root): which PostgreSQL releases we
//! build, where their tarballs come from and the SHA-256 each must have.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;

const TABLE: &str = include_str!("../../sources.toml");

/// One pinned PostgreSQL release.
#[derive(Debug, Clone, Deserialize)]
pub struct Release {
    pub version: String,
    pub url: String,
    pub sha256: String,
    /// Debian suite whose `postgresql-<major>` source package carries this exact tarball.
    pub debian_suite: Option<String>,
}

#[derive(Deserialize)]
struct Table {
    default: BTreeMap<String, String>,
    release: Vec<Release>,
}

impl Release {
    pub fn major(&self) -> u32 {
        major_of(&self.version).expect("validated when the table is loaded")
    }

    /// The upstream file name, also the name it has in our cache.
    pub fn file_name(&self) -> String {
        format!("postgresql-{}.tar.bz2", self.version)
    }
}

fn major_of(version: &str) -> Option<u32> {
    version.split('.').next()?.parse().ok()
}

fn table() -> Result<Table> {
    let table: Table = toml::from_str(TABLE).context("sources.toml is malformed")?;
    for r in &table.release {
        if major_of(&r.version).is_none()
            || r.sha256.len() != 64
            || !r.sha256.bytes().all(|b| b.is_ascii_hexdigit())
        {
            bail!("sources.toml: bad entry for {}", r.version);
        }
    }
    Ok(table)
}

/// The release to build for `major`: `version` if given (it must be pinned), else the default.
pub fn resolve(major: u32, version: Option<&str>) -> Result<Release> {
    let table = table()?;
    let wanted = match version {
        Some(v) => v.to_string(),
        None => table
            .default
            .get(&major.to_string())
            .cloned()
            .with_context(|| format!("PostgreSQL {major} is not supported (see sources.toml)"))?,
    };
    if major_of(&wanted) != Some(major) {
        bail!("--pg-version {wanted} is not a PostgreSQL {major} release");
    }
    let known: Vec<&str> = table
        .release
        .iter()
        .filter(|r| r.major() == major)
        .map(|r| r.version.as_str())
        .collect();
    table
        .release
        .iter()
        .find(|r| r.version == wanted)
        .cloned()
        .with_context(|| {
            format!(
                "PostgreSQL {wanted} has no pinned checksum in sources.toml (pinned for {major}: {})",
                known.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_pins() {
        assert_eq!(resolve(17, None).unwrap().version, "17.11");
        assert_eq!(resolve(15, None).unwrap().version, "15.18");
        assert_eq!(resolve(16, None).unwrap().version, "16.15");
        let r18 = resolve(18, None).unwrap();
        assert_eq!(r18.version, "18.6");
        assert_eq!(r18.debian_suite.as_deref(), Some("forky"));
        let r = resolve(15, Some("15.19")).unwrap();
        assert_eq!(
            r.url,
            "https://ftp.postgresql.org/pub/source/v15.19/postgresql-15.19.tar.bz2"
        );
        assert_eq!(r.file_name(), "postgresql-15.19.tar.bz2");
    }

    #[test]
    fn unknown_versions_are_refused() {
        let e = resolve(17, Some("17.99")).unwrap_err().to_string();
        assert!(
            e.contains("no pinned checksum") && e.contains("17.11"),
            "{e}"
        );
        let e = resolve(17, Some("15.18")).unwrap_err().to_string();
        assert!(e.contains("not a PostgreSQL 17 release"), "{e}");
        assert!(resolve(14, None).is_err());
    }
}
