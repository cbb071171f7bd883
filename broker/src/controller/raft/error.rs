//! What can go wrong starting the quorum or proposing to it.

use std::io;
use std::time::Duration;

use super::NodeId;

#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    #[error("invalid metadata quorum configuration: {0}")]
    Config(String),
    /// Local I/O: the state directory, the listener.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// No leader could be found in time; the command was not written.
    #[error("no metadata quorum leader within {waited:?}")]
    NoLeader { waited: Duration },
    /// The command was handed to a leader but its result did not come in time: it may or may not
    /// be committed.
    #[error(
        "no result for the metadata command within {waited:?}; it may or may not be committed"
    )]
    Timeout { waited: Duration },
    /// The connection to the leader failed after the command was sent: it may or may not be
    /// committed.
    #[error(
        "lost the connection to metadata leader {leader} ({addr}) after sending the command; \
         it may or may not be committed: {source}"
    )]
    Interrupted {
        leader: NodeId,
        addr: String,
        #[source]
        source: io::Error,
    },
    /// The leader took the command but failed to report its outcome (it stopped, or gave up
    /// waiting for the commit): it may or may not be committed.
    #[error(
        "metadata leader {leader} failed the command; it may or may not be committed: {message}"
    )]
    Leader { leader: NodeId, message: String },
    /// Only learners leave the membership this way; a voter's removal changes the quorum.
    #[error(
        "node {node_id} is a voter of the metadata quorum: removing it would change the quorum, \
         which only a change of the configured voters does"
    )]
    Voter { node_id: NodeId },
    /// openraft stopped on a storage error; the node must be restarted.
    #[error("the metadata quorum stopped: {0}")]
    Fatal(String),
    #[error("the metadata quorum is shut down")]
    ShutDown,
}

impl QuorumError {
    /// Whether the command may have been committed even though `propose` failed: retrying it
    /// is safe only if it is idempotent.
    pub fn may_have_been_committed(&self) -> bool {
        matches!(
            self,
            QuorumError::Timeout { .. }
                | QuorumError::Interrupted { .. }
                | QuorumError::Leader { .. }
        )
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> QuorumError {
        let context = context.into();
        move |source| QuorumError::Io { context, source }
    }
}
