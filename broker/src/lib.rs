//! strait-broker: one Kafka-compatible broker node.
//!
//! Layers, from the socket inwards: [`server`] reads frames and writes responses; [`handlers`]
//! decode a request with the `kafka-protocol` crate and answer it from [`broker::Broker`], which
//! owns topics and their partition logs ([`log`]). [`node`] ties them into a process lifecycle.
//! See ARCHITECTURE.md at the repository root for the map and its invariants.

#![warn(missing_docs)]

pub mod broker;
pub mod broker_config;
pub mod buffers;
pub mod clock;
pub mod config;
pub mod controller;
pub mod exercise;
pub mod files;
pub mod group;
pub mod handlers;
pub mod lifecycle;
pub mod log;
pub mod metadata_store;
pub mod net;
pub mod node;
pub mod partition;
pub mod replication;
pub mod server;
pub mod topic_config;
pub mod wire;

pub use config::NodeConfig;
pub use node::{Node, NodeError};
