//! What the leader knows of each member's replication of the metadata log, and the
//! quorum's state as Kafka's DescribeQuorum reports it ([`QuorumStatus`]).
//!
//! Kafka's followers fetch from the leader, which notes each fetch; here the leader pushes
//! AppendEntries (heartbeats included) and a member's successful answer stands in for a
//! fetch: [`Progress::acknowledged`] is called by the network layer with the log index the
//! member then holds. Offsets are raft log indexes plus one, so an offset counts entries as
//! Kafka's offsets count records.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::NodeId;

/// The metadata quorum as Kafka's DescribeQuorum answers it, seen by the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumStatus {
    pub leader_id: i32,
    pub leader_epoch: i32,
    /// The offset after the last committed entry.
    pub high_watermark: i64,
    pub voters: Vec<ReplicaStatus>,
    /// Members that replicate the log without voting: the brokers that are not voters.
    pub observers: Vec<ReplicaStatus>,
    /// Each voter's controller endpoint as `(node id, host, port)`.
    pub voter_endpoints: Vec<(i32, String, u16)>,
}

/// One member's replication of the metadata log. Unknown values are -1, as in Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    pub node_id: i32,
    pub log_end_offset: i64,
    /// Wall-clock milliseconds of the member's last acknowledged replication request.
    pub last_fetch_timestamp: i64,
    /// Wall-clock milliseconds when the member last held everything the leader had.
    pub last_caught_up_timestamp: i64,
}

/// The leader's record of each member's answers to AppendEntries.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    state: Mutex<ProgressState>,
}

#[derive(Debug, Default)]
struct ProgressState {
    /// The index of the leader's last log entry, kept current by the quorum.
    leader_last_index: Option<u64>,
    members: BTreeMap<NodeId, MemberProgress>,
}

#[derive(Debug, Clone, Copy)]
struct MemberProgress {
    last_fetch_ms: i64,
    last_caught_up_ms: i64,
    /// The leader's last index when the member last answered.
    leader_last_index_then: Option<u64>,
}

impl Default for MemberProgress {
    fn default() -> Self {
        MemberProgress {
            last_fetch_ms: -1,
            last_caught_up_ms: -1,
            leader_last_index_then: None,
        }
    }
}

impl Progress {
    pub(crate) fn set_leader_last_index(&self, index: Option<u64>) {
        self.state.lock().leader_last_index = index;
    }

    /// `member` answered AppendEntries successfully and now holds the log up to `index`.
    /// Caught up, as Kafka's `LeaderState.ReplicaState.updateFetchState` decides: now when it
    /// holds the leader's whole log, or at its previous answer when it holds what the leader
    /// had then.
    pub(crate) fn acknowledged(&self, member: NodeId, index: Option<u64>) {
        let now = now_ms();
        let mut state = self.state.lock();
        let leader_last = state.leader_last_index;
        let entry = state.members.entry(member).or_default();
        if index >= leader_last {
            entry.last_caught_up_ms = entry.last_caught_up_ms.max(now);
        } else if entry.leader_last_index_then.is_some() && index >= entry.leader_last_index_then {
            entry.last_caught_up_ms = entry.last_caught_up_ms.max(entry.last_fetch_ms);
        }
        entry.last_fetch_ms = now;
        entry.leader_last_index_then = leader_last;
    }

    /// Forgets everything: a new term starts with no answers from anyone.
    pub(crate) fn reset(&self) {
        self.state.lock().members.clear();
    }

    /// `(last fetch, last caught up)` of `member`, -1 where unknown.
    pub(crate) fn times(&self, member: NodeId) -> (i64, i64) {
        self.state
            .lock()
            .members
            .get(&member)
            .map_or((-1, -1), |m| (m.last_fetch_ms, m.last_caught_up_ms))
    }
}

/// The offset after log index `index`: how many entries a log ending there holds.
pub(crate) fn offset_after(index: Option<u64>) -> i64 {
    index.map_or(0, |i| {
        i64::try_from(i).map_or(i64::MAX, |i| i.saturating_add(1))
    })
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(crate) fn to_i32(id: u64) -> i32 {
    i32::try_from(id).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_holding_the_leaders_log_is_caught_up_at_its_answer() {
        let progress = Progress::default();
        assert_eq!(progress.times(2), (-1, -1));
        progress.set_leader_last_index(Some(10));
        progress.acknowledged(2, Some(10));
        let (fetch, caught_up) = progress.times(2);
        assert!(fetch > 0);
        assert_eq!(caught_up, fetch);
    }

    #[test]
    fn a_member_behind_is_caught_up_as_of_its_previous_answer_once_it_holds_what_the_leader_had_then(
    ) {
        let progress = Progress::default();
        progress.set_leader_last_index(Some(10));
        progress.acknowledged(2, Some(4));
        let (first, caught_up) = progress.times(2);
        assert_eq!(caught_up, -1, "behind at its first answer");
        progress.set_leader_last_index(Some(20));
        progress.acknowledged(2, Some(10));
        let (second, caught_up) = progress.times(2);
        assert!(second >= first);
        assert_eq!(caught_up, first);
        progress.reset();
        assert_eq!(progress.times(2), (-1, -1));
    }
}
