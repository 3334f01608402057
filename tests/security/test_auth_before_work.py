"""No work before authentication: a request without a valid key is refused before its
body is read; a malformed key never borrows a database connection; failed look-ups are
cached apart from valid keys, so a flood of wrong keys cannot push a valid one out."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import psycopg
import pytest
from psycopg_pool import ConnectionPool

from tessera.events import db, tenants
from tessera.services.auth import KeyAuthenticator, Unauthenticated, authenticator_from_database
from tessera.services.auth_gate import is_keyed
from tessera.services.http_app import create_app
from tessera.services.openai_errors import is_openai_path

ADMIN = "admin-key-auth-before-work"
KEYED_ROUTES = [
    "/v1/events",
    "/v1/generate",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/admin/users/acme/alice/rollback",
]
CHUNK = b"x" * (1 << 16)


@dataclass
class Deployed:
    """An HTTP app with the database-backed authenticator, and its look-up pool."""

    app: object
    pool: ConnectionPool
    key: str

    def checkouts(self) -> int:
        return int(self.pool.get_stats().get("requests_num", 0))


@pytest.fixture()
def deployed(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployed]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        tenants.create_tenant(conn, "acme")
        key = tenants.issue_api_key(conn, "acme")
    pools: list[ConnectionPool] = []

    def spying_make_pool(url: str, **kwargs: int) -> ConnectionPool:
        pools.append(db.make_pool(url, **kwargs))
        return pools[-1]

    monkeypatch.setattr("tessera.events.tenant_directory.make_pool", spying_make_pool)
    auth = authenticator_from_database(database_url, admin_key=ADMIN)
    (pool,) = pools
    yield Deployed(create_app(auth=auth), pool, key)
    pool.close()


class CountingBody:
    """A streamed request body (16 MiB + 1 chunk, chunked) that counts what was read."""

    def __init__(self) -> None:
        self.read = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range((16 << 20) // len(CHUNK) + 1):
            self.read += len(CHUNK)
            yield CHUNK


def _post(app: object, path: str, headers: dict[str, str], body: CountingBody) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post(path, headers=headers, content=body)

    return asyncio.run(go())


def _unknown_key() -> str:
    return f"tsk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


@pytest.mark.parametrize("path", KEYED_ROUTES)
@pytest.mark.parametrize("key", ["none", "malformed", "unknown"])
def test_a_bad_key_is_refused_before_the_body_is_read(
    deployed: Deployed, path: str, key: str
) -> None:
    headers = {
        "none": {},
        "malformed": {"Authorization": "Bearer not-a-key"},
        "unknown": {"X-API-Key": _unknown_key()},
    }[key]
    body = CountingBody()
    resp = _post(deployed.app, path, headers, body)
    assert resp.status_code == 401, resp.text[:300]
    # OpenAI routes answer in OpenAI's envelope (services/openai_errors.py), others `detail`
    answer = resp.json()
    message = answer["error"]["message"] if is_openai_path(path) else answer["detail"]
    assert "key" in message and resp.headers["www-authenticate"] == "Bearer"
    assert body.read == 0, f"{body.read} bytes read before the key was refused"


def test_a_valid_key_passes_the_gate_and_its_body_is_read(deployed: Deployed) -> None:
    body = CountingBody()
    resp = _post(deployed.app, "/v1/events", {"X-API-Key": deployed.key}, body)
    # No ingest component in this app: the route itself answers, after the gate.
    assert resp.status_code == 503 and "ingest is not running" in resp.text
    body = CountingBody()
    resp = _post(deployed.app, "/v1/generate", {"X-API-Key": deployed.key}, body)
    assert resp.status_code != 401 and body.read > 0  # FastAPI reads it before the route


def test_a_malformed_key_never_touches_the_database(deployed: Deployed) -> None:
    before = deployed.checkouts()
    for bad in ("x", "tsk_nothing", "tsk_00000000000g_" + "A" * 43, deployed.key + "A",
                deployed.key[:-1], "tsk_" + "0" * 12 + "_" + "A" * 42 + "!"):
        body = CountingBody()
        resp = _post(deployed.app, "/v1/events", {"X-API-Key": bad}, body)
        assert resp.status_code == 401 and "malformed" in resp.json()["detail"], bad
    assert deployed.checkouts() == before
    # The counter is live: a well-formed unknown key costs one look-up, then none while
    # its failure is remembered; the valid key one, then none while cached.
    unknown = _unknown_key()
    for key, expected in ((unknown, 401), (unknown, 401), (deployed.key, 503),
                          (deployed.key, 503)):
        body = CountingBody()
        assert _post(deployed.app, "/v1/events", {"X-API-Key": key}, body).status_code == expected
    assert deployed.checkouts() == before + 2


def test_failed_lookups_do_not_evict_valid_keys() -> None:
    valid = _unknown_key()
    looked_up: list[str] = []

    def lookup(key: str) -> str | None:
        looked_up.append(key)
        return "acme" if key == valid else None

    auth = KeyAuthenticator(lookup=lookup, admin_key=ADMIN, cache_ttl_s=300,
                            negative_ttl_s=300, well_formed=tenants.key_is_well_formed)
    assert auth.tenant_for_key(valid) == "acme"
    flood = [f"tsk_{i:012x}_{'A' * 43}" for i in range(25_000)]
    for key in flood:
        with pytest.raises(Unauthenticated):
            auth.tenant_for_key(key)
    assert auth.tenant_for_key(valid) == "acme"
    assert looked_up.count(valid) == 1, "the valid key was pushed out of the cache"
    # Failures are remembered (the latest) but bounded (the oldest were let go).
    looked_up.clear()
    for key in (flood[-1], flood[0]):
        with pytest.raises(Unauthenticated):
            auth.tenant_for_key(key)
    assert looked_up == [flood[0]]


def test_the_gate_answers_json_the_clients_can_read(deployed: Deployed) -> None:
    resp = _post(deployed.app, "/v1/chat/completions", {}, CountingBody())
    assert resp.status_code == 401
    assert json.loads(resp.content) == {
        "error": {
            "message": "no API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    resp = _post(deployed.app, "/v1/events", {}, CountingBody())
    assert json.loads(resp.content) == {
        "detail": "no API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`"
    }


def test_every_v1_route_is_behind_the_gate() -> None:
    """A new `/v1/` route must be added to the gate (services/auth_gate.py), or its body
    would again be read before its key is checked."""
    paths = create_app().openapi()["paths"]
    v1 = [p for p in paths if p.startswith("/v1/")]
    assert len(v1) >= 5 and [p for p in v1 if not is_keyed(p)] == []
