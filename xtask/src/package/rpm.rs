//! Writes the .rpm with the `rpm` crate: the same tree as the .deb (directories only where the
//! package owns them), soname requirements, scriptlets, a changelog entry and the source date
//! for build time and file times.

use super::{Meta, tree::Node, tree::Tree};
use ::rpm::{
    BuildConfig, CompressionWithLevel, Dependency, FileOptions, PackageBuilder, Scriptlet,
};
use anyhow::{Context, Result};

/// zstd level of the payload (see docs/packaging.md for the measurements).
pub const ZSTD_LEVEL: i32 = 9;

/// The scriptlets: `%pre`, `%post`, `%preun`, `%postun`.
pub struct Scriptlets {
    pub pre: String,
    pub post: String,
    pub preun: String,
    pub postun: String,
}

/// The whole .rpm file.
pub fn build(
    meta: &Meta,
    tree: &Tree,
    requires: &[String],
    scripts: &Scriptlets,
    epoch: u64,
) -> Result<Vec<u8>> {
    let config = BuildConfig::v4()
        .compression(CompressionWithLevel::Zstd(ZSTD_LEVEL))
        .source_date(epoch as u32);
    let mut b = PackageBuilder::new(
        &meta.name,
        &meta.rpm_version,
        &meta.license,
        &meta.rpm_arch,
        &meta.summary,
    );
    b.using_config(config)
        .release(meta.rpm_release.clone())
        .description(meta.description.clone())
        .url(meta.homepage.clone())
        .vendor(meta.vendor.clone())
        .packager(meta.maintainer.clone())
        .group(meta.rpm_group.clone())
        .build_host("pgedge-build")
        .add_changelog_entry(
            format!(
                "{} - {}-{}",
                meta.maintainer, meta.rpm_version, meta.rpm_release
            ),
            format!("- {}", meta.changelog),
            epoch as u32,
        );
    for r in requires {
        b.requires(Dependency::any(r.clone()));
    }
    b.requires(Dependency::any("tzdata"));
    for tool in [
        "/bin/sh",
        "/usr/bin/getent",
        "/usr/sbin/groupadd",
        "/usr/sbin/useradd",
    ] {
        b.requires(Dependency::script_pre(tool));
    }
    for tool in ["/bin/sh", "/usr/bin/install"] {
        b.requires(Dependency::script_post(tool));
    }
    b.requires(Dependency::script_preun("/bin/sh"));
    b.requires(Dependency::script_postun("/bin/sh"));
    for name in meta.replaces.iter().chain(&meta.rpm_replaces) {
        b.conflicts(Dependency::any(name.clone()));
        b.obsoletes(Dependency::any(name.clone()));
    }
    let sh = |text: &str| Scriptlet::new(text).prog(vec!["/bin/sh"]);
    b.pre_install_script(sh(&scripts.pre))
        .post_install_script(sh(&scripts.post))
        .pre_uninstall_script(sh(&scripts.preun))
        .post_uninstall_script(sh(&scripts.postun));

    for (path, node) in &tree.nodes {
        match node {
            Node::Dir { owned: true } => {
                b.with_dir_entry(FileOptions::dir(path.clone()).permissions(0o755))?;
            }
            Node::Dir { owned: false } => {}
            Node::File { data, exec } => {
                let mut opts =
                    FileOptions::new(path.clone()).permissions(if *exec { 0o755 } else { 0o644 });
                if path.starts_with("/usr/share/licenses/") {
                    opts = opts.license();
                } else if path.starts_with("/usr/share/doc/") {
                    opts = opts.doc();
                }
                b.with_file_contents(data.clone(), opts)?;
            }
            Node::Symlink(target) => {
                b.with_symlink(FileOptions::symlink(path.clone(), target.clone()))?;
            }
        }
    }
    let package = b.build().context("building the rpm failed")?;
    let mut out = Vec::new();
    package.write(&mut out)?;
    Ok(out)
}
