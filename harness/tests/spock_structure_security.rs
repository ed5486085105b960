//! `synchronize_structure` as another local user sees it. The subscriber's apply worker runs the
//! kernel's pg_dump against the provider and pg_restore into its own database; while it does,
//! every process's command line is sampled (what `ps` shows anyone) and must never hold the
//! provider's password, the server's temp directory must never get a `spock-*` file, and a
//! database name with `=`, a space and a quote must not break the local connection.
//! The provider really demands the password (scram over TCP for the subscription's role), given
//! once in key/value form and once in a URI.

mod common;

// One test per major for each of these (`name::pg17`…); see `common::per_major`.
crate::per_major!(structure_sync_shows_no_password_and_leaves_no_file,);

use harness::{Cluster, ClusterOptions, Node};
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const PASSWORD: &str = "Secr3t-pw";
/// The subscriber's database: `=`, a space and a single quote.
const ODD_DB: &str = "d b='x";
const URI_DB: &str = "uri_db";

/// `s` as an SQL string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `db` as a libpq connection string (psql's `-d` reads a name holding `=` as one).
fn dbname(db: &str) -> String {
    format!("dbname='{}'", db.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The node's connection string for `db`, quoted for libpq.
fn node_dsn(node: &Node, db: &str) -> String {
    format!(
        "host=127.0.0.1 port={} {} user=postgres",
        node.port,
        dbname(db)
    )
}

/// Runs SQL that holds the password from a file, so no test process shows it either.
fn run_secret(node: &Node, db: &str, sql: &str, major: u32) {
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), format!("\\set ON_ERROR_STOP 1\n{sql};\n")).unwrap();
    let (out, ok) = common::psql_file(node, &dbname(db), script.path(), &[]);
    assert!(ok && !out.contains("ERROR"), "pg{major}: {out}");
}

/// What the sampler saw while the syncs ran.
#[derive(Default, Debug)]
struct Seen {
    samples: usize,
    dumps: usize,
    restores: usize,
    /// Command lines holding the password.
    leaks: Vec<String>,
    /// `spock-*` entries in the server's temp directory.
    files: Vec<String>,
    /// The libpq variables (`PG*`) in each program's environment, as `NAME=value` lists.
    dump_env: BTreeSet<Vec<String>>,
    restore_env: BTreeSet<Vec<String>>,
}

/// The `PG*` variables of a process, if it still runs.
fn pg_env(pid: &Path) -> Option<Vec<String>> {
    let raw = std::fs::read(pid.join("environ")).ok()?;
    // A process that is exiting (or not yet exec'd) shows an empty environment: no reading.
    if raw.is_empty() {
        return None;
    }
    let mut vars: Vec<String> = raw
        .split(|&b| b == 0)
        .map(|kv| String::from_utf8_lossy(kv).into_owned())
        .filter(|kv| kv.starts_with("PG"))
        .collect();
    vars.sort();
    // Read at the very start or end of the process, the environment can come back without
    // the variables it was started with: no reading either.
    (!vars.is_empty()).then_some(vars)
}

/// Sets the flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Samples `/proc/*/cmdline` and `tmpdir` until `stop` is set.
fn watch(stop: &AtomicBool, tmpdir: &Path) -> Seen {
    let mut seen = Seen::default();
    while !stop.load(Ordering::SeqCst) {
        seen.samples += 1;
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let line = String::from_utf8_lossy(&raw).replace('\0', " ");
            if line.contains(PASSWORD) && !seen.leaks.contains(&line) {
                seen.leaks.push(line.clone());
            }
            // As the apply worker starts them (other tests may run these programs too).
            if line.contains("/pg_dump --no-password --schema-only") {
                seen.dumps += 1;
                seen.dump_env.extend(pg_env(&entry.path()));
            }
            if line.contains("/pg_restore --no-password --dbname") {
                seen.restores += 1;
                seen.restore_env.extend(pg_env(&entry.path()));
            }
        }
        for entry in std::fs::read_dir(tmpdir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("spock-") && !seen.files.contains(&name) {
                seen.files.push(name);
            }
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    seen
}

/// A `TMPDIR` of this run's servers only, writable by everyone like /tmp, so nothing another
/// run writes to /tmp meanwhile can be mistaken for ours.
fn private_tmpdir() -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix("spock-structure-tmp-")
        .tempdir()
        .unwrap()
        .keep();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    dir
}

/// Two nodes whose servers run with `TMPDIR=tmpdir` (this process's own stays as it is).
fn start(kernel: &harness::Kernel, tmpdir: &Path) -> Cluster {
    let opts = ClusterOptions::default()
        .nodes(2)
        .server_env("TMPDIR", tmpdir.to_str().unwrap());
    Cluster::start(kernel, &opts).unwrap()
}

