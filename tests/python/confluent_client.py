"""Drives a strait broker with Python confluent-kafka (librdkafka underneath, but its own
admin, producer and consumer bindings): admin topic creation, configs, a producer, a group
consumer with commits, and group listing, description and lag.

Usage: confluent_client.py --bootstrap HOST:PORT --suffix UNIQUE
Exits non-zero with a message naming the failed check.
"""

import argparse
import sys
import time

from confluent_kafka import (
    ConsumerGroupState,
    Consumer,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewTopic,
)

TIMEOUT_S = 30


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr)
        sys.exit(1)


def wait(futures):
    return {k: f.result(timeout=TIMEOUT_S) for k, f in futures.items()}


def describe_topic_config(admin, topic):
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    return wait(admin.describe_configs([resource]))[resource]


def lag(admin, bootstrap, group, topic, partitions):
    """Committed offset and lag per partition, as `kafka-consumer-groups --describe` computes."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic, p) for p in range(partitions)]
    )
    result = wait(admin.list_consumer_group_offsets([request]))[group]
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group + "-probe"})
    out = {}
    for tp in result.topic_partitions:
        check(tp.error is None, f"offset fetch error for {tp}: {tp.error}")
        _, high = probe.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=TIMEOUT_S)
        out[tp.partition] = (tp.offset, high - tp.offset)
    probe.close()
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--suffix", required=True)
    args = parser.parse_args()
    topic = f"py-ck-{args.suffix}"
    group = f"py-ck-group-{args.suffix}"
    admin = AdminClient({"bootstrap.servers": args.bootstrap})

    # Admin: create a topic with a config override, then see it.
    wait(admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1,
                                       config={"retention.ms": "3600000"})]))
    metadata = admin.list_topics(timeout=TIMEOUT_S)
    check(topic in metadata.topics, f"{topic} missing from metadata")
    check(len(metadata.topics[topic].partitions) == 3, "topic should have 3 partitions")

    # Configs: describe with sources, alter incrementally, see the change.
    entries = describe_topic_config(admin, topic)
    retention = entries["retention.ms"]
    check(retention.value == "3600000", f"retention.ms is {retention.value}")
    check(retention.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value,
          f"retention.ms source is {retention.source}")
    check(entries["segment.bytes"].source != ConfigSource.DYNAMIC_TOPIC_CONFIG.value,
          "segment.bytes should come from a default")
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET),
    ])
    wait(admin.incremental_alter_configs([resource]))
    check(describe_topic_config(admin, topic)["retention.ms"].value == "7200000",
          "incremental alter did not change retention.ms")
    bad = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "soon", incremental_operation=AlterConfigOpType.SET),
    ])
    try:
        wait(admin.incremental_alter_configs([bad]))
        check(False, "an invalid retention.ms was accepted")
    except KafkaException as e:
        check("retention.ms" in str(e), f"the INVALID_CONFIG error should name the key: {e}")
    check(describe_topic_config(admin, topic)["retention.ms"].value == "7200000",
          "a rejected alter changed the config")

    # Producer.
    errors = []
    producer = Producer({"bootstrap.servers": args.bootstrap, "acks": "all"})
    for i in range(1000):
        producer.produce(topic, key=f"k{i}", value=f"v{i}",
                         on_delivery=lambda err, msg: errors.append(err) if err else None)
        if i % 100 == 0:
            producer.poll(0)
    check(producer.flush(TIMEOUT_S) == 0, "producer did not flush")
    check(not errors, f"delivery errors: {errors[:3]}")

    # Group consumer with manual commits.
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
    })
    consumer.subscribe([topic])
    seen = set()
    deadline = time.time() + TIMEOUT_S
    while len(seen) < 1000 and time.time() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        check(msg.error() is None, f"consume error: {msg.error()}")
        seen.add(msg.key().decode())
    check(len(seen) == 1000, f"consumed {len(seen)} of 1000 distinct records")
    consumer.commit(asynchronous=False)

    # Groups: listed, described with the live member, lag zero, then lag after more records.
    listed = wait({"l": admin.list_consumer_groups()})["l"]
    ids = {g.group_id for g in listed.valid}
    check(group in ids, f"{group} not listed: {ids}")
    described = wait(admin.describe_consumer_groups([group]))[group]
    check(described.state == ConsumerGroupState.STABLE, f"group state {described.state}")
    check(len(described.members) == 1, f"{len(described.members)} members")
    assigned = {tp.partition for tp in described.members[0].assignment.topic_partitions}
    check(assigned == {0, 1, 2}, f"the only member should own every partition: {assigned}")
    check(all(l == 0 for _, l in lag(admin, args.bootstrap, group, topic, 3).values()),
          "lag should be zero after committing everything")
    for i in range(10):
        producer.produce(topic, key=f"late{i}", value="x", partition=1)
    check(producer.flush(TIMEOUT_S) == 0, "producer did not flush")
    lags = lag(admin, args.bootstrap, group, topic, 3)
    check(lags[1][1] == 10 and lags[0][1] == 0, f"lag per partition: {lags}")
    consumer.close()

    # The group is empty now and can be deleted.
    described = wait(admin.describe_consumer_groups([group]))[group]
    check(described.state == ConsumerGroupState.EMPTY, f"after close: {described.state}")
    wait(admin.delete_consumer_groups([group]))
    listed = wait({"l": admin.list_consumer_groups()})["l"]
    check(group not in {g.group_id for g in listed.valid}, "deleted group still listed")
    print("confluent-kafka: all checks passed")


if __name__ == "__main__":
    main()
