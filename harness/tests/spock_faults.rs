//! spock on its bad days, on real nodes: every failure path keeps the data and stops cleanly.
//! A merge that fails, a lost slot, a failed transaction behind `sub_disable`, a table that is
//! missing when its first change comes, a stop request while the worker waits for a copy, a
//! provider that stops answering.

mod common;

// One test per major for each of these (`name::pg17`…); see `common::per_major`.
crate::per_major!(
    a_failing_delta_merge_is_an_ordinary_apply_error,
    a_lost_slot_stops_the_subscription,
    a_transaction_behind_sub_disable_arrives_after_the_fix,
    a_missing_table_fails_only_until_it_exists,
    fast_shutdown_in_any_state,
    slots_can_be_created_on_a_busy_node,
    a_silent_provider_shows_as_down,
    a_copy_that_cannot_succeed_stops_and_says_why,
    two_subscribers_cannot_share_a_slot,
    tombstones_are_collected_when_idle,
    a_lagging_subscription_holds_tombstones,
    an_idle_node_uses_no_transaction_ids,
);

use harness::{Cluster, ClusterOptions, Node, StopMode};
use std::time::{Duration, Instant};

fn wait_for(node: &Node, query: &str, want: &str) {
    common::wait_for(node, "postgres", query, want, 60);
}

/// Two spock nodes with `schema` on both (`schema_sub` only on the subscriber), n2 subscribed
/// (as `sub`) to n1's default sets holding every public table.
fn pair(kernel: &harness::Kernel, opts: ClusterOptions, schema: &str, schema_sub: &str) -> Cluster {
    let cluster = common::Mesh::new(2)
        .options(opts)
        .schema(schema)
        .start(kernel);
    let (p, s) = (cluster.node(0), cluster.node(1));
    if !schema_sub.is_empty() {
        s.sql(schema_sub).unwrap();
    }
    p.sql("SELECT spock.repset_add_all_tables('default', ARRAY['public'])")
        .unwrap();
    common::subscribe(s, "sub", p, "");
    cluster
}

/// Adds table `broken` to the provider's default set with a copy that cannot succeed: the
/// subscriber's table lacks a column.
fn add_uncopyable_table(p: &Node, s: &Node) {
    p.sql(
        "CREATE TABLE broken(id int PRIMARY KEY, extra text); INSERT INTO broken VALUES (1, 'x')",
    )
    .unwrap();
    s.sql("CREATE TABLE broken(id int PRIMARY KEY)").unwrap();
    p.sql("SELECT spock.repset_add_table('default', 'broken', synchronize_data := true)")
        .unwrap();
}

fn status(s: &Node) -> String {
    s.sql("SELECT status FROM spock.sub_show_status('sub')")
        .unwrap()
}

/// A delta merge that breaks a CHECK constraint is an apply error like any other: logged in
/// `spock.exception_log`, the transaction discarded, replication going on — not a worker that
/// dies over and over on a broken transaction state.
fn a_failing_delta_merge_is_an_ordinary_apply_error(kernel: &harness::Kernel) {
    let major = kernel.major;
    let cluster = pair(
        kernel,
        ClusterOptions::default(),
        "CREATE TABLE c(id int PRIMARY KEY, n int NOT NULL CHECK (n >= 0)); \
         ALTER TABLE c ALTER COLUMN n SET (log_old_value = true, delta_apply_function = spock.delta_apply)",
        "",
    );
    let (p, s) = (cluster.node(0), cluster.node(1));
    p.sql("INSERT INTO c VALUES (1, 10)").unwrap();
    wait_for(s, "SELECT n FROM c", "10");
    // The provider's update (10 → 5) waits while the subscriber makes a newer one
    // (10 → 3): the remote change loses, its delta -5 is merged into 3, giving -2.
    s.sql("SELECT spock.sub_disable('sub')").unwrap();
    wait_for(
        s,
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'spock apply'",
        "0",
    );
    p.sql("UPDATE c SET n = 5").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    s.sql("UPDATE c SET n = 3").unwrap();
    s.sql("SELECT spock.sub_enable('sub')").unwrap();
    wait_for(
        s,
        "SELECT count(*) > 0 FROM spock.exception_log \
         WHERE error_message LIKE '%violates check constraint%'",
        "t",
    );
    assert_eq!(s.sql("SELECT n FROM c").unwrap(), "3", "PostgreSQL {major}");
    // Later transactions from the provider still arrive, with the same worker.
    let pid = s
        .sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'spock apply'")
        .unwrap();
    p.sql("INSERT INTO c VALUES (2, 7)").unwrap();
    wait_for(s, "SELECT n FROM c WHERE id = 2", "7");
    assert_eq!(
        s.sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'spock apply'")
            .unwrap(),
        pid,
        "PostgreSQL {major}: the apply worker restarted"
    );
    assert_eq!(status(s), "replicating", "PostgreSQL {major}");
    assert!(
        !s.log_tail(400).contains("unexpected state"),
        "PostgreSQL {major}: {}",
        s.log_tail(40)
    );
}

