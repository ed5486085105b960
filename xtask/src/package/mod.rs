//! `cargo xtask package`: turns a staged kernel (with spock, snowflake and lolor installed) into
//! `pgedge-<M>_<version>_<arch>.deb` and `pgedge-<M>-<version>-<release>.<arch>.rpm`, plus an
//! SBOM manifest and `SHA256SUMS`, reproducibly for a given `SOURCE_DATE_EPOCH`.

mod deb;
mod deps;
mod manifest;
mod rpm;
mod scripts;
mod tree;

use crate::{cache::Cache, pipeline::Built, stage::PgConfig};
use anyhow::{Context, Result, bail};
use flate2::{Compression, write::GzEncoder};
use serde::Deserialize;
use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    time::Instant,
};
use xshell::{Shell, cmd};

/// Templates under `packaging/` (checked by the tests).
#[cfg(test)]
pub const TEMPLATES: &[&str] = &[
    "common/pgedge.conf.sample",
    "common/pgedge@.service",
    "common/copyright",
    "deb/postinst",
    "deb/prerm",
    "deb/postrm",
    "deb/lintian-overrides",
    "rpm/pre.sh",
    "rpm/post.sh",
    "rpm/preun.sh",
    "rpm/postun.sh",
];

/// Package identity and descriptive fields, from `packaging/package.toml` and the release.
#[derive(Debug, Clone)]
pub struct Meta {
    pub name: String,
    pub major: u32,
    pub pg_version: String,
    pub prefix: String,
    pub sharedir: String,
    pub dataroot: String,
    pub deb_version: String,
    pub rpm_version: String,
    pub rpm_release: String,
    pub deb_arch: String,
    pub rpm_arch: String,
    pub maintainer: String,
    pub vendor: String,
    pub homepage: String,
    pub license: String,
    pub deb_section: String,
    pub rpm_group: String,
    pub summary: String,
    pub description: String,
    pub replaces: Vec<String>,
    pub rpm_replaces: Vec<String>,
    pub changelog: String,
}

#[derive(Deserialize)]
struct PackageToml {
    revision: u32,
    maintainer: String,
    vendor: String,
    homepage: String,
    license: String,
    deb_section: String,
    rpm_group: String,
    summary: String,
    description: String,
    replaces: Vec<String>,
    rpm_replaces: Vec<String>,
}

impl Meta {
    pub fn load(repo: &Path, major: u32, pg_version: &str) -> Result<Meta> {
        let path = repo.join("packaging/package.toml");
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let t: PackageToml =
            toml::from_str(&text).with_context(|| format!("{} is malformed", path.display()))?;
        let prefix = crate::configure::prefix(major);
        let sharedir = format!("{prefix}/share/postgresql");
        let subst = |s: &str| {
            s.replace("@MAJOR@", &major.to_string())
                .replace("@PREFIX@", &prefix)
                .replace("@SHAREDIR@", &sharedir)
        };
        let upstream = upstream_version(pg_version);
        Ok(Meta {
            name: format!("pgedge-{major}"),
            major,
            pg_version: pg_version.to_string(),
            dataroot: format!("/var/lib/pgedge/{major}"),
            deb_version: format!("{upstream}-{}", t.revision),
            rpm_version: upstream,
            rpm_release: t.revision.to_string(),
            deb_arch: deb_arch().to_string(),
            rpm_arch: std::env::consts::ARCH.to_string(),
            maintainer: t.maintainer,
            vendor: t.vendor,
            homepage: t.homepage,
            license: t.license,
            deb_section: t.deb_section,
            rpm_group: t.rpm_group,
            summary: subst(&t.summary),
            description: wrap(&subst(t.description.trim()), 76),
            replaces: t.replaces.iter().map(|s| subst(s)).collect(),
            rpm_replaces: t.rpm_replaces.iter().map(|s| subst(s)).collect(),
            changelog: String::new(),
            prefix,
            sharedir,
        })
    }

    pub fn deb_file(&self) -> String {
        format!("{}_{}_{}.deb", self.name, self.deb_version, self.deb_arch)
    }

    pub fn rpm_file(&self) -> String {
        format!(
            "{}-{}-{}.{}.rpm",
            self.name, self.rpm_version, self.rpm_release, self.rpm_arch
        )
    }
}

