//! The topic syncer of one flow: creates the remote topics, follows partition increases and
//! copies topic configs.
//!
//! Every `topic_refresh_interval_ms` it reads both clusters' metadata, creates each selected
//! source topic that is missing on the target (same partition count, the source's own topic
//! configs minus the exclusion list) and adds partitions where the source has more. It then
//! publishes the mirrored topics to the pump, which subscribes to exactly those: a record
//! never reaches a remote topic or partition that does not exist yet. Every
//! `config_sync_interval_ms` it copies the topic-level configs that changed.
//!
//! Each remote topic is write-protected on the target (see [`crate::protection`]) unless the
//! flow's `protect_target_topics` is off: while the flow runs, only its own producer writes
//! there.
//!
//! A remote topic the target refuses to create (a config it does not support, a policy, a
//! replication factor above its brokers) is reported per topic (`/status`, the status table,
//! `strait_mirror_topic_refused`) and tried again after a backoff that doubles from
//! `topic_refresh_interval_ms` to [`REFUSED_RETRY_MAX_MS`]; every other topic keeps being
//! created and mirrored.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminOptions, AlterConfig, ConfigSource, NewPartitions, ResourceSpecifier};
use tokio::sync::watch;

use crate::clients::{admin, blocking, ensure_topic, MirrorError, REQUEST_TIMEOUT_MS};
use crate::config::{ClusterConfig, FlowConfig};
use crate::metrics::{now_ms, FlowMetrics, RefusedTopic, TopicState};

/// The longest wait before a refused topic is tried again.
pub const REFUSED_RETRY_MAX_MS: u64 = 300_000;

type Admin = Arc<crate::clients::Admin>;

/// The topic syncer of one flow.
pub struct TopicSync {
    flow: Arc<FlowConfig>,
    source: Admin,
    target: Admin,
    metrics: Arc<FlowMetrics>,
    topics: watch::Sender<BTreeMap<String, TopicState>>,
    /// Topics whose target has more partitions than the source, already warned about.
    warned: BTreeSet<String>,
    /// Source topics whose remote topic the target refused, by source name.
    refused: BTreeMap<String, RefusedTopic>,
    /// Remote topics write-protected in this life of the flow (emptied at every config sync,
    /// so a protection cleared by hand comes back within `config_sync_interval_ms`).
    protected: BTreeSet<String>,
    /// Remote topics whose target refused the protection (not a strait broker), warned about
    /// once and not tried again in this life of the flow.
    unprotectable: BTreeSet<String>,
}

fn options() -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(Duration::from_millis(REQUEST_TIMEOUT_MS)))
        .operation_timeout(Some(Duration::from_millis(REQUEST_TIMEOUT_MS)))
}

/// The ids of `topics` on a cluster; none when it cannot say (logged at debug).
async fn topic_ids_of(admin: &Admin, topics: Vec<String>) -> BTreeMap<String, String> {
    let admin = admin.clone();
    let ids = blocking(move || {
        crate::topic_ids::topic_ids(
            admin.inner(),
            &topics,
            Duration::from_millis(REQUEST_TIMEOUT_MS),
        )
    })
    .await;
    ids.unwrap_or_else(|e| {
        tracing::debug!(error = %e, "topic ids unknown this round");
        BTreeMap::new()
    })
}

/// Topic names and partition counts of a cluster.
async fn partition_counts(admin: &Admin) -> Result<BTreeMap<String, i32>, MirrorError> {
    let admin = admin.clone();
    blocking(move || {
        let metadata = admin
            .inner()
            .fetch_metadata(None, Duration::from_millis(REQUEST_TIMEOUT_MS))
            .map_err(MirrorError::kafka("reading cluster metadata"))?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| (t.name().to_string(), t.partitions().len() as i32))
            .collect())
    })
    .await
}

/// The configs set on a topic itself (not inherited), by name.
async fn topic_overrides(
    admin: &Admin,
    topic: &str,
) -> Result<HashMap<String, String>, MirrorError> {
    let results = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &options())
        .await
        .map_err(MirrorError::kafka(format!(
            "describing the configs of {topic}"
        )))?;
    let resource = match results.into_iter().next() {
        Some(Ok(r)) => r,
        Some(Err(code)) => {
            return Err(MirrorError::Other(format!(
                "describing the configs of {topic}: {code}"
            )))
        }
        None => {
            return Err(MirrorError::Other(format!(
                "describing the configs of {topic}: no result"
            )))
        }
    };
    Ok(resource
        .entries
        .into_iter()
        .filter(|e| e.source == ConfigSource::DynamicTopic && !e.is_sensitive)
        .filter_map(|e| Some((e.name, e.value?)))
        .collect())
}

