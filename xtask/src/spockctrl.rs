//! Builds the `spockctrl` command line against the staged kernel's libpq and installs it into
//! the stage's `bin/`, so the packages carry it. Its run path is the installed libdir
//! (`/usr/pgedge-<M>/lib`), as for the kernel's own programs; tests run the staged copy with the
//! kernel's `LD_LIBRARY_PATH`.

use crate::{
    cache::{Cache, Key},
    configure,
    stage::PgConfig,
};
use anyhow::{Context, Result};
use std::{fs, path::Path};
use xshell::{Shell, cmd};

/// Workspace paths whose contents decide the spockctrl build.
const INPUTS: &[&str] = &[
    "Cargo.toml",
    "Cargo.lock",
    "rust-toolchain.toml",
    "spockctrl",
];

/// Identity of the spockctrl build: the kernel, the toolchain and the sources.
pub fn key(repo: &Path, kernel_key: &str) -> Result<String> {
    let sh = Shell::new()?;
    sh.change_dir(repo);
    let rustc = cmd!(sh, "rustc -vV")
        .quiet()
        .read()
        .context("cannot run rustc")?;
    let mut key = Key::default();
    key.add("kernel", kernel_key).add("rustc", rustc);
    for input in INPUTS {
        let path = repo.join(input);
        key.add("input", input);
        if path.is_dir() {
            key.add_tree(&path)?;
        } else {
            key.add(
                input,
                fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
            );
        }
    }
    Ok(key.finish())
}

pub fn build_and_stage(repo: &Path, cache: &Cache, major: u32, pg: &PgConfig) -> Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(repo);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = cache.cargo_target(major);
    let rpath = format!("{}/lib", configure::prefix(major));
    cmd!(sh, "{cargo} build --release --locked -p spockctrl")
        .env("SPOCKCTRL_PG_CONFIG", &pg.path)
        .env("SPOCKCTRL_RPATH", &rpath)
        .env("CARGO_TARGET_DIR", &target)
        .run()
        .context("building spockctrl failed")?;
    let bindir = pg.dir("--bindir")?;
    let built = target.join("release/spockctrl");
    let dest = bindir.join("spockctrl");
    // Through a new file: a running copy is never rewritten in place.
    let tmp = bindir.join(".spockctrl.tmp");
    fs::copy(&built, &tmp).with_context(|| format!("cannot copy {}", built.display()))?;
    fs::rename(&tmp, &dest)?;
    eprintln!("installed spockctrl into {}", bindir.display());
    Ok(())
}
