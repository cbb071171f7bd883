//! KIP-951 leader hints: a Produce or Fetch refused because this broker does not lead the
//! partition (or leads it at another epoch) says which broker leads it now and where that
//! broker listens, so the client moves there at once instead of first asking for metadata.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::BrokerId;
use kafka_protocol::messages::{fetch_response, produce_response, FetchResponse, ProduceResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::broker::Broker;
use crate::controller::image::MetadataImage;

/// First Produce version with `CurrentLeader` and `NodeEndpoints`.
const PRODUCE_HINTS: i16 = 10;
/// First Fetch version with `CurrentLeader`; `NodeEndpoints` came with 16.
const FETCH_LEADER: i16 = 12;
const FETCH_ENDPOINTS: i16 = 16;

/// A live broker's address on one listener.
struct Endpoint {
    host: String,
    port: u16,
    rack: Option<String>,
}

/// Looks up current leaders in one metadata image and collects the endpoints of the leaders
/// it named, for the response's `NodeEndpoints`.
struct Hints<'a> {
    broker: &'a Broker,
    image: Arc<MetadataImage>,
    listener: &'a str,
    endpoints: BTreeMap<i32, Endpoint>,
}

impl<'a> Hints<'a> {
    fn new(broker: &'a Broker, listener: &'a str) -> Self {
        Self {
            broker,
            image: broker.image(),
            listener,
            endpoints: BTreeMap::new(),
        }
    }

    /// The leader and leader epoch of `topic`-`index` when a live broker reachable on this
    /// listener leads it (this one too: at a newer epoch, or about to take over); `None` when
    /// there is nothing better to tell than the error.
    fn leader(&mut self, topic: &str, index: i32) -> Option<(i32, i32)> {
        let state = self.image.partition(topic, index)?;
        if state.leader < 0 {
            return None;
        }
        let registration = self.image.live_brokers().find(|b| b.id == state.leader)?;
        let (host, port) = registration.endpoint(self.listener)?;
        self.endpoints
            .entry(state.leader)
            .or_insert_with(|| Endpoint {
                host: host.to_owned(),
                port,
                rack: registration.rack.clone(),
            });
        Some((state.leader, state.leader_epoch))
    }

    fn topic_name(&self, name: &str, id: uuid::Uuid, by_id: bool) -> Option<String> {
        if by_id {
            self.broker.topic_by_id(id).map(|t| t.name)
        } else {
            Some(name.to_owned())
        }
    }
}

fn is_hinted(error_code: i16) -> bool {
    error_code == ResponseError::NotLeaderOrFollower.code()
        || error_code == ResponseError::FencedLeaderEpoch.code()
}

/// Fills `CurrentLeader` of every partition refused with NOT_LEADER_OR_FOLLOWER, and the
/// response's `NodeEndpoints`, in a Produce response of `version`.
pub(super) fn fill_produce(
    broker: &Broker,
    listener: &str,
    version: i16,
    response: &mut ProduceResponse,
) {
    if version < PRODUCE_HINTS {
        return;
    }
    let mut hints = Hints::new(broker, listener);
    for topic in &mut response.responses {
        let mut name = None;
        for partition in &mut topic.partition_responses {
            if partition.error_code != ResponseError::NotLeaderOrFollower.code() {
                continue;
            }
            let name = name.get_or_insert_with(|| {
                hints.topic_name(topic.name.0.as_str(), topic.topic_id, version >= 13)
            });
            let Some(name) = name.as_deref() else {
                continue;
            };
            if let Some((leader, epoch)) = hints.leader(name, partition.index) {
                partition.current_leader = produce_response::LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(epoch);
            }
        }
    }
    response.node_endpoints = hints
        .endpoints
        .into_iter()
        .map(|(id, e)| {
            produce_response::NodeEndpoint::default()
                .with_node_id(BrokerId(id))
                .with_host(str_bytes(&e.host))
                .with_port(i32::from(e.port))
                .with_rack(e.rack.as_deref().map(str_bytes))
        })
        .collect();
}

/// Fills `CurrentLeader` of every partition refused with NOT_LEADER_OR_FOLLOWER or
/// FENCED_LEADER_EPOCH, and from version 16 the response's `NodeEndpoints`, in a Fetch
/// response of `version`.
pub(super) fn fill_fetch(
    broker: &Broker,
    listener: &str,
    version: i16,
    response: &mut FetchResponse,
) {
    if version < FETCH_LEADER {
        return;
    }
    let mut hints = Hints::new(broker, listener);
    for topic in &mut response.responses {
        let mut name = None;
        for partition in &mut topic.partitions {
            if !is_hinted(partition.error_code) {
                continue;
            }
            let name = name.get_or_insert_with(|| {
                hints.topic_name(topic.topic.0.as_str(), topic.topic_id, version >= 13)
            });
            let Some(name) = name.as_deref() else {
                continue;
            };
            if let Some((leader, epoch)) = hints.leader(name, partition.partition_index) {
                partition.current_leader = fetch_response::LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(epoch);
            }
        }
    }
    if version >= FETCH_ENDPOINTS {
        response.node_endpoints = hints
            .endpoints
            .into_iter()
            .map(|(id, e)| {
                fetch_response::NodeEndpoint::default()
                    .with_node_id(BrokerId(id))
                    .with_host(str_bytes(&e.host))
                    .with_port(i32::from(e.port))
                    .with_rack(e.rack.as_deref().map(str_bytes))
            })
            .collect();
    }
}
