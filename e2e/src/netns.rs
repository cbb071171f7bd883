//! Brokers in network namespaces of their own, so a test can cut the network between them.
//!
//! Inside a [`crate::sandbox`], every broker gets a network namespace (`broker-<id>`) whose
//! `eth0` is one end of a veth pair, the other end on the bridge [`BRIDGE`]. The sandbox itself
//! holds the bridge's address [`GATEWAY`], so the test's clients reach every broker directly,
//! whatever is cut between the brokers. A cut drops packets silently (iptables `DROP` in the
//! sending broker's `OUTPUT` chain), as a failed switch or a partitioned network does: open
//! connections hang until their timeouts, new ones never complete. A slow link is an HTB
//! class in the sending broker's `eth0` queueing discipline, rate-limited, that the packets to
//! one destination go through: what exceeds the rate waits in its queue (delay), and is
//! dropped once the queue is full.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{ensure, Context as _, Result};

use crate::cluster::NodeId;
use crate::sandbox;

/// The bridge the brokers' namespaces hang on.
pub const BRIDGE: &str = "oxbrokers0";
/// The sandbox's address on the bridge, the address the test's clients connect from.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 234, 0, 1);
/// Prefix length of the brokers' network.
const PREFIX: u8 = 24;

/// The brokers' network: one namespace per broker, and the cuts in force.
#[derive(Debug)]
pub struct BrokerNetwork {
    members: BTreeMap<NodeId, Ipv4Addr>,
    /// (from, to): packets from `from` to `to` are dropped.
    cuts: BTreeSet<(NodeId, NodeId)>,
    /// (from, to): some of the packets from `from` to `to` are dropped.
    degraded: BTreeSet<(NodeId, NodeId)>,
    /// (from, to): what `from` sends to `to` is rate-limited.
    slowed: BTreeSet<(NodeId, NodeId)>,
}

impl BrokerNetwork {
    /// Makes the bridge and a namespace for each broker. Only inside a sandbox (so everything
    /// goes when the test ends), and one per sandbox.
    pub fn create(ids: &[NodeId]) -> Result<BrokerNetwork> {
        ensure!(
            sandbox::inside(),
            "brokers in network namespaces need a sandbox: run the test through sandbox::sandboxed"
        );
        for tool in ["ip", "iptables", "tc"] {
            ensure!(
                sandbox::has_command(tool),
                "brokers in network namespaces need `{tool}` (iproute2, iptables)"
            );
        }
        sandbox::prepare()?;
        let gateway = format!("{GATEWAY}/{PREFIX}");
        sandbox::run("ip", &["link", "add", BRIDGE, "type", "bridge"])
            .context("one broker network per sandbox")?;
        sandbox::run("ip", &["addr", "add", &gateway, "dev", BRIDGE])?;
        sandbox::run("ip", &["link", "set", BRIDGE, "up"])?;
        let mut members = BTreeMap::new();
        for id in ids {
            let host = u8::try_from(*id)
                .ok()
                .and_then(|id| id.checked_add(10))
                .filter(|host| *host < 255)
                .with_context(|| format!("no address for broker {id}"))?;
            let [a, b, c, _] = GATEWAY.octets();
            let address = Ipv4Addr::new(a, b, c, host);
            let namespace = namespace(*id);
            let host_end = format!("oxveth{id}");
            let cidr = format!("{address}/{PREFIX}");
            sandbox::run("ip", &["netns", "add", &namespace])?;
            sandbox::attach(&namespace, &host_end, BRIDGE, &cidr)
                .with_context(|| format!("setting up broker {id}'s network"))?;
            members.insert(*id, address);
        }
        Ok(BrokerNetwork {
            members,
            cuts: BTreeSet::new(),
            degraded: BTreeSet::new(),
            slowed: BTreeSet::new(),
        })
    }

    /// The broker's address on the bridge.
    pub fn address(&self, id: NodeId) -> Result<Ipv4Addr> {
        self.members
            .get(&id)
            .copied()
            .with_context(|| format!("no broker {id} in the network"))
    }

