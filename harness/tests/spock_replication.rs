//! One-way replication between two separate servers over TCP: provider → subscriber, through
//! sub_create, the supervisor/manager/apply workers and the spock_output stream.

mod common;

// One test per major for each of these (`name::pg17`…); see `common::per_major`.
crate::per_major!(
    changes_flow_from_provider_to_subscriber,
    subscriber_crash_neither_loses_nor_duplicates,
    synchronize_data_while_writes_continue,
    types_partitions_and_volume,
    synchronize_structure_copies_the_schema,
    tables_resync_while_streaming,
    row_filters_and_column_lists,
    ddl_and_table_sync_travel_through_the_queue,
    helper_functions,
    executor_apply_keeps_the_subscribers_rules,
    lsn_from_commit_ts,
    remote_insert_waits_for_a_concurrent_local_insert,
    resync_runs_in_a_sync_worker_while_streaming_goes_on,
    local_only_columns_and_tables_without_a_key,
);

use harness::{Cluster, Node, StopMode};
use std::time::{Duration, Instant};

/// Polls until both nodes return the same rows for `query` (and at least one row matched
/// `expect_rows` when given); fails with both sides' output after `timeout`.
fn converge(a: &Node, b: &Node, query: &str, timeout: Duration) -> String {
    let started = Instant::now();
    loop {
        let (x, y) = (a.sql(query).unwrap(), b.sql(query));
        if let Ok(y) = &y
            && *y == x
        {
            return x;
        }
        if started.elapsed() > timeout {
            panic!(
                "{} and {} did not converge on {query}:\n{}: {x}\n{}: {y:?}\nsubscriber log:\n{}",
                a.name,
                b.name,
                a.name,
                b.name,
                b.log_tail(30)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `query` on `node` until it returns `want` (or 30 s pass); returns the last answer.
fn converge_to(node: &Node, query: &str, want: &str) -> String {
    let started = Instant::now();
    loop {
        let got = node.sql(query).unwrap();
        if got == want || started.elapsed() > Duration::from_secs(30) {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

const TABLES: &str = "CREATE TABLE items(id int PRIMARY KEY, name text, qty numeric, tags text[], doc jsonb, \
                      at timestamptz, payload bytea); \
                      CREATE TABLE pairs(a int, b text, v text, PRIMARY KEY (a, b));";

/// Two spock nodes, n1 and n2, each with `schema` created.
fn two_nodes(kernel: &harness::Kernel, schema: &str) -> Cluster {
    common::Mesh::new(2).schema(schema).start(kernel)
}

/// Subscribes n2 to every public table of n1 and waits until the apply worker streams.
fn subscribe(p: &Node, s: &Node) {
    p.sql("SELECT spock.repset_add_all_tables('default', ARRAY['public'])")
        .unwrap();
    common::subscribe(s, "sub_n1_n2", p, "");
}

fn setup(kernel: &harness::Kernel) -> Cluster {
    let cluster = two_nodes(kernel, TABLES);
    subscribe(cluster.node(0), cluster.node(1));
    cluster
}

fn changes_flow_from_provider_to_subscriber(kernel: &harness::Kernel) {
    let cluster = setup(kernel);
    let (p, s) = (cluster.node(0), cluster.node(1));
    p.sql(
        "INSERT INTO items VALUES \
           (1, 'one', 1.5, '{a,b}', '{\"k\": [1, 2]}', '2024-01-02 03:04:05+00', '\\x00ff'), \
           (2, NULL, NULL, NULL, NULL, NULL, NULL), \
           (3, 'big', 3, '{}', '{}', now(), decode(repeat('ab', 600000), 'hex')); \
         INSERT INTO pairs VALUES (1, 'x', 'a'), (1, 'y', 'b'), (2, 'x', 'c');",
    )
    .unwrap();
    p.sql("UPDATE items SET name = 'uno', qty = qty * 2 WHERE id = 1; UPDATE items SET qty = 4 WHERE id = 3; \
           UPDATE pairs SET b = 'z' WHERE a = 1 AND b = 'y'; DELETE FROM items WHERE id = 2; \
          ")
        .unwrap();
    // A transaction block that rolls back never reaches the subscriber.
    p.sql("BEGIN; INSERT INTO items(id) VALUES (99); ROLLBACK;")
        .unwrap();
    let items = "SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s', id, name, qty, tags, doc, at, md5(payload)), E'\\n' ORDER BY id) FROM items";
    let got = converge(p, s, items, Duration::from_secs(30));
    assert!(got.starts_with("1|uno|3.0|{a,b}|{\"k\": [1, 2]}|"), "{got}");
    assert_eq!(got.lines().count(), 2, "{got}");
    converge(
        p,
        s,
        "SELECT string_agg(format('%s%s%s', a, b, v), ',' ORDER BY a, b) FROM pairs",
        Duration::from_secs(30),
    );
    assert_eq!(
        s.sql("SELECT count(*) FROM items WHERE id = 99").unwrap(),
        "0"
    );

    // Many small transactions, then one large one.
    p.sql("DO $$ BEGIN FOR i IN 1000..2999 LOOP INSERT INTO pairs VALUES (i, 'k', 'v'); COMMIT; END LOOP; END $$").unwrap();
    p.sql("INSERT INTO pairs SELECT g, 'bulk', 'v' FROM generate_series(1, 100000) g")
        .unwrap();
    let counts = "SELECT count(*), sum(a) FROM pairs";
    assert_eq!(
        converge(p, s, counts, Duration::from_secs(120)),
        "102003|5004049004"
    );

    p.sql("TRUNCATE pairs").unwrap();
    converge(p, s, counts, Duration::from_secs(30));
    let status = s
        .sql("SELECT status FROM spock.sub_show_status('sub_n1_n2')")
        .unwrap();
    assert_eq!(status, "replicating");
}

fn subscriber_crash_neither_loses_nor_duplicates(kernel: &harness::Kernel) {
    let cluster = setup(kernel);
    let (p, s) = (cluster.node(0), cluster.node(1));
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            p.sql("DO $$ BEGIN FOR i IN 1..3000 LOOP INSERT INTO pairs VALUES (i, 'w', 'v'); COMMIT; END LOOP; END $$")
        });
        std::thread::sleep(Duration::from_millis(300));
        s.stop(StopMode::Immediate).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        s.start().unwrap();
        writer.join().unwrap().unwrap();
    });
    assert_eq!(
        converge(
            p,
            s,
            "SELECT count(*), count(DISTINCT a) FROM pairs",
            Duration::from_secs(60)
        ),
        "3000|3000"
    );

    // Switching to another interface of the provider reconnects through it.
    let alt = format!("{} application_name=alt", p.dsn("postgres"));
    s.sql(&format!(
        "SELECT spock.node_add_interface('n1', 'alt', '{alt}')"
    ))
    .unwrap();
    assert_eq!(
        s.sql("SELECT spock.sub_alter_interface('sub_n1_n2', 'alt')")
            .unwrap(),
        "t"
    );
    assert_eq!(
        s.sql("SELECT spock.sub_alter_interface('sub_n1_n2', 'alt')")
            .unwrap(),
        "f"
    );
    p.sql("INSERT INTO pairs VALUES (-2, 'via', 'alt')")
        .unwrap();
    assert_eq!(
        converge(p, s, "SELECT count(*) FROM pairs", Duration::from_secs(60)),
        "3001"
    );
    assert_eq!(
        s.sql("SELECT provider_dsn FROM spock.sub_show_status('sub_n1_n2')")
            .unwrap(),
        alt
    );
    assert_eq!(
        s.sql("SELECT spock.spock_max_proto_version(), spock.spock_min_proto_version()")
            .unwrap(),
        "4|3"
    );

    // The provider restarts too; the worker reconnects and carries on.
    p.stop(StopMode::Immediate).unwrap();
    p.start().unwrap();
    p.sql("INSERT INTO pairs VALUES (-1, 'after', 'restart')")
        .unwrap();
    assert_eq!(
        converge(p, s, "SELECT count(*) FROM pairs", Duration::from_secs(60)),
        "3002"
    );
}

/// `synchronize_data` copies a table that already holds rows while the provider keeps writing:
/// afterwards both sides hold every row exactly once.
fn synchronize_data_while_writes_continue(kernel: &harness::Kernel) {
    let cluster = two_nodes(kernel, TABLES);
    let (p, s) = (cluster.node(0), cluster.node(1));
    p.sql("INSERT INTO pairs SELECT g, 'seed', md5(g::text) FROM generate_series(1, 500000) g")
        .unwrap();
    p.sql("SELECT spock.repset_add_all_tables('default', ARRAY['public'])")
        .unwrap();
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            p.sql("DO $$ BEGIN FOR i IN 1..2000 LOOP INSERT INTO pairs VALUES (-i, 'live', 'v'); \
                   UPDATE pairs SET v = 'changed' WHERE a = i AND b = 'seed'; COMMIT; END LOOP; END $$")
        });
        s.sql(&format!(
            "SELECT spock.sub_create('sub_n1_n2', '{}', synchronize_data := true)",
            p.dsn("postgres")
        ))
        .unwrap();
        s.sql("SET statement_timeout = '180s'; SELECT spock.sub_wait_for_sync('sub_n1_n2')")
            .unwrap();
        writer.join().unwrap().unwrap();
    });
    let q = "SELECT count(*), count(DISTINCT (a, b)), sum(a), count(*) FILTER (WHERE v = 'changed') FROM pairs";
    assert_eq!(
        converge(p, s, q, Duration::from_secs(120)),
        "502000|502000|124998249000|2000"
    );
    assert_eq!(
        s.sql("SELECT status FROM spock.sub_show_table('sub_n1_n2', 'pairs')")
            .unwrap(),
        "replicating"
    );
    assert_eq!(
        s.sql(
            "SELECT sync_kind, sync_status FROM spock.local_sync_status WHERE sync_nspname IS NULL"
        )
        .unwrap(),
        "d|r"
    );
    // Copied rows are the provider's (its origin, the snapshot's time), not local writes:
    // this node's own subscribers would not receive them again.
    assert_eq!(
        s.sql("SELECT count(*) FILTER (WHERE o.roname IS NULL), count(*) FILTER (WHERE o.roname = 'spk_postgres_n1_sub_n1_n2') \
               FROM pairs LEFT JOIN pg_replication_origin o ON o.roident = (pg_xact_commit_timestamp_origin(pairs.xmin)).roident")
            .unwrap(),
        "0|502000"
    );
}

