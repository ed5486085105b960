//! lolor: large objects in replicable tables, against real servers of every major of the run.
//!
//! The server-independent arithmetic of the extension (`lolor/src/logic.rs`) is compiled into
//! this test binary too, so its unit tests run here without a server.

mod common;

// One test per major for each of these (`name::pg17`…); see `common::per_major`.
crate::per_major!(
    install_takes_over_the_builtins_and_enable_disable_swap_them,
    io_semantics_and_errors_match_native_large_objects,
    objects_from_0_bytes_to_50_mb_through_sql_and_the_libpq_client_api,
    oids_come_from_lolor_node_and_collisions_are_detected,
    privileges_and_server_files_are_guarded_like_native_large_objects,
    two_nodes_replicate_large_objects_through_native_logical_replication,
    dump_and_restore_keep_the_objects,
    loads_preloaded_next_to_other_libraries_and_tracks_role_ownership,
    large_objects_replicate_through_spock,
);

#[allow(dead_code)]
#[path = "../../lolor/src/logic.rs"]
mod logic;

use harness::{Cluster, ClusterOptions, Kernel, Node};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A directory the server account can read and write.
fn shared_dir(cluster: &Cluster, name: &str) -> PathBuf {
    let dir = cluster.dir().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// Deterministic incompressible bytes.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn write_file(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

fn start(kernel: &Kernel, nodes: usize, preload: Option<&str>) -> Cluster {
    Cluster::start(
        kernel,
        &ClusterOptions::default()
            .nodes(nodes)
            .preload(preload)
            .setting("lolor.node", "1"),
    )
    .unwrap()
}

#[track_caller]
fn err(r: anyhow::Result<String>) -> String {
    r.expect_err("expected an error").to_string()
}

/// The 20 signatures lolor takes over.
const SIGNATURES: &[(&str, &str)] = &[
    ("lo_open", "oid, integer"),
    ("lo_close", "integer"),
    ("lo_creat", "integer"),
    ("lo_create", "oid"),
    ("loread", "integer, integer"),
    ("lowrite", "integer, bytea"),
    ("lo_export", "oid, text"),
    ("lo_from_bytea", "oid, bytea"),
    ("lo_get", "oid"),
    ("lo_get", "oid, bigint, integer"),
    ("lo_import", "text"),
    ("lo_import", "text, oid"),
    ("lo_lseek", "integer, integer, integer"),
    ("lo_lseek64", "integer, bigint, integer"),
    ("lo_put", "oid, bigint, bytea"),
    ("lo_tell", "integer"),
    ("lo_tell64", "integer"),
    ("lo_truncate", "integer, integer"),
    ("lo_truncate64", "integer, bigint"),
    ("lo_unlink", "oid"),
];

/// `name(args)=prosrc` of every pg_catalog function named like a large-object function.
fn catalog_functions(n: &Node) -> Vec<String> {
    let out = n
        .sql(
            "SELECT proname || '(' || pg_get_function_identity_arguments(oid) || ')=' || prosrc \
             FROM pg_proc WHERE pronamespace = 'pg_catalog'::regnamespace \
             AND proname ~ '^(lo|lolor)_|^lo(read|write)' ORDER BY 1",
        )
        .unwrap();
    out.lines().map(String::from).collect()
}

fn expected_functions(prefix: &str, suffix: &str, lolor_src: bool) -> Vec<String> {
    let mut v: Vec<String> = SIGNATURES
        .iter()
        .map(|(name, args)| {
            let src = if lolor_src {
                let sym = match (*name, *args) {
                    ("lo_get", "oid, bigint, integer") => "lo_get_fragment".to_string(),
                    ("lo_import", "text, oid") => "lo_import_with_oid".to_string(),
                    _ => name.to_string(),
                };
                format!("lolor_{sym}")
            } else {
                // Core's C symbols.
                match (*name, *args) {
                    ("lo_get", "oid, bigint, integer") => "be_lo_get_fragment".into(),
                    ("lo_import", "text, oid") => "be_lo_import_with_oid".into(),
                    ("loread", _) => "be_loread".into(),
                    ("lowrite", _) => "be_lowrite".into(),
                    _ => format!("be_{name}"),
                }
            };
            format!("{prefix}{name}{suffix}({args})={src}")
        })
        .collect();
    v.sort();
    v
}

fn install_takes_over_the_builtins_and_enable_disable_swap_them(kernel: &harness::Kernel) {
    let cluster = start(kernel, 1, None);
    let n = cluster.node(0);
    // A native large object from before the extension.
    n.sql("SELECT lo_from_bytea(4242, 'native')").unwrap();
    n.sql("CREATE EXTENSION lolor").unwrap();

    // Tables, keys and the pg_dump marking.
    let cols = n
        .sql(
            "SELECT attrelid::regclass || '.' || attname || ':' || atttypid::regtype || ':' || attnotnull \
             FROM pg_attribute WHERE attrelid IN ('lolor.pg_largeobject'::regclass, \
             'lolor.pg_largeobject_metadata'::regclass) AND attnum > 0 ORDER BY attrelid::regclass::text, attnum",
        )
        .unwrap();
    assert_eq!(
        cols,
        "lolor.pg_largeobject.loid:oid:true\nlolor.pg_largeobject.pageno:integer:true\n\
         lolor.pg_largeobject.data:bytea:true\nlolor.pg_largeobject_metadata.oid:oid:true\n\
         lolor.pg_largeobject_metadata.lomowner:oid:true\nlolor.pg_largeobject_metadata.lomacl:aclitem[]:false"
    );
    let keys = n
        .sql(
            "SELECT indexrelid::regclass || ' ' || pg_get_indexdef(indexrelid) FROM pg_index \
             WHERE indrelid IN ('lolor.pg_largeobject'::regclass, 'lolor.pg_largeobject_metadata'::regclass) \
             AND indisprimary ORDER BY 1",
        )
        .unwrap();
    assert_eq!(
        keys,
        "lolor.pg_largeobject_metadata_pkey CREATE UNIQUE INDEX pg_largeobject_metadata_pkey ON lolor.pg_largeobject_metadata USING btree (oid)\n\
         lolor.pg_largeobject_pkey CREATE UNIQUE INDEX pg_largeobject_pkey ON lolor.pg_largeobject USING btree (loid, pageno)"
    );
    let dumped = n
        .sql("SELECT array_agg(c::regclass::text ORDER BY c::regclass::text) FROM pg_extension, unnest(extconfig) c WHERE extname = 'lolor'")
        .unwrap();
    assert_eq!(
        dumped,
        "{lolor.pg_largeobject,lolor.pg_largeobject_metadata}"
    );

    // The drop triggers fire also under session_replication_role = replica.
    assert_eq!(
        n.sql("SELECT string_agg(evtname || ':' || evtevent || ':' || evtenabled::text || ':' || evttags::text, ' ' ORDER BY evtname) FROM pg_event_trigger")
            .unwrap(),
        "lo_on_drop_extension:ddl_command_start:A:{\"DROP EXTENSION\"} \
         lolor_on_drop_owned:ddl_command_start:A:{\"DROP SCHEMA\",\"DROP OWNED\"}"
    );

    // Enabled: lolor's functions carry the built-in names, core's are <name>_orig.
    assert_eq!(n.sql("SELECT lolor.is_enabled()").unwrap(), "t");
    assert_eq!(catalog_functions(n), {
        let mut v = expected_functions("", "", true);
        v.extend(expected_functions("", "_orig", false));
        v.push("lo_on_drop_extension()=lolor_on_drop_extension".into());
        v.sort();
        v
    });
    // Native objects are invisible to lo_* but reachable through *_orig.
    assert_eq!(
        err(n.sql("SELECT lo_get(4242)")),
        "ERROR:  large object 4242 does not exist"
    );
    assert_eq!(
        n.sql("SELECT convert_from(lo_get_orig(4242), 'UTF8')")
            .unwrap(),
        "native"
    );
    n.sql("SELECT lo_from_bytea(4243, 'lolor')").unwrap();
    assert_eq!(
        n.sql("SELECT oid FROM lolor.pg_largeobject_metadata")
            .unwrap(),
        "4243"
    );
    assert_eq!(
        n.sql("SELECT count(*) FROM pg_largeobject_metadata WHERE oid = 4243")
            .unwrap(),
        "0"
    );

    // Server-file functions are never executable by PUBLIC, in either state.
    let server_file_acls = |n: &Node| {
        n.sql(
            "SELECT string_agg(proname || ':' || coalesce(proacl::text, 'PUBLIC'), ' ' ORDER BY proname, proacl::text) \
             FROM pg_proc WHERE pronamespace = 'pg_catalog'::regnamespace \
             AND proname IN ('lo_import', 'lo_export', 'lolor_lo_import', 'lolor_lo_export', 'lo_import_orig', 'lo_export_orig')",
        )
        .unwrap()
    };
    let acl = "{postgres=X/postgres}";
    assert_eq!(
        server_file_acls(n),
        format!(
            "lo_export:{acl} lo_export_orig:{acl} lo_import:{acl} lo_import:{acl} lo_import_orig:{acl} lo_import_orig:{acl}"
        )
    );

    // Disable: names swap back, native storage is visible again.
    let (out, ok) = run(n, "SELECT lolor.disable(); SELECT lolor.disable();");
    assert!(ok, "{out}");
    assert_eq!(out, "t\nNOTICE:  lolor still not enabled\nf\n");
    assert_eq!(n.sql("SELECT lolor.is_enabled()").unwrap(), "f");
    assert_eq!(catalog_functions(n), {
        let mut v = expected_functions("", "", false);
        v.extend(expected_functions("lolor_", "", true));
        v.push("lo_on_drop_extension()=lolor_on_drop_extension".into());
        v.sort();
        v
    });
    assert_eq!(
        server_file_acls(n),
        format!(
            "lo_export:{acl} lo_import:{acl} lo_import:{acl} lolor_lo_export:{acl} lolor_lo_import:{acl} lolor_lo_import:{acl}"
        )
    );
    assert_eq!(
        n.sql(
            "SELECT convert_from(lo_get(4242), 'UTF8'), convert_from(lolor_lo_get(4243), 'UTF8')"
        )
        .unwrap(),
        "native|lolor"
    );
    assert_eq!(
        err(n.sql("SELECT lo_get(4243)")),
        "ERROR:  large object 4243 does not exist"
    );

    // Enable again (and once more: a no-op with its notice); the cycle repeats.
    let (out, ok) = run(
        n,
        "SELECT lolor.enable(); SELECT lolor.enable(); SELECT lolor.disable(); SELECT lolor.enable();",
    );
    assert!(ok, "{out}");
    assert_eq!(out, "t\nNOTICE:  lolor still not disabled\nf\nt\nt\n");
    assert_eq!(
        n.sql("SELECT convert_from(lo_get(4243), 'UTF8')").unwrap(),
        "lolor"
    );

    // An inconsistent state is reported.
    n.sql("ALTER FUNCTION pg_catalog.lo_open_orig(oid, integer) RENAME TO lo_open_x")
        .unwrap();
    assert_eq!(
        err(n.sql("SELECT lolor.is_enabled()")),
        "ERROR:  lolor is in inconsistent state\nCONTEXT:  PL/pgSQL function lolor.is_enabled() line 7 at RAISE"
    );
    n.sql("ALTER FUNCTION pg_catalog.lo_open_x(oid, integer) RENAME TO lo_open_orig")
        .unwrap();

    // DROP EXTENSION refuses while lolor stores objects (they would be lost).
    assert_eq!(
        err(n.sql("DROP EXTENSION lolor")),
        "ERROR:  cannot drop extension lolor because it still stores large objects\n\
         DETAIL:  lolor.pg_largeobject_metadata holds 1 large object; dropping the extension would destroy them."
    );
    assert_eq!(
        err(n.sql("DROP SCHEMA lolor CASCADE")),
        "ERROR:  cannot drop extension lolor because it still stores large objects\n\
         DETAIL:  lolor.pg_largeobject_metadata holds 1 large object; dropping the extension would destroy them."
    );
    assert_eq!(n.sql("SELECT lolor.is_enabled()").unwrap(), "t");
    n.sql("SELECT lo_unlink(4243)").unwrap();

    // Dropped while enabled: the built-ins get their names back.
    n.sql("DROP EXTENSION lolor").unwrap();
    assert_eq!(catalog_functions(n), expected_functions("", "", false));
    n.sql("RESET lolor.node").unwrap();
    let builtin = n
        .sql("SET lolor.node = 0; SELECT lo_creat(-1) > 0, convert_from(lo_get(4242), 'UTF8')")
        .unwrap();
    assert_eq!(builtin, "t|native");

    // Dropped while disabled, and through DROP SCHEMA ... CASCADE.
    n.sql("CREATE EXTENSION lolor").unwrap();
    n.sql("SELECT lolor.disable()").unwrap();
    n.sql("DROP EXTENSION lolor").unwrap();
    assert_eq!(catalog_functions(n), expected_functions("", "", false));
    n.sql("CREATE EXTENSION lolor").unwrap();
    n.sql("DROP SCHEMA lolor CASCADE").unwrap();
    assert_eq!(catalog_functions(n), expected_functions("", "", false));
    assert_eq!(
        n.sql("SELECT convert_from(lo_get(4242), 'UTF8')").unwrap(),
        "native"
    );
    cluster.stop().unwrap();
}

/// Runs `sql` through psql and returns stdout and stderr interleaved (notices included).
fn run(n: &Node, sql: &str) -> (String, bool) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), sql).unwrap();
    let (out, ok) = common::psql_file(n, "postgres", file.path(), &["-A", "-t", "-q"]);
    let prefix = format!("psql:{}:", file.path().display());
    let out = out
        .lines()
        .map(|l| match l.strip_prefix(&prefix) {
            // "psql:<file>:<line>: NOTICE: ..." -> "NOTICE: ..."
            Some(rest) => rest.split_once(": ").map_or(rest, |(_, m)| m),
            None => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    (out, ok)
}

/// psql's `\lo_import` (libpq's client-side import) as `user`; returns the new OID.
fn client_import(n: &Node, user: &str, file: &Path) -> u32 {
    let port = n.port.to_string();
    let out = std::process::Command::new(n.kernel().bin("psql"))
        .args([
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
        ])
        .args(["-U", user, "-d", "postgres", "-c"])
        .arg(format!("\\lo_import '{}'", file.display()))
        .envs(n.kernel().env())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.trim()
        .strip_prefix("lo_import ")
        .unwrap_or_else(|| panic!("unexpected \\lo_import output {text:?}"))
        .parse()
        .unwrap()
}

/// A script exercising descriptors, seeks, holes, truncation, subtransactions, read-only
/// transactions and the error paths; run against lolor and against native large objects, the
/// outputs must be identical (up to the name of the unique index).
const SEMANTICS_SCRIPT: &str = r#"
\set VERBOSITY default
\set ON_ERROR_ROLLBACK on
SELECT lo_create(1000);
SELECT lo_create(1000);
BEGIN;
SELECT lo_open(1000, 393216) AS fd \gset
SELECT lowrite(:fd, 'abcdefghij');
SELECT lo_tell(:fd), lo_tell64(:fd);
SELECT lo_lseek(:fd, 0, 0);
SELECT loread(:fd, 4);
SELECT loread(:fd, -1);
SELECT lo_lseek64(:fd, 5000, 1);
SELECT lowrite(:fd, 'XYZ');
SELECT lowrite(:fd, '');
SELECT lo_lseek(:fd, 0, 2);
SELECT lo_lseek(:fd, 0, 0);
SELECT length(loread(:fd, 100000)), md5(loread(:fd, 1));
SELECT lo_lseek(:fd, 3, 0), encode(loread(:fd, 10), 'hex');
SELECT lo_lseek(:fd, 2040, 0), encode(loread(:fd, 20), 'hex');
SELECT lo_truncate(:fd, 3000);
SELECT lo_lseek(:fd, 0, 2);
SELECT lo_truncate64(:fd, 8000);
SELECT lo_lseek(:fd, 0, 2);
SELECT lo_lseek(:fd, 7990, 0), encode(loread(:fd, 100), 'hex');
SELECT lo_truncate(:fd, 2);
SELECT lo_lseek(:fd, 0, 2);
SELECT lo_lseek(:fd, -1, 0);
SELECT lo_lseek(:fd, 1, 7);
SELECT lo_lseek64(:fd, 4398046511104, 0);
SELECT lo_lseek64(:fd, 4398046509056, 0);
SELECT lo_tell(:fd);
SELECT lo_lseek(:fd, 0, 1);
SELECT lo_tell64(:fd);
SELECT lowrite(:fd, 'x');
SELECT lo_truncate(:fd, -1);
SELECT lo_close(:fd);
COMMIT;
BEGIN;
SELECT lo_open(1000, 262144) AS rfd \gset
SELECT lowrite(:rfd, 'x');
ROLLBACK;
BEGIN;
SELECT lo_open(1000, 262144) AS rfd \gset
SELECT lo_truncate(:rfd, 0);
ROLLBACK;
BEGIN;
SELECT lo_open(1000, 131072) AS wfd \gset
SELECT loread(:wfd, 1);
SELECT lo_close(:wfd);
SELECT lo_close(:wfd);
SELECT lo_close(-1);
SELECT loread(99, 1);
SELECT lo_open(1000, 0);
ROLLBACK;
SELECT lo_open(1000, 1);
SELECT lo_open(1001, 262144);
SELECT lo_get(1000), lo_get(1000, 1, 1), lo_get(1000, 10, 5);
SELECT lo_get(1000, 0, -1);
SELECT lo_get(1001);
SELECT lo_put(1000, 4, 'zz');
SELECT lo_get(1000);
SELECT lo_put(1000, 2046, 'abcdef');
SELECT length(lo_get(1000)), lo_get(1000, 2040, 20);
SELECT lo_put(1000, -1, 'x');
SELECT lo_put(1001, 0, 'x');
SELECT lo_from_bytea(1002, 'from bytea');
SELECT lo_from_bytea(1002, 'again');
SELECT lo_get(1002);
SELECT lo_unlink(1002);
SELECT lo_unlink(1002);
SELECT lo_get(1002);
BEGIN;
SELECT lo_open(1000, 262144) AS a, lo_open(1000, 131072) AS b \gset
SELECT :a, :b;
SAVEPOINT s1;
SELECT lo_open(1000, 262144) AS c \gset
SELECT :c;
ROLLBACK TO s1;
SELECT lo_tell(:c);
SELECT lo_open(1000, 262144);
SAVEPOINT s2;
SELECT lo_open(1000, 262144) AS d \gset
RELEASE s2;
SELECT lo_tell(:d);
SELECT lo_unlink(1000);
SELECT lo_tell(:a);
ROLLBACK;
BEGIN;
SELECT lo_open(1000, 262144) AS e \gset
COMMIT;
SELECT lo_tell(:e);
BEGIN;
SELECT lo_open(1000, 262144) AS snap \gset
SELECT lo_put(1000, 0, 'SNAP');
SELECT encode(loread(:snap, 4), 'escape'), encode(lo_get(1000, 0, 4), 'escape');
COMMIT;
SELECT lo_create(1003);
SELECT lo_get(1003), length(lo_get(1003));
BEGIN;
SELECT lo_open(1003, 131072) AS f \gset
SELECT lo_lseek(:f, 0, 2), lo_truncate(:f, 0), lo_lseek(:f, 0, 2);
SELECT lo_truncate(:f, 4096), lo_lseek(:f, 0, 2);
COMMIT;
SELECT md5(lo_get(1003)), length(lo_get(1003));
BEGIN;
SELECT lo_open(1003, 131072) AS g \gset
SELECT lo_lseek64(:g, 3000000000, 0);
SELECT lo_lseek(:g, 0, 1);
SELECT lo_tell(:g);
SELECT lo_tell64(:g);
SELECT lowrite(:g, 'far');
SELECT lo_lseek64(:g, 0, 2);
SELECT lo_truncate64(:g, 2999999999);
SELECT lo_lseek64(:g, 0, 2);
COMMIT;
SELECT length(lo_get(1003, 2999999990, 100)), encode(lo_get(1003, 2999999990, 100), 'hex');
SELECT lo_get(1003);
SELECT lo_get(1003, 0, 2000000000);
SELECT lo_unlink(1003), lo_unlink(1000);
SELECT lo_unlink(1000);
SELECT lo_from_bytea(1004, decode(repeat('ab', 5000), 'hex')), lo_from_bytea(1005, '');
SELECT length(lo_get(1004)), md5(lo_get(1004)), length(lo_get(1005));
SELECT lo_unlink(1004), lo_unlink(1005);
"#;

/// Read-only transactions reject every writing function (core does so since 16; lolor on every
/// major).
const READ_ONLY_SCRIPT: &str = r#"
\set VERBOSITY default
\set ON_ERROR_ROLLBACK on
SELECT lo_from_bytea(1000, 'ro');
BEGIN READ ONLY;
SELECT lo_get(1000);
SELECT lo_creat(-1);
ROLLBACK;
BEGIN READ ONLY;
SELECT lo_open(1000, 131072);
ROLLBACK;
BEGIN READ ONLY;
SELECT lo_unlink(1000);
ROLLBACK;
BEGIN READ ONLY;
SELECT lo_put(1000, 0, 'x');
ROLLBACK;
BEGIN READ ONLY;
SELECT lo_from_bytea(0, 'x');
ROLLBACK;
BEGIN READ ONLY;
SELECT lo_open(1000, 262144) AS ro \gset
SELECT lowrite(:ro, 'x');
SELECT lo_truncate(:ro, 0);
ROLLBACK;
SELECT lo_unlink(1000);
"#;

fn io_semantics_and_errors_match_native_large_objects(kernel: &harness::Kernel) {
    let cluster = start(kernel, 1, Some("lolor"));
    let n = cluster.node(0);
    n.sql("CREATE DATABASE with_lolor").unwrap();
    n.sql("CREATE DATABASE native").unwrap();
    n.sql_in("with_lolor", "CREATE EXTENSION lolor").unwrap();
    let script = cluster.dir().join("semantics.sql");
    std::fs::write(&script, SEMANTICS_SCRIPT).unwrap();
    let (ours, _) = common::psql_file(n, "with_lolor", &script, &[]);
    let (native, _) = common::psql_file(n, "native", &script, &[]);
    assert!(
        native.contains("ERROR:  duplicate key value violates unique constraint \"pg_largeobject_metadata_oid_index\""),
        "{native}"
    );
    let ours_normalised = ours.replace(
        "\"pg_largeobject_metadata_pkey\"",
        "\"pg_largeobject_metadata_oid_index\"",
    );
    if ours_normalised != native {
        let diff: Vec<String> = ours_normalised
            .lines()
            .zip(native.lines())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .take(10)
            .map(|(i, (a, b))| format!("line {}: lolor {a:?} native {b:?}", i + 1))
            .collect();
        panic!(
            "lolor and native outputs differ:\n{}\n--- lolor output ---\n{ours}",
            diff.join("\n")
        );
    }
    // Sanity: the script did produce the results it is meant to compare.
    assert!(
        ours.contains("invalid large object seek target: -1"),
        "{ours}"
    );
    assert!(
        ours.contains("large object descriptor 0 was not opened for writing"),
        "{ours}"
    );
    assert!(ours.contains("\\x616200007a7a"), "{ours}");

    let script = cluster.dir().join("read-only.sql");
    std::fs::write(&script, READ_ONLY_SCRIPT).unwrap();
    let (ours, _) = common::psql_file(n, "with_lolor", &script, &["-A", "-t", "-q"]);
    let errors: Vec<&str> = ours
        .lines()
        .filter_map(|l| l.split_once("ERROR:  ").map(|(_, e)| e))
        .collect();
    assert_eq!(
        errors,
        [
            "cannot execute lo_creat() in a read-only transaction",
            "cannot execute lo_open(INV_WRITE) in a read-only transaction",
            "cannot execute lo_unlink() in a read-only transaction",
            "cannot execute lo_put() in a read-only transaction",
            "cannot execute lo_from_bytea() in a read-only transaction",
            "cannot execute lowrite() in a read-only transaction",
            "cannot execute lo_truncate() in a read-only transaction",
        ],
        "{ours}"
    );
    assert!(ours.contains("\\x726f"), "reads work: {ours}");
    if kernel.major >= 16 {
        let (native, _) = common::psql_file(n, "native", &script, &["-A", "-t", "-q"]);
        assert_eq!(ours, native);
    }

    // Every object was unlinked, pages included.
    assert_eq!(
        n.sql_in(
            "with_lolor",
            "SELECT (SELECT count(*) FROM lolor.pg_largeobject) + (SELECT count(*) FROM lolor.pg_largeobject_metadata)"
        )
        .unwrap(),
        "0"
    );
    cluster.stop().unwrap();
}

fn objects_from_0_bytes_to_50_mb_through_sql_and_the_libpq_client_api(kernel: &harness::Kernel) {
    let cluster = start(kernel, 1, None);
    let n = cluster.node(0);
    n.sql("CREATE EXTENSION lolor").unwrap();
    let dir = shared_dir(&cluster, "files");
    let sizes = [0usize, 1, 2047, 2048, 2049, 100_000, 50 * 1024 * 1024];
    for (i, &size) in sizes.iter().enumerate() {
        let data = pseudo_random(size, i as u64 + 1);
        let input = dir.join(format!("in{i}.bin"));
        write_file(&input, &data);
        let path = input.display();

        // Client side: psql's \lo_import / \lo_export (libpq's lo_creat, lo_open, lowrite,
        // loread, lo_close over the fast-path protocol).
        let oid = client_import(n, "postgres", &input);
        assert_eq!(oid % 16, 1, "generated OIDs carry lolor.node = 1: {oid}");
        assert_eq!(
            n.sql(&format!(
                "SELECT count(*) FROM lolor.pg_largeobject_metadata WHERE oid = {oid}"
            ))
            .unwrap(),
            "1"
        );
        let pages = n
            .sql(&format!(
                "SELECT count(*) FROM lolor.pg_largeobject WHERE loid = {oid}"
            ))
            .unwrap();
        assert_eq!(pages, size.div_ceil(2048).to_string(), "size {size}");
        let output = dir.join(format!("out{i}.bin"));
        common::psql_as(
            n,
            "postgres",
            "postgres",
            &format!("\\lo_export {oid} '{}'", output.display()),
        )
        .unwrap();
        assert!(
            std::fs::read(&output).unwrap() == data,
            "size {size}: exported bytes differ"
        );

        // Server side: SQL functions against the file's contents.
        let same = n
            .sql(&format!(
                "SELECT lo_get({oid}) = pg_read_binary_file('{path}'), \
                 length(lo_get({oid})), lo_get({oid}, 1, 3) = substring(pg_read_binary_file('{path}') FROM 2 FOR 3)"
            ))
            .unwrap();
        assert_eq!(same, format!("t|{size}|t"));
        let copy = n
            .sql(&format!(
                "SELECT lo_from_bytea(0, pg_read_binary_file('{path}'))"
            ))
            .unwrap();
        assert_eq!(
            n.sql(&format!(
                "SELECT sha256(lo_get({copy})) = sha256(pg_read_binary_file('{path}'))"
            ))
            .unwrap(),
            "t"
        );
        // Server-file functions (superuser).
        let server_copy = n.sql(&format!("SELECT lo_import('{path}')")).unwrap();
        let exported = dir.join(format!("srv{i}.bin"));
        assert_eq!(
            n.sql(&format!(
                "SELECT lo_export({server_copy}, '{}')",
                exported.display()
            ))
            .unwrap(),
            "1"
        );
        assert!(
            std::fs::read(&exported).unwrap() == data,
            "size {size}: lo_export differs"
        );
        let mode = std::fs::metadata(&exported).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);

        if size == 50 * 1024 * 1024 {
            // Seek, partial overwrite across page borders, truncate, on the big object.
            let script = format!(
                "BEGIN;\n\
                 SELECT lo_open({oid}, 393216) AS fd \\gset\n\
                 SELECT lo_lseek64(:fd, 0, 2);\n\
                 SELECT lo_lseek64(:fd, 30000000, 0);\n\
                 SELECT lowrite(:fd, decode(repeat('5a', 10000), 'hex'));\n\
                 SELECT lo_tell64(:fd);\n\
                 SELECT lo_truncate64(:fd, 40000007);\n\
                 SELECT lo_lseek64(:fd, 0, 2);\n\
                 SELECT lo_lseek64(:fd, 29999998, 0);\n\
                 SELECT encode(loread(:fd, 4), 'hex');\n\
                 SELECT lo_close(:fd);\n\
                 COMMIT;\n"
            );
            let (out, ok) = run(n, &script);
            assert!(ok, "{out}");
            let head = hex(&data[29_999_998..30_000_000]);
            assert_eq!(
                out,
                format!(
                    "52428800\n30000000\n10000\n30010000\n0\n40000007\n29999998\n{head}5a5a\n0\n"
                )
            );
            let mut expect = data[..40_000_007].to_vec();
            expect[30_000_000..30_010_000].fill(0x5a);
            let expected_file = dir.join("expected.bin");
            write_file(&expected_file, &expect);
            assert_eq!(
                n.sql(&format!(
                    "SELECT sha256(lo_get({oid})) = sha256(pg_read_binary_file('{}'))",
                    expected_file.display()
                ))
                .unwrap(),
                "t"
            );
        }

        // Unlink through the client API removes metadata and pages.
        common::psql_as(n, "postgres", "postgres", &format!("\\lo_unlink {oid}")).unwrap();
        n.sql(&format!(
            "SELECT lo_unlink({copy}), lo_unlink({server_copy})"
        ))
        .unwrap();
        assert_eq!(
            n.sql(&format!(
                "SELECT count(*) FROM lolor.pg_largeobject WHERE loid IN ({oid}, {copy}, {server_copy})"
            ))
            .unwrap(),
            "0"
        );
    }
    assert_eq!(
        n.sql("SELECT count(*) FROM lolor.pg_largeobject_metadata")
            .unwrap(),
        "0"
    );
    // Nothing was stored in the native catalogs.
    assert_eq!(
        n.sql("SELECT count(*) FROM pg_catalog.pg_largeobject_metadata")
            .unwrap(),
        "0"
    );
    cluster.stop().unwrap();
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn oids_come_from_lolor_node_and_collisions_are_detected(kernel: &harness::Kernel) {
    let cluster = start(kernel, 1, None);
    let n = cluster.node(0);
    n.sql("CREATE EXTENSION lolor").unwrap();
    // Unset node: only automatic OIDs fail.
    n.sql("ALTER SYSTEM SET lolor.node = 0").unwrap();
    n.sql("SELECT pg_reload_conf()").unwrap();
    common::wait_for(n, "postgres", "SHOW lolor.node", "0", 10);
    assert_eq!(
        err(n.sql("SELECT lo_creat(-1)")),
        "ERROR:  value for lolor.node is not set"
    );
    assert_eq!(
        err(n.sql("SELECT lo_from_bytea(0, 'x')")),
        "ERROR:  value for lolor.node is not set"
    );
    let (out, _) = run(n, "\\set VERBOSITY verbose\nSELECT lo_create(0);");
    assert!(
        out.contains("ERROR:  F0000: value for lolor.node is not set"),
        "{out}"
    );
    assert_eq!(n.sql("SELECT lo_create(77)").unwrap(), "77");
    n.sql("SELECT lo_put(77, 0, 'x')").unwrap();
    assert_eq!(n.sql("SELECT lo_get(77)").unwrap(), "\\x78");

    // The setting: superuser only, 0..16 (checked once the library is loaded; calling
    // any of its functions loads it).
    assert_eq!(
        err(n.sql("SELECT lolor.build_pg_major(); SET lolor.node = 17")),
        "ERROR:  17 is outside the valid range for parameter \"lolor.node\" (0 .. 16)"
    );
    n.sql("CREATE ROLE plain LOGIN").unwrap();
    assert_eq!(
        err(common::psql_as(
            n,
            "postgres",
            "plain",
            "SELECT lolor.build_pg_major(); SET lolor.node = 3"
        )),
        "ERROR:  permission denied to set parameter \"lolor.node\""
    );
    assert_eq!(
        n.sql("LOAD 'lolor'; SELECT short_desc, context, min_val, max_val, boot_val FROM pg_settings WHERE name = 'lolor.node'")
            .unwrap(),
        "Unique id of current node.|superuser|0|16|0"
    );

    // OID = 16 * (counter mod 2^28) + node.
    for node in [1, 7, 15] {
        let oids = n
            .sql(&format!(
                "SET lolor.node = {node}; SELECT lo_creat(-1), lo_create(0), lo_from_bytea(0, 'a')"
            ))
            .unwrap();
        for oid in oids.split('|') {
            let oid: u32 = oid.parse().unwrap();
            assert_eq!(oid % 16, node, "{oid}");
            assert!(oid >= 16 * 16384, "{oid}");
        }
    }

    // Explicit OIDs are used verbatim; a duplicate fails on the primary key.
    assert_eq!(
        err(n.sql("SELECT lo_create(77)")),
        "ERROR:  duplicate key value violates unique constraint \"pg_largeobject_metadata_pkey\"\n\
         DETAIL:  Key (oid)=(77) already exists."
    );
    assert_eq!(
        err(n.sql("SELECT lo_from_bytea(77, 'y')")),
        "ERROR:  duplicate key value violates unique constraint \"pg_largeobject_metadata_pkey\"\n\
         DETAIL:  Key (oid)=(77) already exists."
    );

    // Generated OIDs skip ones already taken (e.g. replicated from elsewhere): occupy the
    // next candidates, then generate.
    let script = "SET lolor.node = 5;\n\
         SELECT lo_creat(-1) AS first \\gset\n\
         INSERT INTO lolor.pg_largeobject_metadata \
         SELECT :first + 16 * i, 10, NULL FROM generate_series(1, 50) i;\n\
         SELECT lo_creat(-1) AS next \\gset\n\
         SELECT (:next - :first) / 16 > 50, :next % 16, \
         (SELECT count(*) FROM lolor.pg_largeobject_metadata WHERE oid = :next);\n";
    let (out, ok) = run(n, script);
    assert!(ok, "{out}");
    assert_eq!(out, "t|5|1\n");
    cluster.stop().unwrap();
}

/// Native-vs-lolor comparison of what other roles may do.
const PRIVILEGE_SCRIPT: &str = r#"
\set VERBOSITY default
SELECT lo_from_bytea(2000, 'secret');
SET ROLE alice;
SELECT lo_get(2000);
SELECT lo_get(2000, 0, 1);
SELECT lo_put(2000, 0, 'x');
BEGIN; SELECT lo_open(2000, 262144); ROLLBACK;
BEGIN; SELECT lo_open(2000, 131072); ROLLBACK;
SELECT lo_unlink(2000);
SELECT lo_unlink(2999);
SELECT lo_import('/etc/hostname');
SELECT lo_import('/etc/hostname', 5);
SELECT lo_export(2000, '/tmp/never-written');
SELECT lo_from_bytea(2001, 'mine');
SELECT lo_get(2001);
BEGIN; SELECT lo_open(2001, 393216) AS fd \gset
SELECT lowrite(:fd, 'MINE'), lo_close(:fd); COMMIT;
RESET ROLE;
SET ROLE bob;
SELECT lo_get(2001);
SELECT lo_unlink(2001);
RESET ROLE;
SET ROLE alice_too;
SELECT lo_get(2001);
SELECT lo_unlink(2001);
RESET ROLE;
SET lo_compat_privileges = on;
SET ROLE bob;
SELECT lo_get(2001);
SELECT lo_put(2001, 0, 'm');
SELECT lo_get(2000);
RESET ROLE;
RESET lo_compat_privileges;
SELECT lo_get(2001);
SELECT lo_unlink(2001), lo_unlink(2000);
SET ROLE bob;
SELECT lo_unlink(2999);
RESET ROLE;
SELECT lo_unlink(2999);
"#;

fn privileges_and_server_files_are_guarded_like_native_large_objects(kernel: &harness::Kernel) {
    let cluster = start(kernel, 1, None);
    let n = cluster.node(0);
    n.sql(
        "CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN; CREATE ROLE alice_too LOGIN IN ROLE alice",
    )
    .unwrap();
    n.sql("CREATE DATABASE with_lolor").unwrap();
    n.sql("CREATE DATABASE native").unwrap();
    n.sql_in("with_lolor", "CREATE EXTENSION lolor").unwrap();
    let script = cluster.dir().join("privileges.sql");
    std::fs::write(&script, PRIVILEGE_SCRIPT).unwrap();
    let (ours, _) = common::psql_file(n, "with_lolor", &script, &[]);
    let (native, _) = common::psql_file(n, "native", &script, &[]);
    assert_eq!(ours, native, "lolor vs native");
    for expected in [
        "ERROR:  permission denied for large object 2000",
        "ERROR:  must be owner of large object 2000",
        "ERROR:  must be owner of large object 2001",
        "ERROR:  permission denied for function lo_import",
        "ERROR:  permission denied for function lo_export",
    ] {
        assert!(ours.contains(expected), "{expected}:\n{ours}");
    }
    // 16 and 17 report the failed ownership lookup; 18's lo_unlink checks existence first.
    let missing = if (16..=17).contains(&kernel.major) {
        "ERROR:  large object metadata with OID 2999 does not exist"
    } else {
        "ERROR:  large object 2999 does not exist"
    };
    assert!(ours.contains(missing), "{ours}");
    assert!(!std::path::Path::new("/tmp/never-written").exists());

    // Through the client API (libpq fast path) the same errors reach the client.
    n.sql_in(
        "with_lolor",
        "SET lolor.node = 1; SELECT lo_from_bytea(3000, 'postgres owns this')",
    )
    .unwrap();
    let dir = shared_dir(&cluster, "files");
    let target = dir.join("stolen.bin");
    let e = err(common::psql_as(
        n,
        "with_lolor",
        "bob",
        &format!("\\lo_export 3000 '{}'", target.display()),
    ));
    assert!(e.contains("permission denied for large object 3000"), "{e}");
    let e = err(common::psql_as(n, "with_lolor", "bob", "\\lo_unlink 3000"));
    assert!(e.contains("must be owner of large object 3000"), "{e}");

    // Server files: an accidental GRANT EXECUTE is not enough, the role is required too,
    // in both the enabled and the disabled state.
    let input = dir.join("in.bin");
    write_file(&input, b"server file");
    let import = format!("SELECT lo_import('{}')", input.display());
    let export = format!(
        "SELECT lo_export(3000, '{}')",
        dir.join("out.bin").display()
    );
    n.sql_in(
        "with_lolor",
        "GRANT EXECUTE ON FUNCTION lo_import(text), lo_export(oid, text) TO bob; \
         UPDATE lolor.pg_largeobject_metadata SET lomacl = '{postgres=rw/postgres,bob=r/postgres}' WHERE oid = 3000",
    )
    .unwrap();
    assert_eq!(
        err(common::psql_as(n, "with_lolor", "bob", &import)),
        "ERROR:  permission denied for function lo_import\n\
         DETAIL:  Only roles with privileges of the \"pg_read_server_files\" role may read server files."
    );
    assert_eq!(
        err(common::psql_as(n, "with_lolor", "bob", &export)),
        "ERROR:  permission denied for function lo_export\n\
         DETAIL:  Only roles with privileges of the \"pg_write_server_files\" role may write server files."
    );
    // The ACL grants bob read access now.
    assert_eq!(
        common::psql_as(
            n,
            "with_lolor",
            "bob",
            "SELECT convert_from(lo_get(3000), 'UTF8')"
        )
        .unwrap(),
        "postgres owns this"
    );
    assert_eq!(
        err(common::psql_as(
            n,
            "with_lolor",
            "bob",
            "SELECT lo_put(3000, 0, 'x')"
        )),
        "ERROR:  permission denied for large object 3000"
    );
    n.sql_in("with_lolor", "SELECT lolor.disable()").unwrap();
    assert_eq!(
        err(common::psql_as(
            n,
            "with_lolor",
            "bob",
            &import.replace("lo_import", "lolor_lo_import")
        )),
        "ERROR:  permission denied for function lolor_lo_import\n\
         DETAIL:  Only roles with privileges of the \"pg_read_server_files\" role may read server files."
    );
    assert_eq!(
        err(common::psql_as(
            n,
            "with_lolor",
            "alice",
            &export.replace("lo_export", "lolor_lo_export")
        )),
        "ERROR:  permission denied for function lolor_lo_export"
    );
    n.sql_in("with_lolor", "SELECT lolor.enable()").unwrap();
    // With the predefined roles it works.
    n.sql("GRANT pg_read_server_files, pg_write_server_files TO bob")
        .unwrap();
    let oid = common::psql_as(n, "with_lolor", "bob", &import).unwrap();
    assert_eq!(
        common::psql_as(
            n,
            "with_lolor",
            "bob",
            &format!(
                "SELECT convert_from(lo_get({oid}), 'UTF8'), lomowner::regrole FROM lolor.pg_largeobject_metadata WHERE oid = {oid}"
            )
        )
        .unwrap(),
        "server file|bob"
    );
    assert_eq!(
        common::psql_as(n, "with_lolor", "bob", &export).unwrap(),
        "1"
    );
    assert_eq!(
        std::fs::read(dir.join("out.bin")).unwrap(),
        b"postgres owns this"
    );
    cluster.stop().unwrap();
}

fn two_nodes_replicate_large_objects_through_native_logical_replication(kernel: &harness::Kernel) {
    let cluster = start(kernel, 2, Some("lolor"));
    let (n1, n2) = (cluster.node(0), cluster.node(1));
    n2.sql("ALTER SYSTEM SET lolor.node = 2").unwrap();
    n2.sql("SELECT pg_reload_conf()").unwrap();
    common::wait_for(n2, "postgres", "SHOW lolor.node", "2", 10);
    for (i, n) in [n1, n2].into_iter().enumerate() {
        let node = i + 1;
        common::wait_for(n, "postgres", "SHOW lolor.node", &node.to_string(), 10);
        n.sql("CREATE EXTENSION lolor").unwrap();
        // Each node publishes the objects it created (the node id is in the OID's low
        // bits), so changes do not travel back to where they came from.
        n.sql(&format!(
            "CREATE PUBLICATION lolor_pub FOR TABLE \
             lolor.pg_largeobject_metadata WHERE ((oid::int8 % 16) = {node}), \
             lolor.pg_largeobject WHERE ((loid::int8 % 16) = {node})"
        ))
        .unwrap();
    }
    for (sub, publisher) in [(n1, n2), (n2, n1)] {
        sub.sql(&format!(
            "CREATE SUBSCRIPTION lolor_sub_from_{} CONNECTION '{}' PUBLICATION lolor_pub WITH (copy_data = false)",
            publisher.name,
            publisher.dsn("postgres")
        ))
        .unwrap();
    }
    for n in [n1, n2] {
        common::wait_for(
            n,
            "postgres",
            "SELECT count(*) FROM pg_stat_subscription WHERE pid IS NOT NULL",
            "1",
            30,
        );
        common::wait_for(
            n,
            "postgres",
            "SELECT bool_and(active)::text FROM pg_replication_slots",
            "true",
            30,
        );
    }

    // Both nodes start from the same OID counter: without the node bits the first objects
    // would collide.
    let first1: u32 = n1.sql("SELECT lo_creat(-1)").unwrap().parse().unwrap();
    let first2: u32 = n2.sql("SELECT lo_creat(-1)").unwrap().parse().unwrap();
    assert_eq!((first1 % 16, first2 % 16), (1, 2));
    assert_ne!(first1, first2);

    let dir = shared_dir(&cluster, "files");
    let sizes = [0usize, 1, 2048, 5000, 300_000, 3 * 1024 * 1024];
    let mut created = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        for (k, n) in [n1, n2].into_iter().enumerate() {
            let file = dir.join(format!("n{k}-{i}.bin"));
            write_file(&file, &pseudo_random(size, (i * 10 + k) as u64));
            let oid = client_import(n, "postgres", &file);
            created.push((oid, k, file));
        }
    }
    // Updates and deletes replicate too.
    n1.sql(&format!("SELECT lo_put({first1}, 10, 'written on n1')"))
        .unwrap();
    n2.sql(&format!("SELECT lo_put({first2}, 4000, 'written on n2')"))
        .unwrap();
    let doomed: u32 = n1
        .sql("SELECT lo_from_bytea(0, 'short-lived')")
        .unwrap()
        .parse()
        .unwrap();
    n1.sql(&format!("SELECT lo_unlink({doomed})")).unwrap();

    let total = (created.len() + 2).to_string();
    for n in [n1, n2] {
        common::wait_for(
            n,
            "postgres",
            "SELECT count(*) FROM lolor.pg_largeobject_metadata",
            &total,
            60,
        );
    }
    let summary = "SELECT string_agg(oid || ':' || lomowner || ':' || \
         encode(sha256(lo_get(oid)), 'hex'), ',' ORDER BY oid) FROM lolor.pg_largeobject_metadata";
    let pages = "SELECT count(*), sum(length(data)) FROM lolor.pg_largeobject";
    common::wait_for(n2, "postgres", pages, &n1.sql(pages).unwrap(), 60);
    common::wait_for(n2, "postgres", summary, &n1.sql(summary).unwrap(), 60);
    // Contents are byte-identical with the files on both nodes; OIDs are distinct.
    let mut oids: Vec<u32> = created.iter().map(|c| c.0).collect();
    oids.sort();
    oids.dedup();
    assert_eq!(oids.len(), created.len(), "OID collision: {created:?}");
    for (oid, k, file) in &created {
        assert_eq!(oid % 16, *k as u32 + 1);
        for n in [n1, n2] {
            assert_eq!(
                n.sql(&format!(
                    "SELECT lo_get({oid}) = pg_read_binary_file('{}')",
                    file.display()
                ))
                .unwrap(),
                "t",
                "{} object {oid}",
                n.name
            );
        }
    }
    for n in [n1, n2] {
        assert_eq!(
            n.sql(&format!(
                "SELECT convert_from(lo_get({first1}, 10, 13), 'UTF8'), \
                 convert_from(lo_get({first2}, 4000, 13), 'UTF8'), length(lo_get({first2})), \
                 (SELECT count(*) FROM lolor.pg_largeobject WHERE loid = {doomed})"
            ))
            .unwrap(),
            "written on n1|written on n2|4013|0"
        );
    }
    for n in [n1, n2] {
        n.sql(&format!(
            "DROP SUBSCRIPTION lolor_sub_from_{}",
            if n.name == "n1" { "n2" } else { "n1" }
        ))
        .unwrap();
    }
    cluster.stop().unwrap();
}

