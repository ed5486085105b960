//! lolor large-object throughput against native large objects on the same server: one database
//! with lolor (its `lo_*` functions take over the built-in names), one without, the same
//! statements and client calls in both.
//!
//! * SQL: `lo_from_bytea` (write) and `lo_get` (read) in an in-server loop;
//! * client: psql's `\lo_import` / `\lo_export`, i.e. libpq's large-object API (`lo_creat`,
//!   `lo_open`, `lowrite` / `loread` in 8 kB calls over the fast-path protocol).
//!
//! For 1 MB and 64 MB objects; best of interleaved rounds, reported as MB/s (10^6 bytes).

use super::report;
use anyhow::{Context, Result, bail};
use harness::{Cluster, ClusterOptions, Kernel, Node};
use std::{os::unix::fs::PermissionsExt, path::Path, process::Command, time::Instant};

const GOAL: f64 = 0.8;
const ROUNDS: usize = 5;
const MB: usize = 1_000_000;
/// Bytes written per measurement, so small objects are measured over many calls (reads move
/// four times as much: they are faster).
const BYTES_PER_MEASUREMENT: usize = 128 * 1024 * 1024;

const SETUP: &str = "\
CREATE TABLE payload (size int PRIMARY KEY, data bytea);
CREATE FUNCTION bench_write(len int, calls int) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE
    d bytea := (SELECT data FROM payload WHERE size = len);
    made oid[] := '{}';
    t0 timestamptz := clock_timestamp();
    secs float8;
BEGIN
    FOR i IN 1..calls LOOP
        made := made || lo_from_bytea(0, d);
    END LOOP;
    secs := extract(epoch FROM clock_timestamp() - t0);
    PERFORM lo_unlink(o) FROM unnest(made) o;
    RETURN calls::float8 * len / secs / 1e6;
END $$;
CREATE FUNCTION bench_read(len int, calls int) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE
    o oid := lo_from_bytea(0, (SELECT data FROM payload WHERE size = len));
    t0 timestamptz;
    secs float8;
    n bigint := 0;
BEGIN
    t0 := clock_timestamp();
    FOR i IN 1..calls LOOP
        n := n + length(lo_get(o));
    END LOOP;
    secs := extract(epoch FROM clock_timestamp() - t0);
    PERFORM lo_unlink(o);
    IF n <> calls::bigint * len THEN RAISE EXCEPTION 'read % bytes', n; END IF;
    RETURN calls::float8 * len / secs / 1e6;
END $$;";

pub fn run(kernel: &Kernel) -> Result<()> {
    let cluster = Cluster::start(
        kernel,
        &ClusterOptions::default()
            .preload(Some("lolor"))
            .setting("lolor.node", "1")
            // Keep checkpoints out of the measurements.
            .setting("max_wal_size", "'8GB'")
            .setting("checkpoint_timeout", "'1h'")
            .setting("shared_buffers", "'256MB'"),
    )?;
    let n = cluster.node(0);
    n.sql("CREATE DATABASE bench_lolor")?;
    n.sql("CREATE DATABASE bench_native")?;
    n.sql_in("bench_lolor", "CREATE EXTENSION lolor")?;
    let dir = cluster.dir().join("files");
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
    let sizes = [MB, 64 * MB];
    for db in ["bench_lolor", "bench_native"] {
        n.sql_in(db, SETUP)?;
        for size in sizes {
            // md5 output: incompressible, like most stored blobs.
            n.sql_in(
                db,
                &format!(
                    "INSERT INTO payload SELECT {size}, substring(decode(string_agg(md5(i::text), ''), 'hex') \
                     FOR {size}) FROM generate_series(1, {size} / 16 + 1) i"
                ),
            )?;
        }
    }
    println!(
        "lolor vs native large objects, PostgreSQL {} (best of {ROUNDS} interleaved rounds)",
        kernel.major
    );

    for size in sizes {
        let calls = (BYTES_PER_MEASUREMENT / size).max(2);
        let label = format!("{} MB", size / MB);
        let best = |f: &dyn Fn(&str) -> Result<f64>| -> Result<(f64, f64)> {
            let (mut ours, mut native) = (0f64, 0f64);
            for _ in 0..ROUNDS {
                native = native.max(f("bench_native")?);
                ours = ours.max(f("bench_lolor")?);
            }
            Ok((ours, native))
        };

        let (ours, native) = best(&|db| sql_rate(n, db, &format!("bench_write({size}, {calls})")))?;
        report(
            &format!("SQL write {label} (lo_from_bytea)"),
            "MB/s",
            ours,
            native,
            GOAL,
        );
        let reads = calls * 4;
        let (ours, native) = best(&|db| sql_rate(n, db, &format!("bench_read({size}, {reads})")))?;
        report(
            &format!("SQL read {label} (lo_get)"),
            "MB/s",
            ours,
            native,
            GOAL,
        );

        let file = dir.join(format!("payload-{size}.bin"));
        export_payload(n, size, &file)?;
        let calls = calls.min(64);
        let (ours, native) = best(&|db| client_write(n, db, &file, size, calls))?;
        report(
            &format!("client write {label} (\\lo_import)"),
            "MB/s",
            ours,
            native,
            GOAL,
        );
        let (ours, native) = best(&|db| client_read(n, db, size, calls))?;
        report(
            &format!("client read {label} (\\lo_export)"),
            "MB/s",
            ours,
            native,
            GOAL,
        );
    }
    cluster.stop()?;
    Ok(())
}

