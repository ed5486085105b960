//! The `spock_output` plugin's `proto_format = json` stream through `pg_logical_slot_get_changes`:
//! upstream's JSON texts, with the same set membership and column lists as the native format.

mod common;

// One test per major for each of these (`name::pg17`…); see `common::per_major`.
crate::per_major!(streams_upstream_json_texts,);

use harness::{Cluster, ClusterOptions, Node};

const PARAMS: &str = "'min_proto_version', '3', 'max_proto_version', '4', \
     'startup_params_format', '1', 'proto_format', 'json'";

/// The JSON texts of the stream, one per message.
fn changes(n: &Node, sets: &str) -> Vec<String> {
    n.sql(&format!(
        "SET TimeZone = 'UTC'; SELECT data FROM pg_logical_slot_get_changes('s', NULL, NULL, {PARAMS}, \
         'spock.replication_set_names', '{sets}')"
    ))
    .unwrap()
    .lines()
    .map(String::from)
    .collect()
}

fn spock_node(kernel: &harness::Kernel) -> Cluster {
    let cluster = Cluster::start(kernel, &ClusterOptions::default()).unwrap();
    let n = cluster.node(0);
    n.sql("CREATE EXTENSION spock").unwrap();
    n.sql(&format!(
        "SELECT spock.node_create('n1', '{}')",
        n.dsn("postgres")
    ))
    .unwrap();
    cluster
}

