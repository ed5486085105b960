//! `spockctrl`: the command line of a spock cluster. This file parses the global options and
//! dispatches; each command group lives in its own module.

mod api;
mod cluster;
mod config;
mod ctx;
mod diff;
mod node;
mod output;
mod pq;
mod repair;
mod repset;
mod slot;
mod sub;
mod workflow;

use anyhow::{Context, Result};
use clap::{Arg, ArgMatches, Command, FromArgMatches, Subcommand, value_parser};
use ctx::{Ctx, Outcome};
use output::Format;
use std::path::PathBuf;

fn cli() -> Command {
    let global = |a: Arg| a.global(true);
    Command::new("spockctrl")
        .version(env!("CARGO_PKG_VERSION"))
        .about(
            "Manage spock nodes, replication sets and subscriptions; build a cluster from a \
                spec; find and repair differences between nodes",
        )
        .subcommand_required(false)
        .arg(global(
            Arg::new("config")
                .short('c')
                .long("config")
                .value_name("FILE")
                .default_value("spockctrl.json")
                .help("spockctrl configuration (node list)"),
        ))
        .arg(global(
            Arg::new("spec")
                .long("spec")
                .value_name("FILE")
                .help("pgEdge cluster spec to take the nodes from instead of -c"),
        ))
        .arg(global(
            Arg::new("format")
                .short('f')
                .long("format")
                .value_parser(value_parser!(Format))
                .default_value("table")
                .help("Output format"),
        ))
        .arg(global(
            Arg::new("verbose")
                .short('v')
                .long("verbose")
                .value_parser(value_parser!(u8).range(0..=3))
                .default_value("1")
                .help("0 errors, 1 warnings, 2 info, 3 debug (every SQL statement)"),
        ))
        .arg(
            Arg::new("workflow")
                .short('w')
                .long("workflow")
                .value_name("FILE")
                .help("Run the steps of a workflow file"),
        )
        .subcommand(api::group("node", "Spock nodes", node::COMMANDS))
        .subcommand(api::group("repset", "Replication sets", repset::COMMANDS))
        .subcommand(api::group("sub", "Subscriptions", sub::COMMANDS))
        .subcommand(api::group(
            "slot",
            "Logical replication slots",
            slot::COMMANDS,
        ))
        .subcommand(
            Command::new("sql")
                .about("Run SQL on a configured node; prints the last statement's rows")
                .arg(Arg::new("node_pos").index(1).value_name("NODE"))
                .arg(Arg::new("sql_pos").index(2).value_name("SQL"))
                .arg(Arg::new("node").long("node").help("same as NODE"))
                .arg(Arg::new("sql").long("sql").help("same as SQL")),
        )
        .subcommand(cluster::ClusterCmd::augment_subcommands(
            Command::new("cluster")
                .about("A whole cluster: init from a spec, status, add or remove a node")
                .subcommand_required(true),
        ))
        .subcommand(<diff::DiffArgs as clap::Args>::augment_args(
            Command::new("table-diff").about("Compare a table across nodes"),
        ))
        .subcommand(<repair::RepairArgs as clap::Args>::augment_args(
            Command::new("table-repair")
                .about("Make the other nodes match a source of truth for the rows that differ"),
        ))
}

fn one<'a>(m: &'a ArgMatches, names: &[&str]) -> Option<&'a String> {
    names.iter().find_map(|n| m.get_one::<String>(n))
}

fn dispatch(ctx: &mut Ctx, m: &ArgMatches) -> Result<Outcome> {
    match m.subcommand() {
        Some(("node", sm)) => api::run(ctx, node::COMMANDS, sm),
        Some(("repset", sm)) => api::run(ctx, repset::COMMANDS, sm),
        Some(("sub", sm)) => api::run(ctx, sub::COMMANDS, sm),
        Some(("slot", sm)) => api::run(ctx, slot::COMMANDS, sm),
        Some(("sql", sm)) => {
            let node = one(sm, &["node", "node_pos"]).context("sql: which node? (sql NODE SQL)")?;
            let sql = one(sm, &["sql", "sql_pos"]).context("sql: no SQL given")?;
            Ok(ctx.connect(node)?.exec(sql)?.into())
        }
        Some(("cluster", sm)) => cluster::run(ctx, cluster::ClusterCmd::from_arg_matches(sm)?),
        Some(("table-diff", sm)) => diff::run(ctx, &diff::DiffArgs::from_arg_matches(sm)?),
        Some(("table-repair", sm)) => repair::run(ctx, &repair::RepairArgs::from_arg_matches(sm)?),
        _ => anyhow::bail!("no command given (see spockctrl --help)"),
    }
}

/// A workflow step's command line, parsed by the same parser as the real one.
fn dispatch_words(ctx: &mut Ctx, words: &[String]) -> Result<Outcome> {
    let argv = std::iter::once("spockctrl".to_string()).chain(words.iter().cloned());
    let m = cli()
        .try_get_matches_from(argv)
        .map_err(|e| anyhow::anyhow!("{}", e.render().to_string().trim_end()))?;
    dispatch(ctx, &m)
}

fn main() {
    let m = cli().get_matches();
    output::set_verbosity(*m.get_one::<u8>("verbose").unwrap_or(&1));
    let format = *m.get_one::<Format>("format").unwrap_or(&Format::Table);
    let mut ctx = Ctx::new(
        PathBuf::from(m.get_one::<String>("config").expect("has a default")),
        m.get_one::<String>("spec").map(PathBuf::from),
        format,
    );
    let result = match m.get_one::<String>("workflow") {
        Some(w) => workflow::run(&mut ctx, &PathBuf::from(w), &dispatch_words),
        None => dispatch(&mut ctx, &m),
    };
    match result {
        Ok(outcome) => {
            outcome.print(format);
            std::process::exit(outcome.exit);
        }
        Err(e) => {
            eprintln!("spockctrl: error: {e:#}");
            std::process::exit(1);
        }
    }
}
