//! The YAML files strait loads (a node's config, a site file, a mirror config, a playbook)
//! pass through here twice: [`limits::check`] bounds what serde_yaml would build from them
//! before it builds anything, and [`position`] turns a path in the document into a line and
//! column for an error that serde_yaml can only place at an enclosing list.

pub mod limits;
pub mod position;
