//! The pipeline as a user runs it: a second build is a cache hit, `pg-config` finds the stage,
//! and a release with no reachable source explains what to do.

use std::process::Command;

fn xtask(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn majors() -> Vec<String> {
    std::env::var("PGEDGE_TEST_MAJORS")
        .expect("run the suite through `cargo xtask test`")
        .split(',')
        .map(String::from)
        .collect()
}

#[test]
fn noop_rebuild_is_a_cache_hit() {
    for major in majors() {
        let staged = std::env::var(format!("PGEDGE_PG_CONFIG_{major}")).unwrap();
        let (ok, stdout, stderr) = xtask(&["build", "--pg", &major]);
        assert!(ok, "{stderr}");
        assert!(stderr.contains("up to date (cache hit"), "{stderr}");
        assert!(
            stderr.contains("extensions: up to date (cache hit"),
            "{stderr}"
        );
        assert!(
            !stderr.contains("$ make"),
            "nothing may be rebuilt: {stderr}"
        );
        assert_eq!(stdout, staged);

        let (ok, stdout, stderr) = xtask(&["pg-config", "--pg", &major]);
        assert!(ok, "{stderr}");
        assert_eq!(stdout, staged);
    }
}

#[test]
fn missing_source_explains_what_to_do() {
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["build", "--pg", "16", "--offline"])
        .env("PGEDGE_BUILD_CACHE", cache.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no source for PostgreSQL 16.15 could be found"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--source /path/to/postgresql-16.15.tar.bz2"),
        "{stderr}"
    );
    assert!(stderr.contains("no Debian suite carries"), "{stderr}");

    let (ok, _, stderr) = xtask(&["build", "--pg", "17", "--pg-version", "17.99"]);
    assert!(!ok && stderr.contains("no pinned checksum"), "{stderr}");
}

#[test]
fn pg_config_of_an_unbuilt_kernel_says_how_to_build_it() {
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["pg-config", "--pg", "17"])
        .env("PGEDGE_BUILD_CACHE", cache.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("cargo xtask build --pg 17"), "{stderr}");
}