/// Enums, domains, arrays, composites, uuids, ranges and partitioned tables arrive intact; a
/// million-row transaction and 10,000 small ones converge.
fn types_partitions_and_volume(kernel: &harness::Kernel) {
    let schema = "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy'); \
                  CREATE DOMAIN posint AS int CHECK (VALUE > 0); \
                  CREATE TYPE pair AS (x int, y text); \
                  CREATE TABLE typed(id int PRIMARY KEY, m mood, d posint, a int[], c pair, u uuid, \
                                     r int4range, ts timestamptz, iv interval, b boolean, f float8, n numeric(20,5)); \
                  CREATE TABLE parted(id int, k text, PRIMARY KEY (id)) PARTITION BY RANGE (id); \
                  CREATE TABLE parted_lo PARTITION OF parted FOR VALUES FROM (0) TO (1000); \
                  CREATE TABLE parted_hi PARTITION OF parted FOR VALUES FROM (1000) TO (MAXVALUE); \
                  CREATE TABLE volume(id int PRIMARY KEY, v text);";
    let cluster = two_nodes(kernel, schema);
    let (p, s) = (cluster.node(0), cluster.node(1));
    subscribe(p, s);
    p.sql(
        "INSERT INTO typed VALUES \
           (1, 'happy', 7, '{1,NULL,3}', ROW(1, 'a,b'), '6f1e7b9c-9a35-4c5e-8d5b-5d2f0a1c2b3d', '[1,5)', \
            '2024-02-29 12:00:00.123456+05', '1 day 02:03:04', true, 1.5e-300, 12345.67891), \
           (2, NULL, NULL, '{}', NULL, NULL, 'empty', NULL, NULL, NULL, 'NaN', NULL); \
         UPDATE typed SET m = 'sad', a = a || 4 WHERE id = 1; \
         INSERT INTO parted SELECT g, 'k' || g FROM generate_series(990, 1010) g; \
         UPDATE parted SET k = 'moved' WHERE id = 995; DELETE FROM parted WHERE id = 1005;",
    )
    .unwrap();
    let typed = "SELECT string_agg(t::text, E'\\n' ORDER BY id) FROM typed t";
    let got = converge(p, s, typed, Duration::from_secs(60));
    assert!(
        got.contains("(1,sad,7,\"{1,NULL,3,4}\",\"(1,\"\"a,b\"\")\""),
        "{got}"
    );
    converge(
        p,
        s,
        "SELECT string_agg(id || k, ',' ORDER BY id) FROM parted",
        Duration::from_secs(60),
    );
    assert_eq!(s.sql("SELECT count(*) FROM parted_hi").unwrap(), "10");

    p.sql("DO $$ BEGIN FOR i IN 1..10000 LOOP INSERT INTO volume VALUES (-i, 'small'); COMMIT; END LOOP; END $$")
        .unwrap();
    p.sql("INSERT INTO volume SELECT g, 'big' FROM generate_series(1, 1000000) g")
        .unwrap();
    let q = "SELECT count(*), sum(id) FILTER (WHERE id > 0), count(*) FILTER (WHERE id < 0) FROM volume";
    assert_eq!(
        converge(p, s, q, Duration::from_secs(300)),
        "1010000|500000500000|10000"
    );
}

