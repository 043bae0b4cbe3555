"""Sets and checks the committed offsets of many consumer groups with kafka-python (its own
protocol implementation, so the mirror's group sync is checked by a client that shares no
code with it).

Group i of `--count` is named PREFIX-i and holds offset (i % MOD0) + SHIFT0 on partition 0
and (i % MOD1) + SHIFT1 on partition 1 of TOPIC.

Usage:
  many_groups.py commit --bootstrap HOST:PORT --topic T --prefix P --count N [--mod0 ...]
  many_groups.py check  --bootstrap HOST:PORT --topic T --prefix P --count N [--shift0 ...]
`check` exits non-zero naming the first group that differs and how many do.
"""

import argparse
import sys

from kafka import TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.structs import OffsetAndMetadata

TIMEOUT_S = 60


def expected(args, i):
    return {
        TopicPartition(args.topic, 0): (i % args.mod0) + args.shift0,
        TopicPartition(args.topic, 1): (i % args.mod1) + args.shift1,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["commit", "check"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--mod0", type=int, default=61)
    parser.add_argument("--mod1", type=int, default=41)
    parser.add_argument("--shift0", type=int, default=0)
    parser.add_argument("--shift1", type=int, default=0)
    args = parser.parse_args()
    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap, request_timeout_ms=TIMEOUT_S * 1000)
    groups = [f"{args.prefix}-{i}" for i in range(args.count)]

    if args.action == "commit":
        for i, group in enumerate(groups):
            offsets = {tp: OffsetAndMetadata(o, "", -1) for tp, o in expected(args, i).items()}
            errors = admin.alter_group_offsets(group, offsets)
            bad = {tp: e for tp, e in errors.items() if e.__name__ != "NoError"}
            if bad:
                print(f"FAILED: committing {group}: {bad}", file=sys.stderr)
                sys.exit(1)
        print(f"committed {len(groups)} groups")
        return

    tps = list(expected(args, 0).keys())
    found = admin.list_group_offsets({g: tps for g in groups})
    wrong = []
    for i, group in enumerate(groups):
        have = {tp: om.offset for tp, om in found.get(group, {}).items() if om.offset >= 0}
        if have != expected(args, i):
            wrong.append((group, have, expected(args, i)))
    if wrong:
        group, have, want = wrong[0]
        print(f"FAILED: {len(wrong)} of {len(groups)} groups differ; the first, {group}: "
              f"has {have}, expected {want}", file=sys.stderr)
        sys.exit(1)
    print(f"all {len(groups)} groups hold the expected offsets")


if __name__ == "__main__":
    main()
