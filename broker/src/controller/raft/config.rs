//! How a node takes part in the metadata quorum: who the voters are, where it listens, where it
//! keeps its state, and the timings.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::{NodeId, QuorumError};

/// One node's quorum configuration. `Default` gives the timings' defaults with the rest empty,
/// for `RaftConfig { node_id, voters, .., ..RaftConfig::default() }`.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    pub node_id: NodeId,
    /// The voters: node id -> "host:port" of its controller listener. 1 or 3 entries usually.
    pub voters: BTreeMap<NodeId, String>,
    /// This node's controller address as others reach it ("host:port"); required of a
    /// non-voter, which joins with it. A voter's is its entry in `voters` when this is empty.
    /// Port 0 stands for the port `listen` was bound to (a broker without a controller
    /// listener of its own listens on an ephemeral port).
    pub advertised: String,
    /// Controller addresses ("host:port") a non-voter joins through when `voters` is empty:
    /// `controller.quorum.bootstrap.servers`.
    pub bootstrap: Vec<String>,
    /// Where to bind the controller listener ("host:port"; port 0 picks one, reported by
    /// [`RaftQuorum::local_addr`](super::RaftQuorum::local_addr)).
    pub listen: String,
    /// Directory for the raft log, vote and snapshots (created if missing).
    pub dir: PathBuf,
    pub tuning: RaftTuning,
    /// TLS on the controller transport, both ways; `None` is plain TCP.
    pub tls: Option<QuorumTls>,
}

/// TLS on the controller transport (a controller listener mapped to SSL): how this node
/// accepts its peers' connections and how it connects to theirs.
#[derive(Clone)]
pub struct QuorumTls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for QuorumTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QuorumTls")
    }
}

impl Default for RaftConfig {
    fn default() -> RaftConfig {
        RaftConfig {
            node_id: 0,
            voters: BTreeMap::new(),
            advertised: String::new(),
            bootstrap: Vec::new(),
            listen: "127.0.0.1:0".to_string(),
            dir: PathBuf::new(),
            tuning: RaftTuning::default(),
            tls: None,
        }
    }
}

impl RaftConfig {
    /// A configuration with the default [`RaftTuning`].
    pub fn new(
        node_id: NodeId,
        voters: BTreeMap<NodeId, String>,
        advertised: impl Into<String>,
        listen: impl Into<String>,
        dir: impl Into<PathBuf>,
    ) -> RaftConfig {
        RaftConfig {
            node_id,
            voters,
            advertised: advertised.into(),
            bootstrap: Vec::new(),
            listen: listen.into(),
            dir: dir.into(),
            tuning: RaftTuning::default(),
            tls: None,
        }
    }

    pub fn is_voter(&self) -> bool {
        self.voters.contains_key(&self.node_id)
    }

    /// The address this node joins with and others reach it at, once its controller listener
    /// is bound to `bound_port`.
    pub(crate) fn advertised(&self, bound_port: u16) -> String {
        match self.voters.get(&self.node_id) {
            Some(addr) if self.advertised.is_empty() => addr.clone(),
            _ => match self.advertised.strip_suffix(":0") {
                Some(host) => format!("{host}:{bound_port}"),
                None => self.advertised.clone(),
            },
        }
    }

    /// The controllers a non-voter asks to join: the voters, else the bootstrap servers.
    pub(crate) fn join_addresses(&self) -> Vec<String> {
        if self.voters.is_empty() {
            self.bootstrap.clone()
        } else {
            self.voters.values().cloned().collect()
        }
    }

    pub(crate) fn validate(&self) -> Result<(), QuorumError> {
        let invalid = |reason: String| Err(QuorumError::Config(reason));
        if self.voters.is_empty() && (self.bootstrap.is_empty() || self.is_voter()) {
            return invalid("neither voters nor bootstrap servers are configured".into());
        }
        if let Some((id, _)) = self.voters.iter().find(|(_, addr)| addr.is_empty()) {
            return invalid(format!("voter {id} has no address"));
        }
        if self.advertised.is_empty() && !self.is_voter() {
            return invalid(format!(
                "node {} is not a voter and has no advertised controller address to join with",
                self.node_id
            ));
        }
        if self.dir.as_os_str().is_empty() {
            return invalid("no directory for the metadata log".into());
        }
        let t = &self.tuning;
        if t.heartbeat_interval.is_zero() || t.election_timeout_min <= t.heartbeat_interval {
            return invalid(format!(
                "the election timeout ({:?}) must exceed the heartbeat interval ({:?})",
                t.election_timeout_min, t.heartbeat_interval
            ));
        }
        if t.election_timeout_max <= t.election_timeout_min {
            return invalid(format!(
                "election_timeout_max ({:?}) must exceed election_timeout_min ({:?})",
                t.election_timeout_max, t.election_timeout_min
            ));
        }
        if t.snapshot_every == 0 {
            return invalid("snapshot_every must be at least 1".into());
        }
        Ok(())
    }
}

/// Timings and thresholds; the defaults suit a LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftTuning {
    /// How often the leader sends heartbeats; also the timeout of one AppendEntries call.
    pub heartbeat_interval: Duration,
    /// A follower that hears no leader for a random time in [min, max) starts an election.
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// Bound of one forwarded proposal or join call to another node.
    pub rpc_timeout: Duration,
    /// How long `propose` keeps trying (finding a leader, waiting for the commit).
    pub propose_timeout: Duration,
    /// Bound of sending a snapshot to a lagging follower or learner.
    pub snapshot_timeout: Duration,
    /// A snapshot is built once this many entries were applied since the last.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot, so a briefly lagging follower catches up
    /// from the log rather than by a snapshot.
    pub logs_kept_after_snapshot: u64,
}

impl Default for RaftTuning {
    fn default() -> RaftTuning {
        RaftTuning {
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(500),
            election_timeout_max: Duration::from_millis(1000),
            rpc_timeout: Duration::from_secs(2),
            propose_timeout: Duration::from_secs(10),
            snapshot_timeout: Duration::from_secs(10),
            snapshot_every: 1000,
            logs_kept_after_snapshot: 1000,
        }
    }
}

impl RaftTuning {
    pub(crate) fn openraft_config(&self) -> Result<openraft::Config, QuorumError> {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        openraft::Config {
            cluster_name: "oxbow-metadata".to_string(),
            heartbeat_interval: millis(self.heartbeat_interval),
            election_timeout_min: millis(self.election_timeout_min),
            election_timeout_max: millis(self.election_timeout_max),
            install_snapshot_timeout: millis(self.snapshot_timeout),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.logs_kept_after_snapshot,
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|e| QuorumError::Config(e.to_string()))
    }
}
