//! How far a long, silent build step is: while a command writes into its log file, shows the
//! time elapsed and the units done (compiled objects, configure checks, test groups) out of
//! those expected — on one updating line on a terminal, as a plain line every 30 s otherwise.
//!
//! What is expected comes from the last complete run of the same step (remembered next to the
//! log's directory), or from an estimate the step gives; without either only the count shows.

use std::{
    fs,
    io::{IsTerminal, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// What a step counts in its log.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unit {
    /// `cc … -c …` lines: objects compiled by make.
    Objects,
    /// `checking …` lines of configure.
    Checks,
    /// Test results of pg_regress: `ok`/`not ok` lines (16 on), `… ... ok`/`FAILED` before.
    Tests,
}

impl Unit {
    /// The unit of a step, from the words describing it.
    pub fn of(what: &str) -> Unit {
        if what.starts_with("configure") {
            Unit::Checks
        } else if ["check", "test", "suite"].iter().any(|w| what.contains(w)) {
            Unit::Tests
        } else {
            Unit::Objects
        }
    }

    fn name(self) -> &'static str {
        match self {
            Unit::Objects => "objects",
            Unit::Checks => "checks",
            Unit::Tests => "tests",
        }
    }

    /// Whether a log line is one unit of work.
    pub fn counts(self, line: &str) -> bool {
        match self {
            Unit::Objects => {
                let first = line.split_whitespace().next().unwrap_or("");
                let compiler = first.rsplit('/').next().unwrap_or(first);
                (compiler.ends_with("gcc") || compiler.ends_with("cc") || compiler == "clang")
                    && line.contains(" -c ")
            }
            Unit::Checks => line.starts_with("checking "),
            Unit::Tests => {
                let l = line.trim_start();
                l.starts_with("ok ")
                    || l.starts_with("not ok ")
                    || l.contains(" ... ok")
                    || l.contains(" ... FAILED")
            }
        }
    }
}

/// Watches one command's log while it runs.
pub struct Meter {
    what: String,
    unit: Unit,
    log: PathBuf,
    offset: u64,
    partial: String,
    done: usize,
    expected: Option<usize>,
    memo: PathBuf,
    started: Instant,
    last_shown: Instant,
    terminal: bool,
}

/// How often a plain (non-terminal) progress line is printed.
const PLAIN_EVERY: Duration = Duration::from_secs(30);

