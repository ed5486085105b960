//! The 3-node mesh of `pause`, `storm` and `partition`: every node subscribes to every other
//! (`sub_n<provider>_n<subscriber>`), every public table in `default`; and the convergence
//! check they share.

use super::{Outcome, conn, secs};
use anyhow::Result;
use harness::Node;
use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

/// Marker rows, one per node and round: each node's stream is in commit order, so a node that
/// has every other node's marker has everything they wrote before it.
pub const MARKS: &str = "CREATE TABLE marks(node text, n int, PRIMARY KEY (node, n));";

/// Makes spock nodes of `nodes` (reachable at `dsns`) with `schema` plus `MARKS`, subscribes
/// each to all others and waits until every stream is up.
pub fn build(nodes: &[Node], dsns: &[String], schema: &str) -> Result<()> {
    for (node, dsn) in nodes.iter().zip(dsns) {
        conn::spock_node(node, &node.name, dsn, &format!("{schema} {MARKS}"))?;
        conn::sql(
            node,
            "SELECT spock.repset_add_all_tables('default', ARRAY['public'])",
        )?;
    }
    for s in nodes {
        for (p, dsn) in nodes.iter().zip(dsns) {
            if p.name != s.name {
                conn::subscribe(s, &sub_name(p, s), dsn)?;
            }
        }
    }
    for node in nodes {
        conn::wait_streams(node, nodes.len() - 1)?;
    }
    Ok(())
}

/// The subscription on `sub` that receives from `provider`.
pub fn sub_name(provider: &Node, sub: &Node) -> String {
    format!("sub_{}_{}", provider.name, sub.name)
}

/// Result of a convergence wait.
pub enum Convergence {
    /// Every node has every marker and the same digest; time since `since`.
    Converged(Duration),
    /// Every marker arrived, but the nodes hold different data.
    Diverged(Vec<String>),
    /// Markers still missing at the timeout.
    TimedOut(Vec<String>),
}

/// Writes marker `round` on every node, then waits until every node has all markers and
/// `digest` (a query over the data) gives the same answer everywhere.
pub fn converge(
    nodes: &[Node],
    round: u32,
    digest: &str,
    since: Instant,
    timeout: Duration,
) -> Result<Convergence> {
    for node in nodes {
        conn::sql(
            node,
            &format!("INSERT INTO marks VALUES ('{}', {round})", node.name),
        )?;
    }
    let count = format!("SELECT count(*) FROM marks WHERE n = {round}");
    let all_marks = || {
        nodes
            .iter()
            .all(|n| conn::int(n, &count).is_ok_and(|c| c == nodes.len() as i64))
    };
    let digests = || -> Vec<String> {
        nodes
            .iter()
            .map(|n| conn::sql(n, digest).unwrap_or_else(|e| format!("error: {e}")))
            .collect()
    };
    let same = |d: &[String]| d.iter().all(|x| *x == d[0] && !x.starts_with("error"));
    let remaining = timeout.saturating_sub(since.elapsed());
    if conn::poll(remaining, all_marks).is_none() {
        let have = nodes
            .iter()
            .map(|n| {
                let c = conn::sql(n, &count).unwrap_or_else(|e| format!("error: {e}"));
                format!("{}: {c} markers", n.name)
            })
            .collect();
        return Ok(Convergence::TimedOut(have));
    }
    // Once every marker is in, all earlier changes are applied everywhere: differences left
    // now are for good (a few seconds of grace for a digest query racing a last commit).
    if conn::poll(Duration::from_secs(5), || same(&digests())).is_some() {
        Ok(Convergence::Converged(since.elapsed()))
    } else {
        Ok(Convergence::Diverged(digests()))
    }
}

/// Puts a convergence result into the scenario's figures and goals.
pub fn record(out: &mut Outcome, c: &Convergence) {
    match c {
        Convergence::Converged(took) => out.figure(format!("converged in {}", secs(*took))),
        Convergence::Diverged(digests) => {
            out.figure("DIVERGED");
            out.goal(false, format!("nodes differ: {}", digests.join(" | ")));
        }
        Convergence::TimedOut(have) => {
            out.figure("not converged");
            out.goal(
                false,
                format!("no convergence before the timeout: {}", have.join(", ")),
            );
        }
    }
}

/// Every id of `table` on `node`.
pub fn ids(node: &Node, table: &str) -> Result<BTreeSet<i64>> {
    conn::sql(node, &format!("SELECT id FROM {table}"))?
        .lines()
        .map(|l| Ok(l.trim().parse()?))
        .collect()
}

/// Acknowledged ids missing on any node (summed over nodes).
pub fn lost(nodes: &[Node], table: &str, acked: &[i64]) -> Result<usize> {
    let mut lost = 0;
    for node in nodes {
        let have = ids(node, table)?;
        lost += acked.iter().filter(|i| !have.contains(i)).count();
    }
    Ok(lost)
}

/// Watches the `status` of subscriptions over time and keeps the changes, as
/// `node/sub: replicating → down at 10.3 s`.
pub struct StatusLog {
    started: Instant,
    last: Vec<String>,
    pub changes: Vec<String>,
    /// Whether any sample showed a status other than `replicating`.
    pub left_replicating: bool,
}

impl StatusLog {
    pub fn new() -> StatusLog {
        StatusLog {
            started: Instant::now(),
            last: Vec::new(),
            changes: Vec::new(),
            left_replicating: false,
        }
    }

    /// Samples `watch` (subscriber node, subscription name) once.
    pub fn sample(&mut self, watch: &[(&Node, String)]) {
        for (i, (node, sub)) in watch.iter().enumerate() {
            let now = conn::sub_status(node, sub);
            let now = now.lines().next().unwrap_or("").to_string();
            self.left_replicating |= now != "replicating";
            match self.last.get(i) {
                None => {
                    self.changes.push(format!("{}/{sub}: {now}", node.name));
                    self.last.push(now);
                }
                Some(before) if *before != now => {
                    self.changes.push(format!(
                        "{}/{sub}: {before} → {now} at {}",
                        node.name,
                        secs(self.started.elapsed())
                    ));
                    self.last[i] = now;
                }
                Some(_) => {}
            }
        }
    }
}
