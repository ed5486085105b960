//! Active-active replication between separate servers: every node subscribes to every other,
//! every node takes writes, conflicts resolve by last-update-wins (deletes included) and all
//! nodes end up with the same rows.

mod common;

// One test per major for each of these (`name::pg17`…); see `common::per_major`.
crate::per_major!(
    conflicting_storm_converges,
    every_node_takes_writes_and_nothing_loops,
    conflicts_resolve_by_last_update_wins_on_every_node,
    node_killed_during_writes_converges,
    clock_skew_does_not_break_causality,
    cascade_forwards_only_when_asked,
    concurrent_increments_all_count,
    merged_deltas_keep_the_winning_version,
    automatic_ddl_replication_in_a_mesh,
);

use harness::{Cluster, ClusterOptions, Node};
use std::time::{Duration, Instant};

const SCHEMA: &str = "CREATE TABLE kv(id int PRIMARY KEY, v text, who text); \
                      CREATE TABLE marks(node text, n int, PRIMARY KEY (node, n));";

/// `n` spock nodes n1…n<n> saving their conflict resolutions, each with `schema` and its
/// public tables in the `default` set.
fn spock_nodes(n: usize, schema: &str) -> common::Mesh {
    common::Mesh::new(n)
        .options(ClusterOptions::default().setting("spock.save_resolutions", "on"))
        .schema(schema)
        .replicate_public()
}

/// A full mesh of `n` such nodes (`sub_n<provider>_n<subscriber>`, default
/// `forward_origins = '{}'`, so each node sends only the changes made on it), all streaming.
fn mesh(kernel: &harness::Kernel, n: usize, schema: &str) -> Cluster {
    spock_nodes(n, schema).subscribe_all().start(kernel)
}

fn wait_for(node: &Node, query: &str, want: &str) {
    common::wait_for(node, "postgres", query, want, 60);
}

/// Writes a marker row on every node and waits until every node has all of them: each
/// node's stream is in order, so everything written before a marker has arrived.
fn quiesce(cluster: &Cluster, round: usize) {
    for node in &cluster.nodes {
        node.sql(&format!(
            "INSERT INTO marks VALUES ('{}', {round})",
            node.name
        ))
        .unwrap();
    }
    for node in &cluster.nodes {
        wait_for(
            node,
            &format!("SELECT count(*) FROM marks WHERE n = {round}"),
            &cluster.nodes.len().to_string(),
        );
    }
}

/// The ordered content of `kv` on each node.
fn contents(cluster: &Cluster) -> Vec<String> {
    cluster
        .nodes
        .iter()
        .map(|n| {
            n.sql("SELECT coalesce(string_agg(format('%s=%s/%s', id, v, who), ' ' ORDER BY id), '') FROM kv")
                .unwrap()
        })
        .collect()
}

fn assert_same(cluster: &Cluster, what: &str) -> String {
    let all = contents(cluster);
    for (node, c) in cluster.nodes.iter().zip(&all) {
        assert_eq!(
            *c,
            all[0],
            "{what}: {} differs from {}:\n{}",
            node.name,
            cluster.nodes[0].name,
            node.log_tail(40)
        );
    }
    all[0].clone()
}

fn set_subscriptions(cluster: &Cluster, enabled: bool) {
    for node in &cluster.nodes {
        let f = if enabled { "sub_enable" } else { "sub_disable" };
        node.sql(&format!(
            "SELECT spock.{f}(sub_name, true) FROM spock.subscription"
        ))
        .unwrap();
    }
    // Disabled: no apply worker left; enabled: every slot streaming again.
    for node in &cluster.nodes {
        if enabled {
            wait_for(
                node,
                "SELECT count(*) FROM pg_replication_slots WHERE active",
                &(cluster.nodes.len() - 1).to_string(),
            );
        } else {
            wait_for(
                node,
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'spock apply'",
                "0",
            );
        }
    }
}