/// A subscription whose slot is gone after it applied changes from it stops, disabled, and
/// says why; it does not start again from a new slot and skip what it missed.
fn a_lost_slot_stops_the_subscription(kernel: &harness::Kernel) {
    let major = kernel.major;
    let cluster = pair(
        kernel,
        ClusterOptions::default(),
        "CREATE TABLE t(id int PRIMARY KEY)",
        "",
    );
    let (p, s) = (cluster.node(0), cluster.node(1));
    p.sql("INSERT INTO t VALUES (1)").unwrap();
    wait_for(s, "SELECT count(*) FROM t", "1");
    s.sql("SELECT spock.sub_disable('sub')").unwrap();
    wait_for(
        p,
        "SELECT count(*) FROM pg_replication_slots WHERE active",
        "0",
    );
    p.sql("INSERT INTO t VALUES (2), (3)").unwrap();
    p.sql("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots")
        .unwrap();
    s.sql("SELECT spock.sub_enable('sub')").unwrap();
    wait_for(
        s,
        "SELECT count(*) > 0 FROM spock.exception_log WHERE operation = 'SUB_DISABLE' \
         AND error_message LIKE '%does not exist on the provider%'",
        "t",
    );
    p.sql("INSERT INTO t VALUES (4)").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(status(s), "disabled", "PostgreSQL {major}");
    assert_eq!(
        s.sql("SELECT string_agg(id::text, ',' ORDER BY id) FROM t")
            .unwrap(),
        "1",
        "PostgreSQL {major}: rows after the lost slot arrived without 2 and 3"
    );
    assert_eq!(
        p.sql("SELECT count(*) FROM pg_replication_slots").unwrap(),
        "0",
        "PostgreSQL {major}: a new slot was made"
    );
    // The way out: subscribe again, then copy the table again.
    s.sql("SELECT spock.sub_drop('sub')").unwrap();
    s.sql(&format!(
        "SELECT spock.sub_create('sub', '{}')",
        p.dsn("postgres")
    ))
    .unwrap();
    wait_for(
        p,
        "SELECT count(*) FROM pg_replication_slots WHERE active",
        "1",
    );
    s.sql("SELECT spock.sub_resync_table('sub', 't')").unwrap();
    wait_for(
        s,
        "SELECT string_agg(id::text, ',' ORDER BY id) FROM t",
        "1,2,3,4",
    );
}

