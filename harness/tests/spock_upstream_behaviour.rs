//! Behaviours upstream Spock's users rely on (issue 15, item 4), each on real nodes: set
//! memberships as dependencies, repset_show_table's column list, repair mode keeping DDL
//! local, row filters as upstream accepts them, automatic DDL filing tables created in
//! schemas and functions, and upstream's error texts.

mod common;

// One test per major for each of these (`name::pg17`…); see `common::per_major`.
crate::per_major!(
    set_memberships_are_dependencies,
    repset_show_table_lists_every_column,
    repair_mode_keeps_ddl_local,
    row_filters_resolve_names_as_upstream,
    automatic_ddl_files_tables_of_create_schema_and_functions,
    api_errors_read_as_upstream,
    unique_index_collisions_are_conflicts,
    deferrable_unique_constraints_check_at_commit,
    unique_indexes_not_ready_are_passed_over,
    apply_delay_holds_each_transaction,
    copies_record_the_providers_progress_for_other_origins,
);

use harness::{Cluster, ClusterOptions, Node};
use std::time::Duration;

/// Nodes n1 (provider) and n2, each a spock node with `schema`, with `settings` in both
/// servers' configuration.
fn nodes(kernel: &harness::Kernel, schema: &str, settings: &[(&str, &str)]) -> Cluster {
    nodes_n(kernel, 2, schema, settings)
}

/// `count` nodes n1, n2, … as `nodes` makes them.
fn nodes_n(
    kernel: &harness::Kernel,
    count: usize,
    schema: &str,
    settings: &[(&str, &str)],
) -> Cluster {
    let mut opts = ClusterOptions::default();
    for (name, value) in settings {
        opts = opts.setting(name, value);
    }
    common::Mesh::new(count)
        .options(opts)
        .schema(schema)
        .start(kernel)
}

/// Everything psql prints for `sql` (stdout and stderr, so NOTICEs, DETAILs, HINTs and
/// CONTEXT lines too), and whether it succeeded.
fn psql(node: &Node, sql: &str) -> (String, bool) {
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), format!("\\set ON_ERROR_STOP 1\n{sql}\n")).unwrap();
    common::psql_file(node, "postgres", script.path(), &["-A", "-t", "-q"])
}

/// The lines psql printed for a failing statement, from its ERROR on.
fn error_of(node: &Node, sql: &str, major: u32) -> String {
    let (out, ok) = psql(node, sql);
    assert!(!ok, "PostgreSQL {major}: `{sql}` succeeded:\n{out}");
    let from = out.find("ERROR:").unwrap_or(0);
    out[from..].trim_end().to_string()
}

/// n1 replicating `table` (made by `schema` on both nodes) to n2, where an apply error
/// disables the subscription, so none goes unnoticed.
fn strict_pair(kernel: &harness::Kernel, schema: &str, table: &str) -> Cluster {
    let cluster = nodes(
        kernel,
        schema,
        &[("spock.exception_behaviour", "sub_disable")],
    );
    let (n1, n2) = (cluster.node(0), cluster.node(1));
    n1.sql(&format!(
        "SELECT spock.repset_add_table('default', '{table}')"
    ))
    .unwrap();
    common::subscribe(n2, "sub_n1_n2", n1, "");
    cluster
}

/// `strict_pair`'s subscriber applied everything without an apply error.
fn assert_no_apply_error(n2: &Node, major: u32) {
    assert_eq!(
        n2.sql("SELECT sub_enabled FROM spock.subscription")
            .unwrap(),
        "t",
        "PostgreSQL {major}: the subscription was disabled:\n{}",
        n2.log_tail(30)
    );
    assert_eq!(
        n2.sql("SELECT count(*) FROM spock.exception_log").unwrap(),
        "0",
        "PostgreSQL {major}: an apply error was logged"
    );
}

fn wait_for(node: &Node, sql: &str, want: &str) {
    common::wait_for(node, "postgres", sql, want, 60);
}

