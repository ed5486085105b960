//! `cargo xtask check-kernel`: builds the patched kernel with assertions in a tree of its own and
//! runs PostgreSQL's core regression suite (`make check`, which also runs initdb) against it.
//! This is what exposes a patch that trips an assertion; too slow for `cargo xtask test`.
//!
//! initdb and postgres refuse to run as root, so as root every step after unpacking runs as an
//! unprivileged account (`PGEDGE_TEST_USER`, default `nobody`, as for the tests), in a tree that
//! account owns. Root's build cache is usually unreachable for it; the tree then lives under
//! the temp dir instead of the cache.

use crate::{
    cache::{Cache, Key},
    configure::Log,
    fetch, patch, pipeline,
};
use anyhow::{Context, Result, bail};
use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Instant,
};
use xshell::{Cmd, Shell, cmd};

/// Added to the pipeline's configure flags.
const CHECK_FLAGS: &[&str] = &["--enable-cassert", "--enable-debug"];

/// Account the build and the suite run as when we are root.
const DEFAULT_USER: &str = "nobody";

pub fn run(cache: &Cache, opts: &pipeline::BuildOptions) -> Result<()> {
    let started = Instant::now();
    let (release, patches, mut args, kernel_key) =
        pipeline::kernel_key(&pipeline::repo_root(), opts)?;
    args.extend(CHECK_FLAGS.iter().map(|f| f.to_string()));
    let key = Key::default()
        .add("kernel", &kernel_key)
        .add("check flags", CHECK_FLAGS.join(" "))
        .finish();
    let user = is_root()?
        .then(|| std::env::var("PGEDGE_TEST_USER").unwrap_or_else(|_| DEFAULT_USER.into()));
    let base = match &user {
        Some(_) if !world_reachable(&cache.root) => std::env::temp_dir().join("pgedge-check"),
        _ => cache.root.join("check"),
    };
    let dir = base.join(format!("pg{}-{}", opts.major, &key[..16]));
    let src = dir.join("src");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if !src.exists() {
        let tarball = fetch::tarball(cache, &release, &opts.fetch)?;
        patch::prepare_tree(&tarball, &patches, &src)?;
    }
    if let Some(user) = &user {
        // Everything below runs as `user`, which must own the tree (make check writes into it).
        for d in [&base, &dir] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o755))?;
        }
        let sh = Shell::new()?;
        cmd!(sh, "chown -R {user}: {src}")
            .quiet()
            .run()
            .with_context(|| format!("cannot give {} to {user}", src.display()))?;
    }

    let sh = Shell::new()?;
    sh.change_dir(&src);
    let user = user.as_deref();
    let log_path = dir.join("check.log");
    let mut log = Log::open(&log_path)?;
    let configured = src.join(".pgedge-configured");
    if !configured.exists() {
        log.run(as_user(&sh, user, "./configure", &args), "configure")?;
        fs::write(&configured, args.join("\n"))?;
    }
    let jobs = [format!("-j{}", opts.jobs)];
    log.run(as_user(&sh, user, "make", &jobs), "make")?;

    let from = fs::metadata(&log_path)?.len();
    let result = log.run(as_user(&sh, user, "make", &["check".into()]), "make check");
    let summary = summary(&log_path, from)?;
    let diffs = src.join("src/test/regress/regression.diffs");
    println!(
        "check-kernel: PostgreSQL {} with {} ({}), built with {}:",
        release.version,
        patch_names(&patches),
        user.map_or("as the current user".into(), |u| format!("as {u}")),
        CHECK_FLAGS.join(" ")
    );
    for line in &summary {
        println!("  {line}");
    }
    println!(
        "  log: {}; {:.0}s",
        log_path.display(),
        started.elapsed().as_secs_f64()
    );
    match result {
        Ok(()) if !summary.is_empty() => Ok(()),
        Ok(()) => bail!("make check printed no result; see {}", log_path.display()),
        Err(e) if diffs.exists() => Err(e.context(format!("differences in {}", diffs.display()))),
        Err(e) => Err(e),
    }
}

/// The lines of `make check`'s output (from byte `from` of the log) that report results.
fn summary(log: &Path, from: u64) -> Result<Vec<String>> {
    let text = fs::read(log).with_context(|| format!("cannot read {}", log.display()))?;
    let text = String::from_utf8_lossy(&text[from as usize..]);
    Ok(text
        .lines()
        .map(|l| l.trim_start_matches(['#', ' ']).trim_end())
        .filter(|l| l.contains(" tests passed") || l.contains(" tests failed"))
        .map(String::from)
        .collect())
}

/// `program args…`, run as `user` if given.
fn as_user<'a>(sh: &'a Shell, user: Option<&str>, program: &str, args: &[String]) -> Cmd<'a> {
    match user {
        Some(u) => cmd!(sh, "runuser -u {u} -- {program} {args...}"),
        None => cmd!(sh, "{program} {args...}"),
    }
}

fn patch_names(patches: &[PathBuf]) -> String {
    patches
        .iter()
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_root() -> Result<bool> {
    let sh = Shell::new()?;
    Ok(cmd!(sh, "id -u").quiet().read()?.trim() == "0")
}

/// Whether every ancestor of `path` can be traversed by other accounts.
fn world_reachable(path: &Path) -> bool {
    path.ancestors()
        .all(|p| fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reports_results_of_this_run_only() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("check.log");
        fs::write(&log, "# All 1 tests passed.\n").unwrap();
        let from = fs::metadata(&log).unwrap().len();
        let mut body = fs::read_to_string(&log).unwrap();
        body.push_str(
            "ok 1         - test_setup      311 ms\n\
             not ok 2     - boolean        20 ms\n\
             # 1 of 222 tests failed.\n\
             make[1]: *** [GNUmakefile:71: check] Error 1\n",
        );
        fs::write(&log, body).unwrap();
        assert_eq!(summary(&log, from).unwrap(), ["1 of 222 tests failed."]);
    }

    #[test]
    fn summary_reads_the_old_format() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("check.log");
        fs::write(
            &log,
            "test boolean ... ok 20 ms\n=======================\n All 214 tests passed. \n\
             =======================\n",
        )
        .unwrap();
        assert_eq!(summary(&log, 0).unwrap(), ["All 214 tests passed."]);
    }
}
