//! What the integration tests share: the majors of the run and a test per major, psql
//! runners, polling (`wait_until`, `wait_for`) and spock node setup (`mesh`).

pub mod mesh;
#[allow(unused_imports)]
pub use mesh::{Mesh, sub_create, subscribe, subscribe_all, wait_active_slots};

/// Which kernels this test run covers (`cargo xtask test` exports them).
#[allow(dead_code)]
pub fn majors() -> Vec<u32> {
    let list = std::env::var("PGEDGE_TEST_MAJORS")
        .expect("run the suite through `cargo xtask test`, which builds the kernels it needs");
    list.split(',')
        .map(|m| m.trim().parse().expect("a major version"))
        .collect()
}

/// The majors a test can run on; `cargo xtask test` skips (`--skip ::pg<M>`) those it did
/// not build, so a test of a major outside the run is left out, never reported as passed.
#[macro_export]
macro_rules! per_major {
    ($($name:ident),+ $(,)?) => {$(
        #[allow(non_snake_case)]
        mod $name {
            #[test]
            fn pg15() {
                $crate::common::on_major(15, super::$name)
            }
            #[test]
            fn pg16() {
                $crate::common::on_major(16, super::$name)
            }
            #[test]
            fn pg17() {
                $crate::common::on_major(17, super::$name)
            }
            #[test]
            fn pg18() {
                $crate::common::on_major(18, super::$name)
            }
        }
    )+};
}

/// Runs `test` on the staged kernel of `major` (the `per_major!` tests).
#[allow(dead_code)]
pub fn on_major(major: u32, test: fn(&harness::Kernel)) {
    let kernel = harness::Kernel::staged(major).unwrap_or_else(|e| {
        panic!(
            "PostgreSQL {major} is not staged for this run ({e:#}); run the suite through \
             `cargo xtask test`, which builds the majors it runs and skips the others"
        )
    });
    assert_eq!(
        kernel.major, major,
        "PGEDGE_PG_CONFIG_{major} points at another major"
    );
    test(&kernel);
}

/// Runs a psql script file against `db` on `node` (no ON_ERROR_STOP) and returns everything psql
/// printed, stdout and stderr interleaved in order, plus whether psql exited successfully.
#[allow(dead_code)]
pub fn psql_file(
    node: &harness::Node,
    db: &str,
    script: &std::path::Path,
    extra: &[&str],
) -> (String, bool) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let out = log.reopen().unwrap();
    let port = node.port.to_string();
    let status = std::process::Command::new(node.kernel().bin("psql"))
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            db,
        ])
        .args(extra)
        .arg("-f")
        .arg(script)
        .envs(node.kernel().env())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .status()
        .unwrap();
    (
        std::fs::read_to_string(log.path()).unwrap(),
        status.success(),
    )
}

/// Runs one psql command line (`-c`, may be a backslash command) as `user` and returns stdout,
/// or the error text.
#[allow(dead_code)]
pub fn psql_as(
    node: &harness::Node,
    db: &str,
    user: &str,
    command: &str,
) -> anyhow::Result<String> {
    let port = node.port.to_string();
    let out = std::process::Command::new(node.kernel().bin("psql"))
        .args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
        ])
        .args(["-U", user, "-d", db, "-c", command])
        .envs(node.kernel().env())
        .output()?;
    if !out.status.success() {
        anyhow::bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8(out.stdout)?
        .trim_end_matches('\n')
        .to_string())
}

/// Polls `ready` every 100 ms until it gives `Some`, and returns that; after `secs` seconds
/// the test fails with `what()`, which is only evaluated then, so that it can report the last
/// state seen and a log tail of that moment. Every wait of the tests goes through here, so
/// that none can hang: each has a deadline and says what it waited for.
#[allow(dead_code)]
pub fn wait_until<T>(
    what: impl FnOnce() -> String,
    secs: u64,
    mut ready: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(done) = ready() {
            return done;
        }
        if std::time::Instant::now() >= deadline {
            panic!("gave up after {secs} s: {}", what());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Polls `sql` on `node` until it returns `want` (or fails after `secs` seconds, with the last
/// answer and the node's log). An error counts as another answer: the query may need what is
/// being waited for (a table a copy creates).
#[allow(dead_code)]
pub fn wait_for(node: &harness::Node, db: &str, sql: &str, want: &str, secs: u64) {
    let got = std::cell::RefCell::new(String::new());
    wait_until(
        || {
            format!(
                "{}: `{sql}` returned {:?}, wanted {want:?}; log:\n{}",
                node.name,
                got.borrow(),
                node.log_tail(40)
            )
        },
        secs,
        || {
            let answer = node
                .sql_in(db, sql)
                .unwrap_or_else(|e| format!("error: {e}"));
            let done = answer == want;
            *got.borrow_mut() = answer;
            done.then_some(())
        },
    )
}
