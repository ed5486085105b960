//! snowflake on real servers: the 2.4 API, uniqueness across nodes and sessions, crash safety,
//! column conversion with a dump/restore round trip, and bad input.

mod common;

// One test per major for each of these (`name::pg17`…); see `common::per_major`.
crate::per_major!(
    concurrent_ids_never_collide_across_nodes,
    api_decodes_what_it_issues,
    immediate_stop_never_reissues_ids,
    conversion_then_dump_and_restore,
    bad_input_gives_clear_errors_and_changes_nothing,
);

use harness::{Cluster, ClusterOptions, Kernel, StopMode};
use std::{collections::HashSet, thread};

fn node_cluster(kernel: &Kernel, nodes: usize) -> Cluster {
    let cluster = Cluster::start(
        kernel,
        &ClusterOptions::default().nodes(nodes).preload(None),
    )
    .unwrap();
    for (i, n) in cluster.nodes.iter().enumerate() {
        n.configure("snowflake.node", &(i + 1).to_string()).unwrap();
        n.sql("CREATE EXTENSION snowflake").unwrap();
    }
    cluster
}

fn ids(text: &str) -> Vec<i64> {
    text.lines().map(|l| l.parse().unwrap()).collect()
}

fn api_decodes_what_it_issues(kernel: &harness::Kernel) {
    let cluster = node_cluster(kernel, 1);
    let n = cluster.node(0);
    let before_ms = n
        .sql("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::int8")
        .unwrap();
    let id: i64 = n
        .sql("SELECT snowflake.nextval()")
        .unwrap()
        .parse()
        .unwrap();
    assert!(id > 0);
    assert_eq!(
        n.sql(&format!("SELECT snowflake.get_node({id})")).unwrap(),
        "1"
    );
    let count: i64 = n
        .sql(&format!("SELECT snowflake.get_count({id})"))
        .unwrap()
        .parse()
        .unwrap();
    assert!((0..4096).contains(&count));
    // get_epoch is Unix seconds with millisecond precision, taken from the clock.
    let epoch = n.sql(&format!("SELECT snowflake.get_epoch({id})")).unwrap();
    let (secs, frac) = epoch.split_once('.').unwrap();
    assert_eq!(frac.len(), 3, "{epoch}");
    let epoch_ms: i64 = format!("{secs}{frac}").parse().unwrap();
    let before_ms: i64 = before_ms.parse().unwrap();
    assert!(
        (before_ms - 5..before_ms + 5_000).contains(&epoch_ms),
        "{epoch_ms} vs {before_ms}"
    );
    assert_eq!(((id >> 22) + 1_672_531_200_000), epoch_ms);

    let f = n
        .sql(&format!(
            "SET TimeZone = 'UTC'; SELECT snowflake.format({id})->>'id', snowflake.format({id})->>'count', \
             snowflake.format({id})->>'ts' = to_timestamp(snowflake.get_epoch({id}))::text"
        ))
        .unwrap();
    assert_eq!(f, format!("1|{count}|t"));
    // A fixed id decodes field by field (layout: msec << 22 | node << 12 | count).
    let fixed = (1_000_i64 << 22) | (1023 << 12) | 4095;
    assert_eq!(
        n.sql(&format!("SELECT snowflake.get_node({fixed}), snowflake.get_count({fixed}), snowflake.get_epoch({fixed})")).unwrap(),
        "1023|4095|1672531201.000"
    );

    // currval is per session and per sequence.
    let both = n
        .sql("SELECT snowflake.nextval() AS a, snowflake.currval()")
        .unwrap();
    let (a, c) = both.split_once('|').unwrap();
    assert_eq!(a, c);
    let e = n.sql("SELECT snowflake.currval()").unwrap_err().to_string();
    assert!(
        e.contains("currval of sequence \"id_seq\" is not yet defined in this session"),
        "{e}"
    );

    // Own sequences work through the regclass argument; NULL gives NULL.
    n.sql("CREATE SEQUENCE s").unwrap();
    let pair = n.sql("SELECT snowflake.nextval('s') < snowflake.nextval('s'), snowflake.nextval(NULL) IS NULL").unwrap();
    assert_eq!(pair, "t|t");
    let e = n
        .sql("CREATE TABLE notseq(); SELECT snowflake.nextval('notseq')")
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"notseq\" is not a sequence"), "{e}");

    // Ids are strictly increasing even with INCREMENT running them ahead of the clock.
    n.sql("ALTER SEQUENCE s INCREMENT 4096").unwrap();
    let run = ids(&n
        .sql("SELECT snowflake.nextval('s') FROM generate_series(1, 2000)")
        .unwrap());
    assert!(run.windows(2).all(|w| w[0] < w[1]));
    n.sql("ALTER SEQUENCE s INCREMENT -1").unwrap();
    let e = n
        .sql("SELECT snowflake.nextval('s')")
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs a positive INCREMENT"), "{e}");
}

