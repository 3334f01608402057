"""The ingest worker survives its own death and PostgreSQL's: nothing lost, nothing twice."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tessera.events.kafka import ensure_topics
from tessera.infra.stack import Broker, LocalStack
from tessera.schemas.events import EventEnvelope

from .support import (
    StreamEnv,
    Worker,
    committed_offsets,
    event_count,
    expected_streams,
    interleaved,
    produce,
    recreate_topic,
    scalar,
    stored_streams,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture()
def small_batch_worker(stream_env: StreamEnv) -> Iterator[Worker]:
    """A worker appending 20 records per transaction: 4,000 records then take it ~1 s
    (with its default batches it stores them faster than a test can interrupt it)."""
    w = Worker(stream_env, extra_env={"TESSERA_STREAM_BATCH_MAX": "20"})
    yield w
    w.stop()


def _all_landed_once(
    env: StreamEnv, worker: Worker, events: list[EventEnvelope], records: int
) -> None:
    """Wait until every record is consumed, then check the log holds each event once, in
    each user's produce order."""
    url = env.database_url
    wait_until(
        f"tracking to cover all {records} records",
        lambda: scalar(url, "SELECT coalesce(sum(last_offset + 1), 0) FROM tracking") >= records,
        timeout_s=90, worker=worker,
    )
    assert event_count(url) == len(events)
    assert stored_streams(url) == expected_streams(events)


def test_kill_9_mid_stream_then_restart_loses_and_duplicates_nothing(
    stream_env: StreamEnv, small_batch_worker: Worker
) -> None:
    worker = small_batch_worker
    first = interleaved(users=200, per_user=20)  # 4,000
    produce(stream_env, first)
    worker.start()
    url = stream_env.database_url
    wait_until("the worker to be mid-stream", lambda: event_count(url) >= 500,
               timeout_s=60, worker=worker)
    worker.kill9()
    landed_at_kill = event_count(url)
    assert landed_at_kill < len(first), "the worker finished before it was killed; test is void"

    # More events arrive while no worker runs; then a fresh worker takes over.
    second = interleaved(users=200, per_user=25)[len(first):]  # users' messages 20..24
    produce(stream_env, second)
    worker.start()
    _all_landed_once(stream_env, worker, first + second, records=len(first) + len(second))


def test_a_worker_joining_and_another_dying_mid_stream_loses_and_duplicates_nothing(
    stream_env: StreamEnv,
) -> None:
    # Two rebalances under load: records fetched, queued or half-stored by a worker whose
    # partitions move must end up in the log once, in each user's order, and the group's
    # committed offsets must still reach the end.
    small_batches = {"TESSERA_STREAM_BATCH_MAX": "10"}
    first = Worker(stream_env, name="first", extra_env=small_batches)
    second = Worker(stream_env, name="second", extra_env=small_batches)
    events = interleaved(users=200, per_user=60)  # 12,000
    url = stream_env.database_url
    # The rest arrives at ~1,000/s from the second worker's start, so records are still
    # flowing when the group rebalances (a join takes Tansu a few seconds).
    feeder = threading.Thread(target=_feed, args=(stream_env, events[2_000:]), daemon=True)
    try:
        produce(stream_env, events[:2_000])
        first.start()
        wait_until("the first worker mid-stream", lambda: event_count(url) >= 300,
                   timeout_s=60, worker=first)
        second.start()  # joins the group: the partitions are split while records flow
        feeder.start()
        wait_until("the first worker to take part in a second assignment",
                   lambda: _assignments(first) >= 2, timeout_s=60, worker=first)
        split_at = event_count(url)
        wait_until("more events after the split", lambda: event_count(url) >= split_at + 300,
                   timeout_s=60, worker=second)
        first.assert_alive()
        assert event_count(url) < len(events), "all stored before the kill; test is void"
        first.kill9()  # its partitions move to the second once its session times out
        feeder.join(timeout=60)
        _all_landed_once(stream_env, second, events, records=len(events))
        wait_until(
            "the group's committed offsets to cover every record",
            lambda: sum(committed_offsets(stream_env).values()) >= len(events),
            timeout_s=30, worker=second,
        )
    finally:
        first.stop()
        second.stop()


