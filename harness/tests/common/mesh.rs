//! Spock nodes and subscriptions as most tests set them up, so that each test file states only
//! what is particular to it (its settings, schema and topology) rather than a copy of the
//! node-creation and subscription loops. Tests whose setup is the point of the test (odd
//! `node_create` arguments, nodes created by particular roles, other databases) do their own.

use harness::{Cluster, ClusterOptions, Kernel, Node};

/// How long setup waits for apply workers to stream. Setup is not what a test checks, so the
/// wait is generous: on a busy 2-core machine the first apply workers can take a while, and a
/// broken setup still fails, only later.
const SETUP_SECS: u64 = 120;

/// A cluster of spock nodes n1…nN (`node_create` with the node's own `postgres` DSN), built
/// step by step: `Mesh::new(3).schema(SQL).replicate_public().subscribe_all().start(kernel)`.
#[allow(dead_code)]
pub struct Mesh {
    nodes: usize,
    spare: usize,
    opts: ClusterOptions,
    schema: String,
    replicate_public: bool,
    subscribe_all: bool,
}

#[allow(dead_code)]
impl Mesh {
    /// `nodes` spock nodes with the default cluster options and nothing else.
    pub fn new(nodes: usize) -> Mesh {
        Mesh {
            nodes,
            spare: 0,
            opts: ClusterOptions::default(),
            schema: String::new(),
            replicate_public: false,
            subscribe_all: false,
        }
    }

    /// The servers' options (settings, preload, environment); their node count is `new`'s.
    pub fn options(mut self, opts: ClusterOptions) -> Mesh {
        self.opts = opts;
        self
    }

    /// `count` more servers after the spock nodes, with the spock extension but no spock node:
    /// nodes a test adds to the mesh itself (`spock.add_node`).
    pub fn spare(mut self, count: usize) -> Mesh {
        self.spare = count;
        self
    }

    /// SQL run on every spock node once it is a node (tables, roles, other extensions).
    pub fn schema(mut self, sql: &str) -> Mesh {
        self.schema = sql.to_string();
        self
    }

    /// Every spock node puts its public tables (those `schema` made) in its `default` set.
    pub fn replicate_public(mut self) -> Mesh {
        self.replicate_public = true;
        self
    }

    /// Every spock node subscribes to every other (`subscribe_all`), and `start` returns once
    /// all of them stream.
    pub fn subscribe_all(mut self) -> Mesh {
        self.subscribe_all = true;
        self
    }

    pub fn start(self, kernel: &Kernel) -> Cluster {
        let cluster = Cluster::start(kernel, &self.opts.nodes(self.nodes + self.spare)).unwrap();
        for (i, node) in cluster.nodes.iter().enumerate() {
            node.sql("CREATE EXTENSION spock").unwrap();
            if i >= self.nodes {
                continue;
            }
            // Harness nodes are named n1, n2, …, and so are the spock nodes, so that a
            // subscription's name can be made from its two nodes' names.
            node.sql(&format!(
                "SELECT spock.node_create('{}', '{}')",
                node.name,
                node.dsn("postgres")
            ))
            .unwrap();
            if !self.schema.is_empty() {
                node.sql(&self.schema).unwrap();
            }
            if self.replicate_public {
                node.sql("SELECT spock.repset_add_all_tables('default', ARRAY['public'])")
                    .unwrap();
            }
        }
        if self.subscribe_all {
            subscribe_all(&cluster.nodes[..self.nodes], "");
        }
        cluster
    }
}

/// `subscriber` subscribes to `provider` as `name`; `extra` is appended to `sub_create`'s
/// arguments (starting with a comma), e.g. `", synchronize_data := true"`.
#[allow(dead_code)]
pub fn sub_create(subscriber: &Node, name: &str, provider: &Node, extra: &str) {
    subscriber
        .sql(&format!(
            "SELECT spock.sub_create('{name}', '{}'{extra})",
            provider.dsn("postgres")
        ))
        .unwrap_or_else(|e| panic!("{}: sub_create {name}: {e}", subscriber.name));
}

/// Waits until `node` has exactly `slots` active replication slots: a provider's slot is
/// active once its subscriber's apply worker streams from it.
#[allow(dead_code)]
pub fn wait_active_slots(node: &Node, slots: usize) {
    super::wait_for(
        node,
        "postgres",
        "SELECT count(*) FROM pg_replication_slots WHERE active",
        &slots.to_string(),
        SETUP_SECS,
    );
}

/// `subscriber` becomes `provider`'s one subscriber (`sub_create` as above) and this returns
/// once it streams.
#[allow(dead_code)]
pub fn subscribe(subscriber: &Node, name: &str, provider: &Node, extra: &str) {
    sub_create(subscriber, name, provider, extra);
    wait_active_slots(provider, 1);
}

/// A full mesh of `nodes` (spock nodes named as their harness nodes): each subscribes to every
/// other as `sub_<provider>_<subscriber>` (`extra` as for `sub_create`), with the default
/// `forward_origins = '{}'`, so each node sends only the changes made on it. Returns once every
/// node streams to all the others.
#[allow(dead_code)]
pub fn subscribe_all(nodes: &[Node], extra: &str) {
    for s in nodes {
        for p in nodes {
            if s.name != p.name {
                sub_create(s, &format!("sub_{}_{}", p.name, s.name), p, extra);
            }
        }
    }
    for node in nodes {
        wait_active_slots(node, nodes.len() - 1);
    }
}