/// Two nodes, four sessions each, 2 × 200k ids at the same time: no duplicate anywhere, every
/// session strictly increasing, each id carrying its node.
fn concurrent_ids_never_collide_across_nodes(kernel: &harness::Kernel) {
    const SESSIONS: usize = 4;
    const PER_SESSION: usize = 50_000;
    let cluster = node_cluster(kernel, 2);
    let results: Vec<(usize, Vec<i64>)> = thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .flat_map(|node| (0..SESSIONS).map(move |_| node))
            .map(|node| {
                let n = cluster.node(node);
                s.spawn(move || {
                    let sql = format!(
                        "SELECT snowflake.nextval() FROM generate_series(1, {PER_SESSION})"
                    );
                    (node, ids(&n.sql(&sql).unwrap()))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all = HashSet::new();
    for (node, session) in &results {
        assert_eq!(session.len(), PER_SESSION);
        assert!(
            session.windows(2).all(|w| w[0] < w[1]),
            "session ids must increase"
        );
        for id in session {
            assert_eq!((id >> 12) & 0x3ff, *node as i64 + 1, "node bits of {id}");
            assert!(all.insert(*id), "duplicate id {id}");
        }
    }
    assert_eq!(all.len(), 2 * SESSIONS * PER_SESSION);
}

/// Ids run far ahead of the clock (INCREMENT 4096 moves one millisecond per id), then the
/// server is killed mid-generation: after restart no id repeats or goes backwards, which only
/// holds if the high-water mark was WAL-logged ahead.
fn immediate_stop_never_reissues_ids(kernel: &harness::Kernel) {
    let cluster = node_cluster(kernel, 1);
    let n = cluster.node(0);
    n.sql("CREATE SEQUENCE fast INCREMENT 4096; CREATE TABLE issued(id int8 PRIMARY KEY)")
        .unwrap();
    n.sql(
        "CREATE PROCEDURE churn() LANGUAGE plpgsql AS $$ BEGIN \
         FOR i IN 1..1000000 LOOP INSERT INTO issued VALUES (snowflake.nextval('fast')); COMMIT; END LOOP; END $$",
    )
    .unwrap();
    thread::scope(|s| {
        let worker = s.spawn(|| n.sql("CALL churn()"));
        // Let it commit a good number of ids, then kill the server under it.
        let mut committed = 0;
        for _ in 0..200 {
            thread::sleep(std::time::Duration::from_millis(50));
            committed = n
                .sql("SELECT count(*) FROM issued")
                .unwrap()
                .parse::<i64>()
                .unwrap();
            if committed > 20_000 {
                break;
            }
        }
        assert!(committed > 20_000, "churn too slow: {committed}");
        n.stop(StopMode::Immediate).unwrap();
        assert!(
            worker.join().unwrap().is_err(),
            "the session must have been cut off"
        );
    });
    n.start().unwrap();
    let max: i64 = n
        .sql("SELECT max(id) FROM issued")
        .unwrap()
        .parse()
        .unwrap();
    let now_ms = n
        .sql("SELECT ((extract(epoch FROM clock_timestamp()) * 1000)::int8 - 1672531200000)")
        .unwrap();
    assert!(
        (max >> 22) > now_ms.parse::<i64>().unwrap() + 5_000,
        "ids must run ahead of the clock for this test to mean anything"
    );
    let after = ids(&n
        .sql("SELECT snowflake.nextval('fast') FROM generate_series(1, 100)")
        .unwrap());
    assert!(
        after[0] > max,
        "id {} after restart is not above {max} issued before",
        after[0]
    );
    // The ones committed before the crash are all still there and distinct.
    n.sql("INSERT INTO issued SELECT snowflake.nextval('fast') FROM generate_series(1, 1000)")
        .unwrap();
}

/// serial, bigserial, identity (with a referencing foreign key) and an explicit default on a
/// plain sequence become snowflake columns; a second run changes nothing; the database survives
/// pg_dump/pg_restore and keeps issuing larger ids.
fn conversion_then_dump_and_restore(kernel: &harness::Kernel) {
    let cluster = node_cluster(kernel, 1);
    let n = cluster.node(0);
    n.sql(
        "CREATE TABLE ser(id serial PRIMARY KEY, v text); \
         CREATE TABLE big(id bigserial PRIMARY KEY, v text); \
         CREATE TABLE ident(id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text); \
         CREATE TABLE child(id serial PRIMARY KEY, parent int REFERENCES ident(id)); \
         CREATE SEQUENCE shared; \
         CREATE TABLE ex1(id int DEFAULT nextval('shared') PRIMARY KEY, v text); \
         CREATE TABLE ex2(id int DEFAULT nextval('shared') PRIMARY KEY, v text); \
         INSERT INTO ser(v) VALUES ('a'), ('b'); INSERT INTO big(v) VALUES ('a'); \
         INSERT INTO ident(v) VALUES ('a'), ('b'); INSERT INTO child(parent) VALUES (1), (2); \
         INSERT INTO ex1(v) VALUES ('a'); INSERT INTO ex2(v) VALUES ('a');",
    )
    .unwrap();
    let conv = |seq: &str| {
        n.sql(&format!(
            "SELECT snowflake.convert_sequence_to_snowflake('{seq}')"
        ))
        .unwrap()
    };
    assert_eq!(conv("ser_id_seq"), "1", "serial: one type change");
    assert_eq!(conv("big_id_seq"), "0", "bigserial: none");
    assert_eq!(
        conv("ident_id_seq"),
        "2",
        "identity: its column and the referencing one"
    );
    assert_eq!(conv("shared"), "4", "two int4 columns and two defaults");
    for seq in ["ser_id_seq", "big_id_seq", "ident_id_seq", "shared"] {
        assert_eq!(conv(seq), "0", "converting {seq} again changes nothing");
    }
    let types = n
        .sql("SELECT string_agg(attrelid::regclass || '.' || attname || ':' || format_type(atttypid, NULL), ' ' ORDER BY attrelid::regclass::text, attname) \
              FROM pg_attribute WHERE attrelid IN ('ser'::regclass, 'big'::regclass, 'ident'::regclass, 'child'::regclass, 'ex1'::regclass, 'ex2'::regclass) AND attname IN ('id', 'parent')")
        .unwrap();
    assert_eq!(
        types,
        "big.id:bigint child.id:integer child.parent:bigint ex1.id:bigint ex2.id:bigint ident.id:bigint ser.id:bigint"
    );
    let defaults = n
        .sql("SELECT string_agg(adrelid::regclass || '=' || pg_get_expr(adbin, adrelid), ' ' ORDER BY adrelid::regclass::text) \
              FROM pg_attrdef WHERE adrelid IN ('ser'::regclass, 'ident'::regclass, 'ex1'::regclass, 'ex2'::regclass)")
        .unwrap();
    assert_eq!(
        defaults,
        "ex1=snowflake.nextval('shared'::regclass) ex2=snowflake.nextval('shared'::regclass) \
         ident=snowflake.nextval('ident_id_seq'::regclass) ser=snowflake.nextval('ser_id_seq'::regclass)"
    );
    n.sql("INSERT INTO ser(v) VALUES ('c'); INSERT INTO ident(v) VALUES ('c'); INSERT INTO ex1(v) VALUES ('b')").unwrap();
    assert_eq!(
        n.sql("SELECT snowflake.get_node(max(id)) FROM ser")
            .unwrap(),
        "1"
    );
    let old_max = n
        .sql("SELECT max(id) FROM ident")
        .unwrap()
        .parse::<i64>()
        .unwrap();
    assert!(old_max > 1 << 22, "a snowflake id");

    let dump = cluster.dir().join("db.dump");
    let dump_s = dump.display().to_string();
    n.run_client("pg_dump", &["-Fc", "-f", &dump_s, "postgres"])
        .unwrap();
    n.sql("CREATE DATABASE restored").unwrap();
    n.run_client(
        "pg_restore",
        &["--exit-on-error", "-d", "restored", &dump_s],
    )
    .unwrap();
    let r = |sql: &str| n.sql_in("restored", sql).unwrap();
    assert_eq!(r("SELECT count(*) FROM ident"), "3");
    r(
        "INSERT INTO ident(v) VALUES ('after restore'); INSERT INTO ser(v) VALUES ('after'); INSERT INTO ex2(v) VALUES ('after')",
    );
    let new_max = r("SELECT max(id) FROM ident").parse::<i64>().unwrap();
    assert!(new_max > old_max, "{new_max} must exceed {old_max}");
    assert_eq!(r("SELECT count(DISTINCT id) FROM ser"), "4");
}

fn bad_input_gives_clear_errors_and_changes_nothing(kernel: &harness::Kernel) {
    let cluster = Cluster::start(kernel, &ClusterOptions::default().preload(None)).unwrap();
    let n = cluster.node(0);
    n.sql("CREATE EXTENSION snowflake").unwrap();
    let e = n.sql("SELECT snowflake.nextval()").unwrap_err().to_string();
    assert!(e.contains("value for snowflake.node is not set"), "{e}");
    let e = n
        .sql("DO $$ BEGIN PERFORM snowflake.nextval(); EXCEPTION WHEN OTHERS THEN RAISE EXCEPTION 'sqlstate %', SQLSTATE; END $$")
        .unwrap_err()
        .to_string();
    assert!(e.contains("sqlstate F0000"), "{e}");
    // Once the library is loaded in the session (any snowflake call loads it), the setting
    // is checked.
    let e = n
        .sql("SELECT snowflake.get_node(0); SET snowflake.node = 1024")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("1024 is outside the valid range for parameter \"snowflake.node\" (0 .. 1023)"),
        "{e}"
    );
    n.sql("CREATE ROLE app LOGIN").unwrap();
    let e = n
        .sql_as(
            "app",
            "postgres",
            "SELECT snowflake.get_node(0); SET snowflake.node = 3",
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("permission denied to set parameter \"snowflake.node\""),
        "{e}"
    );

    n.sql("CREATE TABLE t(id serial PRIMARY KEY, name text, n int)")
        .unwrap();
    let before = n
        .sql("SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 't'::regclass")
        .unwrap();
    let e = n
        .sql("SELECT snowflake.convert_column_to_int8('t', 9::int2)")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Attribute 9 of relation public.t not found"),
        "{e}"
    );
    let e = n
        .sql("SELECT snowflake.convert_column_to_int8('t', 2::int2)")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("column \"name\" of relation public.t is of type text, not an integer type"),
        "{e}"
    );
    let e = n
        .sql("SELECT snowflake.convert_column_to_int8('nosuch', 1::int2)")
        .unwrap_err()
        .to_string();
    assert!(e.contains("relation \"nosuch\" does not exist"), "{e}");
    let e = n
        .sql("SELECT snowflake.convert_sequence_to_snowflake('t')")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Input value \"public.t\" is not a valid convertable sequence"),
        "{e}"
    );
    // A default that is not the sequence's own nextval is refused before anything changes.
    n.sql("ALTER TABLE t ALTER COLUMN id SET DEFAULT 42")
        .unwrap();
    let e = n
        .sql("SELECT snowflake.convert_sequence_to_snowflake('t_id_seq')")
        .unwrap_err()
        .to_string();
    assert!(e.contains("definition of DEFAULT value for column \"id\" of relation \"public.t\" does not correspond serial or bigserial type: \"42\""), "{e}");
    let types = n.sql("SELECT string_agg(format_type(atttypid, NULL), ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 't'::regclass AND attnum > 0").unwrap();
    assert_eq!(types, "integer,text,integer", "nothing changed");
    n.sql("ALTER TABLE t ALTER COLUMN id SET DEFAULT nextval('t_id_seq')")
        .unwrap();
    assert_eq!(
        n.sql("SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 't'::regclass")
            .unwrap(),
        before
    );
}