/// `synchronize_structure`: a subscriber without the tables gets the provider's schema (types,
/// tables, indexes, constraints) and data, then replication goes on.
fn synchronize_structure_copies_the_schema(kernel: &harness::Kernel) {
    let cluster = two_nodes(kernel, "SELECT 1");
    let (p, s) = (cluster.node(0), cluster.node(1));
    p.sql(
        "CREATE TYPE color AS ENUM ('red', 'blue'); \
         CREATE TABLE shapes(id int PRIMARY KEY, c color NOT NULL, area numeric CHECK (area > 0)); \
         CREATE INDEX shapes_by_color ON shapes(c); \
         INSERT INTO shapes SELECT g, 'red', g FROM generate_series(1, 1000) g",
    )
    .unwrap();
    p.sql("SELECT spock.repset_add_all_tables('default', ARRAY['public'])")
        .unwrap();
    s.sql(&format!(
        "SELECT spock.sub_create('sub_n1_n2', '{}', synchronize_structure := true, synchronize_data := true)",
        p.dsn("postgres")
    ))
    .unwrap();
    s.sql("SET statement_timeout = '120s'; SELECT spock.sub_wait_for_sync('sub_n1_n2')")
        .unwrap();
    let indexes = "SELECT string_agg(indexdef, '; ' ORDER BY indexname) FROM pg_indexes WHERE tablename = 'shapes'";
    assert_eq!(s.sql(indexes).unwrap(), p.sql(indexes).unwrap());
    assert_eq!(
        s.sql("SELECT count(*), sum(area) FROM shapes").unwrap(),
        "1000|500500"
    );
    let e = s
        .sql("INSERT INTO shapes VALUES (0, 'blue', -1)")
        .unwrap_err()
        .to_string();
    assert!(e.contains("shapes_area_check"), "{e}");
    p.sql("INSERT INTO shapes VALUES (1001, 'blue', 5)")
        .unwrap();
    converge(
        p,
        s,
        "SELECT count(*), string_agg(DISTINCT c::text, ',') FROM shapes",
        Duration::from_secs(30),
    );
}

