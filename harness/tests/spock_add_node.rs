//! Growing and shrinking a live mesh: `spock.add_node` brings a fourth node into a three-node
//! mesh while all three keep writing (unique inserts, upserts and deletes of shared keys, a
//! delta-apply counter) and a 1M-row table is copied, and nothing is lost, duplicated or left
//! different; `remove_node` takes a node out and the rest keep replicating. Bad input and a
//! source killed mid-copy leave nothing behind.

mod common;

// One test per major for each of these (`name::pg17`…); see `common::per_major`.
crate::per_major!(
    add_and_remove_a_node_under_write_load,
    a_copy_keeps_thousands_of_row_versions,
);

use harness::{Cluster, Node, StopMode};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SCHEMA: &str = "CREATE TABLE events(node int, id bigint, k int, PRIMARY KEY (node, id)); \
     CREATE TABLE shared(k int PRIMARY KEY, v text, who int); \
     CREATE TABLE counters(k int PRIMARY KEY, c bigint NOT NULL DEFAULT 0); \
     ALTER TABLE counters ALTER COLUMN c SET (log_old_value = true, delta_apply_function = spock.delta_apply); \
     CREATE TABLE big(id int PRIMARY KEY, pad text); \
     CREATE SEQUENCE ids; \
     CREATE TABLE \"x$spock$;CREATE TABLE pwn();SELECT$spock$\"(id int PRIMARY KEY); \
     CREATE TABLE \"q'\"\"$spock$\"(id int PRIMARY KEY, v text);";

/// Names that end a `$spock$` quote early, with quotes of both kinds: add_node must copy
/// them as names and run nothing they contain (the first would create table `pwn`).
const INJECT: &str = "\"x$spock$;CREATE TABLE pwn();SELECT$spock$\"";
const QUOTES: &str = "\"q'\"\"$spock$\"";
/// A replication set the mesh subscribes to besides the defaults, with a row filter.
const SET: &str = "set$spock$'x";
const SECRET: &str = "Zodan-Secret-7";

/// One writer transaction: a unique row, an increment of a shared counter (delta apply), and
/// an upsert or (one time in ten) a delete of a shared key.
const WRITER: &str = "\\set k random(1, 20)\n\\set r random(1, 10)\nBEGIN;\n\
     INSERT INTO events(node, id, k) VALUES (:node, nextval('ids'), :k);\n\
     UPDATE counters SET c = c + 1 WHERE k = :k;\n\
     \\if :r = 1\nDELETE FROM shared WHERE k = :k;\n\\else\n\
     INSERT INTO shared(k, v, who) VALUES (:k, md5(random()::text), :node) \
     ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v, who = EXCLUDED.who;\n\\endif\nEND;\n";

const ROWS_BIG: usize = 1_000_000;

/// n1…n3 in a full mesh with the schema, n4 an empty database with the extension.
fn mesh(kernel: &harness::Kernel) -> Cluster {
    let cluster = common::Mesh::new(3)
        .spare(1)
        .schema(SCHEMA)
        .replicate_public()
        .start(kernel);
    for node in cluster.nodes.iter().take(3) {
        node.sql(&format!(
            "SELECT spock.repset_create({set}); \
             SELECT spock.repset_add_table({set}, {table}, false, NULL, 'v IS DISTINCT FROM ''$spock$x''')",
            set = lit(SET),
            table = lit(QUOTES)
        ))
        .unwrap();
    }
    common::subscribe_all(
        &cluster.nodes[..3],
        &format!(
            ", ARRAY['default', 'default_insert_only', 'ddl_sql', {}]",
            lit(SET)
        ),
    );
    let n1 = cluster.node(0);
    n1.sql("INSERT INTO counters SELECT g, 0 FROM generate_series(1, 20) g")
        .unwrap();
    n1.sql(&format!(
        "INSERT INTO {INJECT} VALUES (1); INSERT INTO {QUOTES} VALUES (1, 'a'), (2, '$spock$')"
    ))
    .unwrap();
    n1.sql(&format!(
        "INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, {ROWS_BIG}) g"
    ))
    .unwrap();
    for node in cluster.nodes.iter().take(3) {
        wait(node, "SELECT count(*) FROM big", &ROWS_BIG.to_string());
        wait(node, "SELECT count(*) FROM counters", "20");
    }
    cluster
}

/// An SQL string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn wait(node: &Node, sql: &str, want: &str) {
    common::wait_for(node, "postgres", sql, want, 120);
}