fn set_memberships_are_dependencies(kernel: &harness::Kernel) {
    let major = kernel.major;
    let cluster = nodes(
        kernel,
        "CREATE TABLE t(id int PRIMARY KEY, c text, d int); \
         CREATE TABLE t2(id int PRIMARY KEY, v text); \
         CREATE TABLE t3(id int PRIMARY KEY, v text);",
        &[],
    );
    let (p, s) = (cluster.node(0), cluster.node(1));
    p.sql(
        "SELECT spock.repset_create('s'); \
         SELECT spock.repset_add_table('s', 't', row_filter := 'd > 0'); \
         SELECT spock.repset_add_table('default', 't', columns := ARRAY['id', 'c']); \
         SELECT spock.repset_add_table('default', 't2'); \
         SELECT spock.repset_add_table('default', 't3'); \
         INSERT INTO t2 VALUES (1, 'a'); INSERT INTO t3 VALUES (1, 'a');",
    )
    .unwrap();
    common::subscribe(s, "sub_n1_n2", p, ", synchronize_data := true");
    s.sql("SET statement_timeout = '60s'; SELECT spock.sub_wait_for_sync('sub_n1_n2')")
        .unwrap();
    wait_for(s, "SELECT count(*) FROM t2", "1");

    // Without CASCADE: core's error, with every membership in DETAIL.
    assert_eq!(
        error_of(p, "DROP TABLE t", major),
        "ERROR:  cannot drop table t because other objects depend on it\n\
         DETAIL:  table t membership in replication set default depends on table t\n\
         table t membership in replication set s depends on table t\n\
         HINT:  Use DROP ... CASCADE to drop the dependent objects too.",
        "PostgreSQL {major}"
    );
    // A column named by a column list, and one read by a row filter.
    assert_eq!(
        error_of(p, "ALTER TABLE t DROP COLUMN c", major),
        "ERROR:  cannot drop column c of table t because other objects depend on it\n\
         DETAIL:  table t membership in replication set default depends on column c of table t\n\
         HINT:  Use DROP ... CASCADE to drop the dependent objects too.",
        "PostgreSQL {major}"
    );
    assert!(
        error_of(p, "ALTER TABLE t DROP COLUMN d", major).contains(
            "DETAIL:  table t membership in replication set s depends on column d of table t"
        ),
        "PostgreSQL {major}"
    );
    // Other columns are free to go.
    p.sql("ALTER TABLE t ADD COLUMN e int; ALTER TABLE t DROP COLUMN e")
        .unwrap();
    // CASCADE removes the membership that depends on the column, and only that one.
    let (out, ok) = psql(p, "ALTER TABLE t DROP COLUMN c CASCADE");
    assert!(ok, "PostgreSQL {major}: {out}");
    assert!(
        out.contains("NOTICE:  drop cascades to table t membership in replication set default"),
        "PostgreSQL {major}: {out}"
    );
    assert_eq!(
        p.sql(
            "SELECT string_agg(s.set_name, ',' ORDER BY s.set_name) \
               FROM spock.replication_set_table r JOIN spock.replication_set s USING (set_id) \
               WHERE r.set_reloid = 't'::regclass"
        )
        .unwrap(),
        "s",
        "PostgreSQL {major}"
    );
    let (out, ok) = psql(p, "DROP TABLE t2 CASCADE");
    assert!(ok, "PostgreSQL {major}: {out}");
    let notices: Vec<&str> = out
        .lines()
        .filter_map(|l| l.find("NOTICE:").map(|i| &l[i..]))
        .collect();
    assert_eq!(
        notices,
        vec!["NOTICE:  drop cascades to table t2 membership in replication set default"],
        "PostgreSQL {major}: {out}"
    );
    // The rest of the provider's catalog is as it was; the subscriber still has its copy.
    assert_eq!(
        p.sql(
            "SELECT string_agg(set_reloid::text, ',' ORDER BY set_reloid::text) \
               FROM spock.replication_set_table"
        )
        .unwrap(),
        "t,t3",
        "PostgreSQL {major}"
    );
    // On the subscriber the tables are in no set, so they drop freely; their sync-status
    // rows go with them.
    assert_eq!(
        s.sql("SELECT string_agg(sync_relname, ',' ORDER BY sync_relname) FROM spock.local_sync_status \
               WHERE sync_relname IS NOT NULL")
            .unwrap(),
        "t,t2,t3",
        "PostgreSQL {major}"
    );
    s.sql("DROP TABLE t2").unwrap();
    assert_eq!(
        s.sql("SELECT string_agg(sync_relname, ',' ORDER BY sync_relname) FROM spock.local_sync_status \
               WHERE sync_relname IS NOT NULL")
            .unwrap(),
        "t,t3",
        "PostgreSQL {major}"
    );
    // With automatic DDL, DROP treats the memberships as CASCADE does (as upstream), and
    // the subscriber drops its table too.
    let (out, ok) = psql(p, "SET spock.enable_ddl_replication = on; DROP TABLE t3");
    assert!(ok, "PostgreSQL {major}: {out}");
    assert!(
        out.contains("drop cascades to table t3 membership in replication set default"),
        "PostgreSQL {major}: {out}"
    );
    wait_for(s, "SELECT to_regclass('t3') IS NULL", "t");
    assert_eq!(
        s.sql("SELECT string_agg(sync_relname, ',' ORDER BY sync_relname) FROM spock.local_sync_status \
               WHERE sync_relname IS NOT NULL")
            .unwrap(),
        "t",
        "PostgreSQL {major}"
    );
    assert_eq!(
        p.sql("SELECT string_agg(set_reloid::text, ',') FROM spock.replication_set_table")
            .unwrap(),
        "t",
        "PostgreSQL {major}"
    );
    // Dropping spock itself drops its catalog, memberships and all (CASCADE: the
    // tombstone triggers of replicated tables); the tables stay.
    for n in [s, p] {
        n.sql("DROP EXTENSION spock CASCADE").unwrap();
        n.sql("DROP TABLE t").unwrap();
    }
}

