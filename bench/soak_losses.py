"""Where did a soak's lost events go? Forensics for events accepted (202) but never logged.

The soak attributes a loss to the in-memory broker's restart when the event was
acknowledged by then and not yet in the log. What is left is split by evidence:

- `in_broker_not_logged`: the record is on the (current) broker, so the worker never
  stored it: a consumer bug (skipped offsets, a stuck partition);
- `sent_before_broker_restarted`: the request started before a killed broker was up
  again and its 202 came after the kill, so the killed incarnation may have taken it
  (a 202 slower than the soak's grace);
- `other`: neither: lost between the server's acknowledgement and the broker.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from kafka import KafkaConsumer, TopicPartition

from tessera.events.kafka_no_autocreate import NO_AUTO_CREATE

# The soak's markers inside record values, whatever the value's framing.
_MARKER = re.compile(rb"soak-(\d+) hello")


def markers_in_topic(
    bootstrap: str, topic: str, *, timeout_s: float = 60.0
) -> dict[str, tuple[int, int]]:
    """Every soak marker on the broker's `topic` (read from the start to today's end),
    with the partition and offset of its record."""
    consumer = KafkaConsumer(
        **NO_AUTO_CREATE,
        bootstrap_servers=bootstrap,
        client_id="tessera-soak-forensics",
        enable_auto_commit=False,
        request_timeout_ms=int(timeout_s * 1000) + 1000,
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            return {}
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        found: dict[str, tuple[int, int]] = {}
        remaining = {tp for tp in partitions if end[tp] > 0}
        idle_polls = 0
        while remaining and idle_polls < int(timeout_s):
            batches = consumer.poll(timeout_ms=1000, max_records=10_000)
            idle_polls = 0 if batches else idle_polls + 1
            for tp, records in batches.items():
                for record in records:
                    for m in _MARKER.findall(record.value or b""):
                        found[f"soak-{m.decode()}"] = (tp.partition, record.offset)
                if records and records[-1].offset + 1 >= end[tp]:
                    remaining.discard(tp)
        return found
    finally:
        consumer.close()


def classify_losses(
    unexplained: Iterable[str],
    *,
    on_broker: Mapping[str, object],
    first_sent: Mapping[str, float],
    accepted: Mapping[str, float],
    broker_restarts: Sequence[tuple[float, float]],
) -> dict[str, int]:
    """Counts by the module docstring's categories. `broker_restarts`: (killed at,
    answering again at) per broker fault; all times monotonic seconds."""
    counts: Counter[str] = Counter()
    for marker in unexplained:
        sent, taken = first_sent.get(marker), accepted.get(marker)
        if marker in on_broker:
            counts["in_broker_not_logged"] += 1
        elif (
            sent is not None
            and taken is not None
            and any(sent <= up and taken >= killed for killed, up in broker_restarts)
        ):
            counts["sent_before_broker_restarted"] += 1
        else:
            counts["other"] += 1
    return dict(counts)


def offset_ranges(positions: Iterable[tuple[int, int]]) -> dict[str, str]:
    """{partition: "a-b, c, ..."}: (partition, offset) pairs as compact runs."""
    by_partition: dict[int, list[int]] = {}
    for partition, offset in positions:
        by_partition.setdefault(partition, []).append(offset)
    out: dict[str, str] = {}
    for partition, offsets in sorted(by_partition.items()):
        offsets.sort()
        runs: list[str] = []
        start = prev = offsets[0]
        for o in [*offsets[1:], None]:
            if o is not None and o == prev + 1:
                prev = o
                continue
            runs.append(str(start) if start == prev else f"{start}-{prev}")
            if o is not None:
                start = prev = o
        out[str(partition)] = ", ".join(runs)
    return out
