//! The coordinator's state machine, driven directly against a real broker on a temp dir.
//! Deadlines are driven with `tick` at chosen times, so nothing here sleeps.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError as E;

use super::*;
use crate::broker::{Broker, NewTopic};
use crate::config::NodeConfig;

async fn open(dir: &Path) -> Arc<Broker> {
    let yaml = format!(
        "node_id: 1\nlisten: 127.0.0.1:0\ndata_dir: {}\noffsets_topic_num_partitions: 4\ngroup_initial_rebalance_delay_ms: 0\n",
        dir.display()
    );
    let config = NodeConfig::parse(&yaml, Path::new("test.yaml")).unwrap();
    let b = crate::node::open_standalone(config).await.unwrap();
    b.groups().ensure_offsets_topic(&*b).await.unwrap();
    b
}

async fn topic(b: &Broker, name: &str, partitions: i32) {
    b.create_topic(&NewTopic {
        name: name.into(),
        num_partitions: partitions,
        replication_factor: 1,
        configs: Default::default(),
        assignment: None,
    })
    .await
    .unwrap();
}

fn join_req(group: &str, member: &str, protocols: &[&str]) -> JoinRequest {
    JoinRequest {
        group_id: group.into(),
        member_id: member.into(),
        group_instance_id: None,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 30_000,
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|p| (p.to_string(), Bytes::from(format!("meta-{p}"))))
            .collect(),
        require_known_member_id: true,
    }
}

fn sync_req(group: &str, member: &str, generation: i32, assign: &[(&str, &str)]) -> SyncRequest {
    SyncRequest {
        group_id: group.into(),
        generation_id: generation,
        member_id: member.into(),
        group_instance_id: None,
        protocol_type: Some("consumer".into()),
        protocol_name: None,
        assignments: assign
            .iter()
            .map(|(m, a)| (m.to_string(), Bytes::from(a.to_string())))
            .collect(),
    }
}

/// Spawns a JoinGroup so several can be parked at once.
fn spawn_join(b: &Arc<Broker>, req: JoinRequest) -> tokio::task::JoinHandle<JoinResult> {
    let b = b.clone();
    tokio::spawn(async move { b.groups().join(&*b, req).await })
}

/// The member-id round trip: first JoinGroup gets MEMBER_ID_REQUIRED and an id.
async fn member_id(b: &Arc<Broker>, group: &str) -> String {
    let r = b.groups().join(&**b, join_req(group, "", &["range"])).await;
    assert_eq!(r.error_code, ErrorCode::from(E::MemberIdRequired));
    assert!(r.member_id.starts_with("client-"), "{}", r.member_id);
    r.member_id
}

async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// One member joins and syncs: returns its id, generation 1 and a Stable group.
async fn single_stable_member(b: &Arc<Broker>, group: &str) -> String {
    let id = member_id(b, group).await;
    let r = b
        .groups()
        .join(&**b, join_req(group, &id, &["range"]))
        .await;
    assert_eq!(r.error_code, ErrorCode::NONE);
    assert_eq!(r.generation_id, 1);
    assert_eq!(r.leader_id, id);
    assert_eq!(r.members.len(), 1);
    let s = b
        .groups()
        .sync(&**b, sync_req(group, &id, 1, &[(&id, "p0,p1")]))
        .await;
    assert_eq!(s.error_code, ErrorCode::NONE);
    assert_eq!(s.assignment, Bytes::from("p0,p1"));
    assert_eq!(b.groups().describe(group).state, GroupState::Stable);
    id
}

