"""POST /v1/events against the real broker: good batches reach Kafka keyed tenant/user;
every kind of bad input gets its 4xx naming the item and the field, and nothing of a
bad batch is published."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tessera.infra.stack import StackInfo
from tessera.schemas.events import EventType
from tessera.schemas.settings import Settings
from tessera.services.auth import KeyAuthenticator
from tessera.services.ingest.service import IngestService

from .conftest import ingest_app, read_topic

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
ACME = {"Authorization": "Bearer key-acme"}


def exchange(user: str = "u1", **over: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "exchange",
        "user_id": user,
        "occurred_at": (NOW - timedelta(minutes=5)).isoformat(),
        "prompt": "How was the trip?",
        "response": "Long, but the mountains were worth it.",
        "context": [{"role": "other", "text": "Welcome back!"}],
    }
    item.update(over)
    return item


@pytest.fixture()
def client(ingest_service: IngestService, authenticator: KeyAuthenticator) -> Iterator[TestClient]:
    app = ingest_app(ingest=ingest_service, auth=authenticator)
    with TestClient(app) as c:
        yield c


def test_good_batch_reaches_kafka_keyed_by_tenant_and_user(
    client: TestClient, stack: StackInfo, settings: Settings
) -> None:
    own_id = uuid.uuid4()
    items = [
        exchange("alice", event_id=str(own_id)),
        {"type": "text", "user_id": "bob", "occurred_at": NOW.isoformat(), "text": "note to self"},
        {
            "type": "feedback",
            "user_id": "alice",
            "occurred_at": NOW.isoformat(),
            "target_event_id": str(own_id),
            "rating": 4,
        },
    ]
    resp = client.post("/v1/events", json={"events": items}, headers=ACME)
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["count"] == 3
    accepted = [uuid.UUID(x) for x in body["accepted"]]
    assert accepted[0] == own_id  # a client's own id is kept (idempotency key)

    records = read_topic(stack.kafka_bootstrap, settings.topic_interactions, expect=3)
    by_id = {env.event_id: (key, env) for key, env in records}
    assert set(by_id) == set(accepted)
    key, env = by_id[own_id]
    assert key == b"acme/alice"
    assert env.tenant_id == "acme"  # from the key, never from the body
    assert env.event_type == EventType.EXCHANGE
    assert env.data["response"] == "Long, but the mountains were worth it."
    assert env.data["context"] == [{"role": "other", "text": "Welcome back!"}]
    key, env = by_id[accepted[1]]
    assert (key, env.event_type, env.data) == (
        b"acme/bob",
        EventType.TEXT,
        {"text": "note to self", "context": []},
    )
    assert by_id[accepted[2]][1].data == {"target_event_id": str(own_id), "rating": 4}


def _long(n: int) -> str:
    return "x" * n


BAD_ITEMS: list[tuple[str, dict[str, Any], str, str]] = [
    # (case, item, field named in the error, error type)
    ("missing field", {k: v for k, v in exchange().items() if k != "prompt"}, "prompt", "missing"),
    ("mistyped field", exchange(prompt=17), "prompt", "string_type"),
    ("bad uuid", exchange(event_id="not-a-uuid"), "event_id", "uuid_parsing"),
    ("unknown kind", exchange(type="purchase"), "type", "union_tag_invalid"),
    (
        "no kind",
        {k: v for k, v in exchange().items() if k != "type"},
        "type",
        "union_tag_not_found",
    ),
    ("extra field", exchange(mood="happy"), "mood", "extra_forbidden"),
    ("bad user id", exchange(user="no spaces allowed"), "user_id", "string_pattern_mismatch"),
    ("text over limit", exchange(response=_long(201)), "response", "string_too_long"),
    (
        "context text over limit",
        exchange(context=[{"role": "user", "text": _long(201)}]),
        "context[0].text",
        "string_too_long",
    ),
    (
        "naive timestamp",
        exchange(occurred_at="2026-01-01T10:00:00"),
        "occurred_at",
        "timezone_aware",
    ),
    (
        "timestamp beyond skew",
        exchange(occurred_at=(NOW + timedelta(hours=1)).isoformat()),
        "occurred_at",
        "timestamp_in_future",
    ),
    (
        "timestamp too old",
        exchange(occurred_at="1999-01-01T00:00:00Z"),
        "occurred_at",
        "timestamp_too_old",
    ),
    (
        "rating out of range",
        {
            "type": "feedback",
            "user_id": "u1",
            "occurred_at": NOW.isoformat(),
            "target_event_id": str(uuid.uuid4()),
            "rating": 9,
        },
        "rating",
        "less_than_equal",
    ),
]


@pytest.mark.parametrize(("case", "bad", "field", "kind"), BAD_ITEMS, ids=[c[0] for c in BAD_ITEMS])
def test_bad_item_rejects_whole_batch_naming_index_and_field(
    client: TestClient, case: str, bad: dict[str, Any], field: str, kind: str
) -> None:
    good = exchange("carol")
    resp = client.post("/v1/events", json={"events": [good, bad]}, headers=ACME)
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert "nothing was accepted" in body["detail"]
    assert [(e["index"], e["field"], e["type"]) for e in body["errors"]] == [(1, field, kind)]
    assert body["errors"][0]["problem"]


def test_every_bad_item_is_listed_and_nothing_is_published(
    client: TestClient, stack: StackInfo, settings: Settings
) -> None:
    good_id = uuid.uuid4()
    items = [exchange(event_id=str(good_id)), exchange(prompt=""), exchange(), exchange(user="")]
    resp = client.post("/v1/events", json={"events": items}, headers=ACME)
    assert resp.status_code == 422
    errors = resp.json()["errors"]
    assert [(e["index"], e["field"]) for e in errors] == [(1, "prompt"), (3, "user_id")]
    assert resp.json()["detail"].startswith("2 item(s) invalid")

    # A later good batch is the only thing on the topic: the bad batch's valid items
    # were not half-sent.
    marker = uuid.uuid4()
    assert (
        client.post(
            "/v1/events", json={"events": [exchange(event_id=str(marker))]}, headers=ACME
        ).status_code
        == 202
    )
    records = read_topic(stack.kafka_bootstrap, settings.topic_interactions, expect=1)
    assert [env.event_id for _, env in records] == [marker]


@pytest.mark.parametrize(
    ("body", "field", "kind"),
    [
        (b'{"events": [', "body", "json_invalid"),
        (b"[]", "body", "model_type"),
        (b'{"events": []}', "events", "too_short"),
        (b'{"items": []}', "events", "missing"),
    ],
    ids=["malformed json", "not an object", "empty batch", "no events list"],
)
def test_bad_body_gets_422_naming_the_problem(
    client: TestClient, body: bytes, field: str, kind: str
) -> None:
    resp = client.post(
        "/v1/events", content=body, headers={**ACME, "Content-Type": "application/json"}
    )
    assert resp.status_code == 422, resp.text
    errors = resp.json()["errors"]
    assert (errors[0]["index"], errors[0]["field"], errors[0]["type"]) == (None, field, kind)


def test_batch_over_limit_gets_413(client: TestClient, settings: Settings) -> None:
    items = [exchange(f"u{i}") for i in range(settings.max_batch_events + 1)]
    resp = client.post("/v1/events", json={"events": items}, headers=ACME)
    assert resp.status_code == 413
    (error,) = resp.json()["errors"]
    assert error["field"] == "events"
    assert f"the limit is {settings.max_batch_events}" in error["problem"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"X-API-Key": "wrong"},
        {"Authorization": "Basic a2V5"},
    ],
    ids=["no key", "unknown bearer", "unknown x-api-key", "not bearer"],
)
def test_missing_or_unknown_key_gets_401(client: TestClient, headers: dict[str, str]) -> None:
    resp = client.post("/v1/events", json={"events": [exchange()]}, headers=headers)
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == "Bearer"
    assert "key" in resp.json()["detail"]


def test_x_api_key_header_selects_the_tenant(
    client: TestClient, stack: StackInfo, settings: Settings
) -> None:
    resp = client.post(
        "/v1/events", json={"events": [exchange("dave")]}, headers={"X-API-Key": "key-globex"}
    )
    assert resp.status_code == 202
    ((key, env),) = read_topic(stack.kafka_bootstrap, settings.topic_interactions, expect=1)
    assert (key, env.tenant_id) == (b"globex/dave", "globex")


def test_unavailable_component_answers_503() -> None:
    with TestClient(ingest_app()) as c:
        resp = c.post("/v1/events", content=json.dumps({"events": [exchange()]}), headers=ACME)
    assert resp.status_code == 503
    assert "not configured" in resp.json()["detail"] or "not running" in resp.json()["detail"]
