"""The ingest stream worker: a faust-streaming app from `tessera.interactions` to the log.

faust's consumer fetches the topic and hands over whole fetched chunks
(events/faust_bulk_drain.py: faust's one-record-at-a-time delivery cost three quarters
of the worker's CPU); a task gathers them into batches (up to `stream_batch_max` records
or `stream_batch_within_s` seconds), hands each batch to the `IngestSink`, and only then
acks the records; faust commits acked offsets to Kafka on its commit interval.
So the Kafka position trails PostgreSQL, never leads it. (Should the sink raise — a bug,
since bad input becomes rejections and outages are waited out — the worker exits for
its supervisor to restart it; the batch stays unacked, so the records are read again.)

Faust is configured for what the broker can do (Tansu in the local stack, see
ARCHITECTURE.md): no tables or changelogs (the log in PostgreSQL is the only state), no
leader-election topic, no topics declared by faust (they are created by
`ensure_topics` with the configured partition count), no web server, and group timing
that survives Tansu's slow joins.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from dataclasses import replace
from typing import Any, NoReturn

import faust
from aiokafka.errors import KafkaError
from faust.types import Message

from tessera.events.fast_loop import use_fast_loops
from tessera.events.faust_bulk_drain import ack_stored, install_bulk_drain
from tessera.events.faust_fetch_wait import set_fetch_max_wait
from tessera.events.kafka import KafkaSetupError, ensure_topics, topic_id
from tessera.events.kafka_no_autocreate import forbid_aiokafka_auto_create
from tessera.events.store import EventStore
from tessera.events.stream_metrics import record_lag, serve_metrics
from tessera.events.stream_sink import Backoff, IngestSink, Record, SinkStats, SkippedRecords
from tessera.events.stream_watchdog import (
    StallDetector,
    kafka_end_offsets,
    kafka_log_start,
    reconcile_committed_offsets,
)
from tessera.schemas.settings import Settings

log = logging.getLogger(__name__)

# DLQ headers: why a record was refused and where it was read.
REASON_HEADER = "tessera-reason"
SOURCE_HEADER = "tessera-source"
# How often the worker logs its counters (only when they changed).
STATS_INTERVAL_S = 5.0
# The stall watchdog's reading interval (at most; see events/stream_watchdog.py), and
# the exit status of a worker that stopped itself as stalled (EX_TEMPFAIL: restart me).
WATCHDOG_INTERVAL_S = 10.0
EXIT_STALLED = 75
# Fetched chunks queued for the sink (each up to a fetch's worth of records).
CHUNKS_QUEUED = 8
# How often a batch that is not full yet looks for more chunks, within its time limit.
FILL_POLL_S = 0.005


class TopicDeadLetters:
    """Invalid records to the `.dlq` topic: the original key and value untouched, the
    reason and source in headers. Waits for the broker's ack so a rejection is durable
    before the record's offset can be committed."""

    def __init__(self, topic: faust.TopicT, backoff: Backoff | None = None) -> None:
        self._topic = topic
        self._backoff = backoff or Backoff()

    async def send(self, record: Record, reason: str) -> None:
        headers = {
            REASON_HEADER: reason.encode(),
            SOURCE_HEADER: record.source.encode(),
        }
        delays = self._backoff.delays()
        while True:  # the record's offset waits for this; so does the whole partition
            try:
                pending = await self._topic.send(
                    key=record.key, value=record.value, headers=headers
                )
                await pending
                return
            except KafkaError as exc:
                wait = next(delays)
                log.warning("dead-letter send failed (%s); retrying in %.1fs", exc, wait)
                await asyncio.sleep(wait)


