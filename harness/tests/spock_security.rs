//! Attacks on the rights spock's work runs with, on real nodes: a table owner's code run by
//! replication, queued DDL and the DDL hook must never act as a superuser on any node, while
//! the legitimate use next to each attack keeps working.
//!
//! The attacker is `mallory`, an ordinary role that owns schema `m` on every node. Her code
//! records who runs it in `m.audit` and tries to make her a superuser (`ALTER ROLE`, after
//! `RESET ROLE` / `SET ROLE postgres`, each in an exception block so that the replicated work
//! itself succeeds).

mod common;

// One test per major for each of these (`name::pg17`…); see `common::per_major`.
crate::per_major!(
    replicated_work_runs_as_the_table_owner,
    delta_apply_runs_as_the_table_owner,
    queued_ddl_cannot_leave_its_role,
    nothing_runs_as_superuser_in_a_users_search_path,
    row_filters_run_as_the_table_owner,
);

use harness::{Cluster, ClusterOptions, Node};

/// mallory's probe: records the caller's identity and tries every way up to superuser.
const PROBE: &str = "
CREATE TABLE m.audit(what text, who text, super boolean);
CREATE FUNCTION m.attempt(what text) RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    INSERT INTO m.audit SELECT what, current_user, rolsuper FROM pg_roles WHERE rolname = current_user;
    BEGIN EXECUTE 'ALTER ROLE mallory SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN EXECUTE 'RESET ROLE'; EXECUTE 'ALTER ROLE mallory SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN EXECUTE 'SET ROLE postgres'; EXECUTE 'ALTER ROLE mallory SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN EXECUTE 'SET SESSION AUTHORIZATION postgres'; EXECUTE 'ALTER ROLE mallory SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
END $f$;
";

/// Two spock nodes where mallory owns schema `m` (with her probe) on both.
fn nodes(kernel: &harness::Kernel, opts: ClusterOptions) -> Cluster {
    let cluster = common::Mesh::new(2)
        .options(opts)
        .schema("CREATE ROLE mallory LOGIN; CREATE SCHEMA m AUTHORIZATION mallory")
        .start(kernel);
    for n in &cluster.nodes {
        n.sql_as("mallory", "postgres", PROBE).unwrap();
    }
    cluster
}

fn wait_for(node: &Node, query: &str, want: &str) {
    common::wait_for(node, "postgres", query, want, 60);
}

/// mallory is no superuser on any node, and none of her code ran as anyone but her.
fn assert_contained(cluster: &Cluster, major: u32) {
    for node in &cluster.nodes {
        assert_eq!(
            node.sql("SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'")
                .unwrap(),
            "f",
            "PostgreSQL {major}: mallory became superuser on {}",
            node.name
        );
        assert_eq!(
            node.sql("SELECT string_agg(DISTINCT who || ':' || super, ',') FROM m.audit WHERE who <> 'mallory' OR super")
                .unwrap(),
            "",
            "PostgreSQL {major}: mallory's code ran with other rights on {}",
            node.name
        );
    }
}

/// The places in `m.audit` where mallory's code ran (as her), in order.
fn probes(node: &Node) -> String {
    node.sql("SELECT string_agg(DISTINCT what COLLATE \"C\", ',' ORDER BY what COLLATE \"C\") FROM m.audit WHERE who = 'mallory'")
        .unwrap()
}

