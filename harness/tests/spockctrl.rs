//! `spockctrl`, the staged kernel's cluster command line, against real nodes: a 3-node mesh from
//! a pgEdge cluster spec (twice: nothing changes; then a dropped subscription is rebuilt),
//! replication every way, node/repset/sub/sql commands, table-diff finding exactly the rows
//! changed behind replication's back, table-repair and a clean diff, a workflow file that adds
//! a fourth node, `cluster status` with a node killed, and the errors for bad files and
//! unreachable nodes.

mod common;

// One test per major for each of these (`name::pg17`…); see `common::per_major`.
crate::per_major!(
    cluster_from_a_spec_diff_repair_workflow_and_status,
    bad_files_and_unreachable_nodes_are_named,
    live_add_and_remove_through_the_cli,
    diff_and_repair_ignore_each_nodes_settings,
);

use harness::{Cluster, ClusterOptions, Kernel, Node, StopMode};
use serde_json::Value;
use std::{path::Path, process::Command};

/// Rows of the table compared by table-diff (enough ranges to exercise the narrowing).
const BIG_ROWS: i64 = 200_000;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn spockctrl(kernel: &Kernel, dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(kernel.bin("spockctrl"))
        .args(args)
        .envs(kernel.env())
        .current_dir(dir)
        .output()
        .expect("the staged kernel has bin/spockctrl");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs and expects `code`; the output on failure says everything.
fn expect(kernel: &Kernel, dir: &Path, args: &[&str], code: i32) -> Run {
    let r = spockctrl(kernel, dir, args);
    assert_eq!(
        r.code,
        code,
        "spockctrl {}\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        r.stdout,
        r.stderr
    );
    r
}

fn json(r: &Run) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

fn spec(nodes: &[(&str, u16)], password: Option<&str>) -> Value {
    let groups: Vec<Value> = nodes
        .iter()
        .map(|(n, port)| {
            serde_json::json!({ "name": n, "is_active": "on", "public_ip": "127.0.0.1",
                                "private_ip": "127.0.0.1", "port": port, "path": "/unused",
                                "ssh": { "os_user": "pgedge", "private_key": "" },
                                "replicas": 0, "sub_nodes": [] })
        })
        .collect();
    serde_json::json!({
        "json_version": "1.1", "cluster_name": "demo", "log_level": "debug",
        "update_date": "2025-01-01GMT",
        "pgedge": { "pg_version": "17", "auto_start": "off",
                    "spock": { "spock_version": "5.0.5", "auto_ddl": "on" },
                    "databases": [ { "db_name": "postgres", "db_user": "postgres",
                                     "db_password": password.unwrap_or("") } ] },
        "node_groups": groups
    })
}

fn config(cluster: &Cluster) -> Value {
    let nodes: Vec<Value> = cluster
        .nodes
        .iter()
        .map(|n| {
            serde_json::json!({ "node_name": n.name, "postgres": {
                "postgres_ip": "127.0.0.1", "postgres_port": n.port, "postgres_user": "postgres",
                "postgres_password": "", "postgres_db": "postgres" } })
        })
        .collect();
    serde_json::json!({
        "global": { "spock": { "cluster_name": "demo", "version": "1.0.0" },
                    "log": { "log_level": "INFO", "log_destination": "console" } },
        "spock-nodes": nodes
    })
}

fn write(dir: &Path, name: &str, v: &Value) {
    std::fs::write(dir.join(name), serde_json::to_string_pretty(v).unwrap()).unwrap();
}

fn wait(node: &Node, sql: &str, want: &str) {
    common::wait_for(node, "postgres", sql, want, 60);
}

/// Keys the diff reported, sorted numerically.
fn diff_keys(report: &Value) -> Vec<i64> {
    let mut keys: Vec<i64> = report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["key"]["id"].as_str().unwrap().parse().unwrap())
        .collect();
    keys.sort();
    keys
}

