//! `storm`: every node of a 3-node mesh runs conflicting INSERT/UPDATE/DELETE and DELETE +
//! re-INSERT on the same 50 keys, unthrottled, for a while (the script of the
//! `conflicting_storm_converges` test). Then: do all nodes hold the same rows, how long after
//! the writers stopped, and did any apply worker restart on the way (distinct apply pids seen
//! while sampling, and worker exits in the server logs).

use super::{Budget, Outcome, conn, mesh, secs};
use anyhow::{Result, bail};
use harness::{Cluster, ClusterOptions, Node};
use std::{
    collections::BTreeSet,
    process::Stdio,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

/// The node's name comes from `application_name` (set per pgbench through PGAPPNAME), so the
/// winner of each key is visible in the data.
const SCRIPT: &str = "\\set k random(1, 50)\n\
\\set op random(1, 4)\n\
\\if :op = 1\n\
INSERT INTO kv VALUES (:k, 'i' || :client_id, current_setting('application_name')) ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v || 'u', who = EXCLUDED.who;\n\
\\elif :op = 2\n\
UPDATE kv SET v = v || '+', who = current_setting('application_name') WHERE id = :k;\n\
\\elif :op = 3\n\
DELETE FROM kv WHERE id = :k;\n\
\\else\n\
BEGIN;\n\
DELETE FROM kv WHERE id = :k;\n\
INSERT INTO kv VALUES (:k, 'r' || :client_id, current_setting('application_name')) ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v, who = EXCLUDED.who;\n\
END;\n\
\\endif\n";

/// How soon after the writers stop every node must hold the same rows.
const CONVERGE_GOAL: Duration = Duration::from_secs(5);

const DIGEST: &str = "SELECT count(*) || ':' || md5(coalesce(string_agg(format('%s=%s/%s', id, v, who), ' ' ORDER BY id), '')) FROM kv";
const APPLY_PIDS: &str = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'spock apply'";

pub fn run(kernel: &harness::Kernel, b: &Budget) -> Result<Outcome> {
    // Resolutions are counted only to show that the storm really conflicted.
    let cluster = Cluster::start(
        kernel,
        &ClusterOptions::default()
            .nodes(3)
            .setting("spock.save_resolutions", "on"),
    )?;
    let nodes = &cluster.nodes;
    let dsns: Vec<String> = nodes.iter().map(|n| n.dsn("postgres")).collect();
    mesh::build(
        nodes,
        &dsns,
        "CREATE TABLE kv(id int PRIMARY KEY, v text, who text);",
    )?;
    let script = cluster.dir().join("storm.sql");
    std::fs::write(&script, SCRIPT)?;
    let mut out = Outcome::default();

    let mut pids = BTreeSet::new();
    for n in nodes {
        pids.extend(apply_pids(n));
    }
    let at_start = pids.len();
    let exits_before: usize = nodes.iter().map(apply_exits).sum();
    let secs_arg = b.storm.as_secs().to_string();
    let clients: Vec<_> = nodes
        .iter()
        .map(|n| {
            conn::client(n, "pgbench")
                .env("PGAPPNAME", &n.name)
                .args(["-n", "-c", "2", "-T", &secs_arg, "--max-tries=20", "-f"])
                .arg(&script)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    // Sample the apply workers' pids while the storm goes on: a restart shows as a new pid.
    let done = AtomicBool::new(false);
    let results = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut seen = BTreeSet::new();
            while !done.load(Ordering::SeqCst) {
                for n in nodes {
                    seen.extend(apply_pids(n));
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            seen
        });
        let results: Vec<_> = clients.into_iter().map(|c| c.wait_with_output()).collect();
        done.store(true, Ordering::SeqCst);
        pids.extend(sampler.join().expect("sampler thread"));
        results
    });
    let stopped = Instant::now();
    let mut transactions = 0u64;
    for (n, r) in nodes.iter().zip(results) {
        let r = r?;
        let text =
            String::from_utf8_lossy(&r.stdout).into_owned() + &String::from_utf8_lossy(&r.stderr);
        if !r.status.success() {
            bail!("pgbench on {} failed:\n{text}", n.name);
        }
        transactions += text
            .lines()
            .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
    }

    let c = mesh::converge(nodes, 1, DIGEST, stopped, b.converge_timeout)?;
    out.figure(format!(
        "{} storm, {transactions} transactions",
        secs(b.storm)
    ));
    mesh::record(&mut out, &c);
    if let mesh::Convergence::Converged(took) = c {
        out.goal(
            took <= CONVERGE_GOAL,
            format!(
                "converged {} after the writers stopped (goal {})",
                secs(took),
                secs(CONVERGE_GOAL)
            ),
        );
    }
    // A storm resolves conflicts by the thousand: the log gets a bounded number of lines.
    let lines: Vec<String> = nodes
        .iter()
        .map(|n| {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            format!("{} {}", n.name, text.matches("CONFLICT: remote").count())
        })
        .collect();
    out.figure(format!("conflict log lines: {}", lines.join(", ")));
    for n in nodes {
        pids.extend(apply_pids(n));
    }
    let restarts = pids.len() - at_start;
    let exits = nodes.iter().map(apply_exits).sum::<usize>() - exits_before;
    out.figure(format!(
        "apply worker restarts {restarts} (new pids), {exits} worker exits logged"
    ));
    out.goal(
        restarts == 0 && exits == 0,
        format!(
            "apply workers restarted during the storm ({restarts} new pids, {exits} exits logged)"
        ),
    );
    let conflicts = conn::sql(&nodes[0], "SELECT count(*) FROM spock.resolutions")
        .unwrap_or_else(|_| "?".into());
    out.figure(format!("{conflicts} resolutions logged on n1"));
    out.keep_logs(&cluster.nodes);
    cluster.stop()?;
    Ok(out)
}

fn apply_pids(node: &Node) -> Vec<u32> {
    conn::sql(node, APPLY_PIDS)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Apply workers that ended, as the postmaster logs them
/// (`background worker "spock apply …" (PID n) exited with exit code 1`, or `was terminated by
/// signal 11` for a crash).
fn apply_exits(node: &Node) -> usize {
    std::fs::read_to_string(&node.log)
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.contains("\"spock apply")
                && (l.contains("exited with") || l.contains("terminated by signal"))
        })
        .count()
}
