//! Builds spock (`hooks/`), snowflake and lolor with pgrx against the staged kernel's
//! `pg_config`, generates their SQL scripts and installs library, control file and script into
//! the stage.

use crate::{cache::Cache, sqlgen, stage::PgConfig};
use anyhow::{Context, Result, bail};
use std::{fs, os::unix::fs::symlink, path::Path};
use xshell::{Shell, cmd};

pub struct Extension {
    /// Cargo package name (also the extension and library name).
    pub name: &'static str,
    /// Crate directory in the workspace.
    pub dir: &'static str,
    /// Other names the same library is installed under.
    pub aliases: &'static [&'static str],
}

pub const EXTENSIONS: &[Extension] = &[
    // spock_output is the logical decoding plugin name; it is the same library as spock.
    Extension {
        name: "spock",
        dir: "hooks",
        aliases: &["spock_output"],
    },
    Extension {
        name: "snowflake",
        dir: "snowflake",
        aliases: &[],
    },
    Extension {
        name: "lolor",
        dir: "lolor",
        aliases: &[],
    },
];

/// Workspace paths whose contents decide the extension build.
pub const INPUTS: &[&str] = &[
    "Cargo.toml",
    "Cargo.lock",
    ".cargo",
    "rust-toolchain.toml",
    "compat15",
    "compat16",
    "compat17",
    "compat18",
    "hooks",
    "snowflake",
    "lolor",
];

/// The extensions named in `only` (all when empty); an unknown name is an error.
pub fn select(only: &[String]) -> Result<Vec<&'static Extension>> {
    if only.is_empty() {
        return Ok(EXTENSIONS.iter().collect());
    }
    only.iter()
        .map(|name| {
            EXTENSIONS.iter().find(|e| e.name == name).with_context(|| {
                let known: Vec<_> = EXTENSIONS.iter().map(|e| e.name).collect();
                format!("unknown extension {name} (known: {})", known.join(", "))
            })
        })
        .collect()
}

pub fn build_and_install(
    repo: &Path,
    cache: &Cache,
    major: u32,
    pg: &PgConfig,
    selected: &[&Extension],
) -> Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(repo);
    let target = cache.cargo_target(major);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let packages: Vec<String> = selected
        .iter()
        .flat_map(|e| ["-p".into(), e.name.into()])
        .collect();
    let features: String = selected
        .iter()
        .map(|e| format!("{}/pg{major}", e.name))
        .collect::<Vec<_>>()
        .join(",");
    let pg_config = &pg.path;
    cmd!(
        sh,
        "{cargo} build --release --locked --lib {packages...} --features {features}"
    )
    .env("PGRX_PG_CONFIG_PATH", pg_config)
    .env("CARGO_TARGET_DIR", &target)
    .run()
    .context("building the extensions failed")?;

    let pkglibdir = pg.dir("--pkglibdir")?;
    let extdir = pg.dir("--sharedir")?.join("extension");
    fs::create_dir_all(&extdir)?;
    let version = env!("CARGO_PKG_VERSION");
    for ext in selected {
        let built = target.join("release").join(format!("lib{}.so", ext.name));
        let control = repo.join(ext.dir).join(format!("{}.control", ext.name));
        let default_version = control_version(&control)?;
        let sql = sqlgen::generate(&built, &control, ext.name, version)?;
        fs::write(
            extdir.join(format!("{}--{default_version}.sql", ext.name)),
            &sql,
        )?;
        fs::copy(&control, extdir.join(format!("{}.control", ext.name)))?;
        for script in version_scripts(&repo.join(ext.dir), ext.name)? {
            if script.ends_with(format!("{}--{default_version}.sql", ext.name)) {
                bail!(
                    "{} would replace the generated install script",
                    script.display()
                );
            }
            fs::copy(&script, extdir.join(script.file_name().unwrap()))?;
        }
        for (name, text) in version_templates(&repo.join(ext.dir), ext.name, &sql)? {
            if name == format!("{}--{default_version}.sql", ext.name) {
                bail!("template {name}.in would replace the generated install script");
            }
            fs::write(extdir.join(name), text)?;
        }
        let lib = pkglibdir.join(format!("{}.so", ext.name));
        install_file(&built, &lib)?;
        for alias in ext.aliases {
            let link = pkglibdir.join(format!("{alias}.so"));
            let _ = fs::remove_file(&link);
            symlink(format!("{}.so", ext.name), &link)?;
        }
        eprintln!(
            "installed {} {default_version} into {}",
            ext.name,
            pkglibdir.display()
        );
    }
    Ok(())
}

