//! Errors while applying: a change the subscriber refuses (a constraint only it has) is handled
//! as `spock.exception_behaviour` says, logged in `spock.exception_log`, and never makes the
//! apply worker restart; `sub_alter_skiplsn` skips a transaction that cannot be applied.

mod common;

// One test per major for each of these (`name::pg17`…); see `common::per_major`.
crate::per_major!(each_exception_behaviour,);

use harness::{Cluster, Node};
use std::time::Duration;

fn wait_for(node: &Node, query: &str, want: &str) {
    common::wait_for(node, "postgres", query, want, 30);
}

/// n2 subscribed (as `sub`) to table `t` of n1, where only n2 refuses large values.
fn setup(kernel: &harness::Kernel) -> Cluster {
    let cluster = common::Mesh::new(2)
        .schema("CREATE TABLE t(id int PRIMARY KEY, v int)")
        .start(kernel);
    let (p, s) = (cluster.node(0), cluster.node(1));
    s.sql("ALTER TABLE t ADD CONSTRAINT small CHECK (v < 100)")
        .unwrap();
    p.sql("SELECT spock.repset_add_all_tables('default', ARRAY['public'])")
        .unwrap();
    common::subscribe(s, "sub", p, "");
    cluster
}

fn apply_pid(s: &Node) -> String {
    s.sql("SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE backend_type = 'spock apply'")
        .unwrap()
}

/// Sets the behaviour and waits until a marker row written after it has arrived.
fn behaviour(p: &Node, s: &Node, value: &str, marker: i32) {
    s.configure("spock.exception_behaviour", value).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    p.sql(&format!("INSERT INTO t VALUES ({marker}, 0)"))
        .unwrap();
    wait_for(
        s,
        &format!("SELECT count(*) FROM t WHERE id = {marker}"),
        "1",
    );
}

fn each_exception_behaviour(kernel: &harness::Kernel) {
    let cluster = setup(kernel);
    let (p, s) = (cluster.node(0), cluster.node(1));
    behaviour(p, s, "discard", 1000);
    let pid = apply_pid(s);

    // discard: the failing change is skipped, the rest of its transaction applied.
    p.sql("BEGIN; INSERT INTO t VALUES (1, 1), (2, 500), (3, 3); COMMIT;")
        .unwrap();
    p.sql("INSERT INTO t VALUES (4, 4)").unwrap();
    wait_for(s, "SELECT count(*) FROM t WHERE id = 4", "1");
    assert_eq!(
        s.sql("SELECT string_agg(id::text, ',' ORDER BY id) FROM t WHERE id < 1000")
            .unwrap(),
        "1,3,4"
    );
    let log = s
        .sql("SELECT string_agg(format('%s %s %s', operation, remote_new_tup->>'id', error_message), E'\\n' ORDER BY command_counter) FROM spock.exception_log")
        .unwrap();
    // exception_logging = all (the default) also lists the changes that went through.
    assert_eq!(
        log,
        "INSERT 1 \nINSERT 2 new row for relation \"t\" violates check constraint \"small\"\nINSERT 3 "
    );

    // transdiscard: the whole transaction is skipped, each of its changes logged.
    behaviour(p, s, "transdiscard", 1001);
    s.sql("TRUNCATE spock.exception_log").unwrap();
    p.sql("BEGIN; INSERT INTO t VALUES (5, 5), (6, 600); COMMIT;")
        .unwrap();
    p.sql("INSERT INTO t VALUES (7, 7)").unwrap();
    wait_for(s, "SELECT count(*) FROM t WHERE id = 7", "1");
    assert_eq!(
        s.sql("SELECT count(*) FROM t WHERE id IN (5, 6)").unwrap(),
        "0"
    );
    let log = s
        .sql("SELECT string_agg(format('%s:%s', remote_new_tup->>'id', error_message <> ''), ' ' ORDER BY command_counter) FROM spock.exception_log")
        .unwrap();
    assert_eq!(log, "5:f 6:t");
    assert_eq!(apply_pid(s), pid, "the apply worker restarted");

    // sub_disable: the subscription stops at the transaction; skipping its LSN goes on.
    behaviour(p, s, "sub_disable", 1002);
    p.sql("BEGIN; INSERT INTO t VALUES (8, 8), (9, 900); COMMIT;")
        .unwrap();
    wait_for(
        s,
        "SELECT sub_enabled::text FROM spock.subscription",
        "false",
    );
    wait_for(
        s,
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'spock apply'",
        "0",
    );
    let msg = s
        .sql("SELECT error_message FROM spock.exception_log WHERE operation = 'SUB_DISABLE'")
        .unwrap();
    assert!(
        msg.starts_with("disabling subscription sub due to exception(s) - skip_lsn = "),
        "{msg}"
    );
    let lsn = msg
        .trim_start_matches("disabling subscription sub due to exception(s) - skip_lsn = ")
        .split(':')
        .next()
        .unwrap()
        .to_string();
    p.sql("INSERT INTO t VALUES (10, 10)").unwrap();
    // Enabled again without a skip, it stops at the same transaction.
    s.sql("SELECT spock.sub_enable('sub')").unwrap();
    wait_for(
        s,
        "SELECT count(*) FROM spock.exception_log WHERE operation = 'SUB_DISABLE'",
        "2",
    );
    wait_for(
        s,
        "SELECT sub_enabled::text FROM spock.subscription",
        "false",
    );
    s.sql(&format!("SELECT spock.sub_alter_skiplsn('sub', '{lsn}')"))
        .unwrap();
    s.sql("SELECT spock.sub_enable('sub')").unwrap();
    wait_for(s, "SELECT count(*) FROM t WHERE id = 10", "1");
    assert_eq!(
        s.sql("SELECT count(*) FROM t WHERE id IN (8, 9)").unwrap(),
        "0"
    );
    assert_eq!(
        s.sql("SELECT sub_skip_lsn::text FROM spock.subscription")
            .unwrap(),
        "0/0"
    );
    assert!(
        s.log_tail(200)
            .contains("skip-LSN of subscription \"sub\" cleared")
    );
}