impl TopicSync {
    /// Creates the remote topic of `topic` with its wanted configs.
    async fn create_remote(
        &self,
        topic: &str,
        remote: &str,
        partitions: i32,
    ) -> Result<(), MirrorError> {
        let configs = self.wanted_configs(topic).await?;
        let pairs: Vec<(&str, &str)> = configs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if ensure_topic(
            &self.target,
            remote,
            partitions,
            self.flow.replication_factor,
            "replication_factor",
            &pairs,
        )
        .await?
        {
            tracing::info!(flow = %self.flow.name, topic, remote, partitions, configs = pairs.len(), "created remote topic");
        }
        Ok(())
    }

    /// Records that the target refused `topic`'s remote topic, and when to try again.
    fn refuse(&mut self, topic: &str, remote: &str, error: &MirrorError, now: i64) {
        let attempts = self.refused.get(topic).map_or(0, |r| r.attempts) + 1;
        let backoff_ms = self
            .flow
            .topic_refresh_interval_ms
            .saturating_mul(1u64 << (attempts - 1).min(20))
            .min(REFUSED_RETRY_MAX_MS);
        let next_attempt_ms = now + i64::try_from(backoff_ms).unwrap_or(i64::MAX);
        tracing::warn!(flow = %self.flow.name, topic, remote, attempts, retry_in_ms = backoff_ms, error = %error,
            "the target refused the remote topic; the other topics go on, this one is tried again later");
        self.metrics.error("topic_refused");
        self.refused.insert(
            topic.to_string(),
            RefusedTopic {
                topic: topic.to_string(),
                remote_topic: remote.to_string(),
                reason: error.to_string(),
                attempts,
                next_attempt_ms,
            },
        );
    }

    /// A syncer publishing the mirrored topics on the returned receiver.
    pub fn new(
        flow: Arc<FlowConfig>,
        source: &ClusterConfig,
        target: &ClusterConfig,
        metrics: Arc<FlowMetrics>,
    ) -> Result<(TopicSync, watch::Receiver<BTreeMap<String, TopicState>>), MirrorError> {
        let (topics, rx) = watch::channel(BTreeMap::new());
        Ok((
            TopicSync {
                flow,
                source: Arc::new(admin(source)?),
                target: Arc::new(admin(target)?),
                metrics,
                topics,
                warned: BTreeSet::new(),
                refused: BTreeMap::new(),
                protected: BTreeSet::new(),
                unprotectable: BTreeSet::new(),
            },
            rx,
        ))
    }