/// Re-flows each paragraph (separated by blank lines) to lines of at most `width` characters.
fn wrap(text: &str, width: usize) -> String {
    let mut paragraphs = Vec::new();
    for para in text.split("\n\n") {
        let mut lines = Vec::new();
        let mut line = String::new();
        for word in para.split_whitespace() {
            if !line.is_empty() && line.len() + 1 + word.len() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
        paragraphs.push(lines.join("\n"));
    }
    paragraphs.join("\n\n")
}

/// PostgreSQL's version in package form: pre-releases (`18beta1`, `18rc1`) get a `~` so that
/// dpkg and rpm sort them below the release.
pub fn upstream_version(pg_version: &str) -> String {
    for tag in ["alpha", "beta", "rc"] {
        if let Some(at) = pg_version.find(tag)
            && at > 0
        {
            return format!("{}~{}", &pg_version[..at], &pg_version[at..]);
        }
    }
    pg_version.to_string()
}

/// Debian's name for the architecture we build on.
pub fn deb_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64el",
        other => other,
    }
}

#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Where to write the packages (default: `<cache>/packages/pg<M>`).
    pub out_dir: Option<PathBuf>,
    /// Timestamp for every date in the packages (default: `$SOURCE_DATE_EPOCH`, else the last
    /// commit's time).
    pub source_date_epoch: Option<u64>,
}

/// The files written.
#[derive(Debug)]
pub struct Packages {
    pub deb: PathBuf,
    pub rpm: PathBuf,
    pub sbom: PathBuf,
    pub sums: PathBuf,
}