/// Replicated changes — executor path, SQL path, TRUNCATE, delta apply, conflict repair — and
/// the initial and per-table copies run mallory's triggers, CHECK constraints, index
/// expressions and defaults as mallory; an owner's ENABLE REPLICA trigger still fires.
fn replicated_work_runs_as_the_table_owner(kernel: &harness::Kernel) {
    let major = kernel.major;
    let cluster = nodes(kernel, ClusterOptions::default());
    let (p, s) = (cluster.node(0), cluster.node(1));
    let tables = "
        CREATE DOMAIN m.k AS int CHECK (m.k_ok(VALUE));
        CREATE TABLE m.t(id m.k PRIMARY KEY, v text, n int);
        CREATE TABLE m.nokey(v text);
        CREATE TABLE m.extra(id int PRIMARY KEY, v text);
        CREATE TABLE m.copied(id int PRIMARY KEY, v text);
        INSERT INTO m.copied SELECT g, 'c' FROM generate_series(1, 3) g;";
    for n in [p, s] {
        n.sql_as(
            "mallory",
            "postgres",
            &format!(
                "CREATE FUNCTION m.k_ok(int) RETURNS boolean LANGUAGE plpgsql AS \
                 $f$ BEGIN PERFORM m.attempt('domain check'); RETURN true; END $f$; {tables}"
            ),
        )
        .unwrap();
    }
    // On the subscriber, mallory arms her tables: triggers that fire during apply, a CHECK
    // constraint, an index expression, a local column's default (SQL path).
    s.sql_as(
        "mallory",
        "postgres",
        "CREATE FUNCTION m.trig() RETURNS trigger LANGUAGE plpgsql AS \
           $f$ BEGIN PERFORM m.attempt(TG_TABLE_NAME || ' ' || TG_WHEN || ' ' || TG_OP); RETURN NULL; END $f$; \
         CREATE FUNCTION m.chk(text) RETURNS boolean LANGUAGE plpgsql AS \
           $f$ BEGIN PERFORM m.attempt('check'); RETURN true; END $f$; \
         CREATE FUNCTION m.volatile_idx(text) RETURNS text LANGUAGE plpgsql AS \
           $f$ BEGIN PERFORM m.attempt('index'); RETURN $1; END $f$; \
         CREATE FUNCTION m.idx(text) RETURNS text LANGUAGE sql IMMUTABLE AS \
           $f$ SELECT m.volatile_idx($1) $f$; \
         CREATE FUNCTION m.dflt() RETURNS text LANGUAGE plpgsql AS \
           $f$ BEGIN PERFORM m.attempt('default'); RETURN 'd'; END $f$; \
         CREATE TRIGGER a AFTER INSERT OR UPDATE OR DELETE ON m.t FOR EACH ROW EXECUTE FUNCTION m.trig(); \
         ALTER TABLE m.t ENABLE ALWAYS TRIGGER a; \
         CREATE TRIGGER r AFTER TRUNCATE ON m.t FOR EACH STATEMENT EXECUTE FUNCTION m.trig(); \
         ALTER TABLE m.t ENABLE REPLICA TRIGGER r; \
         ALTER TABLE m.t ADD CONSTRAINT c CHECK (m.chk(v)); \
         CREATE INDEX ON m.t (m.idx(v)); \
         CREATE TRIGGER a AFTER INSERT ON m.nokey FOR EACH ROW EXECUTE FUNCTION m.trig(); \
         ALTER TABLE m.nokey ENABLE ALWAYS TRIGGER a; \
         ALTER TABLE m.extra ADD COLUMN local text DEFAULT m.dflt(); \
         CREATE TRIGGER a AFTER INSERT ON m.copied FOR EACH ROW EXECUTE FUNCTION m.trig(); \
         ALTER TABLE m.copied ENABLE REPLICA TRIGGER a; \
         TRUNCATE m.copied",
    )
    .unwrap();
    p.sql(
        "SELECT spock.repset_add_table('default', t) FROM unnest(ARRAY['m.t', 'm.extra', 'm.copied']::regclass[]) t; \
         SELECT spock.repset_add_table('default_insert_only', 'm.nokey')",
    )
    .unwrap();
    common::subscribe(s, "sub_n1_n2", p, ", synchronize_data := true");
    wait_for(s, "SELECT count(*) FROM m.copied", "3");

    // mallory writes on the provider (her domain's CHECK runs there too, as her).
    p.sql_as(
        "mallory",
        "postgres",
        "INSERT INTO m.t VALUES (1, 'a', 0), (2, 'b', 0); INSERT INTO m.nokey VALUES ('x'); \
         INSERT INTO m.extra VALUES (1, 'e'); UPDATE m.t SET v = 'bb' WHERE id = 2; \
         DELETE FROM m.t WHERE id = 1",
    )
    .unwrap();
    wait_for(
        s,
        "SELECT string_agg(id || v, ',' ORDER BY id) FROM m.t",
        "2bb",
    );
    wait_for(s, "SELECT count(*) FROM m.nokey", "1");
    wait_for(s, "SELECT local FROM m.extra", "d");
    // The per-table copy runs as the owner too.
    s.sql("SELECT spock.sub_resync_table('sub_n1_n2', 'm.copied')")
        .unwrap();
    wait_for(
        s,
        "SELECT count(*) FROM m.audit WHERE what = 'copied AFTER INSERT'",
        "6",
    );
    // The delete's tombstone: its domain-typed key was computed as the owner.
    assert_eq!(
        s.sql("SELECT count(*) > 0 FROM spock.tombstones").unwrap(),
        "t",
        "PostgreSQL {major}: the delete left no tombstone"
    );
    p.sql_as("mallory", "postgres", "TRUNCATE m.t").unwrap();
    wait_for(s, "SELECT count(*) FROM m.t", "0");
    wait_for(
        s,
        "SELECT count(*) > 0 FROM m.audit WHERE what = 't AFTER TRUNCATE'",
        "t",
    );

    assert_eq!(
        probes(s),
        "check,copied AFTER INSERT,default,domain check,index,nokey AFTER INSERT,\
         t AFTER DELETE,t AFTER INSERT,t AFTER TRUNCATE,t AFTER UPDATE",
        "PostgreSQL {major}: not every probe ran on the subscriber"
    );
    assert_contained(&cluster, major);
}

