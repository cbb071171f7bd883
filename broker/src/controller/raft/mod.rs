//! The metadata quorum: committed [`MetadataCommand`]s, agreed on by the voters with `openraft`
//! and applied in order to a [`MetadataImage`] on every broker, voter or learner.
//!
//! Consensus stays behind three seams, as in openraft's own examples:
//! - `store` and `state_machine`: the raft log and vote on disk, and the image with its
//!   snapshots;
//! - `network`, `server` and `wire`: the controller transport (length-prefixed JSON frames over
//!   TCP, or TLS with `CONTROLLER:SSL`, one request and one response at a time per connection);
//! - [`RaftQuorum`]: what the rest of the broker sees — `propose`, `subscribe`, `image`, who
//!   leads.
//!
//! On-disk layout of [`RaftConfig::dir`]:
//! ```text
//! vote.json        the last vote (term, candidate, committed); replaced atomically
//! committed.json   the last committed log id, a hint for re-applying at start (not fsynced)
//! raft.log         the log: [len u32 BE][crc32c u32 BE][JSON record] frames
//! snapshot.json    the latest snapshot: its meta (last log id, membership) and the image
//! ```
//! (`*.tmp` files are leftovers of an interrupted atomic replace, removed at start.)

mod config;
mod error;
mod network;
mod progress;
mod quorum;
mod server;
mod state_machine;
mod store;
mod wire;

#[cfg(test)]
mod tests;

pub use config::{QuorumTls, RaftConfig, RaftTuning};
pub use error::QuorumError;
pub use network::Refused;
pub use progress::{now_ms, QuorumStatus, ReplicaStatus};
pub use quorum::RaftQuorum;

use crate::controller::image::{CommandResult, MetadataCommand, MetadataImage};

openraft::declare_raft_types!(
    /// The openraft types of the metadata quorum: commands in, results out, the image as the
    /// snapshot.
    pub TypeConfig:
        D = MetadataCommand,
        R = CommandResult,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = MetadataImage,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A broker's node id in the quorum (Kafka's `node.id`).
pub type NodeId = u64;

pub(crate) type LogId = openraft::LogId<NodeId>;
pub(crate) type Vote = openraft::Vote<NodeId>;
pub(crate) type Entry = openraft::Entry<TypeConfig>;
pub(crate) type StorageError = openraft::StorageError<NodeId>;
pub(crate) type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub(crate) type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub(crate) type Raft = openraft::Raft<TypeConfig>;