/// Packages a fully built kernel.
pub fn run(cache: &Cache, built: &Built, opts: &Options) -> Result<Packages> {
    let started = Instant::now();
    let repo = crate::pipeline::repo_root();
    let major = built.release.major();
    let epoch = source_date_epoch(opts, &repo)?;
    let mut meta = Meta::load(&repo, major, &built.release.version)?;
    let pg = PgConfig {
        path: built.pg_config.clone(),
    };
    let exts = extension_versions(&repo)?;
    meta.changelog = format!(
        "PostgreSQL {} with the pgEdge kernel patches, {}.",
        meta.pg_version,
        exts.iter()
            .map(|(n, v)| format!("{n} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let out = opts
        .out_dir
        .clone()
        .unwrap_or_else(|| cache.root.join("packages").join(format!("pg{major}")));
    fs::create_dir_all(&out)?;

    // The common tree.
    let work = cache
        .root
        .join("tmp")
        .join(format!("package-{}-{major}", std::process::id()));
    let mut base = tree::Tree::from_stage(&built.stage, &meta.prefix, &work)?;
    let staged_share = pg.dir("--sharedir")?;
    let final_share = Path::new("/").join(staged_share.strip_prefix(&built.stage)?);
    if final_share.to_string_lossy() != meta.sharedir {
        bail!(
            "the stage's sharedir is {} but the packaging expects {}",
            final_share.display(),
            meta.sharedir
        );
    }
    let pkglib = format!("{}/lib/postgresql", meta.prefix);
    for (name, _) in &exts {
        let so = format!("{pkglib}/{name}.so");
        if !base.nodes.contains_key(&so) {
            bail!("{so} is missing from the stage: build the extensions first");
        }
    }
    let has_plugin_list = has_setting(&pg, "output_plugin_libraries")?;
    let vars = scripts::Vars::for_package(&meta, has_plugin_list);
    let t = |rel: &str| scripts::template(&repo, rel, &vars);
    base.add_file(
        &format!("{}/pgedge.conf.sample", meta.sharedir),
        t("common/pgedge.conf.sample")?,
        false,
    );
    let unit_name = format!("{}@.service", meta.name);
    let libdir = format!("{}/lib", meta.prefix);
    let needs = deps::scan(&base, &libdir)?;
    let tree_done = started.elapsed();
    // Each archive takes a while (compression): say which one is being written.
    eprintln!(
        "  packaging {}: file tree ready after {:.1}s; writing the .deb",
        meta.name,
        tree_done.as_secs_f64()
    );

    // .deb
    let mut deb_tree = base.clone();
    let doc = format!("/usr/share/doc/{}", meta.name);
    deb_tree.add_file(
        &format!("/lib/systemd/system/{unit_name}"),
        t("common/pgedge@.service")?,
        false,
    );
    deb_tree.add_file(&format!("{doc}/copyright"), t("common/copyright")?, false);
    deb_tree.add_file(
        &format!("{doc}/changelog.Debian.gz"),
        gzip_best(scripts::debian_changelog(&meta, epoch).as_bytes())?,
        false,
    );
    deb_tree.add_file(
        &format!("/usr/share/lintian/overrides/{}", meta.name),
        t("deb/lintian-overrides")?,
        false,
    );
    let mut depends = deps::debian_depends(&needs)?;
    depends.extend(["passwd".to_string(), "tzdata".to_string()]);
    depends.sort();
    depends.dedup();
    let deb_scripts = [
        ("postinst", t("deb/postinst")?),
        ("postrm", t("deb/postrm")?),
        ("prerm", t("deb/prerm")?),
    ];
    let deb_bytes = deb::build(&meta, &deb_tree, &depends, &deb_scripts, epoch)?;
    drop(deb_tree);
    let deb_done = started.elapsed();
    eprintln!(
        "  packaging {}: .deb written after {:.1}s; writing the .rpm",
        meta.name,
        deb_done.as_secs_f64()
    );

    // .rpm
    let mut rpm_tree = base;
    rpm_tree.add_file(
        &format!("/usr/lib/systemd/system/{unit_name}"),
        t("common/pgedge@.service")?,
        false,
    );
    let licenses = format!("/usr/share/licenses/{}", meta.name);
    rpm_tree.add_file(
        &format!("{licenses}/copyright"),
        t("common/copyright")?,
        false,
    );
    rpm_tree.own_dir(&licenses);
    let scriptlets = rpm::Scriptlets {
        pre: t("rpm/pre.sh")?,
        post: t("rpm/post.sh")?,
        preun: t("rpm/preun.sh")?,
        postun: t("rpm/postun.sh")?,
    };
    let rpm_bytes = rpm::build(
        &meta,
        &rpm_tree,
        &deps::rpm_requires(&needs),
        &scriptlets,
        epoch,
    )?;
    drop(rpm_tree);
    let rpm_done = started.elapsed();

    // Files, SBOM, sums.
    remove_old_outputs(&out, &meta.name)?;
    let deb_path = out.join(meta.deb_file());
    let rpm_path = out.join(meta.rpm_file());
    write_atomically(&deb_path, &deb_bytes)?;
    write_atomically(&rpm_path, &rpm_bytes)?;
    let sh = Shell::new()?;
    let rustc = cmd!(sh, "rustc --version")
        .quiet()
        .read()
        .unwrap_or_default();
    let cc = cmd!(sh, "cc --version").quiet().read().unwrap_or_default();
    let sbom = manifest::sbom(&manifest::Inputs {
        meta: &meta,
        release: &built.release,
        repo: &repo,
        patches: &built.patches,
        extensions: exts,
        rustc,
        cc: cc.lines().next().unwrap_or_default().to_string(),
        epoch,
    })?;
    let sbom_path = out.join(format!("{}_{}.cdx.json", meta.name, meta.deb_version));
    write_atomically(&sbom_path, sbom.as_bytes())?;
    let sums_path = out.join("SHA256SUMS");
    let sums = manifest::sha256sums(&[deb_path.clone(), rpm_path.clone(), sbom_path.clone()])?;
    write_atomically(&sums_path, sums.as_bytes())?;
    eprintln!(
        "packaged {} in {:.1}s (tree {:.1}s, deb {:.1}s, rpm {:.1}s): {} ({} kB), {} ({} kB), \
         SOURCE_DATE_EPOCH={epoch}",
        meta.name,
        started.elapsed().as_secs_f64(),
        tree_done.as_secs_f64(),
        (deb_done - tree_done).as_secs_f64(),
        (rpm_done - deb_done).as_secs_f64(),
        deb_path.display(),
        deb_bytes.len() / 1024,
        rpm_path.display(),
        rpm_bytes.len() / 1024
    );
    Ok(Packages {
        deb: deb_path,
        rpm: rpm_path,
        sbom: sbom_path,
        sums: sums_path,
    })
}

/// `SOURCE_DATE_EPOCH` from the options, the environment or the last commit, in that order.
fn source_date_epoch(opts: &Options, repo: &Path) -> Result<u64> {
    if let Some(e) = opts.source_date_epoch {
        return Ok(e);
    }
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        return v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v} is not a number"));
    }
    let sh = Shell::new()?;
    sh.change_dir(repo);
    if let Ok(out) = cmd!(sh, "git log -1 --format=%ct")
        .quiet()
        .ignore_stderr()
        .read()
        && let Ok(epoch) = out.trim().parse()
    {
        return Ok(epoch);
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    eprintln!(
        "warning: no SOURCE_DATE_EPOCH and no git history; dating the packages now, so they \
         will not be reproducible"
    );
    Ok(now.as_secs())
}

/// (extension, SQL API version) of spock, snowflake and lolor.
fn extension_versions(repo: &Path) -> Result<Vec<(String, String)>> {
    crate::extensions::EXTENSIONS
        .iter()
        .map(|e| {
            let control = repo.join(e.dir).join(format!("{}.control", e.name));
            Ok((
                e.name.to_string(),
                crate::extensions::control_version(&control)?,
            ))
        })
        .collect()
}

/// Whether the staged server knows a setting (`output_plugin_libraries` came with 17.11,
/// 16.15 and 15.19).
fn has_setting(pg: &PgConfig, name: &str) -> Result<bool> {
    let bindir = pg.dir("--bindir")?;
    let libdir = pg.dir("--libdir")?;
    let sh = Shell::new()?;
    let postgres = bindir.join("postgres");
    let text = cmd!(sh, "{postgres} --describe-config")
        .env("LD_LIBRARY_PATH", &libdir)
        .quiet()
        .read()
        .context("postgres --describe-config failed")?;
    Ok(text.lines().any(|l| l.split('\t').next() == Some(name)))
}

fn gzip_best(data: &[u8]) -> Result<Vec<u8>> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(data)?;
    Ok(gz.finish()?)
}

fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("partial");
    fs::write(&tmp, data).with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path)?;
    Ok(())
}

