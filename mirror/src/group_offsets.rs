//! Consumer group offsets read and written for many groups from one client.
//!
//! A librdkafka consumer reads and commits the offsets of its own `group.id` only, so one
//! client per group was the price of syncing a group, and a flow with thousands of groups
//! would hold thousands of clients (each with its threads and connections). Kafka's admin
//! calls ListConsumerGroupOffsets and AlterConsumerGroupOffsets name the group in the request
//! instead. The rdkafka crate does not wrap them, so this calls them through the crate's own
//! bindings on an existing client's handle: every group's request goes out on that one
//! client, up to [`IN_FLIGHT_MAX`] at a time on one queue, and each answer is copied out
//! before librdkafka frees it. librdkafka takes one group per call; Kafka's batched
//! OffsetFetch (KIP-709) is not used by it yet, so the batching here is concurrency on one
//! client, not one request for all groups.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};

use crate::clients::{blocking, MirrorError, PollConsumer, REQUEST_TIMEOUT_MS};

/// Group requests in flight on the client at once: the rest wait for an answer.
pub const IN_FLIGHT_MAX: usize = 64;
/// No request of a bulk call is sent after this long: with a coordinator that does not
/// answer, thousands of groups at 64 at a time would otherwise take many request timeouts.
pub const BULK_DEADLINE_MS: u64 = 60_000;

/// Stops bulk calls from sending more requests (those in flight are still awaited), and
/// tells when no commit runs: what lets a flow that stops know no commit of its lands
/// later. (A read still running is not waited for: it changes nothing, and against a site
/// that is gone it would hold the stop for a request timeout.)
#[derive(Clone)]
pub struct Interrupt {
    stop: Arc<AtomicBool>,
    idle: Arc<tokio::sync::Semaphore>,
}

impl Default for Interrupt {
    fn default() -> Self {
        Interrupt {
            stop: Arc::new(AtomicBool::new(false)),
            idle: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }
}

impl Interrupt {
    /// No more requests: a bulk call running stops sending and waits for the answers to
    /// what it sent.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Waits until no bulk commit runs, at most `timeout`; whether none does.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.idle.acquire())
            .await
            .is_ok_and(|permit| permit.is_ok())
    }
}

/// One partition of a group's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffset {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The committed offset (`None`: the group has none on this partition).
    pub offset: Option<i64>,
    /// The metadata committed with the offset.
    pub metadata: String,
    /// Why the coordinator refused this partition, if it did.
    pub error: Option<String>,
}

/// Offsets to commit for one group: (topic, partition, offset) each.
pub type GroupCommit = (String, Vec<(String, i32, i64)>);

/// A group's answer: its partitions, or why the whole request failed.
pub type GroupAnswer = Result<Vec<PartitionOffset>, String>;

/// What is asked of each group.
#[derive(Clone, Copy)]
enum Op {
    Read,
    Write,
}

/// The committed offsets of each group on the partitions named with it (blocking). Answers
/// come in the order of `requests`; a group asked for no partition gets an empty answer.
pub fn read<C: ClientContext>(
    client: &Client<C>,
    requests: &[(String, Vec<(String, i32)>)],
    timeout: Duration,
    stop: &AtomicBool,
) -> Result<Vec<GroupAnswer>, MirrorError> {
    let lists = requests
        .iter()
        .map(|(group, partitions)| {
            let mut tpl = TopicPartitionList::with_capacity(partitions.len());
            for (t, p) in partitions {
                tpl.add_partition(t, *p);
            }
            (group.as_str(), tpl)
        })
        .collect::<Vec<_>>();
    bulk(client, Op::Read, &lists, timeout, stop)
}

/// Commits each group's offsets on the partitions named with it (blocking), as a client
/// outside the group (generation -1, as Kafka's admin client does: the coordinator refuses
/// it for a group with members). Answers come in the order of `requests`, each partition
/// with its error if the coordinator refused it.
pub fn write<C: ClientContext>(
    client: &Client<C>,
    requests: &[GroupCommit],
    timeout: Duration,
    stop: &AtomicBool,
) -> Result<Vec<GroupAnswer>, MirrorError> {
    let mut lists = Vec::with_capacity(requests.len());
    for (group, partitions) in requests {
        let mut tpl = TopicPartitionList::with_capacity(partitions.len());
        for (t, p, offset) in partitions {
            tpl.add_partition_offset(t, *p, Offset::Offset(*offset))
                .map_err(MirrorError::kafka("building a group's offsets"))?;
        }
        lists.push((group.as_str(), tpl));
    }
    bulk(client, Op::Write, &lists, timeout, stop)
}

