//! strait-dr: the runbook engine.
//!
//! Today: [`playbook`] loads the YAML playbooks of `dr-playbooks/`, checks them completely
//! before anything runs (every error with file, line and column) and resolves a [`playbook::Plan`]
//! for given parameters; [`actions`] is the registry of built-in actions they may name, with
//! typed arguments and whether each only reads and is idempotent. [`exec`] executes the
//! actions that only read (site health and reachability, the running mirror's flow and lag);
//! [`run`] makes a dry run of a plan (guards for real, the loss predicted, steps described)
//! and its report. Running plans for real (journal, resume, locks, audit) and the executors
//! of the actions that change things come next; until an action has an executor, plans mark
//! it and nothing runs it.

pub mod actions;
pub mod clock;
pub mod exec;
pub mod failback;
pub mod journal;
pub mod outcome;
pub mod playbook;
pub mod run;
