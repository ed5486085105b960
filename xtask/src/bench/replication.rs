//! spock replication against native logical replication (publication/subscription) between the
//! same two servers, one workload at a time: rows per second from the start of the workload
//! until the subscriber holds the result.

use super::{cpu_ticks, pgbench_rate, pgbench_tps, report, report_rounds, until};
use anyhow::Result;
use harness::{Cluster, ClusterOptions};
use std::time::{Duration, Instant};

const GOAL: f64 = 1.0;
/// Rows per second for the lag measurement: well below what either side can apply.
const LAG_RATE: u32 = 1000;
/// One-row transactions queued for the capacity measurement.
const BACKLOG: u32 = 200_000;

pub fn run(kernel: &harness::Kernel, rounds: u32) -> Result<()> {
    let cluster = Cluster::start(kernel, &super::durable(ClusterOptions::default().nodes(2)))?;
    let (p, s) = (cluster.node(0), cluster.node(1));
    for (n, name) in [(p, "n1"), (s, "n2")] {
        n.sql("CREATE EXTENSION spock")?;
        n.sql(&format!(
            "SELECT spock.node_create('{name}', '{}')",
            n.dsn("postgres")
        ))?;
        n.sql("CREATE TABLE spock_t(id bigint PRIMARY KEY, v text); CREATE TABLE native_t(id bigint PRIMARY KEY, v text); \
               CREATE SEQUENCE spock_t_seq; CREATE SEQUENCE native_t_seq;")?;
    }
    p.sql("SELECT spock.repset_add_table('default', 'spock_t')")?;
    p.sql("CREATE PUBLICATION native_pub FOR TABLE native_t")?;
    s.sql(&format!(
        "SELECT spock.sub_create('bench', '{}')",
        p.dsn("postgres")
    ))?;
    s.sql(&format!(
        "CREATE SUBSCRIPTION native_sub CONNECTION '{}' PUBLICATION native_pub WITH (copy_data = false)",
        p.dsn("postgres")
    ))?;
    // spock's apply worker creates its slot shortly after sub_create; wait for both streams.
    until(
        p,
        "SELECT count(*) FROM pg_replication_slots WHERE active AND slot_name LIKE 'spk_%'",
        "1",
        Instant::now(),
    )?;
    // Both streams up: a probe row through each.
    p.sql("INSERT INTO spock_t VALUES (0, 'probe'); INSERT INTO native_t VALUES (0, 'probe')")?;
    for t in ["spock_t", "native_t"] {
        until(s, &format!("SELECT count(*) FROM {t}"), "1", Instant::now())?;
    }
    println!(
        "spock vs native logical replication, PostgreSQL {} (rows/s until the subscriber has them)",
        kernel.major
    );

    let rate =
        |workload: &str, ours: f64, native: f64| report(workload, "rows/s", ours, native, GOAL);
    let rates = |workload: &str, each: &[(f64, f64)]| report_rounds(workload, "rows/s", each, GOAL);

    // (a) single-row insert transactions from 4 pgbench clients for 10 s each.
    let small = |t: &str| -> Result<f64> {
        let before: i64 = p.sql(&format!("SELECT count(*) FROM {t}"))?.parse()?;
        let started = Instant::now();
        pgbench_tps(
            p,
            cluster.dir(),
            t,
            &format!("INSERT INTO {t} VALUES (nextval('{t}_seq'), 'x');\n"),
            4,
            10,
        )?;
        let total = p.sql(&format!("SELECT count(*) FROM {t}"))?;
        let elapsed = until(s, &format!("SELECT count(*) FROM {t}"), &total, started)?;
        Ok((total.parse::<i64>()? - before) as f64 / elapsed.as_secs_f64())
    };
    let each = alternating(rounds, |t, _| small(t))?;
    rates("(a) 1-row transactions, 4 clients", &each);

    // (b) one transaction of 200,000 rows.
    // Round r inserts ids -(r·200k + 1) … -(r+1)·200k.
    let bulk = |t: &str, r: u32| -> Result<f64> {
        let (from, to) = (i64::from(r) * 200_000 + 1, i64::from(r + 1) * 200_000);
        let started = Instant::now();
        p.sql(&format!(
            "INSERT INTO {t} SELECT -g, 'bulk' FROM generate_series({from}, {to}) g"
        ))?;
        until(
            s,
            &format!("SELECT count(*) FROM {t} WHERE id BETWEEN -{to} AND -{from}"),
            "200000",
            started,
        )?;
        Ok(200_000.0 / started.elapsed().as_secs_f64())
    };
    // The walsenders' CPU for it: ticks are counted per process, so unlike the rates they do
    // not depend on what else the machine runs.
    let sender = |slot: &str| -> Result<u32> {
        Ok(p.sql(&format!(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name LIKE '{slot}'"
        ))?
        .parse()?)
    };
    let (ours_pid, native_pid) = (sender("spk_%")?, sender("native_sub")?);
    let (ours_before, native_before) = (cpu_ticks(ours_pid)?, cpu_ticks(native_pid)?);
    let appliers = Appliers::of(s)?;
    let each = alternating(rounds, bulk)?;
    rates("(b) one 200k-row transaction", &each);
    println!(
        "(b) walsender CPU for them: spock_output {} ticks, pgoutput {} ticks",
        cpu_ticks(ours_pid)? - ours_before,
        cpu_ticks(native_pid)? - native_before
    );
    appliers.report("(b)")?;

    // (c) one transaction updating 100,000 rows: round r updates half of round r's bulk rows.
    let update = |t: &str, r: u32| -> Result<f64> {
        let (from, to) = (i64::from(r) * 200_000 + 1, i64::from(r) * 200_000 + 100_000);
        let started = Instant::now();
        p.sql(&format!(
            "UPDATE {t} SET v = 'updated {r}' WHERE id BETWEEN -{to} AND -{from}"
        ))?;
        until(
            s,
            &format!("SELECT count(*) FROM {t} WHERE v = 'updated {r}'"),
            "100000",
            started,
        )?;
        Ok(100_000.0 / started.elapsed().as_secs_f64())
    };
    let appliers = Appliers::of(s)?;
    let each = alternating(rounds, update)?;
    rates("(c) one 100k-row update", &each);
    appliers.report("(c)")?;

    // (e) capacity: one-row transactions queued while both subscriptions are disabled (as after
    // an outage or during a burst), then applied from enable until the subscriber has them all.
    // Both slots decode the whole backlog (each filters out the other table), so the work on the
    // provider's side is the same for both.
    s.sql("SELECT spock.sub_disable('bench', true); ALTER SUBSCRIPTION native_sub DISABLE")?;
    until(
        p,
        "SELECT count(*) FROM pg_replication_slots WHERE active",
        "0",
        Instant::now(),
    )?;
    for t in ["spock_t", "native_t"] {
        p.sql(&format!(
            "DO $$ BEGIN PERFORM set_config('synchronous_commit', 'off', false); \
             FOR i IN 1..{BACKLOG} LOOP \
             INSERT INTO {t} VALUES (1000000 + i, 'queued'); COMMIT; END LOOP; END $$"
        ))?;
    }
    // Also the CPU of the apply worker that enable started (all of its life).
    let backlog = |t: &str, enable: &str, worker: &str| -> Result<(f64, u64)> {
        let started = Instant::now();
        s.sql(enable)?;
        until(
            s,
            &format!("SELECT count(*) FROM {t} WHERE v = 'queued'"),
            &BACKLOG.to_string(),
            started,
        )?;
        let rate = BACKLOG as f64 / started.elapsed().as_secs_f64();
        Ok((rate, cpu_ticks(applier(s, worker)?)?))
    };
    let (ours, ours_cpu) = backlog(
        "spock_t",
        "SELECT spock.sub_enable('bench', true)",
        SPOCK_APPLY,
    )?;
    let (native, native_cpu) = backlog(
        "native_t",
        "ALTER SUBSCRIPTION native_sub ENABLE",
        NATIVE_APPLY,
    )?;
    rate("(e) backlog of 1-row transactions", ours, native);
    cpu_line("(e)", ours_cpu, native_cpu);

    // (d) lag at a fixed write rate: the subscriber stamps each row as it arrives.
    for t in ["lag_spock", "lag_native"] {
        p.sql(&format!(
            "CREATE TABLE {t}(id bigint PRIMARY KEY, sent timestamptz)"
        ))?;
        s.sql(&format!(
            "CREATE TABLE {t}(id bigint PRIMARY KEY, sent timestamptz, \
             arrived timestamptz DEFAULT clock_timestamp())"
        ))?;
        p.sql(&format!("CREATE SEQUENCE {t}_seq"))?;
    }
    p.sql("SELECT spock.repset_add_table('default', 'lag_spock')")?;
    p.sql("ALTER PUBLICATION native_pub ADD TABLE lag_native")?;
    s.sql("ALTER SUBSCRIPTION native_sub REFRESH PUBLICATION WITH (copy_data = false)")?;
    // spock reads set membership at decoding time; native needs its refresh to settle.
    std::thread::sleep(Duration::from_secs(2));
    // Each round's figures are over its own rows (the ids keep growing).
    let lag = |t: &str| -> Result<(f64, f64)> {
        let before = p.sql(&format!("SELECT coalesce(max(id), 0) FROM {t}"))?;
        pgbench_rate(
            p,
            cluster.dir(),
            t,
            &format!("INSERT INTO {t} VALUES (nextval('{t}_seq'), clock_timestamp());\n"),
            LAG_RATE,
            10,
        )?;
        let total = p.sql(&format!("SELECT count(*) FROM {t}"))?;
        until(
            s,
            &format!("SELECT count(*) FROM {t}"),
            &total,
            Instant::now(),
        )?;
        let stats = s.sql(&format!(
            "SELECT avg(ms)::numeric(10,2), percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric(10,2) \
             FROM (SELECT extract(epoch FROM arrived - sent) * 1000 AS ms FROM {t} WHERE id > {before}) x"
        ))?;
        let (avg, p99) = stats.split_once('|').unwrap_or(("0", "0"));
        Ok((avg.parse()?, p99.parse()?))
    };
    // Rounds as for (a)–(c), spock first in even ones.
    let mut each = Vec::new();
    for r in 0..rounds {
        each.push(if r % 2 == 0 {
            let ours = lag("lag_spock")?;
            (ours, lag("lag_native")?)
        } else {
            let native = lag("lag_native")?;
            (lag("lag_spock")?, native)
        });
    }
    // Lower is better: the ratio is native / ours, so above 1 means less lag than native.
    let ratio = |((ours, _), (native, _)): &((f64, f64), (f64, f64))| native / ours.max(0.001);
    each.sort_by(|a, b| ratio(a).total_cmp(&ratio(b)));
    let median = each[each.len() / 2];
    let ((ours_avg, ours_p99), (native_avg, native_p99)) = median;
    println!(
        "(d) lag at {LAG_RATE} rows/s, median round: spock avg {ours_avg:.2} ms, p99 {ours_p99:.2} ms; \
         native avg {native_avg:.2} ms, p99 {native_p99:.2} ms"
    );
    report(
        "(d) lag, native avg / spock avg",
        "x",
        ratio(&median),
        1.0,
        GOAL,
    );
    if each.len() > 1 {
        let all: Vec<String> = each.iter().map(|r| format!("{:.2}", ratio(r))).collect();
        println!("{:<40} rounds (sorted): {}", "", all.join(", "));
    }

    s.sql("DROP SUBSCRIPTION native_sub")?;
    cluster.stop()?;
    Ok(())
}