fn repset_show_table_lists_every_column(kernel: &harness::Kernel) {
    let major = kernel.major;
    let cluster = nodes(
        kernel,
        "CREATE TABLE full_t(id int PRIMARY KEY, a text, b int); \
         CREATE TABLE part_t(id int PRIMARY KEY, a text, b int); \
         CREATE TABLE none_t(id int PRIMARY KEY, a text);",
        &[],
    );
    for n in &cluster.nodes {
        n.sql(
            "SELECT spock.repset_add_table('default', 'full_t'); \
             SELECT spock.repset_add_table('default', 'part_t', columns := ARRAY['id', 'b'])",
        )
        .unwrap();
        for (table, want) in [
            ("full_t", "{id,a,b}|f"),
            ("part_t", "{id,b}|f"),
            ("none_t", "{id,a}|f"),
        ] {
            assert_eq!(
                n.sql(&format!(
                    "SELECT att_list, has_row_filter FROM spock.repset_show_table('{table}', ARRAY['default'])"
                ))
                .unwrap(),
                want,
                "PostgreSQL {major}, {}: {table}",
                n.name
            );
        }
        let e = n
            .sql("SELECT * FROM spock.repset_show_table('full_t', ARRAY['nonexisting'])")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("replication set nonexisting not found"),
            "PostgreSQL {major}: {e}"
        );
    }
}

fn repair_mode_keeps_ddl_local(kernel: &harness::Kernel) {
    let major = kernel.major;
    let cluster = nodes(
        kernel,
        "",
        &[
            ("spock.enable_ddl_replication", "on"),
            ("spock.include_ddl_repset", "on"),
        ],
    );
    let (p, s) = (cluster.node(0), cluster.node(1));
    common::subscribe(s, "sub_n1_n2", p, "");
    p.sql(
        "BEGIN; SELECT spock.repair_mode(true); \
         CREATE TABLE local_only(id int PRIMARY KEY); \
         SELECT spock.repair_mode(false); COMMIT;",
    )
    .unwrap();
    p.sql("CREATE TABLE everywhere(id int PRIMARY KEY); INSERT INTO everywhere VALUES (1)")
        .unwrap();
    wait_for(s, "SELECT count(*) FROM everywhere", "1");
    assert_eq!(
        s.sql("SELECT to_regclass('local_only') IS NULL").unwrap(),
        "t",
        "PostgreSQL {major}: DDL run in repair mode reached the subscriber"
    );
    assert_eq!(
        p.sql("SELECT count(*) FROM spock.queue WHERE message::text LIKE '%local_only%'")
            .unwrap(),
        "0",
        "PostgreSQL {major}: DDL run in repair mode was queued"
    );
    assert_eq!(
        p.sql(
            "SELECT to_regclass('local_only') IS NOT NULL, \
               current_setting('spock.replication_repair_mode')"
        )
        .unwrap(),
        "t|off",
        "PostgreSQL {major}"
    );
}

