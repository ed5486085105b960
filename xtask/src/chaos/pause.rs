//! `pause`: a 3-node mesh with writes on every node; one node's postmaster and all its children
//! get SIGSTOP for a while — a node that hangs without closing its connections, which only
//! timeouts can notice. Recorded meanwhile: what `spock.sub_show_status()` on the other nodes
//! says about their subscriptions from the frozen node (the goal: not `replicating` for ever).
//! Then SIGCONT, and seconds until every node holds the same rows.

use super::{Budget, Outcome, conn, mesh, procs, secs, writer::Writer};
use anyhow::Result;
use harness::{Cluster, ClusterOptions};
use std::time::{Duration, Instant};

/// Per-node write rate: 3 × 100 rows/s in all.
const RATE: u32 = 100;
pub const DIGEST: &str = "SELECT count(*) || ':' || coalesce(sum(id), 0) FROM acked";

pub fn run(kernel: &harness::Kernel, b: &Budget) -> Result<Outcome> {
    let cluster = Cluster::start(kernel, &ClusterOptions::default().nodes(3))?;
    let nodes = &cluster.nodes;
    let dsns: Vec<String> = nodes.iter().map(|n| n.dsn("postgres")).collect();
    mesh::build(nodes, &dsns, "CREATE TABLE acked(id bigint PRIMARY KEY);")?;
    let mut out = Outcome::default();
    let writers: Vec<Writer> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| Writer::start(n, "acked", (i as i64 + 1) * 1_000_000_000, RATE))
        .collect();
    std::thread::sleep(Duration::from_secs(3));

    let frozen = &nodes[1];
    let watch: Vec<_> = nodes
        .iter()
        .filter(|n| n.name != frozen.name)
        .map(|n| (n, mesh::sub_name(frozen, n)))
        .collect();
    let mut statuses = mesh::StatusLog::new();
    statuses.sample(&watch);
    let stopped = procs::freeze(frozen)?;
    let paused = Instant::now();
    while paused.elapsed() < b.pause {
        std::thread::sleep(Duration::from_secs(1));
        statuses.sample(&watch);
    }
    procs::thaw(&stopped)?;
    let resumed = Instant::now();
    let tallies: Vec<_> = writers.into_iter().map(Writer::finish).collect();

    let c = mesh::converge(nodes, 1, DIGEST, resumed, b.converge_timeout)?;
    out.figure(format!(
        "{} frozen {}; status seen: {}",
        frozen.name,
        secs(b.pause),
        statuses.changes.join(", ")
    ));
    mesh::record(&mut out, &c);
    let acked: Vec<i64> = tallies
        .iter()
        .flat_map(|t| t.acked.iter().copied())
        .collect();
    let lost = mesh::lost(nodes, "acked", &acked)?;
    out.figure(format!("acked {}, lost {lost}", acked.len()));
    out.goal(lost == 0, format!("lost {lost} acknowledged rows (goal 0)"));
    out.goal(
        statuses.left_replicating,
        format!(
            "the other nodes showed their subscriptions from the frozen {} as `replicating` \
             throughout the {} pause",
            frozen.name,
            secs(b.pause)
        ),
    );
    // After the thaw every subscription should be streaming again.
    let all = "SELECT string_agg(status, ',') FROM spock.sub_show_status()";
    let back = conn::poll(Duration::from_secs(60), || {
        nodes
            .iter()
            .all(|n| conn::sql(n, all).is_ok_and(|s| s == "replicating,replicating"))
    });
    match back {
        Some(_) => out.figure(format!(
            "all subscriptions replicating {} after SIGCONT",
            secs(resumed.elapsed())
        )),
        None => out.goal(
            false,
            "subscriptions not all `replicating` 60 s after the thaw",
        ),
    }
    out.keep_logs(&cluster.nodes);
    cluster.stop()?;
    Ok(out)
}
