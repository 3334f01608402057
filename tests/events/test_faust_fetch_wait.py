"""The ingest worker's consumer gets the configured fetch wait, not faust's fixed 1.5 s
(Tansu holds a fetch for that long even when records arrive; see the module)."""

from __future__ import annotations

import asyncio

import faust

from tessera.events.faust_fetch_wait import set_fetch_max_wait


def _worker_consumer_fetch_wait() -> int:
    app = faust.App("fetch-wait-test", broker="kafka://127.0.0.1:1", store="memory://",
                    web_enabled=False)

    async def build() -> int:
        thread = app.consumer._thread  # type: ignore[attr-defined]
        consumer = thread._create_consumer(loop=asyncio.get_running_loop())
        try:
            return int(consumer._fetch_max_wait_ms)
        finally:
            await consumer.stop()

    return asyncio.run(build())


def test_faust_worker_consumers_use_the_configured_fetch_wait() -> None:
    set_fetch_max_wait(77)
    assert _worker_consumer_fetch_wait() == 77
    set_fetch_max_wait(100)  # again: replaces the wait, does not stack wrappers
    assert _worker_consumer_fetch_wait() == 100
