"""One contract for both webhook stores: PostgreSQL and its in-memory twin."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tessera.events.store import EventStoreError
from tessera.events.webhooks import (
    DeliveryAttempt,
    MemoryWebhookStore,
    PostgresWebhookStore,
    WebhookStore,
)


@pytest.fixture(params=["memory", "postgres"])
def hooks(request: pytest.FixtureRequest) -> Iterator[WebhookStore]:
    if request.param == "memory":
        yield MemoryWebhookStore()
        return
    store = PostgresWebhookStore(request.getfixturevalue("database_url"))
    yield store
    store.close()


def _attempt(event_id: uuid.UUID, n: int, *, ok: bool, tenant: str = "acme") -> DeliveryAttempt:
    return DeliveryAttempt(tenant_id=tenant, event_id=event_id, event_type="revision.promoted",
                           position=7, url="http://127.0.0.1:9/hook", attempt=n, ok=ok,
                           status_code=200 if ok else 500, error=None if ok else "HTTP 500")


def test_one_webhook_per_tenant(hooks: WebhookStore) -> None:
    assert hooks.get_webhook("acme") is None
    hooks.set_webhook("acme", "http://a.example/hook", "s" * 32)
    hooks.set_webhook("acme", "https://b.example/hook", "t" * 32)
    got = hooks.get_webhook("acme")
    assert got is not None and (got.url, got.secret) == ("https://b.example/hook", "t" * 32)
    assert hooks.get_webhook("other") is None
    assert hooks.delete_webhook("acme") is True
    assert hooks.delete_webhook("acme") is False
    assert hooks.get_webhook("acme") is None


def test_delivery_log_newest_first_per_tenant_and_event(hooks: WebhookStore) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    hooks.record_attempt(_attempt(first, 1, ok=False))
    hooks.record_attempt(_attempt(first, 2, ok=True))
    hooks.record_attempt(_attempt(second, 1, ok=True))
    hooks.record_attempt(_attempt(second, 1, ok=True, tenant="other"))
    log = hooks.deliveries("acme")
    assert [(a.event_id, a.attempt, a.ok) for a in log] == [
        (second, 1, True), (first, 2, True), (first, 1, False)]
    assert log[-1].status_code == 500 and log[-1].error == "HTTP 500"
    assert all(a.attempted_at is not None and a.id is not None for a in log)
    assert [a.attempt for a in hooks.deliveries("acme", event_id=first)] == [2, 1]
    assert len(hooks.deliveries("acme", limit=1)) == 1


def test_cursor_per_consumer(hooks: WebhookStore) -> None:
    assert hooks.cursor("webhooks") == 0
    hooks.set_cursor("webhooks", 41)
    hooks.set_cursor("webhooks", 42)
    assert hooks.cursor("webhooks") == 42
    assert hooks.cursor("other") == 0


def test_postgres_refuses_a_non_http_url(database_url: str) -> None:
    store = PostgresWebhookStore(database_url)
    try:
        with pytest.raises(EventStoreError):
            store.set_webhook("acme", "file:///etc/passwd", "s" * 32)
    finally:
        store.close()
