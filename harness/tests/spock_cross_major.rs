//! Nodes of different PostgreSQL majors in one mesh, which is how a cluster is upgraded one
//! node at a time: each pair of consecutive majors of the run (15 and 17, 17 and 18)
//! replicates both ways. Values cross majors as text, so types whose binary form or OIDs
//! differ between the servers (enums, arrays, jsonb, numeric) arrive intact.
//!
//! Needs two majors; `cargo xtask test` leaves it out of runs with one.

mod common;

use harness::{Cluster, ClusterOptions, Kernel, Node};

const SCHEMA: &str = "\
    CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
    CREATE TABLE t (
        id int PRIMARY KEY,
        label text,
        amount numeric(12,3),
        at timestamptz,
        doc jsonb,
        tags text[],
        raw bytea,
        feeling mood,
        big text
    );";

/// A rows-in-order digest every node must agree on.
const DIGEST: &str = "SELECT count(*) || ' ' || md5(string_agg(t::text, '|' ORDER BY id)) FROM t";

/// One spock node `name` on `kernel` (a cluster of its own: each has its own major).
fn spock_node(kernel: &Kernel, name: &str) -> Cluster {
    let cluster = Cluster::start(kernel, &ClusterOptions::default().nodes(1)).unwrap();
    let node = cluster.node(0);
    node.sql("CREATE EXTENSION spock").unwrap();
    node.sql(&format!(
        "SELECT spock.node_create('{name}', '{}')",
        node.dsn("postgres")
    ))
    .unwrap();
    node.sql(SCHEMA).unwrap();
    node.sql("SELECT spock.repset_add_all_tables('default', ARRAY['public'])")
        .unwrap();
    cluster
}

fn subscribe(subscriber: &Node, provider: &Node, name: &str) {
    subscriber
        .sql(&format!(
            "SELECT spock.sub_create('{name}', '{}')",
            provider.dsn("postgres")
        ))
        .unwrap();
    common::wait_for(
        subscriber,
        "postgres",
        &format!("SELECT status FROM spock.sub_show_status('{name}')"),
        "replicating",
        60,
    );
}

fn same_everywhere(nodes: &[&Node], what: &str) {
    let want = nodes[0].sql(DIGEST).unwrap();
    for node in &nodes[1..] {
        common::wait_for(node, "postgres", DIGEST, &want, 60);
    }
    assert!(
        !want.starts_with("0 "),
        "{what}: the table is empty, nothing was compared"
    );
}

#[test]
fn consecutive_majors_replicate_both_ways() {
    let mut majors = common::majors();
    majors.sort();
    assert!(
        majors.len() >= 2,
        "this test needs two majors in the run (cargo xtask test leaves it out otherwise)"
    );
    for pair in majors.windows(2) {
        let (old, new) = (pair[0], pair[1]);
        let outcome = std::panic::catch_unwind(|| one_pair(old, new));
        if let Err(panic) = outcome {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            panic!("failed between PostgreSQL {old} and {new}: {what}");
        }
    }
}

fn one_pair(old: u32, new: u32) {
    let a = spock_node(&Kernel::staged(old).unwrap(), "old");
    let b = spock_node(&Kernel::staged(new).unwrap(), "new");
    let (a, b) = (a.node(0), b.node(0));
    assert!(
        a.sql("SHOW server_version_num")
            .unwrap()
            .starts_with(&old.to_string())
    );
    assert!(
        b.sql("SHOW server_version_num")
            .unwrap()
            .starts_with(&new.to_string())
    );
    subscribe(b, a, "sub_old_new");
    subscribe(a, b, "sub_new_old");

    // Writes on the older major reach the newer one…
    a.sql(
        "INSERT INTO t SELECT g, 'row ' || g, g * 1.5, '2026-01-01 00:00+00'::timestamptz + g * interval '1 hour',
                jsonb_build_object('g', g, 'even', g % 2 = 0), ARRAY['x' || g, 'y'], decode(md5(g::text), 'hex'),
                (ARRAY['sad','ok','happy']::mood[])[1 + g % 3], CASE WHEN g = 1 THEN repeat(md5('z'), 300) END
           FROM generate_series(1, 200) g",
    )
    .unwrap();
    same_everywhere(&[a, b], "insert on the older major");

    // …and changes on the newer one come back: updates (one of a TOASTed row, leaving the
    // large value unchanged), deletes and inserts.
    b.sql("UPDATE t SET label = 'changed on ' || current_setting('server_version_num'), feeling = 'happy' WHERE id % 10 = 0")
        .unwrap();
    b.sql("UPDATE t SET amount = -1 WHERE id = 1").unwrap();
    b.sql("DELETE FROM t WHERE id BETWEEN 190 AND 200").unwrap();
    b.sql("INSERT INTO t (id, label, doc, feeling) VALUES (1000, 'from the newer major', '{\"n\": [1,2]}', 'sad')")
        .unwrap();
    same_everywhere(&[a, b], "changes on the newer major");
    let row = a
        .sql("SELECT label || ' ' || feeling || ' ' || (doc->'n'->>1) FROM t WHERE id = 1000")
        .unwrap();
    assert_eq!(row, "from the newer major sad 2");
    let toasted = a
        .sql("SELECT amount || ' ' || length(big) FROM t WHERE id = 1")
        .unwrap();
    assert_eq!(
        toasted, "-1.000 9600",
        "the unchanged TOASTed value on {old}"
    );
    let count = a.sql("SELECT count(*) FROM t").unwrap();
    assert_eq!(count, "190", "rows on {old}");

    // A conflict across majors resolves the same way on both: the later write wins.
    a.sql("UPDATE t SET label = 'first' WHERE id = 5").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    b.sql("UPDATE t SET label = 'second' WHERE id = 5").unwrap();
    same_everywhere(&[a, b], "a conflict");
    assert_eq!(a.sql("SELECT label FROM t WHERE id = 5").unwrap(), "second");
}
