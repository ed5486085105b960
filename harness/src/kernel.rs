//! Locating a kernel's programs. A staged kernel under root's cache is unreachable for the
//! unprivileged server account, so as root we run it from a hard-linked mirror in the temp dir.

use anyhow::{Context, Result, bail};
use std::{
    fs,
    hash::{DefaultHasher, Hash, Hasher},
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, OnceLock},
    time::UNIX_EPOCH,
};

#[derive(Debug, Clone)]
pub struct Kernel {
    pub bindir: PathBuf,
    /// Directory of the kernel's own shared libraries (libpq…), for `LD_LIBRARY_PATH`.
    pub libdir: Option<PathBuf>,
    pub pkglibdir: PathBuf,
    pub sharedir: PathBuf,
    /// Server major version (15, 16, 17, 18).
    pub major: u32,
}

impl Kernel {
    /// The kernel staged by `cargo xtask build --pg <major>`, as `cargo xtask test` exports it.
    pub fn staged(major: u32) -> Result<Kernel> {
        let var = format!("PGEDGE_PG_CONFIG_{major}");
        let pg_config = std::env::var_os(&var).with_context(|| {
            format!("{var} is not set: run the tests through `cargo xtask test --pg {major}`")
        })?;
        Kernel::from_pg_config(Path::new(&pg_config))
    }

    /// A kernel described by its `pg_config`.
    pub fn from_pg_config(pg_config: &Path) -> Result<Kernel> {
        let ask = |flag: &str| -> Result<PathBuf> {
            let out = Command::new(pg_config)
                .arg(flag)
                .output()
                .with_context(|| format!("cannot run {}", pg_config.display()))?;
            if !out.status.success() {
                bail!("{} {flag} failed", pg_config.display());
            }
            Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
        };
        let bindir = ask("--bindir")?;
        let root = bindir
            .parent()
            .context("bindir has no parent")?
            .to_path_buf();
        let kernel = Kernel {
            major: major_of(&bindir)?,
            libdir: Some(ask("--libdir")?),
            pkglibdir: ask("--pkglibdir")?,
            sharedir: ask("--sharedir")?,
            bindir,
        };
        kernel.runnable_from(&root)
    }

    /// A server installed elsewhere (e.g. a distribution's stock PostgreSQL), by its bindir.
    pub fn from_bindir(bindir: &Path) -> Result<Kernel> {
        if !bindir.join("postgres").is_file() {
            bail!("no postgres in {}", bindir.display());
        }
        Ok(Kernel {
            major: major_of(bindir)?,
            libdir: None,
            pkglibdir: PathBuf::new(),
            sharedir: PathBuf::new(),
            bindir: bindir.to_path_buf(),
        })
    }

    pub fn bin(&self, program: &str) -> PathBuf {
        self.bindir.join(program)
    }

    /// Whether the server has a setting of this name.
    pub fn has_setting(&self, name: &str) -> Result<bool> {
        let out = Command::new(self.bin("postgres"))
            .arg("--describe-config")
            .envs(self.env())
            .output()
            .context("postgres --describe-config failed")?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text.lines().any(|l| l.split('\t').next() == Some(name)))
    }

    /// Environment every program of this kernel runs with.
    pub fn env(&self) -> Vec<(String, String)> {
        self.libdir
            .iter()
            .map(|l| ("LD_LIBRARY_PATH".to_string(), l.display().to_string()))
            .collect()
    }

    /// As root, re-homes the kernel into a mirror the server account can reach.
    fn runnable_from(self, root: &Path) -> Result<Kernel> {
        if !crate::node::is_root() || world_reachable(root) {
            return Ok(self);
        }
        let mirror = mirror(root)?;
        let moved = |p: &Path| mirror.join(p.strip_prefix(root).unwrap_or(p));
        Ok(Kernel {
            bindir: moved(&self.bindir),
            libdir: self.libdir.as_deref().map(moved),
            pkglibdir: moved(&self.pkglibdir),
            sharedir: moved(&self.sharedir),
            major: self.major,
        })
    }
}

/// Reads the major from `postgres --version` ("postgres (PostgreSQL) 17.11 (pgEdge …)").
fn major_of(bindir: &Path) -> Result<u32> {
    let out = Command::new(bindir.join("postgres"))
        .arg("--version")
        .env("LD_LIBRARY_PATH", bindir.with_file_name("lib"))
        .output()
        .with_context(|| format!("cannot run {}/postgres", bindir.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(2)
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("unexpected postgres --version output: {text}"))
}

fn world_reachable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.ancestors()
        .all(|p| fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// A hard-linked copy of `root` under the temp dir, named by a hash of the tree's file names,
/// sizes and times so a rebuilt kernel gets a fresh mirror.
fn mirror(root: &Path) -> Result<PathBuf> {
    let mut files = Vec::new();
    list(root, &mut files)?;
    files.sort();
    let mut h = DefaultHasher::new();
    root.hash(&mut h);
    for f in &files {
        let m = fs::symlink_metadata(f)?;
        (
            f,
            m.len(),
            m.modified()?.duration_since(UNIX_EPOCH)?.as_nanos(),
        )
            .hash(&mut h);
    }
    // The temp dir as first seen: a test may point TMPDIR at a directory of its own for its
    // servers (and remove it), while other test threads stage kernels.
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    let base = BASE.get_or_init(std::env::temp_dir);
    let dest = base.join(format!("pgedge-kernel-{:016x}", h.finish()));
    // Test threads share the process id, so they take turns; other processes use other names.
    static BUILDING: Mutex<()> = Mutex::new(());
    let _turn = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    if dest.exists() {
        return Ok(dest);
    }
    let tmp = dest.with_extension(format!("tmp{}", std::process::id()));
    if tmp.exists() {
        // Left by a crashed run; removing links never touches the kernel's own files.
        fs::remove_dir_all(&tmp)?;
    }
    for f in &files {
        let to = tmp.join(f.strip_prefix(root)?);
        fs::create_dir_all(to.parent().expect("below tmp"))?;
        let meta = fs::symlink_metadata(f)?;
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(f)?, &to)?;
        } else if let Err(e) = fs::hard_link(f, &to) {
            // Only a cross-device link falls back to copying; `to` is new, so the copy can never
            // write through a link into the kernel itself.
            if e.kind() != std::io::ErrorKind::CrossesDevices {
                return Err(e).with_context(|| format!("cannot link {}", f.display()));
            }
            fs::copy(f, &to)?;
        }
    }
    crate::node::make_traversable(&tmp)?;
    if fs::rename(&tmp, &dest).is_err() {
        // Another process built the same mirror first.
        let _ = fs::remove_dir_all(&tmp);
    }
    Ok(dest)
}

fn list(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let e = e?;
        if e.file_type()?.is_dir() {
            list(&e.path(), out)?;
        } else {
            out.push(e.path());
        }
    }
    Ok(())
}
