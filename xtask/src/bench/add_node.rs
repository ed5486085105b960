//! `spock.add_node` of a fourth node to a 3-node mesh holding N rows (`PGEDGE_BENCH_ROWS`,
//! default 1,000,000) while every node writes at a fixed rate, against copying the same data
//! with `pg_dump | pg_restore` alone in the same run. Reported: the time ratio (goal: at most
//! 1.5×) and the existing nodes' commit latency p99 before and during the add (goal: within 2×).

use anyhow::{Context, Result, bail};
use harness::{Cluster, ClusterOptions, Node};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A stretch of time, in µs since the epoch.
type Window = (u128, u128);

/// Writes per second on each old node (2 clients).
const RATE: u32 = 50;
const BEFORE_SECONDS: u64 = 10;

const WRITER: &str = "\\set k random(1, 1000)\n\
     INSERT INTO w(node, id, k) VALUES (:node, nextval('w_ids'), :k);\n";

pub fn run(kernel: &harness::Kernel) -> Result<()> {
    let rows: u64 = std::env::var("PGEDGE_BENCH_ROWS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1_000_000);
    let cluster = Cluster::start(kernel, &super::durable(ClusterOptions::default().nodes(5)))?;
    let schema = "CREATE TABLE data(id bigint PRIMARY KEY, v text, n int); \
                  CREATE TABLE w(node int, id bigint, k int, PRIMARY KEY (node, id)); \
                  CREATE SEQUENCE w_ids;";
    for (i, n) in cluster.nodes.iter().enumerate() {
        n.sql("CREATE EXTENSION spock")?;
        if i >= 3 {
            continue;
        }
        n.sql(&format!(
            "SELECT spock.node_create('n{}', '{}')",
            i + 1,
            n.dsn("postgres")
        ))?;
        n.sql(schema)?;
        n.sql("SELECT spock.repset_add_all_tables('default', ARRAY['public'])")?;
    }
    for (i, s) in cluster.nodes.iter().enumerate().take(3) {
        for (j, p) in cluster.nodes.iter().enumerate().take(3) {
            if i != j {
                s.sql(&format!(
                    "SELECT spock.sub_create('sub_n{}_n{}', '{}')",
                    j + 1,
                    i + 1,
                    p.dsn("postgres")
                ))?;
            }
        }
    }
    for n in cluster.nodes.iter().take(3) {
        super::until(
            n,
            "SELECT count(*) FROM pg_replication_slots WHERE active",
            "2",
            Instant::now(),
        )?;
    }
    let n1 = cluster.node(0);
    n1.sql(&format!(
        "INSERT INTO data SELECT g, md5(g::text), g % 100 FROM generate_series(1, {rows}) g"
    ))?;
    for n in cluster.nodes.iter().take(3) {
        super::until(
            n,
            "SELECT count(*) FROM data",
            &rows.to_string(),
            Instant::now(),
        )?;
    }
    println!(
        "add a node to a 3-node mesh holding {rows} rows, {RATE} writes/s on each node, PostgreSQL {}",
        kernel.major
    );

    // pgbench's logs go next to the cluster's data (removed with it).
    let dir = cluster.dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    let dir = dir.as_path();
    let script = dir.join("writer.sql");
    std::fs::write(&script, WRITER)?;

    // Latency before: a quiet stretch of writes.
    let before: Vec<Child> = (0..3)
        .map(|i| {
            writer(
                cluster.node(i),
                i + 1,
                &script,
                dir,
                "before",
                BEFORE_SECONDS,
            )
        })
        .collect::<Result<_>>()?;
    wait_all(before)?;
    let p99_before = p99(dir, "before", (0, u128::MAX))?;

    // The baseline and the add, both under the same writes.
    let writers: Vec<Child> = (0..3)
        .map(|i| writer(cluster.node(i), i + 1, &script, dir, "during", 3600))
        .collect::<Result<_>>()?;
    let outcome = (|| -> Result<(Duration, Window, Duration, Window)> {
        std::thread::sleep(Duration::from_secs(2));
        let dump_started = now_us();
        let dump = dump_restore(n1, cluster.node(4))?;
        let dump_window = (dump_started, now_us());
        let started = now_us();
        let t = Instant::now();
        let out = cluster
            .node(3)
            .client("psql", "postgres")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "postgres", "-c"])
            .arg(format!(
                "CALL spock.add_node('n1', '{}', 'n4', '{}', verb := true)",
                n1.dsn("postgres"),
                cluster.node(3).dsn("postgres")
            ))
            .output()
            .context("cannot run psql")?;
        let add = t.elapsed();
        let said = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!("add_node failed: {said}");
        }
        // Its verbose lines: where the time went.
        for line in said.lines().filter(|l| l.contains("add_node")) {
            println!("    {}", line.trim_start_matches("NOTICE:  "));
        }
        Ok((dump, dump_window, add, (started, now_us())))
    })();
    // Stop the writers gently (SIGINT: pgbench writes its logs out), also after a failure.
    for w in &writers {
        Command::new("kill")
            .args(["-INT", &w.id().to_string()])
            .status()
            .context("cannot signal pgbench")?;
    }
    for mut w in writers {
        w.wait()?;
    }
    let (dump, dump_window, add, window) = outcome?;
    let p99_during = p99(dir, "during", window)?;
    let p99_dump = p99(dir, "during", dump_window)?;
    // The new node holds every row: the copy and every write of the old nodes.
    let data = n1.sql("SELECT count(*) FROM data")?;
    let mut writes = 0u64;
    for i in 0..3 {
        writes += cluster
            .node(i)
            .sql(&format!("SELECT count(*) FROM w WHERE node = {}", i + 1))?
            .parse::<u64>()?;
    }
    super::until(
        cluster.node(3),
        "SELECT count(*) FROM data",
        &data,
        Instant::now(),
    )?;
    for n in cluster.nodes.iter().take(4) {
        super::until(
            n,
            "SELECT count(*) FROM w",
            &writes.to_string(),
            Instant::now(),
        )?;
    }
    let ratio = add.as_secs_f64() / dump.as_secs_f64();
    println!(
        "{:<40} add_node {:>8.2} s  pg_dump|pg_restore {:>8.2} s  ratio {ratio:.2}x  ({} goal 1.50x)",
        "time to add the node",
        add.as_secs_f64(),
        dump.as_secs_f64(),
        if ratio <= 1.5 { "meets" } else { "ABOVE" }
    );
    let lat = p99_during.as_secs_f64() / p99_before.as_secs_f64();
    println!(
        "{:<40} before {:>8.1} ms  during {:>8.1} ms  ratio {lat:.2}x  ({} goal 2.00x)",
        "commit latency p99, existing nodes",
        p99_before.as_secs_f64() * 1000.0,
        p99_during.as_secs_f64() * 1000.0,
        if lat <= 2.0 { "meets" } else { "ABOVE" }
    );
    // The same machine's cost of any bulk copy: the old nodes' latency while pg_dump |
    // pg_restore ran.
    println!(
        "{:<40} before {:>8.1} ms  during {:>8.1} ms  ratio {:.2}x",
        "  (the same during pg_dump|pg_restore)",
        p99_before.as_secs_f64() * 1000.0,
        p99_dump.as_secs_f64() * 1000.0,
        p99_dump.as_secs_f64() / p99_before.as_secs_f64()
    );
    println!("every node holds all {writes} writes; n4 holds the {data} rows of data");
    Ok(())
}

