"""Publishing batches of keyed records fast: an aiokafka producer on its own event loop.

Why not kafka-python's `send()` per record: it appends each record under a lock shared
with its sender thread, so a burst of sends ping-pongs the GIL between two busy threads
(measured here: 2-6k records/s). aiokafka builds one batch per partition in a single
thread and hands whole batches to the broker (`create_batch` / `send_batch`): ~4x
faster on the same broker, and the `bench ingest` result records both.

The producer lives on a dedicated thread with its own asyncio loop, so any caller can
publish — an async HTTP handler (`asyncio.wrap_future`) or a blocking gRPC handler
(`Future.result`) — without sharing a loop with it.

A broken connection retires the producer at once: its unsent and in-flight batches fail
(the caller answers 503 and the client sends the same batch again) and the next publish
starts a fresh producer. Retrying them is what aiokafka would do, and against a
restarted in-memory broker it is harmful: the retried batches reach partitions that do
not exist yet, which Tansu takes anyway, and the partitions end up with overlapping record
batches whose events a consumer steps over (measured by `tessera bench soak`: acknowledged
events on the broker that never reached the log). A fresh producer first asks for the
topic's metadata, and topics are never auto-created (events/kafka_no_autocreate.py).

Records with the same key go to the same partition (murmur2, the Java client's default
partitioner, as kafka-python and aiokafka use) in call order, so one user's events stay
ordered. No idempotence and no transactions (Tansu has neither); a failed batch fails
the whole call, and the caller retries it: event ids make a retry harmless.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Future
from typing import Any, Final, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.conn import CloseReason
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

from tessera.events.kafka_no_autocreate import forbid_aiokafka_auto_create

T = TypeVar("T")
log = logging.getLogger(__name__)

# Below the broker's default 1 MiB message limit; a batch of this size is one request.
MAX_BATCH_BYTES: Final = 512 * 1024
# How long a publish waits for a topic to appear (it is never auto-created, see
# events/kafka_no_autocreate.py): after a broker restart, until it is re-created.
TOPIC_WAIT_S: Final = 5.0
# After this long without the topic, `create_topics` (when given) is called once.
TOPIC_CREATE_AFTER_S: Final = 1.0
# Keys whose partition is remembered per topic (about 60 MB at most).
MAX_CACHED_KEYS: Final = 500_000


class PublishError(RuntimeError):
    """The broker did not take a batch (unreachable, timeout, record too large, ...)."""


class KafkaPublisher:
    """Thread-safe publisher of `(key, value)` records; see the module docstring."""

    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str = "tessera-ingest",
        timeout_s: float = 30.0,
        create_topics: Callable[[], object] | None = None,
    ) -> None:
        """`create_topics` (blocking; run in a thread) creates the topics properly, with
        their configured partitions, when a publish finds its topic missing: after a
        restart of the in-memory broker, so ingest does not wait for the worker's."""
        forbid_aiokafka_auto_create()
        self._create_topics = create_topics
        self._timeout_s = timeout_s
        self._partitioner = DefaultPartitioner()
        self._partition_caches: dict[str, tuple[list[int], dict[bytes, int]]] = {}
        # asyncio's own loop whatever the policy (uvicorn's may be uvloop's): the retire
        # path below was proven with it (see events/fast_loop.py).
        self._loop: asyncio.AbstractEventLoop = asyncio.SelectorEventLoop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="kafka-publisher", daemon=True
        )
        self._thread.start()
        self._bootstrap, self._client_id = bootstrap, client_id
        self._producer: AIOKafkaProducer | None = None
        self._closed = False
        self._retiring: set[asyncio.Task[None]] = set()
        self.retired = 0  # producers retired after a broken connection (for logs and tests)
        try:
            self._producer = self._call(self._start()).result(timeout_s + 5)
        except BaseException:
            self._stop_loop()
            raise

    def _call(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def _start(self) -> AIOKafkaProducer:
        bootstrap = self._bootstrap
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=False,
            max_batch_size=MAX_BATCH_BYTES,
            max_request_size=2 * MAX_BATCH_BYTES,
            request_timeout_ms=int(self._timeout_s * 1000),
        )
        # Connections are made with this callback from the client's attribute, so it
        # is swapped before the first connection (made by start()).
        client = producer.client
        aiokafka_callback = client._on_connection_closed

        def on_connection_closed(conn: object, reason: CloseReason) -> None:
            aiokafka_callback(conn, reason)
            if reason in (CloseReason.CONNECTION_BROKEN, CloseReason.CONNECTION_TIMEOUT):
                self._retire(producer, reason)

        client._on_connection_closed = on_connection_closed
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise PublishError(f"Kafka broker {bootstrap} is unreachable: {exc}") from exc
        return producer

    def publish(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> Future[list[int]]:
        """Send `records` (key, value) to `topic`; the future resolves once the broker
        acknowledged every one, or fails with `PublishError`. Its result: the index of the
        last record sent to each partition (records before it in that partition precede
        it in the log too)."""
        return self._call(self._publish(topic, records))

    def _retire(self, producer: AIOKafkaProducer, reason: CloseReason) -> None:
        """Stop `producer` from sending anything again and fail what it holds (see the
        module docstring). Runs on the loop thread, inside aiokafka's close callback."""
        if id(producer) != id(self._producer):  # an older one, retired already
            return
        self._producer = None
        self.retired += 1
        sender = producer._sender
        if sender is not None and sender.sender_task is not None:
            sender.sender_task.cancel()  # no retry of anything it held
        accumulator = producer._message_accumulator
        held = [b for queue in accumulator._batches.values() for b in queue]
        held += list(accumulator._pending_batches)
        accumulator.fail_all(KafkaConnectionError(f"connection to the broker lost ({reason.name})"))
        for batch in held:  # nobody waits on these any more: read them, no asyncio warning
            if batch._drain_waiter.done() and not batch._drain_waiter.cancelled():
                batch._drain_waiter.exception()
        task = self._loop.create_task(self._dispose(producer))
        self._retiring.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._retiring.discard)

    @staticmethod
    async def _dispose(producer: AIOKafkaProducer) -> None:
        # Everything it held has failed, so stop() has nothing left to flush; it can
        # still trip over its cancelled sender, so the client is closed regardless.
        try:
            await producer.stop()
        except (Exception, asyncio.CancelledError):  # its last words do not matter
            pass
        finally:
            await producer.client.close()

    async def _current(self) -> AIOKafkaProducer:
        if self._closed:
            raise PublishError("the publisher is closed")
        if self._producer is None:  # retired: a fresh one (one loop thread, no race)
            self._producer = await self._start()
        return self._producer

    async def _publish(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> list[int]:
        producer = await self._current()
        try:
            partitions = sorted(await self._partitions(producer, topic))
            partition_of = self._partition_cache(topic, partitions)
            open_batches: dict[int, BatchBuilder] = {}
            last_in_partition: dict[int, int] = {}
            acks: list[asyncio.Future[object]] = []
            for index, (key, value) in enumerate(records):
                partition = partition_of.get(key)
                if partition is None:
                    partition = partition_of[key] = self._partitioner(key, partitions, partitions)
                last_in_partition[partition] = index
                batch = open_batches.get(partition)
                if batch is None:
                    batch = open_batches[partition] = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    # Full: send it (records of a partition keep their order) and go on.
                    acks.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = open_batches[partition] = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        raise PublishError(
                            f"a record of {len(value)} bytes exceeds the {MAX_BATCH_BYTES} "
                            "byte batch limit"
                        )
            for partition, batch in open_batches.items():
                acks.append(await producer.send_batch(batch, topic, partition=partition))
            # return_exceptions: every ack's outcome is read, none is left unretrieved.
            outcomes = await asyncio.wait_for(
                asyncio.gather(*acks, return_exceptions=True), timeout=self._timeout_s
            )
            failed = next((o for o in outcomes if isinstance(o, BaseException)), None)
            if failed is not None:
                raise failed
        except (KafkaError, TimeoutError) as exc:
            raise PublishError(f"the broker did not acknowledge: {exc!r}") from exc
        return sorted(last_in_partition.values())

    def _partition_cache(self, topic: str, partitions: list[int]) -> dict[bytes, int]:
        """key -> partition for `topic` as it is now: murmur2 in Python costs ~10 us a
        record, and keys (users) repeat. Dropped when the partitions change, and when it
        grows past MAX_CACHED_KEYS."""
        cached = self._partition_caches.get(topic)
        if cached is None or cached[0] != partitions or len(cached[1]) > MAX_CACHED_KEYS:
            cached = self._partition_caches[topic] = (partitions, {})
        return cached[1]

    async def _partitions(self, producer: AIOKafkaProducer, topic: str) -> set[int]:
        wait_s = min(TOPIC_WAIT_S, self._timeout_s)
        if self._create_topics is not None:
            try:
                return await self._partitions_within(producer, topic, TOPIC_CREATE_AFTER_S)
            except TimeoutError:
                try:
                    await asyncio.to_thread(self._create_topics)
                except Exception as exc:  # the wait below reports the missing topic
                    log.warning("could not create the topics: %s", exc)
        try:
            return await self._partitions_within(producer, topic, wait_s)
        except TimeoutError as exc:
            raise PublishError(f"topic {topic} does not exist on the broker") from exc

    @staticmethod
    async def _partitions_within(
        producer: AIOKafkaProducer, topic: str, timeout_s: float
    ) -> set[int]:
        found: set[int] = await asyncio.wait_for(producer.partitions_for(topic), timeout_s)
        return found

    def close(self) -> None:
        """Wait for what is in flight, stop the producer and the loop thread."""
        self._closed = True
        producer, self._producer = self._producer, None
        try:
            if self._retiring:
                self._call(asyncio.wait(set(self._retiring))).result(self._timeout_s)
            if producer is not None:
                self._call(producer.stop()).result(self._timeout_s)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(self._timeout_s)
        if not self._thread.is_alive():
            self._loop.close()
