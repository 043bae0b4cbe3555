"""Drives a strait broker with kafka-python, a pure-Python Kafka client (its own protocol
implementation, unrelated to librdkafka): admin create/describe, a producer, and a group
consumer that commits and resumes.

Usage: kafka_python_client.py --bootstrap HOST:PORT --suffix UNIQUE
Exits non-zero with a message naming the failed check.
"""

import argparse
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic

TIMEOUT_S = 30


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr)
        sys.exit(1)


def consume(consumer, want, what):
    got = []
    deadline = time.time() + TIMEOUT_S
    while len(got) < want and time.time() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            got.extend(records)
    check(len(got) == want, f"{what}: consumed {len(got)} of {want}")
    return got


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--suffix", required=True)
    args = parser.parse_args()
    topic = f"py-kp-{args.suffix}"
    group = f"py-kp-group-{args.suffix}"

    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap, request_timeout_ms=TIMEOUT_S * 1000)
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1,
                                  topic_configs={"max.message.bytes": "500000"})])
    described = admin.describe_topics([topic])
    check(len(described) == 1 and described[0]["error_code"] == 0, f"describe_topics: {described}")
    check(len(described[0]["partitions"]) == 2, "topic should have 2 partitions")
    # kafka-python 3 answers {resource type: {name: {key: {config data}}}}; "modified" keeps
    # only values that differ from the defaults, which is what a topic override is.
    configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    entries = next(iter(configs.values()))[topic]
    value = entries.get("max.message.bytes", {}).get("value")
    check(value == "500000", f"max.message.bytes is {value}: {entries}")
    check("segment.bytes" not in entries, f"an unset config was reported as modified: {entries}")

    producer = KafkaProducer(bootstrap_servers=args.bootstrap, acks="all")
    futures = [producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode()) for i in range(500)]
    producer.flush(timeout=TIMEOUT_S)
    offsets = [f.get(timeout=TIMEOUT_S) for f in futures]
    check(len({(m.partition, m.offset) for m in offsets}) == 500, "500 distinct positions")

    def group_consumer():
        return KafkaConsumer(
            topic, bootstrap_servers=args.bootstrap, group_id=group,
            auto_offset_reset="earliest", enable_auto_commit=False,
            session_timeout_ms=6000, heartbeat_interval_ms=1000,
        )

    consumer = group_consumer()
    got = consume(consumer, 500, "first consumer")
    check(len({r.key for r in got}) == 500, "500 distinct keys")
    consumer.commit()
    for p in (0, 1):
        tp = TopicPartition(topic, p)
        committed = consumer.committed(tp)
        end = consumer.end_offsets([tp])[tp]
        check(committed == end, f"partition {p}: committed {committed}, end {end}")
    consumer.close()

    # A new member of the same group starts at the committed offsets: only new records.
    for i in range(5):
        producer.send(topic, key=f"new{i}".encode(), value=b"n")
    producer.flush(timeout=TIMEOUT_S)
    consumer = group_consumer()
    got = consume(consumer, 5, "resumed consumer")
    check(sorted(r.key for r in got) == [f"new{i}".encode() for i in range(5)],
          f"resumed consumer read {[r.key for r in got]}")
    consumer.commit()
    consumer.close()
    producer.close()

    listed = {g["group_id"]: g for g in admin.list_groups()}
    check(group in listed, f"{group} not in {sorted(listed)}")
    check(listed[group]["protocol_type"] == "consumer", f"listed as {listed[group]}")
    described = admin.describe_groups([group])[group]
    check(described["error"] is None, f"describe_groups: {described}")
    check(described["group_state"] == "Empty", f"group state after close: {described}")
    check(described["members"] == [], f"members after close: {described['members']}")
    admin.close()
    print("kafka-python: all checks passed")


if __name__ == "__main__":
    main()
