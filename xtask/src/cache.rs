//! The build cache outside the clone (`$PGEDGE_BUILD_CACHE`, else `$XDG_CACHE_HOME/pgedge-build`,
//! else `~/.cache/pgedge-build`): downloaded sources, kernel builds keyed by a hash of their
//! inputs, and the extensions' cargo target directories.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::{
    fs,
    path::{Path, PathBuf},
};

#[derive(Debug, Clone)]
pub struct Cache {
    pub root: PathBuf,
}

impl Cache {
    pub fn from_env() -> Result<Cache> {
        let root = if let Some(dir) = std::env::var_os("PGEDGE_BUILD_CACHE") {
            PathBuf::from(dir)
        } else if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
            PathBuf::from(dir).join("pgedge-build")
        } else {
            let home =
                std::env::var_os("HOME").context("HOME is not set; set PGEDGE_BUILD_CACHE")?;
            PathBuf::from(home).join(".cache/pgedge-build")
        };
        Cache::at(root)
    }

    pub fn at(root: PathBuf) -> Result<Cache> {
        fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
        Ok(Cache { root })
    }

    pub fn sources(&self) -> PathBuf {
        self.root.join("sources")
    }

    pub fn apt(&self) -> PathBuf {
        self.root.join("apt")
    }

    pub fn kernel(&self, major: u32, key: &str) -> PathBuf {
        self.root
            .join("kernel")
            .join(format!("pg{major}-{}", &key[..16]))
    }

    pub fn cargo_target(&self, major: u32) -> PathBuf {
        self.root.join("target").join(format!("pg{major}"))
    }
}

/// Accumulates the inputs of a build step into one hex key.
#[derive(Default)]
pub struct Key(Sha256);

impl Key {
    pub fn add(&mut self, label: &str, value: impl AsRef<[u8]>) -> &mut Self {
        let value = value.as_ref();
        // Length-prefixed so that ("ab","c") and ("a","bc") differ.
        for part in [label.as_bytes(), value] {
            self.0.update((part.len() as u64).to_le_bytes());
            self.0.update(part);
        }
        self
    }

    /// Adds every file below `dir` (sorted, relative names and contents), skipping `target`.
    pub fn add_tree(&mut self, dir: &Path) -> Result<&mut Self> {
        let mut files = Vec::new();
        walk(dir, &mut files)?;
        files.sort();
        for f in files {
            let rel = f
                .strip_prefix(dir)
                .unwrap_or(&f)
                .to_string_lossy()
                .into_owned();
            let body = fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?;
            self.add(&rel, body);
        }
        Ok(self)
    }

    pub fn finish(&self) -> String {
        crate::verify::hex(&self.0.clone().finalize())
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                walk(&path, out)?;
            }
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// A file recording that a step finished for a given key.
pub struct Stamp(pub PathBuf);

impl Stamp {
    pub fn matches(&self, key: &str) -> bool {
        fs::read_to_string(&self.0).is_ok_and(|s| s.trim() == key)
    }

    pub fn write(&self, key: &str) -> Result<()> {
        fs::write(&self.0, format!("{key}\n"))
            .with_context(|| format!("cannot write {}", self.0.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_depends_on_every_input() {
        let k = |a: &str, b: &str| Key::default().add("a", a).add("b", b).finish();
        assert_eq!(k("x", "y"), k("x", "y"));
        assert_ne!(k("x", "y"), k("x", "z"));
        assert_ne!(k("xy", ""), k("x", "y"));
    }

    #[test]
    fn tree_key_sees_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("src")).unwrap();
        fs::write(dir.path().join("src/a.rs"), "1").unwrap();
        let before = Key::default().add_tree(dir.path()).unwrap().finish();
        fs::create_dir_all(dir.path().join("target")).unwrap();
        fs::write(dir.path().join("target/junk"), "x").unwrap();
        assert_eq!(
            before,
            Key::default().add_tree(dir.path()).unwrap().finish()
        );
        fs::write(dir.path().join("src/a.rs"), "2").unwrap();
        assert_ne!(
            before,
            Key::default().add_tree(dir.path()).unwrap().finish()
        );
    }

    #[test]
    fn stamps() {
        let dir = tempfile::tempdir().unwrap();
        let s = Stamp(dir.path().join("done"));
        assert!(!s.matches("k"));
        s.write("k").unwrap();
        assert!(s.matches("k") && !s.matches("other"));
    }
}
