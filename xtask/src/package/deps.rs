//! Runtime dependencies computed from the package's ELF files: their `DT_NEEDED` sonames and
//! symbol versions, minus what the package ships itself, mapped to Debian package names (through
//! `ldconfig`, `dpkg-query -S` and the owning package's `shlibs` file) and to RPM soname
//! capabilities (`libssl.so.3()(64bit)`, `libc.so.6(GLIBC_2.34)(64bit)`).

use super::tree::{Node, Tree, is_elf_object};
use anyhow::{Context, Result, bail};
use object::{
    Endianness,
    elf::{DT_NEEDED, DT_RPATH, DT_RUNPATH, DT_SONAME},
    read::elf::{Dyn, ElfFile64},
};
use std::collections::{BTreeMap, BTreeSet};
use xshell::{Shell, cmd};

/// What the package's ELF files need from the system.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// Sonames (`libssl.so.3`).
    pub sonames: BTreeSet<String>,
    /// Symbol versions per soname (`libc.so.6` → `GLIBC_2.34`).
    pub versions: BTreeSet<(String, String)>,
}

struct ElfInfo {
    soname: Option<String>,
    needed: Vec<String>,
    runpath: Vec<String>,
    versions: Vec<(String, String)>,
}

fn read_elf(data: &[u8]) -> Result<ElfInfo> {
    let elf = ElfFile64::<Endianness>::parse(data)?;
    let endian = elf.endian();
    let sections = elf.elf_section_table();
    let mut info = ElfInfo {
        soname: None,
        needed: Vec::new(),
        runpath: Vec::new(),
        versions: Vec::new(),
    };
    if let Some((entries, link)) = sections.dynamic(endian, data)? {
        let strings = sections.strings(endian, data, link)?;
        for d in entries {
            let Some(tag) = d.tag32(endian) else { continue };
            if !matches!(tag, DT_NEEDED | DT_SONAME | DT_RUNPATH | DT_RPATH) {
                continue;
            }
            let value = String::from_utf8_lossy(d.string(endian, strings)?).into_owned();
            match tag {
                DT_NEEDED => info.needed.push(value),
                DT_SONAME => info.soname = Some(value),
                _ => info.runpath.extend(value.split(':').map(String::from)),
            }
        }
    }
    if let Some((mut needs, link)) = sections.gnu_verneed(endian, data)? {
        let strings = sections.strings(endian, data, link)?;
        while let Some((need, mut aux)) = needs.next()? {
            let file = String::from_utf8_lossy(need.file(endian, strings)?).into_owned();
            while let Some(a) = aux.next()? {
                let name = String::from_utf8_lossy(a.name(endian, strings)?).into_owned();
                info.versions.push((file.clone(), name));
            }
        }
    }
    Ok(info)
}

/// Scans every ELF file of `tree`. The package's own libraries (in `libdir`) satisfy needs
/// without a dependency, but only for files whose run path contains `libdir`: a file that
/// needs one of them and could not find it once installed is an error.
pub fn scan(tree: &Tree, libdir: &str) -> Result<Needs> {
    let mut infos = Vec::new();
    for (path, data) in tree.files() {
        if is_elf_object(data) {
            let info = read_elf(data).with_context(|| format!("cannot read ELF file {path}"))?;
            infos.push((path, info));
        }
    }
    let mut private = BTreeSet::new();
    for (path, info) in &infos {
        if path.starts_with(&format!("{libdir}/")) && !path[libdir.len() + 1..].contains('/') {
            private.insert(info.soname.clone().unwrap_or_else(|| file_name(path)));
        }
    }
    // Symlinks such as libpq.so.5 → libpq.so.5.17 name the same libraries.
    for (path, node) in &tree.nodes {
        if matches!(node, Node::Symlink(_)) && path.starts_with(&format!("{libdir}/lib")) {
            private.insert(file_name(path));
        }
    }
    let mut needs = Needs::default();
    for (path, info) in &infos {
        for soname in &info.needed {
            if private.contains(soname) {
                if !info.runpath.iter().any(|r| r == libdir) {
                    bail!(
                        "{path} needs {soname} from {libdir} but its run path is {:?}",
                        info.runpath
                    );
                }
            } else {
                needs.sonames.insert(soname.clone());
            }
        }
        for (file, version) in &info.versions {
            if !private.contains(file) {
                needs.versions.insert((file.clone(), version.clone()));
            }
        }
    }
    Ok(needs)
}

