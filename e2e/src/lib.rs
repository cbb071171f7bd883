//! End-to-end tooling for Oxbow: start real broker processes and point real Kafka clients at them.

pub mod bench;
pub mod cluster;
pub mod dashboard;
pub mod harness;
pub mod http;
pub mod kafka;
pub mod kafka_cluster;
pub mod kube;
pub mod librdkafka;
pub mod netns;
pub mod sandbox;
pub mod transactions;
