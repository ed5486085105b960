//! `slot-lost`: n1 → n2, the subscription disabled, rows written on the provider, the slot
//! dropped there, then `sub_enable`. The changes in between are gone with the slot; the only
//! safe reaction is to say so and stop (status `disabled`, an `exception_log` row about the
//! slot), never to make a new slot and carry on past the gap. Counted: rows the subscriber
//! skipped silently, i.e. provider rows it lacks while it holds later ones.

use super::{Outcome, conn};
use anyhow::Result;
use std::time::Duration;

/// Rows written while the subscription is disabled (lost with the slot) and after it.
const GAP: i64 = 100;
const AFTER: i64 = 10;

pub fn run(kernel: &harness::Kernel) -> Result<Outcome> {
    let schema = "CREATE TABLE t(id int PRIMARY KEY)";
    let cluster = conn::pair(kernel, schema, schema)?;
    let (p, s) = (cluster.node(0), cluster.node(1));
    let minute = Duration::from_secs(60);
    let mut out = Outcome::default();

    conn::sql(p, "INSERT INTO t VALUES (1)")?;
    conn::wait_for(s, "SELECT count(*) FROM t", "1", minute)?;
    conn::sql(s, "SELECT spock.sub_disable('sub')")?;
    conn::wait_for(
        p,
        "SELECT count(*) FROM pg_replication_slots WHERE active",
        "0",
        minute,
    )?;
    conn::sql(
        p,
        &format!(
            "INSERT INTO t SELECT g FROM generate_series(2, {}) g",
            GAP + 1
        ),
    )?;
    conn::sql(
        p,
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots",
    )?;
    conn::sql(s, "SELECT spock.sub_enable('sub')")?;

    // Give the worker time to find out, then write more: rows that must not arrive past a gap.
    let reported =
        "SELECT count(*) > 0 FROM spock.exception_log WHERE error_message ILIKE '%slot%'";
    let said_so = conn::poll(Duration::from_secs(30), || {
        conn::sub_status(s, "sub") == "disabled" && conn::sql(s, reported).is_ok_and(|r| r == "t")
    });
    conn::sql(
        p,
        &format!(
            "INSERT INTO t SELECT g FROM generate_series({}, {}) g",
            GAP + 2,
            GAP + 1 + AFTER
        ),
    )?;
    std::thread::sleep(Duration::from_secs(3));

    let status = conn::sub_status(s, "sub");
    let logged = conn::sql(s, reported)? == "t";
    let sub_max = conn::int(s, "SELECT coalesce(max(id), 0) FROM t")?;
    let silent = conn::int(p, &format!("SELECT count(*) FROM t WHERE id < {sub_max}"))?
        - conn::int(s, &format!("SELECT count(*) FROM t WHERE id < {sub_max}"))?;
    let new_slot = conn::int(p, "SELECT count(*) FROM pg_replication_slots")?;

    out.figure(format!("missing silently {silent}"));
    out.figure(format!("status {status}"));
    out.figure(format!(
        "exception_log {}",
        if logged {
            "mentions the slot"
        } else {
            "silent"
        }
    ));
    if said_so.is_none() {
        out.figure("not reported within 30 s");
    }
    out.goal(
        silent == 0,
        format!("{silent} rows skipped silently (the subscriber has later rows)"),
    );
    out.goal(
        status == "disabled",
        format!("status {status}, goal `disabled`"),
    );
    out.goal(logged, "no exception_log row mentions the slot");
    out.goal(
        new_slot == 0,
        format!("the subscriber made {new_slot} new slot(s) on the provider"),
    );
    out.keep_logs(&cluster.nodes);
    cluster.stop()?;
    Ok(out)
}
