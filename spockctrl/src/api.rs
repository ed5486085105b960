//! The engine behind `node`, `repset`, `sub` and `slot`: each subcommand is a row of a table
//! (its SQL function or statement and its parameters, named as upstream's flags and the SQL
//! arguments are), from which both the clap command (with help) and the call are made. Only
//! the arguments given are passed, so the functions' own defaults apply (several are STRICT,
//! where an explicit NULL would silently do nothing).

use crate::{
    ctx::{Ctx, Outcome, on_nodes},
    output::Rows,
};
use anyhow::{Context, Result, bail};
use clap::{Arg, ArgAction, ArgMatches, Command};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `--flag=value` or, in order, a positional argument; required.
    Pos,
    /// Optional positional (or flag).
    PosOpt,
    /// Optional `--flag=value`.
    Opt,
    /// Required `--flag=value`.
    Req,
    /// `--flag` alone means true.
    Switch,
}

pub struct Param {
    /// The command-line name (upstream's, with underscores; dashes accepted too).
    pub flag: &'static str,
    /// The SQL argument name (for named calls).
    pub sql: &'static str,
    /// The SQL type the text value is cast to; `text[]` values may be given as `a,b`.
    pub cast: &'static str,
    pub kind: Kind,
    pub default: Option<&'static str>,
    pub help: &'static str,
}

pub const fn p(
    flag: &'static str,
    sql: &'static str,
    cast: &'static str,
    kind: Kind,
    help: &'static str,
) -> Param {
    Param {
        flag,
        sql,
        cast,
        kind,
        default: None,
        help,
    }
}

