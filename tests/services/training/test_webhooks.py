"""Webhooks end to end against a real HTTP server on 127.0.0.1: a promotion arrives
signed; a failing receiver is retried with backoff and every try is in the delivery log."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tessera.events.memory_store import MemoryEventStore
from tessera.events.webhooks import MemoryWebhookStore
from tessera.services.webhooks.dispatcher import WebhookDispatcher
from tessera.services.webhooks.sender import RetryPolicy, WebhookSender
from tessera.services.webhooks.signing import sign, verify

from .events import evaluated, exchange, promoted, rejected, trained
from .receiver import receiver

SECRET = "whsec-0123456789abcdef"


def _log_with_decisions() -> MemoryEventStore:
    store = MemoryEventStore()
    store.append([exchange("acme", "alice", n) for n in range(3)])
    store.append([trained("acme", "alice", "r1"), evaluated("acme", "alice", "r1"),
                  promoted("acme", "alice", "r1")])
    store.append([trained("acme", "alice", "r2", parent="r1"), evaluated("acme", "alice", "r2"),
                  rejected("acme", "alice", "r2")])
    store.append([exchange("globex", "bob", 0), trained("globex", "bob", "g1"),
                  evaluated("globex", "bob", "g1"), promoted("globex", "bob", "g1")])
    return store


def _sleeps() -> list[float]:
    return []


def _dispatcher(store: MemoryEventStore, hooks: MemoryWebhookStore,
                sleeps: list[float], **policy: Any) -> WebhookDispatcher:
    sender = WebhookSender(hooks, RetryPolicy(allow_private_hosts=True, **policy),
                           sleep=sleeps.append)
    return WebhookDispatcher(store, hooks, sender)


def test_promotion_arrives_signed() -> None:
    store, hooks, sleeps = _log_with_decisions(), MemoryWebhookStore(), _sleeps()
    with receiver([200]) as rx:
        hooks.set_webhook("acme", rx.url, SECRET)  # globex has none: passed over
        dispatcher = _dispatcher(store, hooks, sleeps)
        assert dispatcher.run_once() == 3  # acme promoted, acme rejected, globex promoted
        assert dispatcher.run_once() == 0  # the cursor moved past them
    assert len(rx.got) == 2 and sleeps == []
    first = rx.got[0]
    body = json.loads(first.body)
    assert body["type"] == "revision.promoted" and body["user_id"] == "alice"
    assert body["data"]["revision_id"] == "r1" and body["data"]["reasons"] == ["beats baseline"]
    assert first.headers["x-tessera-event"] == "revision.promoted"
    assert first.headers["x-tessera-delivery"] == body["id"]
    ts, sig = first.headers["x-tessera-timestamp"], first.headers["x-tessera-signature"]
    assert sig == sign(SECRET, int(ts), first.body)
    assert verify(SECRET, timestamp=ts, signature=sig, body=first.body)
    assert not verify("another-secret-xxxxxxxx", timestamp=ts, signature=sig, body=first.body)
    assert not verify(SECRET, timestamp=ts, signature=sig, body=first.body + b" ")
    assert not verify(SECRET, timestamp=ts, signature=sig, body=first.body, now=int(ts) + 3600)
    assert json.loads(rx.got[1].body)["type"] == "revision.rejected"
    log = hooks.deliveries("acme")
    assert [(a.event_type, a.attempt, a.ok, a.status_code) for a in log] == [
        ("revision.rejected", 1, True, 200), ("revision.promoted", 1, True, 200)]


def test_failing_receiver_is_retried_with_backoff_and_logged() -> None:
    store, hooks, sleeps = _log_with_decisions(), MemoryWebhookStore(), _sleeps()
    with receiver([500, 503, 200]) as rx:
        hooks.set_webhook("acme", rx.url, SECRET)
        dispatcher = _dispatcher(store, hooks, sleeps, first_delay_s=0.5, max_attempts=5)
        dispatcher.run_once()
    promoted_id = json.loads(rx.got[0].body)["id"]
    tries = [a for a in reversed(hooks.deliveries("acme")) if str(a.event_id) == promoted_id]
    assert [(a.attempt, a.ok, a.status_code, a.error) for a in tries] == [
        (1, False, 500, "HTTP 500"), (2, False, 503, "HTTP 503"), (3, True, 200, None)]
    assert sleeps[:2] == [0.5, 1.0]  # exponential: first_delay_s, then twice that
    # each try is signed afresh and all carry the same body
    assert len({r.body for r in rx.got[:3]}) == 1


def test_gives_up_after_max_attempts_and_moves_on() -> None:
    store, hooks, sleeps = _log_with_decisions(), MemoryWebhookStore(), _sleeps()
    with receiver([500]) as rx:
        hooks.set_webhook("acme", rx.url, SECRET)
        dispatcher = _dispatcher(store, hooks, sleeps, first_delay_s=1.0, max_attempts=3,
                                 max_delay_s=1.5)
        assert dispatcher.run_once() == 3
    assert len(rx.got) == 6  # 3 tries for each of acme's two events
    assert sleeps == [1.0, 1.5, 1.0, 1.5]  # capped at max_delay_s
    assert all(not a.ok for a in hooks.deliveries("acme"))


@pytest.mark.parametrize("status", [400, 401, 404])
def test_refusal_is_not_retried(status: int) -> None:
    store, hooks, sleeps = _log_with_decisions(), MemoryWebhookStore(), _sleeps()
    with receiver([status]) as rx:
        hooks.set_webhook("acme", rx.url, SECRET)
        _dispatcher(store, hooks, sleeps).run_once()
    assert len(rx.got) == 2 and sleeps == []


def test_unreachable_receiver_is_logged_as_an_error() -> None:
    store, hooks, sleeps = _log_with_decisions(), MemoryWebhookStore(), _sleeps()
    hooks.set_webhook("acme", "http://127.0.0.1:9/hook", SECRET)  # discard port: refused
    _dispatcher(store, hooks, sleeps, max_attempts=2, timeout_s=2.0).run_once()
    log = hooks.deliveries("acme")
    assert len(log) == 4 and all(a.status_code is None and a.error for a in log)


def test_internal_addresses_are_refused_unless_allowed() -> None:
    store, hooks, sleeps = _log_with_decisions(), MemoryWebhookStore(), _sleeps()
    with receiver([200]) as rx:
        hooks.set_webhook("acme", rx.url, SECRET)
        sender = WebhookSender(hooks, RetryPolicy(), sleep=sleeps.append)  # the default
        WebhookDispatcher(store, hooks, sender).run_once()
    assert rx.got == [] and sleeps == []  # never posted, not retried
    log = hooks.deliveries("acme")
    assert len(log) == 2 and all(not a.ok and a.status_code is None for a in log)
    assert log[0].error is not None and "non-public address 127.0.0.1" in log[0].error


def test_a_new_dispatcher_starts_at_the_head() -> None:
    store, hooks, sleeps = _log_with_decisions(), MemoryWebhookStore(), _sleeps()
    with receiver([200]) as rx:
        hooks.set_webhook("acme", rx.url, SECRET)
        dispatcher = _dispatcher(store, hooks, sleeps)
        dispatcher.start_at_head_if_new()
        assert dispatcher.run_once() == 0
        store.append([trained("acme", "alice", "r3", parent="r1"),
                      evaluated("acme", "alice", "r3"), promoted("acme", "alice", "r3", "r1")])
        assert dispatcher.run_once() == 1
    assert [json.loads(r.body)["data"]["revision_id"] for r in rx.got] == ["r3"]


def test_on_postgres_a_rollback_and_forget_arrive_and_the_log_is_kept(database_url: str) -> None:
    """The deployed pair: PostgreSQL event log and webhook store, the real forget."""
    from tessera.events.postgres_store import PostgresEventStore
    from tessera.events.webhooks import PostgresWebhookStore

    from .events import rolled_back

    with PostgresEventStore(database_url) as store:
        hooks = PostgresWebhookStore(database_url)
        try:
            store.append([exchange("acme", "alice", n) for n in range(3)])
            store.append([trained("acme", "alice", "r1"), evaluated("acme", "alice", "r1"),
                          promoted("acme", "alice", "r1")])
            store.append([rolled_back("acme", "alice", "r1", None)])
            store.forget_user("acme", "alice", actor="admin-key", reason="user asked")
            with receiver([503, 200]) as rx:
                hooks.set_webhook("acme", rx.url, SECRET)
                sleeps = _sleeps()
                policy = RetryPolicy(first_delay_s=0.25, allow_private_hosts=True)
                sender = WebhookSender(hooks, policy, sleep=sleeps.append)
                assert WebhookDispatcher(store, hooks, sender).run_once() == 3
            types = [json.loads(r.body)["type"] for r in rx.got]
            assert types == ["revision.promoted", "revision.promoted", "revision.rolled_back",
                             "user.forgotten"]  # the first try of the first event got a 503
            forgotten = json.loads(rx.got[-1].body)
            assert forgotten["data"]["reason"] == "user asked"
            assert "prompt" not in json.dumps(forgotten)  # a tombstone carries no content
            assert all(verify(SECRET, timestamp=r.headers["x-tessera-timestamp"],
                              signature=r.headers["x-tessera-signature"], body=r.body)
                       for r in rx.got)
            log = hooks.deliveries("acme")
            assert [(a.attempt, a.ok) for a in reversed(log)] == [
                (1, False), (2, True), (1, True), (1, True)]
            assert hooks.cursor("webhooks") == store.head_position()
        finally:
            hooks.close()
