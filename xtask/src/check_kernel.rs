//! `cargo xtask check-kernel`: builds the patched kernel with assertions in a tree of its own and
//! runs PostgreSQL's core regression suite (`make check`, which also runs initdb) against it,
//! then the kernel patches' own regression tests (`patches/tests/pgedge_kernel_test`, copied into
//! the tree as `src/test/modules/pgedge_kernel_test`), which use what the patches add: the
//! capability marker, the commit clock, old-value logging, subtransaction commit-timestamp
//! overrides (also across a crash restart) and, on majors whose series has patch 0005, trusted
//! output plugins (the module is preloaded and trusts test_decoding). The core suite never uses those, so only these tests
//! reach the patches' new code paths. This is what exposes a patch that trips an assertion; too
//! slow for `cargo xtask test`.
//!
//! initdb and postgres refuse to run as root, so as root every step after unpacking runs as an
//! unprivileged account (`PGEDGE_TEST_USER`, default `nobody`, as for the tests), in a tree that
//! account owns. Root's build cache is usually unreachable for it; the tree then lives under
//! the temp dir instead of the cache.

use crate::{
    cache::{Cache, Key},
    configure::Log,
    fetch, patch, pipeline, progress,
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

/// The kernel patches' regression test module, under `patches/tests/` in the repository and
/// `src/test/modules/` in the tree.
const KERNEL_TESTS: &str = "pgedge_kernel_test";

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
    log.run_expecting(
        as_user(&sh, user, "make", &jobs),
        "make",
        progress::estimate_objects(&src),
    )?;

    let core = Suite {
        name: "core regression suite",
        dir: src.join("src/test/regress"),
    };
    let core_result = core.run(&mut log, &sh, user, &log_path);

    let tests = Suite {
        name: "kernel patch tests",
        dir: src.join("src/test/modules").join(KERNEL_TESTS),
    };
    copy_tree(
        &pipeline::repo_root()
            .join("patches/tests")
            .join(KERNEL_TESTS),
        &tests.dir,
    )?;
    if let Some(user) = user {
        let dir = &tests.dir;
        cmd!(sh, "chown -R {user}: {dir}").quiet().run()?;
    }
    let tests_result = tests.run(&mut log, &sh, user, &log_path);

    println!(
        "check-kernel: PostgreSQL {} with {} ({}), built with {}:",
        release.version,
        patch_names(&patches),
        user.map_or("as the current user".into(), |u| format!("as {u}")),
        CHECK_FLAGS.join(" ")
    );
    for (suite, (_, summary)) in [(&core, &core_result), (&tests, &tests_result)] {
        for line in summary {
            println!("  {}: {line}", suite.name);
        }
    }
    println!(
        "  log: {}; {:.0}s",
        log_path.display(),
        started.elapsed().as_secs_f64()
    );
    let failed: Vec<String> = [(&core, core_result), (&tests, tests_result)]
        .into_iter()
        .filter_map(|(suite, (result, _))| result.err().map(|e| suite.failure(e)))
        .collect();
    if !failed.is_empty() {
        bail!("{}", failed.join("\n\n"));
    }
    Ok(())
}

/// A pg_regress suite of the tree, run with `make check` in its directory.
struct Suite {
    name: &'static str,
    dir: PathBuf,
}

impl Suite {
    /// Runs the suite; the result and the summary lines it printed into the log.
    fn run(
        &self,
        log: &mut Log,
        sh: &Shell,
        user: Option<&str>,
        log_path: &Path,
    ) -> (Result<()>, Vec<String>) {
        let from = fs::metadata(log_path).map_or(0, |m| m.len());
        let args = ["-C".into(), self.dir.display().to_string(), "check".into()];
        let result = log.run(as_user(sh, user, "make", &args), self.name);
        let summary = summary(log_path, from).unwrap_or_default();
        let result = match result {
            Ok(()) if summary.is_empty() => Err(anyhow::anyhow!(
                "{} printed no result; see {}",
                self.name,
                log_path.display()
            )),
            r => r,
        };
        (result, summary)
    }

    /// `e` with the suite's differences and the assertion failures its server logged.
    fn failure(&self, e: anyhow::Error) -> String {
        // The error names the suite (`Log::run` and the no-result error above).
        let mut text = format!("{e:#}");
        let diffs = self.dir.join("regression.diffs");
        if let Ok(d) = fs::read_to_string(&diffs) {
            text.push_str(&format!(
                "\nDifferences ({}, abridged):\n{}",
                diffs.display(),
                abridge_diff(&d).join("\n")
            ));
        }
        let server_log = self.dir.join("log/postmaster.log");
        if let Ok(l) = fs::read_to_string(&server_log) {
            let traps = assertion_failures(&l);
            if !traps.is_empty() {
                text.push_str(&format!(
                    "\nFailed assertions ({}):\n{}",
                    server_log.display(),
                    traps.join("\n")
                ));
            }
        }
        text
    }
}

/// At most this many lines of a failing suite's `regression.diffs` are shown.
const DIFF_LINES: usize = 80;