fn sql_rate(n: &Node, db: &str, call: &str) -> Result<f64> {
    n.sql_in(db, &format!("SELECT {call}"))?
        .parse()
        .with_context(|| format!("{call} in {db}"))
}

/// Writes the payload of `size` bytes to `file` (server side, native functions of the native db).
fn export_payload(n: &Node, size: usize, file: &Path) -> Result<()> {
    let db = "bench_native";
    let oid = n.sql_in(
        db,
        &format!("SELECT lo_from_bytea(0, data) FROM payload WHERE size = {size}"),
    )?;
    n.sql_in(
        db,
        &format!("SELECT lo_export({oid}, '{}')", file.display()),
    )?;
    n.sql_in(db, &format!("SELECT lo_unlink({oid})"))?;
    let len = std::fs::metadata(file)?.len();
    if len != size as u64 {
        bail!("{} has {len} bytes, expected {size}", file.display());
    }
    Ok(())
}

/// Runs a psql script (client-side large-object commands) and returns the elapsed seconds.
fn timed_psql(n: &Node, db: &str, script: &str) -> Result<f64> {
    let port = n.port.to_string();
    let t0 = Instant::now();
    let out = Command::new(n.kernel().bin("psql"))
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
        ])
        .args(["-U", "postgres", "-d", db])
        .envs(n.kernel().env())
        .env("PGOPTIONS", "-c lolor.node=1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("piped")
                .write_all(script.as_bytes())?;
            child.wait_with_output()
        })
        .context("cannot run psql")?;
    let secs = t0.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("psql failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(secs)
}

fn client_write(n: &Node, db: &str, file: &Path, size: usize, calls: usize) -> Result<f64> {
    let import = format!("\\lo_import '{}'\n", file.display());
    let secs = timed_psql(n, db, &import.repeat(calls))?;
    n.sql_in(db, "SELECT lo_unlink(oid) FROM pg_largeobject_metadata")?;
    if db == "bench_lolor" {
        n.sql_in(
            db,
            "SELECT lo_unlink(oid) FROM lolor.pg_largeobject_metadata",
        )?;
    }
    Ok((calls * size) as f64 / secs / MB as f64)
}

fn client_read(n: &Node, db: &str, size: usize, calls: usize) -> Result<f64> {
    let oid = n.sql_in(
        db,
        &format!("SELECT lo_from_bytea(0, data) FROM payload WHERE size = {size}"),
    )?;
    let export = format!("\\lo_export {oid} /dev/null\n");
    let secs = timed_psql(n, db, &export.repeat(calls))?;
    n.sql_in(db, &format!("SELECT lo_unlink({oid})"))?;
    Ok((calls * size) as f64 / secs / MB as f64)
}