/// [`read`] on `client` off the async threads, stopped by `interrupt`.
pub async fn read_with(
    client: &Arc<PollConsumer>,
    requests: Vec<(String, Vec<(String, i32)>)>,
    interrupt: &Interrupt,
) -> Result<Vec<GroupAnswer>, MirrorError> {
    let client = client.clone();
    let stop = interrupt.stop.clone();
    blocking(move || {
        read(
            client.client(),
            &requests,
            Duration::from_millis(REQUEST_TIMEOUT_MS),
            &stop,
        )
    })
    .await
}

/// [`write`] on `client` off the async threads, stopped by `interrupt`.
pub async fn write_with(
    client: &Arc<PollConsumer>,
    requests: Vec<GroupCommit>,
    interrupt: &Interrupt,
) -> Result<Vec<GroupAnswer>, MirrorError> {
    let client = client.clone();
    let (stop, busy) = running(interrupt).await?;
    blocking(move || {
        let _busy = busy;
        write(
            client.client(),
            &requests,
            Duration::from_millis(REQUEST_TIMEOUT_MS),
            &stop,
        )
    })
    .await
}

/// The stop flag and the permit a bulk commit holds while it runs.
async fn running(
    interrupt: &Interrupt,
) -> Result<(Arc<AtomicBool>, tokio::sync::OwnedSemaphorePermit), MirrorError> {
    let busy = interrupt
        .idle
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| MirrorError::Other("the group offsets client is closed".into()))?;
    Ok((interrupt.stop.clone(), busy))
}

/// The committed offset of each `(group, topic, partition)` of `keys` (absent: none), read
/// from `client` in one pass; fails, naming `what`, if any group's read does.
async fn read_each(
    client: &Arc<PollConsumer>,
    keys: impl IntoIterator<Item = GroupPartition>,
    what: &str,
) -> Result<HashMap<GroupPartition, i64>, MirrorError> {
    let interrupt = Interrupt::default();
    let mut asked: BTreeMap<String, Vec<(String, i32)>> = BTreeMap::new();
    for (group, topic, partition) in keys {
        asked.entry(group).or_default().push((topic, partition));
    }
    let names: Vec<String> = asked.keys().cloned().collect();
    let answers = all_answered(
        &names,
        read_with(client, asked.into_iter().collect(), &interrupt).await?,
        what,
    )?;
    Ok(names
        .iter()
        .zip(answers)
        .flat_map(|(g, partitions)| {
            partitions
                .into_iter()
                .filter_map(move |p| Some(((g.clone(), p.topic, p.partition), p.offset?)))
        })
        .collect())
}

/// A group's offset on one partition: (group, topic, partition).
pub type GroupPartition = (String, String, i32);

/// Commits `commits` from `client` (a group the coordinator refuses does not stop the
/// others), then reads back what the cluster holds for every key of `keys`, so a caller
/// reports what is there, not what it asked. Returns the refused keys with why, and the
/// committed offset of each key that has one.
pub async fn commit_and_read_back(
    client: &Arc<PollConsumer>,
    commits: Vec<GroupCommit>,
    keys: Vec<GroupPartition>,
    what: &str,
) -> Result<
    (
        HashMap<GroupPartition, String>,
        HashMap<GroupPartition, i64>,
    ),
    MirrorError,
> {
    let interrupt = Interrupt::default();
    let refused = if commits.is_empty() {
        HashMap::new()
    } else {
        let answers = write_with(client, commits.clone(), &interrupt).await?;
        refusals(&commits, answers)
    };
    let after = read_each(client, keys, &format!("reading {what}'s offsets back")).await?;
    Ok((refused, after))
}

/// What a commit did not do: each `(group, topic, partition)` of `requests` that its answer
/// refused (the whole group's request, or that partition), with why.
fn refusals(
    requests: &[GroupCommit],
    answers: Vec<GroupAnswer>,
) -> HashMap<GroupPartition, String> {
    let mut refused = HashMap::new();
    for ((group, partitions), answer) in requests.iter().zip(answers) {
        match answer {
            Err(e) => {
                for (t, p, _) in partitions {
                    refused.insert((group.clone(), t.clone(), *p), e.clone());
                }
            }
            Ok(answered) => {
                for a in answered {
                    if let Some(e) = a.error {
                        refused.insert((group.clone(), a.topic, a.partition), e);
                    }
                }
            }
        }
    }
    refused
}

/// Every answer's partitions, or the first failure (of a group or of one of its
/// partitions) as an error that names the group and what was being done.
pub fn all_answered(
    groups: &[String],
    answers: Vec<GroupAnswer>,
    what: &str,
) -> Result<Vec<Vec<PartitionOffset>>, MirrorError> {
    groups
        .iter()
        .zip(answers)
        .map(|(group, answer)| {
            let partitions =
                answer.map_err(|e| MirrorError::Other(format!("{what} of group {group}: {e}")))?;
            if let Some(p) = partitions.iter().find(|p| p.error.is_some()) {
                return Err(MirrorError::Other(format!(
                    "{what} of group {group}, {}/{}: {}",
                    p.topic,
                    p.partition,
                    p.error.as_deref().unwrap_or_default()
                )));
            }
            Ok(partitions)
        })
        .collect()
}

