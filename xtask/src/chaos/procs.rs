//! Server processes seen from outside: the postmaster's pid from `postmaster.pid`, its children
//! from /proc, and signals sent through the shell's `kill` builtin (no procps needed, which a
//! fresh CI machine may lack). The servers run as an unprivileged account and we run as root,
//! so the signals are allowed.

use super::conn::poll;
use anyhow::{Context, Result, bail};
use harness::Node;
use std::time::Duration;
use xshell::{Shell, cmd};

/// The postmaster's pid: the first line of `postmaster.pid`.
pub fn postmaster(node: &Node) -> Result<u32> {
    let file = node.data.join("postmaster.pid");
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    text.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| format!("no pid in {}", file.display()))
}

/// State letter and parent pid of a process, from /proc/<pid>/stat (`pid (comm) S ppid …`; the
/// command name may hold spaces and parentheses, so parse after the last `)`).
fn stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// When a live (not zombie) process started, in clock ticks since boot (field 22 of
/// /proc/<pid>/stat): with the pid, it tells one process from a later one that reused the pid.
pub fn start_time(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = text[text.rfind(')')? + 1..].split_whitespace();
    // Field 3 (the state) comes first after the command name.
    if fields.next()? == "Z" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Whether `pid` is a process that has not exited (a zombie has exited; nobody may reap it
/// when the machine's init does not).
pub fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| state != 'Z')
}

/// The live children of `parent`: every backend and worker of a postmaster.
pub fn children(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| stat(pid).is_some_and(|(s, ppid)| ppid == parent && s != 'Z'))
        .collect()
}

/// Sends `signal` (KILL, STOP, CONT…) to every pid.
pub fn signal(pids: &[u32], signal: &str) -> Result<()> {
    if pids.is_empty() {
        return Ok(());
    }
    let sh = Shell::new()?;
    let line = format!(
        "kill -{signal} {}",
        pids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    );
    // A process may exit between listing and signalling; that is not an error here.
    cmd!(sh, "sh -c {line}").quiet().ignore_status().run()?;
    Ok(())
}

/// kill -9 of the postmaster, then waits until its children (which notice the death of their
/// postmaster) are gone too: a new postmaster refuses to start while any of them still holds
/// the old shared memory. Returns the children that outlived the postmaster by more than 30 s
/// (killed then), which would be a worker that never checks for postmaster death.
pub fn crash(node: &Node) -> Result<Vec<u32>> {
    let pm = postmaster(node)?;
    let kids = children(pm);
    signal(&[pm], "KILL")?;
    let gone = |pids: &[u32]| pids.iter().all(|&p| !alive(p));
    let mut stuck = Vec::new();
    if poll(Duration::from_secs(30), || gone(&[pm]) && gone(&kids)).is_none() {
        stuck = kids.iter().copied().filter(|&p| alive(p)).collect();
        signal(&stuck, "KILL")?;
        if poll(Duration::from_secs(10), || gone(&stuck)).is_none() {
            bail!("{}: processes {stuck:?} survive kill -9", node.name);
        }
    }
    // The new postmaster takes `postmaster.pid` for a live server as long as the old pid
    // exists at all, zombie included; the machine's init reaps orphans in its own time (or
    // never, in some containers). Once the postmaster is dead and its children gone, the file
    // is stale for certain.
    if poll(Duration::from_secs(2), || stat(pm).is_none()).is_none() {
        let _ = std::fs::remove_file(node.data.join("postmaster.pid"));
    }
    Ok(stuck)
}

/// Freezes a server: SIGSTOP to the postmaster first (so it forks nothing new), then to every
/// child. Returns what was stopped, for `thaw`.
pub fn freeze(node: &Node) -> Result<Vec<u32>> {
    let pm = postmaster(node)?;
    signal(&[pm], "STOP")?;
    let mut stopped = vec![pm];
    // A child forked just before the postmaster stopped may appear late; look twice.
    for _ in 0..2 {
        let kids: Vec<u32> = children(pm)
            .into_iter()
            .filter(|p| !stopped.contains(p))
            .collect();
        signal(&kids, "STOP")?;
        stopped.extend(kids);
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(stopped)
}

/// Lets a frozen server go on: children first, the postmaster last.
pub fn thaw(stopped: &[u32]) -> Result<()> {
    let (pm, kids) = stopped.split_first().context("nothing was stopped")?;
    signal(kids, "CONT")?;
    signal(&[*pm], "CONT")
}
