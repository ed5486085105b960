//! Shared pieces of the package tests: the majors under test, running commands, packages built
//! once per major by the real `xtask package`, and servers of an installed package run as the
//! `postgres` user.

#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    time::{Duration, Instant},
};

/// `SOURCE_DATE_EPOCH` of the test packages (2026-01-01).
pub const EPOCH: u64 = 1_767_225_600;

pub fn majors() -> Vec<u32> {
    std::env::var("PGEDGE_TEST_MAJORS")
        .expect("run the suite through `cargo xtask test`")
        .split(',')
        .map(|m| m.trim().parse().expect("a major version"))
        .collect()
}

/// Runs a command; panics with its output unless it succeeds. Returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let (ok, out, err) = try_run(cmd);
    assert!(ok, "{cmd:?} failed:\n{out}\n{err}");
    out
}

/// Runs a command: (success, stdout, stderr).
pub fn try_run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn cmd(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args).current_dir("/");
    c
}

pub fn is_root() -> bool {
    run(&mut cmd("id", &["-u"])).trim() == "0"
}

/// What `xtask package` wrote.
#[derive(Debug, Clone)]
pub struct Packages {
    pub dir: PathBuf,
    pub deb: PathBuf,
    pub rpm: PathBuf,
    pub sbom: PathBuf,
    pub sums: PathBuf,
}

/// Runs `xtask package --pg <major>` into `dir` (emptied first) with `epoch`.
pub fn package_into(major: u32, dir: &Path, epoch: u64) -> Packages {
    if dir.exists() {
        fs::remove_dir_all(dir).unwrap();
    }
    let out = run(Command::new(env!("CARGO_BIN_EXE_xtask")).args([
        "package",
        "--pg",
        &major.to_string(),
        "--out",
        &dir.display().to_string(),
        "--source-date-epoch",
        &epoch.to_string(),
    ]));
    let lines: Vec<PathBuf> = out.lines().map(PathBuf::from).collect();
    assert_eq!(lines.len(), 4, "xtask package printed: {out}");
    Packages {
        dir: dir.to_path_buf(),
        deb: lines[0].clone(),
        rpm: lines[1].clone(),
        sbom: lines[2].clone(),
        sums: lines[3].clone(),
    }
}

/// Where the tests keep packages: under the build cache, replaced on every run.
pub fn test_dir(name: &str) -> PathBuf {
    let cache = std::env::var_os("PGEDGE_BUILD_CACHE").expect("set by `cargo xtask test`");
    PathBuf::from(cache).join("test-packages").join(name)
}

/// The packages of `major` at [`EPOCH`], built once per test run.
pub fn packages(major: u32) -> Packages {
    static BUILT: Mutex<BTreeMap<u32, Packages>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    built
        .entry(major)
        .or_insert_with(|| package_into(major, &test_dir(&format!("pg{major}")), EPOCH))
        .clone()
}

/// Serialises the tests that install into the host's package database.
pub static HOST_PACKAGES: Mutex<()> = Mutex::new(());

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A cluster of the installed package, owned and run by `postgres`.
pub struct Server {
    pub bindir: PathBuf,
    pub data: PathBuf,
    pub port: u16,
    running: bool,
}

impl Server {
    /// `initdb` as postgres, then the package's `pgedge.conf.sample` included as its docs say.
    pub fn init(prefix: &str, data: &Path) -> Server {
        let bindir = PathBuf::from(prefix).join("bin");
        let initdb = bindir.join("initdb").display().to_string();
        let d = data.display().to_string();
        run(&mut cmd(
            "runuser",
            &[
                "-u",
                "postgres",
                "--",
                &initdb,
                "-D",
                &d,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        ));
        let sample = format!("{prefix}/share/postgresql/pgedge.conf.sample");
        run(&mut cmd(
            "runuser",
            &[
                "-u",
                "postgres",
                "--",
                "cp",
                &sample,
                &format!("{d}/pgedge.conf"),
            ],
        ));
        let port = free_port();
        let conf = data.join("postgresql.conf");
        let mut body = fs::read_to_string(&conf).unwrap();
        body.push_str(&format!(
            "\ninclude 'pgedge.conf'\nlisten_addresses = '127.0.0.1'\nport = {port}\n\
             unix_socket_directories = '{d}'\nfsync = off\n"
        ));
        fs::write(&conf, body).unwrap();
        Server {
            bindir,
            data: data.to_path_buf(),
            port,
            running: false,
        }
    }

    /// Appends a setting to `postgresql.conf` (before start, or followed by a reload).
    pub fn configure(&self, name: &str, value: &str) {
        let conf = self.data.join("postgresql.conf");
        let mut body = fs::read_to_string(&conf).unwrap();
        body.push_str(&format!("{name} = {value}\n"));
        fs::write(&conf, body).unwrap();
    }

    pub fn start(&mut self) {
        let pg_ctl = self.bindir.join("pg_ctl").display().to_string();
        let d = self.data.display().to_string();
        let log = format!("{d}/server.log");
        let (ok, out, err) = try_run(&mut cmd(
            "runuser",
            &[
                "-u", "postgres", "--", &pg_ctl, "start", "-w", "-t", "60", "-D", &d, "-l", &log,
            ],
        ));
        assert!(ok, "server did not start: {out}{err}\n{}", self.log_tail());
        self.running = true;
    }

    pub fn stop(&mut self) {
        if self.running {
            let pg_ctl = self.bindir.join("pg_ctl").display().to_string();
            let d = self.data.display().to_string();
            run(&mut cmd(
                "runuser",
                &[
                    "-u", "postgres", "--", &pg_ctl, "stop", "-w", "-m", "fast", "-D", &d,
                ],
            ));
            self.running = false;
        }
    }

    pub fn dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} dbname=postgres user=postgres",
            self.port
        )
    }

    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        let psql = self.bindir.join("psql").display().to_string();
        let (ok, out, err) = try_run(&mut cmd(
            &psql,
            &[
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                sql,
            ],
        ));
        if ok {
            Ok(out.trim_end().to_string())
        } else {
            Err(err)
        }
    }

    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}\n{}", self.log_tail()))
    }

    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.data.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Polls `query` until it returns `want`.
    pub fn wait_for(&self, query: &str, want: &str) {
        let started = Instant::now();
        loop {
            if self.try_sql(query).as_deref() == Ok(want) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{query} never returned {want} (last {:?}):\n{}",
                self.try_sql(query),
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.running {
            let pg_ctl = self.bindir.join("pg_ctl").display().to_string();
            let d = self.data.display().to_string();
            let _ = try_run(&mut cmd(
                "runuser",
                &[
                    "-u",
                    "postgres",
                    "--",
                    &pg_ctl,
                    "stop",
                    "-m",
                    "immediate",
                    "-D",
                    &d,
                ],
            ));
        }
    }
}