fn row_filters_resolve_names_as_upstream(kernel: &harness::Kernel) {
    let major = kernel.major;
    let schema = "CREATE TABLE f(id int PRIMARY KEY, v text); \
                  CREATE FUNCTION wanted(text) RETURNS boolean LANGUAGE plpgsql STABLE \
                    AS $$ BEGIN RETURN $1 <> 'hidden'; END $$;";
    let cluster = nodes(kernel, schema, &[]);
    let (p, s) = (cluster.node(0), cluster.node(1));
    // The caller's search_path ("$user", public) finds public.wanted; volatile functions
    // are allowed too.
    p.sql(
        "SELECT spock.repset_add_table('default', 'f', \
           row_filter := 'wanted(v) AND random() >= 0')",
    )
    .unwrap();
    // The stored filter names the function by oid: shown under spock's own search_path
    // it is qualified.
    assert_eq!(
        p.sql(
            "SET search_path = pg_catalog; \
               SELECT pg_get_expr(set_row_filter, set_reloid) FROM spock.replication_set_table"
        )
        .unwrap(),
        "(public.wanted(v) AND (random() >= (0)::double precision))",
        "PostgreSQL {major}"
    );
    common::subscribe(s, "sub_n1_n2", p, "");
    p.sql("INSERT INTO f VALUES (1, 'shown'), (2, 'hidden'), (3, 'shown')")
        .unwrap();
    wait_for(
        s,
        "SELECT string_agg(id::text, ',' ORDER BY id) FROM f",
        "1,3",
    );
    // What both refuse keeps upstream's wording, with only upstream's context line.
    let e = error_of(
        p,
        "SELECT spock.repset_add_table('default_insert_only', 'f', row_filter := 'SELECT true')",
        major,
    );
    assert!(
        e.starts_with("ERROR:  syntax error at or near \"SELECT\""),
        "PostgreSQL {major}: {e}"
    );
    let context: Vec<&str> = e
        .lines()
        .filter(|l| l.starts_with("CONTEXT:") || !l.contains(':'))
        .filter(|l| !l.trim().starts_with('^') && !l.trim().is_empty())
        .collect();
    assert_eq!(
        context,
        vec!["CONTEXT:  invalid row_filter expression \"SELECT true\""],
        "PostgreSQL {major}: {e}"
    );
    assert!(
        !e.contains("PL/pgSQL") && !e.contains("SQL function") && !e.contains("SQL statement"),
        "PostgreSQL {major}: {e}"
    );
    // A name the caller's search_path does not reach is still an error.
    let e = error_of(
        p,
        "SET search_path = pg_catalog; \
         SELECT spock.repset_add_table('default_insert_only', 'public.f', row_filter := 'wanted(v)')",
        major,
    );
    assert!(
        e.contains("function wanted(text) does not exist"),
        "PostgreSQL {major}: {e}"
    );
    assert_eq!(
        s.sql("SELECT count(*) FROM spock.replication_set_table")
            .unwrap(),
        "0",
        "PostgreSQL {major}"
    );
    // The function the filter calls is a dependency of the membership.
    assert_eq!(
        error_of(p, "DROP FUNCTION wanted(text)", major),
        "ERROR:  cannot drop function wanted(text) because other objects depend on it\n\
         DETAIL:  table f membership in replication set default depends on function wanted(text)\n\
         HINT:  Use DROP ... CASCADE to drop the dependent objects too.",
        "PostgreSQL {major}"
    );
    let (out, ok) = psql(p, "DROP FUNCTION wanted(text) CASCADE");
    assert!(
        ok && out
            .contains("NOTICE:  drop cascades to table f membership in replication set default"),
        "PostgreSQL {major}: {out}"
    );
    assert_eq!(
        p.sql("SELECT count(*) FROM spock.replication_set_table")
            .unwrap(),
        "0",
        "PostgreSQL {major}"
    );
}