/// Frees the queue and whatever event is held when dropped, so every early return releases
/// librdkafka's objects.
struct Owned {
    queue: *mut rd::rd_kafka_queue_t,
    event: *mut rd::rd_kafka_event_t,
}

impl Owned {
    fn release_event(&mut self) {
        if !self.event.is_null() {
            // SAFETY: the event came from `rd_kafka_queue_poll` and is destroyed once.
            unsafe { rd::rd_kafka_event_destroy(self.event) };
            self.event = std::ptr::null_mut();
        }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.release_event();
        if !self.queue.is_null() {
            // SAFETY: the queue came from `rd_kafka_queue_new` and is destroyed once, here.
            // Answers still on their way to it are dropped by librdkafka.
            unsafe { rd::rd_kafka_queue_destroy(self.queue) };
        }
    }
}

fn bulk<C: ClientContext>(
    client: &Client<C>,
    op: Op,
    requests: &[(&str, TopicPartitionList)],
    timeout: Duration,
    stop: &AtomicBool,
) -> Result<Vec<GroupAnswer>, MirrorError> {
    let deadline = Instant::now() + Duration::from_millis(BULK_DEADLINE_MS);
    let what = match op {
        Op::Read => "reading group offsets",
        Op::Write => "committing group offsets",
    };
    let fail = |why: String| MirrorError::Other(format!("{what}: {why}"));
    let names: Vec<CString> = requests
        .iter()
        .map(|(g, _)| CString::new(*g).map_err(|_| fail(format!("group `{g}` holds a NUL"))))
        .collect::<Result<_, _>>()?;
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let mut answers: Vec<Option<GroupAnswer>> = requests
        .iter()
        .map(|(_, tpl)| (tpl.count() == 0).then(|| Ok(Vec::new())))
        .collect();
    let mut pending = answers
        .iter()
        .enumerate()
        .filter(|(_, a)| a.is_none())
        .map(|(i, _)| i)
        .collect::<std::collections::VecDeque<usize>>();
    let rk = client.native_ptr();
    let mut owned = Owned {
        // SAFETY: `rk` is the live handle of `client`, borrowed for this call.
        queue: unsafe { rd::rd_kafka_queue_new(rk) },
        event: std::ptr::null_mut(),
    };
    if owned.queue.is_null() {
        return Err(fail("librdkafka could not make a queue".into()));
    }
    let mut in_flight = 0usize;
    let mut abandoned: Option<&str> = None;
    while in_flight > 0 || (!pending.is_empty() && abandoned.is_none()) {
        while in_flight < IN_FLIGHT_MAX && abandoned.is_none() {
            if stop.load(Ordering::SeqCst) {
                abandoned = Some("not sent: the flow is stopping");
                break;
            }
            if Instant::now() > deadline {
                abandoned = Some("not sent: the call ran past its deadline");
                break;
            }
            let Some(i) = pending.pop_front() else { break };
            // SAFETY: as above; the request objects and options are copied by librdkafka
            // when the call is made and destroyed here right after.
            unsafe {
                submit(
                    rk,
                    op,
                    owned.queue,
                    &names[i],
                    &requests[i].1,
                    i,
                    timeout_ms,
                )
            }
            .map_err(fail)?;
            in_flight += 1;
        }
        // SAFETY: the queue is ours; the event is destroyed by `owned`.
        owned.event =
            unsafe { rd::rd_kafka_queue_poll(owned.queue, timeout_ms.saturating_add(1_000)) };
        if owned.event.is_null() {
            return Err(fail(format!(
                "{in_flight} groups not answered within {timeout_ms} ms"
            )));
        }
        // SAFETY: the event is live until `release_event`, and `answer` copies what it keeps.
        let (i, answer) = unsafe { answer_of(op, owned.event) };
        owned.release_event();
        let slot = i
            .checked_sub(1)
            .and_then(|i| answers.get_mut(i))
            .filter(|a| a.is_none())
            .ok_or_else(|| fail(format!("an answer for no request ({i})")))?;
        *slot = Some(answer);
        in_flight -= 1;
    }
    drop(owned);
    let unanswered = abandoned.unwrap_or("not answered");
    Ok(answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(unanswered.to_string())))
        .collect())
}

