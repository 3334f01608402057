"""The ingest worker lands every event exactly once, in each user's order."""

from __future__ import annotations

import pytest

from .support import (
    StreamEnv,
    Worker,
    committed_offsets,
    event_count,
    expected_streams,
    interleaved,
    produce,
    scalar,
    stored_streams,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_ten_thousand_events_from_200_users_land_exactly_once_in_order(
    stream_env: StreamEnv, worker: Worker
) -> None:
    events = interleaved(users=200, per_user=50)
    worker.start()
    produce(stream_env, events)
    # Re-send a slice: a producer retry or a client resubmitting must change nothing.
    produce(stream_env, events[:500])

    url = stream_env.database_url
    wait_until("10,000 events in the log", lambda: event_count(url) >= 10_000,
               timeout_s=90, worker=worker)
    # Let the re-sent records (behind the originals in each partition) be consumed too:
    # they are done when the tracking rows cover every record produced.
    wait_until(
        "tracking to cover all 10,500 records",
        lambda: scalar(url, "SELECT coalesce(sum(last_offset + 1), 0) FROM tracking") >= 10_500,
        timeout_s=30, worker=worker,
    )

    # Kafka's committed offsets follow the log: faust commits what the worker acked after
    # storing it (a worker that never acked would still pass the checks above, since a
    # re-read is a no-op, but would re-read its whole backlog after every restart).
    wait_until(
        "the group's committed offsets to cover all 10,500 records",
        lambda: sum(committed_offsets(stream_env).values()) >= 10_500,
        timeout_s=30, worker=worker,
    )

    assert event_count(url) == 10_000
    stored = stored_streams(url)
    expected = expected_streams(events)
    assert len(stored) == 200
    # Same events per user, and stream_version order == produce order.
    assert stored == expected
    assert scalar(url, "SELECT count(*) FROM rejected_inputs") == 0