    /// A command that runs `program` in the broker's namespace.
    pub fn command(&self, id: NodeId, program: &std::path::Path) -> Result<Command> {
        self.address(id)?;
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &namespace(id)]).arg(program);
        Ok(command)
    }

    /// Drops every packet `from` sends to `to` (one way: `to`'s packets still arrive, but a
    /// connection either opens needs both ways, so none completes).
    pub fn cut(&mut self, from: NodeId, to: NodeId) -> Result<()> {
        ensure!(from != to, "a broker cannot be cut from itself");
        if self.cuts.contains(&(from, to)) {
            return Ok(());
        }
        let destination = self.address(to)?.to_string();
        iptables(from, &["-A", "OUTPUT", "-d", &destination, "-j", "DROP"])?;
        self.cuts.insert((from, to));
        Ok(())
    }

    /// Drops each packet `from` sends to `to` with probability `loss` (0 to 1): a lossy link,
    /// over which TCP still gets through, retransmitting.
    pub fn degrade(&mut self, from: NodeId, to: NodeId, loss: f64) -> Result<()> {
        ensure!(from != to, "a broker has no link to itself");
        ensure!(
            (0.0..=1.0).contains(&loss),
            "a loss of {loss} is not a probability"
        );
        let destination = self.address(to)?.to_string();
        let probability = format!("{loss:.4}");
        iptables(
            from,
            &[
                "-A",
                "OUTPUT",
                "-d",
                &destination,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &probability,
                "-j",
                "DROP",
            ],
        )?;
        self.degraded.insert((from, to));
        Ok(())
    }

    /// Limits what `from` sends to `to` to `kbit` kilobits a second: a slow link.
    pub fn slow(&mut self, from: NodeId, to: NodeId, kbit: u32) -> Result<()> {
        ensure!(from != to, "a broker has no link to itself");
        ensure!(kbit > 0, "a link of 0 kbit/s is a cut");
        let destination = format!("{}/32", self.address(to)?);
        if self.slowed.contains(&(from, to)) {
            return Ok(());
        }
        if !self.slowed.iter().any(|(sender, _)| *sender == from) {
            // Everything else goes through the default class, unlimited.
            tc(
                from,
                &[
                    "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "default", "1",
                ],
            )?;
            tc(
                from,
                &[
                    "class", "add", "dev", "eth0", "parent", "1:", "classid", "1:1", "htb", "rate",
                    "10gbit",
                ],
            )?;
        }
        let class = format!("1:{:x}", 0x100 + to);
        let rate = format!("{kbit}kbit");
        tc(
            from,
            &[
                "class", "add", "dev", "eth0", "parent", "1:", "classid", &class, "htb", "rate",
                &rate, "ceil", &rate,
            ],
        )?;
        tc(
            from,
            &[
                "filter",
                "add",
                "dev",
                "eth0",
                "parent",
                "1:",
                "protocol",
                "ip",
                "prio",
                "1",
                "u32",
                "match",
                "ip",
                "dst",
                &destination,
                "flowid",
                &class,
            ],
        )?;
        self.slowed.insert((from, to));
        Ok(())
    }

    /// Cuts `a` and `b` from each other, both ways.
    pub fn cut_between(&mut self, a: NodeId, b: NodeId) -> Result<()> {
        self.cut(a, b)?;
        self.cut(b, a)
    }

    /// Cuts `node` from every other broker, both ways; clients still reach it.
    pub fn isolate(&mut self, node: NodeId) -> Result<()> {
        let others: Vec<NodeId> = self.ids().into_iter().filter(|id| *id != node).collect();
        for other in others {
            self.cut_between(node, other)?;
        }
        Ok(())
    }

    /// Removes every cut, every lossy link and every slow link.
    pub fn heal(&mut self) -> Result<()> {
        let limited: BTreeSet<NodeId> = self.slowed.iter().map(|(from, _)| *from).collect();
        for id in limited {
            tc(id, &["qdisc", "del", "dev", "eth0", "root"])?;
        }
        self.slowed.clear();
        let senders: BTreeSet<NodeId> = self
            .cuts
            .iter()
            .chain(&self.degraded)
            .map(|(from, _)| *from)
            .collect();
        for id in senders {
            iptables(id, &["-F", "OUTPUT"])?;
        }
        self.cuts.clear();
        self.degraded.clear();
        Ok(())
    }

    /// The cuts in force, as (from, to) pairs.
    pub fn cuts(&self) -> Vec<(NodeId, NodeId)> {
        self.cuts.iter().copied().collect()
    }

    fn ids(&self) -> Vec<NodeId> {
        self.members.keys().copied().collect()
    }
}

fn namespace(id: NodeId) -> String {
    format!("broker-{id}")
}

/// Runs tc in a broker's namespace.
fn tc(id: NodeId, args: &[&str]) -> Result<()> {
    let namespace = namespace(id);
    let mut all = vec!["netns", "exec", &namespace, "tc"];
    all.extend_from_slice(args);
    sandbox::run("ip", &all).with_context(|| format!("changing broker {id}'s queueing"))?;
    Ok(())
}

/// Runs iptables in a broker's namespace (`-w`: waits for the xtables lock).
fn iptables(id: NodeId, args: &[&str]) -> Result<()> {
    let namespace = namespace(id);
    let mut all = vec!["netns", "exec", &namespace, "iptables", "-w"];
    all.extend_from_slice(args);
    sandbox::run("ip", &all).with_context(|| format!("changing broker {id}'s firewall"))?;
    Ok(())
}