fn dump_and_restore_keep_the_objects(kernel: &harness::Kernel) {
    let cluster = start(kernel, 1, None);
    let n = cluster.node(0);
    n.sql("CREATE ROLE alice LOGIN").unwrap();
    n.sql("CREATE DATABASE src").unwrap();
    n.sql("CREATE DATABASE dst").unwrap();
    n.sql_in("src", "CREATE EXTENSION lolor").unwrap();
    let dir = shared_dir(&cluster, "files");
    let file = dir.join("big.bin");
    write_file(&file, &pseudo_random(5 * 1024 * 1024 + 17, 99));
    n.sql_in(
        "src",
        &format!(
            "SELECT lo_from_bytea(0, ''); SELECT lo_from_bytea(500, 'explicit'); \
             SELECT lo_import('{}'); SET ROLE alice; SELECT lo_from_bytea(0, 'alice''s'); RESET ROLE; \
             UPDATE lolor.pg_largeobject_metadata SET lomacl = '{{alice=rw/alice,postgres=r/alice}}' \
             WHERE lomowner = 'alice'::regrole",
            file.display()
        ),
    )
    .unwrap();
    let summary = "SELECT string_agg(oid || ':' || lomowner::regrole || ':' || coalesce(lomacl::text, '-') || ':' || \
         encode(sha256(lo_get(oid)), 'hex'), ';' ORDER BY oid) FROM lolor.pg_largeobject_metadata";
    let before = n.sql_in("src", summary).unwrap();
    assert_eq!(before.split(';').count(), 4, "{before}");

    let archive = dir.join("src.dump");
    let port = n.port.to_string();
    let dump = std::process::Command::new(kernel.bin("pg_dump"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-Fc",
            "-f",
        ])
        .arg(&archive)
        .arg("src")
        .envs(kernel.env())
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let restore = std::process::Command::new(kernel.bin("pg_restore"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "--exit-on-error",
            "-d",
            "dst",
        ])
        .arg(&archive)
        .envs(kernel.env())
        .output()
        .unwrap();
    assert!(
        restore.status.success(),
        "{}",
        String::from_utf8_lossy(&restore.stderr)
    );
    assert_eq!(n.sql_in("dst", summary).unwrap(), before);
    assert_eq!(n.sql_in("dst", "SELECT lolor.is_enabled()").unwrap(), "t");
    assert_eq!(
        n.sql_in(
            "dst",
            "SELECT convert_from(lo_get(500), 'UTF8'), lo_get(500) = lo_get(500, 0, 100)"
        )
        .unwrap(),
        "explicit|t"
    );
    // Restored objects stay fully usable.
    n.sql_in("dst", "SELECT lo_put(500, 8, '!'), lo_unlink(500)")
        .unwrap();
    cluster.stop().unwrap();
}

