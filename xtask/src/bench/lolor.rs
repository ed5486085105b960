//! lolor large-object throughput against native large objects.

use anyhow::{Result, bail};

pub fn run(_kernel: &harness::Kernel) -> Result<()> {
    bail!("the lolor benchmark arrives with the lolor implementation")
}
