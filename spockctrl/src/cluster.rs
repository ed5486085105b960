//! `spockctrl cluster …`: a whole cluster at once. `init` builds what is missing of a full mesh
//! (extension, node, automatic-DDL settings, a subscription `sub_<provider><subscriber>` for
//! every ordered pair) and leaves what exists alone, so running it again changes nothing and a
//! partly built cluster is completed. `status` reads every node at once and shows a node that
//! does not answer as down. `add-node`/`remove-node` call spock's live add/remove functions.

use crate::{
    config::NodeConf,
    ctx::{Ctx, Outcome, connect, on_nodes},
    output::{Rows, info},
    pq::Conn,
};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use std::time::{Duration, Instant};

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Create the spock nodes and the full mesh of subscriptions of the configured nodes
    /// (idempotent).
    Init(InitArgs),
    /// Every subscription of every node: state and lag; nodes that do not answer show as down.
    Status,
    /// The configured nodes and whether they answer.
    ListNodes,
    /// Add a node to the running cluster from a source node (spock.add_node).
    AddNode(AddNodeArgs),
    /// Remove a node from the cluster (spock.remove_node).
    RemoveNode(RemoveNodeArgs),
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// A cluster spec (same as the global --spec).
    #[arg(value_name = "SPEC")]
    pub spec_file: Option<std::path::PathBuf>,
    /// Seconds to wait for every subscription to replicate (0: do not wait).
    #[arg(long, default_value_t = 120)]
    pub wait: u64,
}

#[derive(Args, Debug)]
pub struct AddNodeArgs {
    /// The new node (it must be in the configuration or spec).
    #[arg(long = "node")]
    pub node: String,
    /// The node whose data the new one starts from.
    #[arg(long = "source")]
    pub source: String,
    #[arg(long)]
    pub location: Option<String>,
    #[arg(long)]
    pub country: Option<String>,
    /// JSON document about the node.
    #[arg(long)]
    pub info: Option<String>,
}

#[derive(Args, Debug)]
pub struct RemoveNodeArgs {
    /// The node to remove.
    #[arg(long = "node")]
    pub node: String,
}

pub fn run(ctx: &mut Ctx, cmd: ClusterCmd) -> Result<Outcome> {
    match cmd {
        ClusterCmd::Init(a) => {
            if let Some(spec) = a.spec_file {
                *ctx = Ctx::new(ctx.config.clone(), Some(spec), ctx.format);
            }
            init(ctx, a.wait)
        }
        ClusterCmd::Status => status(ctx),
        ClusterCmd::ListNodes => list_nodes(ctx),
        ClusterCmd::AddNode(a) => add_node(ctx, &a),
        ClusterCmd::RemoveNode(a) => remove_node(ctx, &a),
    }
}

/// The subscription `cluster init` makes on `subscriber` from `provider` (the upstream tool's
/// name, which the spec keeps). No separator is needed: subscription names are per subscriber
/// (and slots per provider), and with one side fixed the name gives the other back, so two
/// links of one node never share a name (see the test).
pub fn sub_name(provider: &str, subscriber: &str) -> String {
    format!("sub_{provider}{subscriber}")
}

/// Every ordered (provider, subscriber) pair of distinct nodes.
pub fn mesh(nodes: &[String]) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for s in nodes {
        for p in nodes {
            if p != s {
                pairs.push((p.clone(), s.clone()));
            }
        }
    }
    pairs
}

const AUTO_DDL: &[&str] = &[
    "spock.enable_ddl_replication",
    "spock.include_ddl_repset",
    "spock.allow_ddl_from_functions",
];

fn local_node(conn: &mut Conn) -> Result<Option<String>> {
    conn.value(
        "SELECT n.node_name::text FROM spock.local_node l JOIN spock.node n USING (node_id)",
        &[],
    )
}

