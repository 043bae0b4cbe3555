//! What a failback needs of a stopped flow: the index extended over records that were
//! restored on the source from the target (so the flow does not copy them back), and every
//! group's target offset translated back and committed on the source.
//!
//! Both run only while the flow is stopped (see `control.rs`), so no pump or checkpoint
//! round runs beside them.

use serde::{Deserialize, Serialize};

use std::collections::BTreeSet;

use crate::checkpoints::{
    group_client, members_by_group, offsets_by_partition, replaced_topics, REPLACED,
};
use crate::clients::MirrorError;
use crate::config::{ClusterConfig, FlowConfig};
use crate::group_offsets::{all_answered, commit_and_read_back, read_with, Interrupt};
use crate::offsets::{Cursor, FlowIndex, Run, RunUpdate};
use crate::topic_ids::Side;

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
/// Returns every translation with what the source holds afterwards. Every group is read and
/// committed from one client per cluster.
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
    if partitions.is_empty() {
        return Ok(Vec::new());
    }
    let on_target = group_client(target, &format!("strait-mirror-back-{}", flow.name))?;
    let on_source = group_client(source, &format!("strait-mirror-back-{}", flow.name))?;
    // Consumers still on the target could commit after this read and lose the commit.
    let members_on_target = members_by_group(&on_target).await?;
    let members_on_source = members_by_group(&on_source).await?;
    // Runs recorded for a topic since recreated on either side no longer translate.
    let all: BTreeSet<(String, i32)> = partitions.iter().cloned().collect();
    let mut replaced = replaced_topics(&on_target, flow, index, &all, Side::Target).await?;
    replaced.extend(replaced_topics(&on_source, flow, index, &all, Side::Source).await?);
    let interrupt = Interrupt::default();
    let mut groups: Vec<String> = members_on_target
        .keys()
        .filter(|g| flow.groups.matches(g))
        .cloned()
        .collect();
    groups.sort();
    let remote: Vec<(String, i32)> = partitions
        .iter()
        .map(|(t, p)| (flow.remote_topic(t), *p))
        .collect();
    let requests = groups.iter().map(|g| (g.clone(), remote.clone())).collect();
    let read = all_answered(
        &groups,
        read_with(&on_target, requests, &interrupt).await?,
        "reading the target's offsets",
    )?;
    let mut entries: Vec<BackCommit> = Vec::new();
    let mut commits = Vec::new();
    for (group, answer) in groups.iter().zip(read) {
        let on_target_offsets = offsets_by_partition(&answer);
        if on_target_offsets.is_empty() {
            continue;
        }
        let active_target = members_on_target.get(group).copied().unwrap_or(0);
        let active_source = members_on_source.get(group).copied().unwrap_or(0);
        let mut commit = Vec::new();
        for (t, p) in &partitions {
            let remote = flow.remote_topic(t);
            let Some(&target_offset) = on_target_offsets.get(&(remote.clone(), *p)) else {
                continue;
            };
            let Some(translated) = index.translate_back(t, *p, target_offset)? else {
                continue;
            };
            let skipped = if replaced.contains(&(t.clone(), *p)) {
                Some(REPLACED.to_string())
            } else if active_target > 0 {
                Some(format!(
                    "{active_target} members still active on the target"
                ))
            } else {
                (active_source > 0).then(|| format!("{active_source} members active on the source"))
            };
            if skipped.is_none() {
                commit.push((t.clone(), *p, translated));
            }
            entries.push(BackCommit {
                group: group.clone(),
                source_topic: t.clone(),
                topic: remote,
                partition: *p,
                target_offset,
                translated_offset: translated,
                source_offset: None,
                skipped,
            });
        }
        if !commit.is_empty() {
            commits.push((group.clone(), commit));
        }
        tracing::info!(flow = %flow.name, group, members = active_source, "translating a group's offsets back to the source");
    }
    // A group the coordinator refuses is named in its entries; the others are committed.
    let keys = entries
        .iter()
        .map(|e| (e.group.clone(), e.source_topic.clone(), e.partition))
        .collect();
    let (refused, after) = commit_and_read_back(&on_source, commits, keys, "the source").await?;
    for e in &mut entries {
        let key = (e.group.clone(), e.source_topic.clone(), e.partition);
        if let Some(why) = refused.get(&key) {
            e.skipped = Some(format!("the source refused the commit: {why}"));
        }
        e.source_offset = after.get(&key).copied();
    }
    Ok(entries)
}
