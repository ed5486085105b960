//! `cargo xtask cluster`: a local demo cluster from the staged kernel — N nodes on 127.0.0.1,
//! spock installed, node 1 replicating to every other node — kept running until Enter.

use anyhow::{Context, Result};
use harness::{Cluster, ClusterOptions};
use std::path::Path;

pub fn run(pg_config: &Path, nodes: usize) -> Result<()> {
    let kernel = harness::Kernel::from_pg_config(pg_config)?;
    let cluster = Cluster::start(&kernel, &ClusterOptions::default().nodes(nodes))?;
    for (i, n) in cluster.nodes.iter().enumerate() {
        n.configure("snowflake.node", &(i + 1).to_string())?;
        n.configure("lolor.node", &(i + 1).to_string())?;
        n.sql("CREATE EXTENSION spock; CREATE EXTENSION snowflake")?;
        n.sql(&format!(
            "SELECT spock.node_create('n{}', '{}')",
            i + 1,
            n.dsn("postgres")
        ))?;
        n.sql("CREATE TABLE demo(id int8 PRIMARY KEY DEFAULT snowflake.nextval(), note text)")?;
    }
    let provider = cluster.node(0);
    provider.sql("SELECT spock.repset_add_table('default', 'demo')")?;
    for (i, n) in cluster.nodes.iter().enumerate().skip(1) {
        n.sql(&format!(
            "SELECT spock.sub_create('sub_n1_n{}', '{}')",
            i + 1,
            provider.dsn("postgres")
        ))
        .context("creating the demo subscription")?;
    }
    println!(
        "pgEdge demo cluster (PostgreSQL {}), data in {}",
        kernel.major,
        cluster.dir().display()
    );
    for n in &cluster.nodes {
        println!(
            "  {}: {} {} -h 127.0.0.1 -p {} -U postgres",
            n.name,
            kernel
                .env()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            kernel.bin("psql").display(),
            n.port
        );
    }
    println!("Insert into table demo on n1 and read it on the others, e.g.");
    println!("  INSERT INTO demo(note) VALUES ('hello'); -- on n1");
    println!("Press Enter to stop the cluster.");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    cluster.stop()?;
    Ok(())
}
