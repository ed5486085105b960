//! What every command gets: where the nodes come from (`-c` config or `--spec`), the output
//! format, connections by node name, and a way to run per-node work in parallel (a thread and a
//! connection per node).

use crate::{
    config::{self, Cluster, NodeConf},
    output::{Format, Rows},
    pq::Conn,
};
use anyhow::{Context, Result};
use serde_json::Value;
use std::{cell::OnceCell, path::PathBuf};

pub struct Ctx {
    pub config: PathBuf,
    pub spec: Option<PathBuf>,
    pub format: Format,
    cluster: OnceCell<Cluster>,
}

/// What a command produced: rows to print (or a JSON document replacing them), a one-line
/// verdict, and the exit status (0 fine, 2 "ran, found a problem" such as differences).
#[derive(Debug, Default)]
pub struct Outcome {
    pub rows: Rows,
    pub json: Option<Value>,
    pub verdict: Option<String>,
    pub exit: i32,
}

impl From<Rows> for Outcome {
    fn from(rows: Rows) -> Outcome {
        Outcome {
            rows,
            ..Outcome::default()
        }
    }
}

impl Outcome {
    pub fn print(&self, format: Format) {
        match (format, &self.json) {
            (Format::Json, Some(doc)) => {
                println!("{}", serde_json::to_string_pretty(doc).expect("json"));
            }
            _ if self.rows.columns.is_empty() => {}
            _ => self.rows.print(format),
        }
        if let Some(v) = &self.verdict {
            // In JSON mode stdout stays one document; the verdict goes to stderr.
            match format {
                Format::Table => println!("{v}"),
                Format::Json => eprintln!("{v}"),
            }
        }
    }
}

impl Ctx {
    pub fn new(config: PathBuf, spec: Option<PathBuf>, format: Format) -> Ctx {
        Ctx {
            config,
            spec,
            format,
            cluster: OnceCell::new(),
        }
    }

    /// The cluster's nodes, read on first use (so `--help` needs no file).
    pub fn cluster(&self) -> Result<&Cluster> {
        if let Some(c) = self.cluster.get() {
            return Ok(c);
        }
        let c = match &self.spec {
            Some(spec) => config::load_spec(spec)?,
            None => config::load_config(&self.config).with_context(|| {
                "no usable node list: pass -c spockctrl.json or --spec cluster.json".to_string()
            })?,
        };
        Ok(self.cluster.get_or_init(|| c))
    }

    pub fn node(&self, name: &str) -> Result<NodeConf> {
        self.cluster()?.node(name).cloned()
    }

    pub fn connect(&self, name: &str) -> Result<Conn> {
        connect(&self.node(name)?)
    }
}

pub fn connect(node: &NodeConf) -> Result<Conn> {
    Conn::connect(&node.conninfo(), &node.name)
}

/// Runs `f` for every node at once, each in its own thread; results in the nodes' order.
pub fn on_nodes<T: Send>(
    nodes: &[NodeConf],
    f: impl Fn(&NodeConf) -> Result<T> + Sync,
) -> Vec<Result<T>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = nodes.iter().map(|n| s.spawn(|| f(n))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("worker panicked")))
            })
            .collect()
    })
}

/// Like `on_nodes`, over per-node state the caller keeps (e.g. open connections).
pub fn on_nodes_mut<T: Send, R: Send>(
    items: &mut [T],
    f: impl Fn(&mut T) -> Result<R> + Sync,
) -> Vec<Result<R>> {
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = items.iter_mut().map(|i| s.spawn(move || f(i))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("worker panicked")))
            })
            .collect()
    })
}