fn automatic_ddl_files_tables_of_create_schema_and_functions(kernel: &harness::Kernel) {
    let major = kernel.major;
    let cluster = nodes(
        kernel,
        "",
        &[
            ("spock.enable_ddl_replication", "on"),
            ("spock.include_ddl_repset", "on"),
            ("spock.allow_ddl_from_functions", "on"),
        ],
    );
    let (p, s) = (cluster.node(0), cluster.node(1));
    common::subscribe(s, "sub_n1_n2", p, "");
    p.sql("CREATE SCHEMA app CREATE TABLE a(id int PRIMARY KEY, v text) CREATE TABLE b(v text)")
        .unwrap();
    p.sql(
        "CREATE FUNCTION make_tables() RETURNS void LANGUAGE plpgsql AS $$ \
         BEGIN \
             CREATE TABLE fn_t(id int PRIMARY KEY, v text); \
             EXECUTE 'CREATE TABLE fn_u(v text)'; \
         END $$",
    )
    .unwrap();
    p.sql("SELECT make_tables()").unwrap();
    let members = "SELECT string_agg(r.set_reloid::text || ':' || s.set_name, ',' \
                   ORDER BY r.set_reloid::text) \
                   FROM spock.replication_set_table r JOIN spock.replication_set s USING (set_id)";
    let want = "app.a:default,app.b:default_insert_only,fn_t:default,fn_u:default_insert_only";
    assert_eq!(p.sql(members).unwrap(), want, "PostgreSQL {major}, n1");
    wait_for(s, "SELECT to_regclass('fn_u') IS NOT NULL", "t");
    assert_eq!(s.sql(members).unwrap(), want, "PostgreSQL {major}, n2");
    // The memberships carry the rows.
    p.sql(
        "INSERT INTO app.a VALUES (1, 'x'); INSERT INTO app.b VALUES ('y'); \
         INSERT INTO fn_t VALUES (1, 'z'); INSERT INTO fn_u VALUES ('w')",
    )
    .unwrap();
    wait_for(
        s,
        "SELECT (SELECT v FROM app.a) || (SELECT v FROM app.b) || (SELECT v FROM fn_t) \
         || (SELECT v FROM fn_u)",
        "xyzw",
    );
}

fn api_errors_read_as_upstream(kernel: &harness::Kernel) {
    let major = kernel.major;
    let cluster = nodes(
        kernel,
        "CREATE TABLE t(id int PRIMARY KEY); CREATE TABLE nopk(v text);",
        &[],
    );
    let (p, s) = (cluster.node(0), cluster.node(1));
    // Each failure shows upstream's message, DETAIL and HINT, and no CONTEXT about
    // spock's own functions (the management functions, the set lookup they share).
    let cases: [(&Node, &str, &str); 6] = [
        (
            p,
            "SELECT spock.repset_add_table('nonexisting', 't')",
            "ERROR:  replication set nonexisting not found",
        ),
        (
            p,
            "SELECT spock.repset_drop('nonexisting')",
            "ERROR:  replication set nonexisting not found",
        ),
        (
            p,
            "SELECT spock.repset_add_table('default', 'nopk')",
            "ERROR:  table nopk cannot be added to replication set default\n\
             DETAIL:  table does not have PRIMARY KEY and given replication set is configured to \
             replicate UPDATEs and/or DELETEs\n\
             HINT:  Add a PRIMARY KEY to the table",
        ),
        (
            p,
            "SELECT spock.repset_add_all_tables('default', ARRAY['public'])",
            "ERROR:  table nopk cannot be added to replication set default\n\
             DETAIL:  table does not have PRIMARY KEY and given replication set is configured to \
             replicate UPDATEs and/or DELETEs\n\
             HINT:  Add a PRIMARY KEY to the table",
        ),
        (
            p,
            "SELECT spock.node_add_interface('n1', 'n1', 'dbname=x')",
            "ERROR:  node \"n1\" already has interface named \"n1\"",
        ),
        (
            s,
            "SELECT spock.sub_drop('nosuch')",
            "ERROR:  subscription \"nosuch\" not found",
        ),
    ];
    for (node, sql, want) in cases {
        assert_eq!(
            error_of(node, sql, major),
            want,
            "PostgreSQL {major}: {sql}"
        );
    }
    // The provider's slot is in use: its node cannot be dropped.
    p.sql("SELECT spock.repset_add_table('default', 't')")
        .unwrap();
    common::subscribe(s, "sub_n1_n2", p, "");
    // A second subscription to sets the first one already has: upstream's WARNING, one
    // per set.
    let (out, ok) = psql(
        s,
        &format!(
            "SELECT spock.sub_create('sub_two', '{}', \
               replication_sets := ARRAY['default', 'ddl_sql'], enabled := false)",
            p.dsn("postgres")
        ),
    );
    let warnings: Vec<&str> = out
        .lines()
        .filter_map(|l| l.find("WARNING:").map(|i| &l[i..]))
        .collect();
    assert!(
        ok && warnings
            == [
                "WARNING:  existing subscription \"sub_n1_n2\" to node \"n1\" already \
                 subscribes to replication set \"ddl_sql\"",
                "WARNING:  existing subscription \"sub_n1_n2\" to node \"n1\" already \
                 subscribes to replication set \"default\"",
            ],
        "PostgreSQL {major}: {out}"
    );
    assert_eq!(
        error_of(p, "SELECT spock.node_drop('n1')", major),
        "ERROR:  cannot drop node \"n1\" because one or more replication slots for the node \
         are still active\n\
         HINT:  drop the subscriptions connected to the node first",
        "PostgreSQL {major}"
    );
    assert_eq!(
        error_of(s, "SELECT spock.node_drop('n1')", major),
        "ERROR:  cannot drop node \"n1\" because it still has subscriptions associated with it\n\
         HINT:  drop the subscriptions first",
        "PostgreSQL {major}"
    );
    // \dx shows upstream's description.
    for n in [p, s] {
        assert_eq!(
            n.sql(
                "SELECT obj_description(oid, 'pg_extension') FROM pg_extension \
                   WHERE extname = 'spock'"
            )
            .unwrap(),
            "PostgreSQL Logical Replication",
            "PostgreSQL {major}"
        );
    }
}

