//! `cargo xtask bench <what>`: performance of our extensions against a baseline measured on the
//! same server in the same run (machines here are noisy, so only ratios are meaningful).

mod add_node;
mod lolor;
mod multimaster;
mod replication;
mod snowflake;
mod table_diff;

use anyhow::{Context, Result, bail};
use harness::Node;
use std::time::{Duration, Instant};
use std::{path::Path, process::Command};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Bench {
    /// snowflake.nextval against native nextval.
    Snowflake,
    /// lolor large objects against native large objects.
    Lolor,
    /// spock replication against native logical replication.
    Replication,
    /// A 3-node spock mesh against a native `origin = none` mesh.
    Multimaster,
    /// `spock.add_node` to a 3-node mesh under writes against `pg_dump | pg_restore`.
    AddNode,
    /// spockctrl table-diff on 1M rows against one full checksum scan per node.
    TableDiff,
}

pub fn run(what: Bench, pg_config: &Path, rounds: u32) -> Result<()> {
    let kernel = harness::Kernel::from_pg_config(pg_config)?;
    match what {
        Bench::Snowflake => snowflake::run(&kernel),
        Bench::Lolor => lolor::run(&kernel),
        Bench::Replication => replication::run(&kernel, rounds),
        Bench::Multimaster => multimaster::run(&kernel),
        Bench::AddNode => add_node::run(&kernel),
        Bench::TableDiff => table_diff::run(&kernel),
    }
}

/// Replication benchmarks run with durable commits (the test harness turns `fsync` off for
/// speed): the cost of waiting for WAL flushes is part of what is compared.
fn durable(opts: harness::ClusterOptions) -> harness::ClusterOptions {
    opts.setting("fsync", "on")
}

/// Runs a pgbench script against `node` and returns transactions per second.
pub fn pgbench_tps(
    node: &Node,
    dir: &Path,
    name: &str,
    script: &str,
    clients: u32,
    seconds: u32,
) -> Result<f64> {
    let file = dir.join(format!("{name}.sql"));
    std::fs::write(&file, script)?;
    let port = node.port.to_string();
    let (c, t) = (clients.to_string(), seconds.to_string());
    let out = Command::new(node.kernel().bin("pgbench"))
        .args(["-n", "-f"])
        .arg(&file)
        .args([
            "-c",
            &c,
            "-j",
            &c,
            "-T",
            &t,
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "postgres",
        ])
        .envs(node.kernel().env())
        .output()
        .context("cannot run pgbench")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "pgbench {name} failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no tps in pgbench output:\n{text}"))
}

/// Runs a pgbench script at a fixed rate (transactions per second, 2 clients) for `seconds`.
pub fn pgbench_rate(
    node: &Node,
    dir: &Path,
    name: &str,
    script: &str,
    rate: u32,
    seconds: u32,
) -> Result<()> {
    let file = dir.join(format!("{name}.sql"));
    std::fs::write(&file, script)?;
    let (port, rate, t) = (node.port.to_string(), rate.to_string(), seconds.to_string());
    let out = Command::new(node.kernel().bin("pgbench"))
        .args(["-n", "-f"])
        .arg(&file)
        .args([
            "-c",
            "2",
            "-j",
            "2",
            "-R",
            &rate,
            "-T",
            &t,
            "-h",
            "127.0.0.1",
        ])
        .args(["-p", &port, "-U", "postgres", "postgres"])
        .envs(node.kernel().env())
        .output()
        .context("cannot run pgbench")?;
    if !out.status.success() {
        bail!(
            "pgbench {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// CPU time (user + system, in clock ticks) process `pid` has used so far.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may itself hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let tick = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .context("short /proc stat line")?
            .parse()
            .context("bad /proc stat field")
    };
    Ok(tick(11)? + tick(12)?)
}

/// Waits until `query` on `node` returns `want`; the elapsed time since `since`.
pub fn until(node: &Node, query: &str, want: &str, since: Instant) -> Result<Duration> {
    until_in(node, "postgres", query, want, since)
}

/// `until` in database `db`.
pub fn until_in(
    node: &Node,
    db: &str,
    query: &str,
    want: &str,
    since: Instant,
) -> Result<Duration> {
    loop {
        if node.sql_in(db, query)? == want {
            return Ok(since.elapsed());
        }
        if since.elapsed() > Duration::from_secs(600) {
            bail!("{} ({db}) never reached {want} for {query}", node.name);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The median of the rounds' ratios (ours ÷ baseline), and the round it came from.
pub fn median_round(rounds: &[(f64, f64)]) -> (f64, f64) {
    let mut sorted = rounds.to_vec();
    sorted.sort_by(|a, b| (a.0 / a.1).total_cmp(&(b.0 / b.1)));
    sorted[sorted.len() / 2]
}

/// `report` for a workload measured in rounds: the median round, then every round's ratio.
pub fn report_rounds(what: &str, unit: &str, rounds: &[(f64, f64)], goal: f64) {
    let (ours, baseline) = median_round(rounds);
    report(what, unit, ours, baseline, goal);
    if rounds.len() > 1 {
        let each: Vec<String> = rounds
            .iter()
            .map(|(o, b)| format!("{:.2}", o / b))
            .collect();
        println!("{:<40} rounds: {}", "", each.join(", "));
    }
}

/// Prints one result line: ours, the baseline and their ratio.
pub fn report(what: &str, unit: &str, ours: f64, baseline: f64, goal: f64) {
    let ratio = ours / baseline;
    let verdict = if ratio >= goal { "meets" } else { "BELOW" };
    println!(
        "{what:<40} ours {ours:>12.1} {unit}  baseline {baseline:>12.1} {unit}  ratio {ratio:.2}x  ({verdict} goal {goal:.2}x)"
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_median_round_is_the_middle_ratio() {
        let rounds = [(90.0, 100.0), (130.0, 100.0), (105.0, 100.0)];
        assert_eq!(super::median_round(&rounds), (105.0, 100.0));
        assert_eq!(super::median_round(&rounds[..1]), (90.0, 100.0));
        // An even count takes the upper middle.
        assert_eq!(super::median_round(&rounds[..2]), (130.0, 100.0));
    }
}
