//! `spock.add_node` of a fourth node to a 3-node mesh holding N rows (`PGEDGE_BENCH_ROWS`,
//! default 1,000,000) while every node writes at a fixed rate, against copying the same data
//! with `pg_dump | pg_restore` alone in the same run. Reported: the time ratio (goal: at most
//! 1.5×) and the existing nodes' commit latency p99 during the add against quiet stretches of
//! the same run (goal: within 2×). It runs in rounds (`PGEDGE_BENCH_ROUNDS`, default 3; each
//! new node but the last leaves again with `remove_node`) and pools each kind of window's
//! latencies: one add lasts about two seconds, a few hundred commits, too few for a p99.

use anyhow::{Context, Result, bail};
use harness::{Cluster, ClusterOptions, Node};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A stretch of time, in µs since the epoch.
type Window = (u128, u128);

/// Writes per second on each old node (2 clients).
const RATE: u32 = 50;
/// The quiet stretch at the start of each round, the latency baseline.
const QUIET: Duration = Duration::from_secs(5);

const WRITER: &str = "\\set k random(1, 1000)\n\
     INSERT INTO w(node, id, k) VALUES (:node, nextval('w_ids'), :k);\n";

pub fn run(kernel: &harness::Kernel) -> Result<()> {
    let rows: u64 = env_or("PGEDGE_BENCH_ROWS", 1_000_000);
    let rounds: u32 = env_or("PGEDGE_BENCH_ROUNDS", 3).max(1);
    let cluster = Cluster::start(kernel, &super::durable(ClusterOptions::default().nodes(5)))?;
    let schema = "CREATE TABLE data(id bigint PRIMARY KEY, v text, n int); \
                  CREATE TABLE w(node int, id bigint, k int, PRIMARY KEY (node, id)); \
                  CREATE SEQUENCE w_ids;";
    for (i, n) in cluster.nodes.iter().enumerate().take(3) {
        n.sql("CREATE EXTENSION spock")?;
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
        // The load's aftermath (autovacuum of a million new rows, the checkpoint their WAL
        // calls for) would otherwise land in whichever window comes first.
        n.sql("VACUUM ANALYZE data")?;
        n.sql("CHECKPOINT")?;
    }
    println!(
        "add a node to a 3-node mesh holding {rows} rows, {RATE} writes/s on each node, \
         {rounds} rounds, PostgreSQL {}",
        kernel.major
    );

    // pgbench's logs go next to the cluster's data (removed with it).
    let dir = cluster.dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    let dir = dir.as_path();
    let script = dir.join("writer.sql");
    std::fs::write(&script, WRITER)?;

    // One set of writers for the whole run; each transaction's latency is sorted afterwards
    // into the window it started in: quiet, busy loops, pg_dump | pg_restore, or add_node.
    let writers: Vec<Child> = (0..3)
        .map(|i| writer(cluster.node(i), i + 1, &script, dir))
        .collect::<Result<_>>()?;
    std::thread::sleep(Duration::from_secs(2));
    let outcome: Result<Vec<Round>> = (1..=rounds)
        .map(|r| round(&cluster, r, r == rounds, &rows.to_string()))
        .collect();
    // Stop the writers, also after a failure, as their -T time running out would: pgbench
    // ends its run at SIGALRM and writes out its logs (SIGINT would kill it with the end of
    // its log still buffered, the last add window's commits among it).
    for w in &writers {
        Command::new("kill")
            .args(["-ALRM", &w.id().to_string()])
            .status()
            .context("cannot signal pgbench")?;
    }
    for mut w in writers {
        w.wait()?;
    }
    let rounds = outcome?;
    let latencies = logged_latencies(dir)?;
    let p99_of = |pick: fn(&Round) -> Window| {
        let windows: Vec<Window> = rounds.iter().map(pick).collect();
        p99(&latencies, &windows)
    };
    let p99_quiet = p99_of(|r| r.quiet)?;
    let p99_add = p99_of(|r| r.add.1)?;
    let p99_dump = p99_of(|r| r.dump.1)?;
    let p99_busy = p99_of(|r| r.busy)?;

    // Every write reached every node still in the mesh: the old ones and the last new one.
    let mut writes = 0u64;
    for i in 0..3 {
        writes += cluster
            .node(i)
            .sql(&format!("SELECT count(*) FROM w WHERE node = {}", i + 1))?
            .parse::<u64>()?;
    }
    let last_db = format!("add{}", rounds.len());
    for (n, db) in [
        (cluster.node(0), "postgres"),
        (cluster.node(1), "postgres"),
        (cluster.node(2), "postgres"),
        (cluster.node(3), last_db.as_str()),
    ] {
        super::until_in(
            n,
            db,
            "SELECT count(*) FROM w",
            &writes.to_string(),
            Instant::now(),
        )?;
    }

    for (i, r) in rounds.iter().enumerate() {
        println!(
            "  round {}: add_node {:.2} s, pg_dump|pg_restore {:.2} s",
            i + 1,
            r.add.0.as_secs_f64(),
            r.dump.0.as_secs_f64()
        );
    }
    let median = |pick: fn(&Round) -> Duration| {
        let mut all: Vec<f64> = rounds.iter().map(|r| pick(r).as_secs_f64()).collect();
        all.sort_by(f64::total_cmp);
        all[all.len() / 2]
    };
    let (add, dump) = (median(|r| r.add.0), median(|r| r.dump.0));
    let ratio = add / dump;
    println!(
        "{:<40} add_node {add:>8.2} s  pg_dump|pg_restore {dump:>8.2} s  ratio {ratio:.2}x  ({} goal 1.50x)",
        "time to add the node (medians)",
        if ratio <= 1.5 { "meets" } else { "ABOVE" }
    );
    let lat = latency_line("commit latency p99, existing nodes", p99_quiet, p99_add);
    println!(
        "  ({} goal 2.00x)",
        if lat <= 2.0 { "meets" } else { "ABOVE" }
    );
    // What any bulk copy costs the old nodes on this machine, and what any use of its CPU
    // does, whatever its priority.
    latency_line(
        "  (the same during pg_dump|pg_restore)",
        p99_quiet,
        p99_dump,
    );
    println!();
    latency_line(
        "  (the same beside nice 19 busy loops)",
        p99_quiet,
        p99_busy,
    );
    println!();
    println!("every node holds all {writes} writes; each new node held the {rows} rows of data");
    Ok(())
}

