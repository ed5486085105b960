//! `memory`: n1 → n2 and one transaction of many distinct 2 kB values stored out of line
//! (TOAST with `STORAGE EXTERNAL`, so uncompressed). The provider's walsender decodes it, the
//! subscriber's apply worker applies it; both should do that in bounded memory (spilling or
//! streaming rather than holding the transaction). Their resident set size (VmRSS, and the
//! peak VmHWM, from /proc/<pid>/status) is read before the transaction and every 200 ms until
//! the subscriber has it. RSS includes the shared buffers a process has touched, so these
//! nodes run with `shared_buffers = 32MB` to keep those from dominating. Goal: each process
//! grows by less than 100 MB. Both must stay the same processes throughout: a worker that died
//! and came back (out of memory, say) would hide its growth, so that is a failure of its own.

use super::{Budget, Outcome, conn, procs, secs};
use anyhow::{Context, Result};
use harness::{ClusterOptions, Node};
use std::{
    sync::OnceLock,
    time::{Duration, Instant},
};

/// Allowed growth per process, in kB (the unit of /proc/<pid>/status).
const LIMIT_KB: u64 = 100 * 1024;
const EVERY: Duration = Duration::from_millis(200);
const SCHEMA: &str = "CREATE TABLE big(id int PRIMARY KEY, payload text); \
                      ALTER TABLE big ALTER payload SET STORAGE EXTERNAL";
const SENDER: &str = "SELECT active_pid FROM pg_replication_slots WHERE active";
const APPLY: &str = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'spock apply'";
const TOAST: &str = "SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE relname = 'big'";

pub fn run(kernel: &harness::Kernel, b: &Budget) -> Result<Outcome> {
    let rows = b.memory_rows;
    let opts = ClusterOptions::default().setting("shared_buffers", "32MB");
    let cluster = conn::pair_with(kernel, opts, SCHEMA, SCHEMA)?;
    let (p, s) = (cluster.node(0), cluster.node(1));
    let mut out = Outcome::default();

    // A first row through both processes, so the baseline already has `big` in their caches.
    conn::sql(p, "INSERT INTO big VALUES (0, 'probe')")?;
    conn::wait_for(s, "SELECT count(*) FROM big", "1", Duration::from_secs(60))?;
    let mut sender = Watched::new("walsender", pid(p, SENDER)?)?;
    let mut apply = Watched::new("apply worker", pid(s, APPLY)?)?;

    // One transaction: psql -c runs the single statement as its own transaction.
    let insert = format!(
        "INSERT INTO big SELECT g, repeat(md5(g::text), 64) FROM generate_series(1, {rows}) g"
    );
    // The rows appear all at once on the subscriber, so the last id stands for all of them
    // (and an index lookup stays cheap while the table fills).
    let arrived = format!("SELECT EXISTS (SELECT 1 FROM big WHERE id = {rows})");
    let timeout = Duration::from_secs(120 + rows / 1000);
    let started = Instant::now();
    let committed: OnceLock<Result<Instant, String>> = OnceLock::new();
    let applied = std::thread::scope(|scope| {
        scope.spawn(|| {
            let done = conn::sql(p, &insert)
                .map(|_| Instant::now())
                .map_err(|e| format!("{e:#}"));
            let _ = committed.set(done);
        });
        loop {
            let tick = Instant::now();
            sender.sample();
            apply.sample();
            sender.check(conn::sql(p, SENDER));
            apply.check(conn::sql(s, APPLY));
            if sender.lost.is_some() || apply.lost.is_some() {
                break None;
            }
            if matches!(committed.get(), Some(Err(_))) {
                break None;
            }
            if conn::sql(s, &arrived).is_ok_and(|r| r == "t") {
                break Some(Instant::now());
            }
            if started.elapsed() > timeout {
                break None;
            }
            std::thread::sleep(EVERY.saturating_sub(tick.elapsed()));
        }
        // Leaving the scope waits for the insert, also when the loop gave up early.
    });
    sender.sample();
    apply.sample();

    let mut figures = vec![format!("rows {rows}")];
    match (committed.get(), applied) {
        (Some(Err(e)), _) => out.goal(false, format!("the insert failed: {e}")),
        (Some(Ok(commit)), Some(done)) => {
            figures.push(format!(
                "insert {}, applied {} after its commit",
                secs(commit.duration_since(started)),
                secs(done.saturating_duration_since(*commit))
            ));
            let have = conn::int(
                s,
                &format!("SELECT count(*) FROM big WHERE id BETWEEN 1 AND {rows}"),
            )?;
            out.goal(
                have == rows as i64,
                format!("the subscriber has {have} of the {rows} rows"),
            );
            // A sample of the values, to see they arrived whole.
            let digest = "SELECT md5(string_agg(payload, '' ORDER BY id)) FROM big \
                          WHERE id % 1000 = 1";
            out.goal(
                conn::sql(p, digest)? == conn::sql(s, digest)?,
                "sampled payloads differ between provider and subscriber",
            );
            figures.push(format!(
                "toast n1 {} n2 {}",
                mb(conn::int(p, TOAST)? as u64 / 1024),
                mb(conn::int(s, TOAST)? as u64 / 1024)
            ));
        }
        _ if sender.lost.is_none() && apply.lost.is_none() => out.goal(
            false,
            format!(
                "the subscriber did not have the {rows} rows within {}; log:\n{}",
                secs(timeout),
                s.log_tail(15)
            ),
        ),
        _ => {}
    }
    for f in figures {
        out.figure(f);
    }
    sender.record(&mut out, p);
    apply.record(&mut out, s);
    out.keep_logs(&cluster.nodes);
    cluster.stop()?;
    Ok(out)
}