/// Four servers; `cluster.json` (a spec of n1–n3) and `spockctrl.json` (all four) in the
/// cluster's directory.
fn four_nodes_three_in_spec(kernel: &Kernel) -> (Cluster, std::path::PathBuf) {
    let cluster = Cluster::start(kernel, &ClusterOptions::default().nodes(4)).unwrap();
    let dir = cluster.dir().to_path_buf();
    let three: Vec<(&str, u16)> = cluster.nodes[..3]
        .iter()
        .map(|n| (n.name.as_str(), n.port))
        .collect();
    write(&dir, "cluster.json", &spec(&three, None));
    write(&dir, "spockctrl.json", &config(&cluster));
    (cluster, dir)
}

fn cluster_from_a_spec_diff_repair_workflow_and_status(kernel: &harness::Kernel) {
    let (cluster, dir) = four_nodes_three_in_spec(kernel);
    let (n1, n2, n3, n4) = (
        cluster.node(0),
        cluster.node(1),
        cluster.node(2),
        cluster.node(3),
    );

    // A mesh from the spec; the second run finds everything in place.
    let first = expect(
        kernel,
        &dir,
        &["--spec", "cluster.json", "cluster", "init"],
        0,
    );
    assert!(
        first.stdout.contains("subscription sub_n1n2 | created"),
        "{}",
        first.stdout
    );
    let again = expect(
        kernel,
        &dir,
        &["--spec", "cluster.json", "cluster", "init"],
        0,
    );
    assert!(
        again.stdout.contains("nothing changed") && !again.stdout.contains("created"),
        "{}",
        again.stdout
    );
    for (node, subs) in [
        (n1, "sub_n2n1,sub_n3n1"),
        (n2, "sub_n1n2,sub_n3n2"),
        (n3, "sub_n1n3,sub_n2n3"),
    ] {
        wait(
            node,
            "SELECT string_agg(subscription_name, ',' ORDER BY 1) FROM spock.sub_show_status() \
             WHERE status = 'replicating'",
            subs,
        );
        assert_eq!(node.sql("SHOW spock.enable_ddl_replication").unwrap(), "on");
    }
    // A partly built cluster is completed: only the missing subscription is made.
    n3.sql("SELECT spock.sub_drop('sub_n1n3')").unwrap();
    let mended = expect(
        kernel,
        &dir,
        &["--spec", "cluster.json", "-f", "json", "cluster", "init"],
        0,
    );
    let mended = json(&mended);
    let created: Vec<&Value> = mended
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "created")
        .collect();
    assert_eq!(created.len(), 1, "{mended}");
    assert_eq!(created[0]["object"], "subscription sub_n1n3");

    // Replication every way: DDL from n1 (automatic DDL), rows from every node.
    n1.sql("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .unwrap();
    for node in [n1, n2, n3] {
        wait(
            node,
            "SELECT count(*) FROM spock.tables WHERE relname = 't' AND set_name = 'default'",
            "1",
        );
    }
    for (i, node) in [n1, n2, n3].iter().enumerate() {
        node.sql(&format!(
            "INSERT INTO t SELECT g, '{}' FROM generate_series({}, {}) g",
            node.name,
            i * 10 + 1,
            i * 10 + 10
        ))
        .unwrap();
    }
    for node in [n1, n2, n3] {
        wait(node, "SELECT count(*), sum(id) FROM t", "30|465");
    }

    // The upstream-style commands.
    let versions = json(&expect(
        kernel,
        &dir,
        &["-f", "json", "node", "spock-version"],
        0,
    ));
    assert_eq!(versions.as_array().unwrap().len(), 4);
    assert_eq!(versions[0]["spock_version"], "5.0.5");
    assert_eq!(versions[3]["spock_version"], "not installed");
    expect(
        kernel,
        &dir,
        &[
            "repset",
            "create",
            "extra",
            "--node=n1",
            "--replicate_truncate=false",
        ],
        0,
    );
    expect(
        kernel,
        &dir,
        &["repset", "add-table", "--node", "n1", "extra", "public.t"],
        0,
    );
    let tables = json(&expect(
        kernel,
        &dir,
        &[
            "-f",
            "json",
            "repset",
            "list-tables",
            "extra",
            "--node",
            "n1",
        ],
        0,
    ));
    assert_eq!(tables[0]["table"], "t");
    assert_eq!(
        n1.sql("SELECT replicate_truncate FROM spock.replication_set WHERE set_name = 'extra'")
            .unwrap(),
        "f"
    );
    expect(
        kernel,
        &dir,
        &["repset", "remove-table", "extra", "public.t", "--node=n1"],
        0,
    );
    expect(kernel, &dir, &["repset", "drop", "extra", "--node=n1"], 0);
    let status = json(&expect(
        kernel,
        &dir,
        &["-f", "json", "sub", "show-status", "--node=n2"],
        0,
    ));
    assert_eq!(status.as_array().unwrap().len(), 2);
    assert!(!status.to_string().contains("password"));
    let sql = json(&expect(
        kernel,
        &dir,
        &["-f", "json", "sql", "n3", "SELECT count(*) AS c FROM t"],
        0,
    ));
    assert_eq!(sql[0]["c"], "30");
    let gucs = expect(kernel, &dir, &["node", "gucs", "--node", "n1"], 0);
    assert!(
        gucs.stdout
            .lines()
            .any(|l| l.starts_with("track_commit_timestamp ") && l.ends_with("| on")),
        "{}",
        gucs.stdout
    );

    // table-diff: the same everywhere, then 10 rows changed on n2 behind replication's back.
    n1.sql("CREATE TABLE big (id int PRIMARY KEY, v text, n numeric)")
        .unwrap();
    for node in [n2, n3] {
        wait(
            node,
            "SELECT count(*) FROM spock.tables WHERE relname = 'big' AND set_name = 'default'",
            "1",
        );
    }
    n1.sql(&format!(
        "INSERT INTO big SELECT g, md5(g::text), g / 7.0 FROM generate_series(1, {BIG_ROWS}) g"
    ))
    .unwrap();
    for node in [n1, n2, n3] {
        wait(node, "SELECT count(*) FROM big", &BIG_ROWS.to_string());
        node.sql("ANALYZE big").unwrap();
    }
    let same = expect(
        kernel,
        &dir,
        &["--spec", "cluster.json", "table-diff", "public.big"],
        0,
    );
    assert!(
        same.stdout.contains(&format!(
            "TABLES MATCH: public.big is the same on n1, n2, n3 ({BIG_ROWS} rows)"
        )),
        "{}",
        same.stdout
    );
    n2.sql(
        "BEGIN; SELECT spock.repair_mode(true); \
         UPDATE big SET v = 'changed' WHERE id IN (1, 777, 5000, 77777, 123456, 199999, 200000, 150001); \
         DELETE FROM big WHERE id = 4242; INSERT INTO big VALUES (300001, 'only on n2', 0); \
         SELECT spock.repair_mode(false); COMMIT",
    )
    .unwrap();
    let changed = vec![
        1, 777, 4242, 5000, 77777, 123456, 150001, 199999, 200000, 300001,
    ];
    std::thread::sleep(std::time::Duration::from_secs(1));
    for node in [n1, n3] {
        assert_eq!(
            node.sql("SELECT count(*) FROM big WHERE v = 'changed' OR id = 300001")
                .unwrap(),
            "0"
        );
    }
    let diff = expect(
        kernel,
        &dir,
        &[
            "--spec",
            "cluster.json",
            "-f",
            "json",
            "table-diff",
            "public.big",
        ],
        2,
    );
    let report = json(&diff);
    assert_eq!(diff_keys(&report), changed, "{}", diff.stdout);
    assert!(
        diff.stderr
            .contains("Found 10 differences in public.big between n1, n2, n3"),
        "{}",
        diff.stderr
    );
    let d777 = report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["key"]["id"] == "777")
        .unwrap();
    assert_eq!(d777["versions"]["n2"]["values"]["v"], "changed");
    assert_eq!(d777["versions"]["n2"]["origin"], "n2");
    assert_eq!(d777["versions"]["n1"]["origin"], "n1");
    assert_eq!(
        d777["versions"]["n3"]["origin"], "n1",
        "n3's copy came from n1: {d777}"
    );
    assert!(d777["versions"]["n1"]["commit_ts"].is_string());
    let missing = report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["key"]["id"] == "300001")
        .unwrap();
    assert!(missing["versions"]["n1"].is_null() && missing["versions"]["n3"].is_null());
    // Table output: one line per version and the verdict.
    let table = expect(kernel, &dir, &["table-diff", "big", "--nodes", "n1,n2"], 2);
    assert!(
        table.stdout.contains("(20 rows)")
            && table
                .stdout
                .contains("Found 10 differences in public.big between n1, n2"),
        "{}",
        table.stdout
    );

    // table-repair: a dry run changes nothing; the repair makes n2 equal to n1 without
    // replicating, keeping n1's versions' commit timestamps and origin.
    let dry = expect(
        kernel,
        &dir,
        &[
            "--spec",
            "cluster.json",
            "table-repair",
            "big",
            "--source-of-truth",
            "n1",
            "--dry-run",
        ],
        0,
    );
    assert!(
        dry.stdout.contains("n2: 1 inserted, 8 updated, 1 deleted"),
        "{}",
        dry.stdout
    );
    assert_eq!(
        n2.sql("SELECT count(*) FROM big WHERE v = 'changed'")
            .unwrap(),
        "8"
    );
    let n1_ts = n1
        .sql("SELECT pg_xact_commit_timestamp(xmin) FROM big WHERE id = 777")
        .unwrap();
    let fixed = expect(
        kernel,
        &dir,
        &[
            "--spec",
            "cluster.json",
            "table-repair",
            "big",
            "--source-of-truth",
            "n1",
        ],
        0,
    );
    assert!(
        fixed
            .stdout
            .contains("repaired public.big from n1 (n2: 1 inserted, 8 updated, 1 deleted)"),
        "{}",
        fixed.stdout
    );
    let clean = expect(
        kernel,
        &dir,
        &["--spec", "cluster.json", "table-diff", "big"],
        0,
    );
    assert!(clean.stdout.contains("TABLES MATCH"), "{}", clean.stdout);
    for node in [n1, n2, n3] {
        assert_eq!(
            node.sql("SELECT count(*), count(*) FILTER (WHERE v = 'changed'), max(id), md5(string_agg(v, '' ORDER BY id)) = (SELECT md5(string_agg(md5(g::text), '' ORDER BY g)) FROM generate_series(1, 200000) g) FROM big").unwrap(),
            format!("{BIG_ROWS}|0|{BIG_ROWS}|t")
        );
    }
    assert_eq!(
        n2.sql("SELECT pg_xact_commit_timestamp(xmin) FROM big WHERE id = 777")
            .unwrap(),
        n1_ts
    );
    let after = json(&expect(
        kernel,
        &dir,
        &["-f", "json", "table-diff", "big", "--nodes", "n2,n1"],
        0,
    ));
    assert_eq!(after["differences"].as_array().unwrap().len(), 0);

    // A workflow adds n4: its node, a subscription copying structure and data from n1, a
    // sync event from n1 waited for on n4 (an earlier result substituted), the remaining
    // subscriptions both ways; a failing step marked ignore_errors does not stop it.
    let mut steps = vec![
        serde_json::json!({ "sql": { "node": "n4", "command": "SQL", "description": "spock on n4",
            "args": ["--sql=CREATE EXTENSION spock"] } }),
        serde_json::json!({ "spock": { "node": "n4", "command": "CREATE NODE", "description": "create node n4",
            "args": ["--node_name=n4", "--dsn=${node.n4.dsn}"] } }),
        serde_json::json!({ "spock": { "node": "n4", "command": "DROP SUBSCRIPTION", "description": "nothing to drop",
            "args": ["--sub_name=sub_nope"], "ignore_errors": true } }),
        serde_json::json!({ "spock": { "node": "n4", "command": "CREATE SUBSCRIPTION", "description": "n4 from n1 with data",
            "args": ["--sub_name=sub_n1n4", "--provider_dsn=${node.n1.dsn}", "--synchronize_structure=true",
                     "--synchronize_data=true", "--replication_sets=default,default_insert_only,ddl_sql"] } }),
        serde_json::json!({ "spock": { "node": "n4", "command": "WAIT FOR SYNC", "description": "wait for the copy",
            "args": ["--sub_name=sub_n1n4"] } }),
        // The copied tables join n4's own set, so n4's writes reach the others.
        serde_json::json!({ "spock": { "node": "n4", "command": "repset add-all-tables", "description": "n4's tables in default",
            "args": ["--set_name=default", "--schema_names=public"] } }),
        serde_json::json!({ "sql": { "node": "n1", "command": "SQL", "name": "ev", "description": "sync event on n1",
            "args": ["--sql=SELECT spock.sync_event()"] } }),
        serde_json::json!({ "sql": { "node": "n4", "command": "SQL", "description": "n4 reached it", "sleep": 1,
            "args": ["--sql=CALL spock.wait_for_sync_event(NULL, 'n1', '${ev}'::pg_lsn, 60)"] } }),
    ];
    for p in ["n2", "n3"] {
        steps.push(
            serde_json::json!({ "spock": { "node": "n4", "command": "CREATE SUBSCRIPTION",
            "description": format!("n4 from {p}"),
            "args": [format!("--sub_name=sub_{p}n4"), format!("--provider_dsn={p}")] } }),
        );
    }
    for s in ["n1", "n2", "n3"] {
        steps.push(
            serde_json::json!({ "spock": { "node": s, "command": "CREATE SUBSCRIPTION",
            "description": format!("{s} from n4"),
            "args": [format!("--sub_name=sub_n4{s}"), "--provider_dsn=${node.n4.dsn}"] } }),
        );
    }
    write(
        &dir,
        "add_n4.json",
        &serde_json::json!({ "workflow_name": "Add n4",
        "description": "add a fourth node", "steps": steps }),
    );
    let wf = expect(kernel, &dir, &["-w", "add_n4.json"], 0);
    assert!(
        wf.stdout
            .contains("workflow Add n4: 13 steps done, 1 failed and ignored"),
        "{}\n{}",
        wf.stdout,
        wf.stderr
    );
    assert!(
        wf.stderr.contains("[step 07] sync event on n1 [OK]"),
        "{}",
        wf.stderr
    );
    wait(n4, "SELECT count(*) FROM big", &BIG_ROWS.to_string());
    // n4's changes reach a subscriber from the moment its slot exists.
    wait(
        n4,
        "SELECT count(*) FROM pg_replication_slots WHERE active",
        "3",
    );
    n4.sql("INSERT INTO t VALUES (41, 'n4')").unwrap();
    n2.sql("INSERT INTO t VALUES (42, 'n2')").unwrap();
    for node in [n1, n2, n3, n4] {
        wait(node, "SELECT count(*), sum(id) FROM t", "32|548");
    }
    let clean4 = expect(
        kernel,
        &dir,
        &["-c", "spockctrl.json", "table-diff", "big"],
        0,
    );
    assert!(
        clean4.stdout.contains("on n1, n2, n3, n4"),
        "{}",
        clean4.stdout
    );
    // A failing step without ignore_errors stops the workflow with its error.
    write(
        &dir,
        "bad.json",
        &serde_json::json!({ "workflow_name": "bad", "description": "",
        "steps": [ { "sql": { "node": "n1", "command": "SQL", "description": "broken", "args": ["--sql=SELECT nope"] } },
                   { "sql": { "node": "n1", "command": "SQL", "description": "never", "args": ["--sql=CREATE TABLE never_made()"] } } ] }),
    );
    let bad = expect(kernel, &dir, &["-w", "bad.json"], 1);
    assert!(
        bad.stderr.contains(
            "workflow bad stopped at step 1 (broken): n1: column \"nope\" does not exist"
        ),
        "{}",
        bad.stderr
    );
    assert_eq!(
        n1.sql("SELECT to_regclass('never_made') IS NULL").unwrap(),
        "t"
    );

    // Status: every subscription replicating; with n3 killed, it shows as down.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while spockctrl(kernel, &dir, &["cluster", "status"]).code != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the cluster never became healthy"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let healthy = expect(kernel, &dir, &["cluster", "status"], 0);
    assert!(
        healthy
            .stdout
            .contains("4 nodes (0 down), 12 subscriptions (0 not replicating), all replicating"),
        "{}",
        healthy.stdout
    );
    n3.stop(StopMode::Immediate).unwrap();
    let degraded = expect(kernel, &dir, &["-f", "json", "cluster", "status"], 2);
    let rows = json(&degraded);
    let n3_rows: Vec<&Value> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["node"] == "n3")
        .collect();
    assert_eq!(n3_rows.len(), 1);
    assert_eq!(n3_rows[0]["status"], "down");
    assert!(
        degraded.stderr.contains("cannot connect to node n3"),
        "{}",
        degraded.stderr
    );
    assert!(
        degraded.stderr.contains("4 nodes (1 down)"),
        "{}",
        degraded.stderr
    );
    let n1_rows = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["node"] == "n1")
        .count();
    assert_eq!(n1_rows, 3, "n1's subscriptions are still listed");
}

