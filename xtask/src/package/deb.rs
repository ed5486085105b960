//! Writes the .deb: an ar archive with `debian-binary`, `control.tar.gz` (control, md5sums,
//! maintainer scripts) and `data.tar.gz`, all owned by root with the source date as mtime, in
//! the layout `dpkg-deb --build` produces (`./`-prefixed names, directories first, GNU long
//! names).

use super::{Meta, tree::Node, tree::Tree};
use anyhow::Result;
use flate2::{Compression, write::GzEncoder};
use md5::{Digest, Md5};
use std::io::Write;

/// gzip level of `data.tar.gz` (see docs/packaging.md for the measurements).
pub const GZIP_LEVEL: u32 = 6;

/// A maintainer script: name (`postinst`) and text.
pub type Script = (&'static str, String);

/// The whole .deb file.
pub fn build(
    meta: &Meta,
    tree: &Tree,
    depends: &[String],
    scripts: &[Script],
    epoch: u64,
) -> Result<Vec<u8>> {
    let data = data_tar(tree, epoch)?;
    let control = control_text(meta, tree, depends);
    let mut md5sums = String::new();
    for (path, data) in tree.files() {
        md5sums.push_str(&format!(
            "{}  {}\n",
            crate::verify::hex(&Md5::digest(data)),
            &path[1..]
        ));
    }
    let mut members: Vec<(String, Vec<u8>, bool)> = vec![
        ("control".into(), control.into_bytes(), false),
        ("md5sums".into(), md5sums.into_bytes(), false),
    ];
    for (name, text) in scripts {
        members.push(((*name).into(), text.clone().into_bytes(), true));
    }
    members.sort_by(|a, b| a.0.cmp(&b.0));
    let mut tar = TarWriter::new(epoch);
    tar.dir("./")?;
    for (name, body, exec) in &members {
        tar.file(&format!("./{name}"), body, *exec)?;
    }
    let control_tar = gzip(&tar.finish()?, 9)?;

    let mut deb = b"!<arch>\n".to_vec();
    ar_member(&mut deb, "debian-binary", b"2.0\n", epoch);
    ar_member(&mut deb, "control.tar.gz", &control_tar, epoch);
    ar_member(&mut deb, "data.tar.gz", &data, epoch);
    Ok(deb)
}

/// The `control` file.
pub fn control_text(meta: &Meta, tree: &Tree, depends: &[String]) -> String {
    // Installed-Size in KiB, as dpkg-gencontrol counts it: files rounded up, 1 per other entry.
    let kib: u64 = tree
        .nodes
        .values()
        .map(|n| match n {
            Node::File { data, .. } => (data.len() as u64).div_ceil(1024),
            _ => 1,
        })
        .sum();
    let mut fields = vec![
        ("Package", meta.name.clone()),
        ("Version", meta.deb_version.clone()),
        ("Architecture", meta.deb_arch.clone()),
        ("Maintainer", meta.maintainer.clone()),
        ("Installed-Size", kib.to_string()),
        ("Depends", depends.join(", ")),
    ];
    if !meta.replaces.is_empty() {
        let list = meta.replaces.join(", ");
        fields.push(("Conflicts", list.clone()));
        fields.push(("Replaces", list.clone()));
        fields.push(("Provides", list));
    }
    fields.extend([
        ("Section", meta.deb_section.clone()),
        ("Priority", "optional".into()),
        ("Homepage", meta.homepage.clone()),
    ]);
    let mut text: String = fields.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
    text.push_str(&format!("Description: {}\n", meta.summary));
    for line in meta.description.lines() {
        if line.trim().is_empty() {
            text.push_str(" .\n");
        } else {
            text.push_str(&format!(" {line}\n"));
        }
    }
    text
}

fn data_tar(tree: &Tree, epoch: u64) -> Result<Vec<u8>> {
    let mut tar = TarWriter::new(epoch);
    tar.dir("./")?;
    for (path, node) in &tree.nodes {
        match node {
            Node::Dir { .. } => tar.dir(&format!(".{path}/"))?,
            // Debian installs shared libraries and modules without the execute bit.
            Node::File { data, exec } => {
                tar.file(&format!(".{path}"), data, *exec && !is_shared_library(path))?
            }
            Node::Symlink(target) => tar.symlink(&format!(".{path}"), target)?,
        }
    }
    gzip(&tar.finish()?, GZIP_LEVEL)
}

fn is_shared_library(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.ends_with(".so") || name.contains(".so.")
}

fn gzip(data: &[u8], level: u32) -> Result<Vec<u8>> {
    // flate2 writes mtime 0 and no file name into the gzip header: reproducible.
    let mut gz = GzEncoder::new(Vec::new(), Compression::new(level));
    gz.write_all(data)?;
    Ok(gz.finish()?)
}

/// A member of a common-format ar archive (what dpkg-deb writes: no `/` after the name).
fn ar_member(out: &mut Vec<u8>, name: &str, data: &[u8], epoch: u64) {
    let header = format!(
        "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
        name,
        epoch,
        0,
        0,
        "100644",
        data.len()
    );
    debug_assert_eq!(header.len(), 60);
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    if data.len() % 2 == 1 {
        out.push(b'\n');
    }
}

/// GNU tar entries owned by root:root with a fixed mtime; names longer than the header's 100
/// bytes get a `././@LongLink` entry first, as GNU tar does.
struct TarWriter {
    builder: tar::Builder<Vec<u8>>,
    epoch: u64,
}

impl TarWriter {
    fn new(epoch: u64) -> TarWriter {
        TarWriter {
            builder: tar::Builder::new(Vec::new()),
            epoch,
        }
    }

    fn header(
        &mut self,
        name: &str,
        kind: tar::EntryType,
        mode: u32,
        size: u64,
    ) -> Result<tar::Header> {
        if name.len() > 100 {
            let mut long = tar::Header::new_gnu();
            set_name(&mut long, "././@LongLink");
            long.set_entry_type(tar::EntryType::GNULongName);
            long.set_mode(0o644);
            long.set_uid(0);
            long.set_gid(0);
            long.set_mtime(0);
            let mut body = name.as_bytes().to_vec();
            body.push(0);
            long.set_size(body.len() as u64);
            long.set_cksum();
            self.builder.append(&long, body.as_slice())?;
        }
        let mut h = tar::Header::new_gnu();
        set_name(&mut h, name);
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_username("root")?;
        h.set_groupname("root")?;
        h.set_mtime(self.epoch);
        h.set_size(size);
        Ok(h)
    }

    fn dir(&mut self, name: &str) -> Result<()> {
        let mut h = self.header(name, tar::EntryType::Directory, 0o755, 0)?;
        h.set_cksum();
        self.builder.append(&h, std::io::empty())?;
        Ok(())
    }

    fn file(&mut self, name: &str, data: &[u8], exec: bool) -> Result<()> {
        let mode = if exec { 0o755 } else { 0o644 };
        let mut h = self.header(name, tar::EntryType::Regular, mode, data.len() as u64)?;
        h.set_cksum();
        self.builder.append(&h, data)?;
        Ok(())
    }

    fn symlink(&mut self, name: &str, target: &str) -> Result<()> {
        let mut h = self.header(name, tar::EntryType::Symlink, 0o777, 0)?;
        h.set_link_name(target)?;
        h.set_cksum();
        self.builder.append(&h, std::io::empty())?;
        Ok(())
    }

    fn finish(self) -> Result<Vec<u8>> {
        Ok(self.builder.into_inner()?)
    }
}

/// Writes the name bytes as given (keeping `./`), truncated to the 100-byte field.
fn set_name(h: &mut tar::Header, name: &str) {
    let field = &mut h.as_gnu_mut().expect("GNU header").name;
    field.fill(0);
    let bytes = name.as_bytes();
    let n = bytes.len().min(field.len());
    field[..n].copy_from_slice(&bytes[..n]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_survive_a_round_trip() {
        let long = format!("./usr/{}/file", "d".repeat(120));
        let mut tar = TarWriter::new(1_700_000_000);
        tar.dir("./").unwrap();
        tar.file(&long, b"x", true).unwrap();
        tar.symlink("./usr/link", "file").unwrap();
        let bytes = tar.finish().unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let names: Vec<(String, u32, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
                (
                    name,
                    e.header().mode().unwrap(),
                    e.header().mtime().unwrap(),
                )
            })
            .collect();
        assert_eq!(names[0].0, "./");
        assert_eq!(names[1], (long, 0o755, 1_700_000_000));
        assert_eq!(names[2].0, "./usr/link");
    }

    #[test]
    fn ar_members_are_padded_to_even_length() {
        let mut out = Vec::new();
        ar_member(&mut out, "debian-binary", b"2.0\n", 5);
        assert_eq!(out.len(), 64);
        ar_member(&mut out, "odd", b"abc", 5);
        assert_eq!(out.len(), 64 + 60 + 4);
        assert!(out.starts_with(b"debian-binary   5           0     0     100644  4         `\n"));
    }
}