impl Meter {
    /// Starts watching `log` from its current end for the step `what`; `estimate` is used
    /// when no earlier run of the step was remembered.
    pub fn start(log: &Path, what: &str, estimate: Option<usize>) -> Meter {
        let offset = fs::metadata(log).map(|m| m.len()).unwrap_or(0);
        let memo = memo_path(log, what);
        let remembered = fs::read_to_string(&memo)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        Meter {
            what: what.to_string(),
            unit: Unit::of(what),
            log: log.to_path_buf(),
            offset,
            partial: String::new(),
            done: 0,
            expected: remembered.or(estimate).filter(|&n| n > 0),
            memo,
            started: Instant::now(),
            last_shown: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// Reads what the command wrote since the last call and shows the progress when due.
    pub fn tick(&mut self) {
        self.read_new();
        let due = if self.terminal {
            true
        } else {
            self.last_shown.elapsed() >= PLAIN_EVERY
        };
        if due {
            self.last_shown = Instant::now();
            let line = self.status();
            let mut err = std::io::stderr();
            if self.terminal {
                let _ = write!(err, "\r\x1b[K{line}");
            } else {
                let _ = writeln!(err, "{line}");
            }
            let _ = err.flush();
        }
    }

    /// Ends the display; a successful run's count is what the next run expects.
    pub fn finish(mut self, success: bool) {
        self.read_new();
        if self.terminal {
            eprint!("\r\x1b[K");
        }
        eprintln!(
            "  {} {} after {} ({} {})",
            self.what,
            if success { "done" } else { "failed" },
            clock(self.started.elapsed()),
            self.done,
            self.unit.name()
        );
        if success && self.done > 0 {
            let _ = fs::write(&self.memo, self.done.to_string());
        }
    }

    /// The progress line: step, units done (of expected), elapsed time.
    pub fn status(&self) -> String {
        let elapsed = clock(self.started.elapsed());
        match self.expected {
            Some(total) => {
                // An estimate can be short: never claim more than 99% before the end.
                let pct = (self.done * 100 / total).min(99);
                format!(
                    "  {}: {}/{} {} ({pct}%), {elapsed}",
                    self.what,
                    self.done,
                    total,
                    self.unit.name()
                )
            }
            None => format!(
                "  {}: {} {}, {elapsed}",
                self.what,
                self.done,
                self.unit.name()
            ),
        }
    }

    fn read_new(&mut self) {
        let Ok(mut file) = fs::File::open(&self.log) else {
            return;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut bytes = Vec::new();
        if file.read_to_end(&mut bytes).is_err() {
            return;
        }
        self.offset += bytes.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&bytes));
        self.done += count_complete_lines(&mut self.partial, self.unit);
    }
}

/// Counts the units among the complete lines of `text`, leaving an unfinished last line in it.
fn count_complete_lines(text: &mut String, unit: Unit) -> usize {
    let Some(end) = text.rfind('\n') else {
        return 0;
    };
    let n = text[..end].lines().filter(|l| unit.counts(l)).count();
    text.drain(..=end);
    n
}

/// Where the count of the last complete run of `what` is kept: beside the directory holding
/// the log (a kernel's log sits in a directory per input hash, which a new build replaces).
fn memo_path(log: &Path, what: &str) -> PathBuf {
    let slug: String = what
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let dir = log
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    dir.join(format!(".progress-{slug}"))
}

/// `1m05s` style.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// How many objects `make world-bin` compiles in the source tree `src`, roughly: its C files
/// outside tests and tools (some are compiled twice, for the server and for clients).
pub fn estimate_objects(src: &Path) -> Option<usize> {
    fn walk(dir: &Path, n: &mut usize) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            if p.is_dir() {
                if !matches!(&*name, "test" | "tools" | "tutorial" | "win32") {
                    walk(&p, n);
                }
            } else if name.ends_with(".c") {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(&src.join("src"), &mut n);
    walk(&src.join("contrib"), &mut n);
    (n > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compile_lines_configure_checks_and_tests_are_counted() {
        assert!(Unit::Objects.counts("gcc -Wall -O2 -I../../src/include -c -o heapam.o heapam.c"));
        assert!(!Unit::Objects.counts("ccache cc -c -o a.o a.c"));
        assert!(Unit::Objects.counts("/usr/bin/cc -O2 -c x.c -o x.o"));
        assert!(!Unit::Objects.counts("gcc -o postgres a.o b.o"));
        assert!(!Unit::Objects.counts("make[2]: Entering directory 'src/port'"));
        assert!(Unit::Checks.counts("checking for gcc... gcc"));
        assert!(!Unit::Checks.counts("configure: creating ./config.status"));
        assert!(Unit::Tests.counts("ok 12        - old_value     31 ms"));
        assert!(Unit::Tests.counts("not ok 3     - marker        5 ms"));
        assert!(Unit::Tests.counts("test marker                    ... ok           12 ms"));
        assert!(Unit::Tests.counts("     boolean                   ... FAILED       40 ms"));
        assert!(!Unit::Tests.counts("# All 5 tests passed."));
        assert_eq!(Unit::of("configure"), Unit::Checks);
        assert_eq!(Unit::of("make world-bin"), Unit::Objects);
        assert_eq!(Unit::of("core regression tests"), Unit::Tests);
    }

    #[test]
    fn an_unfinished_line_waits_for_its_end() {
        let mut text = String::from("checking a\nchecking b\nchec");
        assert_eq!(count_complete_lines(&mut text, Unit::Checks), 2);
        assert_eq!(text, "chec");
        text.push_str("king c\n");
        assert_eq!(count_complete_lines(&mut text, Unit::Checks), 1);
        assert!(text.is_empty());
    }

    #[test]
    fn the_count_of_a_complete_run_is_what_the_next_run_expects() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("pg18-abc");
        fs::create_dir(&run).unwrap();
        let log = run.join("build.log");
        fs::write(&log, "earlier output\n").unwrap();
        let mut m = Meter::start(&log, "make world-bin", Some(1000));
        assert!(m.status().contains("0/1000 objects (0%)"), "{}", m.status());
        let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
        writeln!(
            f,
            "gcc -c -o a.o a.c\ngcc -c -o b.o b.c\ngcc -o prog a.o b.o"
        )
        .unwrap();
        m.tick();
        assert!(m.status().contains("2/1000 objects"), "{}", m.status());
        m.finish(true);
        // The next run of the step (in a new directory) expects the 2 objects just counted.
        let next = dir.path().join("pg18-def");
        fs::create_dir(&next).unwrap();
        let m = Meter::start(&next.join("build.log"), "make world-bin", Some(1000));
        assert!(m.status().contains("0/2 objects"), "{}", m.status());
    }

    #[test]
    fn an_estimate_that_falls_short_never_shows_done() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x").join("build.log");
        fs::create_dir_all(log.parent().unwrap()).unwrap();
        fs::write(&log, "").unwrap();
        let mut m = Meter::start(&log, "configure", Some(1));
        fs::write(&log, "checking a\nchecking b\n").unwrap();
        m.tick();
        assert!(m.status().contains("2/1 checks (99%)"), "{}", m.status());
    }
}
