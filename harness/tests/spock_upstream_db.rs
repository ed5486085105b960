//! A database whose spock 5.0.5 objects upstream's C build created, served by this library.
//!
//! The upstream build is not available here, so the old state is built from what is known of
//! it: `CREATE EXTENSION spock VERSION '5.0.4'` runs this repository's base 5.0.0 script and steps,
//! which declare every C function against upstream's symbol; upstream's own 5.0.4 → 5.0.5 step
//! changes no object (it only rewrites two procedure bodies), so `extversion` is then set to 5.0.5
//! as upstream's step would. The test first checks that state against the facts recorded from
//! upstream's scripts (`UPSTREAM_5_0_5`, `UPSTREAM_SYMBOLS`: the complete member list and every
//! C symbol), so the state it starts from is upstream's, not ours. Catalog rows are written as
//! upstream's `node_create` and `repset_add_table` leave them. Then the server restarts (the
//! switch of package), and:
//! * the manager of that node brings its objects up to ours by itself;
//! * `spock_version()`, `node_info()`, `sub_show_status()` work, and the README's workflow
//!   replicates both ways between that node and a fresh one;
//! * in a database without a node, a superuser's first call of an upstream-declared function
//!   does the same update and gets its answer;
//! * a database whose update cannot run gets one WARNING, and its manager keeps running.

mod common;

// One test per major for each of these (`name::pg17`…); see `common::per_major`.
crate::per_major!(an_upstream_database_works_with_this_library,);

use harness::{Cluster, ClusterOptions, Node};

/// `pg_describe_object` of every member of spock 5.0.5 as upstream's scripts install it.
const UPSTREAM_5_0_5: &[&str] = &[
    "function spock.convert_column_to_int8(regclass,smallint)",
    "function spock.convert_sequence_to_snowflake(regclass)",
    "function spock.delta_apply(bigint,bigint,bigint)",
    "function spock.delta_apply(double precision,double precision,double precision)",
    "function spock.delta_apply(integer,integer,integer)",
    "function spock.delta_apply(money,money,money)",
    "function spock.delta_apply(numeric,numeric,numeric)",
    "function spock.delta_apply(real,real,real)",
    "function spock.delta_apply(smallint,smallint,smallint)",
    "function spock.get_apply_worker_status()",
    "function spock.get_channel_stats()",
    "function spock.get_country()",
    "function spock.get_lsn_from_commit_ts(name,timestamp with time zone)",
    "function spock.md5_agg(anyelement)",
    "function spock.md5_agg_sfunc(text,anyelement)",
    "function spock.node_add_interface(name,name,text)",
    "function spock.node_create(name,text,text,text,jsonb)",
    "function spock.node_drop(name,boolean)",
    "function spock.node_drop_interface(name,name)",
    "function spock.node_info()",
    "function spock.repair_mode(boolean)",
    "function spock.replicate_ddl(text,text[],text,text)",
    "function spock.replicate_ddl(text[],text[],text,text)",
    "function spock.repset_add_all_seqs(name,text[],boolean)",
    "function spock.repset_add_all_tables(name,text[],boolean)",
    "function spock.repset_add_partition(regclass,regclass,text)",
    "function spock.repset_add_seq(name,regclass,boolean)",
    "function spock.repset_add_table(name,regclass,boolean,text[],text,boolean)",
    "function spock.repset_alter(name,boolean,boolean,boolean,boolean)",
    "function spock.repset_create(name,boolean,boolean,boolean,boolean)",
    "function spock.repset_drop(name,boolean)",
    "function spock.repset_remove_partition(regclass,regclass)",
    "function spock.repset_remove_seq(name,regclass)",
    "function spock.repset_remove_table(name,regclass,boolean)",
    "function spock.repset_show_table(regclass,text[])",
    "function spock.reset_channel_stats()",
    "function spock.spock_gen_slot_name(name,name,name)",
    "function spock.spock_max_proto_version()",
    "function spock.spock_min_proto_version()",
    "function spock.spock_version()",
    "function spock.spock_version_num()",
    "function spock.sub_add_repset(name,name)",
    "function spock.sub_alter_interface(name,name)",
    "function spock.sub_alter_skiplsn(name,pg_lsn)",
    "function spock.sub_alter_sync(name,boolean)",
    "function spock.sub_create(name,text,text[],boolean,boolean,text[],interval,boolean,boolean,text[])",
    "function spock.sub_disable(name,boolean)",
    "function spock.sub_drop(name,boolean)",
    "function spock.sub_enable(name,boolean)",
    "function spock.sub_remove_repset(name,name)",
    "function spock.sub_resync_table(name,regclass,boolean)",
    "function spock.sub_show_status(name)",
    "function spock.sub_show_table(name,regclass)",
    "function spock.sub_wait_for_sync(name)",
    "function spock.sync_event()",
    "function spock.sync_seq(regclass)",
    "function spock.table_data_filtered(anyelement,regclass,text[])",
    "function spock.table_wait_for_sync(name,regclass)",
    "function spock.terminate_active_transactions()",
    "function spock.wait_for_apply_worker(bigint,integer)",
    "function spock.wait_for_sync_event(name,pg_lsn,integer)",
    "function spock.wait_for_sync_event(oid,pg_lsn,integer)",
    "function spock.wait_slot_confirm_lsn(name,pg_lsn)",
    "function spock.xact_commit_timestamp_origin(xid)",
    "sequence spock.pii_id_seq",
    "sequence spock.resolutions_id_seq",
    "table spock.depend",
    "table spock.exception_log",
    "table spock.exception_status",
    "table spock.exception_status_detail",
    "table spock.local_node",
    "table spock.local_sync_status",
    "table spock.node",
    "table spock.node_interface",
    "table spock.pii",
    "table spock.progress",
    "table spock.queue",
    "table spock.replication_set",
    "table spock.replication_set_seq",
    "table spock.replication_set_table",
    "table spock.resolutions",
    "table spock.sequence_state",
    "table spock.subscription",
    "type spock.channel_summary_stats",
    "type spock.channel_summary_stats[]",
    "type spock.channel_table_stats",
    "type spock.channel_table_stats[]",
    "type spock.depend",
    "type spock.depend[]",
    "type spock.exception_log",
    "type spock.exception_log[]",
    "type spock.exception_status",
    "type spock.exception_status[]",
    "type spock.exception_status_detail",
    "type spock.exception_status_detail[]",
    "type spock.lag_tracker",
    "type spock.lag_tracker[]",
    "type spock.local_node",
    "type spock.local_node[]",
    "type spock.local_sync_status",
    "type spock.local_sync_status[]",
    "type spock.node",
    "type spock.node[]",
    "type spock.node_interface",
    "type spock.node_interface[]",
    "type spock.pii",
    "type spock.pii[]",
    "type spock.progress",
    "type spock.progress[]",
    "type spock.queue",
    "type spock.queue[]",
    "type spock.replication_set",
    "type spock.replication_set[]",
    "type spock.replication_set_seq",
    "type spock.replication_set_seq[]",
    "type spock.replication_set_table",
    "type spock.replication_set_table[]",
    "type spock.resolutions",
    "type spock.resolutions[]",
    "type spock.sequence_state",
    "type spock.sequence_state[]",
    "type spock.subscription",
    "type spock.subscription[]",
    "type spock.tables",
    "type spock.tables[]",
    "view spock.channel_summary_stats",
    "view spock.channel_table_stats",
    "view spock.lag_tracker",
    "view spock.tables",
];

