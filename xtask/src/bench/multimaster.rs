//! A 3-node mesh where every node takes writes: spock (each node subscribed to the two
//! others) against native logical replication in a bidirectional `origin = none` mesh on the
//! same three servers (PostgreSQL 16 and later; 15 has no `origin` option). Reported: total
//! committed writes per second while every node writes, and the time until all nodes hold
//! every row once the writes stop.

use super::{pgbench_tps, report, until};
use anyhow::Result;
use harness::{Cluster, ClusterOptions};
use std::time::{Duration, Instant};

const NODES: usize = 3;
const SECONDS: u32 = 15;
const CLIENTS: u32 = 2;
const STORM_SECONDS: u64 = 60;

pub fn run(kernel: &harness::Kernel) -> Result<()> {
    let cluster = Cluster::start(
        kernel,
        &super::durable(ClusterOptions::default().nodes(NODES)),
    )?;
    for (i, n) in cluster.nodes.iter().enumerate() {
        n.sql("CREATE EXTENSION spock")?;
        n.sql(&format!(
            "SELECT spock.node_create('n{}', '{}')",
            i + 1,
            n.dsn("postgres")
        ))?;
        // Each node numbers its rows differently, so the native mesh sees no conflicts.
        n.sql(&format!(
            "CREATE TABLE mm_spock(id bigint PRIMARY KEY, v text); \
             CREATE TABLE mm_native(id bigint PRIMARY KEY, v text); \
             CREATE SEQUENCE mm_seq START {} INCREMENT {NODES};",
            i + 1
        ))?;
        n.sql("SELECT spock.repset_add_table('default', 'mm_spock')")?;
        n.sql("CREATE PUBLICATION mm_pub FOR TABLE mm_native")?;
    }
    for (i, s) in cluster.nodes.iter().enumerate() {
        for (j, p) in cluster.nodes.iter().enumerate() {
            if i == j {
                continue;
            }
            s.sql(&format!(
                "SELECT spock.sub_create('sub_{j}_{i}', '{}')",
                p.dsn("postgres")
            ))?;
            if kernel.major >= 16 {
                s.sql(&format!(
                    "CREATE SUBSCRIPTION mm_{j}_{i} CONNECTION '{}' PUBLICATION mm_pub \
                     WITH (copy_data = false, origin = none)",
                    p.dsn("postgres")
                ))?;
            }
        }
    }
    let streams = if kernel.major >= 16 { 4 } else { 2 };
    for n in &cluster.nodes {
        until(
            n,
            "SELECT count(*) FROM pg_replication_slots WHERE active",
            &streams.to_string(),
            Instant::now(),
        )?;
    }
    println!(
        "3-node mesh, every node writing ({CLIENTS} clients each, {SECONDS} s), PostgreSQL {}",
        kernel.major
    );
    let (spock_rate, spock_converge) = load(&cluster, "mm_spock")?;
    if kernel.major < 16 {
        println!(
            "spock: {spock_rate:.1} writes/s, converged {:.2} s after the writes stopped \
             (native origin = none needs PostgreSQL 16+: no baseline)",
            spock_converge.as_secs_f64()
        );
    } else {
        let (native_rate, native_converge) = load(&cluster, "mm_native")?;
        report(
            "committed writes/s, all nodes",
            "w/s",
            spock_rate,
            native_rate,
            1.0,
        );
        // Lower is better: report native/ours so that > 1 means faster convergence.
        report(
            "convergence speed (1/s after stop)",
            "1/s",
            1.0 / spock_converge.as_secs_f64().max(0.001),
            1.0 / native_converge.as_secs_f64().max(0.001),
            1.0,
        );
        println!(
            "converged after the writes stopped: spock {:.2} s, native {:.2} s",
            spock_converge.as_secs_f64(),
            native_converge.as_secs_f64()
        );
    }
    cluster.stop()?;

    // Conflicts: every node rewrites the same 50 keys (native logical replication has no
    // conflict resolution, so there is no baseline); goal: converged within 5 s of the stop.
    let storm = crate::chaos::storm_outcome(kernel, STORM_SECONDS)?;
    println!(
        "conflict storm, 3 nodes x 2 clients on 50 keys for {STORM_SECONDS} s: {}",
        storm.figures.join("; ")
    );
    if !storm.failures.is_empty() {
        println!("  BELOW goal: {}", storm.failures.join("; "));
    }
    Ok(())
}

/// Every node writes into `table` at once; returns the total committed writes per second and
/// the time from the end of the writes until every node holds every row.
fn load(cluster: &Cluster, table: &str) -> Result<(f64, Duration)> {
    let script = format!("INSERT INTO {table} VALUES (nextval('mm_seq'), 'x');\n");
    let tps: Vec<f64> = std::thread::scope(|scope| {
        let handles: Vec<_> = cluster
            .nodes
            .iter()
            .map(|n| {
                let script = &script;
                scope.spawn(move || {
                    pgbench_tps(
                        n,
                        cluster.dir(),
                        &format!("{table}_{}", n.name),
                        script,
                        CLIENTS,
                        SECONDS,
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("pgbench thread"))
            .collect::<Result<Vec<_>>>()
    })?;
    let stopped = Instant::now();
    let total: i64 = cluster
        .nodes
        .iter()
        .map(|n| {
            n.sql(&format!(
                "SELECT count(*) FROM {table} WHERE id % {NODES} = {} % {NODES}",
                n.name.trim_start_matches('n')
            ))
            .map(|c| c.parse::<i64>().unwrap_or(0))
        })
        .sum::<Result<i64>>()?;
    let mut converged = Duration::ZERO;
    for n in &cluster.nodes {
        converged = converged.max(until(
            n,
            &format!("SELECT count(*) FROM {table}"),
            &total.to_string(),
            stopped,
        )?);
    }
    Ok((tps.iter().sum(), converged))
}