/// A remote INSERT whose row holds the value of a unique index (other than the key) that a
/// local row already holds is a conflict, resolved by last-update-wins, never an apply error:
/// a newer remote row makes the local one give way; an older one is dropped and reported.
fn unique_index_collisions_are_conflicts(kernel: &harness::Kernel) {
    let major = kernel.major;
    let schema = "CREATE TABLE people(id int PRIMARY KEY, email text UNIQUE, who text)";
    let cluster = strict_pair(kernel, schema, "people");
    let (n1, n2) = (cluster.node(0), cluster.node(1));
    // Remote newer: n2's older local row with the same email gives way.
    n2.sql("INSERT INTO people VALUES (2, 'a@x', 'n2')")
        .unwrap();
    n1.sql("INSERT INTO people VALUES (1, 'a@x', 'n1')")
        .unwrap();
    wait_for(
        n2,
        "SELECT string_agg(id || ':' || email || ':' || who, ',' ORDER BY id) FROM people",
        "1:a@x:n1",
    );
    // UPDATE: n1 moves row 1 to the email n2's older local row 6 holds: row 6 gives way.
    n2.sql("INSERT INTO people VALUES (6, 'd@x', 'n2')")
        .unwrap();
    n1.sql("UPDATE people SET email = 'd@x' WHERE id = 1")
        .unwrap();
    wait_for(n2, "SELECT email FROM people WHERE id = 1", "d@x");
    assert_eq!(
        n2.sql("SELECT count(*) FROM people WHERE id = 6").unwrap(),
        "0",
        "PostgreSQL {major}: the older colliding row gives way to the update"
    );
    // Remote older: n2's row is stamped 10 s ahead (the kernel's test offset of its commit
    // clock), so n1's row with the same email, arriving afterwards, loses.
    n2.sql(
        "SET pgedge.commit_clock_test_offset = 10000; \
         INSERT INTO people VALUES (4, 'b@x', 'n2')",
    )
    .unwrap();
    n1.sql("INSERT INTO people VALUES (3, 'b@x', 'n1')")
        .unwrap();
    n1.sql("INSERT INTO people VALUES (5, 'c@x', 'n1')")
        .unwrap();
    wait_for(n2, "SELECT count(*) FROM people WHERE id = 5", "1");
    assert_eq!(
        n2.sql("SELECT string_agg(id || ':' || email || ':' || who, ',' ORDER BY id) FROM people")
            .unwrap(),
        "1:d@x:n1,4:b@x:n2,5:c@x:n1",
        "PostgreSQL {major}: the newer row keeps the email"
    );
    assert_eq!(
        n2.sql("SELECT sub_enabled FROM spock.subscription")
            .unwrap(),
        "t",
        "PostgreSQL {major}: the collision disabled the subscription:\n{}",
        n2.log_tail(30)
    );
    assert_eq!(
        n2.sql("SELECT count(*) FROM spock.exception_log").unwrap(),
        "0",
        "PostgreSQL {major}: a collision is not an apply error"
    );
    // Then the local row is the newer (stamped ahead): the update is dropped.
    n2.sql(
        "SET pgedge.commit_clock_test_offset = 20000; \
         INSERT INTO people VALUES (7, 'e@x', 'n2')",
    )
    .unwrap();
    n1.sql("UPDATE people SET email = 'e@x' WHERE id = 5")
        .unwrap();
    n1.sql("INSERT INTO people VALUES (8, 'f@x', 'n1')")
        .unwrap();
    wait_for(n2, "SELECT count(*) FROM people WHERE id = 8", "1");
    assert_eq!(
        n2.sql(
            "SELECT string_agg(id || ':' || email, ',' ORDER BY id) FROM people WHERE id IN (5, 7)"
        )
        .unwrap(),
        "5:c@x,7:e@x",
        "PostgreSQL {major}: the newer local row keeps its email"
    );
    assert_eq!(
        n2.sql("SELECT sub_enabled FROM spock.subscription")
            .unwrap(),
        "t",
        "PostgreSQL {major}: an UPDATE collision disabled the subscription:\n{}",
        n2.log_tail(30)
    );
    let log = std::fs::read_to_string(&n2.log).unwrap();
    assert!(
        log.contains("CONFLICT: remote INSERT") && log.contains("Resolution: keep_local"),
        "PostgreSQL {major}: the dropped remote row is reported:\n{}",
        n2.log_tail(30)
    );
}

