//! Network namespaces for `partition`: one namespace per node plus a hub namespace holding a
//! bridge, each node wired to the bridge by a veth pair and addressed 10.77.0.<i>. Cutting a
//! node off is taking its veth end on the bridge down: its packets then vanish silently, as in
//! a real partition (no resets, no "unreachable"). Everything lives in namespaces named after
//! this process, so the machine's own network is never touched and parallel runs do not
//! collide; dropping `Net` deletes them, which also removes the veth pairs. Needs root and
//! iproute2's `ip`; iptables/nft are not used.

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

pub struct Net {
    prefix: String,
    nodes: usize,
}

/// Runs `ip` with `args`; the error carries its stderr.
fn ip(args: &[&str]) -> Result<()> {
    let sh = Shell::new()?;
    let out = cmd!(sh, "ip {args...}")
        .quiet()
        .ignore_status()
        .output()
        .context("cannot run ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Net {
    /// Creates namespaces and links for `nodes` nodes; fails (with ip's reason) where the
    /// machine does not allow it, e.g. without CAP_NET_ADMIN or CAP_SYS_ADMIN.
    pub fn create(nodes: usize) -> Result<Net> {
        remove_stale();
        let net = Net {
            prefix: format!("chaos{}", std::process::id()),
            nodes,
        };
        let hub = net.hub();
        ip(&["netns", "add", &hub])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for i in 0..nodes {
            let (ns, port) = (net.ns(i), format!("v{i}"));
            ip(&["netns", "add", &ns])?;
            // Created straight inside the namespaces: the names never meet the root's devices.
            ip(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &hub,
            ])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &hub, "link", "set", &port, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let cidr = format!("{}/24", Net::addr(i));
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(net)
    }

    fn hub(&self) -> String {
        format!("{}-hub", self.prefix)
    }

    /// The namespace of node `i` (0-based).
    pub fn ns(&self, i: usize) -> String {
        format!("{}-n{}", self.prefix, i + 1)
    }

    /// Node `i`'s address.
    pub fn addr(i: usize) -> String {
        format!("10.77.0.{}", i + 1)
    }

    /// Cuts node `i` off from every other node.
    pub fn cut(&self, i: usize) -> Result<()> {
        ip(&["-n", &self.hub(), "link", "set", &format!("v{i}"), "down"])
    }

    pub fn heal(&self, i: usize) -> Result<()> {
        ip(&["-n", &self.hub(), "link", "set", &format!("v{i}"), "up"])
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 0..self.nodes {
            let _ = ip(&["netns", "del", &self.ns(i)]);
        }
        let _ = ip(&["netns", "del", &self.hub()]);
    }
}

/// Deletes namespaces left by chaos runs that died without cleaning up (their pid is gone).
fn remove_stale() {
    let Ok(sh) = Shell::new() else { return };
    let Ok(list) = cmd!(sh, "ip netns list").quiet().ignore_stderr().read() else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name
            .strip_prefix("chaos")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}
