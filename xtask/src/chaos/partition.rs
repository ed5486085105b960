//! `partition`: a 3-node mesh whose nodes reach each other only through network namespaces
//! (see `netns`); one node is cut off while every node keeps taking writes, then the network
//! heals. Measured: seconds from the heal until every node holds the same rows, and rows lost.
//! The harness starts servers with pg_ctl in the machine's namespace, so this scenario stops
//! them again and starts each inside its own namespace, listening on its 10.77.0.x address;
//! clients still reach every node through its Unix socket, which no partition cuts.

use super::{Budget, Outcome, conn, mesh, netns::Net, pause::DIGEST, secs, writer::Writer};
use anyhow::{Context, Result};
use harness::{Cluster, ClusterOptions, Node, StopMode};
use std::{
    io::Write,
    time::{Duration, Instant},
};
use xshell::{Shell, cmd};

const RATE: u32 = 100;

pub fn run(kernel: &harness::Kernel, b: &Budget) -> Result<Outcome> {
    let net = match Net::create(3) {
        Ok(net) => net,
        Err(e) => {
            return Ok(Outcome {
                skipped: Some(format!("network namespaces unavailable ({e:#})")),
                ..Outcome::default()
            });
        }
    };
    let cluster = Cluster::start(kernel, &ClusterOptions::default().nodes(3))?;
    let nodes = &cluster.nodes;
    for (i, n) in nodes.iter().enumerate() {
        n.stop(StopMode::Fast)?;
        n.configure("listen_addresses", &format!("'{}'", Net::addr(i)))?;
        let mut hba = std::fs::OpenOptions::new()
            .append(true)
            .open(n.data.join("pg_hba.conf"))?;
        writeln!(hba, "host all all 10.77.0.0/24 trust")?;
        writeln!(hba, "host replication all 10.77.0.0/24 trust")?;
    }
    // Declared after the cluster, so dropped first: servers stop before the directories go.
    let _running = Running(nodes);
    for (i, n) in nodes.iter().enumerate() {
        start_in(&net.ns(i), n)?;
    }
    let dsns: Vec<String> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "host={} port={} dbname=postgres user=postgres",
                Net::addr(i),
                n.port
            )
        })
        .collect();
    mesh::build(nodes, &dsns, "CREATE TABLE acked(id bigint PRIMARY KEY);")?;

    let mut out = Outcome::default();
    let writers: Vec<Writer> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| Writer::start(n, "acked", (i as i64 + 1) * 1_000_000_000, RATE))
        .collect();
    std::thread::sleep(Duration::from_secs(3));

    let cut = 2;
    let lonely = &nodes[cut];
    let watch: Vec<_> = nodes
        .iter()
        .filter(|n| n.name != lonely.name)
        .map(|n| (n, mesh::sub_name(lonely, n)))
        .collect();
    let mut statuses = mesh::StatusLog::new();
    statuses.sample(&watch);
    net.cut(cut)?;
    let started = Instant::now();
    while started.elapsed() < b.partition {
        std::thread::sleep(Duration::from_secs(1));
        statuses.sample(&watch);
    }
    // Proof that the cut held: how far the others fell behind the lonely node's writes.
    let lonely_max = writers[cut].last_acked();
    let first = (cut as i64 + 1) * 1_000_000_000;
    let seen = conn::int(
        &nodes[0],
        &format!(
            "SELECT coalesce(max(id), {}) FROM acked WHERE id >= {first}",
            first - 1
        ),
    )?;
    net.heal(cut)?;
    let healed = Instant::now();
    let tallies: Vec<_> = writers.into_iter().map(Writer::finish).collect();

    let c = mesh::converge(nodes, 1, DIGEST, healed, b.converge_timeout)?;
    out.figure(format!(
        "{} cut off {}; status seen: {}",
        lonely.name,
        secs(b.partition),
        statuses.changes.join(", ")
    ));
    out.figure(format!(
        "at the heal {} lacked {} of {}'s rows",
        nodes[0].name,
        lonely_max - seen,
        lonely.name
    ));
    out.goal(
        lonely_max - seen > i64::from(RATE),
        "the cut did not stop replication (test setup problem)",
    );
    mesh::record(&mut out, &c);
    let acked: Vec<i64> = tallies
        .iter()
        .flat_map(|t| t.acked.iter().copied())
        .collect();
    let lost = mesh::lost(nodes, "acked", &acked)?;
    out.figure(format!("acked {}, lost {lost}", acked.len()));
    out.goal(lost == 0, format!("lost {lost} acknowledged rows (goal 0)"));
    out.keep_logs(nodes);
    Ok(out)
}

/// Starts `node`'s server inside namespace `ns`, as the harness's server account.
fn start_in(ns: &str, node: &Node) -> Result<()> {
    let user = std::env::var("PGEDGE_TEST_USER").unwrap_or_else(|_| "nobody".into());
    let sh = Shell::new()?;
    // The server account may not be able to enter the repository; the harness uses the temp dir.
    sh.change_dir(std::env::temp_dir());
    let (pg_ctl, data, log) = (node.kernel().bin("pg_ctl"), &node.data, &node.log);
    let mut c = cmd!(
        sh,
        "ip netns exec {ns} runuser -u {user} -- {pg_ctl} start -w -t 60 -D {data} -l {log}"
    )
    .quiet()
    .ignore_stdout();
    for (k, v) in node.kernel().env() {
        c = c.env(k, v);
    }
    c.run().with_context(|| {
        format!(
            "{} did not start in {ns}:\n{}",
            node.name,
            node.log_tail(20)
        )
    })
}

/// Stops the servers this scenario started itself (the harness does not know they run).
struct Running<'a>(&'a [Node]);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        for n in self.0 {
            if n.stop(StopMode::Fast).is_err() {
                let _ = n.stop(StopMode::Immediate);
            }
        }
    }
}
