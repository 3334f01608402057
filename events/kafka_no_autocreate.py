"""Kafka clients here never create topics by asking about them.

Why: a metadata request for a missing topic asks the broker to create it (Kafka's
`allow_auto_topic_creation`, true by default in both clients). After a restart of the
in-memory Tansu broker, producers retrying their batches did exactly that, racing the
worker's `ensure_topics`; the auto-created partitions then took concurrent produces at
the same offset ("AlreadyExists" in the broker log), held overlapping record batches, and
the ingest worker stepped over acknowledged events (measured by `tessera bench soak`:
262 events on the broker, never logged; produce rates of ~80/s for minutes). Topics are
made only by `ensure_topics`, with the configured partition count, or not at all.

kafka-python takes `allow_auto_create_topics=False` (see `NO_AUTO_CREATE`); aiokafka (the
ingest publisher, and faust's consumer and producer) has no such option and always asks
for creation, so `forbid_aiokafka_auto_create` makes its client ask without it.
"""

from __future__ import annotations

from typing import Any, Final

# For every kafka-python KafkaProducer / KafkaConsumer made by Tessera.
NO_AUTO_CREATE: Final[dict[str, Any]] = {"allow_auto_create_topics": False}


def forbid_aiokafka_auto_create() -> None:
    """Make aiokafka's metadata requests leave missing topics missing (idempotent)."""
    import aiokafka.client
    from aiokafka.protocol.metadata import MetadataRequest

    if getattr(aiokafka.client.MetadataRequest, "tessera_no_autocreate", False):
        return

    class MetadataRequestWithoutAutoCreate(MetadataRequest):  # type: ignore[misc]
        tessera_no_autocreate = True

        def __init__(
            self, topics: list[str] | None = None, allow_auto_topic_creation: bool | None = False
        ) -> None:
            super().__init__(topics, allow_auto_topic_creation)

    # The client module builds every metadata request it sends from this name.
    aiokafka.client.MetadataRequest = MetadataRequestWithoutAutoCreate
