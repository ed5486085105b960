//! Unpacks a verified `.tar.bz2`/`.tar.gz` source tarball into a fresh directory.

use anyhow::{Context, Result, bail};
use std::{fs, io::Read, path::Path};

/// Unpacks `tarball` into `into` (which must not exist) and returns the single top-level directory
/// it contains (`postgresql-X.Y`).
pub fn unpack(tarball: &Path, into: &Path) -> Result<std::path::PathBuf> {
    if into.exists() {
        bail!("{} already exists", into.display());
    }
    fs::create_dir_all(into)?;
    let file =
        fs::File::open(tarball).with_context(|| format!("cannot open {}", tarball.display()))?;
    let name = tarball.to_string_lossy();
    let reader: Box<dyn Read> = if name.ends_with(".tar.bz2") {
        Box::new(bzip2::read::BzDecoder::new(file))
    } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        bail!("{}: not a .tar.bz2 or .tar.gz file", tarball.display());
    };
    let mut archive = tar::Archive::new(std::io::BufReader::with_capacity(1 << 20, reader));
    archive.set_preserve_mtime(true);
    archive.set_preserve_permissions(true);
    archive
        .unpack(into)
        .with_context(|| format!("cannot unpack {}", tarball.display()))?;
    let mut tops = fs::read_dir(into)?.collect::<Result<Vec<_>, _>>()?;
    match tops.len() {
        1 => Ok(tops.remove(0).path()),
        n => bail!(
            "{}: expected one top-level directory, found {n}",
            tarball.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpacks_gz_with_one_top_dir() {
        let dir = tempfile::tempdir().unwrap();
        let tgz = dir.path().join("t.tar.gz");
        {
            let gz =
                flate2::write::GzEncoder::new(fs::File::create(&tgz).unwrap(), Default::default());
            let mut b = tar::Builder::new(gz);
            let mut h = tar::Header::new_gnu();
            h.set_size(5);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, "postgresql-0.1/README", &b"hello"[..])
                .unwrap();
            b.into_inner().unwrap().finish().unwrap();
        }
        let top = unpack(&tgz, &dir.path().join("out")).unwrap();
        assert!(top.ends_with("postgresql-0.1"));
        assert_eq!(fs::read_to_string(top.join("README")).unwrap(), "hello");
        assert!(
            unpack(&tgz, &dir.path().join("out")).is_err(),
            "refuses an existing dir"
        );
    }
}
