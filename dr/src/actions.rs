//! The registry of built-in actions a playbook may name, with their typed arguments.
//!
//! A playbook is checked against this table before anything runs: an unknown action, an
//! unknown or missing argument, or a value of the wrong type is refused with its position.
//! Each action also says whether it only reads (it may run in a dry run and as a guard or a
//! verification) and whether it is idempotent (a run resumed after a crash retries an
//! interrupted idempotent step; any other interrupted step stops the run for a person to
//! check).
//!
//! The actions with executors ([`crate::exec`]) are marked available: the checks, the write
//! protection of topics, the mirror's flow controls, the group offset sync and check, the
//! forced failover's final commit and the failback's. Those of the volume backup have none
//! yet; until an action has one,
//! [`Action::available`] is false, `strait runbook plan` marks the step, `run` refuses the
//! playbook before doing anything, and nothing pretends to run it.

/// The type of an argument or a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text.
    String,
    /// A whole number.
    Integer,
    /// true or false.
    Boolean,
}

impl Kind {
    /// The name playbooks use.
    pub fn name(self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::Integer => "integer",
            Kind::Boolean => "boolean",
        }
    }

    /// The name with its article, for messages.
    pub fn a(self) -> &'static str {
        match self {
            Kind::String => "a string",
            Kind::Integer => "an integer",
            Kind::Boolean => "a boolean",
        }
    }
}

/// One argument of an action.
#[derive(Debug, Clone, Copy)]
pub struct Arg {
    /// Its key under `with:`.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Whether a playbook must give it.
    pub required: bool,
    /// What it means.
    pub about: &'static str,
}

/// A built-in action.
#[derive(Debug, Clone, Copy)]
pub struct Action {
    /// Its name in playbooks.
    pub name: &'static str,
    /// What it does, for `strait runbook show` and plans.
    pub about: &'static str,
    /// Its arguments.
    pub args: &'static [Arg],
    /// Changes nothing: may run as a guard, a verification and in a dry run.
    pub read_only: bool,
    /// Running it twice has the effect of running it once: an interrupted run may retry it.
    pub idempotent: bool,
    /// Whether strait can execute it yet (see the module's documentation).
    pub available: bool,
}

impl Action {
    /// The argument called `name`.
    pub fn arg(&self, name: &str) -> Option<&'static Arg> {
        self.args.iter().find(|a| a.name == name)
    }
}

const fn arg(name: &'static str, kind: Kind, required: bool, about: &'static str) -> Arg {
    Arg {
        name,
        kind,
        required,
        about,
    }
}

const MIRROR_CONFIG: Arg = arg(
    "mirror_config",
    Kind::String,
    true,
    "the mirror's config file (clusters and flows)",
);
const FLOW: Arg = arg(
    "flow",
    Kind::String,
    true,
    "the flow's name in the mirror config",
);
const SITE: Arg = arg(
    "site",
    Kind::String,
    true,
    "a cluster alias of the mirror config",
);
const SITE_CONFIG: Arg = arg(
    "site_config",
    Kind::String,
    true,
    "the site's cluster file (e.g. configs/site-a.yaml)",
);
const WAIT_MS: Arg = arg(
    "wait_ms",
    Kind::Integer,
    false,
    "how long to wait for the condition before failing",
);