const SPOCK_APPLY: &str = "spock apply";
const NATIVE_APPLY: &str = "logical replication apply worker";

/// The pid of the subscriber's apply worker of `backend_type`.
fn applier(s: &harness::Node, backend_type: &str) -> Result<u32> {
    Ok(s.sql(&format!(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = '{backend_type}'"
    ))?
    .parse()?)
}

/// The CPU the two apply workers use for a workload. Unlike the rates, which also hold the
/// provider's statement, the decoding and whatever else the machine runs, this is the apply
/// alone, and it does not move with the machine's load.
struct Appliers {
    pids: (u32, u32),
    before: (u64, u64),
}

impl Appliers {
    fn of(s: &harness::Node) -> Result<Appliers> {
        let pids = (applier(s, SPOCK_APPLY)?, applier(s, NATIVE_APPLY)?);
        Ok(Appliers {
            pids,
            before: (cpu_ticks(pids.0)?, cpu_ticks(pids.1)?),
        })
    }

    fn report(&self, workload: &str) -> Result<()> {
        cpu_line(
            workload,
            cpu_ticks(self.pids.0)? - self.before.0,
            cpu_ticks(self.pids.1)? - self.before.1,
        );
        Ok(())
    }
}

fn cpu_line(workload: &str, ours: u64, native: u64) {
    println!(
        "{workload} apply worker CPU: spock {ours} ticks, native {native} ticks \
         (native / spock {:.2}x)",
        native as f64 / ours.max(1) as f64
    );
}

/// `measure(table, round)` for spock's table and native's in each of `rounds` rounds, spock's
/// first in even rounds and native's first in odd ones, so neither side always runs on the
/// machine the other one just warmed (or left checkpointing); returns (ours, native) per round.
fn alternating(
    rounds: u32,
    mut measure: impl FnMut(&str, u32) -> Result<f64>,
) -> Result<Vec<(f64, f64)>> {
    let mut each = Vec::new();
    for r in 0..rounds {
        each.push(if r % 2 == 0 {
            let ours = measure("spock_t", r)?;
            (ours, measure("native_t", r)?)
        } else {
            let native = measure("native_t", r)?;
            (measure("spock_t", r)?, native)
        });
    }
    Ok(each)
}
