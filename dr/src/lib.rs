//! strait-dr: the runbook engine.
//!
//! Today: [`playbook`] loads the YAML playbooks of `dr-playbooks/`, checks them completely
//! before anything runs (every error with file, line and column) and resolves a [`playbook::Plan`]
//! for given parameters; [`actions`] is the registry of built-in actions they may name, with
//! typed arguments and whether each only reads and is idempotent. Executing plans (journal,
//! resume, locks, audit, reports) and the actions' executors come next; until an action has an
//! executor, plans mark it and nothing runs it.

pub mod actions;
pub mod playbook;