/// Every C symbol upstream's 5.0.5 functions name (the 54 of `AS 'MODULE_PATHNAME', …` plus
/// `wait_slot_confirm_lsn`'s, declared `AS 'spock', 'spock_wait_slot_confirm_lsn'`).
const UPSTREAM_SYMBOLS: &[&str] = &[
    "delta_apply_float4",
    "delta_apply_float8",
    "delta_apply_int2",
    "delta_apply_int4",
    "delta_apply_int8",
    "delta_apply_money",
    "delta_apply_numeric",
    "get_apply_worker_status",
    "get_channel_stats",
    "reset_channel_stats",
    "spock_alter_node_add_interface",
    "spock_alter_node_drop_interface",
    "spock_alter_replication_set",
    "spock_alter_subscription_add_replication_set",
    "spock_alter_subscription_disable",
    "spock_alter_subscription_enable",
    "spock_alter_subscription_interface",
    "spock_alter_subscription_remove_replication_set",
    "spock_alter_subscription_resynchronize_table",
    "spock_alter_subscription_skip_lsn",
    "spock_alter_subscription_synchronize",
    "spock_create_node",
    "spock_create_replication_set",
    "spock_create_subscription",
    "spock_create_sync_event",
    "spock_drop_node",
    "spock_drop_replication_set",
    "spock_drop_subscription",
    "spock_gen_slot_name",
    "spock_get_lsn_from_commit_ts",
    "spock_max_proto_version",
    "spock_min_proto_version",
    "spock_node_info",
    "spock_repair_mode",
    "spock_replicate_ddl_command",
    "spock_replication_set_add_all_sequences",
    "spock_replication_set_add_all_tables",
    "spock_replication_set_add_partition",
    "spock_replication_set_add_sequence",
    "spock_replication_set_add_table",
    "spock_replication_set_remove_partition",
    "spock_replication_set_remove_sequence",
    "spock_replication_set_remove_table",
    "spock_show_repset_table_info",
    "spock_show_subscription_status",
    "spock_show_subscription_table",
    "spock_synchronize_sequence",
    "spock_table_data_filtered",
    "spock_version",
    "spock_version_num",
    "spock_wait_for_subscription_sync_complete",
    "spock_wait_for_table_sync_complete",
    "spock_wait_slot_confirm_lsn",
    "spock_xact_commit_timestamp_origin",
    "spockro_terminate_active_transactions",
];

