//! What a plain role can learn from spock, and what spock lets slip, tried on real servers as
//! an attacker would: monitoring functions, views and catalog tables that reveal DSNs, slot
//! state or statistics are superuser-only; a DSN's password appears in no output, activity
//! row, process title, error or log line; a row filter naming a function either works or fails
//! with a PostgreSQL error (a real SQLSTATE, no Rust panic).

mod common;

// One test per major for each of these (`name::pg17`…); see `common::per_major`.
crate::per_major!(
    monitoring_reveals_nothing_to_a_plain_role,
    dsn_passwords_stay_hidden,
    row_filters_with_functions_fail_cleanly,
);

use harness::{Cluster, ClusterOptions, Node};

/// The password every DSN of these tests carries (trust authentication ignores it, but spock
/// stores it and hands it to libpq).
const SECRET: &str = "Secr3t-pw";

/// A plain login role.
const ATTACKER: &str = "mallory";

/// Functions of schema spock a plain role may execute: they reveal nothing about nodes, DSNs,
/// slots or statistics (pure computations, versions), or they read superuser-only tables as
/// their caller and so fail for everyone else. Anything else must be superuser-only: if you
/// add a function that reveals nothing, list it here.
const PUBLIC_OK: &[&str] = &[
    "spock.spock_version()",
    "spock.spock_version_num()",
    "spock.spock_max_proto_version()",
    "spock.spock_min_proto_version()",
    "spock.kernel_api_level()",
    "spock.spock_node_id(text)",
    "spock.spock_member_id(oid,text)",
    "spock.spock_sub_id(text)",
    "spock.spock_slot_name(text,text,text)",
    "spock.spock_gen_slot_name(name,name,name)",
    "spock.spock_message(integer,oid)",
    "spock.get_country()",
    "spock.md5_agg_sfunc(text,anyelement)",
    "spock.md5_agg(anyelement)",
    "spock.has_replica_identity_index(regclass)",
    "spock.replica_identity_columns(regclass)",
    "spock.delta_apply(smallint,smallint,smallint)",
    "spock.delta_apply(integer,integer,integer)",
    "spock.delta_apply(bigint,bigint,bigint)",
    "spock.delta_apply(real,real,real)",
    "spock.delta_apply(double precision,double precision,double precision)",
    "spock.delta_apply(numeric,numeric,numeric)",
    "spock.delta_apply(money,money,money)",
    // The apply worker's statements run as each table's owner; this compares commit
    // timestamps of transactions (as pg_xact_commit_timestamp does for anyone).
    "spock.apply_local_newer(xid,xid)",
    // These read spock.local_node, spock.replication_set or spock.subscription as the caller.
    "spock.local_node_id()",
    "spock.local_repset(name)",
    "spock.subscription_named(name)",
];

fn secret_dsn(n: &Node) -> String {
    format!("{} password={SECRET}", n.dsn("postgres"))
}

/// Polls `sql` in `postgres` until it returns `want`; fails with the node's log after 30 s.
fn wait_for(node: &Node, sql: &str, want: &str) {
    common::wait_for(node, "postgres", sql, want, 30);
}

/// n1 provides table `items` (and `filtered`, with a row filter calling a function) to n2;
/// both nodes' DSNs and the subscription's carry the password. Returns once n2 streams.
fn subscribed_pair(kernel: &harness::Kernel) -> Cluster {
    let cluster = Cluster::start(kernel, &ClusterOptions::default().nodes(2)).unwrap();
    for (i, n) in cluster.nodes.iter().enumerate() {
        n.sql("CREATE EXTENSION spock").unwrap();
        n.sql(&format!(
            "SELECT spock.node_create('n{}', '{}')",
            i + 1,
            secret_dsn(n)
        ))
        .unwrap();
        n.sql(
            "CREATE TABLE items(id int PRIMARY KEY, name text); \
             CREATE TABLE filtered(id int PRIMARY KEY, name text); \
             CREATE FUNCTION is_wanted(t text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE \
                 AS $$ BEGIN RETURN t LIKE 'keep%'; END $$;",
        )
        .unwrap();
        n.sql(&format!("CREATE ROLE {ATTACKER} LOGIN")).unwrap();
    }
    let (p, s) = (cluster.node(0), cluster.node(1));
    p.sql("SELECT spock.repset_add_table('default', 'items')")
        .unwrap();
    p.sql(
        "SELECT spock.repset_add_table('default', 'filtered', \
           row_filter := 'lower(name) = ''x'' OR public.is_wanted(name)')",
    )
    .unwrap();
    s.sql(&format!(
        "SELECT spock.sub_create('sub_n1_n2', '{}')",
        secret_dsn(p)
    ))
    .unwrap();
    common::wait_active_slots(p, 1);
    cluster
}

