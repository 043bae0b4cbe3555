//! strait-mirror: the MirrorMaker 2 analogue, and later the DR console and runbooks.
//!
//! A [`daemon`] runs the enabled flows of a [`config::MirrorConfig`]. Each flow has a record
//! [`pump`] (source consumer in the flow's group, idempotent acks=all target producer), a
//! [`topics`] syncer (topics, partition counts, configs), a [`checkpoints`] task (translated
//! group offsets, group offset sync) and a [`heartbeats`] emitter. Offsets translate exactly
//! through the runs kept in [`offsets`] (sled), whose shared copy is an internal topic on the
//! target that the [`follower`] applies. [`http`] serves [`metrics`] as Prometheus text and
//! a JSON status. Checkpoints and heartbeats are written in MirrorMaker 2's formats ([`mm2`]).
//! [`fence`] keeps an old owner of a partition from writing after the group moved it.
//! [`control`] stops and starts flows for an operator (durably) and runs a checkpoint round
//! on request; [`divergence`] resumes a partition stopped because its source diverged. [`protection`] makes mirror topics read-only on a strait target while their flow runs.

pub mod checkpoints;
pub mod clients;
pub mod config;
pub mod control;
pub mod daemon;
pub mod divergence;
pub mod failback;
pub mod fence;
pub mod follower;
pub mod group_offsets;
pub mod heartbeats;
pub mod http;
pub mod metrics;
pub mod mm2;
pub mod offsets;
pub mod protection;
pub mod pump;
pub mod topic_ids;
pub mod topics;
