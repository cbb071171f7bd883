//! Oxbow's Kubernetes operator: `KafkaCluster` and `KafkaTopic` resources turned into brokers,
//! Services and topics.

pub mod balance;
pub mod broker_init;
pub mod certs;
pub mod cluster;
pub mod conditions;
pub mod context;
pub mod controller;
pub mod crd;
pub mod crdgen;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod rebalance;
pub mod supervisor;
pub mod topic;
pub mod user;

#[cfg(test)]
pub(crate) mod test_support;