/// The one pid `query` returns on `node`.
fn pid(node: &Node, query: &str) -> Result<u32> {
    let text = conn::sql(node, query)?;
    text.trim()
        .parse()
        .with_context(|| format!("{}: not one pid from {query}: {text:?}", node.name))
}

/// Memory figures of a process, in kB.
#[derive(Debug, Clone, Copy, Default)]
struct Mem {
    rss: u64,
    /// Peak RSS over the process's life.
    hwm: u64,
    /// The anonymous part of RSS: private memory, shared buffers excluded.
    anon: u64,
}

fn mem(pid: u32) -> Option<Mem> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(':')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
    };
    Some(Mem {
        rss: field("VmRSS")?,
        hwm: field("VmHWM")?,
        anon: field("RssAnon").unwrap_or(0),
    })
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

/// One server process whose memory is followed.
struct Watched {
    role: &'static str,
    pid: u32,
    /// With the pid, tells this process from a later one that got the same pid.
    start: u64,
    before: Mem,
    last: Mem,
    peak_rss: u64,
    peak_anon: u64,
    /// Why the process is not the one measured at the start any more.
    lost: Option<String>,
}

impl Watched {
    fn new(role: &'static str, pid: u32) -> Result<Watched> {
        let start = procs::start_time(pid).with_context(|| format!("{role} {pid} is gone"))?;
        let before = mem(pid).with_context(|| format!("no /proc/{pid}/status for the {role}"))?;
        Ok(Watched {
            role,
            pid,
            start,
            before,
            last: before,
            peak_rss: before.rss,
            peak_anon: before.anon,
            lost: None,
        })
    }

    fn sample(&mut self) {
        if self.lost.is_some() {
            return;
        }
        match (procs::start_time(self.pid), mem(self.pid)) {
            (Some(start), Some(m)) if start == self.start => {
                self.last = m;
                self.peak_rss = self.peak_rss.max(m.rss);
                self.peak_anon = self.peak_anon.max(m.anon);
            }
            _ => {
                self.lost = Some(format!(
                    "the {} (pid {}) exited during the run",
                    self.role, self.pid
                ));
            }
        }
    }

    /// What the server says the pid of this role is now: another one means a restart.
    fn check(&mut self, now: Result<String>) {
        let Ok(now) = now else { return };
        let now: Vec<&str> = now.lines().map(str::trim).collect();
        let me = self.pid.to_string();
        if self.lost.is_none() && !now.is_empty() && !now.contains(&me.as_str()) {
            self.lost = Some(format!(
                "the {} (pid {}) was replaced by pid {}",
                self.role,
                self.pid,
                now.join(", ")
            ));
        }
    }

    fn record(&self, out: &mut Outcome, node: &Node) {
        let rss = self.peak_rss - self.before.rss;
        let hwm = self.last.hwm.saturating_sub(self.before.hwm);
        let anon = self.peak_anon.saturating_sub(self.before.anon);
        let end = self.last.rss as i64 - self.before.rss as i64;
        out.figure(format!(
            "{} RSS {}, peak +{} (HWM +{}, anon +{}; {}{} at the end)",
            self.role,
            mb(self.before.rss),
            mb(rss),
            mb(hwm),
            mb(anon),
            if end < 0 { "-" } else { "+" },
            mb(end.unsigned_abs())
        ));
        out.goal(
            rss < LIMIT_KB,
            format!("the {} grew by {} RSS (goal < 100 MB)", self.role, mb(rss)),
        );
        out.goal(
            hwm < LIMIT_KB,
            format!(
                "the {}'s peak RSS (VmHWM) grew by {} (goal < 100 MB)",
                self.role,
                mb(hwm)
            ),
        );
        if let Some(lost) = &self.lost {
            out.goal(
                false,
                format!(
                    "{lost}; its figures cover only the time before; {} log:\n{}",
                    node.name,
                    node.log_tail(15)
                ),
            );
        }
    }
}
