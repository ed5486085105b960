//! Throw-away PostgreSQL clusters for tests, benchmarks and demos: N servers from a staged (or
//! installed) kernel, each with its own data and socket directory, listening on a free port on
//! 127.0.0.1 and configured for logical replication. Run as root, the servers run as an
//! unprivileged account (`initdb`/`postgres` refuse root). Servers stop when the cluster is
//! dropped, also when a test panics; then the data directories and logs are kept for inspection.

mod kernel;
mod node;

pub use kernel::Kernel;
pub use node::{Node, StopMode};

use anyhow::Result;
use std::path::Path;

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub nodes: usize,
    /// `shared_preload_libraries`; `None` leaves the server default (nothing preloaded).
    pub preload: Option<String>,
    /// Extra `postgresql.conf` lines, `name = value`, applied to every node.
    pub settings: Vec<(String, String)>,
    /// Environment variables of the servers (`pg_ctl` and the postmaster it starts), on top of
    /// this process's own.
    pub server_env: Vec<(String, String)>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 1,
            preload: Some("spock".into()),
            settings: Vec::new(),
            server_env: Vec::new(),
        }
    }
}

impl ClusterOptions {
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }

    pub fn preload(mut self, libs: Option<&str>) -> Self {
        self.preload = libs.map(String::from);
        self
    }

    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    pub fn server_env(mut self, name: &str, value: &str) -> Self {
        self.server_env.push((name.into(), value.into()));
        self
    }
}

/// Running servers plus the directory holding their data and logs.
pub struct Cluster {
    pub nodes: Vec<Node>,
    dir: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Initialises and starts `opts.nodes` servers (`n1`, `n2`, …).
    pub fn start(kernel: &Kernel, opts: &ClusterOptions) -> Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix("pgedge-cluster-")
            .tempdir()?;
        node::make_traversable(dir.path())?;
        let mut cluster = Cluster {
            nodes: Vec::new(),
            dir: Some(dir),
        };
        for i in 1..=opts.nodes {
            let root = cluster.dir().join(format!("n{i}"));
            let node = Node::init(kernel, &format!("n{i}"), &root, opts)?;
            cluster.nodes.push(node);
            cluster.nodes.last().expect("just pushed").start()?;
        }
        Ok(cluster)
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("present until drop").path()
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// Stops every node cleanly; an error names the node that did not stop.
    pub fn stop(&self) -> Result<()> {
        for n in &self.nodes {
            n.stop(StopMode::Fast)?;
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &self.nodes {
            if n.is_running() && n.stop(StopMode::Fast).is_err() {
                let _ = n.stop(StopMode::Immediate);
            }
        }
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            let kept = dir.keep();
            eprintln!(
                "test failed: cluster data and server logs kept in {}",
                kept.display()
            );
        }
    }
}