/// A table that drifted on the subscriber is copied again while the provider keeps writing;
/// a table added to the set later is copied by `sub_alter_sync`; repair mode keeps a
/// transaction's changes on the provider; a sync event is waited for on the subscriber.
fn tables_resync_while_streaming(kernel: &harness::Kernel) {
    let schema = format!("{TABLES} CREATE TABLE later(id int PRIMARY KEY, v text);");
    let cluster = two_nodes(kernel, &schema);
    let (p, s) = (cluster.node(0), cluster.node(1));
    p.sql("INSERT INTO later SELECT g, 'before' FROM generate_series(1, 500) g")
        .unwrap();
    p.sql("SELECT spock.repset_add_table('default', 'pairs')")
        .unwrap();
    common::subscribe(s, "sub_n1_n2", p, "");
    p.sql("INSERT INTO pairs SELECT g, 'k', 'v' || g FROM generate_series(1, 20000) g")
        .unwrap();
    let q = "SELECT count(*), sum(a), string_agg(v, ',' ORDER BY a, b) FILTER (WHERE a % 997 = 0) FROM pairs";
    converge(p, s, q, Duration::from_secs(60));

    // Drift on the subscriber (one-way replication: nothing corrects it by itself).
    s.sql("DELETE FROM pairs WHERE a <= 100; UPDATE pairs SET v = 'drift' WHERE a % 997 = 0")
        .unwrap();
    // Only a superuser may resync.
    s.sql("CREATE ROLE app LOGIN").unwrap();
    let e = s
        .sql("SET ROLE app; SELECT spock.sub_resync_table('sub_n1_n2', 'pairs')")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("permission denied for function sub_resync_table"),
        "{e}"
    );
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            p.sql(
                "DO $$ BEGIN FOR i IN 1..300 LOOP UPDATE pairs SET v = 'w' || i WHERE a = i * 50; \
                   INSERT INTO pairs VALUES (-i, 'k', 'new'); COMMIT; END LOOP; END $$",
            )
        });
        assert_eq!(
            s.sql("SELECT spock.sub_resync_table('sub_n1_n2', 'pairs')")
                .unwrap(),
            "t"
        );
        s.sql("SET statement_timeout = '120s'; SELECT spock.sub_wait_for_sync('sub_n1_n2')")
            .unwrap();
        writer.join().unwrap().unwrap();
    });
    let q = "SELECT count(*), sum(a), md5(string_agg(a || b || v, ',' ORDER BY a, b)) FROM pairs";
    let got = converge(p, s, q, Duration::from_secs(60));
    assert!(got.starts_with("20300|"), "{got}");
    assert_eq!(
        s.sql("SELECT status FROM spock.sub_show_table('sub_n1_n2', 'pairs')")
            .unwrap(),
        "replicating"
    );

    // A table joins the set after the subscription: its existing rows come with sub_alter_sync.
    p.sql("SELECT spock.repset_add_table('default', 'later')")
        .unwrap();
    p.sql("INSERT INTO later VALUES (501, 'after')").unwrap();
    assert_eq!(
        s.sql("SELECT spock.sub_alter_sync('sub_n1_n2')").unwrap(),
        "t"
    );
    s.sql("SET statement_timeout = '60s'; SELECT spock.sub_wait_for_sync('sub_n1_n2')")
        .unwrap();
    let q = "SELECT count(*), sum(id), count(*) FILTER (WHERE v = 'after') FROM later";
    assert_eq!(converge(p, s, q, Duration::from_secs(60)), "501|125751|1");
    assert_eq!(
        s.sql(
            "SELECT sync_status, sync_statuslsn > '0/0' FROM spock.local_sync_status \
               WHERE sync_relname = 'later'"
        )
        .unwrap(),
        "r|t"
    );

    // Repair mode: the changes in between stay on the provider.
    p.sql(
        "BEGIN; SELECT spock.repair_mode(true); INSERT INTO later VALUES (1000, 'repair'); \
           SELECT spock.repair_mode(false); INSERT INTO later VALUES (1001, 'normal'); COMMIT",
    )
    .unwrap();
    // A bare repair-mode message (anyone may write one) does not hide anything.
    p.sql(
        "BEGIN; SELECT pg_logical_emit_message(true, 'Spock', spock.spock_message(1, 0)); \
           INSERT INTO later VALUES (1002, 'message only'); COMMIT",
    )
    .unwrap();
    let lsn = p.sql("SELECT spock.sync_event()").unwrap();
    assert_eq!(
        s.sql(&format!(
            "CALL spock.wait_for_sync_event(NULL, 'n1', '{lsn}', 30)"
        ))
        .unwrap(),
        "t"
    );
    assert_eq!(
        s.sql("SELECT string_agg(id::text, ',' ORDER BY id) FROM later WHERE id >= 1000")
            .unwrap(),
        "1001,1002"
    );
    let e = s
        .sql("CALL spock.wait_for_sync_event(NULL, 'nowhere', '0/0')")
        .unwrap_err()
        .to_string();
    assert!(e.contains("Origin node 'nowhere' not found"), "{e}");
}

/// A row filter and a column list limit what the initial copy and the stream carry; bad
/// filters are refused with the parser's error.
fn row_filters_and_column_lists(kernel: &harness::Kernel) {
    let cluster = two_nodes(
        kernel,
        "CREATE TABLE orders(id int PRIMARY KEY, region text, amount int, note text);",
    );
    let (p, s) = (cluster.node(0), cluster.node(1));
    for (filter, error) in [
        ("(SELECT true)", "cannot use subquery in check constraint"),
        (
            "true FROM pg_class WHERE true",
            "row_filter must be a single expression",
        ),
        ("SELECT true", "syntax error at or near \"SELECT\""),
        ("nosuchcol > 1", "column \"nosuchcol\" does not exist"),
        (
            "count(*) > 0",
            "aggregate functions are not allowed in check constraints",
        ),
        (
            "amount",
            "argument of row_filter must be type boolean, not type integer",
        ),
    ] {
        let e = p
            .sql(&format!(
                "SELECT spock.repset_add_table('default', 'orders', row_filter := '{}')",
                filter.replace('\'', "''")
            ))
            .unwrap_err()
            .to_string();
        assert!(e.contains(error), "{filter}: {e}");
    }
    p.sql("INSERT INTO orders SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, g % 50, 'n' || g \
           FROM generate_series(1, 1000) g")
        .unwrap();
    p.sql("SELECT spock.repset_add_table('default', 'orders', columns := ARRAY['id', 'region', 'amount'], \
           row_filter := 'region = ''eu'' AND amount > 10')")
        .unwrap();
    assert_eq!(
        p.sql("SELECT att_list, has_row_filter FROM spock.repset_show_table('orders', ARRAY['default'])")
            .unwrap(),
        "{id,region,amount}|t"
    );
    assert_eq!(
        p.sql("SELECT count(*) FROM spock.table_data_filtered(NULL::orders, 'orders', ARRAY['default'])")
            .unwrap(),
        "380"
    );
    s.sql(&format!(
        "SELECT spock.sub_create('sub_n1_n2', '{}', synchronize_data := true)",
        p.dsn("postgres")
    ))
    .unwrap();
    s.sql("SET statement_timeout = '60s'; SELECT spock.sub_wait_for_sync('sub_n1_n2')")
        .unwrap();
    let expected =
        "SELECT count(*), sum(id), sum(amount) FROM orders WHERE region = 'eu' AND amount > 10";
    let got = "SELECT count(*), sum(id), sum(amount) FROM orders";
    assert_eq!(s.sql(got).unwrap(), p.sql(expected).unwrap());
    assert_eq!(
        s.sql("SELECT count(*) FILTER (WHERE note IS NOT NULL) FROM orders")
            .unwrap(),
        "0"
    );

    // Streamed changes: new rows on both sides of the filter, a row moving into it, deletes.
    p.sql("INSERT INTO orders VALUES (2000, 'eu', 20, 'x'), (2001, 'us', 20, 'x'), (2002, 'eu', 5, 'x'); \
           UPDATE orders SET region = 'eu' WHERE id = 11; \
           DELETE FROM orders WHERE id IN (12, 13)")
        .unwrap();
    let started = Instant::now();
    while s.sql(got).unwrap() != p.sql(expected).unwrap() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "subscriber {} vs provider {}\n{}",
            s.sql(got).unwrap(),
            p.sql(expected).unwrap(),
            s.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        s.sql("SELECT string_agg(id::text, ',' ORDER BY id) FROM orders WHERE id IN (11, 12, 2000, 2001, 2002)")
            .unwrap(),
        "11,2000"
    );
}

