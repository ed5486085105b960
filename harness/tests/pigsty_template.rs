//! Pigsty's pgEdge template works unchanged: servers started with exactly the settings Pigsty
//! writes (its `output_plugin_libraries`, which does not name `spock_output`, and its
//! `shared_preload_libraries`) create spock, snowflake and lolor in database `meta`, answer
//! Pigsty's check query, and replicate both ways. Where the server checks
//! `output_plugin_libraries` (17.11 on), spock's plugin works because spock, preloaded, registers
//! it as trusted (kernel patch 0005); a plain replication role still cannot use any other
//! library that the list omits.

mod common;

// One test per major for each of these (`name::pg17`…); see `common::per_major`.
crate::per_major!(
    pigsty_template_replicates_both_ways,
    pigsty_template_trusts_only_the_preloaded_plugin,
);

use harness::{Cluster, ClusterOptions, Kernel, Node};

/// Pigsty's `pg_libs` for the pgEdge template (becomes `shared_preload_libraries`).
const PIGSTY_PRELOAD: &str = "spock, lolor, pg_stat_statements, auto_explain";
/// Pigsty's `output_plugin_libraries`, written for every cluster.
const PIGSTY_PLUGINS: &str = "pgoutput, test_decoding, wal2json";
/// Pigsty's check query, run in database `meta`.
const PIGSTY_CHECK: &str = "SELECT extname, extversion FROM pg_extension \
                            WHERE extname IN ('spock','snowflake','lolor') ORDER BY 1;";

/// Exactly Pigsty's settings; `output_plugin_libraries` only where the server has it (a server
/// without it refuses to start with an unknown setting, and Pigsty writes it only there).
fn pigsty_options(kernel: &Kernel, nodes: usize) -> ClusterOptions {
    let mut opts = ClusterOptions::default()
        .nodes(nodes)
        .preload(Some(PIGSTY_PRELOAD))
        .setting("wal_level", "logical")
        .setting("track_commit_timestamp", "on")
        .setting("max_wal_senders", "50")
        .setting("max_replication_slots", "50");
    if checks_plugins(kernel) {
        opts = opts.setting("output_plugin_libraries", &format!("'{PIGSTY_PLUGINS}'"));
    }
    opts
}

fn checks_plugins(kernel: &Kernel) -> bool {
    kernel.has_setting("output_plugin_libraries").unwrap()
}

/// The settings a node actually runs with are Pigsty's (the harness's own defaults overridden).
fn assert_pigsty_settings(kernel: &Kernel, n: &Node) {
    let major = kernel.major;
    let got = |name: &str| n.sql(&format!("SHOW {name}")).unwrap();
    assert_eq!(
        got("shared_preload_libraries"),
        PIGSTY_PRELOAD,
        "PostgreSQL {major}"
    );
    assert_eq!(got("wal_level"), "logical", "PostgreSQL {major}");
    assert_eq!(got("track_commit_timestamp"), "on", "PostgreSQL {major}");
    assert_eq!(got("max_wal_senders"), "50", "PostgreSQL {major}");
    assert_eq!(got("max_replication_slots"), "50", "PostgreSQL {major}");
    if checks_plugins(kernel) {
        assert_eq!(
            got("output_plugin_libraries"),
            PIGSTY_PLUGINS,
            "PostgreSQL {major}"
        );
    } else {
        // No list to check: every library may serve as an output plugin on this major.
        let e = n
            .sql("SHOW output_plugin_libraries")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unrecognized configuration parameter"),
            "PostgreSQL {major}: {e}"
        );
    }
    // Pigsty's preloads besides spock are loaded and working.
    n.sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .unwrap();
    assert_eq!(
        n.sql("SELECT count(*) > 0 FROM pg_stat_statements")
            .unwrap(),
        "t",
        "PostgreSQL {major}: pg_stat_statements collects nothing"
    );
    assert_eq!(
        got("auto_explain.log_min_duration"),
        "-1",
        "PostgreSQL {major}"
    );
}