/// The extension's members in `db`, sorted.
fn members(node: &Node, db: &str) -> Vec<String> {
    let out = node
        .sql_in(
            db,
            "SELECT pg_describe_object(d.classid, d.objid, 0) FROM pg_depend d \
              WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' \
                AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'spock')",
        )
        .unwrap();
    let mut list: Vec<String> = out.lines().map(String::from).collect();
    list.sort();
    list
}

/// The C symbols the extension's functions in `db` are declared against, sorted and distinct.
fn c_symbols(node: &Node, db: &str) -> Vec<String> {
    let out = node
        .sql_in(
            db,
            "SELECT DISTINCT p.prosrc FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid \
              WHERE d.classid = 'pg_proc'::regclass AND d.refclassid = 'pg_extension'::regclass \
                AND d.deptype = 'e' AND p.prolang = (SELECT oid FROM pg_language WHERE lanname = 'c') \
                AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'spock')",
        )
        .unwrap();
    let mut list: Vec<String> = out.lines().map(String::from).collect();
    list.sort();
    list
}

/// Creates `db` with spock's objects as upstream's scripts leave them at 5.0.5, and checks them
/// against the recorded facts.
fn upstream_505(node: &Node, db: &str, major: u32) {
    node.sql(&format!("CREATE DATABASE {db}")).unwrap();
    node.sql_in(
        db,
        "CREATE EXTENSION spock VERSION '5.0.4'; \
         UPDATE pg_extension SET extversion = '5.0.5' WHERE extname = 'spock'",
    )
    .unwrap();
    // The facts were read off a server that records the row types of an extension's tables
    // and views as members too; older majors (15) record only the relations.
    let rowtypes_are_members = node
        .sql_in(
            db,
            "SELECT EXISTS (SELECT 1 FROM pg_depend d JOIN pg_type t ON t.oid = d.objid \
             WHERE d.classid = 'pg_type'::regclass AND d.deptype = 'e' AND t.typrelid <> 0)",
        )
        .unwrap()
        == "t";
    let relations: Vec<&str> = UPSTREAM_5_0_5
        .iter()
        .filter_map(|o| o.strip_prefix("table ").or_else(|| o.strip_prefix("view ")))
        .collect();
    let want: Vec<String> = UPSTREAM_5_0_5
        .iter()
        .filter(|o| {
            rowtypes_are_members
                || !o
                    .strip_prefix("type ")
                    .is_some_and(|t| relations.contains(&t.trim_end_matches("[]")))
        })
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        members(node, db),
        want,
        "PostgreSQL {major}: the simulated upstream 5.0.5 objects differ from upstream's"
    );
    let symbols: Vec<String> = UPSTREAM_SYMBOLS.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        c_symbols(node, db),
        symbols,
        "PostgreSQL {major}: the simulated upstream 5.0.5 functions name other C symbols"
    );
}

/// Writes the catalog rows upstream's `node_create(name, dsn)` leaves (ids computed on `helper`,
/// which runs our functions, with upstream's formulas).
fn upstream_node(node: &Node, db: &str, helper: &Node, name: &str) {
    let id = helper
        .sql(&format!("SELECT spock.spock_node_id('{name}')"))
        .unwrap();
    let member = |m: &str| {
        helper
            .sql(&format!("SELECT spock.spock_member_id({id}, '{m}')"))
            .unwrap()
    };
    node.sql_in(
        db,
        &format!(
            "INSERT INTO spock.node (node_id, node_name) VALUES ({id}, '{name}'); \
             INSERT INTO spock.node_interface (if_id, if_name, if_nodeid, if_dsn) \
                 VALUES ({}, '{name}', {id}, '{}'); \
             INSERT INTO spock.local_node (node_id, node_local_interface) VALUES ({id}, {}); \
             INSERT INTO spock.replication_set VALUES \
                 ({}, {id}, 'default', true, true, true, true), \
                 ({}, {id}, 'default_insert_only', true, false, false, true), \
                 ({}, {id}, 'ddl_sql', true, false, false, false)",
            member(name),
            node.dsn(db),
            member(name),
            member("default"),
            member("default_insert_only"),
            member("ddl_sql"),
        ),
    )
    .unwrap();
}