/// replicate_ddl runs DDL here and at the same point of the stream on the subscriber, as the
/// given role; only DDL is accepted. A table added with synchronize_data is copied through the
/// queue.
fn ddl_and_table_sync_travel_through_the_queue(kernel: &harness::Kernel) {
    let cluster = two_nodes(
        kernel,
        "CREATE ROLE owner_role; GRANT CREATE ON SCHEMA public TO owner_role;",
    );
    let (p, s) = (cluster.node(0), cluster.node(1));
    common::subscribe(s, "sub_n1_n2", p, "");
    let e = p
        .sql("SELECT spock.replicate_ddl('CREATE TABLE t0(); INSERT INTO t0 DEFAULT VALUES')")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("spock.replicate_ddl() cannot execute INSERT statement"),
        "{e}"
    );
    let e = p
        .sql("SELECT spock.replicate_ddl('CREATE TABLE t0()', ARRAY['nosuchset'])")
        .unwrap_err()
        .to_string();
    assert!(e.contains("replication set nosuchset not found"), "{e}");
    for n in [p, s] {
        n.sql("CREATE SCHEMA app; GRANT USAGE, CREATE ON SCHEMA app TO owner_role")
            .unwrap();
    }
    p.sql("SET search_path = app, public; \
           SELECT spock.replicate_ddl('CREATE TABLE late(id int PRIMARY KEY, v text); \
                                       ALTER TABLE late ADD COLUMN w int DEFAULT 7', role := 'owner_role')")
        .unwrap();
    let q = "SELECT c.relnamespace::regnamespace || '.' || c.relname || ':' || c.relowner::regrole || ':' || \
             (SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = c.oid AND attnum > 0) \
             FROM pg_class c WHERE c.relname = 'late'";
    assert_eq!(
        converge(p, s, q, Duration::from_secs(30)),
        "app.late:owner_role:id,v,w"
    );
    // The worker's own role and path are back: replication goes on.
    p.sql("INSERT INTO app.late SELECT g, 'v' || g FROM generate_series(1, 300) g")
        .unwrap();
    assert_eq!(s.sql("SELECT count(*) FROM app.late").unwrap(), "0");
    p.sql("SELECT spock.repset_add_table('default', 'app.late', synchronize_data := true)")
        .unwrap();
    p.sql("INSERT INTO app.late VALUES (301, 'streamed')")
        .unwrap();
    let q = "SELECT count(*), sum(id), sum(w) FROM app.late";
    assert_eq!(converge(p, s, q, Duration::from_secs(30)), "301|45451|2107");
    assert_eq!(
        s.sql("SELECT status FROM spock.sub_show_table('sub_n1_n2', 'app.late')")
            .unwrap(),
        "replicating"
    );
    assert_eq!(
        s.sql("SELECT count(*) FROM spock.queue WHERE message_type IN ('Q', 'A')")
            .unwrap(),
        "2"
    );

    // Sequences move when the provider pushes them, ahead by the cache size.
    for n in [p, s] {
        n.sql("CREATE SEQUENCE app.ids").unwrap();
    }
    p.sql("SELECT nextval('app.ids') FROM generate_series(1, 42)")
        .unwrap();
    p.sql("SELECT spock.repset_add_seq('default', 'app.ids', synchronize_data := true)")
        .unwrap();
    assert_eq!(
        converge_to(s, "SELECT last_value FROM app.ids", "1042"),
        "1042"
    );
    p.sql("SELECT nextval('app.ids') FROM generate_series(1, 100)")
        .unwrap();
    p.sql("SELECT spock.sync_seq('app.ids')").unwrap();
    assert_eq!(
        converge_to(s, "SELECT last_value FROM app.ids", "1142"),
        "1142"
    );
    let e = p
        .sql("CREATE SEQUENCE app.other; SELECT spock.sync_seq('app.other')")
        .unwrap_err()
        .to_string();
    assert!(e.contains("app.other is not a replicated sequence"), "{e}");
}

