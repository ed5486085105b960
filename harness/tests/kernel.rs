//! The staged kernel: marker, commit clock, extensions, and the harness's start/stop behaviour.

mod common;

// One test per major for each of these (`name::pg17`…); see `common::per_major`.
crate::per_major!(
    staged_kernel_carries_the_marker_and_extensions,
    three_nodes_start_and_stop_cleanly,
    pigsty_preload_line_starts,
    spock_demands_shared_preload_libraries,
    commit_timestamps_increase_strictly_in_lsn_order,
    commit_clock_survives_restart_and_crash,
    commit_prepared_uses_the_clock_everywhere,
    commit_clock_api_and_settings,
    old_value_logging_widens_the_old_key,
    walsender_sends_a_transactions_start_in_one_segment,
);

use harness::{Cluster, ClusterOptions, Kernel, Node, StopMode};
use std::process::Command;

const DIST_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The capability level a major's kernel reports: each patch of its series that adds something
/// extensions use raises it by one, setting `PGEDGE_KERNEL_API` (0005, trusted output plugins,
/// exists only where the server has `output_plugin_libraries`; 0006, coalesced walsender
/// writes, adds nothing to call and leaves it).
fn kernel_api_level(major: u32) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../patches/{major}"));
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "diff"))
        .filter(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .contains("\n+#define PGEDGE_KERNEL_API ")
        })
        .count()
        .to_string()
}

fn staged_kernel_carries_the_marker_and_extensions(kernel: &harness::Kernel) {
    let cluster = Cluster::start(kernel, &ClusterOptions::default()).unwrap();
    let n = cluster.node(0);
    assert_eq!(n.sql("SHOW pgedge.kernel_version").unwrap(), DIST_VERSION);
    let level = kernel_api_level(kernel.major);
    assert_eq!(
        n.sql("SHOW pgedge.kernel_api").unwrap(),
        level,
        "PostgreSQL {}",
        kernel.major
    );
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
    assert_eq!(n.sql("SELECT spock.kernel_api_level()").unwrap(), level);

    // The same library serves as the logical decoding output plugin.
    n.sql("SELECT pg_create_logical_replication_slot('probe', 'spock_output')")
        .unwrap();
    let slot = n
        .sql(
            "SELECT plugin || ' ' || slot_type FROM pg_replication_slots WHERE slot_name = 'probe'",
        )
        .unwrap();
    assert_eq!(slot, "spock_output logical");
    n.sql("SELECT pg_drop_replication_slot('probe')").unwrap();
    cluster.stop().unwrap();
}

fn three_nodes_start_and_stop_cleanly(kernel: &harness::Kernel) {
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
    ports.sort_unstable();
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
}

fn pigsty_preload_line_starts(kernel: &harness::Kernel) {
    let opts =
        ClusterOptions::default().preload(Some("spock, lolor, pg_stat_statements, auto_explain"));
    let cluster = Cluster::start(kernel, &opts).unwrap();
    let n = cluster.node(0);
    n.sql("CREATE EXTENSION lolor; CREATE EXTENSION pg_stat_statements")
        .unwrap();
    assert_eq!(
        n.sql("SELECT count(*) FROM pg_extension WHERE extname IN ('lolor','pg_stat_statements')")
            .unwrap(),
        "2"
    );
}

fn spock_demands_shared_preload_libraries(kernel: &harness::Kernel) {
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
}