/// `regression.diffs` with long runs of removed lines cut short, so that what a test printed
/// instead (a crash shows as its whole remaining expected output removed and a few lines added)
/// is seen; at most `DIFF_LINES` lines.
fn abridge_diff(diff: &str) -> Vec<String> {
    const KEEP: usize = 3;
    let mut out = Vec::new();
    let mut removed = Vec::new();
    let flush = |removed: &mut Vec<&str>, out: &mut Vec<String>| {
        if removed.len() > 2 * KEEP {
            out.extend(removed[..KEEP].iter().map(|l| l.to_string()));
            out.push(format!("  … {} more removed lines", removed.len() - KEEP));
        } else {
            out.extend(removed.iter().map(|l| l.to_string()));
        }
        removed.clear();
    };
    // Lines of a file header ("diff", "---", "+++") still to come; an echoed SQL comment that
    // was removed also starts with "--- ".
    let mut header = 0u8;
    for line in diff.lines() {
        if line.starts_with("diff ") {
            header = 3;
        }
        if header == 0 && line.starts_with('-') {
            removed.push(line);
        } else {
            header = header.saturating_sub(1);
            flush(&mut removed, &mut out);
            out.push(line.to_string());
        }
    }
    flush(&mut removed, &mut out);
    if out.len() > DIFF_LINES {
        let more = out.len() - DIFF_LINES;
        out.truncate(DIFF_LINES);
        out.push(format!("  … {more} more lines"));
    }
    out
}

/// The `TRAP:` lines of a server log, each with the first frames of the backtrace after it.
fn assertion_failures(log: &str) -> Vec<String> {
    const FRAMES: usize = 4;
    let lines: Vec<&str> = log.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("TRAP:") {
            out.push(line.to_string());
            out.extend(
                lines[i + 1..]
                    .iter()
                    .take(FRAMES)
                    .take_while(|l| l.contains("+0x"))
                    .map(|l| format!("    {}", l.trim())),
            );
        }
    }
    out
}

/// Replaces `to` by a copy of the directory `from`.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    if to.exists() {
        fs::remove_dir_all(to).with_context(|| format!("cannot remove {}", to.display()))?;
    }
    fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in fs::read_dir(from).with_context(|| format!("cannot list {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)
                .with_context(|| format!("cannot copy {}", entry.path().display()))?;
        }
    }
    Ok(())
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
    fn abridged_diff_shows_what_replaced_a_long_removal() {
        let mut diff = String::from("diff -U3 a b\n--- a\n+++ b\n@@ -1,30 +1,3 @@\n COMMIT;\n");
        for i in 0..30 {
            diff.push_str(&format!("-expected {i}\n--- a comment\n"));
        }
        diff.push_str("+server closed the connection unexpectedly\n-x\n+y\n");
        let out = abridge_diff(&diff);
        assert_eq!(
            out[4..],
            [
                " COMMIT;",
                "-expected 0",
                "--- a comment",
                "-expected 1",
                "  … 57 more removed lines",
                "+server closed the connection unexpectedly",
                "-x",
                "+y"
            ]
        );
    }

    #[test]
    fn assertion_failures_come_with_their_first_frames() {
        let log = "2026-01-01 LOG:  something\n\
            TRAP: failed Assert(\"CritSectionCount == 0\"), File: \"mcxt.c\", Line: 1348, PID: 1\n\
            postgres: x COMMIT(ExceptionalCondition+0x59)[0x1]\n\
            postgres: x COMMIT(palloc+0x5e)[0x2]\n\
            2026-01-01 LOG:  server process (PID 1) was terminated by signal 6: Aborted\n";
        assert_eq!(
            assertion_failures(log),
            [
                "TRAP: failed Assert(\"CritSectionCount == 0\"), File: \"mcxt.c\", Line: 1348, PID: 1",
                "    postgres: x COMMIT(ExceptionalCondition+0x59)[0x1]",
                "    postgres: x COMMIT(palloc+0x5e)[0x2]",
            ]
        );
    }

    #[test]
    fn every_kernel_test_has_its_script_and_expected_output() {
        let dir = pipeline::repo_root()
            .join("patches/tests")
            .join(KERNEL_TESTS);
        let makefile = fs::read_to_string(dir.join("Makefile")).unwrap();
        // `REGRESS = …` for every major, `REGRESS += …` for tests of patches some majors lack.
        let tests: Vec<&str> = makefile
            .lines()
            .filter_map(|l| {
                l.strip_prefix("REGRESS = ")
                    .or_else(|| l.strip_prefix("REGRESS += "))
            })
            .flat_map(str::split_whitespace)
            .collect();
        assert!(tests.contains(&"subxact_commit_ts") && tests.contains(&"redo"));
        assert!(tests.contains(&"trusted_output_plugin"));
        for t in tests {
            assert!(dir.join(format!("sql/{t}.sql")).exists(), "sql/{t}.sql");
            assert!(
                dir.join(format!("expected/{t}.out")).exists(),
                "expected/{t}.out"
            );
        }
    }

    #[test]
    fn patch_0005_has_its_test_where_it_exists() {
        // The Makefile runs trusted_output_plugin where the tree declares the function; each
        // series that carries the patch must therefore declare it in that header.
        for major in [15, 16, 17] {
            let series = patch::series(&pipeline::repo_root().join("patches"), major).unwrap();
            let trusted: Vec<_> = series
                .iter()
                .filter(|p| {
                    fs::read_to_string(p)
                        .unwrap()
                        .contains("RegisterTrustedOutputPlugin")
                })
                .collect();
            for p in &trusted {
                let text = fs::read_to_string(p).unwrap();
                assert!(
                    text.contains("+++ b/src/include/replication/logical.h")
                        && text.contains("+extern void RegisterTrustedOutputPlugin("),
                    "{}",
                    p.display()
                );
            }
            if major == 17 {
                assert_eq!(trusted.len(), 1, "PostgreSQL {major}");
            }
        }
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
