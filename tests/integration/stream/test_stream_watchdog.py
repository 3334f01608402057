"""The ingest worker's stall watchdog: the decision on a controlled clock, and the real
worker exiting (status 75, for its supervisor) when records wait and nothing moves —
then, restarted, storing everything exactly once."""

from __future__ import annotations

import time

import psycopg
import pytest

from tessera.events.stream_watchdog import StallDetector
from tessera.events.stream_worker import EXIT_STALLED

from .support import StreamEnv, Worker, interaction, interleaved, produce, scalar, wait_until


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_partition_behind_and_unmoved_for_stall_s_is_stalled() -> None:
    clock = Clock()
    detector = StallDetector(stall_s=10.0, clock=clock)
    assert detector.observe({0: 5, 1: 8}, {0: 4, 1: 2}) == []  # first reading
    clock.now = 9.0
    assert detector.observe({0: 5, 1: 9}, {0: 4, 1: 2}) == []  # 9 s: not yet
    clock.now = 10.5
    assert detector.observe({0: 5, 1: 9}, {0: 4, 1: 2}) == [1]  # 0 is caught up


def test_progress_or_an_idle_topic_is_not_a_stall() -> None:
    clock = Clock()
    detector = StallDetector(stall_s=10.0, clock=clock)
    for step in range(10):  # slow but moving: the offset changes on every reading
        clock.now = step * 5.0
        assert detector.observe({0: 1000}, {0: step}) == []
    for step in range(10):  # idle: everything stored (end = stored + 1)
        clock.now = 100.0 + step * 5.0
        assert detector.observe({0: 10, 1: 0}, {0: 9}) == []


def test_a_partition_with_nothing_stored_yet_but_records_waiting_stalls() -> None:
    clock = Clock()
    detector = StallDetector(stall_s=10.0, clock=clock)
    assert detector.observe({3: 2}, {}) == []
    clock.now = 11.0
    assert detector.observe({3: 2}, {}) == [3]


@pytest.mark.integration
def test_a_worker_that_cannot_store_exits_and_its_restart_stores_everything_once(
    stream_env: StreamEnv,
) -> None:
    worker = Worker(stream_env, extra_env={"TESSERA_STREAM_STALL_TIMEOUT_S": "4"})
    url = stream_env.database_url
    try:
        worker.start()
        first = interleaved(users=5, per_user=10)
        produce(stream_env, first)
        wait_until(
            "the first events in the log",
            lambda: scalar(url, "SELECT count(*) FROM events") == len(first),
            timeout_s=120,
            worker=worker,
        )
        time.sleep(8)  # idle for twice the stall timeout: no false alarm
        worker.assert_alive()

        # Block appends (a lock the worker waits on and retries forever): records wait on
        # the topic and no stored offset moves.
        with psycopg.connect(url) as blocker:
            blocker.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
            produce(stream_env, [interaction(f"late{u}", n) for n in range(4) for u in range(5)])
            assert worker.proc is not None
            status = worker.proc.wait(timeout=90)
            assert status == EXIT_STALLED, worker.log_tail()
            assert "ingest stalled" in worker.log_tail()
            blocker.rollback()

        worker.start()
        wait_until(
            "the late events in the log",
            lambda: scalar(url, "SELECT count(*) FROM events") == len(first) + 20,
            timeout_s=120,
            worker=worker,
        )
        assert scalar(url, "SELECT count(DISTINCT event_id) FROM events") == len(first) + 20
    finally:
        worker.stop()


@pytest.mark.integration
def test_committed_offsets_left_by_an_old_topic_incarnation_are_moved_back_at_start(
    stream_env: StreamEnv, worker: Worker
) -> None:
    """What a worker that outlived a restart of the in-memory broker leaves behind: the
    group's committed offsets far beyond the new topic's records. Without the start-up
    check the restarted worker would seek past every record and wait forever."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    events = interleaved(users=6, per_user=5)
    produce(stream_env, events)
    stale = KafkaConsumer(
        bootstrap_servers=stream_env.bootstrap,
        group_id=stream_env.group,
        enable_auto_commit=False,
    )
    try:
        partitions = stale.partitions_for_topic(stream_env.topic) or set()
        ahead = OffsetAndMetadata(5000, "", -1)
        stale.commit({TopicPartition(stream_env.topic, p): ahead for p in partitions})
        assert stale.committed(TopicPartition(stream_env.topic, min(partitions))) == 5000
    finally:
        stale.close()

    worker.start()
    wait_until(
        "every event in the log",
        lambda: scalar(stream_env.database_url, "SELECT count(*) FROM events") == len(events),
        timeout_s=120,
        worker=worker,
    )
    assert "committed offsets of group" in worker.log_tail(20_000)