#[tokio::test]
async fn a_single_member_group_forms_and_gets_its_assignment() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path()).await;
    let id = single_stable_member(&b, "g").await;
    assert_eq!(b.groups().heartbeat("g", &id, None, 1), ErrorCode::NONE);
    assert_eq!(
        b.groups().heartbeat("g", &id, None, 0),
        ErrorCode::from(E::IllegalGeneration)
    );
    assert_eq!(
        b.groups().heartbeat("g", "stranger", None, 1),
        ErrorCode::from(E::UnknownMemberId)
    );
    assert_eq!(
        b.groups().heartbeat("nogroup", &id, None, 1),
        ErrorCode::from(E::UnknownMemberId)
    );
    let d = b.groups().describe("g");
    assert_eq!(d.protocol_type, "consumer");
    assert_eq!(d.protocol_name, "range");
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.members[0].client_host, "/127.0.0.1");
    assert_eq!(d.members[0].assignment, Bytes::from("p0,p1"));
}

#[tokio::test]
async fn three_members_share_one_generation_and_followers_wait_for_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path()).await;
    let leader = single_stable_member(&b, "g").await;
    // Two newcomers trigger a rebalance; the leader learns of it through its heartbeat.
    let m2 = member_id(&b, "g").await;
    let m3 = member_id(&b, "g").await;
    let j2 = spawn_join(&b, join_req("g", &m2, &["range"]));
    let j3 = spawn_join(&b, join_req("g", &m3, &["range"]));
    settle().await;
    assert_eq!(
        b.groups().heartbeat("g", &leader, None, 1),
        ErrorCode::from(E::RebalanceInProgress)
    );
    assert!(!j2.is_finished(), "join must wait for the leader to rejoin");
    let j1 = spawn_join(&b, join_req("g", &leader, &["range"]));
    let (r1, r2, r3) = (j1.await.unwrap(), j2.await.unwrap(), j3.await.unwrap());
    for r in [&r1, &r2, &r3] {
        assert_eq!(r.error_code, ErrorCode::NONE);
        assert_eq!(r.generation_id, 2);
        assert_eq!(r.leader_id, leader);
        assert_eq!(r.protocol_name.as_deref(), Some("range"));
    }
    assert_eq!(r1.members.len(), 3, "the leader sees every member");
    assert!(r2.members.is_empty() && r3.members.is_empty());
    // Followers park in SyncGroup until the leader's assignment arrives.
    let s2 = {
        let b = b.clone();
        let m2 = m2.clone();
        tokio::spawn(async move { b.groups().sync(&*b, sync_req("g", &m2, 2, &[])).await })
    };
    settle().await;
    assert!(!s2.is_finished());
    assert_eq!(
        b.groups().describe("g").state,
        GroupState::CompletingRebalance
    );
    let s1 = b
        .groups()
        .sync(
            &*b,
            sync_req("g", &leader, 2, &[(&leader, "a"), (&m2, "b"), (&m3, "c")]),
        )
        .await;
    assert_eq!(s1.assignment, Bytes::from("a"));
    assert_eq!(s2.await.unwrap().assignment, Bytes::from("b"));
    let s3 = b.groups().sync(&*b, sync_req("g", &m3, 2, &[])).await;
    assert_eq!(
        s3.assignment,
        Bytes::from("c"),
        "a late follower gets its share at once"
    );
    // A stale generation is fenced everywhere.
    assert_eq!(
        b.groups()
            .sync(&*b, sync_req("g", &m3, 1, &[]))
            .await
            .error_code,
        ErrorCode::from(E::IllegalGeneration)
    );
}

#[tokio::test]
async fn a_rebalance_drops_members_that_do_not_rejoin_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path()).await;
    let leader = single_stable_member(&b, "g").await;
    let m2 = member_id(&b, "g").await;
    let j2 = spawn_join(&b, join_req("g", &m2, &["range"]));
    settle().await;
    // The old leader never rejoins: the rebalance timeout (30 s) completes without it.
    b.groups().tick(&*b, now_ms() + 31_000);
    let r2 = j2.await.unwrap();
    assert_eq!(r2.error_code, ErrorCode::NONE);
    assert_eq!(r2.generation_id, 2);
    assert_eq!(
        r2.leader_id, m2,
        "leadership moves to a member that rejoined"
    );
    assert_eq!(
        b.groups().heartbeat("g", &leader, None, 2),
        ErrorCode::from(E::UnknownMemberId)
    );
}