/// The spock library built for our 15 kernel, loaded into Debian's stock PostgreSQL 15.
#[test]
fn stock_server_is_refused_with_a_clear_message() {
    // Debian's stock server is a 15; `cargo xtask test` leaves this test out (`--skip`) of runs
    // without our 15, so it never passes without checking.
    assert!(
        common::majors().contains(&15),
        "needs our PostgreSQL 15 kernel in the run (cargo xtask test --pg 15)"
    );
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

// ---- K1: the monotonic commit clock (patch 0002) ----

/// A commit record as pg_waldump shows it.
#[derive(Debug)]
struct CommitRecord {
    /// The committed transaction (for COMMIT PREPARED, the prepared one).
    xid: String,
    prepared: bool,
    /// Commit time in microseconds since the Unix epoch.
    micros: i64,
}

/// The commit records between `from` and the flushed end of WAL, in LSN order, read with the
/// kernel's pg_waldump.
fn commit_records(node: &Node, from: &str) -> Vec<CommitRecord> {
    let to = node.sql("SELECT pg_current_wal_flush_lsn()").unwrap();
    let out = Command::new(node.kernel().bin("pg_waldump"))
        .arg("-p")
        .arg(node.data.join("pg_wal"))
        .args(["-s", from, "-e", &to, "-r", "Transaction"])
        .envs(node.kernel().env())
        .env("TZ", "UTC")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pg_waldump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .filter_map(|line| {
            let tx = line.split("tx:").nth(1)?.split(',').next()?.trim();
            let desc = line.split("desc: ").nth(1)?;
            let (xid, prepared, rest) = if let Some(r) = desc.strip_prefix("COMMIT_PREPARED ") {
                let (xid, rest) = r.split_once(": ")?;
                (xid, true, rest)
            } else {
                (tx, false, desc.strip_prefix("COMMIT ")?)
            };
            // "YYYY-MM-DD HH:MM:SS.ffffff UTC"
            assert_eq!(&rest[26..30], " UTC", "{line}");
            Some(CommitRecord {
                xid: xid.to_string(),
                prepared,
                micros: micros(&rest[..26]),
            })
        })
        .collect()
}

/// "YYYY-MM-DD HH:MM:SS.ffffff" (UTC) as microseconds since the Unix epoch.
fn micros(ts: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| -> i64 { ts[r].parse().unwrap() };
    let (m, d) = (n(5..7), n(8..10));
    let y = n(0..4) - i64::from(m <= 2);
    // Days from the civil date (H. Hinnant's algorithm).
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    (days * 86_400 + n(11..13) * 3_600 + n(14..16) * 60 + n(17..19)) * 1_000_000 + n(20..26)
}

/// A cluster of one node for the commit clock tests, with a table `probe`.
fn clock_cluster(kernel: &Kernel, opts: ClusterOptions) -> Cluster {
    let cluster = Cluster::start(kernel, &opts.preload(None)).unwrap();
    cluster.node(0).sql("CREATE TABLE probe ()").unwrap();
    cluster
}

/// Commits one transaction, the local clock shifted by `offset`; returns its xid. It writes a
/// row, so the commit is flushed before this returns (an xid alone commits asynchronously).
fn commit_one(node: &Node, offset: &str) -> String {
    node.sql(&format!(
        "SET pgedge.commit_clock_test_offset = '{offset}'; \
         INSERT INTO probe DEFAULT VALUES; SELECT pg_current_xact_id()::xid"
    ))
    .unwrap()
}

/// The commit timestamp of `xid` in microseconds since the Unix epoch.
fn commit_ts(node: &Node, xid: &str) -> i64 {
    node.sql(&format!(
        "SELECT (extract(epoch FROM pg_xact_commit_timestamp('{xid}'::xid)) * 1000000)::int8"
    ))
    .unwrap()
    .parse()
    .unwrap()
}

fn now_micros(node: &Node) -> i64 {
    node.sql("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::int8")
        .unwrap()
        .parse()
        .unwrap()
}

const MINUTE: i64 = 60_000_000;

fn commit_timestamps_increase_strictly_in_lsn_order(kernel: &harness::Kernel) {
    let cluster = clock_cluster(kernel, ClusterOptions::default());
    let n = cluster.node(0);
    let start = n.sql("SELECT pg_current_wal_lsn()").unwrap();

    // Concurrent small transactions: stock PostgreSQL stamps some of them out of LSN order
    // or with the same microsecond.
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), "SELECT pg_current_xact_id();\n").unwrap();
    let out = n
        .client("pgbench", "postgres")
        .args(["-n", "-c", "8", "-j", "2", "-T", "5", "-f"])
        .arg(script.path())
        .arg("postgres")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pgbench: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A wall clock an hour behind: each commit is stamped 1 us after the previous one.
    let late: Vec<String> = (0..3).map(|_| commit_one(n, "-1h")).collect();

    let records = commit_records(n, &start);
    assert!(
        records.len() > 2000,
        "only {} commits recorded",
        records.len()
    );
    for w in records.windows(2) {
        assert!(
            w[1].micros > w[0].micros,
            "commit of xid {} at {} us does not follow xid {} at {} us ({} commits)",
            w[1].xid,
            w[1].micros,
            w[0].xid,
            w[0].micros,
            records.len()
        );
    }
    for xid in &late {
        let i = records.iter().position(|r| &r.xid == xid).unwrap();
        assert_eq!(records[i].micros, records[i - 1].micros + 1, "xid {xid}");
        assert_eq!(commit_ts(n, xid), records[i].micros, "xid {xid}");
    }
    eprintln!(
        "PostgreSQL {}: {} commits in strictly increasing timestamp order",
        kernel.major,
        records.len()
    );
}

