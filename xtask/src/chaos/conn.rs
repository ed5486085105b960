//! Talking to chaos nodes, and the spock setup every scenario shares. SQL goes through each
//! node's Unix socket directory instead of TCP: the sockets keep working when the partition
//! scenario moves a server into a network namespace of its own, so one helper serves all.

use anyhow::{Context, Result, bail};
use harness::{Cluster, ClusterOptions, Node};
use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

/// The socket directory the harness gave `node` (next to its data directory).
pub fn sockets(node: &Node) -> PathBuf {
    node.data
        .parent()
        .expect("a node directory")
        .join("sockets")
}

/// A client program of the kernel connecting to `node` as `postgres` over its socket.
pub fn client(node: &Node, program: &str) -> Command {
    let mut cmd = node.client(program, "postgres");
    cmd.env("PGHOST", sockets(node))
        .env("PGDATABASE", "postgres");
    cmd
}

/// Runs SQL on `node` and returns psql's unaligned, tuples-only output.
pub fn sql(node: &Node, query: &str) -> Result<String> {
    let out = client(node, "psql")
        .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", query])
        .output()
        .context("cannot run psql")?;
    if !out.status.success() {
        bail!(
            "{}: {}",
            node.name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?
        .trim_end_matches('\n')
        .to_string())
}

/// Runs a query that returns one integer.
pub fn int(node: &Node, query: &str) -> Result<i64> {
    let text = sql(node, query)?;
    text.trim()
        .parse()
        .with_context(|| format!("{}: not an integer from {query}: {text:?}", node.name))
}

/// Polls `check` until it holds; the time that took, or `None` after `timeout`. Polling is
/// the point: the nodes are being broken, so a failing query just means "not yet".
pub fn poll(timeout: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if check() {
            return Some(started.elapsed());
        }
        if started.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `query` on `node` returns `want`, or fails naming both.
pub fn wait_for(node: &Node, query: &str, want: &str, timeout: Duration) -> Result<()> {
    let mut last = String::new();
    let ok = poll(timeout, || {
        last = sql(node, query).unwrap_or_else(|e| format!("error: {e}"));
        last == want
    });
    if ok.is_none() {
        bail!(
            "{}: `{query}` returned {last:?}, wanted {want:?}; log:\n{}",
            node.name,
            node.log_tail(20)
        );
    }
    Ok(())
}

/// Makes `node` a spock node called `name` reachable at `dsn`, with `schema` created.
pub fn spock_node(node: &Node, name: &str, dsn: &str, schema: &str) -> Result<()> {
    sql(node, "CREATE EXTENSION spock")?;
    sql(
        node,
        &format!("SELECT spock.node_create('{name}', '{dsn}')"),
    )?;
    sql(node, schema)?;
    Ok(())
}

/// Subscribes `sub` to the provider at `dsn` (its default sets) as subscription `name`.
pub fn subscribe(sub: &Node, name: &str, dsn: &str) -> Result<()> {
    sql(sub, &format!("SELECT spock.sub_create('{name}', '{dsn}')"))?;
    Ok(())
}

/// Waits until `node` has `n` active replication slots, i.e. every subscriber streams from it.
pub fn wait_streams(node: &Node, n: usize) -> Result<()> {
    wait_for(
        node,
        "SELECT count(*) FROM pg_replication_slots WHERE active",
        &n.to_string(),
        Duration::from_secs(60),
    )
}

/// Two nodes, n1 (provider) and n2 (subscriber, subscription `sub`), with their own schemas,
/// every public table of n1 in `default`, streaming.
pub fn pair(kernel: &harness::Kernel, provider: &str, subscriber: &str) -> Result<Cluster> {
    pair_with(kernel, ClusterOptions::default(), provider, subscriber)
}

/// `pair` with server settings of the caller's (`opts`; the node count is set here).
pub fn pair_with(
    kernel: &harness::Kernel,
    opts: ClusterOptions,
    provider: &str,
    subscriber: &str,
) -> Result<Cluster> {
    let cluster = Cluster::start(kernel, &opts.nodes(2))?;
    let (p, s) = (cluster.node(0), cluster.node(1));
    spock_node(p, "n1", &p.dsn("postgres"), provider)?;
    spock_node(s, "n2", &s.dsn("postgres"), subscriber)?;
    sql(
        p,
        "SELECT spock.repset_add_all_tables('default', ARRAY['public'])",
    )?;
    subscribe(s, "sub", &p.dsn("postgres"))?;
    wait_streams(p, 1)?;
    Ok(cluster)
}

/// The `status` column of `sub_show_status` for one subscription (or the error text).
pub fn sub_status(node: &Node, sub: &str) -> String {
    sql(
        node,
        &format!("SELECT status FROM spock.sub_show_status('{sub}')"),
    )
    .unwrap_or_else(|e| format!("error: {e}"))
}