    /// Runs until `stop`; a failed round is logged, counted and retried at the next tick.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut refresh =
            tokio::time::interval(Duration::from_millis(self.flow.topic_refresh_interval_ms));
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut configs =
            tokio::time::interval(Duration::from_millis(self.flow.config_sync_interval_ms));
        configs.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
                _ = refresh.tick() => {
                    if let Err(e) = self.refresh().await {
                        tracing::warn!(flow = %self.flow.name, error = %e, "topic refresh failed; retrying");
                        self.metrics.error("topic_sync");
                    }
                }
                _ = configs.tick() => {
                    self.protected.clear();
                    if let Err(e) = self.sync_configs().await {
                        tracing::warn!(flow = %self.flow.name, error = %e, "config sync failed; retrying");
                        self.metrics.error("config_sync");
                    }
                }
            }
        }
    }

    /// Creates missing remote topics and partitions, then publishes the mirrored set.
    pub async fn refresh(&mut self) -> Result<(), MirrorError> {
        let source = partition_counts(&self.source).await?;
        let target = partition_counts(&self.target).await?;
        let mut mirrored = BTreeMap::new();
        let flow = self.flow.clone();
        for (topic, &partitions) in source.iter().filter(|(t, _)| flow.mirrors_topic(t)) {
            let remote = self.flow.remote_topic(topic);
            let target_partitions = match target.get(&remote) {
                None => {
                    let now = now_ms();
                    if self
                        .refused
                        .get(topic)
                        .is_some_and(|r| now < r.next_attempt_ms)
                    {
                        continue;
                    }
                    match self.create_remote(topic, &remote, partitions).await {
                        Ok(()) => {
                            if self.refused.remove(topic).is_some() {
                                tracing::info!(flow = %self.flow.name, topic, remote, "the target took the remote topic it refused before");
                            }
                            partitions
                        }
                        Err(e) => {
                            self.refuse(topic, &remote, &e, now);
                            continue;
                        }
                    }
                }
                Some(&have) if have < partitions => {
                    let results = self
                        .target
                        .create_partitions(
                            [&NewPartitions::new(&remote, partitions as usize)],
                            &options(),
                        )
                        .await
                        .map_err(MirrorError::kafka(format!("adding partitions to {remote}")))?;
                    if let Some(Err((_, code))) = results.into_iter().next() {
                        return Err(MirrorError::Other(format!(
                            "adding partitions to {remote}: {code}"
                        )));
                    }
                    tracing::info!(flow = %self.flow.name, remote, from = have, to = partitions, "added partitions to remote topic");
                    partitions
                }
                Some(&have) => {
                    if have > partitions && self.warned.insert(remote.clone()) {
                        tracing::warn!(flow = %self.flow.name, remote, source_partitions = partitions, target_partitions = have, "the remote topic has more partitions than the source; the extra ones stay empty");
                    }
                    have
                }
            };
            mirrored.insert(
                topic.clone(),
                TopicState {
                    remote_topic: remote,
                    source_partitions: partitions,
                    target_partitions,
                    source_topic_id: None,
                    target_topic_id: None,
                },
            );
        }
        // Both sides' topic ids, which tell a recreated topic from the one mirrored before.
        // A cluster that cannot describe topics leaves them unknown (and the pump then cannot
        // tell incarnations apart).
        let names: Vec<String> = mirrored.keys().cloned().collect();
        let remotes: Vec<String> = mirrored.values().map(|t| t.remote_topic.clone()).collect();
        let (source_ids, target_ids) = (
            topic_ids_of(&self.source, names).await,
            topic_ids_of(&self.target, remotes).await,
        );
        for (topic, state) in mirrored.iter_mut() {
            state.source_topic_id = source_ids.get(topic).cloned();
            state.target_topic_id = target_ids.get(&state.remote_topic).cloned();
        }
        self.protect(&mirrored).await;
        // A topic gone from the source (or from the filter) is no longer refused.
        self.refused.retain(|t, _| source.contains_key(t));
        self.metrics.set_refused(self.refused.clone());
        self.metrics.set_topics(mirrored.clone());
        self.topics.send_if_modified(|current| {
            let changed = *current != mirrored;
            if changed {
                *current = mirrored;
            }
            changed
        });
        Ok(())
    }

    /// Write-protects the remote topics not yet protected in this life of the flow, so that
    /// only the flow's producer writes to them. A target that refuses (not a strait broker)
    /// is told about once per topic; the flow mirrors on without the protection.
    async fn protect(&mut self, mirrored: &BTreeMap<String, TopicState>) {
        if !self.flow.protect_target_topics {
            return;
        }
        let value = crate::protection::replica_value(&self.flow);
        for state in mirrored.values() {
            let remote = &state.remote_topic;
            if self.protected.contains(remote) || self.unprotectable.contains(remote) {
                continue;
            }
            // Read first: a protection already in place costs no metadata record.
            let result = match crate::protection::get(&self.target, remote).await {
                Ok(Some(v)) if v == value => Ok(()),
                Ok(_) => crate::protection::set(&self.target, remote, Some(&value)).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    self.protected.insert(remote.clone());
                }
                Err(e) => {
                    self.metrics.error("topic_protect");
                    if self.unprotectable.insert(remote.clone()) {
                        tracing::warn!(flow = %self.flow.name, remote, error = %e,
                            "could not make the mirror topic read-only on the target (a broker other than strait?); mirroring on without it");
                    }
                }
            }
        }
    }

    /// The source topic's own configs that the target should carry.
    async fn wanted_configs(&self, topic: &str) -> Result<BTreeMap<String, String>, MirrorError> {
        Ok(topic_overrides(&self.source, topic)
            .await?
            .into_iter()
            .filter(|(k, _)| !self.flow.config_sync_exclude.contains(k))
            .collect())
    }

    /// Copies changed topic configs to every mirrored topic. AlterConfigs replaces a topic's
    /// whole set, so the target's own values of excluded keys are sent back unchanged.
    pub async fn sync_configs(&mut self) -> Result<(), MirrorError> {
        let topics = self.topics.borrow().clone();
        for (topic, state) in &topics {
            let wanted = self.wanted_configs(topic).await?;
            let current = topic_overrides(&self.target, &state.remote_topic).await?;
            let kept: BTreeMap<String, String> = current
                .iter()
                .filter(|(k, _)| self.flow.config_sync_exclude.contains(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let mut desired = wanted.clone();
            desired.extend(kept);
            let current: BTreeMap<String, String> = current.into_iter().collect();
            if desired == current {
                continue;
            }
            let mut alter = AlterConfig::new(ResourceSpecifier::Topic(&state.remote_topic));
            for (k, v) in &desired {
                alter = alter.set(k, v);
            }
            let results = self
                .target
                .alter_configs([&alter], &options())
                .await
                .map_err(MirrorError::kafka(format!(
                    "altering the configs of {}",
                    state.remote_topic
                )))?;
            if let Some(Err((_, code))) = results.into_iter().next() {
                return Err(MirrorError::Other(format!(
                    "altering the configs of {}: {code}",
                    state.remote_topic
                )));
            }
            tracing::info!(flow = %self.flow.name, remote = %state.remote_topic, configs = ?wanted, "copied topic configs");
        }
        Ok(())
    }
}
