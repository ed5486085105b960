//! One server instance: initdb, configuration, start/stop through `pg_ctl`, and SQL through the
//! kernel's own `psql` over TCP on 127.0.0.1.

use crate::{ClusterOptions, Kernel};
use anyhow::{Context, Result, bail};
use std::{
    fs,
    net::TcpListener,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicBool, Ordering},
};

/// Account the servers run as when the harness runs as root (`PGEDGE_TEST_USER` overrides).
const DEFAULT_SERVER_USER: &str = "nobody";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    Smart,
    Fast,
    Immediate,
}

impl StopMode {
    fn as_str(self) -> &'static str {
        match self {
            StopMode::Smart => "smart",
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

pub struct Node {
    pub name: String,
    pub port: u16,
    pub data: PathBuf,
    pub log: PathBuf,
    kernel: Kernel,
    running: AtomicBool,
    /// Extra environment of the server (`ClusterOptions::server_env`).
    env: Vec<(String, String)>,
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Opens every ancestor for traversal and `path` itself for reading by the server account.
pub(crate) fn make_traversable(path: &Path) -> Result<()> {
    if !is_root() {
        return Ok(());
    }
    let meta = fs::metadata(path)?;
    let mut perms = meta.permissions();
    perms.set_mode(perms.mode() | 0o755);
    fs::set_permissions(path, perms)?;
    Ok(())
}

fn server_user() -> String {
    std::env::var("PGEDGE_TEST_USER").unwrap_or_else(|_| DEFAULT_SERVER_USER.into())
}

/// A port for a new server: free now, below the kernel's ephemeral range (so no outgoing
/// connection of a parallel test takes it while a server of ours is stopped and restarts),
/// and never handed to two servers of this process.
fn free_port() -> Result<u16> {
    static TAKEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    // The first ephemeral port (Linux: 32768 unless configured otherwise).
    let ephemeral = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral.max(10_001));
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    // Processes running side by side start at different places of the range.
    let span = u32::from(high - low);
    let start = (std::process::id().wrapping_mul(7919) + taken.len() as u32 * 13) % span;
    for i in 0..span {
        let port = low + ((start + i) % span) as u16;
        if !taken.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.push(port);
            return Ok(port);
        }
    }
    // Everything below the ephemeral range is in use: let the kernel pick one.
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Node {
    pub(crate) fn init(
        kernel: &Kernel,
        name: &str,
        root: &Path,
        opts: &ClusterOptions,
    ) -> Result<Node> {
        fs::create_dir_all(root)?;
        let sockets = root.join("sockets");
        fs::create_dir_all(&sockets)?;
        let node = Node {
            name: name.into(),
            port: free_port()?,
            data: root.join("data"),
            log: root.join("server.log"),
            kernel: kernel.clone(),
            running: AtomicBool::new(false),
            env: opts.server_env.clone(),
        };
        if is_root() {
            let user = server_user();
            let out = Command::new("chown")
                .args(["-R", &format!("{user}:"), &root.display().to_string()])
                .output()?;
            if !out.status.success() {
                bail!("cannot give {} to {user}: {}", root.display(), stderr(&out));
            }
            make_traversable(root)?;
        }
        let data = node.data.display().to_string();
        node.run_as_server(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        )?;

        let mut conf = vec![
            ("listen_addresses".to_string(), "'127.0.0.1'".to_string()),
            ("port".into(), node.port.to_string()),
            (
                "unix_socket_directories".into(),
                format!("'{}'", sockets.display()),
            ),
            ("wal_level".into(), "logical".into()),
            ("track_commit_timestamp".into(), "on".into()),
            ("max_wal_senders".into(), "20".into()),
            ("max_replication_slots".into(), "20".into()),
            ("max_worker_processes".into(), "32".into()),
            ("max_connections".into(), "60".into()),
            ("shared_buffers".into(), "64MB".into()),
            ("fsync".into(), "off".into()),
            ("log_line_prefix".into(), format!("'%m [%p] {name} '")),
        ];
        if let Some(libs) = &opts.preload {
            conf.push(("shared_preload_libraries".into(), format!("'{libs}'")));
        }
        // Since 17.11/16.15/15.19 only listed libraries may serve as output plugins.
        if kernel.has_setting("output_plugin_libraries")? {
            conf.push((
                "output_plugin_libraries".into(),
                "'pgoutput, test_decoding, spock_output'".into(),
            ));
        }
        conf.extend(opts.settings.iter().cloned());
        let text: String = conf.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        let conf_path = node.data.join("postgresql.conf");
        let mut body = fs::read_to_string(&conf_path)?;
        body.push_str("\n# pgedge test harness\n");
        body.push_str(&text);
        fs::write(&conf_path, body)?;
        Ok(node)
    }

    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// libpq connection string for database `db`.
    pub fn dsn(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} dbname={db} user=postgres",
            self.port
        )
    }

