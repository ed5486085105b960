//! `cargo xtask test`: builds (or finds cached) kernels and runs the test suite against them.
//! Tests find a staged kernel through `PGEDGE_PG_CONFIG_<major>`.

use crate::{cache::Cache, pipeline};
use anyhow::{Context, Result};
use xshell::{Shell, cmd};

pub fn run(cache: &Cache, builds: &[pipeline::BuildOptions], cargo_args: &[String]) -> Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(pipeline::repo_root());
    for opts in builds {
        let built = pipeline::build(cache, opts)?;
        sh.set_var(format!("PGEDGE_PG_CONFIG_{}", opts.major), &built.pg_config);
    }
    sh.set_var("PGEDGE_BUILD_CACHE", &cache.root);
    let majors = builds
        .iter()
        .map(|b| b.major.to_string())
        .collect::<Vec<_>>()
        .join(",");
    sh.set_var("PGEDGE_TEST_MAJORS", majors);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    cmd!(sh, "{cargo} test --locked --workspace --exclude spock --exclude snowflake --exclude lolor --exclude compat15 --exclude compat16 --exclude compat17 {cargo_args...}")
        .env_remove("RUST_BACKTRACE")
        .run()
        .context("tests failed")?;
    Ok(())
}