/// A DEFERRABLE unique constraint is checked at commit on the subscriber, as for any write
/// there: a remote transaction that swaps two rows' values applies, and a key conflict or an
/// update on such a table is an ordinary conflict, not an apply error (the arbiter search
/// used to include the deferrable index, which PostgreSQL refuses as an arbiter).
fn deferrable_unique_constraints_check_at_commit(kernel: &harness::Kernel) {
    let major = kernel.major;
    let schema = "CREATE TABLE seats(id int PRIMARY KEY, \
                  seat text UNIQUE DEFERRABLE INITIALLY DEFERRED, who text)";
    let cluster = strict_pair(kernel, schema, "seats");
    let (n1, n2) = (cluster.node(0), cluster.node(1));
    let rows = "SELECT string_agg(id || ':' || seat || ':' || who, ',' ORDER BY id) FROM seats";
    n1.sql("INSERT INTO seats VALUES (1, 'a', 'n1')").unwrap();
    wait_for(n2, rows, "1:a:n1");
    n1.sql("UPDATE seats SET seat = 'b' WHERE id = 1").unwrap();
    wait_for(n2, rows, "1:b:n1");
    // A key conflict: n2's older local row gives way to n1's newer one.
    n2.sql("INSERT INTO seats VALUES (2, 'c', 'n2')").unwrap();
    n1.sql("INSERT INTO seats VALUES (2, 'd', 'n1')").unwrap();
    wait_for(n2, rows, "1:b:n1,2:d:n1");
    // A swap, legal only because the check waits for the commit.
    n1.sql("UPDATE seats SET seat = CASE id WHEN 1 THEN 'd' ELSE 'b' END")
        .unwrap();
    wait_for(n2, rows, "1:d:n1,2:b:n1");
    assert_no_apply_error(n2, major);
    assert_eq!(
        n1.sql(rows).unwrap(),
        n2.sql(rows).unwrap(),
        "PostgreSQL {major}"
    );
}

/// A unique index not ready for inserts (here one a `CREATE UNIQUE INDEX CONCURRENTLY` left
/// behind when it failed; also one still being built) is passed over by the apply's search
/// for colliding rows, as PostgreSQL's own checks pass it over: remote updates apply (the
/// search used to name it, and PostgreSQL then raised "unexpected failure to find arbiter
/// index").
fn unique_indexes_not_ready_are_passed_over(kernel: &harness::Kernel) {
    let major = kernel.major;
    let schema = "CREATE TABLE tags(id int PRIMARY KEY, tag text, who text)";
    let cluster = strict_pair(kernel, schema, "tags");
    let (n1, n2) = (cluster.node(0), cluster.node(1));
    let rows = "SELECT string_agg(id || ':' || tag || ':' || who, ',' ORDER BY id) FROM tags";
    n1.sql("INSERT INTO tags VALUES (1, 'a', 'n1'), (2, 'a', 'n1')")
        .unwrap();
    wait_for(n2, rows, "1:a:n1,2:a:n1");
    let e = n2
        .sql("CREATE UNIQUE INDEX CONCURRENTLY tags_tag ON tags(tag)")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("could not create unique index"),
        "PostgreSQL {major}: {e}"
    );
    assert_eq!(
        n2.sql(
            "SELECT indisready OR indisvalid FROM pg_index WHERE indexrelid = 'tags_tag'::regclass"
        )
        .unwrap(),
        "f",
        "PostgreSQL {major}: the failed index should be left not ready"
    );
    n1.sql("UPDATE tags SET who = 'n1 again' WHERE id = 1")
        .unwrap();
    wait_for(n2, rows, "1:a:n1 again,2:a:n1");
    assert_no_apply_error(n2, major);
}