/// The DSNs carry a password (unused: the nodes trust local connections), which must never
/// reach another node's statement log.
fn add_node(cluster: &Cluster, src: usize, new: usize, name: &str) -> anyhow::Result<String> {
    cluster.node(new).sql(&format!(
        "CALL spock.add_node('{}', '{} password={SECRET}', '{name}', '{} password={SECRET}')",
        cluster.node(src).name,
        cluster.node(src).dsn("postgres"),
        cluster.node(new).dsn("postgres")
    ))
}

/// Nothing of an add of n4 exists anywhere: no node, subscription or table on n4, no
/// subscription or slot for it on the others (their own mesh slots only).
fn assert_nothing_left(cluster: &Cluster, what: &str) {
    let n4 = cluster.node(3);
    assert_eq!(
        n4.sql("SELECT (SELECT count(*) FROM spock.node) || '/' || (SELECT count(*) FROM spock.subscription) \
                || '/' || (SELECT count(*) FROM pg_tables WHERE schemaname = 'public') \
                || '/' || (SELECT count(*) FROM pg_replication_slots)")
            .unwrap(),
        "0/0/0/0",
        "{what}: n4 keeps something:\n{}",
        n4.log_tail(30)
    );
    for node in cluster.nodes.iter().take(3).filter(|n| n.is_running()) {
        assert_eq!(
            node.sql(
                "SELECT (SELECT count(*) FROM pg_replication_slots) || '/' || \
                      (SELECT count(*) FROM spock.subscription) || '/' || \
                      (SELECT count(*) FROM spock.node WHERE node_name = 'n4')"
            )
            .unwrap(),
            "2/2/0",
            "{what}: {} keeps something of n4",
            node.name
        );
    }
}

fn error_of(result: anyhow::Result<String>) -> String {
    match result {
        Ok(out) => panic!("add_node succeeded where it must fail: {out}"),
        Err(e) => e.to_string(),
    }
}

/// Bad input: clear errors, nothing created.
fn bad_input(cluster: &Cluster) {
    let (n1, n4) = (cluster.node(0), cluster.node(3));
    let e = error_of(n4.sql(&format!(
        "CALL spock.add_node('nope', '{}', 'n4', '{}')",
        n1.dsn("postgres"),
        n4.dsn("postgres")
    )));
    assert!(
        e.contains(
            "ERROR:  spock.add_node failed at step \"1 (checks)\": source node \"nope\" not found: src_dsn reaches node \"n1\""
        ),
        "{e}"
    );
    assert_nothing_left(cluster, "unknown source");
    let e = error_of(add_node(cluster, 0, 3, "n2"));
    assert!(
        e.contains("ERROR:  spock.add_node failed at step \"1 (checks)\": node \"n2\" already exists in the cluster"),
        "{e}"
    );
    assert_nothing_left(cluster, "name in use");
    n4.sql("CREATE TABLE t(a int)").unwrap();
    let e = error_of(add_node(cluster, 0, 3, "n4"));
    assert!(
        e.contains("ERROR:  spock.add_node failed at step \"1 (checks)\": the database of new node \"n4\" already has tables (public.t); add_node copies them from the source into an empty database"),
        "{e}"
    );
    n4.sql("DROP TABLE t").unwrap();
    assert_nothing_left(cluster, "new node with tables");
    // A password in a DSN never shows.
    let e = error_of(n4.sql(&format!(
        "CALL spock.add_node('n1', 'host=127.0.0.1 port=1 dbname=postgres password=s3cret', 'n4', '{}')",
        n4.dsn("postgres")
    )));
    assert!(
        e.contains("could not connect to node \"n1\"") && !e.contains("s3cret"),
        "{e}"
    );
    assert_nothing_left(cluster, "unreachable source");
}

