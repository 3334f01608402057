"""The ingest worker's chunked delivery: installed on the app's consumer, and acks only
what was read under the current group generation. (Delivery itself, order and exactly
once, is exercised against the real broker in tests/integration/stream.)"""

from __future__ import annotations

import faust
from faust.types import Message

from tessera.events.faust_bulk_drain import BulkDrainConsumer, ack_stored, install_bulk_drain


def _app() -> faust.App:
    return faust.App("bulk-drain-test", broker="kafka://127.0.0.1:1", store="memory://",
                     web_enabled=False)


async def _ignore(chunk: list[Message]) -> None:
    raise AssertionError("nothing is fetched in these tests")


def _message(offset: int, generation: int | None) -> Message:
    return Message("t", 0, offset, 0.0, 0, None, b"k", b"v", None, generation_id=generation)


def test_the_app_gets_a_bulk_consumer_subscribed_to_the_topic() -> None:
    app = _app()
    topic = app.topic("t", key_type=bytes, value_type=bytes)
    install_bulk_drain(app, [topic], _ignore)
    assert isinstance(app.consumer, BulkDrainConsumer)
    assert topic in app.topics


def test_a_plain_app_keeps_fausts_consumer() -> None:
    assert not isinstance(_app().consumer, BulkDrainConsumer)


def test_records_read_under_an_earlier_generation_are_not_acked() -> None:
    app = _app()
    install_bulk_drain(app, [app.topic("t")], _ignore)
    app.consumer_generation_id = 7
    current, stale, unknown = _message(1, 7), _message(2, 6), _message(3, None)
    ack_stored(app, [current, stale, unknown])
    assert current.acked
    assert not stale.acked  # its partition may be another worker's now: read it again
    assert unknown.acked