def build_app(
    settings: Settings, *, bootstrap: str, store: EventStore, tracking_name: str
) -> tuple[faust.App, IngestSink]:
    """The faust app and the sink it feeds (the sink's stats are for logs and tests).
    `tracking_name` (see `tracking_topic_name`: the topic with the broker's topic id) is
    the topic name of the tracking rows, so a re-created topic starts a fresh position
    instead of looking like a replay of the old one."""
    forbid_aiokafka_auto_create()  # faust's clients are aiokafka's
    set_fetch_max_wait(settings.stream_fetch_max_wait_ms)
    datadir = settings.state_dir / "faust"
    datadir.mkdir(parents=True, exist_ok=True)  # faust creates only the last level
    app = faust.App(
        settings.stream_group,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=str(datadir),
        key_serializer="raw",
        value_serializer="raw",
        # The log in PostgreSQL is the state; faust tables would need compacted
        # changelog topics that Tansu does not compact.
        topic_disable_leader=True,
        topic_allow_declare=False,
        topic_partitions=settings.topic_partitions,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        # Tansu joins groups slowly; a short session with a 1 s heartbeat is what it
        # handles reliably, and a dead worker's partitions move on within seconds.
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=30.0,
        # Commit acked offsets often: after a crash less is re-read (re-reading is
        # harmless, the tracking rows make it a no-op, but it costs time).
        broker_commit_interval=1.0,
        broker_commit_every=settings.stream_batch_max,
        producer_acks=-1,
        # Records in an unfinished batch at a rebalance are simply read again.
        stream_wait_empty=False,
        stream_buffer_maxsize=max(4096, 4 * settings.stream_batch_max),
    )
    interactions = app.topic(settings.topic_interactions, key_type=bytes, value_type=bytes)
    dlq = app.topic(settings.topic_interactions_dlq, key_type=bytes, value_type=bytes)
    sink = IngestSink(
        store=store,
        group=settings.stream_group,
        dead_letters=TopicDeadLetters(dlq),
        max_text_chars=settings.max_text_chars,
        tracking_topics={settings.topic_interactions: tracking_name},
        log_start=lambda topic, partition: kafka_log_start(bootstrap, topic, partition),
    )
    # Fetched chunks wait here for the sink; a full queue holds the fetcher back.
    chunks: asyncio.Queue[list[Message]] = asyncio.Queue(maxsize=CHUNKS_QUEUED)
    install_bulk_drain(app, [interactions], chunks.put)

    async def store_chunks() -> None:
        # A record is acked only after the store committed it (see the module docstring).
        most = settings.stream_batch_max
        waiting: list[Message] = []
        while True:
            if not waiting:
                waiting = await chunks.get()
            await _fill(waiting, chunks, most=most, within_s=settings.stream_batch_within_s)
            batch, waiting = waiting[:most], waiting[most:]
            try:
                await sink.process([_record(message) for message in batch])
            except SkippedRecords as exc:
                _exit_for_restart(str(exc))
            except Exception:  # a bug: outages are waited out and bad input rejected
                log.exception("the ingest sink failed")
                _exit_for_restart("the ingest sink failed (see the error above)")
            ack_stored(app, batch)

    app.task(store_chunks)  # (faust's decorators are untyped)

    generations: list[int] = []  # consumer group generations seen, in order

    @app.on_partitions_assigned.connect
    async def _on_assigned(sender: object, /, *args: object, signal: object, **_: object) -> None:
        # Partitions may have been processed elsewhere since we last held them. (A stale
        # cache would be harmless, only slower: the store's tracking check has the last
        # word; see IngestSink.)
        sink.forget_positions()
        # A group generation that goes backwards means the coordinator forgot the group:
        # the (in-memory) broker restarted, with topics and offsets from 0 again, and
        # this process's consumer still holds the old incarnation's offsets (see below).
        generation = int(getattr(app, "consumer_generation_id", 0) or 0)
        if generations and generation <= generations[-1]:
            _exit_for_restart(
                f"the consumer group's generation went back ({generations[-1]} -> "
                f"{generation}): the broker lost its state"
            )
        generations.append(generation)
        # A broker restart (Tansu keeps topics in memory) re-creates the topic with
        # offsets from 0 and forces a new assignment: pick up the new incarnation here,
        # or its records would be skipped as replays of the old one.
        topic = settings.topic_interactions
        try:
            current = await asyncio.to_thread(topic_id, bootstrap, topic, timeout_s=10.0)
        except KafkaSetupError as exc:
            log.error("could not re-read the id of %s, keeping the last one: %s", topic, exc)
            return
        previous = sink.tracking_topics.get(topic)
        if current is None and previous is not None and "#noid-" not in previous:
            log.warning("topic %s no longer reports an id", topic)
        name = tracking_topic_name(topic, current)
        if current is not None and previous is not None and previous != name:
            # A new incarnation under a running consumer: faust still holds the old
            # one's read and acked offsets, skips new records below them and commits
            # them into the new topic (measured: acknowledged events silently never
            # stored). A fresh process starts clean, and its start-up check moves the
            # group's committed offsets back to what the log holds.
            _exit_for_restart(f"topic {topic} has a new incarnation ({name})")
        if previous != name:
            log.warning("topic %s has a new incarnation; tracking it as %s", topic, name)
            sink.tracking_topics[topic] = name

    last_logged: list[SinkStats] = []

    async def _log_stats() -> None:
        if not last_logged or last_logged[-1] != sink.stats:
            log.info("ingest totals: %s", sink.stats)
            last_logged[:] = [replace(sink.stats)]

    app.timer(STATS_INTERVAL_S)(_log_stats)  # (faust's decorators are untyped)

    if settings.stream_stall_timeout_s > 0:
        detector = StallDetector(settings.stream_stall_timeout_s)

        async def _watchdog() -> None:
            try:
                end, stored = await asyncio.to_thread(
                    _watchdog_reading, settings, bootstrap, store, sink
                )
            except Exception as exc:  # an outage is not a stall: skip this reading
                log.warning("stall watchdog skipped a reading: %s", exc)
                return
            record_lag(end, stored)
            if detector.observe(end, stored):
                _exit_for_restart("stalled (see the line above)")

        interval = min(WATCHDOG_INTERVAL_S, settings.stream_stall_timeout_s / 4)
        app.timer(interval)(_watchdog)
    elif settings.ingest_metrics_port is not None:
        # No watchdog to take the readings: the lag gauge takes its own.

        async def _lag() -> None:
            try:
                end, stored = await asyncio.to_thread(
                    _watchdog_reading, settings, bootstrap, store, sink
                )
            except Exception as exc:  # an outage: keep the last value
                log.warning("consumer lag reading skipped: %s", exc)
                return
            record_lag(end, stored)

        app.timer(WATCHDOG_INTERVAL_S)(_lag)

    return app, sink


