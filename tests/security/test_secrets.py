"""Secrets: API keys are stored only as sha256 and compared in constant time; no key and
no user text reaches the logs of a real serve + ingest worker + trainer run at their
default log levels."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest
from fuzz.served import ADMIN_KEY, TENANT_A, Deployment
from kafka import KafkaProducer

from tessera.bench.subprocesses import TesseraProcess
from tessera.events import tenants
from tessera.services import auth
from tessera.workers.train_worker import send_requests
from tessera.workers.training_request import TrainingRequest


def test_keys_are_stored_only_as_sha256(served: Deployment) -> None:
    with psycopg.connect(served.database_url) as conn:
        rows = conn.execute("SELECT row_to_json(k)::text, key_sha256 FROM api_keys k").fetchall()
    dump = "\n".join(r[0] for r in rows)
    for key in (served.key_a, served.key_b):
        secret = key.split("_", 2)[2]  # the secret itself may hold "_"
        assert secret not in dump, "a key's secret is stored in the clear"
        assert hashlib.sha256(key.encode()).hexdigest() in {r[1] for r in rows}


_REAL_COMPARE = hmac.compare_digest  # before any test patches the module


class _Spy:
    """Wraps `hmac.compare_digest`, recording that (and with what lengths) it ran."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, a: Any, b: Any) -> bool:
        self.calls.append((len(a), len(b)))
        return _REAL_COMPARE(a, b)


def test_tenant_keys_are_compared_in_constant_time(served: Deployment,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    spy = _Spy()
    monkeypatch.setattr("tessera.events.tenants.hmac.compare_digest", spy)
    # `tsk_<key_id>_<secret>`; the secret is urlsafe base64 and may hold "_" itself, so
    # split from the left (splitting from the right once forged the real key by chance)
    prefix, key_id, secret = served.key_a.split("_", 2)
    filler = "B" if secret == "A" * len(secret) else "A"
    forged = f"{prefix}_{key_id}_{filler * len(secret)}"  # right id, wrong secret
    assert forged != served.key_a
    with psycopg.connect(served.database_url) as conn:
        assert tenants.authenticate(conn, served.key_a) == TENANT_A
        assert tenants.authenticate(conn, forged) is None
    # Both the match and the mismatch went through compare_digest on equal-length digests.
    assert spy.calls == [(64, 64), (64, 64)]


def test_the_admin_key_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = _Spy()
    monkeypatch.setattr("tessera.services.auth.hmac.compare_digest", spy)
    authenticator = auth.KeyAuthenticator(lookup=lambda _k: None, admin_key="s3cret")
    assert authenticator.is_admin("s3cret") and not authenticator.is_admin("s3creT")
    assert spy.calls == [(32, 32), (32, 32)]  # sha256 digests, whatever the key's length


def _wait(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} within {timeout_s:.0f} s")
        time.sleep(0.5)


def _count(served: Deployment, sql: str, *args: object) -> int:
    with psycopg.connect(served.database_url) as conn:
        row = conn.execute(sql, args).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.slow
def test_no_key_or_user_text_in_default_logs(served: Deployment) -> None:
    """Drive every path that sees a key or user text — accepted and refused ingest (HTTP
    and a malformed record straight on the topic), generation, a refused key, admin
    reads, a training run — then grep every process's log for them."""
    marker = f"SECRETTEXT{uuid.uuid4().hex}"
    bogus_key = f"tsk_{uuid.uuid4().hex[:12]}_{marker}key"
    user = "loguser"
    trainer = TesseraProcess("worker-train", ["worker", "train"],
                             log_path=served.root / "trainer.log", env=served.env)
    served.processes.append(trainer)
    a = served.headers(served.key_a)
    items = [{"type": "exchange", "user_id": user, "occurred_at": "2026-01-01T00:00:00Z",
              "prompt": f"question {i} {marker}", "response": f"answer {i} {marker}"}
             for i in range(24)]
    assert httpx.post(f"{served.http}/v1/events", headers=a, json={"events": items},
                      timeout=60).status_code == 202
    bad = {"events": [{**items[0], "user_id": f"bad user {marker}", "rating": marker}]}
    assert httpx.post(f"{served.http}/v1/events", headers=a, json=bad).status_code == 422
    producer = KafkaProducer(bootstrap_servers=served.env["TESSERA_KAFKA_BOOTSTRAP"])
    for raw in (json.dumps({"tenant_id": TENANT_A, "user_id": user, "data": marker}).encode(),
                f"not json {marker}".encode()):
        producer.send(served.topic_interactions, key=f"{TENANT_A}/{user}".encode(), value=raw)
    producer.flush()
    producer.close()
    for prompt_key, headers in ((served.key_a, a), (bogus_key, served.headers(bogus_key))):
        httpx.post(f"{served.http}/v1/generate", headers=headers, timeout=60,
                   json={"user_id": user, "prompt": f"{marker} {prompt_key}", "max_tokens": 2})
    httpx.get(f"{served.http}/v1/admin/users/{TENANT_A}/{user}/lineage",
              headers=served.headers(ADMIN_KEY))
    _wait(lambda: _count(served, "SELECT count(*) FROM events WHERE user_id = %s", user) >= 24,
          90, "stored by the ingest worker")
    _wait(lambda: _count(served, "SELECT count(*) FROM rejected_inputs") >= 2, 60,
          "rejected by the ingest worker")
    head = _count(served, "SELECT max(position) FROM events")
    send_requests(served.env["TESSERA_KAFKA_BOOTSTRAP"],
                  served.env["TESSERA_TOPIC_TRAINING_REQUESTS"],
                  [TrainingRequest(tenant_id=TENANT_A, user_id=user, up_to_position=head,
                                   trigger="test")])
    _wait(lambda: _count(served, "SELECT count(*) FROM revisions WHERE user_id = %s AND "
                         "state NOT IN ('trained')", user) >= 1, 240, "trained and evaluated")
    served.assert_alive()
    logs = served.logs()
    assert "trainer ready" in logs and "ingest worker" in logs  # we read the right files
    for secret, what in ((served.key_a, "tenant key"), (served.key_b, "tenant key"),
                         (ADMIN_KEY, "admin key"), (bogus_key, "refused key"),
                         (marker, "user text")):
        assert secret not in logs, f"a {what} is in the logs"