/// `cluster add-node` joins a fourth node to a running mesh through `spock.add_node` (its
/// data copied from n1, every old node subscribed to it), `cluster remove-node` takes it out
/// again through `spock.remove_node`; the other three keep replicating.
fn live_add_and_remove_through_the_cli(kernel: &harness::Kernel) {
    let (cluster, dir) = four_nodes_three_in_spec(kernel);
    let (n1, n2, n3, n4) = (
        cluster.node(0),
        cluster.node(1),
        cluster.node(2),
        cluster.node(3),
    );
    expect(
        kernel,
        &dir,
        &["--spec", "cluster.json", "cluster", "init"],
        0,
    );
    // Automatic DDL (the spec's auto_ddl) creates the table on every node and in its set.
    n1.sql("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .unwrap();
    for node in [n2, n3] {
        wait(node, "SELECT to_regclass('t') IS NOT NULL", "t");
    }
    n1.sql("INSERT INTO t SELECT g, 'n1' FROM generate_series(1, 100) g")
        .unwrap();
    n2.sql("INSERT INTO t SELECT g, 'n2' FROM generate_series(101, 150) g")
        .unwrap();
    for node in [n1, n2, n3] {
        wait(node, "SELECT count(*) FROM t", "150");
    }

    let added = expect(
        kernel,
        &dir,
        &[
            "-c",
            "spockctrl.json",
            "cluster",
            "add-node",
            "--node",
            "n4",
            "--source",
            "n1",
        ],
        0,
    );
    assert!(
        added.stdout.contains("node n4 added from n1"),
        "{}",
        added.stdout
    );
    // n4 holds the copy and is in the mesh both ways.
    assert_eq!(
        n4.sql("SELECT count(*), sum(id) FROM t").unwrap(),
        "150|11325"
    );
    assert_eq!(
        n4.sql("SELECT count(*) FROM spock.subscription").unwrap(),
        "3"
    );
    n4.sql("INSERT INTO t VALUES (400, 'n4')").unwrap();
    n3.sql("INSERT INTO t VALUES (300, 'n3')").unwrap();
    for node in [n1, n2, n3, n4] {
        wait(node, "SELECT count(*), sum(id) FROM t", "152|12025");
    }

    let removed = expect(
        kernel,
        &dir,
        &[
            "-c",
            "spockctrl.json",
            "cluster",
            "remove-node",
            "--node",
            "n4",
        ],
        0,
    );
    assert!(
        removed.stdout.contains("node n4 removed"),
        "{}",
        removed.stdout
    );
    for node in [n1, n2, n3] {
        assert_eq!(
            node.sql(
                "SELECT count(*) FROM spock.subscription s JOIN spock.node o \
                 ON o.node_id = s.sub_origin WHERE o.node_name = 'n4'"
            )
            .unwrap(),
            "0",
            "{}: a subscription from n4 is left",
            node.name
        );
        assert_eq!(
            node.sql("SELECT count(*) FROM spock.subscription").unwrap(),
            "2",
            "{}",
            node.name
        );
    }
    assert_eq!(
        n4.sql("SELECT count(*) FROM spock.subscription").unwrap(),
        "0"
    );
    // The remaining three still replicate.
    n3.sql("INSERT INTO t VALUES (301, 'n3')").unwrap();
    for node in [n1, n2] {
        wait(node, "SELECT count(*) FROM t WHERE id = 301", "1");
    }
}

fn bad_files_and_unreachable_nodes_are_named(kernel: &harness::Kernel) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut s = spec(&[("n1", dead), ("n2", dead)], Some("topsecret"));
    s["node_groups"][1].as_object_mut().unwrap().remove("port");
    write(d, "noport.json", &s);
    let r = expect(kernel, d, &["--spec", "noport.json", "cluster", "init"], 1);
    assert_eq!(
        r.stderr.trim(),
        "spockctrl: error: cluster spec noport.json: node_groups[1] (n2): missing port"
    );
    std::fs::write(d.join("broken.json"), "{ \"cluster_name\": ").unwrap();
    let r = expect(
        kernel,
        d,
        &["--spec", "broken.json", "cluster", "status"],
        1,
    );
    assert!(
        r.stderr
            .contains("cluster spec broken.json is not valid JSON"),
        "{}",
        r.stderr
    );
    let r = expect(kernel, d, &["node", "list"], 1);
    assert!(
        r.stderr
            .contains("cannot read configuration spockctrl.json"),
        "{}",
        r.stderr
    );

    write(
        d,
        "dead.json",
        &spec(&[("n1", dead), ("n2", dead)], Some("topsecret")),
    );
    let r = expect(kernel, d, &["--spec", "dead.json", "cluster", "init"], 1);
    assert!(
        r.stderr.contains(&format!("cannot connect to node n1: connection to server at \"127.0.0.1\", port {dead} failed: Connection refused")),
        "{}",
        r.stderr
    );
    let r = expect(
        kernel,
        d,
        &["--spec", "dead.json", "-v", "3", "table-diff", "t"],
        1,
    );
    assert!(r.stderr.contains("cannot connect to node"), "{}", r.stderr);
    assert!(!r.stderr.contains("topsecret") && !r.stdout.contains("topsecret"));
    let r = expect(
        kernel,
        d,
        &["--spec", "dead.json", "sql", "n9", "SELECT 1"],
        1,
    );
    assert!(
        r.stderr
            .contains("no node n9 in the configuration (nodes: n1, n2)"),
        "{}",
        r.stderr
    );
    let r = expect(kernel, d, &["--spec", "dead.json", "cluster", "status"], 2);
    assert!(r.stdout.contains("2 nodes (2 down)"), "{}", r.stdout);
}

