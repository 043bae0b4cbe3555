//! Resolving a source partition that diverged from what was mirrored (see
//! [`crate::offsets::Divergence`]): the pump stopped that partition, and an operator decides
//! where mirroring resumes.
//!
//! The resolution runs while the flow is stopped (see `control.rs`), so no pump holds the
//! partition meanwhile. It records, through the runs topic like every change of the index,
//! that the source is copied again from `from` (by default the divergence's own offset):
//! the runs at and past `from` are cut, so nothing translates into the copies of records
//! the source no longer holds, and the cursor moves back to `from` with its target offset at
//! the target partition's end, so the new records are appended after everything the target
//! holds (also copies a killed pump acknowledged without recording them).
//! Those old copies stay on the target (nothing is deleted there); the answer names their
//! target offsets so that an operator can archive or skip them.

use serde::{Deserialize, Serialize};

use crate::config::{ClusterConfig, FlowConfig};
use crate::offsets::{Cursor, FlowIndex, Resolution, RunUpdate};

/// What a resolution did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    /// The source topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The divergence resolved.
    pub divergence: crate::offsets::Divergence,
    /// The cursor now: the source is copied again from its `source_next`, to the target
    /// from its `target_next` on.
    pub cursor: Cursor,
    /// Target offsets `start .. end` holding copies of source records at or past `from`
    /// that were mirrored before the divergence: kept on the target, no longer translated.
    pub stale_target_offsets: (i64, i64),
}

/// Resolves the open divergence of `topic`/`partition`: mirroring resumes at `from` (at most
/// the divergence's source offset; by default exactly there). Refused when the partition
/// has no open divergence.
pub async fn resolve(
    flow: &FlowConfig,
    target: &ClusterConfig,
    index: &FlowIndex,
    topic: &str,
    partition: i32,
    from: Option<i64>,
) -> Result<Resolved, String> {
    let divergence = index
        .divergence(topic, partition)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "{topic}/{partition} has no open divergence in flow `{}`",
                flow.name
            )
        })?;
    let cursor = index
        .cursor(topic, partition)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{topic}/{partition} was never mirrored by `{}`", flow.name))?;
    let from = from.unwrap_or(divergence.source_offset);
    if !(0..=divergence.source_offset).contains(&from) {
        return Err(format!(
            "`from` must be between 0 and {} (where {topic}/{partition} diverged): resuming past it would skip records the source holds",
            divergence.source_offset
        ));
    }
    let stale_from = index
        .translate(topic, partition, from.min(cursor.source_next))
        .map_err(|e| e.to_string())?
        .unwrap_or(cursor.target_next);
    // The target's end, not the cursor's target offset: copies acknowledged after the last
    // recorded runs (a pump killed before its next flush) lie past the cursor, and the
    // restarted pump's reconciliation would take them for records of the new log.
    let remote = flow.remote_topic(topic);
    let admin = crate::clients::admin(target).map_err(|e| e.to_string())?;
    let (r, p) = (remote.clone(), partition);
    let (_, target_end) =
        crate::clients::blocking(move || crate::clients::watermarks(admin.inner(), &r, p))
            .await
            .map_err(|e| e.to_string())?;
    let after = Cursor {
        source_next: from,
        target_next: target_end.max(cursor.target_next),
    };
    let update = RunUpdate {
        resolved: Some(Resolution {
            detected_ms: divergence.detected_ms,
            from_source_offset: from,
        }),
        ..RunUpdate::runs(topic, partition, Vec::new(), after)
    };
    crate::follower::record(
        flow,
        target,
        index,
        &update,
        "recording a resolved divergence",
    )
    .await
    .map_err(|e| e.to_string())?;
    tracing::warn!(flow = %flow.name, topic, partition, from, stale_target_from = stale_from,
        stale_target_to = after.target_next,
        "divergence resolved: the source is copied again from `from`, appended after what the target holds; the target's copies in the stale range are no longer translated");
    Ok(Resolved {
        topic: topic.to_string(),
        partition,
        divergence,
        cursor: after,
        stale_target_offsets: (stale_from, after.target_next),
    })
}
