//! `cargo xtask`: the pgEdge kernel build pipeline. This file only parses flags and dispatches;
//! each stage lives in its own module.

mod apt_source;
mod bench;
mod cache;
mod chaos;
mod check_kernel;
mod cluster;
mod configure;
mod extensions;
mod extract;
mod fetch;
mod package;
mod patch;
mod pipeline;
mod prereq;
mod progress;
mod sources;
mod spockctrl;
mod sqlgen;
mod stage;
mod test_cmd;
mod verify;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "Build, stage and test the pgEdge kernel distribution")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch, verify, patch, build and stage PostgreSQL with spock, snowflake and lolor, then
    /// package it.
    Build(BuildArgs),
    /// Build (or find cached) and write the pgedge-<M> .deb and .rpm, SBOM and SHA256SUMS.
    Package(PackageArgs),
    /// Print the path of the staged pg_config.
    PgConfig(KernelArgs),
    /// Build the kernels the tests need, then run the whole test suite.
    Test(TestArgs),
    /// Measure an extension against the native baseline on the same server.
    Bench(BenchArgs),
    /// Run fault scenarios (crashes, pauses, storms, stops, a partition, a lost slot) against
    /// local clusters and print a table of figures with PASS/FAIL verdicts.
    Chaos(ChaosArgs),
    /// Start a local demo cluster (node 1 replicating to the others) until Enter is pressed.
    Cluster(ClusterArgs),
    /// Build the patched kernel with assertions and run PostgreSQL's regression suite (slow).
    CheckKernel(CheckKernelArgs),
}

#[derive(Args)]
struct CheckKernelArgs {
    #[command(flatten)]
    kernel: KernelArgs,
    /// Do not download; use the cache or Debian's source package.
    #[arg(long)]
    offline: bool,
    /// Parallel make jobs (default: number of CPUs).
    #[arg(long)]
    jobs: Option<usize>,
}

#[derive(Args)]
struct ClusterArgs {
    #[command(flatten)]
    kernel: KernelArgs,
    /// Number of nodes.
    #[arg(long, default_value_t = 2)]
    nodes: usize,
}

#[derive(Args)]
struct BenchArgs {
    #[arg(value_enum)]
    what: bench::Bench,
    /// `replication`: rounds of each live workload, which side goes first alternating; the
    /// ratio reported is the median round's (one run on a shared machine is noise).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    #[command(flatten)]
    kernel: KernelArgs,
}

#[derive(Args)]
struct ChaosArgs {
    /// Scenarios to run (default: all).
    #[arg(value_enum)]
    scenarios: Vec<chaos::Scenario>,
    /// Tens of minutes instead of a few: more crash cycles, longer pauses, storms and partitions.
    #[arg(long)]
    long: bool,
    #[command(flatten)]
    kernel: KernelArgs,
}

#[derive(Args)]
struct KernelArgs {
    /// PostgreSQL major version (15, 16, 17 or 18).
    #[arg(long, default_value_t = 17)]
    pg: u32,
    /// A pinned release other than the major's default (see sources.toml).
    #[arg(long)]
    pg_version: Option<String>,
}

#[derive(Args)]
struct BuildArgs {
    #[command(flatten)]
    kernel: KernelArgs,
    /// Use this PostgreSQL source tarball (still checked against the pinned SHA-256).
    #[arg(long)]
    source: Option<PathBuf>,
    /// Do not download; use the cache, --source or Debian's source package.
    #[arg(long)]
    offline: bool,
    /// Parallel make jobs (default: number of CPUs).
    #[arg(long)]
    jobs: Option<usize>,
    /// Build and stage only the server, not the extensions.
    #[arg(long)]
    kernel_only: bool,
    /// Build and install only these extensions (spock, snowflake, lolor); for development.
    #[arg(long = "ext", value_delimiter = ',')]
    only_extensions: Vec<String>,
    /// Stop after staging; write no packages (partial builds never package).
    #[arg(long)]
    no_package: bool,
    #[command(flatten)]
    package: PackageOutArgs,
}

