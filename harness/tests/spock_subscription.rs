//! Subscriptions, catalog side: sub_create against a real provider over TCP, what it records,
//! the alter/show/drop functions, and bad input (nothing half-created).

mod common;

// One test per major for each of these (`name::pg17`…); see `common::per_major`.
crate::per_major!(sub_create_records_the_provider_and_the_subscription,);

use harness::{Cluster, ClusterOptions, Node};

fn count(n: &Node, table: &str) -> String {
    n.sql(&format!("SELECT count(*) FROM spock.{table}"))
        .unwrap()
}

fn sub_create_records_the_provider_and_the_subscription(kernel: &harness::Kernel) {
    let cluster = Cluster::start(kernel, &ClusterOptions::default().nodes(3)).unwrap();
    let (p, s, plain) = (cluster.node(0), cluster.node(1), cluster.node(2));
    for (n, name) in [(p, "test_provider"), (s, "test_subscriber")] {
        n.sql("CREATE EXTENSION spock").unwrap();
        n.sql(&format!(
            "SELECT spock.node_create('{name}', '{}')",
            n.dsn("postgres")
        ))
        .unwrap();
    }
    let pdsn = p.dsn("postgres");

    // Bad input first: each a clear error, nothing created.
    let bad = |sql: &str| s.sql(sql).unwrap_err().to_string();
    let e = bad(&format!("SELECT spock.sub_create('Bad-Name', '{pdsn}')"));
    assert!(
        e.contains("subscription name \"Bad-Name\" is invalid"),
        "{e}"
    );
    let e = bad(
        "SELECT spock.sub_create('sub1', 'host=127.0.0.1 port=notaport dbname=postgres password=secret')",
    );
    assert!(e.contains("invalid") && !e.contains("secret"), "{e}");
    let e = bad(
        "SELECT spock.sub_create('sub1', 'host=127.0.0.1 port=1 dbname=postgres user=postgres password=secret')",
    );
    assert!(
        e.contains("could not connect to the postgresql server in replication mode"),
        "{e}"
    );
    assert!(
        !e.contains("secret"),
        "the password must not be echoed: {e}"
    );
    let e = bad(&format!(
        "SELECT spock.sub_create('sub1', '{}')",
        plain.dsn("postgres")
    ));
    assert!(e.contains("could not fetch remote node info"), "{e}");
    let e = bad(&format!(
        "SELECT spock.sub_create('sub1', '{pdsn}', synchronize_structure := true, enabled := false)"
    ));
    assert!(
        e.contains("in disabled state is not allowed to synchronize structure or data"),
        "{e}"
    );
    for table in ["subscription", "local_sync_status", "progress"] {
        assert_eq!(count(s, table), "0", "{table} after failed sub_create");
    }
    assert_eq!(count(s, "node"), "1");

    let sub_id = s
        .sql(&format!(
            "SELECT spock.sub_create(subscription_name := 'test_subscription', provider_dsn := '{pdsn}')"
        ))
        .unwrap();
    assert_eq!(sub_id, "3848008564");
    let row = s
        .sql("SELECT sub_name, sub_origin, sub_target, sub_enabled, sub_slot_name, sub_replication_sets, \
              sub_forward_origins IS NULL FROM spock.subscription")
        .unwrap();
    assert_eq!(
        row,
        "test_subscription|45328|52665|t|spk_postgres_test_provider_test_sube55bf37|{default,default_insert_only,ddl_sql}|t"
    );
    let provider = s
        .sql("SELECT n.node_name, i.if_dsn FROM spock.node n JOIN spock.node_interface i ON i.if_nodeid = n.node_id WHERE n.node_id = 45328")
        .unwrap();
    assert_eq!(provider, format!("test_provider|{pdsn}"));
    // 'i' until the apply worker has set itself up, then 'r'.
    assert_eq!(
        s.sql("SELECT sync_kind, sync_status IN ('i', 'r') FROM spock.local_sync_status")
            .unwrap(),
        "i|t"
    );
    assert_eq!(
        s.sql("SELECT node_id, remote_node_id FROM spock.progress")
            .unwrap(),
        "52665|45328"
    );

    let e = bad(&format!(
        "SELECT spock.sub_create('test_subscription', '{pdsn}')"
    ));
    assert!(
        e.contains("subscription \"test_subscription\" already exists"),
        "{e}"
    );
    let e = bad(&format!(
        "SELECT spock.sub_create('other', '{pdsn} connect_timeout=5')"
    ));
    assert!(
        e.contains("points to existing node \"test_provider\" with different dsn"),
        "{e}"
    );

    let status = "SELECT subscription_name, status, provider_node, slot_name, replication_sets FROM spock.sub_show_status()";
    // The apply worker may or may not have started yet.
    let shown = s
        .sql(status)
        .unwrap()
        .replace("|replicating|", "|down|")
        .replace("|initializing|", "|down|");
    assert_eq!(
        shown,
        "test_subscription|down|test_provider|spk_postgres_test_provider_test_sube55bf37|{default,default_insert_only,ddl_sql}"
    );
    assert_eq!(
        s.sql("SELECT spock.sub_disable('test_subscription')")
            .unwrap(),
        "t"
    );
    assert!(s.sql(status).unwrap().contains("|disabled|"));
    // The manager stops the apply worker of a disabled subscription.
    common::wait_until(
        || "apply worker still running after sub_disable".to_string(),
        10,
        || {
            (s.sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'spock apply'")
                .unwrap()
                == "0")
                .then_some(())
        },
    );
    assert_eq!(
        s.sql("SELECT spock.sub_remove_repset('test_subscription', 'ddl_sql')")
            .unwrap(),
        "t"
    );
    assert_eq!(
        s.sql("SELECT spock.sub_remove_repset('test_subscription', 'ddl_sql')")
            .unwrap(),
        "f"
    );
    assert_eq!(
        s.sql("SELECT spock.sub_add_repset('test_subscription', 'extra')")
            .unwrap(),
        "t"
    );
    assert_eq!(
        s.sql("SELECT sub_replication_sets FROM spock.subscription")
            .unwrap(),
        "{default,default_insert_only,extra}"
    );
    let e = bad("SELECT spock.sub_enable('nosuch')");
    assert!(e.contains("subscription \"nosuch\" not found"), "{e}");

    // A provider with subscriptions cannot be dropped; dropping the subscription cleans up.
    let e = bad("SELECT spock.node_drop('test_provider')");
    assert!(e.contains("still has subscriptions"), "{e}");
    assert_eq!(
        s.sql("SELECT spock.sub_drop('test_subscription')").unwrap(),
        "1"
    );
    assert_eq!(
        s.sql("SELECT spock.sub_drop('test_subscription', true)")
            .unwrap(),
        "0"
    );
    for table in ["subscription", "local_sync_status", "progress"] {
        assert_eq!(count(s, table), "0", "{table} after sub_drop");
    }
    assert_eq!(
        s.sql("SELECT string_agg(node_name, ',') FROM spock.node")
            .unwrap(),
        "test_subscriber"
    );
    assert_eq!(
        s.sql("SELECT count(*) FROM pg_replication_origin").unwrap(),
        "0"
    );
    // The apply worker was stopped, so its slot on the provider could be dropped too.
    assert_eq!(
        p.sql("SELECT count(*) FROM pg_replication_slots").unwrap(),
        "0"
    );

    // A disabled subscription gets its replication origin at once.
    s.sql(&format!(
        "SELECT spock.sub_create('sub_off', '{pdsn}', enabled := false)"
    ))
    .unwrap();
    assert_eq!(
        s.sql("SELECT sync_status FROM spock.local_sync_status")
            .unwrap(),
        "r"
    );
    assert_eq!(
        s.sql("SELECT roname FROM pg_replication_origin").unwrap(),
        s.sql("SELECT sub_slot_name FROM spock.subscription")
            .unwrap()
    );
    s.sql("SELECT spock.sub_drop('sub_off')").unwrap();
    assert_eq!(
        s.sql("SELECT count(*) FROM pg_replication_origin").unwrap(),
        "0"
    );

    s.sql("CREATE ROLE app LOGIN").unwrap();
    let e = s
        .sql_as(
            "app",
            "postgres",
            &format!("SELECT spock.sub_create('x', '{pdsn}')"),
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("permission denied for function sub_create"),
        "{e}"
    );
}