def _exit_for_restart(why: str) -> NoReturn:
    """Exit with EXIT_STALLED for the supervisor to start a fresh worker. Hard (no faust
    shutdown): a confused consumer may not stop cleanly either, and nothing is lost, the
    log and its tracking rows are the state; the fresh process's start-up check moves
    the group's committed offsets back to what the log holds."""
    log.warning("restarting the ingest worker: %s", why)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(EXIT_STALLED)


def _watchdog_reading(
    settings: Settings, bootstrap: str, store: EventStore, sink: IngestSink
) -> tuple[dict[int, int], dict[int, int]]:
    """End offsets from the broker and stored offsets from the log, per partition. The
    tracking name comes from the broker's current topic id, not the sink's, so a worker
    that missed a new incarnation of the topic (a broker restart) is seen as stalled."""
    topic = settings.topic_interactions
    end = kafka_end_offsets(bootstrap, topic)
    current = topic_id(bootstrap, topic, timeout_s=10.0)
    name = (
        tracking_topic_name(topic, current)
        if current is not None
        else sink.tracking_topics.get(topic, topic)
    )
    stored = {}
    for partition in end:
        offset = store.max_tracking_offset(settings.stream_group, name, partition)
        if offset is not None:
            stored[partition] = offset
    return end, stored


async def _fill(
    waiting: list[Message], chunks: asyncio.Queue[list[Message]], *, most: int, within_s: float
) -> None:
    """Add the chunks that arrive within `within_s` to `waiting`, until it holds `most`
    records or more."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while len(waiting) < most:
        if not chunks.empty():
            waiting.extend(chunks.get_nowait())
            continue
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        await asyncio.sleep(min(FILL_POLL_S, remaining))


def _record(message: Message) -> Record:
    return Record(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=_raw(message.key),
        value=_raw(message.value),
    )


def _raw(field: object) -> bytes | None:
    # The topics use the "raw" codec, so fields arrive as bytes (None for a null key or
    # a tombstone); a str would only come from a codec change, and stays readable.
    if field is None or isinstance(field, bytes):
        return field
    return str(field).encode()


def tracking_topic_name(topic: str, topic_id: str | None) -> str:
    """`topic#id` when the broker reports topic ids. Without an id we cannot tell a
    re-created topic (offsets from 0 again) from the old one, and reusing a name would
    skip the new records as replays: so each call then names a fresh incarnation. That
    is safe because the log refuses a second copy of a tenant's `event_id`; the tracking row
    only saves re-reading, it is not what keeps the log free of duplicates."""
    return f"{topic}#{topic_id}" if topic_id else f"{topic}#noid-{uuid.uuid4().hex[:16]}"


def run_worker(
    settings: Settings,
    *,
    bootstrap: str,
    store: EventStore,
    loglevel: str = "info",
    logging_config: dict[str, Any] | None = None,
) -> None:
    """Create the topics if needed and run the worker until SIGINT/SIGTERM. faust's
    Worker sets up logging again when it starts: `logging_config` (a dictConfig dict,
    e.g. JSON lines) is what it sets up instead of its own colored text."""
    ensure_topics(bootstrap, settings)
    topic = settings.topic_interactions
    current_id = topic_id(bootstrap, topic)
    # Without a topic id this start tracks the topic under a fresh name (nothing stored
    # under it), so committed offsets go back to 0 and the topic is read afresh: the
    # event_id, unique per tenant, keeps the re-read from storing anything twice.
    name = tracking_topic_name(topic, current_id)
    try:
        reconcile_committed_offsets(
            bootstrap,
            topic,
            settings.stream_group,
            lambda p: store.max_tracking_offset(settings.stream_group, name, p),
        )
    except Exception as exc:  # the sink's gap check covers what is left
        log.warning("could not check the group's committed offsets: %s", exc)
    # The sink tracks the topic under the very name the offsets were checked against.
    use_fast_loops()  # before faust makes its loops
    app, sink = build_app(settings, bootstrap=bootstrap, store=store, tracking_name=name)
    if settings.ingest_metrics_port is not None:
        serve_metrics(sink.stats, settings.ingest_metrics_port)
    worker = faust.Worker(
        app, loglevel=loglevel, redirect_stdouts=False, quiet=True, logging_config=logging_config
    )
    worker.execute_from_commandline()
