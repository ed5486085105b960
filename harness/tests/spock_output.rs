//! The `spock_output` plugin through PostgreSQL's SQL slot interface: what it streams for the
//! tables of the subscribed replication sets, decoded with our protocol crate.

mod common;

// One test per major for each of these (`name::pg17`…); see `common::per_major`.
crate::per_major!(
    streams_the_subscribed_sets_in_the_native_protocol,
    bad_stream_parameters_are_refused,
    binary_values_when_asked_for_the_same_major,
);

use harness::{Cluster, ClusterOptions, Node};
use spock_proto::{Message, Value};

const PARAMS: &str =
    "'startup_params_format', '1', 'min_proto_version', '3', 'max_proto_version', '4'";

fn changes(n: &Node, sets: &str) -> Vec<Message> {
    decode(
        &n.sql(&format!(
            "SELECT encode(data, 'hex') FROM pg_logical_slot_get_binary_changes('s', NULL, NULL, {PARAMS}, \
             'spock.replication_set_names', '{sets}')"
        ))
        .unwrap(),
    )
}

/// The messages of hex-encoded stream rows, one a line.
fn decode(hex_lines: &str) -> Vec<Message> {
    hex_lines
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let bytes: Vec<u8> = (0..l.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&l[i..i + 2], 16).unwrap())
                .collect();
            Message::decode(&bytes).unwrap()
        })
        .collect()
}

/// A one-node cluster with spock and its node n1.
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

fn text(v: &Value) -> String {
    match v {
        Value::Text(t) => String::from_utf8(t.clone()).unwrap(),
        Value::Null => "NULL".into(),
        Value::UnchangedToast => "UNCHANGED".into(),
        other => format!("{other:?}"),
    }
}

/// A compact transcript: one line per message, rows as their text values.
fn transcript(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| match m {
            Message::Startup(_) => "S".into(),
            Message::Begin { .. } => "B".into(),
            Message::Origin { origin, .. } => format!("O {origin}"),
            Message::CommitOrder { .. } => "L".into(),
            Message::Commit { .. } => "C".into(),
            Message::Relation {
                nspname,
                relname,
                columns,
                ..
            } => format!(
                "R {nspname}.{relname} {}",
                columns
                    .iter()
                    .map(|c| format!("{}{}", c.name, if c.key { "*" } else { "" }))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Message::Insert { new, .. } => {
                format!("I {}", new.iter().map(text).collect::<Vec<_>>().join(","))
            }
            Message::Update { old, new, .. } => format!(
                "U {}{}",
                old.as_ref()
                    .map(|o| format!("{} -> ", o.iter().map(text).collect::<Vec<_>>().join(",")))
                    .unwrap_or_default(),
                new.iter().map(text).collect::<Vec<_>>().join(",")
            ),
            Message::Delete { old, .. } => {
                format!("D {}", old.iter().map(text).collect::<Vec<_>>().join(","))
            }
            Message::Truncate { relids, .. } => format!("T {}", relids.len()),
            Message::Message { .. } => "M".into(),
        })
        .collect()
}

fn streams_the_subscribed_sets_in_the_native_protocol(kernel: &harness::Kernel) {
    let cluster = spock_node(kernel);
    let n = cluster.node(0);
    n.sql(
        "CREATE TABLE t(id int PRIMARY KEY, v text, big text, extra int); \
         CREATE TABLE log(v text); CREATE TABLE other(id int PRIMARY KEY); \
         SELECT spock.repset_add_table('default', 't'); \
         SELECT spock.repset_add_table('default_insert_only', 'log');",
    )
    .unwrap();
    n.sql("SELECT pg_create_logical_replication_slot('s', 'spock_output')")
        .unwrap();
    let node_id: u16 = n
        .sql("SELECT spock.spock_node_id('n1')")
        .unwrap()
        .parse()
        .unwrap();

    n.sql("INSERT INTO t VALUES (1, 'a', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 4000) i), NULL), (2, 'b', 'small', 7)")
        .unwrap();
    n.sql("UPDATE t SET v = 'a2' WHERE id = 1").unwrap();
    n.sql("UPDATE t SET id = 3 WHERE id = 2").unwrap();
    n.sql("DELETE FROM t WHERE id = 3").unwrap();
    n.sql("INSERT INTO log VALUES ('one'); UPDATE log SET v = 'two'; INSERT INTO other VALUES (1)")
        .unwrap();
    n.sql("BEGIN; INSERT INTO t VALUES (99, 'rolled back'); ROLLBACK")
        .unwrap();
    n.sql("TRUNCATE t, log").unwrap();

    let got = transcript(&changes(n, "default,default_insert_only"));
    let big = n
        .sql("SELECT string_agg(md5(i::text), '') FROM generate_series(1, 4000) i")
        .unwrap();
    let got: Vec<String> = got.into_iter().map(|l| l.replace(&big, "BIG")).collect();
    let big = "BIG";
    let expected = vec![
        "S".to_string(),
        "B".into(),
        format!("O {node_id}"),
        "L".into(),
        "R public.t id*,v,big,extra".into(),
        format!("I 1,a,{big},NULL"),
        "I 2,b,small,7".into(),
        "C".into(),
        "B".into(),
        format!("O {node_id}"),
        "L".into(),
        "U 1,a2,UNCHANGED,NULL".into(),
        "C".into(),
        // A key change carries the old key.
        "B".into(),
        format!("O {node_id}"),
        "L".into(),
        "U 2,NULL,NULL,NULL -> 3,b,small,7".into(),
        "C".into(),
        "B".into(),
        format!("O {node_id}"),
        "L".into(),
        "D 3,NULL,NULL,NULL".into(),
        "C".into(),
        // Insert-only set: the UPDATE of log is not sent; `other` is in no set.
        "B".into(),
        format!("O {node_id}"),
        "L".into(),
        "R public.log v".into(),
        "I one".into(),
        "C".into(),
        "B".into(),
        format!("O {node_id}"),
        "L".into(),
        // TRUNCATE gives the tables new storage, so their metadata is sent again.
        "R public.t id*,v,big,extra".into(),
        "R public.log v".into(),
        "T 2".into(),
        "C".into(),
    ];
    assert_eq!(got, expected);

    // Only the set asked for; its column list applies.
    n.sql("SELECT spock.repset_create('cols'); SELECT spock.repset_add_table('cols', 'other', columns := '{id}')").unwrap();
    n.sql("INSERT INTO t VALUES (5, 'e'); INSERT INTO other VALUES (2)")
        .unwrap();
    let got = transcript(&changes(n, "cols"));
    assert_eq!(
        got[got.len() - 6..],
        [
            "B".to_string(),
            format!("O {node_id}"),
            "L".into(),
            "R public.other id*".into(),
            "I 2".into(),
            "C".into()
        ]
    );
    assert!(
        !got.iter().any(|l| l.starts_with("I 5")),
        "t is not in set cols: {got:?}"
    );
}