    pub fn start(&self) -> Result<()> {
        let (data, log) = (
            self.data.display().to_string(),
            self.log.display().to_string(),
        );
        self.run_as_server(
            "pg_ctl",
            &["start", "-w", "-t", "60", "-D", &data, "-l", &log],
        )
        .with_context(|| format!("{} did not start; log:\n{}", self.name, self.log_tail(30)))?;
        self.running.store(true, Ordering::SeqCst);
        Ok(())
    }

    pub fn stop(&self, mode: StopMode) -> Result<()> {
        let data = self.data.display().to_string();
        self.run_as_server(
            "pg_ctl",
            &["stop", "-w", "-t", "60", "-D", &data, "-m", mode.as_str()],
        )
        .with_context(|| format!("{} did not stop", self.name))?;
        self.running.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Sets a server setting in `postgresql.conf` and reloads (works for settings of libraries
    /// that are not loaded yet, unlike `ALTER SYSTEM` on 15).
    pub fn configure(&self, name: &str, value: &str) -> Result<()> {
        let conf = self.data.join("postgresql.conf");
        let mut body = fs::read_to_string(&conf)?;
        body.push_str(&format!("{name} = {value}\n"));
        fs::write(&conf, body)?;
        if self.is_running() {
            self.sql("SELECT pg_reload_conf()")?;
        }
        Ok(())
    }

    /// Replaces this node's data with a base backup of `primary` and starts it as a streaming
    /// physical standby, keeping this node's port, sockets and log; `settings` are appended to
    /// the copied `postgresql.conf`.
    pub fn make_standby_of(&self, primary: &Node, settings: &[(&str, &str)]) -> Result<()> {
        if self.is_running() {
            self.stop(StopMode::Fast)?;
        }
        for entry in fs::read_dir(&self.data)? {
            let path = entry?.path();
            if path.is_dir() {
                fs::remove_dir_all(&path)?;
            } else {
                fs::remove_file(&path)?;
            }
        }
        let (data, port) = (self.data.display().to_string(), primary.port.to_string());
        self.run_as_server(
            "pg_basebackup",
            &[
                "-D",
                &data,
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
            ],
        )?;
        let sockets = self
            .data
            .parent()
            .expect("a node directory")
            .join("sockets");
        let mut extra = format!(
            "\n# standby of {}\nport = {}\nunix_socket_directories = '{}'\n",
            primary.name,
            self.port,
            sockets.display()
        );
        for (k, v) in settings {
            extra.push_str(&format!("{k} = {v}\n"));
        }
        let conf = self.data.join("postgresql.conf");
        let mut body = fs::read_to_string(&conf)?;
        body.push_str(&extra);
        fs::write(&conf, body)?;
        self.start()
    }

    pub fn restart(&self) -> Result<()> {
        self.stop(StopMode::Fast)?;
        self.start()
    }

    /// Runs SQL in database `postgres` and returns psql's unaligned, tuples-only output.
    pub fn sql(&self, sql: &str) -> Result<String> {
        self.sql_in("postgres", sql)
    }

    /// Runs SQL (possibly several statements) in `db`; an error carries the server's message.
    pub fn sql_in(&self, db: &str, sql: &str) -> Result<String> {
        self.sql_as("postgres", db, sql)
    }

    /// Runs SQL in `db` as role `user`.
    pub fn sql_as(&self, user: &str, db: &str, sql: &str) -> Result<String> {
        let out = self
            .client("psql", user)
            .args([
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .context("cannot run psql")?;
        if !out.status.success() {
            bail!("{}", stderr(&out));
        }
        Ok(String::from_utf8(out.stdout)?
            .trim_end_matches('\n')
            .to_string())
    }

    /// A client program of the kernel (psql, pg_dump, pgbench…) set up to reach this node as
    /// `user` (PGHOST/PGPORT/PGUSER in its environment).
    pub fn client(&self, program: &str, user: &str) -> Command {
        let mut cmd = Command::new(self.kernel.bin(program));
        cmd.envs(self.kernel.env())
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", user)
            .env("PGCONNECT_TIMEOUT", "10");
        cmd
    }

    /// Runs a client program as `postgres` and returns its standard output.
    pub fn run_client(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = self
            .client(program, "postgres")
            .args(args)
            .output()
            .with_context(|| format!("cannot run {program}"))?;
        if !out.status.success() {
            bail!("{program} {} failed: {}", args.join(" "), stderr(&out));
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Runs one of the kernel's programs as the server account.
    fn run_as_server(&self, program: &str, args: &[&str]) -> Result<()> {
        let bin = self.kernel.bin(program);
        let mut cmd = if is_root() {
            let user = server_user();
            let mut c = Command::new("runuser");
            c.args(["-u", &user, "--"]).arg(&bin);
            c
        } else {
            Command::new(&bin)
        };
        let out = cmd
            .args(args)
            .envs(self.kernel.env())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("RUST_BACKTRACE")
            .env_remove("PGDATA")
            .env_remove("INITDB_TEMPLATE")
            .current_dir(std::env::temp_dir())
            .output()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        if !out.status.success() {
            bail!("{program} {} failed: {}", args.join(" "), stderr(&out));
        }
        Ok(())
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}