/// The environment variable `name` of the node's postmaster.
fn server_env(node: &Node, name: &str) -> Option<String> {
    let pid = std::fs::read_to_string(node.data.join("postmaster.pid")).unwrap();
    let pid = pid.lines().next().unwrap().trim().to_string();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    environ
        .split(|&b| b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(String::from))
}

/// The provider: a superuser `spock_prov` that must log in with its password over TCP, a
/// schema (enum, table with check and index, 150 tables in another schema to keep pg_dump busy
/// for a while) and the public tables in the default set.
fn provider(p: &Node, major: u32) {
    run_secret(
        p,
        "postgres",
        &format!(
            "CREATE ROLE spock_prov LOGIN SUPERUSER PASSWORD {}",
            lit(PASSWORD)
        ),
        major,
    );
    let hba = p.data.join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("host all spock_prov 127.0.0.1/32 scram-sha-256\n{rules}"),
    )
    .unwrap();
    p.sql("SELECT pg_reload_conf()").unwrap();
    common::wait_for(
        p,
        "postgres",
        "SELECT count(*) FROM pg_hba_file_rules WHERE 'spock_prov' = ANY (user_name) AND error IS NULL",
        "1",
        10,
    );
    let e = p
        .sql_as("spock_prov", "postgres", "SELECT 1")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("password"),
        "pg{major}: spock_prov logs in without its password: {e}"
    );

    p.sql("CREATE EXTENSION spock").unwrap();
    p.sql(&format!(
        "SELECT spock.node_create('n1', {})",
        lit(&p.dsn("postgres"))
    ))
    .unwrap();
    p.sql(
        "CREATE TYPE color AS ENUM ('red', 'blue'); \
         CREATE TABLE shapes(id int PRIMARY KEY, c color NOT NULL, area numeric CHECK (area > 0)); \
         CREATE INDEX shapes_by_color ON shapes(c); \
         INSERT INTO shapes SELECT g, 'red', g FROM generate_series(1, 1000) g; \
         CREATE SCHEMA filler; \
         DO $$ BEGIN FOR i IN 1..150 LOOP \
           EXECUTE format('CREATE TABLE filler.t%s(id int PRIMARY KEY, v text UNIQUE)', i); \
         END LOOP; END $$; \
         SELECT spock.repset_add_all_tables('default', ARRAY['public'])",
    )
    .unwrap();
}

/// Checks `db` on the subscriber has the provider's schema and rows.
fn check_copy(p: &Node, s: &Node, db: &str, major: u32) {
    let on = |sql: &str| s.sql_in(&dbname(db), sql).unwrap();
    let indexes = "SELECT string_agg(indexdef, '; ' ORDER BY indexname) FROM pg_indexes WHERE tablename = 'shapes'";
    assert_eq!(on(indexes), p.sql(indexes).unwrap(), "pg{major} {db}");
    assert_eq!(
        on("SELECT count(*), sum(area), min(c::text) FROM shapes"),
        "1000|500500|red",
        "pg{major} {db}"
    );
    assert_eq!(
        on("SELECT count(*) FROM pg_constraint WHERE conname = 'shapes_area_check'"),
        "1",
        "pg{major} {db}"
    );
    assert_eq!(
        on("SELECT count(*) FROM pg_indexes WHERE schemaname = 'filler'"),
        "300",
        "pg{major} {db}: post-data of the filler tables"
    );
}

