//! spock's catalog and its node / replication-set management API (no replication yet): ids as
//! upstream computes them, the default sets, membership rules and bad input.

mod common;

// One test per major for each of these (`name::pg17`…); see `common::per_major`.
crate::per_major!(
    node_ids_sets_and_names_match_upstream,
    replication_set_membership_rules,
    management_is_superuser_only,
);

use harness::{Cluster, ClusterOptions};

fn spock_node(kernel: &harness::Kernel) -> Cluster {
    let cluster = Cluster::start(kernel, &ClusterOptions::default()).unwrap();
    cluster.node(0).sql("CREATE EXTENSION spock").unwrap();
    cluster
}

fn node_ids_sets_and_names_match_upstream(kernel: &harness::Kernel) {
    let cluster = spock_node(kernel);
    let n = cluster.node(0);
    let dsn = n.dsn("postgres");
    let id = n
        .sql(&format!(
            "SELECT spock.node_create(node_name := 'test_provider', dsn := '{dsn}')"
        ))
        .unwrap();
    assert_eq!(id, "45328");
    // The catalog tables the output plugin reads while decoding are user catalog tables, as
    // upstream's; spock.resolutions, written by the apply worker at every saved conflict, is
    // not (a write to one makes the transaction catalog-changing for every walsender).
    assert_eq!(
        n.sql(
            "SELECT string_agg(c.relname || '=' || coalesce(array_to_string(c.reloptions, ','), ''), ' ' \
             ORDER BY c.relname) FROM pg_class c WHERE c.relnamespace = 'spock'::regnamespace \
             AND c.relname IN ('replication_set', 'replication_set_table', 'resolutions')"
        )
        .unwrap(),
        "replication_set=user_catalog_table=true replication_set_table=user_catalog_table=true resolutions=",
        "PostgreSQL {}",
        kernel.major
    );
    // Same ids as PostgreSQL's own hash of the name.
    assert_eq!(
        n.sql("SELECT hashtext('test_subscriber') & 65535, spock.spock_node_id('test_subscriber')")
            .unwrap(),
        "52665|52665"
    );
    assert_eq!(
        n.sql("SELECT spock.spock_sub_id('test_subscription')")
            .unwrap(),
        "3848008564"
    );
    assert_eq!(
        n.sql("SELECT spock.spock_gen_slot_name('postgres', 'test_provider', 'test_subscription')")
            .unwrap(),
        "spk_postgres_test_provider_test_sube55bf37"
    );

    let sets = n
        .sql("SELECT string_agg(format('%s:%s%s%s%s', set_name, replicate_insert::int, replicate_update::int, \
              replicate_delete::int, replicate_truncate::int), ' ' ORDER BY set_name) FROM spock.replication_set")
        .unwrap();
    assert_eq!(sets, "ddl_sql:1000 default:1111 default_insert_only:1001");
    let ids_ok = n
        .sql("SELECT bool_and(set_id = spock.spock_member_id(45328, set_name)) FROM spock.replication_set")
        .unwrap();
    assert_eq!(ids_ok, "t");
    let iface = n.sql("SELECT if_name, if_dsn, if_id = spock.spock_member_id(45328, 'test_provider') FROM spock.node_interface").unwrap();
    assert_eq!(iface, format!("test_provider|{dsn}|t"));

    let info = n.sql("SELECT node_id, node_name, dbname, replication_sets, sysid = (SELECT system_identifier::text FROM pg_control_system()) FROM spock.node_info()").unwrap();
    assert_eq!(
        info,
        "45328|test_provider|postgres|ddl_sql,\"default\",default_insert_only|t"
    );

    let if_id = n
        .sql(&format!(
            "SELECT spock.node_add_interface('test_provider', 'backup', '{dsn}')"
        ))
        .unwrap();
    assert_eq!(
        if_id,
        n.sql("SELECT spock.spock_member_id(45328, 'backup')")
            .unwrap()
    );
    assert_eq!(
        n.sql("SELECT spock.node_drop_interface('test_provider', 'backup')")
            .unwrap(),
        "t"
    );
    assert_eq!(
        n.sql("SELECT spock.node_drop_interface('test_provider', 'backup')")
            .unwrap(),
        "f"
    );
    assert_eq!(n.sql("SELECT spock.node_create(NULL, 'x')").unwrap(), "");

    let e = n
        .sql(&format!("SELECT spock.node_create('other', '{dsn}')"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("current database is already configured as a spock node"),
        "{e}"
    );
    let e = n
        .sql(&format!(
            "SELECT spock.node_create('test_provider', '{dsn}')"
        ))
        .unwrap_err()
        .to_string();
    assert!(e.contains("node \"test_provider\" already exists"), "{e}");

    assert_eq!(
        n.sql("SELECT spock.node_drop('test_provider')").unwrap(),
        "t"
    );
    assert_eq!(n.sql("SELECT count(*) FROM spock.node").unwrap(), "0");
    assert_eq!(
        n.sql("SELECT count(*) FROM spock.replication_set").unwrap(),
        "0"
    );
    assert_eq!(
        n.sql("SELECT spock.node_drop('test_provider', ifexists := true)")
            .unwrap(),
        "f"
    );
    let e = n
        .sql("SELECT spock.node_drop('test_provider')")
        .unwrap_err()
        .to_string();
    assert!(e.contains("node \"test_provider\" not found"), "{e}");
}

fn replication_set_membership_rules(kernel: &harness::Kernel) {
    let cluster = spock_node(kernel);
    let n = cluster.node(0);
    let e = n
        .sql("SELECT spock.repset_create('s1')")
        .unwrap_err()
        .to_string();
    assert!(e.contains("local spock node not found"), "{e}");
    n.sql(&format!(
        "SELECT spock.node_create('n1', '{}')",
        n.dsn("postgres")
    ))
    .unwrap();
    n.sql(
        "CREATE TABLE pk(id int PRIMARY KEY, v text); CREATE TABLE nopk(v text); \
         CREATE UNLOGGED TABLE unl(id int PRIMARY KEY); \
         CREATE TABLE parted(id int PRIMARY KEY, k int) PARTITION BY RANGE (id); \
         CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (100); \
         CREATE TABLE parted_2 PARTITION OF parted FOR VALUES FROM (100) TO (200); \
         CREATE SCHEMA other; CREATE TABLE other.t(id int PRIMARY KEY);",
    )
    .unwrap();

    let set_id = n.sql("SELECT spock.repset_create('s1')").unwrap();
    assert_eq!(
        set_id,
        n.sql("SELECT spock.spock_member_id(spock.spock_node_id('n1'), 's1')")
            .unwrap()
    );
    let e = n
        .sql("SELECT spock.repset_create('s1')")
        .unwrap_err()
        .to_string();
    assert!(e.contains("replication set \"s1\" already exists"), "{e}");
    let e = n
        .sql("SELECT spock.repset_create('')")
        .unwrap_err()
        .to_string();
    assert!(e.contains("replication set name cannot be empty"), "{e}");

    assert_eq!(
        n.sql("SELECT spock.repset_add_table('s1', 'pk', synchronize_data := true)")
            .unwrap(),
        "t"
    );
    let e = n
        .sql("SELECT spock.repset_add_table('s1', 'nopk')")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("table nopk cannot be added to replication set s1"),
        "{e}"
    );
    assert!(e.contains("Add a PRIMARY KEY to the table"), "{e}");
    // An insert-only set takes it.
    n.sql("SELECT spock.repset_add_table('default_insert_only', 'nopk')")
        .unwrap();
    let e = n
        .sql("SELECT spock.repset_alter('default_insert_only', replicate_update := true)")
        .unwrap_err()
        .to_string();
    assert!(e.contains("contains tables without PRIMARY KEY"), "{e}");
    let e = n
        .sql("SELECT spock.repset_add_table('s1', 'unl')")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("UNLOGGED and TEMP tables cannot be replicated"),
        "{e}"
    );
    let e = n
        .sql("SELECT spock.repset_add_table('s1', 'pk')")
        .unwrap_err()
        .to_string();
    assert!(e.contains("replication_set_table_pkey"), "{e}");
    let e = n
        .sql("SELECT spock.repset_add_table('nosuch', 'pk')")
        .unwrap_err()
        .to_string();
    assert!(e.contains("replication set nosuch not found"), "{e}");
    let e = n
        .sql("SELECT spock.repset_add_table('s1', 'other.t', columns := '{nosuchcol}')")
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not have column nosuchcol"), "{e}");
    let queued = n
        .sql("SELECT message_type, message::text, replication_sets FROM spock.queue")
        .unwrap();
    assert_eq!(
        queued,
        "A|{\"schema_name\" : \"public\", \"table_name\" : \"pk\"}|{s1}"
    );

    // Partitions come along with their parent, and leave with it.
    n.sql("SELECT spock.repset_add_table('s1', 'parted')")
        .unwrap();
    let members = || {
        n.sql("SELECT string_agg(set_reloid::text, ',' ORDER BY set_reloid::text) FROM spock.replication_set_table t \
               JOIN spock.replication_set s USING (set_id) WHERE s.set_name = 's1'")
            .unwrap()
    };
    assert_eq!(members(), "parted,parted_1,parted_2,pk");
    n.sql("SELECT spock.repset_remove_table('s1', 'parted')")
        .unwrap();
    assert_eq!(members(), "pk");
    let e = n
        .sql("SELECT spock.repset_remove_table('s1', 'parted')")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Table parted not found in replication set s1"),
        "{e}"
    );

    // All tables of a schema, skipping members and refusing none here.
    n.sql("SELECT spock.repset_add_all_tables('default', ARRAY['other'])")
        .unwrap();
    let tables = n.sql("SELECT string_agg(relname || '=' || coalesce(set_name, '-'), ' ' ORDER BY relname, set_name) FROM spock.tables").unwrap();
    assert_eq!(
        tables,
        "nopk=default_insert_only parted=- parted_1=- parted_2=- pk=s1 t=default"
    );
    let e = n
        .sql("SELECT spock.repset_add_all_tables('default', ARRAY['public'])")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("table nopk cannot be added to replication set default"),
        "{e}"
    );
    assert_eq!(
        n.sql("SELECT count(*) FROM spock.replication_set_table WHERE set_reloid = 'pk'::regclass")
            .unwrap(),
        "1",
        "nothing half-added"
    );

    assert_eq!(n.sql("SELECT spock.repset_drop('s1')").unwrap(), "t");
    assert_eq!(n.sql("SELECT spock.repset_drop('s1', true)").unwrap(), "f");
    assert_eq!(
        n.sql("SELECT count(*) FROM spock.replication_set_table WHERE set_reloid = 'pk'::regclass")
            .unwrap(),
        "0"
    );
}

fn management_is_superuser_only(kernel: &harness::Kernel) {
    let cluster = spock_node(kernel);
    let n = cluster.node(0);
    n.sql("CREATE ROLE app LOGIN").unwrap();
    let e = n
        .sql_as(
            "app",
            "postgres",
            "SELECT spock.node_create('n1', 'host=x')",
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("permission denied for function node_create"),
        "{e}"
    );
    let e = n
        .sql_as("app", "postgres", "SELECT spock.repset_create('s')")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("permission denied for function repset_create"),
        "{e}"
    );
    let e = n
        .sql_as("app", "postgres", "SELECT * FROM spock.node")
        .unwrap_err()
        .to_string();
    assert!(e.contains("permission denied for table node"), "{e}");
    assert_eq!(
        n.sql_as("app", "postgres", "SELECT spock.spock_version()")
            .unwrap(),
        "5.0.5"
    );
    assert_eq!(n.sql("SELECT count(*) FROM spock.node").unwrap(), "0");
}