#[derive(Args)]
struct PackageOutArgs {
    /// Directory for the packages (default: <cache>/packages/pg<M>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Timestamp for every date inside the packages (default: $SOURCE_DATE_EPOCH, else the
    /// last commit's time).
    #[arg(long)]
    source_date_epoch: Option<u64>,
}

impl PackageOutArgs {
    fn options(&self) -> package::Options {
        package::Options {
            out_dir: self.out.clone(),
            source_date_epoch: self.source_date_epoch,
        }
    }
}

#[derive(Args)]
struct PackageArgs {
    #[command(flatten)]
    kernel: KernelArgs,
    #[command(flatten)]
    out: PackageOutArgs,
}

#[derive(Args)]
struct TestArgs {
    /// Majors to build and test against (default: 17 and 15).
    #[arg(long = "pg", value_delimiter = ',')]
    majors: Vec<u32>,
    /// Rebuild only these extensions before testing (for development).
    #[arg(long = "ext", value_delimiter = ',')]
    only_extensions: Vec<String>,
    /// Extra arguments for `cargo test` (after `--`).
    #[arg(last = true)]
    cargo_args: Vec<String>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let cache = cache::Cache::from_env()?;
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let options = |k: &KernelArgs| pipeline::BuildOptions {
        major: k.pg,
        version: k.pg_version.clone(),
        fetch: fetch::FetchOptions::default(),
        jobs,
        skip_extensions: false,
        only_extensions: Vec::new(),
    };
    match cli.command {
        Command::Build(args) => {
            prereq::check(prereq::Step::Build)?;
            let mut opts = options(&args.kernel);
            opts.fetch.source = args.source;
            opts.fetch.no_download = args.offline;
            opts.jobs = args.jobs.unwrap_or(jobs);
            opts.skip_extensions = args.kernel_only;
            opts.only_extensions = args.only_extensions;
            let built = pipeline::build(&cache, &opts)?;
            if built.complete && !args.no_package {
                package::run(&cache, &built, &args.package.options())?;
            }
            println!("{}", built.pg_config.display());
        }
        Command::Package(args) => {
            let built = pipeline::build(&cache, &options(&args.kernel))?;
            let written = package::run(&cache, &built, &args.out.options())?;
            for path in [written.deb, written.rpm, written.sbom, written.sums] {
                println!("{}", path.display());
            }
        }
        Command::PgConfig(k) => {
            println!(
                "{}",
                pipeline::staged_pg_config(&cache, &options(&k))?.display()
            );
        }
        Command::Test(args) => {
            prereq::check(prereq::Step::Test)?;
            let majors = if args.majors.is_empty() {
                vec![17, 15, 18]
            } else {
                args.majors
            };
            let builds = majors
                .into_iter()
                .map(|m| {
                    options(&KernelArgs {
                        pg: m,
                        pg_version: None,
                    })
                })
                .collect::<Vec<_>>();
            test_cmd::run(&cache, &builds, &args.cargo_args)?;
        }
        Command::Cluster(args) => {
            let built = pipeline::build(&cache, &options(&args.kernel))?;
            cluster::run(&built.pg_config, args.nodes)?;
        }
        Command::CheckKernel(args) => {
            let mut opts = options(&args.kernel);
            opts.fetch.no_download = args.offline;
            opts.jobs = args.jobs.unwrap_or(jobs);
            check_kernel::run(&cache, &opts)?;
        }
        Command::Bench(args) => {
            let built = pipeline::build(&cache, &options(&args.kernel))?;
            bench::run(args.what, &built.pg_config, args.rounds)?;
        }
        Command::Chaos(args) => {
            let built = pipeline::build(&cache, &options(&args.kernel))?;
            chaos::run(
                &built.pg_config,
                &chaos::Plan::new(args.long, args.scenarios),
            )?;
        }
    }
    Ok(())
}