fn loads_preloaded_next_to_other_libraries_and_tracks_role_ownership(kernel: &harness::Kernel) {
    let cluster = start(
        kernel,
        1,
        Some("spock, lolor, pg_stat_statements, auto_explain"),
    );
    let n = cluster.node(0);
    assert_eq!(n.sql("SHOW lolor.node").unwrap(), "1");
    n.sql("CREATE EXTENSION lolor").unwrap();
    n.sql("CREATE ROLE carol LOGIN; CREATE ROLE dave LOGIN")
        .unwrap();
    let shdepend =
        "SELECT count(*) FROM pg_shdepend WHERE refobjid IN ('carol'::regrole, 'dave'::regrole)";
    let oid = common::psql_as(
        n,
        "postgres",
        "carol",
        "SELECT lo_from_bytea(0, 'carol''s')",
    )
    .unwrap();
    // No pg_shdepend rows are recorded (so none can leak) ...
    assert_eq!(n.sql(shdepend).unwrap(), "0");
    // ... but DROP ROLE refuses like for a native object owner,
    assert_eq!(
        err(n.sql("DROP ROLE carol")),
        format!(
            "ERROR:  role \"carol\" cannot be dropped because some objects depend on it\n\
             DETAIL:  owner of large object {oid}"
        )
    );
    // REASSIGN OWNED moves the object,
    n.sql("REASSIGN OWNED BY carol TO dave").unwrap();
    assert_eq!(
        n.sql(&format!(
            "SELECT lomowner::regrole FROM lolor.pg_largeobject_metadata WHERE oid = {oid}"
        ))
        .unwrap(),
        "dave"
    );
    assert_eq!(
        common::psql_as(
            n,
            "postgres",
            "dave",
            &format!("SELECT lo_put({oid}, 0, 'C')")
        )
        .unwrap(),
        ""
    );
    n.sql("DROP ROLE carol").unwrap();
    // and DROP OWNED removes it, as it removes native large objects.
    n.sql("DROP OWNED BY dave").unwrap();
    assert_eq!(
        n.sql("SELECT count(*) FROM lolor.pg_largeobject_metadata")
            .unwrap(),
        "0"
    );
    n.sql("DROP ROLE dave").unwrap();
    assert_eq!(
        n.sql("SELECT count(*) FROM pg_shdepend WHERE classid = 'lolor.pg_largeobject'::regclass OR classid = 'lolor.pg_largeobject_metadata'::regclass")
            .unwrap(),
        "0"
    );
    // DROP OWNED from a session that never loaded lolor (the event trigger loads it).
    n.sql("CREATE ROLE erin LOGIN").unwrap();
    common::psql_as(n, "postgres", "erin", "SELECT lo_from_bytea(0, 'e')").unwrap();
    n.sql("DROP OWNED BY erin").unwrap();
    n.sql("DROP ROLE erin").unwrap();
    assert_eq!(
        n.sql("SELECT count(*) FROM lolor.pg_largeobject_metadata")
            .unwrap(),
        "0"
    );
    n.sql("DROP EXTENSION lolor").unwrap();
    assert_eq!(
        n.sql("SELECT count(*) FROM pg_proc WHERE proname IN ('lo_open_orig', 'lolor_lo_open')")
            .unwrap(),
        "0"
    );
    cluster.stop().unwrap();
}

