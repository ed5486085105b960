//! The client that decides what "acknowledged" means: one thread feeding a `psql` process one
//! numbered single-row INSERT at a time, at a steady rate. An id counts as acknowledged only
//! when psql printed it back (`RETURNING id`): psql prints a result only after the server's
//! CommandComplete, which for an autocommitted statement comes after the COMMIT. An id whose
//! answer never came (the server died in between) is "in doubt": it may or may not have
//! committed, so it is neither required nor forbidden on the other nodes — but it must never
//! appear twice. When psql dies with its connection, the writer starts a new one and goes on.

use super::conn;
use harness::Node;
use std::{
    ffi::OsString,
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// What the client saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub acked: Vec<i64>,
    pub doubt: Vec<i64>,
    /// psql sessions that ended under the writer (connection lost or refused).
    pub reconnects: u64,
}

pub struct Writer {
    stop: Arc<AtomicBool>,
    last_acked: Arc<AtomicI64>,
    thread: Option<JoinHandle<Tally>>,
}

/// How to start psql against the node, captured so the thread owns it.
struct Target {
    program: PathBuf,
    envs: Vec<(OsString, Option<OsString>)>,
}

impl Target {
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        for (k, v) in &self.envs {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd
    }
}

struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Session {
    /// Starts psql and waits for one answer, so a refused connection is known before any
    /// INSERT is sent (and never leaves an id in doubt).
    fn open(target: &Target) -> Option<Session> {
        let mut child = target
            .command()
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let stdin = child.stdin.take()?;
        let stdout = BufReader::new(child.stdout.take()?);
        let mut s = Session {
            child,
            stdin,
            stdout,
        };
        if s.ask("SELECT 'ready';").as_deref() == Some("ready") {
            Some(s)
        } else {
            s.close();
            None
        }
    }

    /// Sends one statement and reads its one-line answer; `None` when psql is gone.
    fn ask(&mut self, statement: &str) -> Option<String> {
        writeln!(self.stdin, "{statement}").ok()?;
        self.stdin.flush().ok()?;
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(n) if n > 0 => Some(line.trim_end().to_string()),
            _ => None,
        }
    }

    fn close(mut self) {
        drop(self.stdin);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Writer {
    /// Starts writing ids `first`, `first + 1`, … into `table(id)` on `node`, `rate` per second.
    pub fn start(node: &Node, table: &str, first: i64, rate: u32) -> Writer {
        let template = conn::client(node, "psql");
        let target = Target {
            program: template.get_program().into(),
            envs: template
                .get_envs()
                .map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned())))
                .collect(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let last_acked = Arc::new(AtomicI64::new(first - 1));
        let table = table.to_string();
        let (stop2, last2) = (stop.clone(), last_acked.clone());
        let thread =
            std::thread::spawn(move || write(&target, &table, first, rate, &stop2, &last2));
        Writer {
            stop,
            last_acked,
            thread: Some(thread),
        }
    }

    /// The highest id acknowledged so far (`first - 1` before the first).
    pub fn last_acked(&self) -> i64 {
        self.last_acked.load(Ordering::SeqCst)
    }

    /// Waits until an id later than `after` is acknowledged; that id, or `None` after `timeout`.
    pub fn next_ack(&self, after: i64, timeout: Duration) -> Option<i64> {
        conn::poll(timeout, || self.last_acked() > after)?;
        Some(self.last_acked())
    }

    /// Stops after the statement in flight and returns what the client saw.
    pub fn finish(mut self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .expect("finished once")
            .join()
            .expect("writer thread")
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn write(
    target: &Target,
    table: &str,
    first: i64,
    rate: u32,
    stop: &AtomicBool,
    last_acked: &AtomicI64,
) -> Tally {
    let mut tally = Tally::default();
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut id = first;
    let mut due = Instant::now();
    let mut session: Option<Session> = None;
    while !stop.load(Ordering::SeqCst) {
        let s = match session.as_mut() {
            Some(s) => s,
            None => match Session::open(target) {
                Some(s) => session.insert(s),
                None => {
                    // The server is down or restarting: try again shortly.
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            },
        };
        match s.ask(&format!(
            "INSERT INTO {table}(id) VALUES ({id}) RETURNING id;"
        )) {
            Some(answer) if answer == id.to_string() => {
                tally.acked.push(id);
                last_acked.store(id, Ordering::SeqCst);
            }
            _ => {
                tally.doubt.push(id);
                tally.reconnects += 1;
                session.take().expect("a session").close();
            }
        }
        id += 1;
        // A steady rate, without bursts to catch up after an outage.
        due += interval;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > Duration::from_secs(1) {
            due = now;
        }
    }
    if let Some(s) = session {
        s.close();
    }
    tally
}