/// With `exception_behaviour = sub_disable`, the failed transaction is not confirmed to the
/// provider: once the cause is fixed, `sub_enable` brings it.
fn a_transaction_behind_sub_disable_arrives_after_the_fix(kernel: &harness::Kernel) {
    let major = kernel.major;
    let cluster = pair(
        kernel,
        ClusterOptions::default().setting("spock.exception_behaviour", "sub_disable"),
        "CREATE TABLE t(id int PRIMARY KEY, v int)",
        "ALTER TABLE t ADD CONSTRAINT small CHECK (v < 100)",
    );
    let (p, s) = (cluster.node(0), cluster.node(1));
    p.sql("INSERT INTO t VALUES (1, 1)").unwrap();
    wait_for(s, "SELECT count(*) FROM t", "1");
    p.sql("INSERT INTO t VALUES (2, 200)").unwrap();
    wait_for(
        s,
        "SELECT sub_enabled::text FROM spock.subscription",
        "false",
    );
    // Give a (wrong) confirmation time to reach the provider, and the provider time to
    // move its slot, with more traffic.
    p.sql("INSERT INTO t VALUES (3, 3)").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    p.sql("CHECKPOINT").unwrap();
    s.sql("ALTER TABLE t DROP CONSTRAINT small").unwrap();
    s.sql("SELECT spock.sub_enable('sub')").unwrap();
    wait_for(
        s,
        "SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM t",
        "1:1,2:200,3:3",
    );
    assert_eq!(status(s), "replicating", "PostgreSQL {major}");
}

/// A change for a table that does not exist on the subscriber fails (and is logged); once the
/// table is created, later changes apply without a worker restart.
fn a_missing_table_fails_only_until_it_exists(kernel: &harness::Kernel) {
    let major = kernel.major;
    let cluster = pair(
        kernel,
        ClusterOptions::default(),
        "CREATE TABLE keep(id int PRIMARY KEY)",
        "",
    );
    let (p, s) = (cluster.node(0), cluster.node(1));
    p.sql(
        "CREATE TABLE late(id int PRIMARY KEY, v text); \
           SELECT spock.repset_add_table('default', 'late')",
    )
    .unwrap();
    let pid = s
        .sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'spock apply'")
        .unwrap();
    p.sql("INSERT INTO late VALUES (1, 'lost')").unwrap();
    wait_for(
        s,
        "SELECT count(*) > 0 FROM spock.exception_log WHERE table_name = 'late'",
        "t",
    );
    s.sql("CREATE TABLE late(id int PRIMARY KEY, v text)")
        .unwrap();
    p.sql("INSERT INTO late VALUES (2, 'arrives'); INSERT INTO keep VALUES (1)")
        .unwrap();
    wait_for(s, "SELECT count(*) FROM keep", "1");
    assert_eq!(
        s.sql("SELECT string_agg(id || v, ',') FROM late").unwrap(),
        "2arrives",
        "PostgreSQL {major}: {}",
        s.log_tail(30)
    );
    assert_eq!(
        s.sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'spock apply'")
            .unwrap(),
        pid,
        "PostgreSQL {major}: the apply worker restarted"
    );
}

/// `pg_ctl stop -m fast` returns within 5 s while the apply worker waits for a table copy that
/// keeps failing, and while it streams a large transaction.
fn fast_shutdown_in_any_state(kernel: &harness::Kernel) {
    let major = kernel.major;
    let cluster = pair(
        kernel,
        ClusterOptions::default(),
        "CREATE TABLE t(id int PRIMARY KEY, v text)",
        "",
    );
    let (p, s) = (cluster.node(0), cluster.node(1));
    add_uncopyable_table(p, s);
    p.sql("INSERT INTO broken VALUES (2, 'y')").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let started = Instant::now();
    s.stop(StopMode::Fast).unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "PostgreSQL {major}: stopping while a copy keeps failing took {took:?}"
    );
    s.start().unwrap();
    s.sql("SELECT spock.sub_remove_repset('sub', 'default')")
        .ok();
    drop(cluster);

    // Streaming a large transaction.
    let cluster = pair(
        kernel,
        ClusterOptions::default(),
        "CREATE TABLE t(id int PRIMARY KEY, v text)",
        "",
    );
    let (p, s) = (cluster.node(0), cluster.node(1));
    p.sql("INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 1000000) g")
        .unwrap();
    wait_for(
        s,
        "SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'spock apply' \
         AND xact_start IS NOT NULL",
        "t",
    );
    let started = Instant::now();
    s.stop(StopMode::Fast).unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "PostgreSQL {major}: stopping during a large transaction took {took:?}"
    );
    s.start().unwrap();
    wait_for(s, "SELECT count(*) FROM t", "1000000");
}

