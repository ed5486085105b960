//! `cargo xtask test`: builds (or finds cached) kernels and runs the test suite against them.
//! Tests find a staged kernel through `PGEDGE_PG_CONFIG_<major>` (with `spockctrl` in its bin/).

use crate::{cache::Cache, chaos, extensions, pipeline};
use anyhow::{Context, Result};
use xshell::{Shell, cmd};

/// harness/tests/kernel.rs: our 15 library refused by Debian's stock PostgreSQL 15.
const STOCK_SERVER_TEST: &str = "stock_server_is_refused_with_a_clear_message";
/// harness/tests/spock_cross_major.rs: nodes of two majors in one mesh.
const CROSS_MAJOR_TEST: &str = "consecutive_majors_replicate_both_ways";
/// The majors `harness/tests/common`'s `per_major!` makes a test for.
const PER_MAJOR_TESTS: [u32; 4] = [15, 16, 17, 18];

pub fn run(cache: &Cache, builds: &[pipeline::BuildOptions], cargo_args: &[String]) -> Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(pipeline::repo_root());
    let mut pg_configs = Vec::new();
    for opts in builds {
        let built = pipeline::build(cache, opts)?;
        sh.set_var(format!("PGEDGE_PG_CONFIG_{}", opts.major), &built.pg_config);
        pg_configs.push((opts.major, built.pg_config));
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());

    // The extension crates' own unit tests cover server-free logic (id layout, protocol
    // encoding…). They link without a server, leaving its symbols unresolved, which is safe as
    // long as those tests never call into PostgreSQL.
    if let Some((major, pg_config)) = pg_configs.first() {
        let exts = extensions::select(&[])?;
        let packages: Vec<String> = exts
            .iter()
            .flat_map(|e| ["-p".into(), e.name.into()])
            .collect();
        let features: Vec<String> = exts
            .iter()
            .map(|e| format!("{}/pg{major}", e.name))
            .collect();
        let features = features.join(",");
        cmd!(
            sh,
            "{cargo} test --locked --lib {packages...} --features {features}"
        )
        .env("PGRX_PG_CONFIG_PATH", pg_config)
        .env("CARGO_TARGET_DIR", cache.root.join("target/unit"))
        .env(
            "RUSTFLAGS",
            "-C link-arg=-Wl,--unresolved-symbols=ignore-all",
        )
        .run()
        .context("extension unit tests failed")?;
    }

    sh.set_var("PGEDGE_BUILD_CACHE", &cache.root);
    // spockctrl's own unit tests link the kernel's libpq (the staged copy is in each kernel's
    // bin/, where the integration tests run it).
    if let Some((_, pg_config)) = pg_configs.first() {
        sh.set_var("SPOCKCTRL_PG_CONFIG", pg_config);
    }
    let majors = builds
        .iter()
        .map(|b| b.major.to_string())
        .collect::<Vec<_>>()
        .join(",");
    sh.set_var("PGEDGE_TEST_MAJORS", majors);
    let whole_suite = cargo_args.is_empty();
    let mut cargo_args = cargo_args.to_vec();
    // Tests a run cannot serve are not run at all, rather than reported as passed: the
    // stock-server test needs our 15 (Debian's stock server is a 15), the cross-major test two
    // majors.
    let mut skip = Vec::new();
    if !builds.iter().any(|b| b.major == 15) {
        skip.push(STOCK_SERVER_TEST.to_string());
    }
    if builds.len() < 2 {
        skip.push(CROSS_MAJOR_TEST.to_string());
    }
    // harness/tests' `per_major!` tests are named `<test>::pg<M>`.
    for major in PER_MAJOR_TESTS {
        if !builds.iter().any(|b| b.major == major) {
            skip.push(format!("::pg{major}"));
        }
    }
    if !skip.is_empty() && !cargo_args.iter().any(|a| a == "--") {
        cargo_args.push("--".into());
    }
    for test in skip {
        cargo_args.extend(["--skip".into(), test]);
    }
    cmd!(sh, "{cargo} test --locked --workspace --exclude spock --exclude snowflake --exclude lolor --exclude compat15 --exclude compat16 --exclude compat17 --exclude compat18 {cargo_args...}")
        .env_remove("RUST_BACKTRACE")
        .run()
        .context("tests failed")?;

    // The short fault run (crashes, awkward stops, a lost slot) on 17: a missed goal (data lost
    // or duplicated, a stop over 5 s…) fails the test run like a failing test. Left out when
    // `cargo test` arguments pick a subset of the tests.
    let pg17 = pg_configs.iter().find(|(major, _)| *major == 17);
    if let (Some((_, pg_config)), true) = (pg17, whole_suite) {
        chaos::run(pg_config, &chaos::Plan::for_test_suite())?;
    }
    Ok(())
}