#[tokio::test]
async fn an_expired_session_removes_the_member_and_empties_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path()).await;
    let id = single_stable_member(&b, "g").await;
    b.groups().tick(&*b, now_ms() + 5_000);
    assert_eq!(
        b.groups().describe("g").members.len(),
        1,
        "within the session"
    );
    b.groups().tick(&*b, now_ms() + 10_500);
    let d = b.groups().describe("g");
    assert_eq!(d.state, GroupState::Empty);
    assert!(d.members.is_empty());
    assert_eq!(
        b.groups().heartbeat("g", &id, None, 1),
        ErrorCode::from(E::UnknownMemberId)
    );
}

#[tokio::test]
async fn leave_group_rebalances_the_rest_and_reports_unknown_members() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path()).await;
    let id = single_stable_member(&b, "g").await;
    let codes = b
        .groups()
        .leave(&*b, "g", &[(id.clone(), None), ("ghost".to_string(), None)]);
    assert_eq!(
        codes,
        vec![ErrorCode::NONE, ErrorCode::from(E::UnknownMemberId)]
    );
    assert_eq!(b.groups().describe("g").state, GroupState::Empty);
}

#[tokio::test]
async fn join_rejects_bad_timeouts_protocol_mismatches_and_unknown_members() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path()).await;
    let mut req = join_req("g", "", &["range"]);
    req.session_timeout_ms = 1_000;
    assert_eq!(
        b.groups().join(&*b, req).await.error_code,
        ErrorCode::from(E::InvalidSessionTimeout)
    );
    assert_eq!(
        b.groups()
            .join(&*b, join_req("", "", &["range"]))
            .await
            .error_code,
        ErrorCode::from(E::InvalidGroupId)
    );
    assert_eq!(
        b.groups()
            .join(&*b, join_req("other", "made-up", &["range"]))
            .await
            .error_code,
        ErrorCode::from(E::UnknownMemberId)
    );
    single_stable_member(&b, "g").await;
    let mut other_type = join_req("g", "", &["range"]);
    other_type.protocol_type = "connect".into();
    assert_eq!(
        b.groups().join(&*b, other_type).await.error_code,
        ErrorCode::from(E::InconsistentGroupProtocol)
    );
    assert_eq!(
        b.groups()
            .join(&*b, join_req("g", "", &["sticky"]))
            .await
            .error_code,
        ErrorCode::from(E::InconsistentGroupProtocol),
        "no protocol in common with the current members"
    );
}

#[tokio::test]
async fn static_member_rejoining_fences_its_old_id_without_a_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path()).await;
    let leader = single_stable_member(&b, "g").await;
    // A static follower joins.
    let mut s = join_req("g", "", &["range"]);
    s.group_instance_id = Some("host-a".into());
    let js = spawn_join(&b, s.clone());
    settle().await;
    let jl = spawn_join(&b, join_req("g", &leader, &["range"]));
    let (rs, _rl) = (js.await.unwrap(), jl.await.unwrap());
    assert_eq!(
        rs.error_code,
        ErrorCode::NONE,
        "static members skip MEMBER_ID_REQUIRED"
    );
    let old_id = rs.member_id.clone();
    b.groups()
        .sync(
            &*b,
            sync_req("g", &leader, 2, &[(&leader, "a"), (&old_id, "b")]),
        )
        .await;
    // The same instance restarts with no member id: it takes over without a rebalance.
    let r = b.groups().join(&*b, s).await;
    assert_eq!(r.error_code, ErrorCode::NONE);
    assert_eq!(r.generation_id, 2, "no new generation");
    assert_ne!(r.member_id, old_id);
    assert_eq!(b.groups().describe("g").state, GroupState::Stable);
    assert_eq!(
        b.groups().heartbeat("g", &old_id, Some("host-a"), 2),
        ErrorCode::from(E::FencedInstanceId)
    );
    assert_eq!(
        b.groups().heartbeat("g", &r.member_id, Some("host-a"), 2),
        ErrorCode::NONE
    );
    let mut sync = sync_req("g", &r.member_id, 2, &[]);
    sync.group_instance_id = Some("host-a".into());
    assert_eq!(
        b.groups().sync(&*b, sync).await.assignment,
        Bytes::from("b")
    );
}

