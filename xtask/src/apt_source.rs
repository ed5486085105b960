//! Offline fallback: Debian's `postgresql-<major>` source package carries the upstream tarball
//! byte for byte as its `.orig.tar.bz2`. We fetch it with a private apt configuration (own lists,
//! cache and state) whose `deb-src` entries are derived from the system's configured Debian
//! archive, so the system's apt setup is never touched and no host name lives in this repository.
//! When the suite has moved on to a newer upload, the pinned tarball is taken from the same
//! archive's pool.

use crate::{cache::Cache, sources::Release};
use anyhow::{Context, Result, bail};
use std::{
    fs,
    path::{Path, PathBuf},
};
use xshell::{Shell, cmd};

/// One Debian archive the system is configured with.
#[derive(Debug, PartialEq)]
struct Archive {
    uri: String,
    signed_by: Option<String>,
}

/// Downloads the orig tarball for `release` and returns its path (not yet verified).
pub fn orig_tarball(cache: &Cache, release: &Release) -> Result<PathBuf> {
    let suite = release
        .debian_suite
        .as_deref()
        .with_context(|| format!("no Debian suite carries postgresql-{}", release.version))?;
    let sh = Shell::new()?;
    if cmd!(sh, "apt-get --version")
        .quiet()
        .ignore_stdout()
        .run()
        .is_err()
    {
        bail!("apt-get is not available");
    }
    let archives = system_archives()?;
    if archives.is_empty() {
        bail!("the system's apt sources name no Debian archive");
    }

    let dir = cache.apt();
    for sub in [
        "lists/partial",
        "cache/archives/partial",
        "state",
        "download",
    ] {
        fs::create_dir_all(dir.join(sub))?;
    }
    let list: String = archives
        .iter()
        .map(|a| match &a.signed_by {
            Some(key) => format!("deb-src [signed-by={key}] {} {suite} main\n", a.uri),
            None => format!("deb-src {} {suite} main\n", a.uri),
        })
        .collect();
    fs::write(dir.join("sources.list"), list)?;
    let conf = format!(
        "Dir::Etc::sourcelist \"{d}/sources.list\";\n\
         Dir::Etc::sourceparts \"{d}/no-parts\";\n\
         Dir::State \"{d}/state\";\n\
         Dir::State::lists \"{d}/lists\";\n\
         Dir::Cache \"{d}/cache\";\n\
         APT::Sandbox::User \"root\";\n",
        d = dir.display()
    );
    fs::write(dir.join("apt.conf"), conf)?;
    sh.set_var("APT_CONFIG", dir.join("apt.conf"));

    eprintln!(
        "looking for postgresql-{} in Debian {suite} (private apt config in {})",
        release.version,
        dir.display()
    );
    cmd!(sh, "apt-get -q update")
        .quiet()
        .ignore_stdout()
        .run()
        .context("apt-get update failed")?;
    let package = format!("postgresql-{}", release.major());
    let download = dir.join("download");
    let orig = download.join(format!("{package}_{}.orig.tar.bz2", release.version));
    let from_index = (|| {
        let showsrc = cmd!(sh, "apt-cache showsrc {package}")
            .quiet()
            .read()
            .unwrap_or_default();
        let version = debian_version(&showsrc, &release.version).with_context(|| {
            format!(
                "Debian {suite} has no {package} source for {}",
                release.version
            )
        })?;
        sh.change_dir(&download);
        let spec = format!("{package}={version}");
        cmd!(sh, "apt-get -q source --download-only {spec}")
            .quiet()
            .ignore_stdout()
            .run()
            .context("apt-get source failed")?;
        if !orig.is_file() {
            bail!("apt-get source did not produce {}", orig.display());
        }
        Ok(())
    })();
    let Err(index_error) = from_index else {
        return Ok(orig);
    };
    // A suite's index names only its newest upload, but the archive's pool usually still holds
    // the pinned one (the caller checks its SHA-256 against the pinned table either way).
    let mut tried = vec![format!("{index_error:#}")];
    for a in &archives {
        let url = pool_url(&a.uri, &package, &release.version);
        match crate::fetch::download(&url, &orig) {
            Ok(()) => return Ok(orig),
            Err(e) => {
                let _ = fs::remove_file(&orig);
                tried.push(format!("{url}: {e:#}"));
            }
        }
    }
    bail!("{}", tried.join("; "))
}

/// Where a Debian archive keeps a source package's orig tarball (`pool/<component>/<p>/<pkg>/`).
fn pool_url(archive: &str, package: &str, upstream: &str) -> String {
    let letter = &package[..1];
    format!(
        "{}/pool/main/{letter}/{package}/{package}_{upstream}.orig.tar.bz2",
        archive.trim_end_matches('/')
    )
}