/// Sends request `i` (its opaque is `i + 1`, so that no answer carries a null opaque).
///
/// # Safety
/// `rk` and `queue` must be live librdkafka objects.
unsafe fn submit(
    rk: *mut rd::rd_kafka_t,
    op: Op,
    queue: *mut rd::rd_kafka_queue_t,
    group: &CString,
    partitions: &TopicPartitionList,
    i: usize,
    timeout_ms: i32,
) -> Result<(), String> {
    let kind = match op {
        Op::Read => rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS,
        Op::Write => rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_ALTERCONSUMERGROUPOFFSETS,
    };
    let options = rd::rd_kafka_AdminOptions_new(rk, kind);
    if options.is_null() {
        return Err("librdkafka could not make the request's options".into());
    }
    let mut errstr = [0 as c_char; 256];
    rd::rd_kafka_AdminOptions_set_request_timeout(
        options,
        timeout_ms,
        errstr.as_mut_ptr(),
        errstr.len(),
    );
    rd::rd_kafka_AdminOptions_set_opaque(options, (i + 1) as *mut c_void);
    let made = match op {
        Op::Read => {
            let mut request =
                rd::rd_kafka_ListConsumerGroupOffsets_new(group.as_ptr(), partitions.ptr());
            let made = !request.is_null();
            if made {
                rd::rd_kafka_ListConsumerGroupOffsets(rk, &mut request, 1, options, queue);
                rd::rd_kafka_ListConsumerGroupOffsets_destroy(request);
            }
            made
        }
        Op::Write => {
            let mut request =
                rd::rd_kafka_AlterConsumerGroupOffsets_new(group.as_ptr(), partitions.ptr());
            let made = !request.is_null();
            if made {
                rd::rd_kafka_AlterConsumerGroupOffsets(rk, &mut request, 1, options, queue);
                rd::rd_kafka_AlterConsumerGroupOffsets_destroy(request);
            }
            made
        }
    };
    rd::rd_kafka_AdminOptions_destroy(options);
    if made {
        Ok(())
    } else {
        Err("librdkafka could not make the request".into())
    }
}

/// The request number an answer carries, and the answer copied out of the event.
///
/// # Safety
/// `event` must be a live event polled from the queue the requests were sent to.
unsafe fn answer_of(op: Op, event: *mut rd::rd_kafka_event_t) -> (usize, GroupAnswer) {
    let i = rd::rd_kafka_event_opaque(event) as usize;
    if rd::rd_kafka_event_error(event) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        return (
            i,
            Err(text(
                rd::rd_kafka_event_error_string(event),
                "unknown error",
            )),
        );
    }
    let mut count = 0usize;
    let groups = match op {
        Op::Read => {
            let result = rd::rd_kafka_event_ListConsumerGroupOffsets_result(event);
            if result.is_null() {
                return (i, Err("the answer is of another kind".into()));
            }
            rd::rd_kafka_ListConsumerGroupOffsets_result_groups(result, &mut count)
        }
        Op::Write => {
            let result = rd::rd_kafka_event_AlterConsumerGroupOffsets_result(event);
            if result.is_null() {
                return (i, Err("the answer is of another kind".into()));
            }
            rd::rd_kafka_AlterConsumerGroupOffsets_result_groups(result, &mut count)
        }
    };
    if groups.is_null() || count != 1 {
        return (i, Err(format!("{count} groups in an answer for one")));
    }
    let group = *groups;
    let error = rd::rd_kafka_group_result_error(group);
    if !error.is_null()
        && rd::rd_kafka_error_code(error) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
    {
        return (
            i,
            Err(text(rd::rd_kafka_error_string(error), "unknown error")),
        );
    }
    let list = rd::rd_kafka_group_result_partitions(group);
    let mut partitions = Vec::new();
    if !list.is_null() {
        let n = usize::try_from((*list).cnt).unwrap_or(0);
        for k in 0..n {
            let e = &*(*list).elems.add(k);
            let metadata = if e.metadata.is_null() || e.metadata_size == 0 {
                String::new()
            } else {
                let bytes = std::slice::from_raw_parts(e.metadata as *const u8, e.metadata_size);
                String::from_utf8_lossy(bytes).into_owned()
            };
            partitions.push(PartitionOffset {
                topic: text(e.topic, ""),
                partition: e.partition,
                offset: (e.offset >= 0).then_some(e.offset),
                metadata,
                error: (e.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR)
                    .then(|| text(rd::rd_kafka_err2str(e.err), "unknown error")),
            });
        }
    }
    (i, Ok(partitions))
}

/// A C string librdkafka owns, copied (`absent` if it is null).
///
/// # Safety
/// `s` must be null or a NUL-terminated string alive for this call.
unsafe fn text(s: *const c_char, absent: &str) -> String {
    if s.is_null() {
        absent.to_string()
    } else {
        CStr::from_ptr(s).to_string_lossy().into_owned()
    }
}
