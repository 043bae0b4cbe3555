//! strait-dr: the runbook engine.
//!
//! [`playbook`] loads the YAML playbooks of `dr-playbooks/`, checks them completely before
//! anything runs (every error with file, line and column) and resolves a [`playbook::Plan`]
//! for given parameters; [`actions`] is the registry of built-in actions they may name, with
//! typed arguments and whether each only reads and is idempotent. [`exec`] executes them
//! (the failback's in [`failback`]; what executors take and give is in [`outcome`]); [`run`]
//! makes dry runs and runs, journalled in [`journal`] (locks, resume, audit), and their
//! reports. An action without an executor (the volume backups') is marked in plans and
//! nothing runs it.

pub mod actions;
pub mod clock;
pub mod exec;
pub mod failback;
pub mod journal;
pub mod outcome;
pub mod playbook;
pub mod run;
