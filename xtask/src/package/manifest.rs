//! What goes beside the packages: a CycloneDX SBOM of what went in (PostgreSQL release and
//! tarball hash, our kernel patches and their hashes, the extensions, the crates from
//! `Cargo.lock` they are built from, the toolchain) and a `SHA256SUMS` file in `sha256sum`
//! format.

use super::Meta;
use crate::verify;
use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// Everything the SBOM records.
pub struct Inputs<'a> {
    pub meta: &'a Meta,
    pub release: &'a crate::sources::Release,
    pub repo: &'a Path,
    pub patches: &'a [PathBuf],
    /// (extension, version of its SQL API).
    pub extensions: Vec<(String, String)>,
    pub rustc: String,
    pub cc: String,
    pub epoch: u64,
}

/// The CycloneDX 1.5 JSON document.
pub fn sbom(inputs: &Inputs) -> Result<String> {
    let meta = inputs.meta;
    let mut components = vec![json!({
        "type": "application",
        "bom-ref": "postgresql",
        "name": "postgresql",
        "version": inputs.release.version,
        "purl": format!("pkg:generic/postgresql@{}", inputs.release.version),
        "hashes": [{"alg": "SHA-256", "content": inputs.release.sha256}],
        "licenses": [{"license": {"id": "PostgreSQL"}}],
        "externalReferences": [{"type": "distribution", "url": inputs.release.url}],
    })];
    for p in inputs.patches {
        let rel = p.strip_prefix(inputs.repo).unwrap_or(p);
        components.push(json!({
            "type": "file",
            "bom-ref": format!("patch:{}", rel.display()),
            "name": rel.display().to_string(),
            "hashes": [{"alg": "SHA-256", "content": verify::sha256_file(p)?}],
            "description": format!("pgEdge kernel patch applied to PostgreSQL {}", inputs.release.version),
        }));
    }
    for (name, version) in &inputs.extensions {
        components.push(json!({
            "type": "library",
            "bom-ref": format!("extension:{name}"),
            "name": name,
            "version": version,
            "description": format!("PostgreSQL extension {name} (SQL API {version}), built from this repository"),
        }));
    }
    let lock =
        fs::read_to_string(inputs.repo.join("Cargo.lock")).context("cannot read Cargo.lock")?;
    let roots: Vec<&str> = inputs.extensions.iter().map(|(n, _)| n.as_str()).collect();
    for c in crates(&lock, &roots)? {
        let mut entry = json!({
            "type": "library",
            "bom-ref": format!("crate:{}@{}", c.name, c.version),
            "name": c.name,
            "version": c.version,
            "purl": format!("pkg:cargo/{}@{}", c.name, c.version),
        });
        if let Some(sum) = &c.checksum {
            entry["hashes"] = json!([{"alg": "SHA-256", "content": sum}]);
        }
        components.push(entry);
    }
    let body = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {
            "timestamp": rfc3339(inputs.epoch),
            "component": {
                "type": "application",
                "bom-ref": meta.name,
                "name": meta.name,
                "version": meta.deb_version,
                "description": meta.summary,
                "licenses": [{"license": {"id": meta.license}}],
                "purl": format!("pkg:deb/{}@{}?arch={}", meta.name, meta.deb_version, meta.deb_arch),
            },
            "properties": [
                {"name": "pgedge:rustc", "value": inputs.rustc},
                {"name": "pgedge:cc", "value": inputs.cc},
                {"name": "pgedge:source-date-epoch", "value": inputs.epoch.to_string()},
            ],
        },
        "components": components,
    });
    // A serial number derived from the content keeps the document reproducible; it is shaped
    // as a name-based (version 5, RFC 4122 variant) UUID, as CycloneDX's schema requires.
    let digest = verify::sha256_bytes(serde_json::to_string(&body)?.as_bytes());
    let variant = ["8", "9", "a", "b"][usize::from(digest.as_bytes()[16]) % 4];
    let mut doc = body;
    doc["serialNumber"] = Value::String(format!(
        "urn:uuid:{}-{}-5{}-{variant}{}-{}",
        &digest[0..8],
        &digest[8..12],
        &digest[13..16],
        &digest[17..20],
        &digest[20..32]
    ));
    Ok(serde_json::to_string_pretty(&doc)? + "\n")
}