/// Creating a `spock_output` slot on a node that is applying another node's changes (so WAL
/// full of changes with an origin is decoded while the slot's snapshot is built) works, again
/// and again; the node does not crash.
fn slots_can_be_created_on_a_busy_node(kernel: &harness::Kernel) {
    let major = kernel.major;
    // n2 → n1 subscription: n1's WAL carries n2's changes with their origin.
    let cluster = pair(
        kernel,
        ClusterOptions::default(),
        "CREATE TABLE t(id bigserial PRIMARY KEY, v text)",
        "",
    );
    let (p, s) = (cluster.node(0), cluster.node(1));
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            p.sql(
                "DO $$ BEGIN FOR i IN 1..3000 LOOP \
                 INSERT INTO t(v) VALUES ('x'); COMMIT; END LOOP; END $$",
            )
            .unwrap();
        });
        for i in 0..6 {
            s.sql(&format!(
                "SELECT pg_create_logical_replication_slot('busy_{i}', 'spock_output'); \
                 SELECT pg_drop_replication_slot('busy_{i}')"
            ))
            .unwrap_or_else(|e| panic!("PostgreSQL {major}: slot {i}: {e}\n{}", s.log_tail(30)));
        }
        writer.join().unwrap();
    });
    assert!(
        !s.log_tail(500).contains("terminated by signal"),
        "PostgreSQL {major}: {}",
        s.log_tail(40)
    );
    wait_for(s, "SELECT count(*) FROM t", "3000");
}

