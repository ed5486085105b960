//! `crash-sub` / `crash-prov`: n1 → n2, a client writing numbered rows into n1, and cycles of
//! kill -9 of one side's postmaster and a restart. Measured per cycle: seconds from the restart
//! until the subscriber holds the first row acknowledged after it. At the end the subscriber's
//! rows are compared with the client's acknowledgements. The subscriber's table has no primary
//! key on purpose: a transaction applied twice shows up as a duplicate row instead of being
//! absorbed as a conflict.

use super::{Budget, Outcome, conn, procs, secs, writer::Writer};
use anyhow::Result;
use harness::Node;
use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Victim {
    Subscriber,
    Provider,
}

const RESUME_TIMEOUT: Duration = Duration::from_secs(60);

pub fn run(kernel: &harness::Kernel, b: &Budget, victim: Victim) -> Result<Outcome> {
    let cluster = conn::pair(
        kernel,
        "CREATE TABLE acked(id bigint PRIMARY KEY)",
        "CREATE TABLE acked(id bigint)",
    )?;
    let (p, s) = (cluster.node(0), cluster.node(1));
    let target = match victim {
        Victim::Subscriber => s,
        Victim::Provider => p,
    };
    let mut out = Outcome::default();
    let writer = Writer::start(p, "acked", 1, b.write_rate);
    let sub_max = || conn::int(s, "SELECT coalesce(max(id), 0) FROM acked");
    let mut resume_max = Duration::ZERO;
    let mut survivors = 0;
    for cycle in 0..b.crash_cycles {
        // Writes flow for a while first; varied so the kills land at different points.
        std::thread::sleep(Duration::from_millis(1500 + 700 * u64::from(cycle % 4)));
        survivors += procs::crash(target)?.len();
        std::thread::sleep(Duration::from_secs(1));
        target.start()?;
        let restarted = Instant::now();
        let Some(id) = writer.next_ack(writer.last_acked(), RESUME_TIMEOUT) else {
            out.failures.push(format!(
                "cycle {cycle}: no write acknowledged within 60 s of the restart"
            ));
            continue;
        };
        // One writer, consecutive ids, so the subscriber holding `id` means it caught up to it.
        match conn::poll(RESUME_TIMEOUT, || sub_max().is_ok_and(|m| m >= id)) {
            Some(_) => resume_max = resume_max.max(restarted.elapsed()),
            None => out.failures.push(format!(
                "cycle {cycle}: replication did not resume within 60 s; subscriber log:\n{}",
                s.log_tail(15)
            )),
        }
    }
    let tally = writer.finish();

    // Everything the provider holds (acknowledged or in doubt) should reach the subscriber.
    let prov_max = conn::int(p, "SELECT coalesce(max(id), 0) FROM acked")?;
    if conn::poll(b.converge_timeout, || {
        sub_max().is_ok_and(|m| m >= prov_max)
    })
    .is_none()
    {
        out.failures
            .push("the subscriber never caught up with the provider".into());
    }
    let prov = ids(p)?;
    let sub = ids(s)?;
    let prov_set: BTreeSet<i64> = prov.iter().copied().collect();
    let sub_set: BTreeSet<i64> = sub.iter().copied().collect();
    let lost = tally.acked.iter().filter(|i| !sub_set.contains(i)).count();
    let lost_prov = tally.acked.iter().filter(|i| !prov_set.contains(i)).count();
    let duplicated = sub.len() - sub_set.len();
    let differ = prov_set.symmetric_difference(&sub_set).count();

    out.figure(format!("{} cycles", b.crash_cycles));
    out.figure(format!(
        "acked {} (in doubt {})",
        tally.acked.len(),
        tally.doubt.len()
    ));
    out.figure(format!("lost {lost}"));
    out.figure(format!("duplicated {duplicated}"));
    out.figure(format!("provider/subscriber differ {differ}"));
    out.figure(format!("resume max {}", secs(resume_max)));
    out.goal(lost == 0, format!("lost {lost} acknowledged rows (goal 0)"));
    out.goal(
        lost_prov == 0,
        format!("{lost_prov} acknowledged rows missing on the provider itself"),
    );
    out.goal(
        duplicated == 0,
        format!("{duplicated} rows applied twice (goal 0)"),
    );
    out.goal(
        differ == 0,
        format!("{differ} ids on one side only after catching up (goal 0)"),
    );
    out.goal(
        !tally.acked.is_empty(),
        "the client never got a write acknowledged",
    );
    if survivors > 0 {
        out.figure(format!("{survivors} processes outlived their postmaster"));
        out.goal(
            false,
            format!(
                "{survivors} server processes were still running 30 s after kill -9 of their postmaster"
            ),
        );
    }
    out.keep_logs(&cluster.nodes);
    cluster.stop()?;
    Ok(out)
}

/// Every id in `acked` on `node`, duplicates included.
fn ids(node: &Node) -> Result<Vec<i64>> {
    conn::sql(node, "SELECT id FROM acked ORDER BY id")?
        .lines()
        .map(|l| Ok(l.trim().parse()?))
        .collect()
}
