//! `cargo xtask build`: runs the stages in order — fetch → verify → extract → patch →
//! configure/make/install → extensions — skipping each one whose input hash is unchanged.

use crate::{
    cache::{Cache, Key, Stamp},
    configure, extensions,
    fetch::{self, FetchOptions},
    patch, sources, spockctrl,
    stage::PgConfig,
};
use anyhow::{Context, Result};
use std::{
    fs,
    path::{Path, PathBuf},
    time::Instant,
};
use xshell::{Shell, cmd};

/// Bump to force every cached kernel to rebuild when the recipe changes in a way not visible in
/// its inputs (e.g. a new make target).
const KERNEL_RECIPE: &str = "1";

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub major: u32,
    pub version: Option<String>,
    pub fetch: FetchOptions,
    pub jobs: usize,
    pub skip_extensions: bool,
    /// Build and install only these extensions (all when empty). A partial build is never
    /// recorded as up to date.
    pub only_extensions: Vec<String>,
}

pub struct Built {
    pub pg_config: PathBuf,
    /// The DESTDIR root holding the kernel (and the extensions, unless built partially).
    pub stage: PathBuf,
    pub release: sources::Release,
    pub patches: Vec<PathBuf>,
    /// Whether spock, snowflake and lolor were all built and installed into the stage.
    pub complete: bool,
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the repo")
        .to_path_buf()
}

/// Identity of a kernel build: the tarball, the patches, the flags and the C compiler.
pub fn kernel_key(
    repo: &Path,
    opts: &BuildOptions,
) -> Result<(sources::Release, Vec<PathBuf>, Vec<String>, String)> {
    let release = sources::resolve(opts.major, opts.version.as_deref())?;
    let patches = patch::series(&repo.join("patches"), opts.major)?;
    let args = configure::configure_args(opts.major, &extra_version());
    let sh = Shell::new()?;
    let cc = cmd!(sh, "cc --version").quiet().read().unwrap_or_default();
    let mut key = Key::default();
    key.add("recipe", KERNEL_RECIPE)
        .add("tarball", &release.sha256)
        .add("cc", cc);
    for p in &patches {
        key.add(
            &p.file_name().unwrap_or_default().to_string_lossy(),
            fs::read(p)?,
        );
    }
    for a in &args {
        key.add("configure", a);
    }
    Ok((release, patches, args, key.finish()))
}

/// The `--with-extra-version` marker: `postgres --version` shows "(pgEdge <version>)".
pub fn extra_version() -> String {
    format!("pgEdge {}", env!("CARGO_PKG_VERSION"))
}

pub fn build(cache: &Cache, opts: &BuildOptions) -> Result<Built> {
    let started = Instant::now();
    let repo = repo_root();
    let (release, patches, args, key) = kernel_key(&repo, opts)?;
    let dir = cache.kernel(opts.major, &key);
    let stage = dir.join("stage");
    let pg = PgConfig::in_stage(&stage, &configure::prefix(opts.major));
    let kernel_done = Stamp(dir.join("kernel.done"));

    if kernel_done.matches(&key) && pg.path.exists() {
        eprintln!(
            "kernel PostgreSQL {}: up to date (cache hit {})",
            release.version,
            &key[..16]
        );
    } else {
        fs::create_dir_all(&dir)?;
        let src = dir.join("src");
        if !src.exists() {
            let tarball = fetch::tarball(cache, &release, &opts.fetch)?;
            eprintln!("verified {} (sha256 {})", tarball.display(), release.sha256);
            patch::prepare_tree(&tarball, &patches, &src)?;
        }
        configure::build_and_install(&src, &stage, &dir.join("build.log"), &args, opts.jobs)
            .with_context(|| format!("building PostgreSQL {} failed", release.version))?;
        // A rebuilt kernel invalidates the extensions and tools installed into the old stage.
        let _ = fs::remove_file(dir.join("extensions.done"));
        let _ = fs::remove_file(dir.join("spockctrl.done"));
        kernel_done.write(&key)?;
        eprintln!(
            "kernel PostgreSQL {}: built and staged in {}",
            release.version,
            stage.display()
        );
    }

    if !opts.skip_extensions {
        let selected = extensions::select(&opts.only_extensions)?;
        let ext_key = extensions_key(&repo, &key)?;
        let ext_done = Stamp(dir.join("extensions.done"));
        if ext_done.matches(&ext_key) {
            eprintln!("extensions: up to date (cache hit {})", &ext_key[..16]);
        } else if !opts.only_extensions.is_empty() {
            let _ = fs::remove_file(&ext_done.0);
            extensions::build_and_install(&repo, cache, opts.major, &pg, &selected)?;
        } else {
            extensions::build_and_install(&repo, cache, opts.major, &pg, &selected)?;
            ext_done.write(&ext_key)?;
        }
        // The cluster command line, linked against this kernel's libpq.
        let tool_key = spockctrl::key(&repo, &key)?;
        let tool_done = Stamp(dir.join("spockctrl.done"));
        if tool_done.matches(&tool_key) && pg.path.with_file_name("spockctrl").exists() {
            eprintln!("spockctrl: up to date (cache hit {})", &tool_key[..16]);
        } else {
            spockctrl::build_and_stage(&repo, cache, opts.major, &pg)?;
            tool_done.write(&tool_key)?;
        }
    }
    eprintln!(
        "done in {:.1}s; pg_config: {}",
        started.elapsed().as_secs_f64(),
        pg.path.display()
    );
    Ok(Built {
        pg_config: pg.path,
        stage,
        release,
        patches,
        complete: !opts.skip_extensions && opts.only_extensions.is_empty(),
    })
}

/// Identity of the extension build: the kernel, the Rust toolchain and the extension sources.
fn extensions_key(repo: &Path, kernel_key: &str) -> Result<String> {
    let sh = Shell::new()?;
    sh.change_dir(repo);
    let rustc = cmd!(sh, "rustc -vV")
        .quiet()
        .read()
        .context("cannot run rustc")?;
    let mut key = Key::default();
    key.add("kernel", kernel_key).add("rustc", rustc);
    for input in extensions::INPUTS {
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

/// The staged `pg_config` for the current inputs, if that kernel has been built.
pub fn staged_pg_config(cache: &Cache, opts: &BuildOptions) -> Result<PathBuf> {
    let (release, _, _, key) = kernel_key(&repo_root(), opts)?;
    let dir = cache.kernel(opts.major, &key);
    let pg = PgConfig::in_stage(&dir.join("stage"), &configure::prefix(opts.major));
    if !Stamp(dir.join("kernel.done")).matches(&key) || !pg.path.exists() {
        anyhow::bail!(
            "PostgreSQL {} is not built for the current sources; run `cargo xtask build --pg {}`",
            release.version,
            opts.major
        );
    }
    Ok(pg.path)
}