fn commit(group: &str, generation: i32, member: &str, topic: &str, offset: i64) -> CommitRequest {
    CommitRequest {
        group_id: group.into(),
        generation_id: generation,
        member_id: member.into(),
        group_instance_id: None,
        partitions: vec![CommitPartition {
            topic: topic.into(),
            partition: 0,
            offset,
            leader_epoch: -1,
            metadata: "m".into(),
        }],
    }
}

#[tokio::test]
async fn commits_follow_kafkas_membership_rules() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path()).await;
    topic(&b, "t", 2).await;
    // Outside the group protocol, a commit creates an offsets-only group.
    assert_eq!(
        b.groups()
            .commit(&*b, &commit("solo", -1, "", "t", 5))
            .await,
        vec![ErrorCode::NONE]
    );
    assert_eq!(b.groups().describe("solo").state, GroupState::Empty);
    let id = single_stable_member(&b, "g").await;
    // While the group has members, only they may commit, with the current generation.
    assert_eq!(
        b.groups().commit(&*b, &commit("g", -1, "", "t", 1)).await,
        vec![ErrorCode::from(E::UnknownMemberId)]
    );
    assert_eq!(
        b.groups().commit(&*b, &commit("g", 0, &id, "t", 1)).await,
        vec![ErrorCode::from(E::IllegalGeneration)]
    );
    assert_eq!(
        b.groups().commit(&*b, &commit("g", 1, &id, "t", 7)).await,
        vec![ErrorCode::NONE]
    );
    assert_eq!(
        b.groups()
            .commit(&*b, &commit("g", 1, &id, "nope", 1))
            .await,
        vec![ErrorCode::from(E::UnknownTopicOrPartition)]
    );
    let mut big = commit("g", 1, &id, "t", 8);
    big.partitions[0].metadata = "x".repeat(5000);
    assert_eq!(
        b.groups().commit(&*b, &big).await,
        vec![ErrorCode::from(E::OffsetMetadataTooLarge)]
    );
    let fetched = b
        .groups()
        .fetch_offsets("g", Some(&[("t".to_string(), vec![0, 1])]));
    assert_eq!(fetched[0].2.as_ref().map(|v| v.offset), Some(7));
    assert_eq!(fetched[1].2, None);
    // Once the member is gone, an outside commit is accepted again (the mirror relies on it).
    b.groups().leave(&*b, "g", &[(id, None)]);
    assert_eq!(
        b.groups().commit(&*b, &commit("g", -1, "", "t", 9)).await,
        vec![ErrorCode::NONE]
    );
}

#[tokio::test]
async fn groups_and_offsets_survive_a_restart_and_deletes_stay_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let id;
    {
        let b = open(dir.path()).await;
        topic(&b, "t", 1).await;
        id = single_stable_member(&b, "g").await;
        assert_eq!(
            b.groups().commit(&*b, &commit("g", 1, &id, "t", 42)).await,
            vec![ErrorCode::NONE]
        );
        assert_eq!(
            b.groups()
                .commit(&*b, &commit("gone", -1, "", "t", 3))
                .await,
            vec![ErrorCode::NONE]
        );
        assert_eq!(b.groups().delete_group(&*b, "gone"), ErrorCode::NONE);
        assert_eq!(
            b.groups().delete_group(&*b, "g"),
            ErrorCode::from(E::NonEmptyGroup)
        );
        assert_eq!(
            b.groups().delete_group(&*b, "never"),
            ErrorCode::from(E::GroupIdNotFound)
        );
        b.close();
        b.controller().shutdown().await;
    }
    let b = open(dir.path()).await;
    let d = b.groups().describe("g");
    assert_eq!(d.state, GroupState::Stable);
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.members[0].member_id, id);
    assert_eq!(d.members[0].assignment, Bytes::from("p0,p1"));
    // The member keeps its generation across the restart.
    assert_eq!(b.groups().heartbeat("g", &id, None, 1), ErrorCode::NONE);
    let fetched = b.groups().fetch_offsets("g", None);
    assert_eq!(fetched.len(), 1);
    assert_eq!(fetched[0].2.as_ref().map(|v| v.offset), Some(42));
    assert_eq!(b.groups().describe("gone").state, GroupState::Dead);
    assert!(b.groups().fetch_offsets("gone", None).is_empty());
}