/// Delta apply: the merge runs as the table owner, and so do the owner's triggers on the SQL
/// path it takes.
fn delta_apply_runs_as_the_table_owner(kernel: &harness::Kernel) {
    let major = kernel.major;
    let cluster = nodes(kernel, ClusterOptions::default());
    let (p, s) = (cluster.node(0), cluster.node(1));
    for n in [p, s] {
        n.sql_as(
            "mallory",
            "postgres",
            "CREATE TABLE m.c(id int PRIMARY KEY, n int NOT NULL)",
        )
        .unwrap();
        n.sql(
            "ALTER TABLE m.c ALTER COLUMN n SET (log_old_value = true, \
             delta_apply_function = spock.delta_apply)",
        )
        .unwrap();
    }
    s.sql_as(
        "mallory",
        "postgres",
        "CREATE FUNCTION m.trig() RETURNS trigger LANGUAGE plpgsql AS \
           $f$ BEGIN PERFORM m.attempt('delta ' || TG_OP); RETURN NULL; END $f$; \
         CREATE TRIGGER a AFTER UPDATE ON m.c FOR EACH ROW EXECUTE FUNCTION m.trig(); \
         ALTER TABLE m.c ENABLE ALWAYS TRIGGER a",
    )
    .unwrap();
    p.sql("SELECT spock.repset_add_table('default', 'm.c')")
        .unwrap();
    common::subscribe(s, "sub_n1_n2", p, "");
    p.sql("INSERT INTO m.c VALUES (1, 10)").unwrap();
    wait_for(s, "SELECT n FROM m.c", "10");
    p.sql("UPDATE m.c SET n = n + 5").unwrap();
    wait_for(s, "SELECT n FROM m.c", "15");
    assert_eq!(probes(s), "delta UPDATE", "PostgreSQL {major}");
    assert_contained(&cluster, major);
}

