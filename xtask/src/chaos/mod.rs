//! `cargo xtask chaos`: named fault scenarios (crashes, a frozen node, conflict storms, stops in
//! awkward states, a network partition, a lost slot, memory under one huge transaction) against
//! throw-away clusters of the staged kernel, ending in one table of figures with a PASS/FAIL verdict per scenario.
//!
//! Figures are counted on the client side: a row is acknowledged only once the client's COMMIT
//! returned, and the subscriber's rows are compared with that list, never with what spock says
//! about itself.

mod conn;
mod crash;
mod memory;
mod mesh;
mod netns;
mod partition;
mod pause;
mod procs;
mod shutdown;
mod slot_lost;
mod storm;
mod writer;

use anyhow::{Result, bail};
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// kill -9 of the subscriber's postmaster, N times, while the provider takes writes.
    CrashSub,
    /// kill -9 of the provider's postmaster, N times, while it takes writes.
    CrashProv,
    /// SIGSTOP of one node of a 3-node mesh (postmaster and children) for a while, then SIGCONT.
    Pause,
    /// Conflicting UPDATE/DELETE/re-INSERT on 50 keys from every node of a 3-node mesh.
    Storm,
    /// `pg_ctl stop -m fast` of a subscriber in five awkward states.
    Shutdown,
    /// One node of a 3-node mesh cut off the network (namespaces), then healed.
    Partition,
    /// The provider's slot dropped while the subscription is disabled.
    SlotLost,
    /// RSS of the walsender and the apply worker while one transaction of 2 kB TOASTed rows
    /// replicates.
    Memory,
}

impl Scenario {
    const ALL: [Scenario; 8] = [
        Scenario::CrashSub,
        Scenario::CrashProv,
        Scenario::Pause,
        Scenario::Storm,
        Scenario::Shutdown,
        Scenario::Partition,
        Scenario::SlotLost,
        Scenario::Memory,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::CrashSub => "crash-sub",
            Scenario::CrashProv => "crash-prov",
            Scenario::Pause => "pause",
            Scenario::Storm => "storm",
            Scenario::Shutdown => "shutdown",
            Scenario::Partition => "partition",
            Scenario::SlotLost => "slot-lost",
            Scenario::Memory => "memory",
        }
    }
}

/// What to run and how hard.
#[derive(Debug, Clone)]
pub struct Plan {
    pub scenarios: Vec<Scenario>,
    pub budget: Budget,
}

/// Durations and repetitions; the short set keeps a full run to a few minutes on two cores.
#[derive(Debug, Clone)]
pub struct Budget {
    /// kill -9 cycles per crash scenario.
    pub crash_cycles: u32,
    /// Client write rate of the crash scenarios (transactions per second).
    pub write_rate: u32,
    pub pause: Duration,
    pub storm: Duration,
    /// How long the partitioned node stays cut off.
    pub partition: Duration,
    /// How long convergence may take before a scenario counts as diverged.
    pub converge_timeout: Duration,
    /// Rows of the one transaction of `memory` (2 kB each).
    pub memory_rows: u64,
}

impl Plan {
    /// `scenarios` empty means all of them.
    pub fn new(long: bool, scenarios: Vec<Scenario>) -> Plan {
        let scenarios = if scenarios.is_empty() {
            Scenario::ALL.to_vec()
        } else {
            scenarios
        };
        let budget = if long {
            Budget {
                crash_cycles: 20,
                write_rate: 400,
                pause: Duration::from_secs(60),
                storm: Duration::from_secs(600),
                partition: Duration::from_secs(120),
                converge_timeout: Duration::from_secs(600),
                memory_rows: 1_000_000,
            }
        } else {
            Budget {
                crash_cycles: 3,
                write_rate: 300,
                pause: Duration::from_secs(20),
                storm: Duration::from_secs(20),
                partition: Duration::from_secs(15),
                converge_timeout: Duration::from_secs(120),
                memory_rows: 100_000,
            }
        };
        Plan { scenarios, budget }
    }

    /// The slice `cargo xtask test` runs: the scenarios that guard against data loss and hung
    /// stops, small enough for about three minutes.
    pub fn for_test_suite() -> Plan {
        let mut plan = Plan::new(
            false,
            vec![
                Scenario::CrashSub,
                Scenario::CrashProv,
                Scenario::Shutdown,
                Scenario::SlotLost,
            ],
        );
        plan.budget.crash_cycles = 2;
        plan
    }
}