/// The source dies while the new node copies from it: add_node fails at the copy and leaves
/// nothing behind on the nodes it can reach; after the source is back, it succeeds.
fn source_killed_mid_copy(cluster: &Cluster) {
    let (n1, n4) = (cluster.node(0), cluster.node(3));
    std::thread::scope(|s| {
        let adding = s.spawn(|| add_node(cluster, 0, 3, "n4"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let copying = n1
                .sql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY%big%'")
                .unwrap_or_default();
            if copying != "0" && !copying.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline && !adding.is_finished(),
                "the copy of big never showed on n1:\n{}",
                n4.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        n1.stop(StopMode::Immediate).unwrap();
        let e = error_of(adding.join().unwrap());
        assert!(
            e.contains("ERROR:  spock.add_node failed at step \"3 (copy from the source)\""),
            "{e}"
        );
    });
    assert_nothing_left(cluster, "source killed mid-copy");
    n1.start().unwrap();
    for node in cluster.nodes.iter().take(3) {
        wait(
            node,
            "SELECT count(*) FROM pg_replication_slots WHERE active AND slot_name NOT LIKE '%n4%'",
            "2",
        );
    }
}

/// pgbench writing `WRITER` on `node` at a fixed rate for `secs`, logging every transaction.
struct Writer {
    child: std::process::Child,
    log_prefix: std::path::PathBuf,
}

fn start_writer(
    node: &Node,
    id: usize,
    script: &std::path::Path,
    dir: &std::path::Path,
    secs: u64,
) -> Writer {
    let log_prefix = dir.join(format!("w{id}"));
    let child = node
        .client("pgbench", "postgres")
        .args(["-n", "-c", "2", "-R", "40", "--max-tries=20", "-l", "-D"])
        .arg(format!("node={id}"))
        .arg(format!("--log-prefix={}", log_prefix.display()))
        .args(["-T", &secs.to_string(), "-f"])
        .arg(script)
        .arg("postgres")
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    Writer { child, log_prefix }
}

/// Waits for the writer; returns its committed transactions and, of those that started in
/// `window` (epoch µs), the longest one.
fn finish_writer(w: Writer, window: (u128, u128)) -> (u64, Duration) {
    let out = w.child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pgbench failed:\n{text}");
    let processed: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|l| l.split('/').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no transaction count in:\n{text}"));
    let dir = w.log_prefix.parent().unwrap();
    let prefix = w
        .log_prefix
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mut longest = Duration::ZERO;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if !entry.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        for line in std::fs::read_to_string(entry.path()).unwrap().lines() {
            // client_id transaction_no time script_no time_epoch time_us [schedule_lag]
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 6 {
                continue;
            }
            let (Ok(total), Ok(epoch), Ok(frac)) = (
                f[2].parse::<u128>(),
                f[4].parse::<u128>(),
                f[5].parse::<u128>(),
            ) else {
                continue;
            };
            // Throttled: the time counts from the scheduled start; the lag behind the
            // schedule is pgbench's own, not the server's.
            let lag = f.get(6).and_then(|l| l.parse::<u128>().ok()).unwrap_or(0);
            let us = total.saturating_sub(lag);
            let end = epoch * 1_000_000 + frac;
            let start = end.saturating_sub(us);
            if start >= window.0 && start <= window.1 {
                longest = longest.max(Duration::from_micros(us as u64));
            }
        }
    }
    (processed, longest)
}

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

/// The content of every table on `node`, as one digest per table.
fn digest(node: &Node) -> String {
    node.sql(
        "SELECT (SELECT count(*) || ':' || md5(coalesce(string_agg(format('%s/%s/%s', node, id, k), ',' ORDER BY node, id), '')) FROM events) \
         || ' ' || (SELECT count(*) || ':' || md5(coalesce(string_agg(format('%s/%s/%s', k, v, who), ',' ORDER BY k), '')) FROM shared) \
         || ' ' || (SELECT md5(string_agg(format('%s/%s', k, c), ',' ORDER BY k)) FROM counters) \
         || ' ' || (SELECT count(*) || ':' || sum(hashtext(id || pad)) FROM big)",
    )
    .unwrap()
}

fn assert_same(nodes: &[&Node], what: &str) {
    let first = digest(nodes[0]);
    for n in &nodes[1..] {
        assert_eq!(
            digest(n),
            first,
            "{what}: {} differs from {}:\n{}",
            n.name,
            nodes[0].name,
            n.log_tail(40)
        );
    }
}

fn add_and_remove_a_node_under_write_load(kernel: &harness::Kernel) {
    let cluster = mesh(kernel);
    let (n1, n2, n3, n4) = (
        cluster.node(0),
        cluster.node(1),
        cluster.node(2),
        cluster.node(3),
    );
    bad_input(&cluster);
    source_killed_mid_copy(&cluster);
    // Every statement the old nodes run is logged, and none may show a password.
    for n in [n1, n2, n3] {
        n.configure("log_statement", "'all'").unwrap();
        n.configure("log_min_error_statement", "'error'").unwrap();
    }

    // Every old node writes throughout; n4 joins from n2 meanwhile.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("writer.sql");
    std::fs::write(&script, WRITER).unwrap();
    const SECS: u64 = 45;
    let writers: Vec<Writer> = (0..3)
        .map(|i| start_writer(cluster.node(i), i + 1, &script, dir.path(), SECS))
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let started = now_us();
    let added = Instant::now();
    let out = add_node(&cluster, 1, 3, "n4");
    let took = added.elapsed();
    let ended = now_us();
    let out = out.unwrap_or_else(|e| {
        panic!(
            "add_node failed: {e}\nn4:\n{}\nn2:\n{}",
            n4.log_tail(60),
            n2.log_tail(30)
        )
    });
    assert!(
        took < Duration::from_secs(SECS - 10),
        "add_node took {took:?}, too long to leave writes after it"
    );
    let mut total = 0;
    for (i, w) in writers.into_iter().enumerate() {
        let (processed, longest) = finish_writer(w, (started, ended));
        assert!(processed > 0);
        assert!(
            longest <= Duration::from_secs(1),
            "a writer on n{} waited {longest:?} for a commit during add_node ({out})",
            i + 1
        );
        // Every acknowledged row is on its own node.
        assert_eq!(
            cluster
                .node(i)
                .sql(&format!(
                    "SELECT count(*) FROM events WHERE node = {}",
                    i + 1
                ))
                .unwrap(),
            processed.to_string()
        );
        total += processed;
    }
    let all = [n1, n2, n3, n4];
    for n in all {
        wait(n, "SELECT count(*) FROM events", &total.to_string());
        // Every increment counted once, on every node (delta apply, no change applied twice).
        wait(n, "SELECT sum(c) FROM counters", &total.to_string());
    }
    // The new node's own writes reach the others.
    n4.sql("INSERT INTO events VALUES (4, 1, 0)").unwrap();
    n4.sql("UPDATE counters SET c = c + 1 WHERE k = 1").unwrap();
    for n in all {
        wait(n, "SELECT count(*) FROM events", &(total + 1).to_string());
        wait(n, "SELECT sum(c) FROM counters", &(total + 1).to_string());
    }
    // Upserts and deletes of shared keys settle the same everywhere.
    std::thread::sleep(Duration::from_secs(1));
    assert_same(&all, "after add_node");
    // Names that end a `$spock$` quote were copied as names, and nothing they hold ran; the
    // set with such a name, its row filter, and the subscriptions to it came along.
    for n in all {
        assert_eq!(
            n.sql(&format!(
                "SELECT (SELECT count(*) FROM {INJECT}) || '/' || \
                 (SELECT string_agg(id || v, ',' ORDER BY id) FROM {QUOTES}) || '/' || \
                 coalesce(to_regclass('pwn')::text, 'none') || '/' || \
                 (SELECT count(*) FROM spock.subscription WHERE {} = ANY (sub_replication_sets))",
                lit(SET)
            ))
            .unwrap(),
            "1/1a,2$spock$/none/3",
            "{}",
            n.name
        );
    }
    assert_eq!(
        n4.sql(&format!(
            "SELECT pg_get_expr(t.set_row_filter, t.set_reloid) FROM spock.replication_set_table t \
             JOIN spock.replication_set s USING (set_id) WHERE s.set_name = {}",
            lit(SET)
        ))
        .unwrap(),
        "(v IS DISTINCT FROM '$spock$x'::text)"
    );
    for n in [n1, n2, n3] {
        let log = n.log_tail(usize::MAX);
        assert!(
            log.contains("spock_zodan.dsn"),
            "{}: add_node's statements were not logged",
            n.name
        );
        assert!(
            !log.contains(SECRET),
            "{}'s log shows the password:\n{}",
            n.name,
            log.lines()
                .filter(|l| l.contains(SECRET))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    for n in all {
        assert_eq!(
            n.sql("SELECT count(*) FROM spock.subscription WHERE sub_enabled")
                .unwrap(),
            "3",
            "{} is not subscribed to every other node",
            n.name
        );
    }

    // n3 leaves; the others go on. A first attempt fails midway (n2 refuses to drop its
    // subscription from n3, after n1 dropped its own): the error names the step, and a second
    // run completes what the first left.
    let remove = format!("CALL spock.remove_node('n3', '{}')", n3.dsn("postgres"));
    n2.sql(
        "SET spock.enable_ddl_replication = off; \
         CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$; \
         CREATE TRIGGER refuse BEFORE DELETE ON spock.subscription \
         FOR EACH ROW EXECUTE FUNCTION public.refuse()",
    )
    .unwrap();
    let e = match n3.sql(&remove) {
        Ok(out) => panic!("remove_node succeeded where it must fail: {out}"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("3 (the others drop their subscriptions from this node)")
            && e.contains("refused by the test"),
        "{e}"
    );
    assert_eq!(
        n1.sql(
            "SELECT count(*) FROM spock.subscription s JOIN spock.node n \
                ON n.node_id = s.sub_origin WHERE n.node_name = 'n3'"
        )
        .unwrap(),
        "0",
        "n1 kept its subscription from n3 after the failed run"
    );
    n2.sql(
        "SET spock.enable_ddl_replication = off; \
         DROP TRIGGER refuse ON spock.subscription; DROP FUNCTION public.refuse()",
    )
    .unwrap();
    n3.sql(&remove).unwrap();
    assert_eq!(
        n3.sql("SELECT (SELECT count(*) FROM spock.node) || '/' || (SELECT count(*) FROM pg_replication_slots)").unwrap(),
        "0/0"
    );
    let rest = [n1, n2, n4];
    for n in rest {
        assert_eq!(
            n.sql("SELECT (SELECT count(*) FROM spock.subscription) || '/' || \
                   (SELECT count(*) FROM spock.node WHERE node_name = 'n3') || '/' || \
                   (SELECT count(*) FROM spock.progress p JOIN spock.node x ON x.node_id = p.remote_node_id WHERE x.node_name = 'n3')")
                .unwrap(),
            "2/0/0",
            "{} keeps something of n3",
            n.name
        );
        wait(
            n,
            "SELECT count(*) FROM pg_replication_slots WHERE active",
            "2",
        );
    }
    for (i, n) in rest.iter().enumerate() {
        n.sql(&format!(
            "INSERT INTO events VALUES (10, {i}, 0); DELETE FROM shared WHERE k = {}",
            i + 1
        ))
        .unwrap();
    }
    for n in rest {
        wait(n, "SELECT count(*) FROM events WHERE node = 10", "3");
    }
    assert_same(&rest, "after remove_node");
    // Tombstones are still collected (every remaining subscription moves past them).
    for n in rest {
        common::wait_for(
            n,
            "postgres",
            "SELECT count(*) FROM spock.tombstones",
            "0",
            90,
        );
    }
}

/// A copy's snapshot waits a bounded time for the provider's open transactions, its apply
/// workers going on meanwhile. Rows committed after the last change of another node the
/// provider applied keep their own versions in a copy: 10,000 rows committed one by one are
/// 10,000 versions, each its own subtransaction; the copy must keep them all (row 0, written
/// by n2, which n3 does not know, reads as n1's). (Without the early release of each
/// subtransaction's xid lock this still passed here, up to 40,000 versions with
/// max_locks_per_transaction = 10: it checks the path at scale, not the lock release.)
fn a_copy_keeps_thousands_of_row_versions(kernel: &harness::Kernel) {
    const ROWS: usize = 10_000;
    let cluster = common::Mesh::new(3).start(kernel);
    let (n1, n2, n3) = (cluster.node(0), cluster.node(1), cluster.node(2));
    for n in [n1, n2] {
        n.sql("CREATE TABLE versions(id int PRIMARY KEY, v text)")
            .unwrap();
        n.sql("SELECT spock.repset_add_all_tables('default', ARRAY['public'])")
            .unwrap();
    }
    // n1 and n2 subscribe to each other (sub_n2_n1, sub_n1_n2); n3 comes later.
    common::subscribe_all(&cluster.nodes[..2], "");

    // A session on n1 idle in a transaction that holds an xid: no copy snapshot can be taken
    // there while it lasts. The copy (of an empty set) gives up after a bounded wait and says
    // why, instead of holding n1's apply workers at the commit gate: n2's writes reach n1.
    // First the same session holds the commit gate as an apply worker does while it applies
    // (shared): the copy cannot take it (it tells the lock timeout by its SQLSTATE, not its
    // text, which is in the provider's language), gives up after its attempts, and says so.
    n1.sql("SELECT spock.repset_create('empty')").unwrap();
    let mut idle = n1
        .client("psql", "postgres")
        .args(["-X", "-q", "-d", "postgres"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let stdin = idle.stdin.as_mut().unwrap();
        stdin
            .write_all(
                b"SELECT pg_advisory_lock_shared(3298534906381); \
                  BEGIN; SELECT pg_current_xact_id();\n",
            )
            .unwrap();
        stdin.flush().unwrap();
    }
    wait(
        n1,
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' \
         AND backend_xid IS NOT NULL",
        "1",
    );
    n3.sql(&format!(
        "SELECT spock.sub_create('sub_empty', '{}', ARRAY['empty'], false, true)",
        n1.dsn("postgres")
    ))
    .unwrap();
    common::wait_until(
        || {
            format!(
                "the copy did not report the held gate:\n{}",
                n3.log_tail(40)
            )
        },
        90,
        || {
            n3.log_tail(usize::MAX)
                .contains("could not take the provider's commit gate")
                .then_some(())
        },
    );
    {
        use std::io::Write;
        let stdin = idle.stdin.as_mut().unwrap();
        stdin
            .write_all(b"SELECT pg_advisory_unlock_shared(3298534906381);\n")
            .unwrap();
        stdin.flush().unwrap();
    }
    common::wait_until(
        || {
            format!(
                "the copy did not report the open transaction:\n{}",
                n3.log_tail(40)
            )
        },
        90,
        || {
            n3.log_tail(usize::MAX)
                .contains("session idle in transaction")
                .then_some(())
        },
    );
    n2.sql("INSERT INTO versions VALUES (0, 'during the copy')")
        .unwrap();
    common::wait_for(
        n1,
        "postgres",
        "SELECT count(*) FROM versions WHERE id = 0",
        "1",
        60,
    );
    // The copy tries again and holds the gate while it waits for the snapshot: that gate's
    // session is killed, then the open transaction ends, so the snapshot is taken. The
    // positions read after it may be past the snapshot (n1's apply workers were free to
    // commit): the copy sees the gate gone, says so, and tries again.
    common::wait_for(
        n1,
        "postgres",
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'sub_empty_snap' AND l.locktype = 'advisory' \
         AND l.mode = 'ExclusiveLock' AND l.granted",
        "1",
        90,
    );
    n1.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'sub_empty_snap'",
    )
    .unwrap();
    drop(idle.stdin.take());
    idle.wait().unwrap();
    common::wait_for(
        n3,
        "postgres",
        "SELECT sync_status FROM spock.local_sync_status s JOIN spock.subscription b \
         ON b.sub_id = s.sync_subid WHERE b.sub_name = 'sub_empty' AND sync_nspname IS NULL",
        "r",
        120,
    );
    assert!(
        n3.log_tail(usize::MAX)
            .contains("the provider's commit gate was lost while the snapshot was taken"),
        "PostgreSQL {}: the copy did not notice its gate was lost:\n{}",
        kernel.major,
        n3.log_tail(40)
    );
    n3.sql("SELECT spock.sub_drop('sub_empty')").unwrap();

    // n1's rows, each committed after the last change of n2's it applied, keep their versions.
    n1.sql(&format!(
        "DO $$ BEGIN FOR i IN 1..{ROWS} LOOP \
         INSERT INTO versions VALUES (i, md5(i::text)); COMMIT; END LOOP; END $$"
    ))
    .unwrap();
    wait(n2, "SELECT count(*) FROM versions", &(ROWS + 1).to_string());
    n3.sql(&format!(
        "SELECT spock.sub_create('sub_n1_n3', '{}', synchronize_structure := true, \
         synchronize_data := true)",
        n1.dsn("postgres")
    ))
    .unwrap();
    common::wait_for(
        n3,
        "postgres",
        "SELECT sync_status FROM spock.local_sync_status WHERE sync_nspname IS NULL",
        "r",
        180,
    );
    // Every row with its own commit timestamp, as on n1.
    let versions = "SELECT count(*) || '/' || count(DISTINCT pg_xact_commit_timestamp(xmin)) \
                    || '/' || md5(string_agg(id || v, ',' ORDER BY id)) FROM versions";
    let on_n1 = n1.sql(versions).unwrap();
    assert!(
        on_n1.starts_with(&format!("{}/{}/", ROWS + 1, ROWS + 1)),
        "{on_n1}"
    );
    assert_eq!(n3.sql(versions).unwrap(), on_n1, "{}", n3.log_tail(40));
    let log = n3.log_tail(usize::MAX);
    assert!(!log.contains("out of shared memory"), "{log}");
}
