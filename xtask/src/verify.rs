//! SHA-256 verification of source tarballs against the pinned table.

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::{fs::File, io, path::Path};

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hex(&hasher.finalize()))
}

pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fails, naming the file and both hashes, unless `path` hashes to `expected`.
pub fn check(path: &Path, expected: &str) -> Result<()> {
    let actual = sha256_file(path)?;
    if !actual.eq_ignore_ascii_case(expected) {
        bail!(
            "checksum mismatch for {}\n  expected sha256 {expected}\n  actual   sha256 {actual}",
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_file_and_both_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("postgresql-17.11.tar.bz2");
        std::fs::write(&f, b"abc").unwrap();
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        check(&f, abc).unwrap();
        let e = check(&f, &"0".repeat(64)).unwrap_err().to_string();
        assert!(e.contains("postgresql-17.11.tar.bz2"), "{e}");
        assert!(e.contains(abc) && e.contains(&"0".repeat(64)), "{e}");
    }
}
