//! `spockctrl table-diff` on a 1M-row table held by two nodes with 10 rows different, against
//! the cheapest full comparison there is: one `md5(string_agg(t::text, '' ORDER BY id))` scan
//! per node, both nodes at once, in the same run. Also spockctrl's peak memory.

use anyhow::{Context, Result, bail};
use harness::{Cluster, ClusterOptions, Kernel, Node};
use std::{
    process::Command,
    time::{Duration, Instant},
};

const ROWS: u64 = 1_000_000;
const ROUNDS: usize = 3;
/// table-diff may take at most this multiple of the scan.
const GOAL_RATIO: f64 = 2.0;
const GOAL_RSS_MB: f64 = 100.0;

fn load(n: &Node, i: usize) -> Result<()> {
    n.sql("CREATE EXTENSION spock")?;
    n.sql(&format!(
        "SELECT spock.node_create('n{}', '{}')",
        i + 1,
        n.dsn("postgres")
    ))?;
    n.sql(&format!(
        "CREATE TABLE t (id int PRIMARY KEY, v text, n numeric, at timestamptz); \
         INSERT INTO t SELECT g, md5(g::text), g / 7.0, '2025-01-01'::timestamptz + g * interval '1 s' \
           FROM generate_series(1, {ROWS}) g"
    ))?;
    // Its own statement: psql runs a multi-statement -c in one transaction.
    n.sql("VACUUM ANALYZE t")?;
    Ok(())
}

/// Both nodes' full-scan checksums at once; the wall time.
fn scan(nodes: &[Node]) -> Result<Duration> {
    let started = Instant::now();
    let sums: Vec<Result<String>> = std::thread::scope(|s| {
        let hs: Vec<_> = nodes
            .iter()
            .map(|n| {
                s.spawn(move || n.sql("SELECT md5(string_agg(t::text, '' ORDER BY id)) FROM t"))
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("scan thread"))
            .collect()
    });
    let elapsed = started.elapsed();
    let sums = sums.into_iter().collect::<Result<Vec<_>>>()?;
    if sums[0] == sums[1] {
        bail!("the nodes should differ");
    }
    Ok(elapsed)
}

/// One table-diff run: wall time and peak resident memory (MB) of the spockctrl process.
fn table_diff(kernel: &Kernel, dir: &std::path::Path) -> Result<(Duration, f64)> {
    let started = Instant::now();
    let child = Command::new(kernel.bin("spockctrl"))
        .args([
            "--spec",
            "spec.json",
            "-f",
            "json",
            "table-diff",
            "public.t",
        ])
        .envs(kernel.env())
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("cannot run spockctrl (is it staged in the kernel's bin/?)")?;
    let out = child.wait_with_output_rusage()?;
    let elapsed = started.elapsed();
    let (status, stdout, stderr, maxrss_kb) = out;
    if status != 2 {
        bail!("table-diff exited with {status}: {stderr}");
    }
    let report: serde_json::Value = serde_json::from_str(&stdout)?;
    let found = report["differences"].as_array().map_or(0, Vec::len);
    if found != 10 {
        bail!("table-diff found {found} differences, not 10: {stderr}");
    }
    Ok((elapsed, maxrss_kb as f64 / 1024.0))
}

trait WaitRusage {
    fn wait_with_output_rusage(self) -> Result<(i32, String, String, i64)>;
}

impl WaitRusage for std::process::Child {
    /// Reads the pipes, then reaps the child with `wait4` to get its own peak RSS.
    fn wait_with_output_rusage(mut self) -> Result<(i32, String, String, i64)> {
        use std::io::Read;
        let mut stdout = String::new();
        let mut stderr = String::new();
        let mut so = self.stdout.take().context("stdout")?;
        let mut se = self.stderr.take().context("stderr")?;
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = se.read_to_string(&mut s);
            s
        });
        so.read_to_string(&mut stdout)?;
        stderr.push_str(&reader.join().unwrap_or_default());
        let mut status = 0;
        // SAFETY: rusage is plain data that wait4 fills in; zeroed is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `self.id()` is our unreaped child; the pointers are valid for the call.
        let r = unsafe { libc::wait4(self.id() as libc::pid_t, &mut status, 0, &mut usage) };
        if r < 0 {
            bail!("wait4 failed: {}", std::io::Error::last_os_error());
        }
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        };
        Ok((code, stdout, stderr, usage.ru_maxrss))
    }
}

pub fn run(kernel: &Kernel) -> Result<()> {
    let cluster = Cluster::start(
        kernel,
        &ClusterOptions::default()
            .nodes(2)
            .setting("shared_buffers", "256MB"),
    )?;
    let nodes = &cluster.nodes;
    std::thread::scope(|s| -> Result<()> {
        let hs: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| s.spawn(move || load(n, i)))
            .collect();
        for h in hs {
            h.join().expect("load thread")?;
        }
        Ok(())
    })?;
    // Ten rows different on n2, behind replication's back: 8 changed, 1 missing, 1 extra.
    nodes[1].sql(
        "UPDATE t SET v = 'changed' WHERE id IN (1, 99999, 250000, 333333, 500000, 640000, 777777, 1000000); \
         DELETE FROM t WHERE id = 424242; INSERT INTO t VALUES (1000001, 'extra', 0, now())",
    )?;
    let spec = serde_json::json!({
        "cluster_name": "bench",
        "pgedge": { "databases": [ { "db_name": "postgres", "db_user": "postgres" } ] },
        "node_groups": nodes.iter().map(|n| serde_json::json!({
            "name": n.name, "public_ip": "127.0.0.1", "port": n.port })).collect::<Vec<_>>()
    });
    std::fs::write(cluster.dir().join("spec.json"), spec.to_string())?;
    println!(
        "table-diff vs a full md5(string_agg) scan per node, {ROWS} rows on 2 nodes, 10 different, \
         PostgreSQL {} (best of {ROUNDS} interleaved rounds)",
        kernel.major
    );
    // Warm both nodes' caches once, so neither side pays for the first read.
    scan(nodes)?;
    let (mut ours, mut base, mut rss) = (Duration::MAX, Duration::MAX, 0f64);
    for _ in 0..ROUNDS {
        base = base.min(scan(nodes)?);
        let (t, mb) = table_diff(kernel, cluster.dir())?;
        ours = ours.min(t);
        rss = rss.max(mb);
    }
    let ratio = ours.as_secs_f64() / base.as_secs_f64();
    println!(
        "{:<40} table-diff {:>8.2} s  scan {:>8.2} s  ratio {ratio:.2}x  ({} goal <= {GOAL_RATIO:.1}x)",
        "time, 10 differences found",
        ours.as_secs_f64(),
        base.as_secs_f64(),
        if ratio <= GOAL_RATIO {
            "meets"
        } else {
            "MISSES"
        }
    );
    println!(
        "{:<40} {rss:>8.1} MB  ({} goal < {GOAL_RSS_MB:.0} MB)",
        "spockctrl peak RSS",
        if rss < GOAL_RSS_MB { "meets" } else { "MISSES" }
    );
    cluster.stop()?;
    Ok(())
}