/// The smaller 5.0.5 functions: md5_agg compares tables across nodes, commit origins are named
/// by node id, waits on slots and workers, partitions joining sets.
fn helper_functions(kernel: &harness::Kernel) {
    let schema = "CREATE TABLE kv(k int PRIMARY KEY, v text); \
                  CREATE TABLE parted(id int PRIMARY KEY, v text) PARTITION BY RANGE (id); \
                  CREATE TABLE parted_a PARTITION OF parted FOR VALUES FROM (0) TO (100); \
                  CREATE TABLE parted_b PARTITION OF parted FOR VALUES FROM (100) TO (200);";
    let cluster = two_nodes(kernel, schema);
    let (p, s) = (cluster.node(0), cluster.node(1));
    p.sql("SELECT spock.repset_add_table('default', 'kv')")
        .unwrap();
    p.sql(
        "SELECT spock.repset_add_table('default', 'parted', include_partitions := false, \
           row_filter := 'id % 2 = 0')",
    )
    .unwrap();
    assert_eq!(
        p.sql("SELECT spock.repset_add_partition('parted')")
            .unwrap(),
        "2"
    );
    assert_eq!(
        p.sql("SELECT spock.repset_add_partition('kv')").unwrap(),
        "0"
    );
    common::subscribe(s, "sub_n1_n2", p, "");
    p.sql(
        "INSERT INTO kv SELECT g, md5(g::text) FROM generate_series(1, 1000) g; \
           INSERT INTO parted SELECT g, 'p' FROM generate_series(0, 199) g",
    )
    .unwrap();
    // Every slot has confirmed what was written when the wait began.
    p.sql("SELECT spock.wait_slot_confirm_lsn(NULL, NULL)")
        .unwrap();
    let md5 = "SELECT spock.md5_agg() WITHIN GROUP (ORDER BY kv) FROM kv";
    assert_eq!(s.sql(md5).unwrap(), p.sql(md5).unwrap());
    assert_eq!(s.sql("SELECT count(*) FROM parted").unwrap(), "100");
    let provider_id = p.sql("SELECT node_id FROM spock.node_info()").unwrap();
    assert_eq!(
        s.sql("SELECT (spock.xact_commit_timestamp_origin(xmin)).roident FROM kv WHERE k = 1")
            .unwrap(),
        provider_id
    );
    assert_eq!(
        p.sql("SELECT (spock.xact_commit_timestamp_origin(xmin)).roident FROM kv WHERE k = 1")
            .unwrap(),
        provider_id
    );
    let sub_id = s
        .sql("SELECT sub_id FROM spock.subscription WHERE sub_name = 'sub_n1_n2'")
        .unwrap();
    assert_eq!(
        s.sql(&format!(
            "SELECT spock.wait_for_apply_worker({sub_id}, 300)"
        ))
        .unwrap(),
        "t"
    );
    assert_eq!(
        s.sql("SELECT spock.wait_for_apply_worker(1, 300)").unwrap(),
        "f"
    );
    assert_eq!(
        p.sql("SELECT spock.repset_remove_partition('parted', 'parted_b')")
            .unwrap(),
        "1"
    );
    assert_eq!(s.sql("SELECT spock.get_country()").unwrap(), "??");
}

/// The apply worker writes through the executor and keeps the subscriber's own rules:
/// ordinary triggers stay quiet while REPLICA ones fire, a generated column only the
/// subscriber has is computed there, an unchanged TOASTed value keeps the local copy, and a
/// row breaking a subscriber-only CHECK constraint is an error the exception log reports
/// (`transdiscard`) while later transactions go on. Values travel in binary here, and as text
/// for a subscription with `force_text_transfer`; both give the same rows.
fn executor_apply_keeps_the_subscribers_rules(kernel: &harness::Kernel) {
    let schema = "CREATE TABLE acct(id int PRIMARY KEY, owner text UNIQUE, amount numeric, \
                  at timestamptz, tags text[], note text);";
    let cluster = two_nodes(kernel, schema);
    let (p, s) = (cluster.node(0), cluster.node(1));
    // The apply worker's search_path is pg_catalog (as core's): trigger code qualifies.
    s.sql(
        "ALTER TABLE acct ADD COLUMN doubled numeric GENERATED ALWAYS AS (amount * 2) STORED; \
         ALTER TABLE acct ADD CONSTRAINT small CHECK (amount < 1000); \
         CREATE TABLE audit(what text); \
         CREATE FUNCTION log_it() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN INSERT INTO public.audit VALUES (TG_NAME || ':' || TG_OP || ':' || NEW.id); RETURN NEW; END $$; \
         CREATE TRIGGER ordinary BEFORE INSERT OR UPDATE ON acct FOR EACH ROW EXECUTE FUNCTION log_it(); \
         CREATE TRIGGER replica BEFORE INSERT OR UPDATE ON acct FOR EACH ROW EXECUTE FUNCTION log_it(); \
         ALTER TABLE acct ENABLE REPLICA TRIGGER replica;",
    )
    .unwrap();
    s.configure("spock.exception_behaviour", "transdiscard")
        .unwrap();
    subscribe(p, s);
    // One transaction per statement.
    for sql in [
        "INSERT INTO acct VALUES (1, 'ann', 10.5, '2024-02-29 12:00:00.123456+00', '{a,\"b c\"}', \
           (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 4000) i)), \
           (2, 'bob', 20, NULL, NULL, 'short')",
        "UPDATE acct SET amount = 11 WHERE id = 1",
        "DELETE FROM acct WHERE id = 2",
        "INSERT INTO acct VALUES (3, 'cy', 5000, NULL, NULL, 'too much')",
        "INSERT INTO acct VALUES (4, 'dee', 4, NULL, '{}', NULL)",
    ] {
        p.sql(sql).unwrap();
    }
    let rows = "SELECT string_agg(format('%s|%s|%s|%s|%s|%s', id, owner, amount, at, tags, md5(note)), \
                E'\\n' ORDER BY id) FROM acct WHERE id <> 3";
    converge(p, s, rows, Duration::from_secs(60));
    assert_eq!(
        s.sql("SELECT string_agg(id || ':' || doubled, ',' ORDER BY id) FROM acct")
            .unwrap(),
        "1:22,4:8"
    );
    assert_eq!(
        s.sql("SELECT string_agg(what, ',' ORDER BY what) FROM audit")
            .unwrap(),
        "replica:INSERT:1,replica:INSERT:2,replica:INSERT:4,replica:UPDATE:1"
    );
    let logged = s
        .sql("SELECT operation || ' ' || error_message FROM spock.exception_log WHERE table_name = 'acct'")
        .unwrap();
    assert!(
        logged.contains("INSERT") && logged.contains("small"),
        "{logged}"
    );
    // The channel counters of both sides.
    assert_eq!(
        s.sql(
            "SELECT sub_name || ' ' || (n_tup_ins >= 3) || ' ' || n_tup_upd || ' ' || n_tup_del \
               FROM spock.channel_table_stats WHERE table_name = 'acct'"
        )
        .unwrap(),
        "sub_n1_n2 true 1 1"
    );
    assert_eq!(
        p.sql(
            "SELECT sub_name || ' ' || n_tup_ins || ' ' || n_tup_upd || ' ' || n_tup_del \
               FROM spock.channel_table_stats WHERE table_name = 'acct'"
        )
        .unwrap(),
        "<output> 4 1 1"
    );
    p.sql("SELECT spock.reset_channel_stats()").unwrap();
    assert_eq!(
        p.sql("SELECT count(*) FROM spock.channel_summary_stats")
            .unwrap(),
        "0"
    );

    // The same changes as text.
    s.sql("SELECT spock.sub_drop('sub_n1_n2'); TRUNCATE acct, audit")
        .unwrap();
    p.sql("DELETE FROM acct WHERE id = 3").unwrap();
    s.sql(&format!(
        "SELECT spock.sub_create('sub_n1_n2', '{}', force_text_transfer := true, \
         synchronize_data := true)",
        p.dsn("postgres")
    ))
    .unwrap();
    p.sql(
        "UPDATE acct SET amount = 12, at = '2001-01-01 01:01:01.5+00' WHERE id = 1; \
           INSERT INTO acct VALUES (5, 'eve', 0.125, now(), '{x}', 'e')",
    )
    .unwrap();
    converge(p, s, rows, Duration::from_secs(60));
    assert_eq!(
        s.sql("SELECT string_agg(id || ':' || doubled, ',' ORDER BY id) FROM acct")
            .unwrap(),
        "1:24,4:8,5:0.250"
    );
}