#[tokio::test]
async fn offset_delete_refuses_subscribed_topics_of_an_active_consumer_group() {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path()).await;
    topic(&b, "sub", 1).await;
    topic(&b, "other", 1).await;
    let mut meta = bytes::BytesMut::new();
    bytes::BufMut::put_i16(&mut meta, 1);
    ConsumerProtocolSubscription::default()
        .with_topics(vec![StrBytes::from_static_str("sub")])
        .encode(&mut meta, 1)
        .unwrap();
    let mut req = join_req("g", "", &["range"]);
    req.protocols = vec![("range".into(), meta.freeze())];
    let id = b.groups().join(&*b, req.clone()).await.member_id;
    req.member_id = id.clone();
    assert_eq!(b.groups().join(&*b, req).await.error_code, ErrorCode::NONE);
    b.groups().sync(&*b, sync_req("g", &id, 1, &[])).await;
    for t in ["sub", "other"] {
        assert_eq!(
            b.groups().commit(&*b, &commit("g", 1, &id, t, 1)).await,
            vec![ErrorCode::NONE]
        );
    }
    let codes = b
        .groups()
        .delete_offsets(&*b, "g", &[("sub".into(), 0), ("other".into(), 0)])
        .unwrap();
    assert_eq!(
        codes,
        vec![ErrorCode::from(E::GroupSubscribedToTopic), ErrorCode::NONE]
    );
    let left: Vec<String> = b
        .groups()
        .fetch_offsets("g", None)
        .into_iter()
        .map(|(t, _, _)| t)
        .collect();
    assert_eq!(left, vec!["sub".to_string()]);
    assert_eq!(
        b.groups().delete_offsets(&*b, "nope", &[]),
        Err(ErrorCode::from(E::GroupIdNotFound))
    );
}

#[tokio::test]
async fn offsets_of_an_empty_group_expire_after_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path()).await;
    topic(&b, "t", 1).await;
    assert_eq!(
        b.groups().commit(&*b, &commit("old", -1, "", "t", 5)).await,
        vec![ErrorCode::NONE]
    );
    let retention = b.groups().config().offsets_retention_ms;
    let interval = b.groups().config().offsets_retention_check_interval_ms;
    b.groups().tick(&*b, now_ms() + interval + 1_000);
    assert_eq!(b.groups().fetch_offsets("old", None).len(), 1, "not yet");
    b.groups().tick(&*b, now_ms() + retention + 2 * interval);
    assert!(b.groups().fetch_offsets("old", None).is_empty());
    assert_eq!(b.groups().describe("old").state, GroupState::Dead);
}

#[tokio::test]
async fn list_groups_filters_by_state() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path()).await;
    topic(&b, "t", 1).await;
    single_stable_member(&b, "active").await;
    b.groups()
        .commit(&*b, &commit("idle", -1, "", "t", 1))
        .await;
    let all: Vec<String> = b
        .groups()
        .list(&[])
        .into_iter()
        .map(|g| g.group_id)
        .collect();
    assert_eq!(all, vec!["active".to_string(), "idle".to_string()]);
    let stable = b.groups().list(&["stable".to_string()]);
    assert_eq!(stable.len(), 1);
    assert_eq!(stable[0].group_id, "active");
    assert_eq!(stable[0].protocol_type, "consumer");
}