/// One scenario's result: figures to print, and the goals it missed.
#[derive(Debug, Default)]
pub struct Outcome {
    pub figures: Vec<String>,
    pub failures: Vec<String>,
    /// Set when the scenario could not run on this machine (and why).
    pub skipped: Option<String>,
    /// Where the server logs of a failed scenario were copied.
    pub logs: Option<PathBuf>,
}

impl Outcome {
    pub fn figure(&mut self, text: impl Into<String>) {
        self.figures.push(text.into());
    }

    /// Records a figure's goal: `ok` false adds `failure` to the missed goals.
    pub fn goal(&mut self, ok: bool, failure: impl Into<String>) {
        if !ok {
            self.failures.push(failure.into());
        }
    }

    /// After a missed goal, copies the nodes' server logs somewhere that outlives the cluster
    /// (whose directory goes when it is dropped), so the failure can be looked into.
    pub fn keep_logs(&mut self, nodes: &[harness::Node]) {
        if self.failures.is_empty() {
            return;
        }
        let dir = std::env::temp_dir().join(format!(
            "pgedge-chaos-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
        ));
        if std::fs::create_dir_all(&dir).is_ok() {
            for n in nodes {
                let _ = std::fs::copy(&n.log, dir.join(format!("{}.log", n.name)));
            }
            self.logs = Some(dir);
        }
    }

    fn verdict(&self) -> &'static str {
        if self.skipped.is_some() {
            "SKIP"
        } else if self.failures.is_empty() {
            "PASS"
        } else {
            "FAIL"
        }
    }
}

/// The `storm` scenario for `seconds`: the conflict-storm figures of `bench multimaster`.
pub fn storm_outcome(kernel: &harness::Kernel, seconds: u64) -> Result<Outcome> {
    let mut budget = Plan::new(false, vec![Scenario::Storm]).budget;
    budget.storm = Duration::from_secs(seconds);
    storm::run(kernel, &budget)
}

/// Seconds with one decimal, the unit of every duration in the table.
pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

pub fn run(pg_config: &Path, plan: &Plan) -> Result<()> {
    let kernel = harness::Kernel::from_pg_config(pg_config)?;
    println!(
        "chaos: PostgreSQL {}, scenarios: {}",
        kernel.major,
        plan.scenarios
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut results = Vec::new();
    for &scenario in &plan.scenarios {
        println!("chaos: {} …", scenario.name());
        let started = std::time::Instant::now();
        let b = &plan.budget;
        let outcome = match scenario {
            Scenario::CrashSub => crash::run(&kernel, b, crash::Victim::Subscriber),
            Scenario::CrashProv => crash::run(&kernel, b, crash::Victim::Provider),
            Scenario::Pause => pause::run(&kernel, b),
            Scenario::Storm => storm::run(&kernel, b),
            Scenario::Shutdown => shutdown::run(&kernel),
            Scenario::Partition => partition::run(&kernel, b),
            Scenario::SlotLost => slot_lost::run(&kernel),
            Scenario::Memory => memory::run(&kernel, b),
        };
        // A scenario that could not even set up is a failure of its own, not an abort of the
        // whole run: the other scenarios still say something.
        let outcome = outcome.unwrap_or_else(|e| Outcome {
            failures: vec![format!("error: {e:#}")],
            ..Outcome::default()
        });
        println!(
            "chaos: {} {} in {}",
            scenario.name(),
            outcome.verdict(),
            secs(started.elapsed())
        );
        results.push((scenario, outcome));
    }
    print_table(&results);
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, o)| o.verdict() == "FAIL")
        .map(|(s, _)| s.name())
        .collect();
    if !failed.is_empty() {
        bail!("chaos: goals missed in {}", failed.join(", "));
    }
    Ok(())
}

fn print_table(results: &[(Scenario, Outcome)]) {
    println!();
    println!("{:<11} {:<7} figures", "scenario", "verdict");
    println!("{}", "-".repeat(100));
    for (scenario, o) in results {
        let figures = match &o.skipped {
            Some(reason) => format!("{}: skipped — {reason}", scenario.name()),
            None => o.figures.join("; "),
        };
        println!("{:<11} {:<7} {figures}", scenario.name(), o.verdict());
        for f in &o.failures {
            println!("{:<11} {:<7}   missed: {f}", "", "");
        }
        if let Some(dir) = &o.logs {
            println!("{:<11} {:<7}   server logs: {}", "", "", dir.display());
        }
    }
}
