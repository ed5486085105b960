//! snowflake.nextval against native nextval on the same server: once through the same pgbench
//! client loop (one call per statement) and once as an in-server loop (the functions alone).

use super::{pgbench_tps, report};
use anyhow::Result;
use harness::{Cluster, ClusterOptions, Kernel};

const GOAL: f64 = 0.9;
const ROUNDS: usize = 3;

pub fn run(kernel: &Kernel) -> Result<()> {
    let cluster = Cluster::start(kernel, &ClusterOptions::default().preload(None))?;
    let n = cluster.node(0);
    n.configure("snowflake.node", "1")?;
    n.sql(
        "CREATE EXTENSION snowflake; CREATE SEQUENCE native_seq; CREATE SEQUENCE flake_seq; \
         CREATE FUNCTION bench_rate(expr text, calls int) RETURNS float8 LANGUAGE plpgsql AS $$ \
         DECLARE t0 timestamptz := clock_timestamp(); BEGIN \
           EXECUTE format('SELECT count(%s) FROM generate_series(1, %s)', expr, calls); \
           RETURN calls / extract(epoch FROM clock_timestamp() - t0); END $$",
    )?;
    println!(
        "snowflake.nextval vs native nextval, PostgreSQL {} (best of {ROUNDS} interleaved rounds)",
        kernel.major
    );

    for clients in [1, 4] {
        let (mut ours, mut native) = (0f64, 0f64);
        for _ in 0..ROUNDS {
            native = native.max(pgbench_tps(
                n,
                cluster.dir(),
                "native",
                "SELECT nextval('native_seq');\n",
                clients,
                5,
            )?);
            ours = ours.max(pgbench_tps(
                n,
                cluster.dir(),
                "flake",
                "SELECT snowflake.nextval('flake_seq');\n",
                clients,
                5,
            )?);
        }
        report(
            &format!("pgbench, {clients} client(s)"),
            "tps",
            ours,
            native,
            GOAL,
        );
    }

    let rate = |expr: &str| -> Result<f64> {
        Ok(n.sql(&format!("SELECT bench_rate($e${expr}$e$, 1000000)"))?
            .parse()?)
    };
    let (mut ours, mut native) = (0f64, 0f64);
    for _ in 0..ROUNDS {
        native = native.max(rate("nextval('native_seq')")?);
        ours = ours.max(rate("snowflake.nextval('flake_seq')")?);
    }
    report("in-server loop, 1M calls", "ids/s", ours, native, GOAL);
    cluster.stop()?;
    Ok(())
}