#[tokio::test]
async fn a_partition_full_of_superseded_commits_is_compacted_and_replays_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let commits = COMPACTION_MIN_RECORDS + 500;
    let partition;
    let mut end_before;
    {
        let b = open(dir.path()).await;
        topic(&b, "t", 2).await;
        let id = single_stable_member(&b, "busy").await;
        // A busy consumer commits the same two partitions over and over.
        for i in 0..commits / 2 {
            let mut req = commit("busy", 1, &id, "t", i);
            req.partitions.push(CommitPartition {
                partition: 1,
                ..req.partitions[0].clone()
            });
            assert_eq!(
                b.groups().commit(&*b, &req).await,
                vec![ErrorCode::NONE, ErrorCode::NONE]
            );
        }
        partition = storage::partition_for("busy", 4);
        let p = b.partition(OFFSETS_TOPIC, partition).unwrap();
        end_before = p.log().log_end_offset();
        assert!(end_before > COMPACTION_MIN_RECORDS, "{end_before}");
        // Not before the check interval...
        b.groups().tick(&*b, now_ms() + 1_000);
        assert_eq!(p.log().log_start_offset(), 0);
        // A minute later the member's session has expired too (one more group record), and
        // the partition is compacted down to what is live.
        b.groups()
            .tick(&*b, now_ms() + COMPACTION_CHECK_INTERVAL_MS + 1_000);
        {
            let log = p.log();
            assert!(
                log.log_start_offset() >= end_before,
                "history before the copy is dropped"
            );
            assert_eq!(
                log.log_end_offset() - log.log_start_offset(),
                3,
                "one group record and two offsets stay live"
            );
            end_before = log.log_start_offset();
        }
        let d = b.groups().describe("busy");
        assert_eq!(
            (d.state, d.protocol_type.as_str()),
            (GroupState::Empty, "consumer")
        );
        b.close();
        b.controller().shutdown().await;
    }
    let b = open(dir.path()).await;
    let d = b.groups().describe("busy");
    assert_eq!(
        (d.state, d.protocol_type.as_str()),
        (GroupState::Empty, "consumer")
    );
    let offsets: Vec<i64> = b
        .groups()
        .fetch_offsets("busy", None)
        .into_iter()
        .map(|(_, _, v)| v.unwrap().offset)
        .collect();
    assert_eq!(offsets, vec![commits / 2 - 1, commits / 2 - 1]);
    let p = b.partition(OFFSETS_TOPIC, partition).unwrap();
    assert_eq!(p.log().log_start_offset(), end_before);
}

/// The coordinator against [`writer::memory::MemoryWriter`]: what a log cannot be made to do on
/// demand: fail an append with a chosen code, answer a replication wait with one.
mod in_memory {
    use super::*;
    use crate::group::writer::memory::MemoryWriter;

    fn config() -> GroupConfig {
        GroupConfig {
            offsets_topic_num_partitions: 3,
            initial_rebalance_delay_ms: 0,
            ..GroupConfig::default()
        }
    }

    async fn coordinator(w: &MemoryWriter) -> GroupCoordinator {
        let c = GroupCoordinator::new(config());
        c.ensure_offsets_topic(w).await.unwrap();
        c.set_led_partitions(w, &[0, 1, 2]).unwrap();
        c
    }

    fn simple_commit(group: &str, partition: i32, offset: i64) -> CommitRequest {
        let mut req = commit(group, -1, "", "t", offset);
        req.partitions[0].partition = partition;
        req
    }