fn wait_rows(node: &Node, db: &str, sql: &str, want: &str, what: &str, major: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let got = node
            .sql_in(db, sql)
            .unwrap_or_else(|e| format!("error: {e}"));
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "PostgreSQL {major}: {what}: `{sql}` on {} returned {got:?}, wanted {want:?}; log:\n{}",
            node.name,
            node.log_tail(60)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn an_upstream_database_works_with_this_library(kernel: &harness::Kernel) {
    let major = kernel.major;
    let cluster = Cluster::start(kernel, &ClusterOptions::default().nodes(2)).unwrap();
    let (n1, n2) = (cluster.node(0), cluster.node(1));
    n2.sql("CREATE EXTENSION spock").unwrap();
    let ours = members(n2, "postgres");

    // A node whose objects upstream created, with a table already replicated.
    upstream_505(n1, "legacy", major);
    upstream_node(n1, "legacy", n2, "n1");
    n1.sql_in(
        "legacy",
        "CREATE TABLE kept (id int PRIMARY KEY, v text); \
         INSERT INTO spock.replication_set_table (set_id, set_reloid) \
         SELECT set_id, 'kept'::regclass FROM spock.replication_set WHERE set_name = 'default'",
    )
    .unwrap();
    // A database without a node, and a node whose update cannot run (no path from its
    // version).
    upstream_505(n1, "nonode", major);
    upstream_505(n1, "stuck", major);
    upstream_node(n1, "stuck", n2, "n9");
    n1.sql_in(
        "stuck",
        "UPDATE pg_extension SET extversion = '5.0.9' WHERE extname = 'spock'",
    )
    .unwrap();

    // The switch to this library.
    n1.restart().unwrap();

    // The manager updates the node by itself.
    wait_rows(
        n1,
        "legacy",
        "SELECT extversion || ' ' || (to_regclass('spock.subscription_progress') IS NOT NULL) \
           FROM pg_extension WHERE extname = 'spock'",
        "5.0.5 true",
        "the manager did not bring upstream's objects up to this library",
        major,
    );
    assert_eq!(
        members(n1, "legacy"),
        ours,
        "PostgreSQL {major}: after the automatic update the objects differ from a fresh install"
    );
    let legacy_oid = n1
        .sql("SELECT oid FROM pg_database WHERE datname = 'legacy'")
        .unwrap();
    let log = n1.log_tail(2000);
    assert!(
        log.lines().any(
            |l| l.contains(&format!("spock manager {legacy_oid}: brought"))
                && l.contains("UPDATE TO '5.0.5-1'")
        ),
        "PostgreSQL {major}: the update was not the manager's; log:\n{log}"
    );
    assert!(
        c_symbols(n1, "legacy")
            .iter()
            .all(|s| !UPSTREAM_SYMBOLS.contains(&s.as_str())),
        "PostgreSQL {major}: functions still declared against upstream symbols: {:?}",
        c_symbols(n1, "legacy")
    );
    assert_eq!(
        n1.sql_in(
            "legacy",
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'kept'::regclass \
               AND tgname = 'spock_tombstone'"
        )
        .unwrap(),
        "1",
        "PostgreSQL {major}: a table replicated before the update got no tombstone trigger"
    );
    assert_eq!(
        n1.sql_in("legacy", "SELECT spock.spock_version()").unwrap(),
        "5.0.5",
        "PostgreSQL {major}"
    );
    assert_eq!(
        n1.sql_in("legacy", "SELECT node_name FROM spock.node_info()")
            .unwrap(),
        "n1",
        "PostgreSQL {major}: node_info of the upstream node"
    );
    assert_eq!(
        n1.sql_in("legacy", "SELECT count(*) FROM spock.sub_show_status()")
            .unwrap(),
        "0",
        "PostgreSQL {major}: sub_show_status of the upstream node"
    );

    // Without a node the manager leaves the database alone; a superuser's first call of
    // an upstream-declared function updates it and is answered.
    assert_eq!(
        c_symbols(n1, "nonode").len(),
        UPSTREAM_SYMBOLS.len(),
        "PostgreSQL {major}: the manager touched a database without a node"
    );
    assert_eq!(
        n1.sql_in(
            "nonode",
            "SELECT spock.spock_version(), spock.spock_version_num()"
        )
        .unwrap(),
        "5.0.5|50005",
        "PostgreSQL {major}: upstream's spock_version symbols"
    );
    n1.sql("CREATE ROLE plain LOGIN").unwrap();
    n1.sql_in("nonode", "GRANT USAGE ON SCHEMA spock TO plain")
        .unwrap();
    let refused = n1
        .sql_as(
            "plain",
            "nonode",
            "SELECT count(*) FROM spock.sub_show_status()",
        )
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("declared against C symbol \"spock_show_subscription_status\""),
        "PostgreSQL {major}: a plain user's call should be refused clearly: {refused}"
    );
    assert_eq!(
        n1.sql_in("nonode", "SELECT count(*) FROM spock.sub_show_status()")
            .unwrap(),
        "0",
        "PostgreSQL {major}: sub_show_status through upstream's symbol"
    );
    assert_eq!(
        members(n1, "nonode"),
        ours,
        "PostgreSQL {major}: after the update on first call the objects differ from a fresh install"
    );

    // A failing update: one WARNING, and the manager goes on.
    wait_rows(
        n1,
        "postgres",
        "SELECT count(*) > 0 FROM pg_stat_activity a JOIN pg_database d ON d.oid = a.datid \
          WHERE d.datname = 'stuck' AND a.backend_type = 'spock manager'",
        "t",
        "the manager of the database whose update fails is not running",
        major,
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    // Since the server's last start: a manager that already ran before the restart above warned
    // once then too.
    let log = n1.log_tail(2000);
    let since_start = log
        .rsplit_once("database system is ready to accept connections")
        .map_or(log.as_str(), |(_, after)| after);
    let warnings = since_start
        .lines()
        .filter(|l| l.contains("WARNING") && l.contains("could not bring the spock objects"))
        .count();
    assert_eq!(
        warnings, 1,
        "PostgreSQL {major}: wanted exactly one WARNING for the failing update since the server \
         started; log:\n{log}"
    );

    // A database made by a 4.0.x package (simulated: only its version number is 4.0.x)
    // follows the 4.0.x steps to 5.0.0 and on to this build's objects.
    n2.sql("CREATE DATABASE from400").unwrap();
    n2.sql_in(
        "from400",
        "CREATE EXTENSION spock VERSION '5.0.0'; \
         UPDATE pg_extension SET extversion = '4.0.0' WHERE extname = 'spock'",
    )
    .unwrap();
    n2.sql_in("from400", "ALTER EXTENSION spock UPDATE")
        .unwrap();
    assert_eq!(
        members(n2, "from400"),
        ours,
        "PostgreSQL {major}: 4.0.0 updated to 5.0.5 differs from a fresh install"
    );

    // The README's workflow between the updated node and a fresh one.
    n2.sql(&format!(
        "SELECT spock.node_create('n2', '{}')",
        n2.dsn("postgres")
    ))
    .unwrap();
    n2.sql("CREATE TABLE kept (id int PRIMARY KEY, v text)")
        .unwrap();
    for (node, db) in [(n1, "legacy"), (n2, "postgres")] {
        node.sql_in(db, "CREATE TABLE items (id int PRIMARY KEY, v text)")
            .unwrap();
        node.sql_in(
            db,
            "SELECT spock.repset_add_all_tables('default', ARRAY['public'])",
        )
        .unwrap();
    }
    n2.sql(&format!(
        "SELECT spock.sub_create('sub_n2_n1', '{}')",
        n1.dsn("legacy")
    ))
    .unwrap();
    n1.sql_in(
        "legacy",
        &format!(
            "SELECT spock.sub_create('sub_n1_n2', '{}')",
            n2.dsn("postgres")
        ),
    )
    .unwrap();
    for (node, db) in [(n1, "legacy"), (n2, "postgres")] {
        wait_rows(
            node,
            db,
            "SELECT string_agg(status, ',') FROM spock.sub_show_status()",
            "replicating",
            "the subscription does not replicate",
            major,
        );
    }
    n1.sql_in(
        "legacy",
        "INSERT INTO items VALUES (1, 'from n1'); INSERT INTO kept VALUES (1, 'kept n1')",
    )
    .unwrap();
    n2.sql("INSERT INTO items VALUES (2, 'from n2'); INSERT INTO kept VALUES (2, 'kept n2')")
        .unwrap();
    let want = "1:from n1,2:from n2|1:kept n1,2:kept n2";
    let both = "SELECT (SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM items) || '|' || \
                       (SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM kept)";
    wait_rows(
        n1,
        "legacy",
        both,
        want,
        "rows did not reach the upstream node",
        major,
    );
    wait_rows(
        n2,
        "postgres",
        both,
        want,
        "rows did not reach the fresh node",
        major,
    );
}
