//! Topic ids (Kafka's KIP-516): what tells a topic from another one created later under the
//! same name. The rdkafka crate does not wrap librdkafka's DescribeTopics, so this calls it
//! through the crate's own bindings to librdkafka, on the client's handle, and copies every
//! answer out before librdkafka frees it.
//!
//! A cluster that does not know topic ids (Kafka before 2.8) answers with the zero id, which
//! is reported as no id: the mirror then cannot tell incarnations apart and says so.

use std::collections::BTreeMap;
use std::ffi::{c_char, CStr, CString};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};

use crate::clients::MirrorError;

/// Which side of a flow a topic is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The source cluster.
    Source,
    /// The target cluster.
    Target,
}

/// The zero id, in Kafka's base64 form: a topic without an id.
const ZERO_ID: &str = "AAAAAAAAAAAAAAAAAAAAAA";
/// Topics described per request.
const TOPICS_PER_REQUEST: usize = 1_000;

/// Frees what it owns when dropped, so that every early return releases librdkafka's
/// objects.
struct Owned {
    collection: *mut rd::rd_kafka_TopicCollection_t,
    options: *mut rd::rd_kafka_AdminOptions_t,
    queue: *mut rd::rd_kafka_queue_t,
    event: *mut rd::rd_kafka_event_t,
}

impl Drop for Owned {
    fn drop(&mut self) {
        // SAFETY: each pointer is null or was returned by its librdkafka constructor and is
        // destroyed exactly once, here.
        unsafe {
            if !self.event.is_null() {
                rd::rd_kafka_event_destroy(self.event);
            }
            if !self.queue.is_null() {
                rd::rd_kafka_queue_destroy(self.queue);
            }
            if !self.options.is_null() {
                rd::rd_kafka_AdminOptions_destroy(self.options);
            }
            if !self.collection.is_null() {
                rd::rd_kafka_TopicCollection_destroy(self.collection);
            }
        }
    }
}

/// The id of each of `topics` that exists and has one, by name (blocking, at most `timeout`
/// per request of up to [`TOPICS_PER_REQUEST`] topics). A topic that does not exist is
/// absent from the answer.
pub fn topic_ids<C: ClientContext>(
    client: &Client<C>,
    topics: &[String],
    timeout: Duration,
) -> Result<BTreeMap<String, String>, MirrorError> {
    let mut ids = BTreeMap::new();
    for chunk in topics.chunks(TOPICS_PER_REQUEST) {
        describe(client, chunk, timeout, &mut ids)?;
    }
    Ok(ids)
}

fn describe<C: ClientContext>(
    client: &Client<C>,
    topics: &[String],
    timeout: Duration,
    ids: &mut BTreeMap<String, String>,
) -> Result<(), MirrorError> {
    let fail =
        |what: String| MirrorError::Other(format!("describing topics for their ids: {what}"));
    let names: Vec<CString> = topics
        .iter()
        .map(|t| CString::new(t.as_str()).map_err(|_| fail(format!("`{t}` holds a NUL"))))
        .collect::<Result<_, _>>()?;
    let mut pointers: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let rk = client.native_ptr();
    let mut owned = Owned {
        collection: std::ptr::null_mut(),
        options: std::ptr::null_mut(),
        queue: std::ptr::null_mut(),
        event: std::ptr::null_mut(),
    };
    // SAFETY: `rk` is the live handle of `client`, borrowed for this call. The names outlive
    // the collection's construction (librdkafka copies them). Every object is created and
    // destroyed (by `owned`) in this function, and every string librdkafka returns is copied
    // before the event that owns it is destroyed.
    unsafe {
        owned.collection =
            rd::rd_kafka_TopicCollection_of_topic_names(pointers.as_mut_ptr(), pointers.len());
        owned.options = rd::rd_kafka_AdminOptions_new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS,
        );
        if owned.collection.is_null() || owned.options.is_null() {
            return Err(fail("librdkafka could not make the request".into()));
        }
        let mut errstr = [0 as c_char; 256];
        rd::rd_kafka_AdminOptions_set_request_timeout(
            owned.options,
            timeout_ms,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        owned.queue = rd::rd_kafka_queue_new(rk);
        rd::rd_kafka_DescribeTopics(rk, owned.collection, owned.options, owned.queue);
        owned.event = rd::rd_kafka_queue_poll(owned.queue, timeout_ms.saturating_add(1_000));
        if owned.event.is_null() {
            return Err(fail(format!("no answer within {timeout_ms} ms")));
        }
        if rd::rd_kafka_event_error(owned.event)
            != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        {
            let reason = rd::rd_kafka_event_error_string(owned.event);
            let reason = if reason.is_null() {
                "unknown error".to_string()
            } else {
                CStr::from_ptr(reason).to_string_lossy().into_owned()
            };
            return Err(fail(reason));
        }
        let result = rd::rd_kafka_event_DescribeTopics_result(owned.event);
        if result.is_null() {
            return Err(fail("the answer is not a DescribeTopics result".into()));
        }
        let mut count = 0usize;
        let descriptions = rd::rd_kafka_DescribeTopics_result_topics(result, &mut count);
        for i in 0..count {
            let d = *descriptions.add(i);
            let error = rd::rd_kafka_TopicDescription_error(d);
            if !error.is_null()
                && rd::rd_kafka_error_code(error)
                    != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            {
                continue; // unknown topic, or not authorized: no id to compare
            }
            let name = rd::rd_kafka_TopicDescription_name(d);
            let id = rd::rd_kafka_TopicDescription_topic_id(d);
            if name.is_null() || id.is_null() {
                continue;
            }
            let text = rd::rd_kafka_Uuid_base64str(id);
            if text.is_null() {
                continue;
            }
            let id = CStr::from_ptr(text).to_string_lossy().into_owned();
            if id != ZERO_ID {
                ids.insert(CStr::from_ptr(name).to_string_lossy().into_owned(), id);
            }
        }
    }
    drop(owned);
    Ok(())
}