    #[tokio::test]
    async fn a_new_coordinator_replays_members_assignments_and_offsets_from_the_writer() {
        let w = MemoryWriter::new();
        w.add_topic("t", 2);
        let c = coordinator(&w).await;
        let first = c.join(&w, join_req("g", "", &["range"])).await;
        assert_eq!(first.error_code, ErrorCode::from(E::MemberIdRequired));
        let joined = c
            .join(&w, join_req("g", &first.member_id, &["range"]))
            .await;
        assert_eq!(joined.error_code, ErrorCode::NONE);
        let id = joined.member_id;
        let synced = c.sync(&w, sync_req("g", &id, 1, &[(&id, "p0,p1")])).await;
        assert_eq!(synced.error_code, ErrorCode::NONE);
        assert_eq!(
            c.commit(&w, &commit("g", 1, &id, "t", 42)).await,
            vec![ErrorCode::NONE]
        );
        assert_eq!(
            c.commit(&w, &simple_commit("solo", 1, 7)).await,
            vec![ErrorCode::NONE]
        );
        assert_eq!(
            c.commit(&w, &simple_commit("solo", 2, 7)).await,
            vec![ErrorCode::from(E::UnknownTopicOrPartition)],
            "t has two partitions"
        );

        let again = GroupCoordinator::new(config());
        again.set_led_partitions(&w, &[0, 1, 2]).unwrap();
        let d = again.describe("g");
        assert_eq!(d.state, GroupState::Stable);
        assert_eq!(d.members.len(), 1);
        assert_eq!(d.members[0].member_id, id);
        assert_eq!(d.members[0].assignment, Bytes::from("p0,p1"));
        let g = again.fetch_offsets("g", None);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].2.as_ref().map(|v| v.offset), Some(42));
        let solo = again.fetch_offsets("solo", Some(&[("t".to_string(), vec![1])]));
        assert_eq!(solo[0].2.as_ref().map(|v| v.offset), Some(7));
        assert_eq!(
            again.heartbeat("g", &id, None, 1),
            ErrorCode::NONE,
            "the replayed member is current"
        );
    }

    #[tokio::test]
    async fn a_failed_append_answers_kafkas_code_and_changes_nothing() {
        let w = MemoryWriter::new();
        w.add_topic("t", 1);
        let c = coordinator(&w).await;
        for (log_says, client_gets) in [
            (E::NotLeaderOrFollower, E::NotCoordinator),
            (E::UnknownTopicOrPartition, E::NotCoordinator),
            (E::MessageTooLarge, E::InvalidCommitOffsetSize),
            (E::RecordListTooLarge, E::InvalidCommitOffsetSize),
            (E::KafkaStorageError, E::CoordinatorNotAvailable),
        ] {
            w.fail_appends(Some(log_says));
            assert_eq!(
                c.commit(&w, &simple_commit("g", 0, 5)).await,
                vec![ErrorCode::from(client_gets)],
                "the log answered {log_says}"
            );
            assert!(
                c.fetch_offsets("g", None).is_empty(),
                "an offset the log refused is not visible"
            );
        }
        w.fail_appends(None);
        assert_eq!(
            c.commit(&w, &simple_commit("g", 0, 5)).await,
            vec![ErrorCode::NONE]
        );
        w.fail_appends(Some(E::KafkaStorageError));
        assert_eq!(
            c.delete_group(&w, "g"),
            ErrorCode::from(E::CoordinatorNotAvailable)
        );
        assert_eq!(
            c.fetch_offsets("g", None).len(),
            1,
            "the group is still there"
        );
    }

    #[tokio::test]
    async fn a_commit_that_is_not_replicated_answers_kafkas_code() {
        let w = MemoryWriter::new();
        w.add_topic("t", 1);
        let c = coordinator(&w).await;
        for (replication, client_gets) in [
            (E::NotLeaderOrFollower, E::NotCoordinator),
            (E::NotEnoughReplicasAfterAppend, E::CoordinatorNotAvailable),
            (E::RequestTimedOut, E::RequestTimedOut),
        ] {
            w.replication_outcome(replication.into());
            assert_eq!(
                c.commit(&w, &simple_commit("g", 0, 5)).await,
                vec![ErrorCode::from(client_gets)],
                "replication answered {replication}"
            );
        }
    }
}