/// `get_lsn_from_commit_ts` reads a slot's WAL: the end of the last local commit at or before
/// the time, `0/0` before any, and clear errors for a missing slot or an unprivileged caller.
fn lsn_from_commit_ts(kernel: &harness::Kernel) {
    let cluster = two_nodes(kernel, "CREATE TABLE marks(id int PRIMARY KEY)");
    let n = cluster.node(0);
    n.sql("SELECT pg_create_logical_replication_slot('probe', 'pgoutput')")
        .unwrap();
    let before = n.sql("SELECT pg_current_wal_lsn()").unwrap();
    n.sql("INSERT INTO marks VALUES (1)").unwrap();
    let after = n.sql("SELECT pg_current_wal_lsn()").unwrap();
    n.sql("SELECT pg_sleep(0.01); INSERT INTO marks VALUES (2)")
        .unwrap();
    let at = |ts: &str| {
        n.sql(&format!(
            "SELECT spock.get_lsn_from_commit_ts('probe', {ts})"
        ))
        .unwrap()
    };
    let first = at("(SELECT pg_xact_commit_timestamp(xmin) FROM marks WHERE id = 1)");
    assert_eq!(
        n.sql(&format!(
            "SELECT '{first}'::pg_lsn > '{before}' AND '{first}'::pg_lsn <= '{after}'"
        ))
        .unwrap(),
        "t",
        "{first} not in ({before}, {after}]"
    );
    let second = at("(SELECT pg_xact_commit_timestamp(xmin) FROM marks WHERE id = 2)");
    assert_eq!(
        n.sql(&format!("SELECT '{second}'::pg_lsn > '{after}'"))
            .unwrap(),
        "t"
    );
    assert_eq!(at("'2001-01-01'"), "0/0");
    let e = n
        .sql("SELECT spock.get_lsn_from_commit_ts('nope', now())")
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"nope\" does not exist"), "{e}");
    n.sql("CREATE ROLE someone LOGIN").unwrap();
    let e = n
        .sql_as(
            "someone",
            "postgres",
            "SELECT spock.get_lsn_from_commit_ts('probe', now())",
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("permission denied"), "{e}");
}

/// A remote INSERT that meets a local transaction inserting the same key waits for it and then
/// resolves the conflict by last-update-wins (the local insert committed later, so it stays),
/// without an error or a restart of the apply worker.
fn remote_insert_waits_for_a_concurrent_local_insert(kernel: &harness::Kernel) {
    let cluster = two_nodes(kernel, "CREATE TABLE race(id int PRIMARY KEY, v text)");
    let (p, s) = (cluster.node(0), cluster.node(1));
    subscribe(p, s);
    let apply_pid = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'spock apply'";
    let pid = s.sql(apply_pid).unwrap();
    std::thread::scope(|scope| {
        let local = scope.spawn(|| {
            s.sql("BEGIN; INSERT INTO race VALUES (1, 'local'); SELECT pg_sleep(2); COMMIT")
        });
        // The local insert is in progress when the remote one arrives.
        std::thread::sleep(Duration::from_millis(500));
        p.sql("INSERT INTO race VALUES (1, 'remote'), (2, 'remote')")
            .unwrap();
        local.join().unwrap().unwrap();
    });
    assert_eq!(
        converge_to(
            s,
            "SELECT string_agg(id || v, ',' ORDER BY id) FROM race",
            "1local,2remote"
        ),
        "1local,2remote"
    );
    assert_eq!(s.sql(apply_pid).unwrap(), pid, "{}", s.log_tail(30));
    let log = s.log_tail(200);
    assert!(!log.contains("duplicate key"), "{log}");
}

