"""Admission control (`TESSERA_INGEST_MAX_LAG_S`): the window's bookkeeping on a
controlled clock, and the HTTP behaviour against the real broker and event log — held,
then 429 while the log is behind; admitted again once the accepted events are logged."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tessera.events.kafka_publisher import KafkaPublisher
from tessera.events.postgres_store import PostgresEventStore
from tessera.infra.stack import StackInfo
from tessera.schemas.events import EventEnvelope, EventType
from tessera.schemas.settings import Settings
from tessera.services.auth import KeyAuthenticator
from tessera.services.ingest.admission import (
    Admission,
    AdmissionConfig,
    EventKey,
    postgres_durable_ids,
)
from tessera.services.ingest.service import IngestConfig, IngestService

from .conftest import ingest_app, read_topic

ACME = {"Authorization": "Bearer key-acme"}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Log:
    """The set of event ids 'in the log' (the unit tests' stand-in for the events table;
    the integration test below uses the real one)."""

    def __init__(self) -> None:
        self.ids: set[EventKey] = set()

    def find(self, ids: Sequence[EventKey]) -> set[EventKey]:
        return self.ids & set(ids)


def _admission(clock: Clock, log: Log, **over: Any) -> Admission:
    settings: dict[str, Any] = {"max_lag_s": 1.0, "max_wait_s": 0.1, "forget_after_s": 30.0}
    config = AdmissionConfig(**(settings | over))
    return Admission(config, log.find, clock=clock)


def _ids(n: int) -> list[EventKey]:
    return [("acme", uuid.uuid4()) for _ in range(n)]


def test_two_batches_fit_a_third_waits_until_the_first_is_logged() -> None:
    clock, log = Clock(), Log()
    adm = _admission(clock, log)
    first, second = _ids(2), _ids(2)
    assert adm.try_reserve(100)
    adm.accepted(100, first)
    assert adm.try_reserve(100)
    adm.accepted(100, second)
    assert not adm.try_reserve(100)
    assert adm.pending_events == 200

    log.ids.update(first[:1])  # one partition of the first batch logged, not the other
    clock.now += 0.1
    adm.poll_once()
    assert adm.pending_events == 200
    log.ids.update(first[1:])
    adm.poll_once()
    assert adm.pending_events == 100
    assert adm.try_reserve(100)


def test_window_grows_while_the_log_keeps_up_and_shrinks_when_it_lags() -> None:
    clock, log = Clock(), Log()
    adm = _admission(clock, log)
    queue: list[EventKey] = []  # accepted batches' markers, in order, not yet logged
    admitted = 0
    for _ in range(50):  # a worker that logs 10 batches (1,000 events) per 0.1 s
        while adm.try_reserve(100):
            markers = _ids(1)
            adm.accepted(100, markers)
            queue.extend(markers)
            admitted += 1
        log.ids.update(queue[:10])
        del queue[:10]
        clock.now += 0.1
        adm.poll_once()
    # More than the two-batch floor per step (the window grew), yet bounded by what the
    # log takes in max_lag_s (1 s = 10,000 events here), within the 2x ceiling.
    assert admitted > 50 * 2
    assert adm.pending_events <= 2 * 10_000

    queue.clear()  # from now on nothing gets logged
    while adm.try_reserve(100):
        adm.accepted(100, _ids(1))
    stuck = adm.pending_events
    for _ in range(20):
        clock.now += 0.2
        adm.poll_once()
    assert adm.pending_events == stuck
    assert not adm.try_reserve(100)


def test_refusal_says_how_far_behind_and_when_to_retry() -> None:
    clock, log = Clock(), Log()
    adm = _admission(clock, log)
    for _ in range(2):
        assert adm.try_reserve(50)
        adm.accepted(50, _ids(1))
    refusal = adm.refusal(50)
    assert "100 accepted events" in str(refusal)
    assert refusal.retry_after_s > 0


def test_batches_never_logged_stop_holding_ingest_back() -> None:
    clock, log = Clock(), Log()
    adm = _admission(clock, log, forget_after_s=5.0)
    for _ in range(2):
        assert adm.try_reserve(10)
        adm.accepted(10, _ids(1))
    assert not adm.try_reserve(10)
    clock.now += 6.0
    adm.poll_once()
    assert adm.pending_events == 0
    assert adm.try_reserve(10)


def test_a_failed_publish_gives_its_room_back() -> None:
    adm = _admission(Clock(), Log())
    assert adm.try_reserve(10)
    assert adm.try_reserve(10)
    assert not adm.try_reserve(10)
    adm.release(10)
    assert adm.try_reserve(10)


# --- against the real broker and PostgreSQL -------------------------------------------


@pytest.fixture()
def admitting_client(
    stack: StackInfo,
    settings: Settings,
    database_url: str,
    authenticator: KeyAuthenticator,
) -> Iterator[tuple[TestClient, Admission]]:
    from tessera.events.kafka import ensure_topics

    ensure_topics(stack.kafka_bootstrap, settings)
    config = AdmissionConfig(max_lag_s=0.5, max_wait_s=0.3, poll_s=0.05)
    admission = Admission(config, postgres_durable_ids(database_url)).start()
    publisher = KafkaPublisher(stack.kafka_bootstrap, client_id="test-admission")
    service = IngestService(
        publisher=publisher, config=IngestConfig.from_settings(settings), admission=admission
    )
    with TestClient(ingest_app(ingest=service, auth=authenticator)) as client:
        yield client, admission
    service.close()


def _batch(n: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC).isoformat()
    return [
        {"type": "text", "user_id": f"u{i % 3}", "occurred_at": now, "text": f"note {i}"}
        for i in range(n)
    ]


@pytest.mark.integration
def test_http_holds_then_sheds_while_the_log_is_behind_and_admits_once_logged(
    admitting_client: tuple[TestClient, Admission],
    stack: StackInfo,
    settings: Settings,
    database_url: str,
) -> None:
    client, admission = admitting_client
    for _ in range(2):  # no stream worker runs: nothing becomes durable by itself
        accepted = client.post("/v1/events", json={"events": _batch(5)}, headers=ACME)
        assert accepted.status_code == 202

    shed = client.post("/v1/events", json={"events": _batch(5)}, headers=ACME)
    assert shed.status_code == 429
    assert int(shed.headers["Retry-After"]) >= 1
    assert "10 accepted events" in shed.json()["detail"]
    assert admission.pending_events == 10

    # Play the stream worker: the 10 accepted events, read back from the topic, go into
    # the real log; the poller finds them there and frees the room.
    records = read_topic(stack.kafka_bootstrap, settings.topic_interactions, expect=10)
    assert len(records) == 10  # the shed batch was never published
    store = PostgresEventStore(database_url)
    try:
        store.append([env for _, env in records])
    finally:
        store.close()
    ok = client.post("/v1/events", json={"events": _batch(5)}, headers=ACME)
    assert ok.status_code == 202, ok.text


@pytest.mark.integration
def test_durable_lookup_finds_an_id_only_in_its_own_tenant(database_url: str) -> None:
    # Event ids are unique per tenant: another tenant's event with the same id must not
    # make this tenant's accepted batch look durable.
    shared = uuid.uuid4()
    store = PostgresEventStore(database_url)
    try:
        store.append(
            [
                EventEnvelope(
                    event_id=shared,
                    event_type=EventType.TEXT,
                    tenant_id="globex",
                    user_id="u1",
                    occurred_at=datetime.now(UTC),
                    data={"text": "theirs"},
                )
            ]
        )
    finally:
        store.close()
    find = postgres_durable_ids(database_url)
    assert find([("acme", shared)]) == set()
    assert find([("acme", shared), ("globex", shared)]) == {("globex", shared)}
