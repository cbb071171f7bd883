//! Oxbow's broker: a server that speaks the Apache Kafka protocol over a durable,
//! segmented commit log.

pub mod api;
pub mod broker;
pub mod client;
pub mod config;
pub mod controller;
pub mod fetch_session;
pub mod group;
pub mod log;
pub mod metrics;
pub mod producer;
pub mod quota;
pub mod replica;
pub mod security;
pub mod server;
pub mod txn;