fn every_node_takes_writes_and_nothing_loops(kernel: &harness::Kernel) {
    let cluster = mesh(kernel, 3, SCHEMA);
    for (i, node) in cluster.nodes.iter().enumerate() {
        node.sql(&format!(
            "INSERT INTO kv SELECT g, 'v' || g, 'n{}' FROM generate_series({}, {}) g",
            i + 1,
            i * 100 + 1,
            i * 100 + 100
        ))
        .unwrap();
        node.sql(&format!(
            "UPDATE kv SET v = v || '!' WHERE id % 10 = 0 AND who = 'n{}'",
            i + 1
        ))
        .unwrap();
        node.sql(&format!("DELETE FROM kv WHERE id = {}", i * 100 + 1))
            .unwrap();
    }
    quiesce(&cluster, 1);
    let all = assert_same(&cluster, "after independent writes");
    assert_eq!(all.split(' ').count(), 297, "{all}");
    assert!(all.contains("110=v110!/n2"), "{all}");

    // Each node's own rows are local (origin 0) there, and came straight from their
    // origin elsewhere: nothing travelled back or around.
    for (i, node) in cluster.nodes.iter().enumerate() {
        let origins = node
            .sql(
                "SELECT string_agg(format('%s:%s', who, coalesce(o.roname, 'local')), ' ' ORDER BY who) FROM \
                 (SELECT DISTINCT who, (pg_xact_commit_timestamp_origin(xmin)).roident FROM kv) r \
                 LEFT JOIN pg_replication_origin o ON o.roident = r.roident",
            )
            .unwrap();
        for (j, _) in cluster.nodes.iter().enumerate() {
            let want = if i == j {
                format!("n{}:local", j + 1)
            } else {
                format!(
                    "n{}:spk_postgres_n{}_sub_n{}_n{}",
                    j + 1,
                    j + 1,
                    j + 1,
                    i + 1
                )
            };
            assert!(origins.contains(&want), "{}: {origins}", node.name);
        }
        assert_eq!(
            node.sql("SELECT count(*) FROM spock.resolutions").unwrap(),
            "0",
            "{}: conflicts without concurrent writes",
            node.name
        );
    }
}

fn conflicts_resolve_by_last_update_wins_on_every_node(kernel: &harness::Kernel) {
    let cluster = mesh(kernel, 3, SCHEMA);
    let (n1, n2, n3) = (cluster.node(0), cluster.node(1), cluster.node(2));
    n1.sql("INSERT INTO kv VALUES (1, 'a', 'n1'), (2, 'a', 'n1'), (3, 'a', 'n1'), (4, 'a', 'n1'), (5, 'a', 'n1')")
        .unwrap();
    quiesce(&cluster, 1);

    // Partitioned: every node writes the same keys without seeing the others.
    set_subscriptions(&cluster, false);
    // insert-insert: the later insert wins.
    n3.sql("INSERT INTO kv VALUES (10, 'first', 'n3')").unwrap();
    n2.sql("INSERT INTO kv VALUES (10, 'second', 'n2')")
        .unwrap();
    // update-update: the later update wins.
    n2.sql("UPDATE kv SET v = 'early', who = 'n2' WHERE id = 1")
        .unwrap();
    n1.sql("UPDATE kv SET v = 'late', who = 'n1' WHERE id = 1")
        .unwrap();
    // update, then a later delete: the delete wins.
    n1.sql("UPDATE kv SET v = 'doomed', who = 'n1' WHERE id = 2")
        .unwrap();
    n3.sql("DELETE FROM kv WHERE id = 2").unwrap();
    // delete, then a later update: the update wins and revives the row.
    n2.sql("DELETE FROM kv WHERE id = 3").unwrap();
    n3.sql("UPDATE kv SET v = 'revived', who = 'n3' WHERE id = 3")
        .unwrap();
    // delete, then a later re-insert elsewhere: the row is back.
    n1.sql("DELETE FROM kv WHERE id = 4").unwrap();
    n2.sql("DELETE FROM kv WHERE id = 4; INSERT INTO kv VALUES (4, 'again', 'n2')")
        .unwrap();
    // re-insert, then a later delete elsewhere: gone.
    n3.sql("DELETE FROM kv WHERE id = 5; INSERT INTO kv VALUES (5, 'back', 'n3')")
        .unwrap();
    n1.sql("DELETE FROM kv WHERE id = 5").unwrap();
    set_subscriptions(&cluster, true);
    quiesce(&cluster, 2);

    let all = assert_same(&cluster, "after partitioned writes");
    assert_eq!(
        all, "1=late/n1 3=revived/n3 4=again/n2 10=second/n2",
        "last update must win"
    );
    // Each resolution is logged where it happened.
    let types = n1
        .sql("SELECT string_agg(DISTINCT conflict_type || ':' || conflict_resolution, ' ') FROM spock.resolutions")
        .unwrap();
    assert!(types.contains("update_update:keep_local"), "{types}");
    let log = n2.log_tail(400);
    assert!(log.contains("CONFLICT: remote"), "{log}");

    // The deletes above were decided by tombstones; once every peer has moved past them
    // (heartbeats keep idle peers moving) they are collected.
    for node in &cluster.nodes {
        wait_for(node, "SELECT count(*) FROM spock.tombstones", "0");
    }
    assert_eq!(
        n1.sql("SELECT count(*) FROM spock.progress").unwrap(),
        "2",
        "one progress row per peer"
    );
    assert_eq!(
        n1.sql("SELECT string_agg(origin_name || '>' || receiver_name || ':' || (replication_lag < interval '1 minute'), ' ' ORDER BY origin_name) FROM spock.lag_tracker")
            .unwrap(),
        "n2>n1:true n3>n1:true"
    );
    assert_eq!(
        n1.sql("SELECT count(*) FROM spock.get_apply_worker_status() WHERE worker_status IN ('idle', 'running')")
            .unwrap(),
        "2"
    );
}