/// `sha256sum`-format lines for `files` (names relative to their directory).
pub fn sha256sums(files: &[PathBuf]) -> Result<String> {
    let mut out = String::new();
    for f in files {
        let name = f.file_name().context("no file name")?.to_string_lossy();
        out.push_str(&format!("{}  {name}\n", verify::sha256_file(f)?));
    }
    Ok(out)
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Crate {
    pub name: String,
    pub version: String,
    pub checksum: Option<String>,
}

/// The crates reachable from `roots` in `Cargo.lock` (the roots themselves excluded).
pub fn crates(lock: &str, roots: &[&str]) -> Result<Vec<Crate>> {
    #[derive(serde::Deserialize)]
    struct Lock {
        package: Vec<Pkg>,
    }
    #[derive(serde::Deserialize)]
    struct Pkg {
        name: String,
        version: String,
        checksum: Option<String>,
        #[serde(default)]
        dependencies: Vec<String>,
    }
    let lock: Lock = toml::from_str(lock).context("Cargo.lock is malformed")?;
    let mut by_name: BTreeMap<&str, Vec<&Pkg>> = BTreeMap::new();
    for p in &lock.package {
        by_name.entry(&p.name).or_default().push(p);
    }
    // A dependency is written "name" when unique, else "name version" (maybe "(source)").
    let resolve = |dep: &str| -> Option<&Pkg> {
        let mut words = dep.split_whitespace();
        let name = words.next()?;
        let candidates = by_name.get(name)?;
        match words.next() {
            Some(v) => candidates.iter().copied().find(|p| p.version == v),
            None => candidates.first().copied(),
        }
    };
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    let mut todo: Vec<&Pkg> = roots.iter().filter_map(|r| resolve(r)).collect();
    let mut out = Vec::new();
    while let Some(p) = todo.pop() {
        if !seen.insert((p.name.clone(), p.version.clone())) {
            continue;
        }
        if !roots.contains(&p.name.as_str()) {
            out.push(Crate {
                name: p.name.clone(),
                version: p.version.clone(),
                checksum: p.checksum.clone(),
            });
        }
        todo.extend(p.dependencies.iter().filter_map(|d| resolve(d)));
    }
    out.sort();
    Ok(out)
}

/// `2026-11-22T06:00:00Z` for a Unix time.
pub fn rfc3339(epoch: u64) -> String {
    let (y, m, d) = civil_from_days((epoch / 86400) as i64);
    let s = epoch % 86400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// `Sun, 22 Nov 2026 06:00:00 +0000` (Debian changelog trailer) for a Unix time.
pub fn rfc2822(epoch: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = (epoch / 86400) as i64;
    let (y, m, d) = civil_from_days(days);
    let s = epoch % 86400;
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        MONTHS[(m - 1) as usize],
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_332_000), "2026-11-22T07:20:00Z");
        assert_eq!(rfc2822(1_795_332_000), "Sun, 22 Nov 2026 07:20:00 +0000");
        assert_eq!(rfc2822(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn crate_closure_follows_versions() {
        let lock = r#"
version = 4
[[package]]
name = "ext"
version = "0.1.0"
dependencies = ["a", "b 2.0.0"]
[[package]]
name = "a"
version = "1.0.0"
checksum = "aa"
[[package]]
name = "b"
version = "1.0.0"
[[package]]
name = "b"
version = "2.0.0"
dependencies = ["a"]
[[package]]
name = "unrelated"
version = "9.9.9"
"#;
        let got: Vec<String> = crates(lock, &["ext"])
            .unwrap()
            .into_iter()
            .map(|c| format!("{}@{}", c.name, c.version))
            .collect();
        assert_eq!(got, vec!["a@1.0.0", "b@2.0.0"]);
    }
}