/// A table copy from `sub_resync_table` runs in the subscription's sync worker (PostgreSQL
/// 16+): while a slow copy is under way, changes of other tables keep arriving; changes of the
/// table being copied wait for the copy and then apply over it. On 15 the apply worker copies
/// (replication origins cannot be shared there), so the stream waits for the copy.
fn resync_runs_in_a_sync_worker_while_streaming_goes_on(kernel: &harness::Kernel) {
    let schema = "CREATE TABLE slow(id int PRIMARY KEY, v text); \
                  CREATE TABLE fast(id int PRIMARY KEY, v text);";
    let cluster = two_nodes(kernel, schema);
    let (p, s) = (cluster.node(0), cluster.node(1));
    subscribe(p, s);
    p.sql("INSERT INTO slow SELECT g, 'v' FROM generate_series(1, 1000) g")
        .unwrap();
    converge(p, s, "SELECT count(*) FROM slow", Duration::from_secs(60));
    // The copy into `slow` takes about 4 s on the subscriber.
    s.sql(
        "CREATE FUNCTION dawdle() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN PERFORM pg_sleep(0.004); RETURN NEW; END $$; \
         CREATE TRIGGER dawdle BEFORE INSERT ON slow FOR EACH ROW EXECUTE FUNCTION dawdle(); \
         ALTER TABLE slow ENABLE ALWAYS TRIGGER dawdle;",
    )
    .unwrap();
    assert_eq!(
        s.sql("SELECT spock.sub_resync_table('sub_n1_n2', 'slow')")
            .unwrap(),
        "t"
    );
    let status = "SELECT sync_status FROM spock.local_sync_status WHERE sync_relname = 'slow'";
    let started = Instant::now();
    while s
        .sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type IN ('spock sync', 'spock apply') \
              AND wait_event = 'PgSleep'")
        .unwrap()
        == "0"
    {
        assert!(started.elapsed() < Duration::from_secs(30), "no copy started");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Two transactions: the first touches only `fast`.
    p.sql("INSERT INTO fast VALUES (1, 'during the copy')")
        .unwrap();
    p.sql("UPDATE slow SET v = 'after' WHERE id = 7").unwrap();
    if kernel.major >= 16 {
        assert_eq!(
            converge_to(s, "SELECT v FROM fast", "during the copy"),
            "during the copy"
        );
        assert_ne!(s.sql(status).unwrap(), "r", "the copy was already over");
        assert_eq!(
            s.sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'spock sync'")
                .unwrap(),
            "1"
        );
    }
    assert_eq!(converge_to(s, status, "r"), "r");
    converge(
        p,
        s,
        "SELECT count(*), string_agg(v, ',' ORDER BY id) FILTER (WHERE id IN (6, 7)), \
         (SELECT v FROM fast) FROM slow",
        Duration::from_secs(60),
    );

    // Dropping the subscription in the middle of a copy stops the copy at once.
    s.sql("SELECT spock.sub_resync_table('sub_n1_n2', 'slow')")
        .unwrap();
    let started = Instant::now();
    while s
        .sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'")
        .unwrap()
        == "0"
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no copy started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let dropping = Instant::now();
    assert_eq!(s.sql("SELECT spock.sub_drop('sub_n1_n2')").unwrap(), "1");
    if kernel.major >= 16 {
        assert!(
            dropping.elapsed() < Duration::from_secs(3),
            "{:?}",
            dropping.elapsed()
        );
    }
    assert_eq!(
        s.sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type IN ('spock sync', 'spock apply')")
            .unwrap(),
        "0"
    );
    assert_eq!(
        p.sql("SELECT count(*) FROM pg_replication_slots").unwrap(),
        "0"
    );
}

/// Columns only the subscriber has take their defaults in replicated inserts — evaluated as
/// the table's owner, as the owner's own INSERT would — and keep their values through
/// replicated updates. A table without a key (in an insert-only set) takes its rows, NULLs
/// and equal rows included.
fn local_only_columns_and_tables_without_a_key(kernel: &harness::Kernel) {
    let cluster = two_nodes(kernel, "CREATE TABLE extra(id int PRIMARY KEY, v text)");
    let (p, s) = (cluster.node(0), cluster.node(1));
    s.sql(
        "CREATE ROLE alice; ALTER TABLE extra OWNER TO alice; \
         ALTER TABLE extra ADD COLUMN note text DEFAULT 'local', \
           ADD COLUMN n bigint GENERATED BY DEFAULT AS IDENTITY, \
           ADD COLUMN who text DEFAULT current_user, ADD COLUMN plain int;",
    )
    .unwrap();
    subscribe(p, s);
    for n in [p, s] {
        n.sql("CREATE TABLE bag(a int, b text, c jsonb)").unwrap();
    }
    s.sql("ALTER TABLE bag ADD COLUMN at_sub text DEFAULT 'sub'")
        .unwrap();
    p.sql("SELECT spock.repset_add_table('default_insert_only', 'bag')")
        .unwrap();
    for sql in [
        "INSERT INTO extra VALUES (1, 'a'), (2, 'b')",
        "UPDATE extra SET v = 'a2' WHERE id = 1",
        "INSERT INTO bag VALUES (1, 'x', NULL), (1, 'x', NULL), (2, NULL, '{\"k\": 1}')",
    ] {
        p.sql(sql).unwrap();
    }
    let extra = "SELECT string_agg(format('%s|%s|%s|%s|%s|%s', id, v, note, n, who, plain), ',' \
                 ORDER BY id) FROM extra";
    let bag = "SELECT string_agg(format('%s|%s|%s|%s', a, b, c, at_sub), ',' ORDER BY a) FROM bag";
    let major = kernel.major;
    assert_eq!(
        converge_to(s, extra, "1|a2|local|1|alice|,2|b|local|2|alice|"),
        "1|a2|local|1|alice|,2|b|local|2|alice|",
        "PostgreSQL {major}: {}",
        s.log_tail(30)
    );
    let want = "1|x||sub,1|x||sub,2||{\"k\": 1}|sub";
    assert_eq!(
        converge_to(s, bag, want),
        want,
        "PostgreSQL {major}: {}",
        s.log_tail(30)
    );
    // A local-only value survives the provider's update of the row.
    s.sql("UPDATE extra SET note = 'mine' WHERE id = 2")
        .unwrap();
    p.sql("UPDATE extra SET v = 'b2' WHERE id = 2").unwrap();
    assert_eq!(
        converge_to(s, extra, "1|a2|local|1|alice|,2|b2|mine|2|alice|"),
        "1|a2|local|1|alice|,2|b2|mine|2|alice|",
        "PostgreSQL {major}"
    );
}