fn commit_clock_survives_restart_and_crash(kernel: &harness::Kernel) {
    let cluster = clock_cluster(kernel, ClusterOptions::default());
    let n = cluster.node(0);

    // A commit an hour ahead pushes the clock; later commits follow it.
    let before = now_micros(n);
    let ahead = commit_ts(n, &commit_one(n, "1h"));
    assert!(ahead > before + 59 * MINUTE, "{ahead} vs {before}");

    // Clean restart: the clock comes back from the file saved at the shutdown checkpoint.
    n.restart().unwrap();
    let saved = std::fs::metadata(n.data.join("pg_logical/pgedge_commit_clock")).unwrap();
    assert_eq!(saved.len(), 16, "magic, CRC and the clock");
    let after_restart = commit_ts(n, &commit_one(n, "0"));
    assert!(
        after_restart > ahead && after_restart < ahead + MINUTE,
        "after restart {after_restart}, before {ahead}"
    );

    // Crash.
    n.stop(StopMode::Immediate).unwrap();
    n.start().unwrap();
    let after_crash = commit_ts(n, &commit_one(n, "0"));
    assert!(
        after_crash > after_restart && after_crash < after_restart + MINUTE,
        "after crash {after_crash}, before {after_restart}"
    );

    // Crash with the newest clock value only in WAL written after the last checkpoint:
    // redo must bring it back.
    n.sql("CHECKPOINT").unwrap();
    let before = now_micros(n);
    let further = commit_ts(n, &commit_one(n, "2h"));
    assert!(further > before + 119 * MINUTE, "{further} vs {before}");
    n.stop(StopMode::Immediate).unwrap();
    n.start().unwrap();
    let after_redo = commit_ts(n, &commit_one(n, "0"));
    assert!(
        after_redo > further && after_redo < further + MINUTE,
        "after crash {after_redo}, before {further}"
    );
}

fn commit_prepared_uses_the_clock_everywhere(kernel: &harness::Kernel) {
    let opts = ClusterOptions::default().setting("max_prepared_transactions", "5");
    let cluster = clock_cluster(kernel, opts);
    let n = cluster.node(0);

    let before = now_micros(n);
    let ahead = commit_ts(n, &commit_one(n, "10min"));
    assert!(ahead > before + 9 * MINUTE, "{ahead} vs {before}");
    let start = n.sql("SELECT pg_current_wal_lsn()").unwrap();
    let xid = n
        .sql("BEGIN; SELECT pg_current_xact_id()::xid; PREPARE TRANSACTION 'k1'")
        .unwrap();
    n.sql("COMMIT PREPARED 'k1'").unwrap();

    let committed = commit_ts(n, &xid);
    assert!(
        committed > ahead && committed < ahead + MINUTE,
        "COMMIT PREPARED at {committed}, clock at {ahead}"
    );
    let records = commit_records(n, &start);
    let record = records
        .iter()
        .find(|r| r.prepared && r.xid == xid)
        .unwrap_or_else(|| panic!("no COMMIT_PREPARED record for {xid}: {records:?}"));
    assert_eq!(record.micros, committed, "WAL and commit_ts agree");
}