fn streams_upstream_json_texts(kernel: &harness::Kernel) {
    let major = kernel.major;
    let cluster = spock_node(kernel);
    let n = cluster.node(0);
    n.sql(
        "CREATE TABLE tj(id int PRIMARY KEY, t text, b bool, ts timestamptz, n numeric, \
         j jsonb, a int[], big text); \
         CREATE TABLE other(id int PRIMARY KEY, secret text); \
         SELECT spock.repset_add_table('default', 'tj');",
    )
    .unwrap();
    n.sql("SELECT pg_create_logical_replication_slot('s', 'spock_output')")
        .unwrap();
    n.sql(
        "INSERT INTO tj VALUES (1, 'a\"b', true, '2024-05-06 07:08:09.5+00', 12.50, \
         '{\"k\": [1, 2]}', '{1,2,3}', \
         (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 4000) i))",
    )
    .unwrap();
    n.sql("UPDATE tj SET t = 'c', b = false WHERE id = 1")
        .unwrap();
    n.sql("UPDATE tj SET id = 2, big = 'small' WHERE id = 1")
        .unwrap();
    n.sql("INSERT INTO other VALUES (1, 'x')").unwrap();
    n.sql("DELETE FROM tj WHERE id = 2").unwrap();
    n.sql("INSERT INTO tj(id) VALUES (3); TRUNCATE tj").unwrap();

    let got = changes(n, "default");
    let big = n
        .sql("SELECT string_agg(md5(i::text), '') FROM generate_series(1, 4000) i")
        .unwrap();
    let got: Vec<String> = got.into_iter().map(|l| l.replace(&big, "BIG")).collect();

    // S once, then B … C around each transaction's rows; no R/O/L/T/M.
    assert!(
        got[0].starts_with("{\"action\":\"S\", \"params\": {\"max_proto_version\":\"4\""),
        "PostgreSQL {major}: startup message {:?}",
        got[0]
    );
    for key in [
        "\"pg_version_num\":\"",
        "\"encoding\":\"UTF8\"",
        "\"no_txinfo\":\"f\"",
    ] {
        assert!(
            got[0].contains(key),
            "PostgreSQL {major}: {key} in {}",
            got[0]
        );
    }
    let shape: Vec<&str> = got.iter().map(|l| &l[11..12]).collect();
    assert_eq!(
        shape,
        // The transaction touching only `other` (in no set) is an empty B/C; the TRUNCATE
        // shares the last transaction with an INSERT and is skipped.
        [
            "S", "B", "I", "C", "B", "U", "C", "B", "U", "C", "B", "C", "B", "D", "C", "B", "I",
            "C"
        ],
        "PostgreSQL {major}: message sequence {got:#?}"
    );
    for b in got.iter().filter(|l| l.starts_with("{\"action\":\"B\"")) {
        let prefix = "{\"action\":\"B\", \"has_catalog_changes\":\"";
        assert!(b.starts_with(prefix), "PostgreSQL {major}: {b}");
        assert!(
            b.contains(", \"xid\":\"")
                && b.contains(", \"first_lsn\":\"")
                && b.contains(", \"origin_lsn\":\"0/0\"")
                && b.contains(", \"commit_time\":\"")
                && !b.contains("origin_id"),
            "PostgreSQL {major}: begin {b}"
        );
    }
    for c in got.iter().filter(|l| l.starts_with("{\"action\":\"C\"")) {
        assert!(
            c.starts_with("{\"action\":\"C\", \"final_lsn\":\"")
                && c.contains("\", \"end_lsn\":\""),
            "PostgreSQL {major}: commit {c}"
        );
    }
    let rows: Vec<&str> = got
        .iter()
        .map(String::as_str)
        .filter(|l| !l[11..12].contains(['S', 'B', 'C']))
        .collect();
    assert_eq!(
        rows,
        [
            r#"{"action":"I","relation":["public","tj"],"newtuple":{"id":1,"t":"a\"b","b":true,"ts":"2024-05-06T07:08:09.5+00:00","n":12.50,"j":{"k": [1, 2]},"a":[1,2,3],"big":"BIG"}}"#,
            // The unchanged TOASTed column is left out.
            r#"{"action":"U","relation":["public","tj"],"newtuple":{"id":1,"t":"c","b":false,"ts":"2024-05-06T07:08:09.5+00:00","n":12.50,"j":{"k": [1, 2]},"a":[1,2,3]}}"#,
            // A key change carries the old key.
            r#"{"action":"U","relation":["public","tj"],"oldtuple":{"id":1,"t":null,"b":null,"ts":null,"n":null,"j":null,"a":null,"big":null},"newtuple":{"id":2,"t":"c","b":false,"ts":"2024-05-06T07:08:09.5+00:00","n":12.50,"j":{"k": [1, 2]},"a":[1,2,3],"big":"small"}}"#,
            r#"{"action":"D","relation":["public","tj"],"oldtuple":{"id":2,"t":null,"b":null,"ts":null,"n":null,"j":null,"a":null,"big":null}}"#,
            r#"{"action":"I","relation":["public","tj"],"newtuple":{"id":3,"t":null,"b":null,"ts":null,"n":null,"j":null,"a":null,"big":null}}"#,
        ],
        "PostgreSQL {major}: row messages"
    );

    // Another set with a column list: only its table and columns; no_txinfo trims B and C.
    n.sql(
        "SELECT spock.repset_create('cols'); \
         SELECT spock.repset_add_table('cols', 'other', columns := '{id}')",
    )
    .unwrap();
    n.sql("INSERT INTO tj(id) VALUES (5); INSERT INTO other VALUES (2, 'hidden')")
        .unwrap();
    let got = n
        .sql(&format!(
            "SELECT data FROM pg_logical_slot_get_changes('s', NULL, NULL, {PARAMS}, \
             'spock.replication_set_names', 'cols', 'no_txinfo', 't')"
        ))
        .unwrap();
    let got: Vec<&str> = got.lines().collect();
    assert_eq!(
        got[got.len() - 3..],
        [
            r#"{"action":"B", "has_catalog_changes":"f"}"#,
            r#"{"action":"I","relation":["public","other"],"newtuple":{"id":2}}"#,
            r#"{"action":"C"}"#,
        ],
        "PostgreSQL {major}: column list and no_txinfo in {got:#?}"
    );
    assert!(
        got[0].contains("\"no_txinfo\":\"t\""),
        "PostgreSQL {major}: {}",
        got[0]
    );
}
