//! strait-broker: one Kafka-compatible broker node.
//!
//! Layers, from the socket inwards: [`server`] reads frames and writes responses; [`handlers`]
//! decode a request with the `kafka-protocol` crate and answer it from [`broker::Broker`], which
//! owns topics and their partition logs ([`log`]). [`node`] ties them into a process lifecycle.
//! See ARCHITECTURE.md at the repository root for the map and its invariants.

#![warn(missing_docs)]

pub(crate) mod broker;
pub(crate) mod broker_config;
pub(crate) mod buffers;
pub(crate) mod clock;
pub mod config;
pub(crate) mod controller;
pub(crate) mod error_code;
pub mod exercise;
pub(crate) mod files;
pub(crate) mod group;
pub(crate) mod handlers;
pub(crate) mod lifecycle;
pub(crate) mod log;
pub(crate) mod metadata_store;
pub(crate) mod net;
pub mod node;
pub(crate) mod offsets_writer;
pub(crate) mod partition;
pub(crate) mod replication;
pub(crate) mod server;
pub(crate) mod topic_config;
pub mod wire;

pub use config::NodeConfig;
pub use node::{Node, NodeError};