/// Queued DDL runs as its recorded role, locked in it: `CREATE TABLE … AS SELECT g()` whose
/// `g` tries `RESET ROLE` and friends gains nothing on any node, while the table itself is
/// created as mallory's everywhere; a string literal read differently under
/// `standard_conforming_strings = off` is one statement on every node; non-DDL in the queue is
/// refused by the subscriber.
fn queued_ddl_cannot_leave_its_role(kernel: &harness::Kernel) {
    let major = kernel.major;
    let cluster = nodes(
        kernel,
        ClusterOptions::default().setting("spock.enable_ddl_replication", "on"),
    );
    let (p, s) = (cluster.node(0), cluster.node(1));
    common::subscribe(s, "sub_n1_n2", p, "");
    // A non-superuser's DDL still replicates, owned by her.
    p.sql_as(
        "mallory",
        "postgres",
        "CREATE FUNCTION m.g() RETURNS int LANGUAGE plpgsql AS \
           $f$ BEGIN PERFORM m.attempt('ctas'); RETURN 1; END $f$",
    )
    .unwrap();
    wait_for(s, "SELECT to_regprocedure('m.g()') IS NOT NULL", "t");
    p.sql_as(
        "mallory",
        "postgres",
        "CREATE TABLE m.x AS SELECT m.g() AS g",
    )
    .unwrap();
    wait_for(
        s,
        "SELECT relowner::regrole::text FROM pg_class WHERE oid = to_regclass('m.x')",
        "mallory",
    );
    assert_eq!(
        s.sql("SELECT g FROM m.x").unwrap(),
        "1",
        "PostgreSQL {major}"
    );
    assert_eq!(probes(s), "ctas", "PostgreSQL {major}");

    // One COMMENT statement on the origin; the same single statement on the subscriber.
    let out = p
        .client("psql", "mallory")
        .env("PGOPTIONS", "-c standard_conforming_strings=off")
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-d", "postgres", "-c"])
        .arg("COMMENT ON TABLE m.x IS 'a\\'; ALTER ROLE mallory SUPERUSER; --'")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "PostgreSQL {major}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let comment = "SELECT coalesce(obj_description('m.x'::regclass, 'pg_class'), '<none>')";
    wait_for(s, comment, "a'; ALTER ROLE mallory SUPERUSER; --");
    assert_eq!(
        p.sql(comment).unwrap(),
        "a'; ALTER ROLE mallory SUPERUSER; --",
        "PostgreSQL {major}"
    );
    assert_contained(&cluster, major);

    // A queue row that is not DDL (written by hand on the provider) is refused and logged;
    // the data stays.
    p.sql_as(
        "mallory",
        "postgres",
        "CREATE TABLE m.keep(id int PRIMARY KEY)",
    )
    .unwrap();
    p.sql("INSERT INTO m.keep VALUES (1)").unwrap();
    p.sql("SELECT spock.repset_add_table('default', 'm.keep')")
        .unwrap();
    p.sql("INSERT INTO m.keep VALUES (2)").unwrap();
    wait_for(s, "SELECT count(*) FROM m.keep", "1");
    p.sql(
        "INSERT INTO spock.queue (queued_at, role, replication_sets, message_type, message) \
         VALUES (now(), 'mallory', NULL, 'Q', to_json('SET search_path TO m; DELETE FROM keep'::text))",
    )
    .unwrap();
    wait_for(
        s,
        "SELECT count(*) > 0 FROM spock.exception_log \
         WHERE error_message LIKE '%queued SQL may hold only DDL statements, not DELETE%'",
        "t",
    );
    assert_eq!(
        s.sql("SELECT count(*) FROM m.keep").unwrap(),
        "1",
        "PostgreSQL {major}: the queued DELETE ran"
    );
    // Replication goes on after the refused row.
    p.sql_as("mallory", "postgres", "CREATE TABLE m.after(id int)")
        .unwrap();
    wait_for(s, "SELECT to_regclass('m.after') IS NOT NULL", "t");
}

