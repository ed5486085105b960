//! `shutdown`: seconds for `pg_ctl stop -m fast` of a subscriber in each awkward state its
//! workers can be in — streaming idle, disabled, in the middle of applying a large
//! transaction, with its provider gone, and waiting for a table copy that keeps failing. A
//! worker that does not react to SIGTERM in one of these states makes the stop hang (pg_ctl
//! gives up after 60 s). Goal: under 5 s each. One pair serves every state, in an order where
//! each state's leftovers do not disturb the next.

use super::{Outcome, conn, secs};
use anyhow::Result;
use harness::{Node, StopMode};
use std::time::{Duration, Instant};

const GOAL: Duration = Duration::from_secs(5);
const LARGE: u32 = 1_000_000;

pub fn run(kernel: &harness::Kernel) -> Result<Outcome> {
    let schema = "CREATE TABLE t(id int PRIMARY KEY, v text)";
    let cluster = conn::pair(kernel, schema, schema)?;
    let (p, s) = (cluster.node(0), cluster.node(1));
    let mut out = Outcome::default();
    let minute = Duration::from_secs(60);
    let apply_running = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'spock apply'";

    // Streaming, nothing to do.
    conn::sql(p, "INSERT INTO t VALUES (0, 'probe')")?;
    conn::wait_for(s, "SELECT count(*) FROM t", "1", minute)?;
    stop(&mut out, s, "idle")?;
    s.start()?;
    conn::wait_streams(p, 1)?;

    // Disabled: no apply worker, only the manager.
    conn::sql(s, "SELECT spock.sub_disable('sub')")?;
    conn::wait_for(s, apply_running, "0", minute)?;
    stop(&mut out, s, "disabled")?;
    s.start()?;
    conn::sql(s, "SELECT spock.sub_enable('sub')")?;
    conn::wait_streams(p, 1)?;

    // In the middle of applying one large transaction.
    conn::sql(
        p,
        &format!("INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, {LARGE}) g"),
    )?;
    conn::wait_for(
        s,
        "SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'spock apply' \
         AND backend_xid IS NOT NULL",
        "t",
        Duration::from_secs(120),
    )?;
    stop(&mut out, s, &format!("applying {}k rows", LARGE / 1000))?;
    s.start()?;

    // Provider gone: the apply worker keeps trying to reconnect.
    p.stop(StopMode::Fast)?;
    std::thread::sleep(Duration::from_secs(3));
    stop(&mut out, s, "provider down")?;
    p.start()?;
    s.start()?;
    conn::wait_streams(p, 1)?;

    // A copy that cannot succeed: the subscriber's table lacks a column of the provider's.
    conn::sql(
        p,
        "CREATE TABLE broken(id int PRIMARY KEY, extra text); INSERT INTO broken VALUES (1, 'x')",
    )?;
    conn::sql(s, "CREATE TABLE broken(id int PRIMARY KEY)")?;
    conn::sql(
        p,
        "SELECT spock.repset_add_table('default', 'broken', synchronize_data := true)",
    )?;
    conn::sql(p, "INSERT INTO broken VALUES (2, 'y')")?;
    std::thread::sleep(Duration::from_secs(3));
    stop(&mut out, s, "copy failing")?;
    s.start()?;
    out.keep_logs(&cluster.nodes);
    cluster.stop()?;
    Ok(out)
}

/// Fast-stops `s`, records the seconds as figure `state`; a stop pg_ctl gave up on is finished
/// with an immediate stop, so the next state still runs.
fn stop(out: &mut Outcome, s: &Node, state: &str) -> Result<()> {
    let started = Instant::now();
    let stopped = s.stop(StopMode::Fast);
    let took = started.elapsed();
    match stopped {
        Ok(()) => {
            out.figure(format!("{state} {}", secs(took)));
            out.goal(
                took < GOAL,
                format!("fast stop while {state} took {} (goal < 5 s)", secs(took)),
            );
        }
        Err(e) => {
            out.figure(format!("{state} >{}", secs(took)));
            out.goal(
                false,
                format!(
                    "fast stop while {state} did not finish: {e:#}; log:\n{}",
                    s.log_tail(15)
                ),
            );
            s.stop(StopMode::Immediate)?;
        }
    }
    Ok(())
}