/// The newest Debian version in `apt-cache showsrc` output whose upstream part is `upstream`.
fn debian_version(showsrc: &str, upstream: &str) -> Option<String> {
    showsrc
        .lines()
        .filter_map(|l| l.strip_prefix("Version: "))
        .map(str::trim)
        .filter(|v| {
            let bare = v.split_once(':').map_or(*v, |(_, rest)| rest);
            bare.rsplit_once('-').is_some_and(|(up, _)| up == upstream)
        })
        .max()
        .map(str::to_string)
}

/// Debian archives from `/etc/apt/sources.list` and `/etc/apt/sources.list.d`.
fn system_archives() -> Result<Vec<Archive>> {
    let mut texts = Vec::new();
    let main = Path::new("/etc/apt/sources.list");
    if main.is_file() {
        texts.push((false, fs::read_to_string(main)?));
    }
    if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
        for e in entries.flatten() {
            let p = e.path();
            match p.extension().and_then(|x| x.to_str()) {
                Some("list") => texts.push((false, fs::read_to_string(&p)?)),
                Some("sources") => texts.push((true, fs::read_to_string(&p)?)),
                _ => {}
            }
        }
    }
    let codename = os_codename();
    let mut found = Vec::new();
    for (deb822, text) in texts {
        let entries = if deb822 {
            parse_deb822(&text)
        } else {
            parse_one_line(&text)
        };
        for (suites, archive) in entries {
            // The main archive carries the plain codename (not -security or -updates).
            let is_main = suites
                .iter()
                .any(|s| Some(s.as_str()) == codename.as_deref());
            if is_main
                && archive.uri.trim_end_matches('/').ends_with("/debian")
                && !found.contains(&archive)
            {
                found.push(archive);
            }
        }
    }
    Ok(found)
}

fn os_codename() -> Option<String> {
    let text = fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())
}

fn parse_deb822(text: &str) -> Vec<(Vec<String>, Archive)> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let (Some(types), Some(uris), Some(suites)) =
            (field("Types"), field("URIs"), field("Suites"))
        else {
            continue;
        };
        if !types
            .split_whitespace()
            .any(|t| t == "deb" || t == "deb-src")
        {
            continue;
        }
        let suites: Vec<String> = suites.split_whitespace().map(String::from).collect();
        for uri in uris.split_whitespace() {
            out.push((
                suites.clone(),
                Archive {
                    uri: uri.to_string(),
                    signed_by: field("Signed-By"),
                },
            ));
        }
    }
    out
}

fn parse_one_line(text: &str) -> Vec<(Vec<String>, Archive)> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        let Some(rest) = line
            .strip_prefix("deb ")
            .or_else(|| line.strip_prefix("deb-src "))
        else {
            continue;
        };
        let mut signed_by = None;
        let rest = match rest.trim_start().strip_prefix('[') {
            Some(opts) => {
                let (opts, after) = opts.split_once(']').unwrap_or((opts, ""));
                signed_by = opts
                    .split_whitespace()
                    .find_map(|o| o.strip_prefix("signed-by="))
                    .map(String::from);
                after
            }
            None => rest,
        };
        let mut words = rest.split_whitespace();
        if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
            out.push((
                vec![suite.to_string()],
                Archive {
                    uri: uri.to_string(),
                    signed_by,
                },
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_urls_follow_the_debian_layout() {
        assert_eq!(
            pool_url("http://mirror.example/debian/", "postgresql-17", "17.11"),
            "http://mirror.example/debian/pool/main/p/postgresql-17/postgresql-17_17.11.orig.tar.bz2"
        );
    }

    #[test]
    fn picks_the_matching_upstream_version() {
        let out = "Package: postgresql-17\nVersion: 17.10-1\n\nPackage: postgresql-17\nVersion: 17.11-0+deb13u1\n";
        assert_eq!(
            debian_version(out, "17.11").as_deref(),
            Some("17.11-0+deb13u1")
        );
        assert_eq!(debian_version(out, "17.1"), None);
    }

    #[test]
    fn reads_both_source_formats() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n\
                      Components: main\nSigned-By: /usr/share/keyrings/k.gpg\n\n\
                      Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n";
        let got = parse_deb822(deb822);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1.uri, "http://mirror.example/debian");
        assert_eq!(
            got[0].1.signed_by.as_deref(),
            Some("/usr/share/keyrings/k.gpg")
        );
        assert_eq!(got[0].0, vec!["bookworm", "bookworm-updates"]);

        let one =
            "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main\n";
        let got = parse_one_line(one);
        assert_eq!(got[0].1.uri, "http://m.example/debian");
        assert_eq!(got[0].1.signed_by.as_deref(), Some("/k.gpg"));
        assert_eq!(got[0].0, vec!["bookworm"]);
    }
}