/// Extension, settings and spock node of one node; returns what was done.
fn init_node(node: &NodeConf, auto_ddl: bool) -> Result<Vec<(String, String)>> {
    let mut done = Vec::new();
    let mut conn = connect(node)?;
    let had = conn.value(
        "SELECT extversion FROM pg_extension WHERE extname = 'spock'",
        &[],
    )?;
    if had.is_none() {
        conn.exec("CREATE EXTENSION IF NOT EXISTS spock")?;
    }
    done.push((
        "extension spock".into(),
        if had.is_some() { "exists" } else { "created" }.into(),
    ));
    if auto_ddl {
        let mut changed = false;
        for guc in AUTO_DDL {
            let now = conn.value("SELECT current_setting($1, true)", &[Some(guc)])?;
            if now.as_deref() != Some("on") {
                conn.exec(&format!("ALTER SYSTEM SET {guc} = on"))?;
                changed = true;
            }
        }
        if changed {
            conn.exec("SELECT pg_reload_conf()")?;
            // The new values reach this session after the reload is processed.
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut c2 = connect(node)?;
            while c2
                .value(
                    "SELECT current_setting('spock.enable_ddl_replication')",
                    &[],
                )?
                .as_deref()
                != Some("on")
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(100));
                c2 = connect(node)?;
            }
        }
        done.push((
            "automatic DDL".into(),
            if changed { "turned on" } else { "on" }.into(),
        ));
    }
    match local_node(&mut conn)? {
        Some(name) if name == node.name => done.push((format!("node {name}"), "exists".into())),
        Some(other) => bail!(
            "node {}: database {} is already spock node {other}; the spec calls it {}",
            node.name,
            node.db,
            node.name
        ),
        None => {
            conn.query(
                "SELECT spock.node_create(node_name := $1, dsn := $2)",
                &[Some(&node.name), Some(&node.dsn())],
            )?;
            done.push((format!("node {}", node.name), "created".into()));
        }
    }
    Ok(done)
}

fn init(ctx: &Ctx, wait: u64) -> Result<Outcome> {
    let cluster = ctx.cluster()?.clone();
    if cluster.nodes.len() < 2 {
        bail!("cluster {}: a mesh needs at least two nodes", cluster.name);
    }
    let mut out = Rows::new(&["node", "object", "action"]);
    // Every node first (subscriptions need their provider's node), at once.
    let results = on_nodes(&cluster.nodes, |n| init_node(n, cluster.auto_ddl));
    for (n, r) in cluster.nodes.iter().zip(results) {
        for (object, action) in r? {
            info(&format!("{}: {object}: {action}", n.name));
            out.push(vec![Some(n.name.clone()), Some(object), Some(action)]);
        }
    }
    let names: Vec<String> = cluster.nodes.iter().map(|n| n.name.clone()).collect();
    let mut subs = Vec::new();
    for (provider, subscriber) in mesh(&names) {
        let p = cluster.node(&provider)?;
        let mut conn = connect(cluster.node(&subscriber)?)?;
        // A subscription from this provider under another name (made by hand or by another
        // tool) is the link already: a second one would apply every change twice.
        let existing = conn.value(
            "SELECT s.sub_name::text FROM spock.subscription s \
               LEFT JOIN spock.node n ON n.node_id = s.sub_origin \
              WHERE s.sub_name = $1 OR n.node_name = $2 \
              ORDER BY s.sub_name = $1 DESC LIMIT 1",
            &[Some(&sub_name(&provider, &subscriber)), Some(&provider)],
        )?;
        let exists = existing.is_some();
        let name = existing.unwrap_or_else(|| sub_name(&provider, &subscriber));
        if !exists {
            conn.query(
                "SELECT spock.sub_create(subscription_name := $1, provider_dsn := $2, \
                 replication_sets := '{default,default_insert_only,ddl_sql}', \
                 synchronize_structure := false, synchronize_data := false, \
                 forward_origins := '{}')",
                &[Some(&name), Some(&p.dsn())],
            )?;
        }
        let action = if exists { "exists" } else { "created" };
        info(&format!("{subscriber}: subscription {name}: {action}"));
        out.push(vec![
            Some(subscriber.clone()),
            Some(format!("subscription {name}")),
            Some(action.into()),
        ]);
        subs.push((subscriber, name));
    }
    if wait > 0 {
        wait_replicating(ctx, &subs, Duration::from_secs(wait))?;
    }
    let created = out
        .rows
        .iter()
        .filter(|r| r[2].as_deref() != Some("exists") && r[2].as_deref() != Some("on"))
        .count();
    let verdict = if created == 0 {
        format!(
            "cluster {}: {} nodes and {} subscriptions already in place, nothing changed",
            cluster.name,
            names.len(),
            subs.len()
        )
    } else {
        format!(
            "cluster {}: {} nodes, {} subscriptions; {created} objects created or changed",
            cluster.name,
            names.len(),
            subs.len()
        )
    };
    Ok(Outcome {
        rows: out,
        verdict: Some(verdict),
        ..Outcome::default()
    })
}