/// Runs the pgbench `script` with 2 clients and `limit` (e.g. `-T 60`, `-t 5000`) on every node
/// at once and fails if any client failed.
fn pgbench_everywhere(cluster: &Cluster, script: &str, limit: [&str; 2]) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), script).unwrap();
    std::fs::set_permissions(
        file.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let clients: Vec<_> = cluster
        .nodes
        .iter()
        .map(|n| {
            n.client("pgbench", "postgres")
                .args(["-n", "-c", "2", limit[0], limit[1], "--max-tries=20", "-f"])
                .arg(file.path())
                .arg("postgres")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in clients {
        let out = c.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "pgbench failed:\n{text}");
    }
}

/// Clients on every node write conflicting INSERT/UPDATE/DELETE and DELETE + re-INSERT on the
/// same 50 keys, unthrottled; once quiet, every node holds the same rows, in every run, and no
/// apply worker restarted.
fn conflicting_storm_converges(kernel: &harness::Kernel) {
    let secs: u64 = std::env::var("PGEDGE_STORM_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    // Three storms on 17, the release the others are compared with, one on every other major
    // (each storm is a minute of the suite's time).
    let runs: usize = std::env::var("PGEDGE_STORM_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if kernel.major == 17 { 3 } else { 1 });
    let script = "\\set k random(1, 50)\n\
         \\set op random(1, 4)\n\
         \\if :op = 1\n\
         INSERT INTO kv VALUES (:k, 'i' || :client_id, current_setting('cluster_name')) ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v || 'u', who = EXCLUDED.who;\n\
         \\elif :op = 2\n\
         UPDATE kv SET v = v || '+', who = current_setting('cluster_name') WHERE id = :k;\n\
         \\elif :op = 3\n\
         DELETE FROM kv WHERE id = :k;\n\
         \\else\n\
         BEGIN;\n\
         DELETE FROM kv WHERE id = :k;\n\
         INSERT INTO kv VALUES (:k, 'r' || :client_id, current_setting('cluster_name')) ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v, who = EXCLUDED.who;\n\
         END;\n\
         \\endif\n";
    for run in 0..runs {
        let cluster = mesh(kernel, 3, SCHEMA);
        for node in &cluster.nodes {
            node.sql(&format!("ALTER SYSTEM SET cluster_name = '{}'", node.name))
                .unwrap();
            node.restart().unwrap();
        }
        for node in &cluster.nodes {
            wait_for(
                node,
                "SELECT count(*) FROM pg_replication_slots WHERE active",
                "2",
            );
        }
        let workers = |n: &Node| {
            n.sql("SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity WHERE backend_type = 'spock apply'")
                .unwrap()
        };
        let before: Vec<String> = cluster.nodes.iter().map(workers).collect();
        pgbench_everywhere(&cluster, script, ["-T", &secs.to_string()]);
        quiesce(&cluster, 1);
        let all = assert_same(&cluster, &format!("run {run}"));
        let after: Vec<String> = cluster.nodes.iter().map(workers).collect();
        assert_eq!(before, after, "apply workers restarted during the storm");
        let conflicts = cluster
            .node(0)
            .sql("SELECT count(*) FROM spock.resolutions")
            .unwrap();
        eprintln!(
            "run {run}: converged on {} rows; {conflicts} conflicts resolved on n1",
            all.split(' ').filter(|s| !s.is_empty()).count()
        );
    }
}

/// A node killed with `-m immediate` in the middle of the writes and started again: every node
/// converges and nothing committed is lost.
fn node_killed_during_writes_converges(kernel: &harness::Kernel) {
    let cluster = mesh(kernel, 3, SCHEMA);
    let n2 = cluster.node(1);
    let writers: Vec<_> = cluster
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            // Each node inserts its own keys, 200 transactions of 100 rows, for a few seconds.
            n.client("psql", "postgres")
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c"])
                .arg(format!("DO $$ BEGIN FOR i IN 1..200 LOOP EXECUTE format($f$INSERT INTO kv SELECT g, 'w', 'n{n}' FROM generate_series(%s, %s) g$f$, {base} + i * 100, {base} + i * 100 + 99); PERFORM pg_sleep(0.01); COMMIT; END LOOP; END $$", n = i + 1, base = i * 100_000))
                .arg("postgres")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    n2.stop(harness::StopMode::Immediate).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    n2.start().unwrap();
    let mut failed_on_n2 = false;
    for (i, c) in writers.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        if i == 1 {
            // n2's own writer died with its server; what it committed must survive.
            failed_on_n2 = !out.status.success();
        } else {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    for node in &cluster.nodes {
        wait_for(
            node,
            "SELECT count(*) FROM pg_replication_slots WHERE active",
            "2",
        );
    }
    quiesce(&cluster, 1);
    let counts: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| {
            n.sql("SELECT string_agg(format('%s:%s', who, c), ' ' ORDER BY who) FROM (SELECT who, count(*) c FROM kv GROUP BY who) x")
                .unwrap()
        })
        .collect();
    assert_same(&cluster, "after the crash");
    assert!(
        counts[0].contains("n1:20000") && counts[0].contains("n3:20000"),
        "{counts:?}"
    );
    eprintln!(
        "after the crash of n2 (its writer failed: {failed_on_n2}): {}",
        counts[0]
    );
}

/// One node's clock runs ahead. The kernel's commit clock is pulled past every applied remote
/// commit, so a local write made after seeing the skewed node's write still wins everywhere;
/// and a peer further ahead than `pgedge.commit_clock_max_skew` is held back, not followed.
fn clock_skew_does_not_break_causality(kernel: &harness::Kernel) {
    let cluster = mesh(kernel, 3, SCHEMA);
    let (n1, n2, n3) = (cluster.node(0), cluster.node(1), cluster.node(2));
    n1.sql("INSERT INTO kv VALUES (1, 'a', 'n1')").unwrap();
    quiesce(&cluster, 1);

    // Bound: n3 is 6 s ahead, n1 and n2 accept 2 s: n3's write waits on them.
    n3.configure("pgedge.commit_clock_test_offset", "6000")
        .unwrap();
    for n in [n1, n2] {
        n.configure("pgedge.commit_clock_max_skew", "2000").unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    n3.sql("INSERT INTO kv VALUES (2, 'ahead', 'n3')").unwrap();
    wait_for(n1, "SELECT count(*) FROM kv WHERE id = 2", "1");
    let held = started.elapsed();
    assert!(
        held >= Duration::from_millis(3000),
        "a write 6 s ahead arrived after {held:?} despite a 2 s bound"
    );
    assert!(
        n1.log_tail(200)
            .contains("is ahead of the local clock by more than pgedge.commit_clock_max_skew"),
        "{}",
        n1.log_tail(50)
    );

    // Causality: n3 runs 10 minutes ahead (accepted), n1 overwrites n3's value after seeing
    // it; n1's write is the later one on every node.
    for n in [n1, n2] {
        n.configure("pgedge.commit_clock_max_skew", "1h").unwrap();
    }
    n3.configure("pgedge.commit_clock_test_offset", "600000")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    n3.sql("UPDATE kv SET v = 'from-n3', who = 'n3' WHERE id = 1")
        .unwrap();
    wait_for(n1, "SELECT v FROM kv WHERE id = 1", "from-n3");
    n1.sql("UPDATE kv SET v = 'after-n3', who = 'n1' WHERE id = 1")
        .unwrap();
    quiesce(&cluster, 2);
    let all = assert_same(&cluster, "after the skewed writes");
    assert_eq!(all, "1=after-n3/n1 2=ahead/n3");
    // n1's commit was stamped after n3's future one.
    assert_eq!(
        n1.sql("SELECT pg_xact_commit_timestamp(xmin) > now() + interval '9 minutes' FROM kv WHERE id = 1")
            .unwrap(),
        "t"
    );
}

/// Cascading n1 → n2 → n3: n3 gets n1's changes through n2 only when its subscription asks for
/// `forward_origins = '{all}'`; by default n2 sends only its own changes.
fn cascade_forwards_only_when_asked(kernel: &harness::Kernel) {
    let cluster = spock_nodes(3, SCHEMA).start(kernel);
    let (n1, n2, n3) = (cluster.node(0), cluster.node(1), cluster.node(2));
    n2.sql(&format!(
        "SELECT spock.sub_create('sub_n1_n2', '{}')",
        n1.dsn("postgres")
    ))
    .unwrap();
    n3.sql(&format!(
        "SELECT spock.sub_create('sub_n2_n3', '{}')",
        n2.dsn("postgres")
    ))
    .unwrap();
    wait_for(
        n1,
        "SELECT count(*) FROM pg_replication_slots WHERE active",
        "1",
    );
    wait_for(
        n2,
        "SELECT count(*) FROM pg_replication_slots WHERE active",
        "1",
    );
    n1.sql("INSERT INTO kv VALUES (1, 'from n1', 'n1')")
        .unwrap();
    n2.sql("INSERT INTO kv VALUES (2, 'from n2', 'n2')")
        .unwrap();
    wait_for(n3, "SELECT count(*) FROM kv WHERE id = 2", "1");
    wait_for(n2, "SELECT count(*) FROM kv WHERE id = 1", "1");
    n2.sql("INSERT INTO kv VALUES (3, 'after', 'n2')").unwrap();
    wait_for(n3, "SELECT count(*) FROM kv WHERE id = 3", "1");
    assert_eq!(n3.sql("SELECT count(*) FROM kv WHERE id = 1").unwrap(), "0");

    n3.sql("SELECT spock.sub_drop('sub_n2_n3')").unwrap();
    n3.sql("TRUNCATE kv").unwrap();
    n3.sql(&format!(
        "SELECT spock.sub_create('sub_n2_n3', '{}', forward_origins := '{{all}}')",
        n2.dsn("postgres")
    ))
    .unwrap();
    wait_for(
        n2,
        "SELECT count(*) FROM pg_replication_slots WHERE active",
        "1",
    );
    n1.sql("INSERT INTO kv VALUES (4, 'through n2', 'n1')")
        .unwrap();
    wait_for(n3, "SELECT count(*) FROM kv WHERE id = 4", "1");
    assert_eq!(
        n3.sql("SELECT v FROM kv WHERE id = 4").unwrap(),
        "through n2"
    );
}

/// A table with a delta-apply counter (kernel old-value logging).
const COUNTERS: &str = "CREATE TABLE counters(id int PRIMARY KEY, n bigint NOT NULL, note text); \
                        CREATE TABLE marks(node text, n int, PRIMARY KEY (node, n));";

fn delta_mesh(kernel: &harness::Kernel) -> Cluster {
    let cluster = mesh(kernel, 3, COUNTERS);
    for node in &cluster.nodes {
        node.sql(
            "ALTER TABLE counters ALTER COLUMN n SET (log_old_value = true, \
             delta_apply_function = spock.delta_apply)",
        )
        .unwrap();
    }
    cluster
        .node(0)
        .sql("INSERT INTO counters SELECT g, 0, '' FROM generate_series(1, 5) g")
        .unwrap();
    quiesce(&cluster, 1);
    cluster
}

/// 3 × 10,000 concurrent increments of the same five counters on three nodes all count, on
/// every node.
fn concurrent_increments_all_count(kernel: &harness::Kernel) {
    let cluster = delta_mesh(kernel);
    pgbench_everywhere(
        &cluster,
        "\\set k random(1, 5)\nUPDATE counters SET n = n + 1 WHERE id = :k;\n",
        ["-t", "5000"],
    );
    quiesce(&cluster, 2);
    let per_node: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| {
            n.sql("SELECT sum(n) || ' ' || string_agg(n::text, ',' ORDER BY id) FROM counters")
                .unwrap()
        })
        .collect();
    for (node, got) in cluster.nodes.iter().zip(&per_node) {
        assert_eq!(got, &per_node[0], "{} differs", node.name);
    }
    assert!(per_node[0].starts_with("30000 "), "{per_node:?}");
}

/// A remote change that loses to a newer local row still adds its delta, and the merged row
/// keeps the local write's commit timestamp (kernel per-subtransaction override), also after a
/// crash; so a later conflict on the row is still judged by the winning write.
fn merged_deltas_keep_the_winning_version(kernel: &harness::Kernel) {
    let cluster = delta_mesh(kernel);
    let (n1, n2) = (cluster.node(0), cluster.node(1));
    // A physical standby of n1 replays the override from n1's WAL.
    let standby = Cluster::start(kernel, &ClusterOptions::default().preload(None)).unwrap();
    let sb = standby.node(0);
    sb.make_standby_of(n1, &[("shared_preload_libraries", "''")])
        .unwrap();
    set_subscriptions(&cluster, false);
    n2.sql("UPDATE counters SET n = n + 3, note = 'early' WHERE id = 1")
        .unwrap();
    n1.sql("UPDATE counters SET n = n + 5, note = 'late' WHERE id = 1")
        .unwrap();
    let winning = n1
        .sql("SELECT pg_xact_commit_timestamp(xmin) FROM counters WHERE id = 1")
        .unwrap();
    set_subscriptions(&cluster, true);
    quiesce(&cluster, 2);
    for node in &cluster.nodes {
        assert_eq!(
            node.sql("SELECT n || ' ' || note FROM counters WHERE id = 1")
                .unwrap(),
            "8 late",
            "{}",
            node.name
        );
    }
    let version = "SELECT pg_xact_commit_timestamp(xmin) FROM counters WHERE id = 1";
    assert_eq!(
        n1.sql(version).unwrap(),
        winning,
        "the merge made the row look older"
    );
    wait_for(
        sb,
        "SELECT n || ' ' || note FROM counters WHERE id = 1",
        "8 late",
    );
    assert_eq!(
        sb.sql(version).unwrap(),
        winning,
        "the standby replayed another version"
    );
    // The override is in the commit record: crash recovery replays it.
    n1.sql("SELECT 1").unwrap();
    n1.stop(harness::StopMode::Immediate).unwrap();
    n1.start().unwrap();
    assert_eq!(n1.sql(version).unwrap(), winning, "lost in crash recovery");
}

/// With automatic DDL replication, a table created on one node appears on every node, joins
/// the default set everywhere and takes writes from all of them; ALTER TABLE follows; DDL run
/// by replicate_ddl is not queued twice; deny_all_ddl refuses DDL.
fn automatic_ddl_replication_in_a_mesh(kernel: &harness::Kernel) {
    let cluster = mesh(kernel, 3, "SELECT 1");
    for node in &cluster.nodes {
        for sql in [
            "ALTER SYSTEM SET spock.enable_ddl_replication = on",
            "ALTER SYSTEM SET spock.include_ddl_repset = on",
            "SELECT pg_reload_conf()",
        ] {
            node.sql(sql).unwrap();
        }
    }
    let n1 = cluster.node(0);
    n1.sql("CREATE TABLE auto_t(id int PRIMARY KEY, v text)")
        .unwrap();
    for node in &cluster.nodes {
        wait_for(
            node,
            "SELECT count(*) FROM spock.replication_set_table t \
             JOIN spock.replication_set s ON s.set_id = t.set_id \
             JOIN spock.local_node l ON l.node_id = s.set_nodeid \
             WHERE s.set_name = 'default' AND t.set_reloid = to_regclass('public.auto_t')",
            "1",
        );
    }
    for (i, node) in cluster.nodes.iter().enumerate() {
        node.sql(&format!(
            "INSERT INTO auto_t SELECT g, 'n{}' FROM generate_series({}, {}) g",
            i + 1,
            i * 10 + 1,
            i * 10 + 10
        ))
        .unwrap();
    }
    for node in &cluster.nodes {
        wait_for(node, "SELECT count(*), sum(id) FROM auto_t", "30|465");
    }
    cluster
        .node(1)
        .sql("ALTER TABLE auto_t ADD COLUMN w int DEFAULT 5")
        .unwrap();
    for node in &cluster.nodes {
        wait_for(
            node,
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'auto_t'::regclass AND attname = 'w'",
            "1",
        );
    }
    cluster
        .node(2)
        .sql("INSERT INTO auto_t VALUES (31, 'n3', 9)")
        .unwrap();
    for node in &cluster.nodes {
        wait_for(node, "SELECT count(*), sum(w) FROM auto_t", "31|159");
    }

    // Any role's DDL is replicated (as that role); temporary objects stay here. Roles and
    // grants are DDL too.
    n1.sql("CREATE ROLE app").unwrap();
    n1.sql("GRANT CREATE ON SCHEMA public TO app").unwrap();
    for node in &cluster.nodes {
        wait_for(
            node,
            "SELECT has_schema_privilege('app', 'public', 'CREATE')",
            "t",
        );
    }
    let queued = "SELECT count(*) FROM spock.queue";
    let before = n1.sql(queued).unwrap();
    n1.sql(
        "SET ROLE app; CREATE TEMP TABLE scratch(x int); CREATE INDEX ON scratch(x); \
            DROP TABLE scratch",
    )
    .unwrap();
    assert_eq!(n1.sql(queued).unwrap(), before);
    n1.sql("SET ROLE app; CREATE TABLE app_t(id int PRIMARY KEY)")
        .unwrap();
    for node in &cluster.nodes {
        wait_for(
            node,
            "SELECT relowner::regrole::text FROM pg_class WHERE relname = 'app_t'",
            "app",
        );
    }

    n1.sql("SELECT spock.replicate_ddl('CREATE TABLE by_hand(id int PRIMARY KEY)')")
        .unwrap();
    for node in &cluster.nodes[1..] {
        wait_for(node, "SELECT to_regclass('by_hand') IS NOT NULL", "t");
    }
    assert_eq!(
        n1.sql("SELECT count(*) FROM spock.queue WHERE message::text LIKE '%by_hand%'")
            .unwrap(),
        "1"
    );
    for node in &cluster.nodes {
        assert_eq!(
            node.sql("SELECT count(*) FROM spock.exception_log")
                .unwrap(),
            "0",
            "{}",
            node.name
        );
    }
    let e = n1
        .sql("SET spock.deny_all_ddl = on; CREATE TABLE refused(id int)")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cannot execute CREATE TABLE within spock cluster"),
        "{e}"
    );
}
