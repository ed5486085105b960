//! The staged kernel: marker, extensions, and the harness's start/stop behaviour.

mod common;

use harness::{Cluster, ClusterOptions, Kernel};

const DIST_VERSION: &str = env!("CARGO_PKG_VERSION");

#[test]
fn staged_kernel_carries_the_marker_and_extensions() {
    common::for_each_kernel(|kernel| {
        let cluster = Cluster::start(kernel, &ClusterOptions::default()).unwrap();
        let n = cluster.node(0);
        assert_eq!(n.sql("SHOW pgedge.kernel_version").unwrap(), DIST_VERSION);
        assert_eq!(n.sql("SHOW pgedge.kernel_api").unwrap(), "1");
        let version = n.sql("SELECT version()").unwrap();
        assert!(
            version.contains(&format!("(pgEdge {DIST_VERSION})")),
            "{version}"
        );
        assert!(
            version.starts_with(&format!("PostgreSQL {}.", kernel.major)),
            "{version}"
        );

        let e = n
            .sql("SET pgedge.kernel_version = 'forged'")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot be changed"), "{e}");

        n.sql("CREATE EXTENSION spock; CREATE EXTENSION snowflake; CREATE EXTENSION lolor;")
            .unwrap();
        let versions = n
            .sql("SELECT string_agg(extname || '=' || extversion || '@' || extnamespace::regnamespace, ' ' ORDER BY extname) \
                  FROM pg_extension WHERE extname <> 'plpgsql'")
            .unwrap();
        assert_eq!(
            versions,
            "lolor=1.2.2@lolor snowflake=2.4@snowflake spock=5.0.5@spock"
        );
        assert_eq!(n.sql("SELECT spock.spock_version()").unwrap(), "5.0.5");
        assert_eq!(n.sql("SELECT spock.spock_version_num()").unwrap(), "50005");
        assert_eq!(n.sql("SELECT spock.kernel_api_level()").unwrap(), "1");

        // The same library serves as the logical decoding output plugin.
        n.sql("SELECT pg_create_logical_replication_slot('probe', 'spock_output')")
            .unwrap();
        let slot = n
            .sql("SELECT plugin || ' ' || slot_type FROM pg_replication_slots WHERE slot_name = 'probe'")
            .unwrap();
        assert_eq!(slot, "spock_output logical");
        n.sql("SELECT pg_drop_replication_slot('probe')").unwrap();
        cluster.stop().unwrap();
    });
}

#[test]
fn three_nodes_start_and_stop_cleanly() {
    common::for_each_kernel(|kernel| {
        let cluster = Cluster::start(kernel, &ClusterOptions::default().nodes(3)).unwrap();
        let mut ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
        for n in &cluster.nodes {
            assert_eq!(n.sql("SHOW port").unwrap(), n.port.to_string());
            assert_eq!(n.sql("SHOW wal_level").unwrap(), "logical");
            assert_eq!(n.sql("SHOW track_commit_timestamp").unwrap(), "on");
            assert_eq!(n.sql("SHOW shared_preload_libraries").unwrap(), "spock");
            let user = n
                .sql("SELECT rolname FROM pg_roles WHERE oid = 10")
                .unwrap();
            assert_eq!(user, "postgres");
        }
        ports.dedup();
        assert_eq!(ports.len(), 3, "every node has its own port");
        cluster.stop().unwrap();
        for n in &cluster.nodes {
            assert!(
                !n.data.join("postmaster.pid").exists(),
                "{} still running",
                n.name
            );
            assert!(n.sql("SELECT 1").is_err(), "{} still answers", n.name);
            assert!(
                n.log_tail(5).contains("database system is shut down"),
                "{}",
                n.log_tail(5)
            );
        }
    });
}

#[test]
fn pigsty_preload_line_starts() {
    common::for_each_kernel(|kernel| {
        let opts = ClusterOptions::default()
            .preload(Some("spock, lolor, pg_stat_statements, auto_explain"));
        let cluster = Cluster::start(kernel, &opts).unwrap();
        let n = cluster.node(0);
        n.sql("CREATE EXTENSION lolor; CREATE EXTENSION pg_stat_statements")
            .unwrap();
        assert_eq!(
            n.sql(
                "SELECT count(*) FROM pg_extension WHERE extname IN ('lolor','pg_stat_statements')"
            )
            .unwrap(),
            "2"
        );
    });
}

#[test]
fn spock_demands_shared_preload_libraries() {
    common::for_each_kernel(|kernel| {
        let cluster = Cluster::start(kernel, &ClusterOptions::default().preload(None)).unwrap();
        let e = cluster.node(0).sql("LOAD 'spock'").unwrap_err().to_string();
        assert!(
            e.contains("spock must be loaded via shared_preload_libraries"),
            "{e}"
        );
        // snowflake and lolor load on demand.
        cluster
            .node(0)
            .sql("LOAD 'snowflake'; LOAD 'lolor'")
            .unwrap();
    });
}

/// The spock library built for our 15 kernel, loaded into Debian's stock PostgreSQL 15.
#[test]
fn stock_server_is_refused_with_a_clear_message() {
    if !common::majors().contains(&15) {
        eprintln!("skipped: this run does not build PostgreSQL 15");
        return;
    }
    let ours = Kernel::staged(15).unwrap();
    let stock = Kernel::from_bindir(std::path::Path::new("/usr/lib/postgresql/15/bin"))
        .expect("Debian's postgresql-15 package provides the stock server (.ci/run installs it)");
    let cluster = Cluster::start(&stock, &ClusterOptions::default().preload(None)).unwrap();
    let n = cluster.node(0);
    assert!(
        n.sql("SHOW pgedge.kernel_version").is_err(),
        "stock server has no marker"
    );

    let lib = cluster.dir().join("spock.so");
    std::fs::copy(ours.pkglibdir.join("spock.so"), &lib).unwrap();
    let e = n
        .sql(&format!("LOAD '{}'", lib.display()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("extension \"spock\" requires the pgEdge kernel"),
        "{e}"
    );
    assert!(e.contains("stock PostgreSQL"), "{e}");
    // The session and server survive the refusal.
    assert_eq!(n.sql("SELECT 42").unwrap(), "42");
}