/// A provider that stops answering (SIGSTOP of its walsender) shows as `down` within the
/// stall threshold and lag_tracker's lag grows; once it answers again, `replicating`.
fn a_silent_provider_shows_as_down(kernel: &harness::Kernel) {
    let major = kernel.major;
    let cluster = pair(
        kernel,
        ClusterOptions::default(),
        "CREATE TABLE t(id int PRIMARY KEY)",
        "",
    );
    let (p, s) = (cluster.node(0), cluster.node(1));
    p.sql("INSERT INTO t VALUES (1)").unwrap();
    wait_for(s, "SELECT count(*) FROM t", "1");
    assert_eq!(status(s), "replicating", "PostgreSQL {major}");
    let walsender = p
        .sql("SELECT active_pid FROM pg_replication_slots")
        .unwrap();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &walsender])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {walsender}");
    };
    signal("-STOP");
    let started = Instant::now();
    let mut seen = String::new();
    while started.elapsed() < Duration::from_secs(25) {
        seen = status(s);
        if seen == "down" {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let lag = s
        .sql("SELECT extract(epoch FROM replication_lag) > 5 FROM spock.lag_tracker")
        .unwrap();
    signal("-CONT");
    assert_eq!(
        seen, "down",
        "PostgreSQL {major}: status while the provider was stopped"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "PostgreSQL {major}: took {:?} to notice",
        started.elapsed()
    );
    assert_eq!(lag, "t", "PostgreSQL {major}: lag_tracker did not grow");
    p.sql("INSERT INTO t VALUES (2)").unwrap();
    wait_for(s, "SELECT count(*) FROM t", "2");
    wait_for(
        s,
        "SELECT status FROM spock.sub_show_status('sub')",
        "replicating",
    );
}

/// A table copy that cannot succeed stops, says why (sub_show_table, exception_log, the
/// waits), and the rest of the subscription goes on; after the fix, `sub_resync_table`
/// copies it.
fn a_copy_that_cannot_succeed_stops_and_says_why(kernel: &harness::Kernel) {
    let major = kernel.major;
    let cluster = pair(
        kernel,
        ClusterOptions::default(),
        "CREATE TABLE t(id int PRIMARY KEY)",
        "",
    );
    let (p, s) = (cluster.node(0), cluster.node(1));
    add_uncopyable_table(p, s);
    wait_for(
        s,
        "SELECT status FROM spock.sub_show_table('sub', 'broken')",
        "sync_failed",
    );
    let why = s
        .sql("SELECT error_message FROM spock.exception_log WHERE operation = 'SYNC' AND table_name = 'broken'")
        .unwrap();
    assert!(
        why.contains("extra"),
        "PostgreSQL {major}: exception_log says {why:?}"
    );
    let e = s
        .sql("SELECT spock.sub_wait_for_sync('sub')")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("copying table public.broken of subscription \"sub\" failed"),
        "PostgreSQL {major}: {e}"
    );
    // The rest goes on.
    p.sql("INSERT INTO t VALUES (1)").unwrap();
    wait_for(s, "SELECT count(*) FROM t", "1");
    assert_eq!(status(s), "replicating", "PostgreSQL {major}");
    // The provider asks for the table again (queued behind a row of `t`): the failed copy is
    // tried once more, fails the same way, and the stream goes on past the request.
    p.sql(
        "SELECT spock.repset_remove_table('default', 'broken'); \
         SELECT spock.repset_add_table('default', 'broken', synchronize_data := true); \
         INSERT INTO t VALUES (2)",
    )
    .unwrap();
    wait_for(s, "SELECT count(*) FROM t", "2");
    wait_for(
        s,
        "SELECT count(*) FROM spock.exception_log WHERE operation = 'SYNC' AND table_name = 'broken'",
        "2",
    );
    wait_for(
        s,
        "SELECT status FROM spock.sub_show_table('sub', 'broken')",
        "sync_failed",
    );
    assert_eq!(status(s), "replicating", "PostgreSQL {major}");
    // Fixed, copied again.
    s.sql("ALTER TABLE broken ADD COLUMN extra text").unwrap();
    s.sql("SELECT spock.sub_resync_table('sub', 'broken')")
        .unwrap();
    wait_for(s, "SELECT string_agg(id || extra, ',') FROM broken", "1x");
    s.sql("SELECT spock.sub_wait_for_sync('sub')").unwrap();
}

/// Two subscribers that would share a slot name (same database and subscription names)
/// cannot: the second `sub_create` is refused and the first keeps replicating.
fn two_subscribers_cannot_share_a_slot(kernel: &harness::Kernel) {
    let major = kernel.major;
    let cluster = common::Mesh::new(3)
        .schema("CREATE TABLE t(id int PRIMARY KEY)")
        .start(kernel);
    let (p, a, b) = (cluster.node(0), cluster.node(1), cluster.node(2));
    p.sql("SELECT spock.repset_add_all_tables('default', ARRAY['public'])")
        .unwrap();
    common::subscribe(a, "sub", p, "");
    let e = b
        .sql(&format!(
            "SELECT spock.sub_create('sub', '{}')",
            p.dsn("postgres")
        ))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("already exists on node \"n1\""),
        "PostgreSQL {major}: {e}"
    );
    p.sql("INSERT INTO t VALUES (1)").unwrap();
    wait_for(a, "SELECT count(*) FROM t", "1");
    assert_eq!(
        b.sql("SELECT count(*) FROM spock.subscription").unwrap(),
        "0",
        "PostgreSQL {major}"
    );
}