/// Prints (without ending the line) a p99 against the quiet one; returns their ratio.
fn latency_line(what: &str, quiet: Duration, during: Duration) -> f64 {
    let ratio = during.as_secs_f64() / quiet.as_secs_f64();
    print!(
        "{what:<40} quiet {:>8.1} ms  during {:>8.1} ms  ratio {ratio:.2}x",
        quiet.as_secs_f64() * 1000.0,
        during.as_secs_f64() * 1000.0
    );
    ratio
}

/// One round's windows and durations.
struct Round {
    quiet: Window,
    busy: Window,
    dump: (Duration, Window),
    add: (Duration, Window),
}

/// A quiet stretch, one beside busy loops, a `pg_dump | pg_restore` of `data` into a new database of the fifth
/// server, then `add_node` of a new node (a new database of the fourth server, named
/// `n<3+r>`); the node leaves again with `remove_node` unless it is the last round's.
fn round(cluster: &Cluster, r: u32, last: bool, rows: &str) -> Result<Round> {
    let n1 = cluster.node(0);
    let quiet_started = now_us();
    std::thread::sleep(QUIET);
    let quiet = (quiet_started, now_us());
    let busy = busy_loops()?;

    let copy_db = format!("copy{r}");
    cluster.node(4).sql(&format!("CREATE DATABASE {copy_db}"))?;
    // The dump names spock's tombstone trigger.
    cluster.node(4).sql_in(&copy_db, "CREATE EXTENSION spock")?;
    let started = now_us();
    let t = Instant::now();
    dump_restore(n1, cluster.node(4), &copy_db)?;
    let dump = (t.elapsed(), (started, now_us()));
    std::thread::sleep(Duration::from_secs(1));

    let (new, db, name) = (cluster.node(3), format!("add{r}"), format!("n{}", 3 + r));
    new.sql(&format!("CREATE DATABASE {db}"))?;
    new.sql_in(&db, "CREATE EXTENSION spock")?;
    let started = now_us();
    let t = Instant::now();
    let out = new
        .client("psql", "postgres")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &db, "-c"])
        .arg(format!(
            "CALL spock.add_node('n1', '{}', '{name}', '{}', verb := true)",
            n1.dsn("postgres"),
            new.dsn(&db)
        ))
        .output()
        .context("cannot run psql")?;
    let add = (t.elapsed(), (started, now_us()));
    let said = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("round {r}: add_node failed: {said}");
    }
    if r == 1 {
        // Its verbose lines: where the time went.
        for line in said.lines().filter(|l| l.contains("add_node")) {
            println!("    {}", line.trim_start_matches("NOTICE:  "));
        }
    }
    super::until_in(new, &db, "SELECT count(*) FROM data", rows, Instant::now())?;
    if !last {
        new.sql_in(
            &db,
            &format!("CALL spock.remove_node('{name}', '{}')", new.dsn(&db)),
        )?;
        // Its aftermath (the others' workers and slots going) stays out of the next quiet
        // stretch.
        std::thread::sleep(Duration::from_secs(3));
    }
    Ok(Round {
        quiet,
        busy,
        dump,
        add,
    })
}