/// The error of `sql` run by `user`, which must fail.
fn error_of(node: &Node, user: &str, sql: &str, major: u32) -> String {
    match node.sql_as(user, "postgres", sql) {
        Ok(out) => panic!(
            "PostgreSQL {major}, {}: `{sql}` as {user} should fail, gave {out:?}",
            node.name
        ),
        Err(e) => e.to_string(),
    }
}

fn monitoring_reveals_nothing_to_a_plain_role(kernel: &harness::Kernel) {
    let major = kernel.major;
    let cluster = subscribed_pair(kernel);
    let (p, s) = (cluster.node(0), cluster.node(1));
    p.sql("INSERT INTO items VALUES (1, 'a'), (2, 'b')")
        .unwrap();
    wait_for(s, "SELECT count(*) FROM items", "2");
    let sub_id = s
        .sql("SELECT sub_id FROM spock.subscription WHERE sub_name = 'sub_n1_n2'")
        .unwrap();

    // Everything that shows DSNs, slots, workers, progress or counters.
    let probes = [
        (
            "SELECT * FROM spock.get_channel_stats()",
            "function get_channel_stats",
        ),
        (
            "SELECT * FROM spock.channel_table_stats",
            "view channel_table_stats",
        ),
        (
            "SELECT * FROM spock.channel_summary_stats",
            "view channel_summary_stats",
        ),
        ("SELECT * FROM spock.lag_tracker", "view lag_tracker"),
        (
            "SELECT * FROM spock.sub_show_status()",
            "function sub_show_status",
        ),
        (
            "SELECT * FROM spock.sub_show_table('sub_n1_n2', 'items')",
            "function sub_show_table",
        ),
        ("SELECT * FROM spock.node_info()", "function node_info"),
        (
            "SELECT * FROM spock.get_apply_worker_status()",
            "function get_apply_worker_status",
        ),
        (
            &format!("SELECT spock.wait_for_apply_worker({sub_id}, 1)"),
            "function wait_for_apply_worker",
        ),
        (
            "SELECT * FROM spock.xact_commit_timestamp_origin(pg_current_xact_id()::xid)",
            "function xact_commit_timestamp_origin",
        ),
        (
            "SELECT * FROM spock.repset_show_table('items', '{default}')",
            "function repset_show_table",
        ),
        ("SELECT * FROM spock.node_interface", "table node_interface"),
        ("SELECT * FROM spock.node", "table node"),
        ("SELECT * FROM spock.local_node", "table local_node"),
        ("SELECT * FROM spock.subscription", "table subscription"),
        (
            "SELECT * FROM spock.local_sync_status",
            "table local_sync_status",
        ),
        ("SELECT * FROM spock.progress", "table progress"),
        ("SELECT * FROM spock.exception_log", "table exception_log"),
        ("SELECT * FROM spock.resolutions", "table resolutions"),
        ("SELECT * FROM spock.queue", "table queue"),
        (
            "SELECT * FROM spock.replication_set_table",
            "table replication_set_table",
        ),
        ("SELECT * FROM spock.tables", "view tables"),
        // Last: it empties the counters.
        (
            "SELECT spock.reset_channel_stats()",
            "function reset_channel_stats",
        ),
    ];
    for (sql, object) in &probes {
        for node in [p, s] {
            let e = error_of(node, ATTACKER, sql, major);
            assert!(
                e.contains(&format!("permission denied for {object}")),
                "PostgreSQL {major}, {}: `{sql}` as {ATTACKER}: {e}",
                node.name
            );
        }
        // The subscriber has something to show for each of them.
        if let Err(e) = s.sql(sql) {
            panic!("PostgreSQL {major}: `{sql}` as superuser: {e}");
        }
    }
    // The superuser's answers are real ones.
    assert_eq!(
        s.sql("SELECT status FROM spock.sub_show_status()").unwrap(),
        "replicating",
        "PostgreSQL {major}"
    );
    assert_eq!(
        s.sql("SELECT count(*) FROM spock.get_apply_worker_status()")
            .unwrap(),
        "1",
        "PostgreSQL {major}"
    );
    assert_eq!(
        p.sql("SELECT node_name FROM spock.node_info()").unwrap(),
        "n1",
        "PostgreSQL {major}"
    );

    // The whole schema, as the catalog sees it: no function beyond the harmless ones, no
    // relation and no sequence at all.
    for node in [p, s] {
        let functions = node
            .sql(&format!(
                "SELECT p.oid::regprocedure::text FROM pg_proc p \
                  WHERE p.pronamespace = 'spock'::regnamespace \
                    AND has_function_privilege('{ATTACKER}', p.oid, 'EXECUTE') \
                  ORDER BY 1"
            ))
            .unwrap();
        let extra: Vec<&str> = functions
            .lines()
            .filter(|f| !PUBLIC_OK.contains(f))
            .collect();
        assert!(
            extra.is_empty(),
            "PostgreSQL {major}, {}: {ATTACKER} may execute {extra:?}",
            node.name
        );
        let relations = node
            .sql(&format!(
                "SELECT c.oid::regclass::text FROM pg_class c \
                  WHERE c.relnamespace = 'spock'::regnamespace \
                    AND CASE WHEN c.relkind = 'S' \
                             THEN has_sequence_privilege('{ATTACKER}', c.oid, 'USAGE,SELECT,UPDATE') \
                             WHEN c.relkind IN ('r', 'p', 'v', 'm', 'f') \
                             THEN has_table_privilege('{ATTACKER}', c.oid, \
                                      'SELECT,INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER') \
                             ELSE false END \
                  ORDER BY 1"
            ))
            .unwrap();
        assert_eq!(
            relations, "",
            "PostgreSQL {major}, {}: {ATTACKER} may use these spock relations",
            node.name
        );
    }
}

