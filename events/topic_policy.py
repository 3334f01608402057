"""How Tessera's topics are made and checked: replication, min in-sync replicas, and a
bounded retention for the topics that carry users' text.

Durability: an `acks=all` write is on `min.insync.replicas` replicas before the producer
hears back, so with 3 replicas and 2 in sync an acknowledged event survives the loss of
any one broker. The embedded Tansu broker is one node: 1 and 1.

Forgetting: `tessera forget` erases a user's content from PostgreSQL, but their raw
records stay on the interactions topic (and its DLQ) until the broker deletes them. Those
two topics get `retention.ms` and a `segment.ms` no longer than it: Kafka deletes whole
closed segments only, and without `segment.ms` a segment rolls after the broker's default
of 7 days, so a record could outlive `retention.ms` by that much. A record is therefore
gone at most `retention.ms + segment.ms` (plus the broker's retention check interval,
5 minutes by default) after it was written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from tessera.schemas.settings import Settings

HOUR_MS: Final = 3_600_000
DAY_MS: Final = 24 * HOUR_MS

# (replication factor, min.insync.replicas, retention.ms) when the settings leave them unset.
# Embedded: one node, and nothing survives its restart anyway, so an hour is plenty.
EMBEDDED_DEFAULTS: Final = (1, 1, HOUR_MS)
# External: survive one broker loss; a week of raw events lets the log be rebuilt after
# a long outage of the ingest worker or PostgreSQL.
EXTERNAL_DEFAULTS: Final = (3, 2, 7 * DAY_MS)
# Longest segment.ms given to the content topics (shorter when retention is shorter).
MAX_SEGMENT_MS: Final = DAY_MS


@dataclass(frozen=True, slots=True)
class TopicPolicy:
    """What every topic should have; `content_topics` also get the bounded retention."""

    replication_factor: int
    min_insync_replicas: int
    retention_ms: int
    content_topics: frozenset[str]

    @classmethod
    def from_settings(cls, settings: Settings) -> TopicPolicy:
        rf, isr, retention = EMBEDDED_DEFAULTS if settings.embedded_broker else EXTERNAL_DEFAULTS
        rf = settings.topic_replication_factor or rf
        # An unset min.insync.replicas never exceeds the replicas there are.
        isr = settings.topic_min_insync_replicas or min(isr, rf)
        return cls(
            replication_factor=rf,
            min_insync_replicas=isr,
            retention_ms=settings.topic_retention_ms or retention,
            content_topics=frozenset(
                {settings.topic_interactions, settings.topic_interactions_dlq}
            ),
        )

    @property
    def segment_ms(self) -> int:
        return min(self.retention_ms, MAX_SEGMENT_MS)

    def configs(self, topic: str) -> dict[str, str]:
        """The topic configs CreateTopics carries for `topic`."""
        out = {"min.insync.replicas": str(self.min_insync_replicas)}
        if topic in self.content_topics:
            out["retention.ms"] = str(self.retention_ms)
            out["segment.ms"] = str(self.segment_ms)
        return out

    def weaknesses(self, topic: str, *, replicas: int, configs: Mapping[str, str]) -> list[str]:
        """How an existing topic falls short of the policy (empty when it does not).
        `replicas`: the fewest replicas of any of its partitions; `configs`: its
        effective configs as the broker describes them."""
        problems: list[str] = []
        if replicas < self.replication_factor:
            problems.append(
                f"{topic}: {replicas} replica(s) per partition, configured "
                f"{self.replication_factor}: losing a broker can lose acknowledged events"
            )
        isr = _as_int(configs.get("min.insync.replicas"))
        if isr is None or isr < self.min_insync_replicas:
            problems.append(
                f"{topic}: min.insync.replicas {isr if isr is not None else 'unknown'}, "
                f"configured {self.min_insync_replicas}: an acknowledged write may sit on "
                "fewer replicas"
            )
        if topic in self.content_topics:
            retention = _as_int(configs.get("retention.ms"))
            if retention is None or retention < 0 or retention > self.retention_ms:
                shown = "unlimited" if retention is not None and retention < 0 else retention
                problems.append(
                    f"{topic}: retention.ms {shown if shown is not None else 'unknown'}, "
                    f"configured {self.retention_ms}: forgotten users' records stay on the "
                    "broker longer than the README promises"
                )
        return problems


def _as_int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