fn bad_stream_parameters_are_refused(kernel: &harness::Kernel) {
    let cluster = Cluster::start(kernel, &ClusterOptions::default()).unwrap();
    let n = cluster.node(0);
    n.sql("CREATE EXTENSION spock").unwrap();
    n.sql("SELECT pg_create_logical_replication_slot('s', 'spock_output')")
        .unwrap();
    let get = |opts: &str| {
        n.sql(&format!(
            "SELECT count(*) FROM pg_logical_slot_peek_binary_changes('s', NULL, NULL{opts})"
        ))
        .unwrap_err()
        .to_string()
    };
    let e = get(&format!(", {PARAMS}"));
    assert!(e.contains("local spock node not found"), "{e}");
    n.sql(&format!(
        "SELECT spock.node_create('n1', '{}')",
        n.dsn("postgres")
    ))
    .unwrap();
    let e = get("");
    assert!(e.contains("startup_params_format"), "{e}");
    let e =
        get(", 'startup_params_format', '1', 'min_proto_version', '1', 'max_proto_version', '2'");
    assert!(e.contains("this spock speaks 3 to 4"), "{e}");
    let e = get(&format!(
        ", {PARAMS}, 'spock.replication_set_names', 'nosuch'"
    ));
    assert!(e.contains("replication set nosuch not found"), "{e}");
    let e = get(&format!(", {PARAMS}, 'expected_encoding', 'LATIN1'"));
    assert!(
        e.contains("encoding conversion for binary datum not supported"),
        "{e}"
    );
}

/// Built-in types travel in their send/recv form when the client asks for binary values of
/// the server's own major; user-defined types stay text, and so does everything when the
/// client's major differs.
fn binary_values_when_asked_for_the_same_major(kernel: &harness::Kernel) {
    let cluster = spock_node(kernel);
    let n = cluster.node(0);
    n.sql(
        "CREATE TYPE mood AS ENUM ('ok'); \
         CREATE TABLE b(id int PRIMARY KEY, m mood, a int[], t text); \
         SELECT spock.repset_add_table('default', 'b');",
    )
    .unwrap();
    n.sql("SELECT pg_create_logical_replication_slot('s', 'spock_output')")
        .unwrap();
    n.sql("INSERT INTO b VALUES (1, 'ok', '{1,2}', 'x')")
        .unwrap();
    let major: u32 = n
        .sql("SELECT current_setting('server_version_num')::int / 100")
        .unwrap()
        .parse()
        .unwrap();
    let inserted = |major: u32| -> Vec<Value> {
        let out = n
            .sql(&format!(
                "SELECT encode(data, 'hex') FROM pg_logical_slot_peek_binary_changes('s', NULL, NULL, \
                 {PARAMS}, 'binary.want_binary_basetypes', '1', \
                 'binary.basetypes_major_version', '{major}')"
            ))
            .unwrap();
        decode(&out)
            .into_iter()
            .find_map(|m| match m {
                Message::Insert { new, .. } => Some(new),
                _ => None,
            })
            .expect("an INSERT")
    };
    let got = inserted(major);
    assert_eq!(got[0], Value::Binary(vec![0, 0, 0, 1]));
    assert_eq!(text(&got[1]), "ok");
    assert!(matches!(got[2], Value::Binary(_)), "{:?}", got[2]);
    assert_eq!(got[3], Value::Binary(b"x".to_vec()));
    // The rows the output side sent, counted under subscription 0 (peeks count too).
    assert_eq!(
        n.sql(
            "SELECT subid || ' ' || table_name || ' ' || n_tup_ins FROM spock.channel_table_stats"
        )
        .unwrap(),
        "0 b 1"
    );
    let got = inserted(major + 1);
    assert_eq!(
        got.iter().map(text).collect::<Vec<_>>(),
        ["1", "ok", "{1,2}", "x"]
    );
}