/// Everything a node shows about its sessions and processes, as text.
fn activity(node: &Node) -> String {
    let rows = node.sql("SELECT a::text FROM pg_stat_activity a").unwrap();
    let pids = node.sql("SELECT pid FROM pg_stat_activity").unwrap();
    // Process titles (what ps shows; PostgreSQL writes them over argv).
    let titles: Vec<String> = pids
        .lines()
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .map(|t| String::from_utf8_lossy(&t).replace('\0', " "))
        .collect();
    format!("{rows}\n{}", titles.join("\n"))
}

fn log_of(node: &Node) -> String {
    std::fs::read_to_string(&node.log).unwrap_or_default()
}

fn dsn_passwords_stay_hidden(kernel: &harness::Kernel) {
    let major = kernel.major;
    let cluster = subscribed_pair(kernel);
    let (p, s) = (cluster.node(0), cluster.node(1));

    // Row filters calling functions are evaluated by the walsender.
    p.sql("INSERT INTO filtered VALUES (1, 'X'), (2, 'keep me'), (3, 'drop me')")
        .unwrap();
    wait_for(
        s,
        "SELECT string_agg(id::text, ',' ORDER BY id) FROM filtered",
        "1,2",
    );

    let status = s.sql("SELECT * FROM spock.sub_show_status()").unwrap();
    assert!(
        !status.contains(SECRET) && status.contains("password=********"),
        "PostgreSQL {major}: sub_show_status shows {status}"
    );

    // Failing subscriptions, each statement kept out of the log (it is the caller's own
    // text, which PostgreSQL logs as it is).
    let quiet = "SET log_min_error_statement = panic; ";
    let bad = [
        // Nothing listens there.
        format!(
            "host=127.0.0.1 port=1 dbname=postgres user=postgres password={SECRET} connect_timeout=5"
        ),
        format!("postgresql://postgres:{SECRET}@127.0.0.1:1/postgres"),
        // Malformed: libpq quotes such a URI whole in its message.
        format!("postgresql://postgres:{SECRET}@[::1]x/postgres"),
        // Unparsable keyword list.
        format!("host=127.0.0.1 password='{SECRET}"),
    ];
    for dsn in &bad {
        let e = error_of(
            s,
            "postgres",
            &format!(
                "{quiet}SELECT spock.sub_create('bad_sub', '{}')",
                dsn.replace('\'', "''")
            ),
            major,
        );
        assert!(
            !e.contains(SECRET),
            "PostgreSQL {major}: sub_create error shows the password: {e}"
        );
        assert!(
            e.contains("could not connect") || e.contains("invalid connection string"),
            "PostgreSQL {major}: unexpected sub_create error for {dsn:?}: {e}"
        );
    }
    // A known provider under another DSN: upstream's message names both DSNs.
    let e = error_of(
        s,
        "postgres",
        &format!(
            "{quiet}SELECT spock.sub_create('other_sub', '{} connect_timeout=9')",
            secret_dsn(p)
        ),
        major,
    );
    assert!(
        e.contains("points to existing node") && e.contains("password=********"),
        "PostgreSQL {major}: {e}"
    );
    assert!(!e.contains(SECRET), "PostgreSQL {major}: {e}");

    // An unreachable interface: the apply worker fails to connect (and logs why), and
    // sub_drop warns that it cannot drop the slot.
    s.sql(&format!(
        "SELECT spock.node_add_interface('n1', 'unreachable', \
           'host=127.0.0.1 port=1 dbname=postgres user=postgres password={SECRET}')"
    ))
    .unwrap();
    s.sql("SELECT spock.sub_alter_interface('sub_n1_n2', 'unreachable')")
        .unwrap();
    common::wait_until(
        || {
            format!(
                "PostgreSQL {major}: the apply worker never failed to connect:\n{}",
                s.log_tail(30)
            )
        },
        30,
        || {
            log_of(s)
                .contains("could not connect to the provider")
                .then_some(())
        },
    );
    for node in [p, s] {
        let seen = activity(node);
        assert!(
            !seen.contains(SECRET),
            "PostgreSQL {major}, {}: pg_stat_activity or a process title shows the password:\n{seen}",
            node.name
        );
    }
    s.sql("SELECT spock.sub_drop('sub_n1_n2')").unwrap();
    assert!(
        log_of(s).contains("could not drop slot"),
        "PostgreSQL {major}: sub_drop did not warn:\n{}",
        s.log_tail(30)
    );

    for node in [p, s] {
        let log = log_of(node);
        let leaks: Vec<&str> = log.lines().filter(|l| l.contains(SECRET)).collect();
        assert!(
            leaks.is_empty(),
            "PostgreSQL {major}, {}: the server log shows the password:\n{}",
            node.name,
            leaks.join("\n")
        );
        assert!(
            !log.contains("panicked"),
            "PostgreSQL {major}, {}: a Rust panic reached the log:\n{}",
            node.name,
            node.log_tail(40)
        );
    }
}