/// Every action a playbook may name.
pub const ACTIONS: &[Action] = &[
    Action {
        name: "site_healthy",
        about: "every node of the site answers and every partition of the flow's topics has a leader",
        args: &[MIRROR_CONFIG, SITE],
        read_only: true,
        idempotent: true,
        available: true,
    },
    Action {
        name: "site_unreachable",
        about: "no node of the site answers for the whole wait (the guard of a forced failover)",
        args: &[
            MIRROR_CONFIG,
            SITE,
            WAIT_MS,
            arg(
                "accept_split_brain",
                Kind::Boolean,
                false,
                "pass even if the site answers (an operator accepted two sites taking writes)",
            ),
        ],
        read_only: true,
        idempotent: true,
        available: true,
    },
    Action {
        name: "flow_running",
        about: "the running mirror serves the flow and its pump holds every partition (waiting up to wait_ms, if given, for a flow just started)",
        args: &[MIRROR_CONFIG, FLOW, WAIT_MS],
        read_only: true,
        idempotent: true,
        available: true,
    },
    Action {
        name: "predict_loss",
        about: "per partition, the records on the flow's source not yet on its target",
        args: &[MIRROR_CONFIG, FLOW],
        read_only: true,
        idempotent: true,
        available: true,
    },
    Action {
        name: "fence_topics",
        about: "make the flow's topics on a site refuse writes (POLICY_VIOLATION naming the flow)",
        args: &[MIRROR_CONFIG, FLOW, SITE],
        read_only: false,
        idempotent: true,
        available: true,
    },
    Action {
        name: "unfence_topics",
        about: "let the flow's topics on a site take writes again",
        args: &[MIRROR_CONFIG, FLOW, SITE],
        read_only: false,
        idempotent: true,
        available: true,
    },
    Action {
        name: "wait_for_zero_lag",
        about: "every partition of the flow is mirrored to the source's end (waits up to wait_ms)",
        args: &[MIRROR_CONFIG, FLOW, WAIT_MS],
        read_only: true,
        idempotent: true,
        available: true,
    },
    Action {
        name: "flow_stopped",
        about: "the running mirror serves the flow and an operator (or a failover) has stopped it",
        args: &[MIRROR_CONFIG, FLOW],
        read_only: true,
        idempotent: true,
        available: true,
    },
    Action {
        name: "source_groups_idle",
        about: "no consumer group the flow syncs has a member on the source, or on `site` if given (waits up to wait_ms for them to stop)",
        args: &[
            MIRROR_CONFIG,
            FLOW,
            WAIT_MS,
            arg(
                "site",
                Kind::String,
                false,
                "the site to look at instead of the flow's source",
            ),
        ],
        read_only: true,
        idempotent: true,
        available: true,
    },
    Action {
        name: "sync_group_offsets",
        about: "write a final checkpoint and commit every mirrored group's translated offsets on the target",
        args: &[MIRROR_CONFIG, FLOW],
        read_only: false,
        idempotent: true,
        available: true,
    },
    Action {
        name: "verify_group_offsets",
        about: "every mirrored group's offset on the target is exactly the translation of its offset on the source",
        args: &[MIRROR_CONFIG, FLOW],
        read_only: true,
        idempotent: true,
        available: true,
    },
    Action {
        name: "commit_last_translated_offsets",
        about: "commit on the target the last translated offsets the mirror's index holds (the source is gone)",
        args: &[MIRROR_CONFIG, FLOW],
        read_only: false,
        idempotent: true,
        available: true,
    },
    Action {
        name: "stop_flow",
        about: "stop the flow in the running mirror after it records and commits what it copied",
        args: &[MIRROR_CONFIG, FLOW, WAIT_MS],
        read_only: false,
        idempotent: true,
        available: true,
    },
    Action {
        name: "start_flow",
        about: "start (or resume) the flow in the running mirror",
        args: &[MIRROR_CONFIG, FLOW, WAIT_MS],
        read_only: false,
        idempotent: true,
        available: true,
    },
    Action {
        name: "fence_mirror_topics",
        about: "make the flow's mirror topics on its target refuse every producer, the flow's too (a failback's switch back)",
        args: &[MIRROR_CONFIG, FLOW],
        read_only: false,
        idempotent: true,
        available: true,
    },
    Action {
        name: "release_mirror_topics",
        about: "clear the read-only attribute of the flow's mirror topics on its target, so applications can write there",
        args: &[MIRROR_CONFIG, FLOW],
        read_only: false,
        idempotent: true,
        available: true,
    },
    Action {
        name: "protect_mirror_topics",
        about: "set the read-only attribute of the flow's mirror topics on its target again (with protect_target_topics off: clear any the flow set)",
        args: &[MIRROR_CONFIG, FLOW],
        read_only: false,
        idempotent: true,
        available: true,
    },
    Action {
        name: "topics_writable",
        about: "no mirror topic of the flow on its target is write-protected any more",
        args: &[MIRROR_CONFIG, FLOW],
        read_only: true,
        idempotent: true,
        available: true,
    },
    Action {
        name: "record_rpo",
        about: "the records and seconds the flow's target may lack, from the source's last watermarks the mirror saw",
        args: &[MIRROR_CONFIG, FLOW],
        read_only: true,
        idempotent: true,
        available: true,
    },
    Action {
        name: "predict_divergence",
        about: "per partition of a stopped flow, the old source's records past the mirror's cursor and the target's records past it",
        args: &[MIRROR_CONFIG, FLOW],
        read_only: true,
        idempotent: true,
        available: true,
    },
    Action {
        name: "archive_divergent_tail",
        about: "write the records the old source took but never mirrored to an archive file per partition, with its sha256",
        args: &[
            MIRROR_CONFIG,
            FLOW,
            arg("archive_dir", Kind::String, true, "where the archive files go"),
        ],
        read_only: false,
        idempotent: true,
        available: true,
    },
    Action {
        name: "truncate_divergent_tail",
        about: "cut the old source's partitions at the mirror's cursor (its topics fenced with no writer), each only if its tail was archived as it is now",
        args: &[
            MIRROR_CONFIG,
            FLOW,
            arg("archive_dir", Kind::String, true, "where the archive step wrote the tails"),
        ],
        read_only: false,
        idempotent: true,
        available: true,
    },
    Action {
        name: "restore_from_target",
        about: "copy what the target holds past each partition's new end on the old source there, offset for offset, and record it in the flow's index",
        args: &[MIRROR_CONFIG, FLOW],
        read_only: false,
        idempotent: true,
        available: true,
    },
    Action {
        name: "commit_back_offsets",
        about: "commit on the old source every group's offsets on the target, translated back, and check them",
        args: &[MIRROR_CONFIG, FLOW],
        read_only: false,
        idempotent: true,
        available: true,
    },
    Action {
        name: "backup_site",
        about: "a consistent backup of every node's data of a running site, with its manifest",
        args: &[
            SITE_CONFIG,
            arg("to", Kind::String, true, "the backup directory"),
            arg(
                "incremental_from",
                Kind::String,
                false,
                "a previous backup id: copy only new segments",
            ),
        ],
        read_only: false,
        idempotent: false,
        available: false,
    },
    Action {
        name: "verify_backup",
        about: "re-read every file of a backup against its manifest",
        args: &[arg("backup", Kind::String, true, "DIR/BACKUP_ID")],
        read_only: true,
        idempotent: true,
        available: false,
    },
    Action {
        name: "restore_site",
        about: "restore a backup onto a site's data directories (one node or all), refusing a running node or another cluster",
        args: &[
            SITE_CONFIG,
            arg("backup", Kind::String, true, "DIR/BACKUP_ID"),
            arg("node", Kind::Integer, false, "only this node id"),
        ],
        read_only: false,
        idempotent: false,
        available: false,
    },
];

/// The action called `name`.
pub fn action(name: &str) -> Option<&'static Action> {
    ACTIONS.iter().find(|a| a.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_arguments_too() {
        let mut names: Vec<&str> = ACTIONS.iter().map(|a| a.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "two actions share a name");
        for a in ACTIONS {
            let mut args: Vec<&str> = a.args.iter().map(|x| x.name).collect();
            args.sort_unstable();
            let n = args.len();
            args.dedup();
            assert_eq!(args.len(), n, "{}: two arguments share a name", a.name);
            assert!(
                !a.read_only || a.idempotent,
                "{}: reading is idempotent",
                a.name
            );
        }
    }
}