fn file_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_string()
}

/// RPM requirements in rpm's own notation, for 64-bit objects.
pub fn rpm_requires(needs: &Needs) -> Vec<String> {
    let mut out: BTreeSet<String> = needs
        .sonames
        .iter()
        .map(|s| format!("{s}()(64bit)"))
        .collect();
    for (file, version) in &needs.versions {
        out.insert(format!("{file}({version})(64bit)"));
    }
    out.into_iter().collect()
}

/// Debian `Depends` entries (`libssl3 (>= 3.0.0)`), from the packages installed on this system
/// that provide the sonames.
pub fn debian_depends(needs: &Needs) -> Result<Vec<String>> {
    let sh = Shell::new()?;
    let ldconfig = cmd!(sh, "/sbin/ldconfig -p")
        .quiet()
        .read()
        .context("ldconfig -p failed")?;
    let mut best: BTreeMap<String, Option<String>> = BTreeMap::new();
    for soname in &needs.sonames {
        let path = ldconfig_path(&ldconfig, soname)
            .with_context(|| format!("no 64-bit {soname} known to ldconfig on this system"))?;
        let package = owning_package(&sh, &path)?;
        let version = shlibs_dependency(&sh, &package, soname)?;
        let entry = best.entry(package).or_default();
        *entry = match (entry.take(), version) {
            (Some(a), Some(b)) => Some(if version_gt(&sh, &b, &a)? { b } else { a }),
            (a, b) => a.or(b),
        };
    }
    Ok(best
        .into_iter()
        .map(|(p, v)| match v {
            Some(v) => format!("{p} ({v})"),
            None => p,
        })
        .collect())
}

/// The path `ldconfig -p` lists for a 64-bit `soname`.
fn ldconfig_path(listing: &str, soname: &str) -> Option<String> {
    listing.lines().find_map(|line| {
        let (left, path) = line.trim().split_once(" => ")?;
        let (name, abi) = left.split_once(' ')?;
        (name == soname && abi.contains("64")).then(|| path.trim().to_string())
    })
}

/// The installed package (without architecture qualifier) that owns `path`, trying the merged-
/// /usr twin too (`/lib/x` is `/usr/lib/x`).
fn owning_package(sh: &Shell, path: &str) -> Result<String> {
    let twin = match path.strip_prefix("/usr") {
        Some(rest) => rest.to_string(),
        None => format!("/usr{path}"),
    };
    for candidate in [path, twin.as_str()] {
        if let Ok(out) = cmd!(sh, "dpkg-query -S {candidate}")
            .quiet()
            .ignore_stderr()
            .read()
            && let Some(line) = out.lines().next()
            && let Some((pkgs, _)) = line.split_once(": ")
        {
            let first = pkgs.split(", ").next().unwrap_or(pkgs);
            return Ok(first.split(':').next().unwrap_or(first).to_string());
        }
    }
    bail!("no installed Debian package owns {path}")
}

/// The version constraint the package's `shlibs` file gives for `soname` (`>= 3.0.0`).
fn shlibs_dependency(sh: &Shell, package: &str, soname: &str) -> Result<Option<String>> {
    let Some((name, version)) = split_soname(soname) else {
        return Ok(None);
    };
    let arch_pkg = format!("{package}:{}", super::deb_arch());
    let mut text = None;
    for p in [arch_pkg.as_str(), package] {
        if let Ok(path) = cmd!(sh, "dpkg-query --control-path {p} shlibs")
            .quiet()
            .ignore_stderr()
            .read()
            && !path.trim().is_empty()
        {
            text = std::fs::read_to_string(path.trim()).ok();
            break;
        }
    }
    let Some(text) = text else { return Ok(None) };
    Ok(parse_shlibs(&text, &name, &version, package))
}

