//! The package's file tree, in memory and sorted: the staged kernel (ELF files stripped of their
//! symbol tables, modes normalised) plus the files the packaging adds. Both package writers read
//! it, so the .deb and the .rpm carry the same bytes.

use anyhow::{Context, Result, bail};
use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};
use xshell::{Shell, cmd};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory; `owned` ones belong to the package (not e.g. `/usr` or `/lib/systemd`).
    Dir {
        owned: bool,
    },
    File {
        data: Vec<u8>,
        exec: bool,
    },
    Symlink(String),
}

/// Absolute paths (`/usr/pgedge-17/bin/postgres`) to their contents.
#[derive(Debug, Default, Clone)]
pub struct Tree {
    pub nodes: BTreeMap<String, Node>,
}

impl Tree {
    /// Reads `stage` (a DESTDIR root), stripping ELF files through `work`. Every directory at or
    /// below `prefix` is owned by the package.
    pub fn from_stage(stage: &Path, prefix: &str, work: &Path) -> Result<Tree> {
        let mut tree = Tree::default();
        let mut files = Vec::new();
        walk(stage, stage, &mut files)?;
        for (rel, path) in files {
            let abs = format!("/{rel}");
            let meta = fs::symlink_metadata(&path)?;
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&path)?;
                tree.add(&abs, Node::Symlink(target.to_string_lossy().into_owned()));
            } else if meta.is_dir() {
                let owned = abs == prefix || abs.starts_with(&format!("{prefix}/"));
                tree.add(&abs, Node::Dir { owned });
            } else if meta.is_file() {
                let exec = meta.permissions().mode() & 0o111 != 0;
                let data =
                    fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
                tree.add(&abs, Node::File { data, exec });
            } else {
                bail!("{} is neither file, directory nor symlink", path.display());
            }
        }
        tree.strip_elf(work)?;
        Ok(tree)
    }

    /// Adds a node, creating missing parent directories as not owned.
    pub fn add(&mut self, path: &str, node: Node) {
        let mut parent = Path::new(path).parent();
        while let Some(p) = parent {
            let s = p.to_string_lossy();
            if s == "/" || self.nodes.contains_key(&*s) {
                break;
            }
            self.nodes
                .insert(s.into_owned(), Node::Dir { owned: false });
            parent = p.parent();
        }
        self.nodes.insert(path.to_string(), node);
    }

    /// Adds a regular file (and its missing parents).
    pub fn add_file(&mut self, path: &str, data: impl Into<Vec<u8>>, exec: bool) {
        self.add(
            path,
            Node::File {
                data: data.into(),
                exec,
            },
        );
    }

    /// Marks `path` (a directory already in the tree) as owned by the package.
    pub fn own_dir(&mut self, path: &str) {
        self.nodes
            .insert(path.to_string(), Node::Dir { owned: true });
    }

    pub fn files(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.nodes.iter().filter_map(|(p, n)| match n {
            Node::File { data, .. } => Some((p.as_str(), data.as_slice())),
            _ => None,
        })
    }

    /// Removes symbol tables from executables and shared objects (the build has no debug
    /// information to keep). Sections such as pgrx's `.pgrxsc` stay. One `strip` run over copies
    /// in `work`, so the stage itself is never modified.
    fn strip_elf(&mut self, work: &Path) -> Result<()> {
        if work.exists() {
            fs::remove_dir_all(work)?;
        }
        fs::create_dir_all(work)?;
        let mut copies: Vec<(String, PathBuf)> = Vec::new();
        for (i, (path, node)) in self.nodes.iter().enumerate() {
            if let Node::File { data, .. } = node
                && is_elf_object(data)
            {
                let copy = work.join(format!("{i}"));
                fs::write(&copy, data)?;
                copies.push((path.clone(), copy));
            }
        }
        if copies.is_empty() {
            return Ok(());
        }
        let sh = Shell::new()?;
        let args: Vec<&Path> = copies.iter().map(|(_, c)| c.as_path()).collect();
        cmd!(
            sh,
            "strip --strip-unneeded --remove-section=.comment {args...}"
        )
        .quiet()
        .run()
        .context("strip failed")?;
        for (path, copy) in copies {
            let stripped = fs::read(&copy)?;
            if let Some(Node::File { data, .. }) = self.nodes.get_mut(&path) {
                *data = stripped;
            }
        }
        fs::remove_dir_all(work)?;
        Ok(())
    }
}

/// An ELF executable or shared object (not a relocatable `.o` or static archive).
pub fn is_elf_object(data: &[u8]) -> bool {
    // e_type at offset 16: 2 = executable, 3 = shared object / PIE.
    data.len() > 18 && data.starts_with(b"\x7fELF") && matches!(data[16], 2 | 3)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let rel = path
            .strip_prefix(root)
            .expect("below root")
            .to_string_lossy()
            .into_owned();
        let is_dir = e.file_type()?.is_dir();
        out.push((rel, path.clone()));
        if is_dir {
            walk(root, &path, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_added_unowned_and_stage_dirs_owned() {
        let stage = tempfile::tempdir().unwrap();
        let bin = stage.path().join("usr/pgedge-9/bin");
        fs::create_dir_all(&bin).unwrap();
        fs::write(bin.join("tool"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(bin.join("tool"), fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink("tool", bin.join("alias")).unwrap();
        let work = tempfile::tempdir().unwrap();
        let mut tree = Tree::from_stage(stage.path(), "/usr/pgedge-9", work.path()).unwrap();
        tree.add_file("/usr/share/doc/pgedge-9/copyright", "c", false);
        let get = |p: &str| tree.nodes.get(p).cloned();
        assert_eq!(get("/usr"), Some(Node::Dir { owned: false }));
        assert_eq!(get("/usr/pgedge-9"), Some(Node::Dir { owned: true }));
        assert_eq!(get("/usr/pgedge-9/bin"), Some(Node::Dir { owned: true }));
        assert_eq!(get("/usr/share/doc"), Some(Node::Dir { owned: false }));
        assert_eq!(
            get("/usr/pgedge-9/bin/tool"),
            Some(Node::File {
                data: b"#!/bin/sh\n".to_vec(),
                exec: true
            })
        );
        assert_eq!(
            get("/usr/pgedge-9/bin/alias"),
            Some(Node::Symlink("tool".into()))
        );
        let order: Vec<&String> = tree.nodes.keys().collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted);
    }

    #[test]
    fn elf_detection_skips_archives_and_objects() {
        let mut so = b"\x7fELF".to_vec();
        so.resize(64, 0);
        so[16] = 3;
        assert!(is_elf_object(&so));
        so[16] = 1;
        assert!(!is_elf_object(&so));
        assert!(!is_elf_object(b"!<arch>\nstuff and more stuff"));
    }
}