/// What spock runs with elevated rights in a user's session (the DDL hook's queue insert) does
/// not resolve names through the user's search path: mallory's `public.to_json(text)` and
/// `public.now()` never run as a superuser. The settings that decide what is replicated are
/// superuser-only.
fn nothing_runs_as_superuser_in_a_users_search_path(kernel: &harness::Kernel) {
    let major = kernel.major;
    let cluster = nodes(
        kernel,
        ClusterOptions::default().setting("spock.enable_ddl_replication", "on"),
    );
    let (p, s) = (cluster.node(0), cluster.node(1));
    common::subscribe(s, "sub_n1_n2", p, "");
    p.sql("GRANT CREATE ON SCHEMA public TO mallory").unwrap();
    p.sql_as(
        "mallory",
        "postgres",
        "SET spock.enable_ddl_replication = off; \
         CREATE FUNCTION public.to_json(text) RETURNS json LANGUAGE plpgsql AS \
           $f$ BEGIN PERFORM m.attempt('to_json'); RETURN pg_catalog.to_json($1); END $f$; \
         CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE plpgsql AS \
           $f$ BEGIN PERFORM m.attempt('now'); RETURN pg_catalog.now(); END $f$",
    )
    .expect_err("a non-superuser may not turn DDL replication off");
    p.sql(
        "SET spock.enable_ddl_replication = off; \
           CREATE FUNCTION public.to_json(text) RETURNS json LANGUAGE plpgsql AS \
           $f$ BEGIN PERFORM m.attempt('to_json'); RETURN pg_catalog.to_json($1); END $f$; \
           CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE plpgsql AS \
           $f$ BEGIN PERFORM m.attempt('now'); RETURN pg_catalog.now(); END $f$; \
           ALTER FUNCTION public.to_json(text) OWNER TO mallory; \
           ALTER FUNCTION public.now() OWNER TO mallory",
    )
    .unwrap();
    p.sql_as(
        "mallory",
        "postgres",
        "SET search_path = public, pg_catalog, m; CREATE TABLE m.y(id int)",
    )
    .unwrap();
    wait_for(s, "SELECT to_regclass('m.y') IS NOT NULL", "t");
    assert_contained(&cluster, major);

    for setting in [
        "spock.enable_ddl_replication",
        "spock.include_ddl_repset",
        "spock.allow_ddl_from_functions",
        "spock.in_replicate_ddl",
        "spock.deny_all_ddl",
    ] {
        let e = p
            .sql_as("mallory", "postgres", &format!("SET {setting} = on"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("permission denied to set parameter \"{setting}\"")),
            "PostgreSQL {major}: {setting}: {e}"
        );
    }
    // A superuser still may, and a role granted SET on it too (PostgreSQL 15+).
    p.sql("SET spock.include_ddl_repset = on").unwrap();
    p.sql("GRANT SET ON PARAMETER spock.allow_ddl_from_functions TO mallory")
        .unwrap();
    p.sql_as(
        "mallory",
        "postgres",
        "SET spock.allow_ddl_from_functions = on",
    )
    .unwrap();
}

/// A row filter is evaluated by the provider's walsender with the table owner's rights: a
/// function of mallory's that the filter calls gains nothing there, and the filter still
/// decides what is published.
fn row_filters_run_as_the_table_owner(kernel: &harness::Kernel) {
    let major = kernel.major;
    let cluster = nodes(kernel, ClusterOptions::default());
    let (p, s) = (cluster.node(0), cluster.node(1));
    for n in [p, s] {
        n.sql_as(
            "mallory",
            "postgres",
            "CREATE TABLE m.f(id int PRIMARY KEY, v text)",
        )
        .unwrap();
    }
    p.sql_as(
        "mallory",
        "postgres",
        // The walsender's transaction never commits: the probe reports in the log.
        "CREATE FUNCTION m.noisy(text) RETURNS boolean LANGUAGE plpgsql AS \
           $f$ BEGIN \
             RAISE LOG 'filter probe: %:%', current_user, \
               (SELECT rolsuper FROM pg_roles WHERE rolname = current_user); \
             BEGIN EXECUTE 'ALTER ROLE mallory SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END; \
             BEGIN EXECUTE 'RESET ROLE'; EXECUTE 'ALTER ROLE mallory SUPERUSER'; \
             EXCEPTION WHEN OTHERS THEN NULL; END; \
             RETURN $1 <> 'hidden'; END $f$; \
         CREATE FUNCTION m.keep(text) RETURNS boolean LANGUAGE sql IMMUTABLE AS \
           $f$ SELECT m.noisy($1) $f$",
    )
    .unwrap();
    p.sql("SELECT spock.repset_add_table('default', 'm.f', row_filter := 'm.keep(v)')")
        .unwrap();
    common::subscribe(s, "sub_n1_n2", p, "");
    p.sql_as(
        "mallory",
        "postgres",
        "INSERT INTO m.f VALUES (1, 'shown'), (2, 'hidden'), (3, 'shown')",
    )
    .unwrap();
    wait_for(
        s,
        "SELECT string_agg(id::text, ',' ORDER BY id) FROM m.f",
        "1,3",
    );
    let log = p.log_tail(2000);
    assert!(
        log.contains("filter probe: mallory:f"),
        "PostgreSQL {major}: the filter did not run as mallory: {}",
        p.log_tail(40)
    );
    assert!(
        !log.contains("filter probe: postgres"),
        "PostgreSQL {major}: the filter ran as the walsender's superuser"
    );
    assert_contained(&cluster, major);
}
