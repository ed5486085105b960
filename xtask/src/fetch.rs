//! Finds a verified source tarball, in this order: the cache, `--source FILE`, the upstream URL,
//! Debian's source package through apt. Every candidate is checked against the pinned SHA-256
//! before use; a verified tarball ends up in the cache.

use crate::{apt_source, cache::Cache, sources::Release, verify};
use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
    time::Duration,
};

#[derive(Debug, Default, Clone)]
pub struct FetchOptions {
    /// A tarball the user supplied with `--source`.
    pub source: Option<PathBuf>,
    /// Skip the network download (tests; `--offline`).
    pub no_download: bool,
    /// Skip the apt fallback (tests).
    pub no_apt: bool,
}

/// Returns the path of the verified tarball for `release` inside the cache.
pub fn tarball(cache: &Cache, release: &Release, opts: &FetchOptions) -> Result<PathBuf> {
    let dir = cache.sources();
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cached = dir.join(release.file_name());
    let mut tried = Vec::new();

    if cached.exists() {
        if let Err(e) = verify::check(&cached, &release.sha256) {
            fs::remove_file(&cached)
                .with_context(|| format!("cannot remove {}", cached.display()))?;
            bail!("{e:#}\nThe corrupt file was removed from the cache; run the build again.");
        }
        return Ok(cached);
    }
    tried.push(format!("cache: no {}", cached.display()));

    if let Some(src) = &opts.source {
        if !src.is_file() {
            bail!("--source {}: no such file", src.display());
        }
        verify::check(src, &release.sha256).context("--source does not match the pinned hash")?;
        return adopt(src, &cached, false);
    }
    tried.push("--source: not given".into());

    if opts.no_download {
        tried.push(format!("{}: download disabled", release.url));
    } else {
        let part = cached.with_extension("bz2.part");
        match download(&release.url, &part) {
            Ok(()) => {
                if let Err(e) = verify::check(&part, &release.sha256) {
                    let _ = fs::remove_file(&part);
                    bail!("{e:#}\nThe downloaded file was deleted.");
                }
                return adopt(&part, &cached, true);
            }
            Err(e) => {
                let _ = fs::remove_file(&part);
                eprintln!("download failed: {e:#}");
                tried.push(format!("{}: {e:#}", release.url));
            }
        }
    }

    if opts.no_apt {
        tried.push("Debian source package: apt fallback disabled".into());
    } else {
        match apt_source::orig_tarball(cache, release) {
            Ok(found) => {
                if let Err(e) = verify::check(&found, &release.sha256) {
                    let _ = fs::remove_file(&found);
                    bail!("{e:#}\nThe file from the Debian source package was deleted.");
                }
                return adopt(&found, &cached, true);
            }
            Err(e) => tried.push(format!("Debian source package: {e:#}")),
        }
    }

    bail!(
        "no source for PostgreSQL {} could be found. Tried:\n  - {}\n\
         Download {} elsewhere and pass it with --source /path/to/{} \
         (it must have sha256 {}).",
        release.version,
        tried.join("\n  - "),
        release.url,
        release.file_name(),
        release.sha256,
    )
}

/// Puts a verified file into the cache (moving it when it is ours, copying a user's file).
fn adopt(from: &Path, cached: &Path, ours: bool) -> Result<PathBuf> {
    let tmp = cached.with_extension("bz2.tmp");
    if ours && fs::rename(from, cached).is_ok() {
        return Ok(cached.to_path_buf());
    }
    fs::copy(from, &tmp).with_context(|| format!("cannot copy {}", from.display()))?;
    fs::rename(&tmp, cached).with_context(|| format!("cannot write {}", cached.display()))?;
    if ours {
        let _ = fs::remove_file(from);
    }
    Ok(cached.to_path_buf())
}

pub fn download(url: &str, to: &Path) -> Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_resolve(Some(Duration::from_secs(10)))
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_per_read(Some(Duration::from_secs(30)))
        .timeout_global(Some(Duration::from_secs(15 * 60)))
        .build()
        .into();
    eprintln!("downloading {url}");
    let response = agent.get(url).call()?;
    let (_, body) = response.into_parts();
    let bar = match body.content_length() {
        Some(len) => ProgressBar::new(len).with_style(
            ProgressStyle::with_template("  {bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
                .expect("valid template"),
        ),
        None => ProgressBar::new_spinner(),
    };
    let mut reader = bar.wrap_read(body.into_reader());
    let mut out =
        fs::File::create(to).with_context(|| format!("cannot create {}", to.display()))?;
    io::copy(&mut reader, &mut out)?;
    out.flush()?;
    bar.finish_and_clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources;

    fn offline() -> FetchOptions {
        FetchOptions {
            source: None,
            no_download: true,
            no_apt: true,
        }
    }

    #[test]
    fn corrupt_cached_tarball_is_rejected_and_removed() {
        let cache = Cache::at(tempfile::tempdir().unwrap().keep()).unwrap();
        let release = sources::resolve(17, None).unwrap();
        fs::create_dir_all(cache.sources()).unwrap();
        let bad = cache.sources().join(release.file_name());
        fs::write(&bad, b"not a tarball").unwrap();
        let e = format!("{:#}", tarball(&cache, &release, &offline()).unwrap_err());
        assert!(e.contains("checksum mismatch"), "{e}");
        assert!(e.contains(&bad.display().to_string()), "{e}");
        assert!(e.contains(&release.sha256), "{e}");
        assert!(e.contains(&verify::sha256_bytes(b"not a tarball")), "{e}");
        assert!(!bad.exists(), "the corrupt tarball must be deleted");
    }

    #[test]
    fn wrong_source_file_is_refused_and_kept() {
        let cache = Cache::at(tempfile::tempdir().unwrap().keep()).unwrap();
        let release = sources::resolve(16, None).unwrap();
        let user = cache.root.join("mine.tar.bz2");
        fs::write(&user, b"something else").unwrap();
        let opts = FetchOptions {
            source: Some(user.clone()),
            ..offline()
        };
        let e = format!("{:#}", tarball(&cache, &release, &opts).unwrap_err());
        assert!(
            e.contains("--source does not match") && e.contains(&release.sha256),
            "{e}"
        );
        assert!(user.exists(), "a user's file is never deleted");
        assert!(!cache.sources().join(release.file_name()).exists());
    }

    #[test]
    fn matching_source_file_is_adopted() {
        let cache = Cache::at(tempfile::tempdir().unwrap().keep()).unwrap();
        let mut release = sources::resolve(16, None).unwrap();
        let user = cache.root.join("pg.tar.bz2");
        fs::write(&user, b"pretend tarball").unwrap();
        release.sha256 = verify::sha256_bytes(b"pretend tarball");
        let opts = FetchOptions {
            source: Some(user),
            ..offline()
        };
        let got = tarball(&cache, &release, &opts).unwrap();
        assert_eq!(got, cache.sources().join("postgresql-16.15.tar.bz2"));
        // Found in the cache the second time, without --source.
        assert_eq!(tarball(&cache, &release, &offline()).unwrap(), got);
    }

    #[test]
    fn nothing_available_explains_what_to_do() {
        let cache = Cache::at(tempfile::tempdir().unwrap().keep()).unwrap();
        let release = sources::resolve(16, None).unwrap();
        let e = format!("{:#}", tarball(&cache, &release, &offline()).unwrap_err());
        assert!(e.contains("Tried:") && e.contains("--source"), "{e}");
        assert!(
            e.contains(&release.url) && e.contains(&release.sha256),
            "{e}"
        );
    }
}