/// `sub_create(…, apply_delay := interval)` applies each transaction that long after its
/// commit on the provider, no sooner.
fn apply_delay_holds_each_transaction(kernel: &harness::Kernel) {
    let major = kernel.major;
    let cluster = nodes(
        kernel,
        "CREATE TABLE d(id int PRIMARY KEY, at timestamptz)",
        &[],
    );
    let (n1, n2) = (cluster.node(0), cluster.node(1));
    n1.sql("SELECT spock.repset_add_table('default', 'd')")
        .unwrap();
    n2.sql("ALTER TABLE d ADD COLUMN arrived timestamptz DEFAULT clock_timestamp()")
        .unwrap();
    common::subscribe(n2, "sub_n1_n2", n1, ", apply_delay := '2 seconds'");
    n1.sql("INSERT INTO d VALUES (1, clock_timestamp())")
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        n2.sql("SELECT count(*) FROM d").unwrap(),
        "0",
        "PostgreSQL {major}: applied before its delay"
    );
    wait_for(n2, "SELECT count(*) FROM d", "1");
    let waited: f64 = n2
        .sql("SELECT extract(epoch FROM arrived - at) FROM d")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (2.0..10.0).contains(&waited),
        "PostgreSQL {major}: applied {waited} s after its commit, wanted 2 s"
    );
}

/// A copy from a provider carries the rows it applied from other nodes, and with them its
/// progress for those nodes: after the initial sync and after `sub_resync_table`, the
/// subscriber's `spock.progress` has the provider's entry for each such origin.
fn copies_record_the_providers_progress_for_other_origins(kernel: &harness::Kernel) {
    let major = kernel.major;
    let cluster = nodes_n(
        kernel,
        3,
        "CREATE TABLE t(id int PRIMARY KEY); SELECT spock.repset_add_table('default', 't')",
        &[],
    );
    let (n1, n2, n3) = (cluster.node(0), cluster.node(1), cluster.node(2));
    // n1 applies n3's rows.
    common::subscribe(n1, "sub_n3_n1", n3, "");
    n3.sql("INSERT INTO t SELECT generate_series(1, 10)")
        .unwrap();
    wait_for(n1, "SELECT count(*) FROM t", "10");
    let n3_id = n3.sql("SELECT node_id FROM spock.local_node").unwrap();
    wait_for(
        n1,
        &format!("SELECT count(*) FROM spock.progress WHERE remote_node_id = {n3_id}"),
        "1",
    );
    let progress = format!(
        "SELECT count(*) FROM spock.progress WHERE remote_node_id = {n3_id} \
         AND remote_commit_ts IS NOT NULL"
    );
    // n2 copies n1's table, n3's rows included.
    common::sub_create(
        n2,
        "sub_n1_n2",
        n1,
        ", synchronize_data := true, forward_origins := '{all}'",
    );
    wait_for(n2, "SELECT count(*) FROM t", "10");
    wait_for(n2, &progress, "1");
    // A resync records it again.
    n2.sql(&format!(
        "DELETE FROM spock.progress WHERE remote_node_id = {n3_id}"
    ))
    .unwrap();
    n2.sql("SELECT spock.sub_resync_table('sub_n1_n2', 't', true)")
        .unwrap();
    n2.sql("SELECT spock.table_wait_for_sync('sub_n1_n2', 't')")
        .unwrap();
    assert_eq!(
        n2.sql(&progress).unwrap(),
        "1",
        "PostgreSQL {major}: no progress for n3 after the resync"
    );
    assert_eq!(n2.sql("SELECT count(*) FROM t").unwrap(), "10");
}