fn structure_sync_shows_no_password_and_leaves_no_file(kernel: &harness::Kernel) {
    // This test watches every pg_dump/pg_restore on the machine, so its runs for the different
    // majors take turns.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let major = kernel.major;
    let tmpdir = private_tmpdir();
    let cluster = start(kernel, &tmpdir);
    let (p, s) = (cluster.node(0), cluster.node(1));
    assert_eq!(
        server_env(s, "TMPDIR").as_deref(),
        Some(tmpdir.to_str().unwrap()),
        "pg{major}: the subscriber's temp directory"
    );
    provider(p, major);

    let kv = format!(
        "host=127.0.0.1 port={} dbname=postgres user=spock_prov password='{PASSWORD}'",
        p.port
    );
    let uri = format!(
        "postgresql://spock_prov:{PASSWORD}@127.0.0.1:{}/postgres?application_name=uri%20sub",
        p.port
    );
    for (i, db) in [ODD_DB, URI_DB].into_iter().enumerate() {
        s.sql(&format!("CREATE DATABASE \"{db}\"")).unwrap();
        let sql = format!(
            "CREATE EXTENSION spock; SELECT spock.node_create('n{}', {})",
            i + 2,
            lit(&node_dsn(s, db))
        );
        s.sql_in(&dbname(db), &sql).unwrap();
    }

    let stop = AtomicBool::new(false);
    let (seen, failed) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| watch(&stop, &tmpdir));
        // Stops the sampler however this closure ends (the scope joins it before a panic
        // goes on).
        let stopper = StopOnDrop(&stop);
        let mut failed = Vec::new();
        for (db, sub, dsn) in [(ODD_DB, "sub_kv", &kv), (URI_DB, "sub_uri", &uri)] {
            run_secret(
                s,
                db,
                &format!(
                    "SELECT spock.sub_create({}, {}, synchronize_structure := true, \
                     synchronize_data := true)",
                    lit(sub),
                    lit(dsn)
                ),
                major,
            );
            let wait = format!(
                "SET statement_timeout = '120s'; SELECT spock.sub_wait_for_sync({})",
                lit(sub)
            );
            if let Err(e) = s.sql_in(&dbname(db), &wait) {
                failed.push(format!("{db}: {e}"));
            }
        }
        drop(stopper);
        (sampler.join().unwrap(), failed)
    });
    eprintln!("pg{major}: {seen:?}");
    // What a local user could have seen comes first, whether the syncs worked or not.
    assert!(
        seen.leaks.is_empty(),
        "pg{major}: the password showed on command lines: {:?}",
        seen.leaks
    );
    assert!(
        seen.files.is_empty(),
        "pg{major}: files appeared in the server's temp directory: {:?}",
        seen.files
    );
    assert!(
        failed.is_empty(),
        "pg{major}: sync failed: {failed:?}\nsubscriber log:\n{}",
        s.log_tail(40)
    );
    // Each sync runs pg_dump and pg_restore twice (pre-data, post-data); the sampler must
    // have watched them, or the check above proves nothing.
    assert!(
        seen.dumps > 0 && seen.restores > 0,
        "pg{major}: the sampler never saw pg_dump/pg_restore run: {seen:?}"
    );
    // Each program gets exactly its libpq variables: the password only through pg_dump's
    // environment (readable by the server account and root), the local database, role,
    // socket directory and port as separate parameters, nothing of the server's own `PG*`
    // variables (pg_ctl gives it PG_GRANDPARENT_PID).
    assert!(
        server_env(s, "PG_GRANDPARENT_PID").is_some(),
        "pg{major}: the server has no PG* variable of its own"
    );
    let socket_dir = s.sql("SHOW unix_socket_directories").unwrap();
    let dump_env = BTreeSet::from([vec![format!("PGPASSWORD={PASSWORD}")]]);
    assert_eq!(seen.dump_env, dump_env, "pg{major}: pg_dump's environment");
    let restore_env = |db: &str| {
        vec![
            format!("PGDATABASE={db}"),
            format!("PGHOST={socket_dir}"),
            "PGOPTIONS=-c spock.enable_ddl_replication=off -c spock.include_ddl_repset=off"
                .to_string(),
            format!("PGPORT={}", s.port),
            "PGUSER=postgres".to_string(),
        ]
    };
    assert!(
        seen.restore_env
            .iter()
            .all(|e| *e == restore_env(ODD_DB) || *e == restore_env(URI_DB))
            && seen.restore_env.contains(&restore_env(ODD_DB)),
        "pg{major}: pg_restore's environment: {:?}",
        seen.restore_env
    );
    let left: Vec<_> = std::fs::read_dir(&tmpdir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("spock-"))
        .collect();
    assert!(left.is_empty(), "pg{major}: left in TMPDIR: {left:?}");

    for db in [ODD_DB, URI_DB] {
        check_copy(p, s, db, major);
    }
    p.sql("INSERT INTO shapes VALUES (1001, 'blue', 5)")
        .unwrap();
    for db in [ODD_DB, URI_DB] {
        common::wait_for(
            s,
            &dbname(db),
            "SELECT count(*), string_agg(DISTINCT c::text, ',' ORDER BY c::text) FROM shapes",
            "1001|blue,red",
            30,
        );
        assert_eq!(
            s.sql_in(&dbname(db), "SELECT status FROM spock.sub_show_status()")
                .unwrap(),
            "replicating",
            "pg{major} {db}"
        );
    }
    for node in [p, s] {
        let log = std::fs::read_to_string(&node.log).unwrap();
        assert!(
            !log.contains(PASSWORD),
            "pg{major}: the password is in {}'s log",
            node.name
        );
    }
    cluster.stop().unwrap();
    drop(cluster);
    std::fs::remove_dir_all(&tmpdir).unwrap();
}