fn commit_clock_api_and_settings(kernel: &harness::Kernel) {
    // The extension resolves these at run time (dlsym), so they must be exported.
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(kernel.bin("postgres"))
        .output()
        .unwrap();
    let symbols = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = symbols
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    for name in [
        "PgEdgeCommitClockSetFloor",
        "PgEdgeCommitClockCurrent",
        "pgedge_commit_clock_max_skew",
        "pgedge_commit_clock_test_offset",
    ] {
        assert!(names.contains(&name), "postgres does not export {name}");
    }

    let cluster = Cluster::start(kernel, &ClusterOptions::default().preload(None)).unwrap();
    let n = cluster.node(0);
    assert_eq!(
        n.sql(
            "SELECT setting || ' ' || unit || ' ' || context FROM pg_settings \
               WHERE name = 'pgedge.commit_clock_max_skew'"
        )
        .unwrap(),
        "60000 ms sighup"
    );
    assert_eq!(
        n.sql(
            "SELECT setting || ' ' || unit || ' ' || context FROM pg_settings \
               WHERE name = 'pgedge.commit_clock_test_offset'"
        )
        .unwrap(),
        "0 ms superuser"
    );
    n.sql("CREATE ROLE plain LOGIN").unwrap();
    let e = n
        .sql_as(
            "plain",
            "postgres",
            "SET pgedge.commit_clock_test_offset = '1h'",
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("permission denied"), "{e}");
}

/// Kernel patch 0003: with `log_old_value` on a column, every UPDATE logs an old-key tuple with
/// the key and that column (also when only another column changed); without it, none; a
/// malformed `delta_apply_function` is refused at ALTER time.
fn old_value_logging_widens_the_old_key(kernel: &harness::Kernel) {
    let cluster = Cluster::start(kernel, &ClusterOptions::default()).unwrap();
    let n = cluster.node(0);
    n.sql(
        "CREATE TABLE acct(id int PRIMARY KEY, balance bigint, note text); \
           INSERT INTO acct VALUES (1, 100, 'a')",
    )
    .unwrap();
    n.sql("SELECT 'slot' FROM pg_create_logical_replication_slot('td', 'test_decoding')")
        .unwrap();
    let changes = || {
        n.sql("SELECT string_agg(data, E'\\n') FROM pg_logical_slot_get_changes('td', NULL, NULL) WHERE data LIKE 'table%'")
            .unwrap()
    };
    n.sql("UPDATE acct SET note = 'b' WHERE id = 1").unwrap();
    let before = changes();
    assert!(!before.contains("old-key"), "{before}");

    n.sql(
        "ALTER TABLE acct ALTER COLUMN balance SET (log_old_value = true, \
           delta_apply_function = spock.delta_apply)",
    )
    .unwrap();
    n.sql("UPDATE acct SET note = 'c' WHERE id = 1; UPDATE acct SET balance = 150 WHERE id = 1")
        .unwrap();
    let after = changes();
    let lines: Vec<&str> = after.lines().collect();
    assert_eq!(lines.len(), 2, "{after}");
    assert!(
        lines[0].contains("old-key: id[integer]:1 balance[bigint]:100 new-tuple:"),
        "{after}"
    );
    assert!(
        lines[1].contains("old-key: id[integer]:1 balance[bigint]:100 new-tuple: id[integer]:1 balance[bigint]:150"),
        "{after}"
    );
    // Replica identity NOTHING logs no old values at all.
    n.sql("ALTER TABLE acct REPLICA IDENTITY NOTHING; UPDATE acct SET note = 'd'")
        .unwrap();
    assert!(!changes().contains("old-key"));
    assert_eq!(
        n.sql("SELECT attoptions::text FROM pg_attribute WHERE attrelid = 'acct'::regclass AND attname = 'balance'")
            .unwrap(),
        "{log_old_value=true,delta_apply_function=spock.delta_apply}"
    );
    let e = n
        .sql("ALTER TABLE acct ALTER COLUMN note SET (delta_apply_function = 'not a (name')")
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid name syntax"), "{e}");
    let e = n
        .sql("ALTER TABLE acct SET (log_old_value = true)")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unrecognized parameter \"log_old_value\""),
        "{e}"
    );
}