/// Tombstones are collected while the cluster is idle: the provider's heartbeat reaches the
/// subscriber as progress (an empty transaction would not be decoded at all).
fn tombstones_are_collected_when_idle(kernel: &harness::Kernel) {
    let major = kernel.major;
    let cluster = pair(
        kernel,
        ClusterOptions::default(),
        "CREATE TABLE t(id int PRIMARY KEY)",
        "",
    );
    let (p, s) = (cluster.node(0), cluster.node(1));
    p.sql("INSERT INTO t VALUES (1), (2); DELETE FROM t WHERE id = 1")
        .unwrap();
    wait_for(s, "SELECT count(*) FROM t", "1");
    assert_eq!(
        s.sql("SELECT count(*) FROM spock.tombstones").unwrap(),
        "1",
        "PostgreSQL {major}: the delete's tombstone"
    );
    // Nothing is written any more; the tombstone still goes.
    common::wait_for(
        s,
        "postgres",
        "SELECT count(*) FROM spock.tombstones",
        "0",
        90,
    );
}

/// Two subscriptions from the same provider: while one lags (disabled), the tombstones the
/// other one's deletes left stay — the lagging one may still bring an older write of the row.
fn a_lagging_subscription_holds_tombstones(kernel: &harness::Kernel) {
    let major = kernel.major;
    let cluster = common::Mesh::new(2)
        .schema("CREATE TABLE a(id int PRIMARY KEY); CREATE TABLE b(id int PRIMARY KEY)")
        .start(kernel);
    let (p, s) = (cluster.node(0), cluster.node(1));
    p.sql(
        "SELECT spock.repset_create('set_a'); SELECT spock.repset_create('set_b'); \
         SELECT spock.repset_add_table('set_a', 'a'); SELECT spock.repset_add_table('set_b', 'b')",
    )
    .unwrap();
    for set in ["set_a", "set_b"] {
        common::sub_create(
            s,
            &format!("sub_{set}"),
            p,
            &format!(", replication_sets := ARRAY['{set}']"),
        );
    }
    common::wait_active_slots(p, 2);
    p.sql("INSERT INTO b VALUES (1)").unwrap();
    wait_for(s, "SELECT count(*) FROM b", "1");
    s.sql("SELECT spock.sub_disable('sub_set_b')").unwrap();
    p.sql("INSERT INTO a VALUES (1), (2); DELETE FROM a WHERE id = 1")
        .unwrap();
    wait_for(s, "SELECT count(*) FROM a", "1");
    // Heartbeats keep sub_set_a moving; sub_set_b does not move.
    std::thread::sleep(Duration::from_secs(30));
    assert_eq!(
        s.sql("SELECT count(*) FROM spock.tombstones").unwrap(),
        "1",
        "PostgreSQL {major}: a tombstone went while a subscription lagged behind it"
    );
    s.sql("SELECT spock.sub_enable('sub_set_b')").unwrap();
    common::wait_for(
        s,
        "postgres",
        "SELECT count(*) FROM spock.tombstones",
        "0",
        90,
    );
}

/// An idle spock node nobody subscribes to uses no transaction ids: its manager's
/// once-a-second look at the subscriptions is read-only, and its heartbeat (every 10 s) goes
/// only to nodes that stream from it. (Each xid would be a commit record to write and flush,
/// and to wait for on a synchronous standby.)
fn an_idle_node_uses_no_transaction_ids(kernel: &harness::Kernel) {
    let major = kernel.major;
    let cluster = common::Mesh::new(1)
        .schema("CREATE TABLE t(id int PRIMARY KEY)")
        .replicate_public()
        .start(kernel);
    let n = cluster.node(0);
    // The manager is up (it has looked at the subscriptions at least once).
    common::wait_until(
        || "the spock manager to start".to_string(),
        60,
        || {
            (n.sql(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'spock manager%'",
            )
            .ok()?
                != "0")
                .then_some(())
        },
    );
    // The next xid, read from a snapshot (which assigns none), across a heartbeat interval.
    let next_xid = || {
        n.sql("SELECT pg_snapshot_xmax(pg_current_snapshot())")
            .unwrap()
    };
    let before = next_xid();
    std::thread::sleep(std::time::Duration::from_secs(12));
    assert_eq!(
        next_xid(),
        before,
        "PostgreSQL {major}: the idle node assigned xids"
    );
}