/// The `id` keys a table-diff JSON report lists, sorted.
fn text_keys(report: &Value) -> Vec<String> {
    let mut keys: Vec<String> = report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["key"]["id"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    keys
}

/// Two nodes holding the same rows but configured as differently as settings allow: another
/// time zone, DateStyle, IntervalStyle, float digits and bytea output on n2; a text key sorted
/// bytewise on n1 and by ICU's root collation on n2 (mixed case and accents order differently);
/// a search_path on n1 that finds the table without its schema, and a `public.t` of other rows on
/// n2 only. table-diff must find them equal and exactly the rows changed later; table-repair
/// must leave alone a row changed after its diff (committed while the repair waits on its lock).
fn diff_and_repair_ignore_each_nodes_settings(kernel: &harness::Kernel) {
    let cluster = Cluster::start(kernel, &ClusterOptions::default().nodes(2)).unwrap();
    let dir = cluster.dir().to_path_buf();
    write(&dir, "spockctrl.json", &config(&cluster));
    let (n1, n2) = (cluster.node(0), cluster.node(1));
    assert_eq!(
        n2.sql("SELECT count(*) FROM pg_collation WHERE collname = 'und-x-icu'")
            .unwrap(),
        "1",
        "the kernel is built with ICU"
    );
    let columns = "at timestamptz, f float8, b bytea, iv interval, m numeric";
    let rows = "SELECT (ARRAY['a', 'B', 'é', 'E', 'Z', 'e'])[i % 6 + 1] || i, \
                timestamptz '2025-03-01 12:00:00+00' + i * interval '67 minutes', 1.0 / 3 + i, \
                decode(md5(i::text), 'hex'), i * interval '1 day 3.5 seconds', i \
                FROM generate_series(1, 3000) i";
    for (node, collation) in [(n1, "C"), (n2, "und-x-icu")] {
        node.sql(&format!(
            "CREATE EXTENSION spock; CREATE SCHEMA s; \
             CREATE TABLE s.t (id text COLLATE \"{collation}\" PRIMARY KEY, {columns}); \
             INSERT INTO s.t {rows}"
        ))
        .unwrap();
    }
    // The two collations really order these keys differently.
    let first =
        "SELECT string_agg(id, ',' ORDER BY id) FROM (SELECT id FROM s.t ORDER BY id LIMIT 4) x";
    assert_ne!(n1.sql(first).unwrap(), n2.sql(first).unwrap());
    n1.sql(
        "ALTER DATABASE postgres SET search_path = s, public; \
         ALTER DATABASE postgres SET timezone = 'America/New_York'",
    )
    .unwrap();
    n2.sql(&format!(
        "ALTER DATABASE postgres SET timezone = 'Pacific/Chatham'; \
         ALTER DATABASE postgres SET DateStyle = 'SQL, DMY'; \
         ALTER DATABASE postgres SET IntervalStyle = 'sql_standard'; \
         ALTER DATABASE postgres SET extra_float_digits = 0; \
         ALTER DATABASE postgres SET bytea_output = 'escape'; \
         CREATE TABLE public.t (id text PRIMARY KEY, {columns}); \
         INSERT INTO public.t SELECT 'other' || i FROM generate_series(1, 50) i"
    ))
    .unwrap();
    // The settings are in effect for new sessions: the same row prints differently.
    let shown = "SELECT at::text || f::text || b::text || iv::text FROM s.t WHERE id = 'B1'";
    assert_ne!(n1.sql(shown).unwrap(), n2.sql(shown).unwrap());

    let diff = |code| {
        json(&expect(
            kernel,
            &dir,
            &[
                "-f",
                "json",
                "table-diff",
                "s.t",
                "--block-rows",
                "200",
                "--unit-rows",
                "10",
            ],
            code,
        ))
    };
    let same = diff(0);
    assert_eq!(
        same["verdict"], "TABLES MATCH: s.t is the same on n1, n2 (3000 rows)",
        "{same}"
    );

    // Rows changed on n2 only: found exactly, in the key order of neither node in particular.
    n2.sql(
        "UPDATE s.t SET m = -m WHERE id IN ('B1', 'é2', 'Z4'); \
         UPDATE s.t SET at = at + interval '1 microsecond' WHERE id = 'e5'; \
         DELETE FROM s.t WHERE id IN ('a6', 'E3'); \
         INSERT INTO s.t (id, m) VALUES ('b', 1), ('É', 2)",
    )
    .unwrap();
    let found = diff(2);
    assert_eq!(
        text_keys(&found),
        ["B1", "E3", "Z4", "a6", "b", "e5", "É", "é2"],
        "{found}"
    );

    // A repair from n1 while a transaction on n2 holds B1 changed, uncommitted: the diff sees
    // B1's committed version, the update waits for the lock, then finds the row changed since
    // and leaves it alone; everything else is repaired.
    let mut writer = n2
        .client("psql", "postgres")
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            "postgres",
            "-c",
            "BEGIN; UPDATE s.t SET m = 42 WHERE id = 'B1'; SELECT pg_sleep(6); COMMIT;",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait(
        n2,
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
         AND query LIKE 'BEGIN; UPDATE s.t SET m = 42%'",
        "1",
    );
    let repair = expect(
        kernel,
        &dir,
        &["table-repair", "s.t", "--source-of-truth", "n1"],
        2,
    );
    assert!(writer.wait().unwrap().success());
    assert!(
        repair.stdout.contains(
            "repaired s.t from n1 (n2: 2 inserted, 3 updated, 2 deleted); 1 rows changed since \
             the diff and were left alone: run table-diff again"
        ),
        "{}",
        repair.stdout
    );
    assert!(
        repair
            .stdout
            .contains("update skipped: changed since the diff"),
        "{}",
        repair.stdout
    );
    assert_eq!(
        n2.sql("SELECT m FROM s.t WHERE id = 'B1'").unwrap(),
        "42",
        "the newer write survives"
    );
    let left = diff(2);
    assert_eq!(text_keys(&left), ["B1"], "{left}");
    expect(
        kernel,
        &dir,
        &["table-repair", "s.t", "--source-of-truth", "n1"],
        0,
    );
    diff(0);
    // n2's public.t, which n1's search_path would have named, was never touched.
    assert_eq!(n2.sql("SELECT count(*) FROM public.t").unwrap(), "50");
}