/// Earlier versions' files of this package, so `SHA256SUMS` matches the directory.
fn remove_old_outputs(out: &Path, name: &str) -> Result<()> {
    for e in fs::read_dir(out)? {
        let p = e?.path();
        let file = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let ours = file.starts_with(&format!("{name}_")) || file.starts_with(&format!("{name}-"));
        let kind = [".deb", ".rpm", ".cdx.json"]
            .iter()
            .any(|s| file.ends_with(s));
        if ours && kind {
            fs::remove_file(&p)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_releases_sort_below_releases() {
        assert_eq!(upstream_version("17.11"), "17.11");
        assert_eq!(upstream_version("18beta1"), "18~beta1");
        assert_eq!(upstream_version("18rc1"), "18~rc1");
        let sh = Shell::new().unwrap();
        let lt = |a: &str, b: &str| {
            cmd!(sh, "dpkg --compare-versions {a} lt {b}")
                .quiet()
                .run()
                .is_ok()
        };
        assert!(lt("18~beta1-1", "18~rc1-1"));
        assert!(lt("18~rc1-1", "18.0-1"));
        assert!(lt("18~rc1-1", "18-1"));
        assert!(!lt("18.0-1", "18~rc1-1"));
    }

    #[test]
    fn metadata_names_files_as_packagers_expect() {
        let repo = crate::pipeline::repo_root();
        let meta = Meta::load(&repo, 17, "17.11").unwrap();
        assert_eq!(meta.deb_version, "17.11-1");
        assert_eq!(
            (meta.rpm_version.as_str(), meta.rpm_release.as_str()),
            ("17.11", "1")
        );
        assert_eq!(
            meta.deb_file(),
            format!("pgedge-17_17.11-1_{}.deb", deb_arch())
        );
        assert!(meta.rpm_file().starts_with("pgedge-17-17.11-1."));
        assert!(meta.replaces.contains(&"pgedge-17-spock".to_string()));
        assert!(meta.description.contains("/usr/pgedge-17"));
        assert!(meta.description.lines().all(|l| l.len() <= 76));
        assert_eq!(meta.description.split("\n\n").count(), 2);
    }
}