/// lolor's tables in a spock replication set: objects written on the provider arrive on the
/// subscriber byte for byte, and an unlink follows.
fn large_objects_replicate_through_spock(kernel: &harness::Kernel) {
    let cluster = common::Mesh::new(2)
        .schema("CREATE EXTENSION lolor")
        .start(kernel);
    let (p, s) = (cluster.node(0), cluster.node(1));
    // Each node's own id in the objects' OIDs (needed from the first lo_from_bytea on).
    for (i, n) in [p, s].into_iter().enumerate() {
        n.configure("lolor.node", &(i + 1).to_string()).unwrap();
    }
    p.sql(
        "SELECT spock.repset_add_table('default', 'lolor.pg_largeobject_metadata'); \
           SELECT spock.repset_add_table('default', 'lolor.pg_largeobject')",
    )
    .unwrap();
    common::subscribe(s, "sub_lo", p, "");
    let oid = p
        .sql("SELECT lo_from_bytea(0, decode(string_agg(md5(g::text), ''), 'hex')) FROM generate_series(1, 20000) g")
        .unwrap();
    p.sql(&format!("SELECT lo_put({oid}, 100000, '\\xdeadbeef')"))
        .unwrap();
    let digest = format!("SELECT md5(lo_get({oid}))");
    let want = p.sql(&digest).unwrap();
    common::wait_for(s, "postgres", &digest, &want, 60);
    assert_eq!(
        s.sql(&format!("SELECT length(lo_get({oid}))")).unwrap(),
        "320000"
    );
    p.sql(&format!("SELECT lo_unlink({oid})")).unwrap();
    common::wait_until(
        || "unlink never arrived".to_string(),
        60,
        || {
            (s.sql("SELECT count(*) FROM lolor.pg_largeobject_metadata")
                .unwrap()
                == "0")
                .then_some(())
        },
    );
    assert_eq!(
        s.sql("SELECT count(*) FROM lolor.pg_largeobject").unwrap(),
        "0"
    );
}