/// Kernel patch 0006: the walsender keeps an output plugin's writes that are not the callback's
/// last in its send buffer and sends them with the last one. spock's plugin marks only a
/// transaction's COMMIT as a last write; pgoutput marks each callback's. Counted in the TCP
/// segments each walsender's socket sent (`ss`) for one-row transactions committed one at a
/// time: native's stream takes four per transaction (BEGIN, INSERT, COMMIT and a keepalive
/// when the walsender waits for the next), spock's three (the whole transaction in one send,
/// and two keepalives: its subscriber answers them in its periodic report, not each one), and
/// seven without the patch (five messages, two keepalives).
fn walsender_sends_a_transactions_start_in_one_segment(kernel: &harness::Kernel) {
    let major = kernel.major;
    let cluster = common::mesh::Mesh::new(2)
        .schema("CREATE TABLE t(id int PRIMARY KEY)")
        .replicate_public()
        .start(kernel);
    let (n1, n2) = (cluster.node(0), cluster.node(1));
    common::mesh::subscribe(n2, "sub_n1_n2", n1, "");
    // Native logical replication of a table outside spock's sets, alongside.
    for n in [n1, n2] {
        n.sql("CREATE SCHEMA nat; CREATE TABLE nat.u(id int PRIMARY KEY)")
            .unwrap();
    }
    n1.sql("CREATE PUBLICATION nat FOR TABLE nat.u").unwrap();
    n2.sql(&format!(
        "CREATE SUBSCRIPTION nat CONNECTION '{}' PUBLICATION nat",
        n1.dsn("postgres")
    ))
    .unwrap();
    // Its table copied (the copy's own walsender gone), both streams run.
    common::wait_for(
        n2,
        "postgres",
        "SELECT count(*) FILTER (WHERE srsubstate = 'r') FROM pg_subscription_rel",
        "1",
        60,
    );
    common::wait_for(
        n1,
        "postgres",
        "SELECT string_agg(plugin, ',' ORDER BY plugin) FROM pg_replication_slots WHERE active",
        "pgoutput,spock_output",
        60,
    );
    let port = |plugin: &str| -> String {
        n1.sql(&format!(
            "SELECT r.client_port FROM pg_stat_replication r \
             JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.plugin = '{plugin}'"
        ))
        .unwrap()
    };
    let sent = |client_port: &str| -> u64 {
        let filter = format!("( sport = :{} and dport = :{client_port} )", n1.port);
        let out = Command::new("ss")
            .args(["-tinH", "state", "established", &filter])
            .output()
            .expect("cannot run ss (iproute2)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_whitespace()
            .find_map(|f| f.strip_prefix("segs_out:"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| {
                panic!("PostgreSQL {major}: no segs_out for port {client_port} in {text:?}")
            })
    };
    const TXNS: u32 = 200;
    // Segments per one-row transaction into `table` sent by the `plugin` walsender. One
    // transaction at a time with a pause, so that none shares a send with another by being
    // decoded in the same run.
    let per_txn = |table: &str, plugin: &str| -> f64 {
        let count = format!("SELECT count(*) FROM {table}");
        n1.sql(&format!("INSERT INTO {table} VALUES (0)")).unwrap();
        common::wait_for(n2, "postgres", &count, "1", 60);
        let client_port = port(plugin);
        let before = sent(&client_port);
        n1.sql(&format!(
            "DO $$ BEGIN FOR i IN 1..{TXNS} LOOP INSERT INTO {table} VALUES (i); COMMIT; \
             PERFORM pg_sleep(0.005); END LOOP; END $$"
        ))
        .unwrap();
        common::wait_for(n2, "postgres", &count, &(TXNS + 1).to_string(), 60);
        (sent(&client_port) - before) as f64 / TXNS as f64
    };
    let spock = per_txn("t", "spock_output");
    let native = per_txn("nat.u", "pgoutput");
    eprintln!(
        "PostgreSQL {major}: TCP segments per transaction: spock {spock:.2}, native {native:.2}"
    );
    assert!(
        // Normally one fewer than native's; without the patch, three more.
        spock < native + 1.0,
        "PostgreSQL {major}: spock's walsender sent {spock:.2} TCP segments per one-row \
         transaction, native logical replication's {native:.2}: a small transaction should go \
         out in one send (kernel patch 0006)"
    );
}
