//! Applies our server patches (`patches/<major>/*.diff`, lexical order) with `patch -p1`, no fuzz.
//! Patching happens in a scratch copy that is renamed into place only when every patch applied,
//! so a failed series never leaves a half-patched tree.

use crate::extract;
use anyhow::{Context, Result, bail};
use std::{
    fs,
    path::{Path, PathBuf},
};
use xshell::{Shell, cmd};

/// The series for `major`, in the order it is applied.
pub fn series(patches_root: &Path, major: u32) -> Result<Vec<PathBuf>> {
    let dir = patches_root.join(major.to_string());
    let mut list: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "diff"))
        .collect();
    list.sort();
    Ok(list)
}

/// Unpacks `tarball`, applies `patches` and moves the result to `dest` (which must not exist).
pub fn prepare_tree(tarball: &Path, patches: &[PathBuf], dest: &Path) -> Result<()> {
    let scratch = dest.with_extension("tmp");
    if scratch.exists() {
        fs::remove_dir_all(&scratch)?;
    }
    let result = (|| {
        let top = extract::unpack(tarball, &scratch)?;
        apply(&top, patches)?;
        fs::rename(&top, dest).with_context(|| format!("cannot move tree to {}", dest.display()))
    })();
    let _ = fs::remove_dir_all(&scratch);
    result
}

/// Applies each patch in order inside `tree`; the error names the patch and the failing hunks.
pub fn apply(tree: &Path, patches: &[PathBuf]) -> Result<()> {
    let sh = Shell::new()?;
    for p in patches {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        let out = cmd!(
            sh,
            "patch -p1 --forward --batch --fuzz=0 --no-backup-if-mismatch --reject-file=- -d {tree} -i {p}"
        )
        .quiet()
        .ignore_status()
        .output()
        .context("cannot run `patch` (install the patch package)")?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
            bail!(
                "patch {name} ({}) does not apply:\n{}",
                p.display(),
                text.trim_end()
            );
        }
        eprintln!("applied {name}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball(dir: &Path) -> PathBuf {
        let tgz = dir.join("postgresql-0.1.tar.gz");
        let gz = flate2::write::GzEncoder::new(fs::File::create(&tgz).unwrap(), Default::default());
        let mut b = tar::Builder::new(gz);
        let body = b"line one\nline two\nline three\n";
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "postgresql-0.1/src/file.c", &body[..])
            .unwrap();
        b.into_inner().unwrap().finish().unwrap();
        tgz
    }

    const GOOD: &str = "--- a/src/file.c\n+++ b/src/file.c\n@@ -1,3 +1,3 @@\n line one\n-line two\n+line 2\n line three\n";
    const BAD: &str = "--- a/src/file.c\n+++ b/src/file.c\n@@ -1,3 +1,3 @@\n line one\n line 2\n-line drei\n+line 3\n";

    #[test]
    fn series_is_lexical() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("17")).unwrap();
        for n in ["0002-b.diff", "0001-a.diff", "README"] {
            fs::write(dir.path().join("17").join(n), "").unwrap();
        }
        let names: Vec<_> = series(dir.path(), 17)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["0001-a.diff", "0002-b.diff"]);
    }

    #[test]
    fn good_series_applies() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("0001-good.diff");
        fs::write(&good, GOOD).unwrap();
        let dest = dir.path().join("src");
        prepare_tree(&tarball(dir.path()), &[good], &dest).unwrap();
        assert!(
            fs::read_to_string(dest.join("src/file.c"))
                .unwrap()
                .contains("line 2")
        );
    }

    #[test]
    fn failing_patch_is_named_and_leaves_no_tree() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("0001-good.diff");
        let bad = dir.path().join("0002-stale.diff");
        fs::write(&good, GOOD).unwrap();
        fs::write(&bad, BAD).unwrap();
        let dest = dir.path().join("src");
        let e = format!(
            "{:#}",
            prepare_tree(&tarball(dir.path()), &[good, bad], &dest).unwrap_err()
        );
        assert!(
            e.contains("0002-stale.diff") && e.contains("does not apply"),
            "{e}"
        );
        assert!(e.contains("Hunk #1 FAILED"), "{e}");
        assert!(!dest.exists(), "no half-patched tree");
        assert!(!dest.with_extension("tmp").exists(), "scratch removed");
    }
}
