//! strait-mirror: the MirrorMaker 2 analogue, and later the DR console and runbooks.
//!
//! A [`daemon`] runs the enabled flows of a [`config::MirrorConfig`]. Each flow has a record
//! [`pump`] (source consumer in the flow's group, idempotent acks=all target producer), a
//! [`topics`] syncer (topics, partition counts, configs), a [`checkpoints`] task (translated
//! group offsets) and a [`heartbeats`] emitter. Offsets translate exactly through the runs
//! kept in [`offsets`] (sled, plus an internal topic on the target as the shared copy).
//! [`http`] serves Prometheus metrics and a JSON status from [`metrics`].

pub mod config;
pub mod offsets;
mod yaml_position;