/// The hand-written scripts of older versions and update steps (`sql/<name>--*.sql`: base scripts
/// of the versions upstream shipped, and each step of upstream's update chain), sorted.
pub fn version_scripts(crate_dir: &Path, name: &str) -> Result<Vec<std::path::PathBuf>> {
    Ok(version_files(crate_dir, name, ".sql")?
        .into_iter()
        .map(|(_, path)| path)
        .collect())
}

/// Update steps that contain this build's generated install script (`sql/<name>--*.sql.in`),
/// rendered: a line `-- @include <file>` is replaced by that file of `sql/` (itself rendered),
/// a line `-- @install_script` by `install_script`. Returns (script name, text) pairs.
pub fn version_templates(
    crate_dir: &Path,
    name: &str,
    install_script: &str,
) -> Result<Vec<(String, String)>> {
    let dir = crate_dir.join("sql");
    version_files(crate_dir, name, ".sql.in")?
        .into_iter()
        .map(|(file, path)| {
            let text = fs::read_to_string(&path)?;
            let script = file.trim_end_matches(".in").to_string();
            Ok((script, render(&dir, &text, install_script, 0)?))
        })
        .collect()
}

/// The files `sql/<name>--*<suffix>` of a crate, as (file name, path), sorted by name.
fn version_files(
    crate_dir: &Path,
    name: &str,
    suffix: &str,
) -> Result<Vec<(String, std::path::PathBuf)>> {
    let dir = crate_dir.join("sql");
    let prefix = format!("{name}--");
    let mut files = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default()
            .to_string();
        if file.starts_with(&prefix) && file.ends_with(suffix) {
            files.push((file, path));
        }
    }
    files.sort();
    Ok(files)
}

fn render(dir: &Path, text: &str, install_script: &str, depth: usize) -> Result<String> {
    if depth > 4 {
        bail!("@include nested too deep in {}", dir.display());
    }
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_end() == "-- @install_script" {
            out.push_str(install_script);
        } else if let Some(file) = line.strip_prefix("-- @include ") {
            let path = dir.join(file.trim());
            let included = fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            out.push_str(&render(dir, &included, install_script, depth + 1)?);
        } else {
            out.push_str(line);
        }
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// Replaces `to` without rewriting a library a running server may have mapped.
fn install_file(from: &Path, to: &Path) -> Result<()> {
    let tmp = to.with_extension("so.tmp");
    fs::copy(from, &tmp).with_context(|| format!("cannot copy {}", from.display()))?;
    fs::rename(&tmp, to)?;
    Ok(())
}

/// `default_version` from a control file.
pub fn control_version(control: &Path) -> Result<String> {
    let text = fs::read_to_string(control)
        .with_context(|| format!("cannot read {}", control.display()))?;
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=')
            && k.trim() == "default_version"
        {
            return Ok(v.trim().trim_matches('\'').to_string());
        }
    }
    bail!("{} has no default_version", control.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_splice_their_includes_and_the_install_script() {
        let dir = tempfile::tempdir().unwrap();
        let sql = dir.path().join("sql");
        fs::create_dir(&sql).unwrap();
        fs::write(
            sql.join("x--1--2.sql.in"),
            "-- head\n-- @include part.sql\n",
        )
        .unwrap();
        fs::write(
            sql.join("part.sql"),
            "DROP a;\n-- @install_script\nSELECT 1;\n",
        )
        .unwrap();
        fs::write(sql.join("x--0--1.sql"), "plain\n").unwrap();
        let got = version_templates(dir.path(), "x", "CREATE a;").unwrap();
        assert_eq!(
            got,
            [(
                "x--1--2.sql".to_string(),
                "-- head\nDROP a;\nCREATE a;\nSELECT 1;\n".to_string()
            )]
        );
    }

    #[test]
    fn control_versions_are_the_upstream_api_levels() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let v = |dir: &str, name: &str| {
            control_version(&repo.join(dir).join(format!("{name}.control"))).unwrap()
        };
        assert_eq!(v("hooks", "spock"), "5.0.5");
        assert_eq!(v("snowflake", "snowflake"), "2.4");
        assert_eq!(v("lolor", "lolor"), "1.2.2");
    }
}