def _feed(env: StreamEnv, events: list[EventEnvelope]) -> None:
    for start in range(0, len(events), 250):
        produce(env, events[start : start + 250])
        time.sleep(0.25)


def _assignments(worker: Worker) -> int:
    """How many partition assignments the worker's faust has carried out (from its log)."""
    return worker.log_path.read_text(errors="replace").count("Executing _on_partitions_assigned")


@pytest.mark.skipif(
    bool(os.environ.get("TESSERA_TEST_DATABASE_URL")),
    reason="restarts the embedded PostgreSQL; an external one is not ours to stop",
)
def test_postgres_restart_mid_stream_worker_recovers_by_itself(
    stream_env: StreamEnv, small_batch_worker: Worker, local_stack: LocalStack
) -> None:
    worker = small_batch_worker
    events = interleaved(users=200, per_user=30)
    produce(stream_env, events[:4_000])
    worker.start()
    url = stream_env.database_url
    wait_until("the worker to be mid-stream", lambda: event_count(url) >= 500,
               timeout_s=60, worker=worker)

    assert event_count(url) < 4_000, "the worker finished before the crash; test is void"
    local_stack.postgres.stop(mode="immediate")  # a crash: no shutdown checkpoint
    # Records keep arriving while the database is down; the worker must hold them.
    produce(stream_env, events[4_000:])
    time.sleep(3)
    worker.assert_alive()
    local_stack.postgres.start()

    # The last 2,000 were produced while the database was down: the same worker process
    # (never restarted) must have stored them after the restart.
    _all_landed_once(stream_env, worker, events, records=len(events))


def test_a_recreated_topic_is_read_from_its_start_not_taken_for_a_replay(
    stream_env: StreamEnv, worker: Worker
) -> None:
    # Offsets of the new topic restart at 0, below the tracking rows of the old one; a
    # worker keyed on the topic name alone would skip the new records as "replayed".
    first = interleaved(users=10, per_user=10)
    worker.start()
    produce(stream_env, first)
    url = stream_env.database_url
    wait_until("the first events", lambda: event_count(url) >= len(first), timeout_s=60,
               worker=worker)
    worker.stop()
    recreate_topic(stream_env)
    second = interleaved(users=10, per_user=15)[len(first):]
    produce(stream_env, second)
    worker.start()
    wait_until("the events of the new topic", lambda: event_count(url) >= len(first + second),
               timeout_s=60, worker=worker)
    assert stored_streams(url) == expected_streams(first + second)


def test_a_restart_of_the_in_memory_broker_under_a_running_worker_loses_nothing(
    stream_env: StreamEnv, tmp_path: Path
) -> None:
    # Tansu forgets every topic and offset on restart, while PostgreSQL keeps the
    # tracking rows: the running worker must notice the new topic incarnation (at the
    # group re-join) instead of skipping offsets 0.. as replays. It does so by exiting
    # for its supervisor (this test plays one) and reading the new topic from its start.
    # A private broker, so the session's shared one is left alone.
    broker = Broker(tmp_path / "broker")
    broker.start()
    env = replace(stream_env, bootstrap=broker.bootstrap)
    own = Worker(env, supervised=True)
    try:
        ensure_topics(env.bootstrap, env.settings())
        first = interleaved(users=10, per_user=10)
        own.start()
        produce(env, first)
        url = env.database_url
        wait_until("the first events", lambda: event_count(url) >= len(first), timeout_s=60,
                   worker=own)
        broker.stop()
        broker.start()
        ensure_topics(env.bootstrap, env.settings())
        second = interleaved(users=10, per_user=15)[len(first):]
        produce(env, second)
        wait_until("the events sent after the broker restart",
                   lambda: event_count(url) >= len(first + second), timeout_s=90, worker=own)
        assert stored_streams(url) == expected_streams(first + second)
    finally:
        own.stop()
        broker.stop()
