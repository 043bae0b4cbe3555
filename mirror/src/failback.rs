//! What a failback needs of a stopped flow: the index extended over records that were
//! restored on the source from the target (so the flow does not copy them back), and every
//! group's target offset translated back and committed on the source.
//!
//! Both run only while the flow is stopped (see `control.rs`), so no pump or checkpoint
//! round runs beside them.

use std::collections::BTreeMap;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::checkpoints::{committed, group_client, list_groups, offsets_of};
use crate::clients::{blocking, MirrorError};
use crate::config::{ClusterConfig, FlowConfig};
use crate::offsets::{Cursor, FlowIndex, Run, RunUpdate};

/// Records that source offsets `source_next .. source_next + count` of a partition are on
/// the target at `target_next ..`, one for one (a failback restored them on the source from
/// the target), and moves the cursor past them. `expected` must be the partition's cursor
/// now: a cursor that moved means the caller's view is stale, and nothing is written.
/// The update goes to the flow's runs topic, as the pump's do, and into this daemon's index.
pub async fn adopt(
    flow: &FlowConfig,
    target: &ClusterConfig,
    index: &FlowIndex,
    topic: &str,
    partition: i32,
    expected: Cursor,
    count: i64,
) -> Result<Cursor, String> {
    if count <= 0 {
        return Err(format!("count must be positive, not {count}"));
    }
    let cursor = index
        .cursor(topic, partition)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{topic}/{partition} was never mirrored by `{}`", flow.name))?;
    if cursor != expected {
        return Err(format!(
            "{topic}/{partition}: the cursor is ({}, {}), not ({}, {})",
            cursor.source_next, cursor.target_next, expected.source_next, expected.target_next
        ));
    }
    let after = Cursor {
        source_next: cursor.source_next + count,
        target_next: cursor.target_next + count,
    };
    let run = Run {
        source_start: cursor.source_next,
        target_start: cursor.target_next,
        length: count,
    };
    let update = RunUpdate::runs(topic, partition, vec![run], after);
    crate::follower::record(flow, target, index, &update, "recording restored records")
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(flow = %flow.name, topic, partition, source = cursor.source_next,
        target = cursor.target_next, count, "adopted records restored on the source");
    Ok(after)
}

/// One group's offset on one partition brought back from the target to the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackCommit {
    /// The consumer group.
    pub group: String,
    /// The topic on the source.
    pub source_topic: String,
    /// The topic on the target.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The group's committed offset on the target.
    pub target_offset: i64,
    /// Its translation on the source, which the commit writes.
    pub translated_offset: i64,
    /// What the group has committed on the source afterwards.
    pub source_offset: Option<i64>,
    /// Why the translation was not committed, if it was not (the group is active on the
    /// source).
    pub skipped: Option<String>,
}

/// Reads every group's committed offsets on the target for the flow's mirror topics,
/// translates them back through the index and commits them on the source, where the group
/// has no active member on either side (a group with members is named and left alone).
/// Returns every translation with what the source holds afterwards.
pub async fn commit_back(
    flow: &FlowConfig,
    source: &ClusterConfig,
    target: &ClusterConfig,
    index: &FlowIndex,
) -> Result<Vec<BackCommit>, MirrorError> {
    let partitions: Vec<(String, i32)> = index
        .cursors()?
        .into_iter()
        .map(|(t, p, _)| (t, p))
        .collect();
    let lister = group_client(target, &format!("strait-mirror-back-{}", flow.name))?;
    let source_lister = group_client(source, &format!("strait-mirror-back-{}", flow.name))?;
    let groups: Vec<String> = list_groups(&lister, None)
        .await?
        .into_iter()
        .map(|(g, _)| g)
        .filter(|g| flow.groups.matches(g))
        .collect();
    let mut out = Vec::new();
    for group in groups {
        let on_target = group_client(target, &group)?;
        let mut tpl = TopicPartitionList::new();
        for (t, p) in &partitions {
            tpl.add_partition(&flow.remote_topic(t), *p);
        }
        let on_target_offsets = offsets_of(&committed(&on_target, tpl).await?);
        if on_target_offsets.is_empty() {
            continue;
        }
        let members: usize = list_groups(&source_lister, Some(group.clone()))
            .await?
            .iter()
            .map(|(_, m)| m)
            .sum();
        // Consumers still on the target could commit after this read and lose the commit.
        let members_on_target: usize = list_groups(&lister, Some(group.clone()))
            .await?
            .iter()
            .map(|(_, m)| m)
            .sum();
        let mut by_source: BTreeMap<(String, i32), BackCommit> = BTreeMap::new();
        let mut commit = TopicPartitionList::new();
        for (t, p) in &partitions {
            let remote = flow.remote_topic(t);
            let Some(&target_offset) = on_target_offsets.get(&(remote.clone(), *p)) else {
                continue;
            };
            let Some(translated) = index.translate_back(t, *p, target_offset)? else {
                continue;
            };
            let skipped = if members_on_target > 0 {
                Some(format!(
                    "{members_on_target} members still active on the target"
                ))
            } else {
                (members > 0).then(|| format!("{members} members active on the source"))
            };
            if skipped.is_none() {
                commit
                    .add_partition_offset(t, *p, Offset::Offset(translated))
                    .map_err(MirrorError::kafka("building a commit"))?;
            }
            by_source.insert(
                (t.clone(), *p),
                BackCommit {
                    group: group.clone(),
                    source_topic: t.clone(),
                    topic: remote,
                    partition: *p,
                    target_offset,
                    translated_offset: translated,
                    source_offset: None,
                    skipped,
                },
            );
        }
        let on_source = group_client(source, &group)?;
        if commit.count() > 0 {
            let committer = on_source.clone();
            blocking(move || {
                committer
                    .commit(&commit, CommitMode::Sync)
                    .map_err(MirrorError::kafka(
                        "committing translated offsets on the source",
                    ))
            })
            .await?;
        }
        // Read back, so the answer is what the source holds, not what was asked.
        let mut tpl = TopicPartitionList::new();
        for (t, p) in by_source.keys() {
            tpl.add_partition(t, *p);
        }
        let after = offsets_of(&committed(&on_source, tpl).await?);
        for (key, mut entry) in by_source {
            entry.source_offset = after.get(&key).copied();
            out.push(entry);
        }
        tracing::info!(flow = %flow.name, group, members, "translated a group's offsets back to the source");
    }
    Ok(out)
}