/// Runs `pg_ctl` on `node`'s data directory as the server account, with `env` added.
fn pg_ctl(node: &Node, args: &[&str], env: &[(&str, &str)]) {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let bin = node.kernel().bin("pg_ctl");
    let mut cmd = if root {
        let user = std::env::var("PGEDGE_TEST_USER").unwrap_or_else(|_| "nobody".into());
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", &user, "--"]).arg(&bin);
        c
    } else {
        std::process::Command::new(&bin)
    };
    let data = node.data.display().to_string();
    let log = node.log.display().to_string();
    let out = cmd
        .args(args)
        .args(["-w", "-t", "60", "-D", &data, "-l", &log])
        .envs(node.kernel().env())
        .envs(env.iter().copied())
        .env_remove("PGDATA")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_ctl {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        node.log_tail(20)
    );
}

/// A server started by hand; stopped when dropped (also when the test fails).
struct HandStarted<'a>(&'a Node);

impl Drop for HandStarted<'_> {
    fn drop(&mut self) {
        pg_ctl(self.0, &["stop", "-m", "fast"], &[]);
    }
}

fn row_filters_with_functions_fail_cleanly(kernel: &harness::Kernel) {
    let major = kernel.major;
    let cluster = Cluster::start(kernel, &ClusterOptions::default()).unwrap();
    let n = cluster.node(0);
    // As a developer's shell often has it: errors that cross Rust code must still carry
    // no Rust backtrace.
    n.stop(harness::StopMode::Fast).unwrap();
    pg_ctl(n, &["start"], &[("RUST_BACKTRACE", "1")]);
    let _server = HandStarted(n);
    n.sql("CREATE EXTENSION spock").unwrap();
    n.sql(&format!(
        "SELECT spock.node_create('n1', '{}')",
        n.dsn("postgres")
    ))
    .unwrap();
    // Each attempt is undone; the result is "ok" or the error's SQLSTATE, message and
    // detail as PL/pgSQL sees them.
    n.sql(
        "CREATE TABLE t(id int PRIMARY KEY, name text); \
         CREATE FUNCTION is_x(t text) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$ SELECT t = 'x' $$; \
         CREATE FUNCTION is_x_plpgsql(t text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE \
             AS $$ BEGIN RETURN t = 'x'; END $$; \
         CREATE FUNCTION coin(t text) RETURNS boolean LANGUAGE sql VOLATILE AS $$ SELECT random() < 0.5 $$; \
         CREATE FUNCTION try_sql(cmd text) RETURNS text LANGUAGE plpgsql AS $$ \
         DECLARE st text; msg text; det text; \
         BEGIN \
             BEGIN \
                 EXECUTE cmd; \
                 RAISE EXCEPTION 'spock-test-ok'; \
             EXCEPTION WHEN OTHERS THEN \
                 GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, \
                                         det = PG_EXCEPTION_DETAIL; \
                 IF msg = 'spock-test-ok' THEN RETURN 'ok'; END IF; \
                 RETURN st || '|' || msg || '|' || coalesce(det, ''); \
             END; \
         END $$;",
    )
    .unwrap();
    // (filter, expected: "ok" or the SQLSTATE)
    let cases = [
        ("lower(name) = 'x'", "ok"),
        ("lower(name) = 'x' AND id > 0", "ok"),
        ("public.is_x(name)", "ok"),
        ("public.is_x_plpgsql(name)", "ok"),
        // Names are resolved with the caller's search_path, as upstream's are.
        ("is_x(name)", "ok"),
        ("upper(lower(name)) IN ('X', 'Y')", "ok"),
        // Stable and volatile functions are allowed, as upstream allows them.
        ("public.coin(name)", "ok"),
        ("random() < 0.5", "ok"),
        ("no_such_function(name)", "42883"),
        ("lower(no_such_column) = 'x'", "42703"),
        ("lower(name) = ", "42601"),
        ("(SELECT true)", "0A000"),
        ("count(*) > 0", "42803"),
        ("lower(name)", "42804"),
        ("name = 'a'; DROP TABLE t", "22023"),
        ("name = 'a') UNION (SELECT true", "42601"),
        ("name = 'a' UNION SELECT true", "22023"),
        ("SELECT true", "42601"),
    ];
    let try_sql = |cmd: &str| {
        n.sql(&format!("SELECT try_sql('{}')", cmd.replace('\'', "''")))
            .unwrap()
    };
    for (filter, want) in cases {
        let got = try_sql(&format!(
            "SELECT spock.repset_add_table('default', 't', row_filter := '{}')",
            filter.replace('\'', "''")
        ));
        for sign in [
            "panicked",
            "backtrace",
            "called `",
            ".rs:",
            "stack backtrace",
        ] {
            assert!(
                !got.contains(sign),
                "PostgreSQL {major}: row filter {filter:?} gave a Rust panic: {got}"
            );
        }
        let state = got.split('|').next().unwrap_or_default();
        assert!(
            state != "XX000",
            "PostgreSQL {major}: row filter {filter:?} failed without a real SQLSTATE: {got}"
        );
        assert_eq!(
            state, want,
            "PostgreSQL {major}: row filter {filter:?} gave {got}"
        );
    }
    // DDL naming a missing table passes the DDL hook's Rust code on its way out.
    for ddl in [
        "ALTER TABLE no_such_table ADD COLUMN x int",
        "DROP TABLE no_such_table",
        "CREATE INDEX ON no_such_table (id)",
        "ALTER TABLE no_such_schema.t ADD COLUMN x int",
    ] {
        let got = try_sql(ddl);
        let state = got.split('|').next().unwrap_or_default();
        assert!(
            ["42P01", "3F000"].contains(&state)
                && !got.contains(".rs:")
                && !got.contains("backtrace"),
            "PostgreSQL {major}: `{ddl}` gave {got}"
        );
    }
    // Nothing was left behind, and the successful form really adds the table.
    assert_eq!(
        n.sql("SELECT count(*) FROM spock.replication_set_table")
            .unwrap(),
        "0",
        "PostgreSQL {major}"
    );
    n.sql("SELECT spock.repset_add_table('default', 't', row_filter := 'lower(name) = ''x''')")
        .unwrap();
    assert!(
        !log_of(n).contains("panicked"),
        "PostgreSQL {major}: a Rust panic reached the log:\n{}",
        n.log_tail(40)
    );
}