/// A stretch as long as the quiet one with a busy loop per core at the lowest CPU priority
/// (`nice -n 19`), doing nothing but spin: what any use of this machine's CPU does to the old
/// nodes' commit latency, whatever its priority.
fn busy_loops() -> Result<Window> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let started = now_us();
    let mut loops: Vec<Child> = Vec::new();
    for _ in 0..cores {
        let started = Command::new("nice")
            .args(["-n", "19", "sh", "-c", "while :; do :; done"])
            .spawn();
        match started {
            Ok(l) => loops.push(l),
            Err(e) => {
                stop(loops)?;
                return Err(e).context("cannot start a busy loop");
            }
        }
    }
    std::thread::sleep(QUIET);
    let window = (started, now_us());
    stop(loops)?;
    std::thread::sleep(Duration::from_secs(1));
    Ok(window)
}

fn stop(loops: Vec<Child>) -> Result<()> {
    for mut l in loops {
        l.kill()?;
        l.wait()?;
    }
    Ok(())
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// pgbench writing at `RATE` on `node` until stopped, logging every transaction under
/// `dir/w_<id>`.
fn writer(node: &Node, id: usize, script: &Path, dir: &Path) -> Result<Child> {
    node.client("pgbench", "postgres")
        .args(["-n", "-c", "2", "-R", &RATE.to_string(), "-l", "-D"])
        .arg(format!("node={id}"))
        .arg(format!(
            "--log-prefix={}",
            dir.join(format!("w_{id}")).display()
        ))
        .args(["-T", "3600", "-f"])
        .arg(script)
        .arg("postgres")
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot run pgbench")
}

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

/// Every transaction pgbench logged under `dir/w_*`: (start, commit latency), in epoch µs
/// and µs; pgbench's own lag behind its schedule is left out.
fn logged_latencies(dir: &Path) -> Result<Vec<(u128, u128)>> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_name().to_string_lossy().starts_with("w_") {
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
            let start = (epoch * 1_000_000 + frac).saturating_sub(total);
            all.push((start, total.saturating_sub(lag)));
        }
    }
    Ok(all)
}

/// The 99th percentile of the latencies of transactions that started within any of
/// `windows`.
fn p99(latencies: &[(u128, u128)], windows: &[Window]) -> Result<Duration> {
    let mut all: Vec<u128> = latencies
        .iter()
        .filter(|(start, _)| windows.iter().any(|w| *start >= w.0 && *start <= w.1))
        .map(|&(_, us)| us)
        .collect();
    if all.is_empty() {
        bail!("pgbench logged no transactions in those windows");
    }
    all.sort_unstable();
    let at = ((all.len() as f64) * 0.99).ceil() as usize;
    Ok(Duration::from_micros(all[at.min(all.len()) - 1] as u64))
}

/// Copies `data` from `from` into database `db` of `to` with `pg_dump -Fc | pg_restore`
/// (schema and data, the same table add_node copies).
fn dump_restore(from: &Node, to: &Node, db: &str) -> Result<()> {
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
        .args(["-d", db, "--no-owner"])
        .stdin(dump.stdout.take().context("pg_dump has no stdout")?)
        .output()
        .context("cannot run pg_restore")?;
    if !dump.wait()?.success() || !restore.status.success() {
        bail!(
            "pg_dump | pg_restore failed: {}",
            String::from_utf8_lossy(&restore.stderr)
        );
    }
    Ok(())
}
