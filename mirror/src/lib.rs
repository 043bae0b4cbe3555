//! strait-mirror: mirror workers, exact offset translation, the DR console and runbooks.
//!
//! Empty for now: the broker comes first (see the issues and ARCHITECTURE.md). This crate
//! will hold the record pump (source consumer to target producer per flow), the offset-run
//! store in sled, checkpoints and group offset sync, heartbeats, metrics and the console.