/// pgbench writing at `RATE` on `node`, logging every transaction under `dir/<phase>_<id>`.
fn writer(
    node: &Node,
    id: usize,
    script: &Path,
    dir: &Path,
    phase: &str,
    secs: u64,
) -> Result<Child> {
    node.client("pgbench", "postgres")
        .args(["-n", "-c", "2", "-R", &RATE.to_string(), "-l", "-D"])
        .arg(format!("node={id}"))
        .arg(format!(
            "--log-prefix={}",
            dir.join(format!("{phase}_{id}")).display()
        ))
        .args(["-T", &secs.to_string(), "-f"])
        .arg(script)
        .arg("postgres")
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot run pgbench")
}

fn wait_all(children: Vec<Child>) -> Result<()> {
    for mut c in children {
        if !c.wait()?.success() {
            bail!("pgbench failed");
        }
    }
    Ok(())
}

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

/// The 99th percentile of the commit latencies pgbench logged under `dir/<phase>_*` for
/// transactions that started within `window` (epoch µs); pgbench's own lag behind its
/// schedule is left out.
fn p99(dir: &Path, phase: &str, window: Window) -> Result<Duration> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with(&format!("{phase}_"))
        {
            continue;
        }
        for line in std::fs::read_to_string(entry.path())?.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(total), Some(epoch), Some(frac)) = (
                f.get(2).and_then(|v| v.parse::<u128>().ok()),
                f.get(4).and_then(|v| v.parse::<u128>().ok()),
                f.get(5).and_then(|v| v.parse::<u128>().ok()),
            ) else {
                continue;
            };
            let lag = f.get(6).and_then(|v| v.parse::<u128>().ok()).unwrap_or(0);
            let us = total.saturating_sub(lag);
            let start = (epoch * 1_000_000 + frac).saturating_sub(total);
            if start >= window.0 && start <= window.1 {
                all.push(us);
            }
        }
    }
    if all.is_empty() {
        bail!("pgbench logged no {phase} transactions");
    }
    all.sort_unstable();
    let at = ((all.len() as f64) * 0.99).ceil() as usize;
    Ok(Duration::from_micros(all[at.min(all.len()) - 1] as u64))
}

/// Copies `data` from `from` to `to` with `pg_dump -Fc | pg_restore` (schema and data, the
/// same table add_node copies); returns how long it took.
fn dump_restore(from: &Node, to: &Node) -> Result<Duration> {
    let t = Instant::now();
    let mut dump = from
        .client("pg_dump", "postgres")
        .args(["-Fc", "-t", "public.data", "-d", "postgres"])
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run pg_dump")?;
    let restore = Command::new(to.kernel().bin("pg_restore"))
        .envs(to.kernel().env())
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", to.port.to_string())
        .env("PGUSER", "postgres")
        .args(["-d", "postgres", "--no-owner"])
        .stdin(dump.stdout.take().context("pg_dump has no stdout")?)
        .output()
        .context("cannot run pg_restore")?;
    if !dump.wait()?.success() || !restore.status.success() {
        bail!(
            "pg_dump | pg_restore failed: {}",
            String::from_utf8_lossy(&restore.stderr)
        );
    }
    Ok(t.elapsed())
}