pub enum Call {
    /// `spock.<name>(arg := value, …)` with the arguments given.
    Spock(&'static str),
    /// A statement whose `$n` are the parameters in order (NULL when not given).
    Sql(&'static str),
}

/// Where a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    /// `--node`, or the node named by the first parameter (node create/drop).
    One,
    /// `--node`, else every node at once (read-only reports).
    Each,
}

pub struct ApiCmd {
    pub name: &'static str,
    pub about: &'static str,
    pub call: Call,
    pub params: &'static [Param],
    pub on: On,
}

/// The clap command of a group (`node`, `repset`, …) from its table.
pub fn group(name: &'static str, about: &'static str, cmds: &'static [ApiCmd]) -> Command {
    let mut g = Command::new(name)
        .about(about)
        .subcommand_required(true)
        .arg_required_else_help(true);
    for c in cmds {
        let mut sc = Command::new(c.name).about(c.about).arg(
            Arg::new("node")
                .long("node")
                .value_name("NODE")
                .help("Node (from the configuration) to run on"),
        );
        let mut index = 1;
        for prm in c.params {
            let mut a = Arg::new(prm.flag)
                .long(prm.flag)
                .help(prm.help)
                .value_name(prm.sql.to_uppercase());
            let dashed = prm.flag.replace('_', "-");
            if dashed != prm.flag {
                a = a.alias(dashed);
            }
            if prm.kind == Kind::Switch {
                a = a.action(ArgAction::SetTrue);
            }
            sc = sc.arg(a);
            if matches!(prm.kind, Kind::Pos | Kind::PosOpt) {
                sc = sc.arg(
                    Arg::new(format!("{}#pos", prm.flag))
                        .index(index)
                        .value_name(prm.flag.to_uppercase())
                        .help(format!("same as --{}", prm.flag)),
                );
                index += 1;
            }
        }
        g = g.subcommand(sc);
    }
    g
}

/// The value of a parameter as given (flag first, then its positional), else its default.
fn given(m: &ArgMatches, prm: &Param) -> Option<String> {
    if prm.kind == Kind::Switch {
        return m.get_flag(prm.flag).then(|| "true".to_string());
    }
    m.get_one::<String>(prm.flag)
        .or_else(|| {
            if matches!(prm.kind, Kind::Pos | Kind::PosOpt) {
                m.get_one::<String>(&format!("{}#pos", prm.flag))
            } else {
                None
            }
        })
        .cloned()
        .or(prm.default.map(String::from))
}

/// A list given as `a,b`, `{a,b}` or upstream's `ARRAY['a','b']` as an array literal.
pub fn array_literal(v: &str) -> String {
    let t = v.trim();
    if t.starts_with('{') {
        return t.to_string();
    }
    let inner = t
        .strip_prefix("ARRAY[")
        .or_else(|| t.strip_prefix("array["))
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(t);
    let items: Vec<String> = inner
        .split(',')
        .map(|i| i.trim().trim_matches('\'').to_string())
        .filter(|i| !i.is_empty())
        .map(|i| format!("\"{}\"", i.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", items.join(","))
}

/// The SQL text and parameters of a call with the given values (in `params` order).
pub fn build(
    call: &Call,
    params: &[Param],
    values: &[Option<String>],
) -> (String, Vec<Option<String>>) {
    let norm = |prm: &Param, v: &Option<String>| {
        v.as_ref().map(|s| {
            if prm.cast.ends_with("[]") {
                array_literal(s)
            } else {
                s.clone()
            }
        })
    };
    match call {
        Call::Spock(func) => {
            let mut args = Vec::new();
            let mut vals = Vec::new();
            for (prm, v) in params.iter().zip(values) {
                if let Some(v) = norm(prm, v) {
                    vals.push(Some(v));
                    args.push(format!("{} := ${}::{}", prm.sql, vals.len(), prm.cast));
                }
            }
            (
                format!("SELECT * FROM spock.{func}({})", args.join(", ")),
                vals,
            )
        }
        Call::Sql(sql) => (
            sql.to_string(),
            params
                .iter()
                .zip(values)
                .map(|(prm, v)| norm(prm, v))
                .collect(),
        ),
    }
}

/// Runs a group's subcommand.
pub fn run(ctx: &Ctx, cmds: &'static [ApiCmd], m: &ArgMatches) -> Result<Outcome> {
    let (name, sub) = m.subcommand().context("a subcommand is required")?;
    let cmd = cmds
        .iter()
        .find(|c| c.name == name)
        .context("unknown subcommand")?;
    let mut values: Vec<Option<String>> = cmd.params.iter().map(|prm| given(sub, prm)).collect();
    for (prm, v) in cmd.params.iter().zip(&values) {
        if v.is_none() && matches!(prm.kind, Kind::Pos | Kind::Req) {
            bail!("{name}: missing --{} ({})", prm.flag, prm.help);
        }
    }
    let node = sub.get_one::<String>("node").cloned();
    // Conveniences: a provider DSN may name a configured node; `node create` without --dsn
    // registers the node's DSN from the configuration.
    for (prm, v) in cmd.params.iter().zip(values.iter_mut()) {
        if prm.flag == "provider_dsn"
            && let Some(name) = v.as_deref()
            && !name.contains('=')
            && !name.contains("://")
        {
            *v = Some(ctx.node(name)?.dsn());
        }
    }
    if let Some(i) = cmd
        .params
        .iter()
        .position(|p| p.flag == "dsn" && p.kind == Kind::Opt)
        && values[i].is_none()
    {
        let target = node
            .clone()
            .or_else(|| values[0].clone())
            .unwrap_or_default();
        values[i] = Some(ctx.node(&target)?.dsn());
    }
    let (sql, params) = build(&cmd.call, cmd.params, &values);
    let refs: Vec<Option<&str>> = params.iter().map(|p| p.as_deref()).collect();
    match (cmd.on, node) {
        (_, Some(n)) => Ok(ctx.connect(&n)?.query(&sql, &refs)?.into()),
        (On::One, None) => {
            // node create/drop/…: the node named is where it runs; elsewhere --node says.
            let n = match cmd.params.first() {
                Some(first) if first.flag == "node_name" => values[0].clone(),
                _ => None,
            }
            .with_context(|| format!("{name}: missing --node (the node to run on)"))?;
            Ok(ctx.connect(&n)?.query(&sql, &refs)?.into())
        }
        (On::Each, None) => {
            let nodes = ctx.cluster()?.nodes.clone();
            let results = on_nodes(&nodes, |n| crate::ctx::connect(n)?.query(&sql, &refs));
            let mut all = Rows::default();
            let mut failed = Vec::new();
            for (n, r) in nodes.iter().zip(results) {
                match r {
                    Ok(rows) => all.append_for_node(&n.name, rows),
                    Err(e) => failed.push(format!("{e:#}")),
                }
            }
            if !failed.is_empty() && all.rows.is_empty() {
                bail!("{}", failed.join("; "));
            }
            for f in &failed {
                crate::output::warn(f);
            }
            Ok(Outcome {
                rows: all,
                exit: if failed.is_empty() { 0 } else { 2 },
                ..Outcome::default()
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARAMS: &[Param] = &[
        p("sub_name", "subscription_name", "name", Kind::Pos, ""),
        p(
            "replication_sets",
            "replication_sets",
            "text[]",
            Kind::Opt,
            "",
        ),
        p("enabled", "enabled", "boolean", Kind::Opt, ""),
    ];

    #[test]
    fn only_given_arguments_are_passed_by_name() {
        let (sql, vals) = build(
            &Call::Spock("sub_create"),
            PARAMS,
            &[Some("s1".into()), None, Some("false".into())],
        );
        assert_eq!(
            sql,
            "SELECT * FROM spock.sub_create(subscription_name := $1::name, enabled := $2::boolean)"
        );
        assert_eq!(vals, [Some("s1".to_string()), Some("false".to_string())]);
    }

    #[test]
    fn lists_become_array_literals() {
        assert_eq!(
            array_literal("default, ddl_sql"),
            r#"{"default","ddl_sql"}"#
        );
        assert_eq!(array_literal("ARRAY['a','b']"), r#"{"a","b"}"#);
        assert_eq!(array_literal("{x}"), "{x}");
    }

    #[test]
    fn clap_commands_accept_flags_positionals_and_dashes() {
        static CMDS: &[ApiCmd] = &[ApiCmd {
            name: "create",
            about: "",
            call: Call::Spock("sub_create"),
            params: PARAMS,
            on: On::One,
        }];
        let g = group("sub", "", CMDS);
        let m = g
            .clone()
            .try_get_matches_from(["sub", "create", "s1", "--enabled=false", "--node=n1"])
            .unwrap();
        let (_, sm) = m.subcommand().unwrap();
        assert_eq!(given(sm, &PARAMS[0]).as_deref(), Some("s1"));
        assert_eq!(given(sm, &PARAMS[2]).as_deref(), Some("false"));
        let m = g
            .try_get_matches_from(["sub", "create", "--sub-name", "s2"])
            .unwrap();
        assert_eq!(
            given(m.subcommand().unwrap().1, &PARAMS[0]).as_deref(),
            Some("s2")
        );
    }
}
