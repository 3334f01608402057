"""The ingest worker's records in chunks, not one by one through faust's stream machinery.

faust hands every fetched record to its agents one at a time: per record its consumer
loop awaits a `wait_first` (two new tasks), the conductor decodes it and queues it on a
channel, and the stream takes it off again with another `wait_first`. Profiled in the
ingest worker under `tessera bench ingest`: about 100,000 tasks and 250,000 loop
callbacks per 25,000 records, three quarters of the worker's CPU, with the validation and
the PostgreSQL append the rest. A batch sink has no use for any of it.

`BulkDrainConsumer` keeps all of faust's consumer — group membership, assignment, the
fetcher thread, read offsets and gaps, acks and the commit of acked offsets — and
replaces only the loop that delivers records (`Consumer._drain_messages`): for the topics
given to `install_bulk_drain`, each fetched chunk is tracked (as faust tracks records it
delivers) and handed over whole, with one await. Records are acked by the caller after
they are stored (`ack_stored`), so, as before, a committed Kafka offset never leads the
log. Records of other topics take faust's usual path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import Consumer as AiokafkaConsumer
from faust.transport.drivers.aiokafka import Transport as AiokafkaTransport
from faust.types import Message

log = logging.getLogger(__name__)

# Yield to the loop after this many records of other topics (as faust's own loop does).
_YIELD_EVERY = 100


@dataclass(frozen=True, slots=True)
class BulkDelivery:
    """Where chunks of `topics` go: `deliver` is awaited once per fetched chunk (in
    partition order within it) and may block to hold the fetcher back."""

    topics: frozenset[str]
    deliver: Callable[[list[Message]], Awaitable[None]]


class BulkDrainConsumer(AiokafkaConsumer):
    """faust's aiokafka consumer with the chunked delivery described above (made only by
    `BulkDrainTransport`, which holds the delivery)."""

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - see tests
        delivery = cast(BulkDrainTransport, self.transport).delivery
        # The body of faust's loop (faust/transport/consumer.py), minus the per-record
        # hand-off; the read-offset and gap bookkeeping is kept as it is there.
        callback = self.callback
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for
        commit_every = self._commit_every
        should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        since_yield = 0
        try:
            while not (should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                chunk: list[Message] = []
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in self.getmany(timeout=1.0):
                        offset = message.offset
                        read = get_read_offset(tp)
                        if read is not None and offset < read:
                            continue  # read already (faust drops these too)
                        gap = offset - (read or 0)
                        if gap > 1 and read and acks_enabled_for(message.topic):
                            await self._add_gap(tp, read + 1, offset)
                        if message.topic in delivery.topics:
                            self.track_message(message)
                            chunk.append(message)
                        else:
                            since_yield += 1
                            if since_yield > _YIELD_EVERY:
                                await asyncio.sleep(0)
                                since_yield = 0
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                        set_read_offset(tp, offset)
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    await self.commit()
                if chunk:
                    # A rebalance suspends the flow: stop waiting for room then (the
                    # records stay unacked and are read again by their next owner).
                    await self.wait_first(delivery.deliver(chunk), self.suspend_flow.wait())
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                log.info("broker stopped the consumer while shutting down")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


class BulkDrainTransport(AiokafkaTransport):
    """faust's aiokafka transport, making `BulkDrainConsumer`s that deliver to `delivery`."""

    Consumer = BulkDrainConsumer

    def __init__(self, url: Any, app: faust.App, delivery: BulkDelivery) -> None:
        super().__init__(url, app)
        self.delivery = delivery


def install_bulk_drain(
    app: faust.App,
    topics: Sequence[faust.TopicT],
    deliver: Callable[[list[Message]], Awaitable[None]],
) -> None:
    """Deliver the records of `topics` to `deliver` in chunks (see the module docstring).
    Call right after creating the app, before anything uses its transport or consumer.
    The topics are registered with the app so its consumer subscribes to them."""
    names = frozenset(name for topic in topics for name in topic.topics)
    delivery = BulkDelivery(topics=names, deliver=deliver)
    app.transport = BulkDrainTransport(app.conf.broker_consumer, app, delivery)
    for topic in topics:
        app.topics.add(topic)


def ack_stored(app: faust.App, messages: Sequence[Message]) -> None:
    """Ack `messages` (stored durably by the caller) so faust may commit past them.
    Messages read under an earlier group generation are left unacked: their partition
    may belong to another worker now, and they will simply be read again (a no-op for
    the log)."""
    consumer = app.consumer
    generation = app.consumer_generation_id
    for message in messages:
        read_under = getattr(message, "generation_id", None)
        if read_under is None or read_under == generation:
            consumer.ack(message)