/// `libssl.so.3` → (`libssl`, `3`); `libfoo-1.2.so` → (`libfoo`, `1.2`).
fn split_soname(soname: &str) -> Option<(String, String)> {
    if let Some((name, version)) = soname.split_once(".so.") {
        return Some((name.into(), version.into()));
    }
    let stem = soname.strip_suffix(".so")?;
    let (name, version) = stem.rsplit_once('-')?;
    Some((name.into(), version.into()))
}

/// Finds `name version package (constraint)` in a shlibs file (lines without a `type:` prefix).
fn parse_shlibs(text: &str, name: &str, version: &str, package: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let (n, v) = (words.next()?, words.next()?);
        if n != name || v != version {
            return None;
        }
        let rest: Vec<&str> = words.collect();
        let dep = rest.join(" ");
        let first = dep.split(',').next()?.trim();
        let (pkg, constraint) = first.split_once('(')?;
        (pkg.trim() == package).then(|| constraint.trim_end_matches(')').trim().to_string())
    })
}

/// `a` and `b` are constraints such as `>= 2.36`; compares their versions with dpkg.
fn version_gt(sh: &Shell, a: &str, b: &str) -> Result<bool> {
    let va = a.trim_start_matches(['>', '=', ' ']);
    let vb = b.trim_start_matches(['>', '=', ' ']);
    Ok(cmd!(sh, "dpkg --compare-versions {va} gt {vb}")
        .quiet()
        .run()
        .is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sonames_split_both_ways() {
        assert_eq!(
            split_soname("libssl.so.3"),
            Some(("libssl".into(), "3".into()))
        );
        assert_eq!(
            split_soname("ld-linux-x86-64.so.2"),
            Some(("ld-linux-x86-64".into(), "2".into()))
        );
        assert_eq!(
            split_soname("libfoo-1.2.so"),
            Some(("libfoo".into(), "1.2".into()))
        );
        assert_eq!(split_soname("weird"), None);
    }

    #[test]
    fn shlibs_lines_give_the_constraint() {
        let text = "libssl 3 libssl3 (>= 3.0.0)\nudeb: libssl 3 libssl3-udeb (>= 3.0.0)\n";
        assert_eq!(
            parse_shlibs(text, "libssl", "3", "libssl3"),
            Some(">= 3.0.0".into())
        );
        assert_eq!(parse_shlibs(text, "libcrypto", "3", "libssl3"), None);
    }

    #[test]
    fn ldconfig_listing_picks_the_64_bit_entry() {
        let listing = "\tlibz.so.1 (libc6) => /usr/lib32/libz.so.1\n\
                       \tlibz.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libz.so.1\n";
        assert_eq!(
            ldconfig_path(listing, "libz.so.1").as_deref(),
            Some("/lib/x86_64-linux-gnu/libz.so.1")
        );
    }

    /// Real system libraries: libc's shlibs file names libc6 with a version.
    #[test]
    fn libc_maps_to_libc6_with_a_version() {
        let needs = Needs {
            sonames: ["libc.so.6".to_string()].into(),
            versions: BTreeSet::new(),
        };
        let deps = debian_depends(&needs).unwrap();
        assert_eq!(deps.len(), 1, "{deps:?}");
        assert!(deps[0].starts_with("libc6 (>= 2."), "{deps:?}");
    }

    #[test]
    fn rpm_capabilities_use_rpm_notation() {
        let needs = Needs {
            sonames: ["libc.so.6".to_string()].into(),
            versions: [("libc.so.6".to_string(), "GLIBC_2.34".to_string())].into(),
        };
        assert_eq!(
            rpm_requires(&needs),
            vec!["libc.so.6()(64bit)", "libc.so.6(GLIBC_2.34)(64bit)"]
        );
    }
}