/// Waits until each (node, subscription) reports `replicating`.
fn wait_replicating(ctx: &Ctx, subs: &[(String, String)], limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    for (node, sub) in subs {
        let mut conn = ctx.connect(node)?;
        loop {
            let status =
                conn.value("SELECT status FROM spock.sub_show_status($1)", &[Some(sub)])?;
            if status.as_deref() == Some("replicating") {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{node}: subscription {sub} is {} after {}s (see `spockctrl cluster status`)",
                    status.unwrap_or_else(|| "missing".into()),
                    limit.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}

const STATUS_SQL: &str = "\
    SELECT s.subscription_name, s.provider_node, s.status, \
           lt.replication_lag::text AS lag, lt.replication_lag_bytes::text AS lag_bytes \
      FROM spock.sub_show_status() s \
      LEFT JOIN spock.lag_tracker lt ON lt.origin_name::text = s.provider_node \
           AND lt.receiver_name::text = (SELECT n.node_name::text FROM spock.local_node l \
                                          JOIN spock.node n USING (node_id)) \
     ORDER BY 1";

fn status(ctx: &Ctx) -> Result<Outcome> {
    let cluster = ctx.cluster()?.clone();
    let results = on_nodes(&cluster.nodes, |n| connect(n)?.query(STATUS_SQL, &[]));
    let mut out = Rows::new(&[
        "node",
        "subscription",
        "provider",
        "status",
        "lag",
        "lag_bytes",
    ]);
    let (mut down, mut subs, mut bad) = (0, 0, 0);
    for (n, r) in cluster.nodes.iter().zip(results) {
        match r {
            Ok(rows) if rows.rows.is_empty() => {
                out.push(vec![
                    Some(n.name.clone()),
                    None,
                    None,
                    Some("no subscriptions".into()),
                    None,
                    None,
                ]);
                bad += 1;
            }
            Ok(rows) => {
                for r in rows.rows {
                    subs += 1;
                    if r[2].as_deref() != Some("replicating") {
                        bad += 1;
                    }
                    let mut row = vec![Some(n.name.clone())];
                    row.extend(r);
                    out.push(row);
                }
            }
            Err(e) => {
                down += 1;
                let why = format!("{e:#}");
                crate::output::warn(&why);
                out.push(vec![
                    Some(n.name.clone()),
                    None,
                    None,
                    Some("down".into()),
                    None,
                    None,
                ]);
            }
        }
    }
    let healthy = down == 0 && bad == 0;
    let verdict = format!(
        "cluster {}: {} nodes ({} down), {subs} subscriptions ({} not replicating){}",
        cluster.name,
        cluster.nodes.len(),
        down,
        bad,
        if healthy { ", all replicating" } else { "" }
    );
    Ok(Outcome {
        rows: out,
        verdict: Some(verdict),
        exit: if healthy { 0 } else { 2 },
        ..Outcome::default()
    })
}

fn list_nodes(ctx: &Ctx) -> Result<Outcome> {
    let cluster = ctx.cluster()?.clone();
    let results = on_nodes(&cluster.nodes, |n| {
        let mut c = connect(n)?;
        local_node(&mut c)
    });
    let mut out = Rows::new(&["node", "dsn", "state", "spock_node"]);
    for (n, r) in cluster.nodes.iter().zip(results) {
        let (state, spock) = match r {
            Ok(s) => ("up".to_string(), s),
            Err(e) => (format!("down: {e:#}"), None),
        };
        out.push(vec![
            Some(n.name.clone()),
            Some(n.dsn()),
            Some(state),
            spock,
        ]);
    }
    Ok(out.into())
}

/// `CALL` for a procedure, `SELECT` for a function: spock's add/remove may be either.
fn invoke(conn: &mut Conn, name: &str, params: &[Option<&str>]) -> Result<Rows> {
    let kind = conn
        .value(
            "SELECT prokind::text FROM pg_proc WHERE proname = $1 \
              AND pronamespace = 'spock'::regnamespace LIMIT 1",
            &[Some(name)],
        )?
        .with_context(|| {
            format!(
                "{}: spock.{name}() does not exist in this spock version",
                conn.label()
            )
        })?;
    let args: Vec<String> = (1..=params.len()).map(|i| format!("${i}")).collect();
    let sql = if kind == "p" {
        format!("CALL spock.{name}({})", args.join(", "))
    } else {
        format!("SELECT * FROM spock.{name}({})", args.join(", "))
    };
    conn.query(&sql, params)
}

fn add_node(ctx: &Ctx, a: &AddNodeArgs) -> Result<Outcome> {
    let new = ctx.node(&a.node)?;
    let src = ctx.node(&a.source)?;
    let mut conn = connect(&new)?;
    conn.exec("CREATE EXTENSION IF NOT EXISTS spock")?;
    let (sd, nd) = (src.dsn(), new.dsn());
    let rows = invoke(
        &mut conn,
        "add_node",
        &[
            Some(&src.name),
            Some(&sd),
            Some(&new.name),
            Some(&nd),
            Some("true"),
            a.location.as_deref(),
            a.country.as_deref(),
            a.info.as_deref(),
        ],
    )?;
    Ok(Outcome {
        rows,
        verdict: Some(format!("node {} added from {}", new.name, src.name)),
        ..Outcome::default()
    })
}

fn remove_node(ctx: &Ctx, a: &RemoveNodeArgs) -> Result<Outcome> {
    let target = ctx.node(&a.node)?;
    let mut conn = connect(&target)?;
    let dsn = target.dsn();
    let rows = invoke(
        &mut conn,
        "remove_node",
        &[Some(&target.name), Some(&dsn), Some("true")],
    )?;
    Ok(Outcome {
        rows,
        verdict: Some(format!("node {} removed", target.name)),
        ..Outcome::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mesh_has_every_ordered_pair_once() {
        let names: Vec<String> = ["n1", "n2", "n3"].iter().map(|s| s.to_string()).collect();
        let pairs = mesh(&names);
        assert_eq!(pairs.len(), 6);
        assert!(pairs.contains(&("n2".into(), "n1".into())));
        assert!(!pairs.iter().any(|(p, s)| p == s));
        assert_eq!(sub_name("n1", "n2"), "sub_n1n2");
    }

    #[test]
    fn no_two_links_of_a_node_share_a_subscription_name() {
        // Names that run into each other when concatenated (n1+n12, n11+n2…): the links into
        // one subscriber, and those out of one provider, still all differ.
        let names: Vec<String> = ["n1", "n2", "n11", "n12", "n112", "n", "1n"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for node in &names {
            let into: std::collections::HashSet<_> = names
                .iter()
                .filter(|p| *p != node)
                .map(|p| sub_name(p, node))
                .collect();
            let out_of: std::collections::HashSet<_> = names
                .iter()
                .filter(|s| *s != node)
                .map(|s| sub_name(node, s))
                .collect();
            assert_eq!(into.len(), names.len() - 1, "into {node}");
            assert_eq!(out_of.len(), names.len() - 1, "out of {node}");
        }
    }
}