fn pigsty_template_replicates_both_ways(kernel: &harness::Kernel) {
    let major = kernel.major;
    let cluster = Cluster::start(kernel, &pigsty_options(kernel, 2)).unwrap();
    for (i, n) in cluster.nodes.iter().enumerate() {
        assert_pigsty_settings(kernel, n);
        n.sql("CREATE DATABASE meta").unwrap();
        // As Pigsty creates the database's extensions.
        for ext in ["spock", "snowflake", "lolor"] {
            n.sql_in(
                "meta",
                &format!("CREATE EXTENSION IF NOT EXISTS {ext} CASCADE"),
            )
            .unwrap();
        }
        assert_eq!(
            n.sql_in("meta", PIGSTY_CHECK).unwrap(),
            "lolor|1.2.2\nsnowflake|2.4\nspock|5.0.5",
            "PostgreSQL {major}: Pigsty's check query on {}",
            n.name
        );
        assert!(
            n.sql("SELECT version()")
                .unwrap()
                .starts_with(&format!("PostgreSQL {major}.")),
            "PostgreSQL {major}"
        );
        n.sql_in(
            "meta",
            &format!(
                "SELECT spock.node_create('n{}', '{}')",
                i + 1,
                n.dsn("meta")
            ),
        )
        .unwrap();
        n.sql_in(
            "meta",
            "CREATE TABLE accounts(id int PRIMARY KEY, owner text, balance numeric)",
        )
        .unwrap();
        n.sql_in(
            "meta",
            "SELECT spock.repset_add_all_tables('default', ARRAY['public'])",
        )
        .unwrap();
    }
    let (n1, n2) = (cluster.node(0), cluster.node(1));
    for (s, p, name) in [(n2, n1, "sub_n1_n2"), (n1, n2, "sub_n2_n1")] {
        s.sql_in(
            "meta",
            &format!("SELECT spock.sub_create('{name}', '{}')", p.dsn("meta")),
        )
        .unwrap_or_else(|e| panic!("PostgreSQL {major}: sub_create {name}: {e}"));
    }
    for n in [n1, n2] {
        // Each node's spock_output slot streams to the other's apply worker.
        wait_for(
            n,
            "SELECT count(*) FROM pg_replication_slots WHERE active AND plugin = 'spock_output'",
            "1",
        );
    }

    n1.sql_in(
        "meta",
        "INSERT INTO accounts VALUES (1, 'n1', 10), (2, 'n1', 20)",
    )
    .unwrap();
    n2.sql_in("meta", "INSERT INTO accounts VALUES (3, 'n2', 30)")
        .unwrap();
    let rows = "SELECT string_agg(id || ':' || owner || ':' || balance, ',' ORDER BY id) \
                FROM accounts";
    for n in [n1, n2] {
        wait_for(n, rows, "1:n1:10,2:n1:20,3:n2:30");
    }
    // A row made on n1, changed on n2, comes back changed.
    n2.sql_in("meta", "UPDATE accounts SET balance = 11 WHERE id = 1")
        .unwrap();
    for n in [n1, n2] {
        wait_for(n, rows, "1:n1:11,2:n1:20,3:n2:30");
    }
    cluster.stop().unwrap();
}

fn pigsty_template_trusts_only_the_preloaded_plugin(kernel: &harness::Kernel) {
    let major = kernel.major;
    let cluster = Cluster::start(kernel, &pigsty_options(kernel, 1)).unwrap();
    let n = cluster.node(0);
    n.sql("CREATE DATABASE meta").unwrap();
    n.sql("CREATE ROLE repl LOGIN REPLICATION").unwrap();
    // A plain replication role may use spock's plugin, whatever the list says.
    create_slot(n, "spock_slot", "spock_output")
        .unwrap_or_else(|e| panic!("PostgreSQL {major}: spock_output refused: {e}"));
    n.sql("SELECT pg_drop_replication_slot('spock_slot')")
        .unwrap();
    if !checks_plugins(kernel) {
        // Without output_plugin_libraries every installed plugin is allowed; Pigsty's
        // settings minus that line are what the replication test above ran with.
        create_slot(n, "td_slot", "test_decoding")
            .unwrap_or_else(|e| panic!("PostgreSQL {major}: test_decoding refused: {e}"));
        n.sql("SELECT pg_drop_replication_slot('td_slot')").unwrap();
        cluster.stop().unwrap();
        return;
    }
    // Libraries that exist but are not listed stay refused: preloaded ones that did not
    // register (auto_explain, lolor), spock under its other name (only spock_output is
    // registered), and test_decoding once the list no longer names it.
    for plugin in ["auto_explain", "lolor", "spock"] {
        assert_refused(n, plugin, major);
    }
    n.configure("output_plugin_libraries", "'pgoutput, wal2json'")
        .unwrap();
    wait_for(n, "SHOW output_plugin_libraries", "pgoutput, wal2json");
    assert_refused(n, "test_decoding", major);
    create_slot(n, "spock_slot", "spock_output")
        .unwrap_or_else(|e| panic!("PostgreSQL {major}: spock_output refused: {e}"));
    assert_eq!(
        n.sql("SELECT string_agg(slot_name || ':' || plugin, ',') FROM pg_replication_slots")
            .unwrap(),
        "spock_slot:spock_output",
        "PostgreSQL {major}: a refused slot was left behind"
    );
    cluster.stop().unwrap();
}

/// Creates a logical slot for `plugin` over the replication protocol as the plain replication
/// role `repl`; an error carries the server's message with its SQLSTATE.
fn create_slot(n: &Node, slot: &str, plugin: &str) -> Result<String, String> {
    let out = n
        .client("psql", "repl")
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            "VERBOSITY=verbose",
            "-d",
            "dbname=meta replication=database",
            "-c",
            &format!("CREATE_REPLICATION_SLOT {slot} LOGICAL {plugin}"),
        ])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn assert_refused(n: &Node, plugin: &str, major: u32) {
    let e = create_slot(n, "refused_slot", plugin).expect_err(&format!(
        "PostgreSQL {major}: a plain replication role created a slot for unlisted {plugin}"
    ));
    assert!(
        e.contains(&format!(
            "42501: library \"{plugin}\" may not be used as an output plugin"
        )),
        "PostgreSQL {major}: {plugin}: {e}"
    );
}

/// Polls `sql` in database `meta` (the test's name carries the major).
fn wait_for(n: &Node, sql: &str, want: &str) {
    common::wait_for(n, "meta", sql, want, 60);
}
