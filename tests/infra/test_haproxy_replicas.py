"""Two `tessera serve` replicas (inference on the tiny model) behind HAProxy with the
config of infra/haproxy.cfg.template: a user's requests always reach the same replica
(consistent hash of X-Tessera-User), and when that replica is killed they are answered
by the other one; a promotion and a rollback reach both replicas (each follows the
revisions topic), whichever of them the user is routed to."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from tessera.bench.subprocesses import TesseraProcess
from tessera.bench.tiny_model import build_tiny_model
from tessera.events.postgres_store import PostgresEventStore
from tessera.events.tenants import create_tenant, issue_api_key
from tessera.infra.haproxy import USER_HEADER, Replica, render_config
from tessera.infra.stack import StackInfo, free_port
from tessera.schemas.events import EventType
from tessera.services.replica_header import REPLICA_HEADER
from tessera.workers.adapter_store import LocalAdapterStore
from tessera.workers.runtime import KafkaPublisher
from tests.services.audit.builders import Rev, interactions, marker, revision

pytestmark = pytest.mark.skipif(
    shutil.which("haproxy") is None,
    reason="haproxy is not installed (`make sysdeps` installs the Debian package as root)",
)

TENANT = "acme"
USERS = [f"user-{n}" for n in range(16)]
ADMIN = "admin-key-replicas-test"
# How long a replica may take to follow a revision message. The goal is 2 s (README); the
# bound is looser because this test runs beside others on a loaded machine.
FOLLOW_BOUND_S = 30.0


@dataclass
class Deployment:
    proxy: str  # base URL of HAProxy
    key: str
    replicas: dict[str, TesseraProcess]
    urls: dict[str, str]  # replica name -> its own base URL (not through the proxy)
    revisions_topic: str
    adapters: LocalAdapterStore  # the replicas' shared adapter store


def _env(database_url: str, stack: StackInfo, root: Path, tiny: Path, name: str,
         topic: str) -> dict[str, str]:
    return {
        "TESSERA_DATABASE_URL": database_url,
        "TESSERA_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "TESSERA_STATE_DIR": str(root / "state"),
        "TESSERA_BASE_MODEL": str(tiny),
        "TESSERA_REPLICA_ID": name,
        "TESSERA_ADMIN_KEY": ADMIN,
        # Every replica follows the same topic, as in a deployment.
        "TESSERA_TOPIC_REVISIONS": topic,
        "TESSERA_TOPIC_PARTITIONS": "1",
        "TESSERA_INFERENCE_TARGET_MODULES": json.dumps(["q_proj", "v_proj"]),
        "TESSERA_INFERENCE_MAX_TOKENS": "4",
        # Resolved revisions stay cached for longer than the test: only the revisions
        # topic can move a replica off what it served before.
        "TESSERA_INFERENCE_REVISION_CACHE_S": "3600",
    }


def _haproxy(config: str, root: Path) -> subprocess.Popen[bytes]:
    path = root / "haproxy.cfg"
    path.write_text(config)
    log = (root / "haproxy.log").open("wb")
    # -db: stay in the foreground, so the test owns the process and stops it by PID.
    return subprocess.Popen(["haproxy", "-db", "-f", str(path)], stdout=log,
                            stderr=subprocess.STDOUT)


@pytest.fixture()
def deployment(tmp_path: Path, stack: StackInfo, database_url: str) -> Iterator[Deployment]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        create_tenant(conn, TENANT)
        key = issue_api_key(conn, TENANT)
    tiny = build_tiny_model(tmp_path / "tiny")
    ports = {"r1": free_port(), "r2": free_port()}
    topic = f"rp-{uuid.uuid4().hex[:8]}.revisions"
    with ExitStack() as stack_ctx:
        replicas = {
            name: stack_ctx.enter_context(TesseraProcess(
                name, ["serve", "--http-port", str(port), "--no-grpc"],
                log_path=tmp_path / f"{name}.log",
                env=_env(database_url, stack, tmp_path, tiny, name, topic)))
            for name, port in ports.items()
        }
        for name, proc in replicas.items():
            proc.wait_http(f"http://127.0.0.1:{ports[name]}/healthz", timeout_s=180)
        proxy_port = free_port()
        config = render_config(
            bind=f"127.0.0.1:{proxy_port}",
            replicas=[Replica(name, f"127.0.0.1:{port}") for name, port in ports.items()],
        )
        proxy = _haproxy(config, tmp_path)
        try:
            _wait_both_up(f"http://127.0.0.1:{proxy_port}", proxy)
            yield Deployment(
                f"http://127.0.0.1:{proxy_port}", key, replicas,
                {name: f"http://127.0.0.1:{port}" for name, port in ports.items()},
                topic, LocalAdapterStore(tmp_path / "state" / "adapters"),
            )
        finally:
            proxy.send_signal(signal.SIGTERM)
            proxy.wait(10)


def _wait_both_up(proxy: str, process: subprocess.Popen[bytes]) -> None:
    """Until round-robin health probes (no user header) have reached both replicas."""
    seen: set[str] = set()
    deadline = time.monotonic() + 30
    while len(seen) < 2:
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"haproxy did not reach both replicas (saw {seen})")
        try:
            seen.add(httpx.get(f"{proxy}/healthz", timeout=5).headers[REPLICA_HEADER])
        except httpx.HTTPError:
            time.sleep(0.2)


def _generate(d: Deployment, user: str) -> str:
    """One generation for `user` through the proxy; the replica that answered."""
    resp = httpx.post(
        f"{d.proxy}/v1/generate",
        headers={"Authorization": f"Bearer {d.key}", USER_HEADER: f"{TENANT}/{user}"},
        json={"user_id": user, "prompt": "hello", "max_tokens": 2},
        timeout=60,
    )
    assert resp.status_code == 200, resp.text
    return resp.headers[REPLICA_HEADER]


def test_users_stick_to_a_replica_and_fail_over(deployment: Deployment) -> None:
    d = deployment
    placed = {user: {_generate(d, user) for _ in range(3)} for user in USERS}
    # Affinity: every request of a user landed on one replica, and both replicas serve.
    assert all(len(replicas) == 1 for replicas in placed.values()), placed
    home = {user: next(iter(replicas)) for user, replicas in placed.items()}
    assert set(home.values()) == {"r1", "r2"}, home

    victim = d.replicas["r1"]
    os.kill(victim.pid, signal.SIGKILL)
    victim.proc.wait(10)
    # Failover: the killed replica's users are answered by the survivor at once (the
    # refused connection is redispatched), and the survivor's users do not move.
    after = {user: _generate(d, user) for user in USERS}
    assert set(after.values()) == {"r2"}, after
    assert all(after[u] == "r2" for u in USERS if home[u] == "r2")


def _ask(d: Deployment, base: str, user: str) -> tuple[str, str]:
    """One generation for `user` at `base` (a replica's URL, or the proxy's, with the
    routing header): the replica that answered and the revision that did."""
    resp = httpx.post(
        f"{base}/v1/generate",
        headers={"Authorization": f"Bearer {d.key}", USER_HEADER: f"{TENANT}/{user}"},
        json={"user_id": user, "prompt": "hello", "max_tokens": 1},
        timeout=60,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["revision"]["revision_id"] == resp.headers["X-Tessera-Revision"]
    return resp.headers[REPLICA_HEADER], resp.headers["X-Tessera-Revision"]


def _until_every_replica_serves(d: Deployment, want: dict[str, str]) -> None:
    """Until each replica, asked directly, answers every user of `want` with the revision
    given there; fails after FOLLOW_BOUND_S."""
    deadline = time.monotonic() + FOLLOW_BOUND_S
    pending = {(name, user) for name in d.urls for user in want}
    while pending:
        for name, user in sorted(pending):
            replica, served = _ask(d, d.urls[name], user)
            assert replica == name
            if served == want[user]:
                pending.discard((name, user))
        if pending and time.monotonic() > deadline:
            served_now = {(n, u): _ask(d, d.urls[n], u)[1] for n, u in sorted(pending)}
            pytest.fail(f"not followed within {FOLLOW_BOUND_S} s: {served_now}, want {want}")


def _one_user_per_replica(d: Deployment, served: dict[str, Rev]) -> dict[str, str]:
    """Replica name -> a user the proxy routes there, answered with `served[user]`."""
    homes: dict[str, str] = {}
    for user, rev in served.items():
        replica, revision_id = _ask(d, d.proxy, user)
        assert revision_id == rev.revision_id
        homes.setdefault(replica, user)
    assert set(homes) == {"r1", "r2"}, homes
    return homes


def _announce_promotions(store: PostgresEventStore, d: Deployment, bootstrap: str,
                         users: list[str]) -> None:
    """Publish each user's last promotion as the trainer does once it is in the log."""
    publish = KafkaPublisher(bootstrap, d.revisions_topic)
    try:
        for user in users:
            *_, promoted = store.read(tenant_id=TENANT, user_id=user,
                                      event_types=[EventType.REVISION_PROMOTED])
            publish(promoted.envelope)
    finally:
        publish.close()


def test_a_promotion_and_a_rollback_reach_both_replicas(
    deployment: Deployment, database_url: str, stack: StackInfo
) -> None:
    d = deployment
    with PostgresEventStore(database_url) as store:
        first: dict[str, Rev] = {}
        for n, user in enumerate(USERS):
            interactions(store, TENANT, user, [marker(user)])
            first[user] = revision(store, d.adapters, TENANT, user, parent=None, seed=n)
        homes = _one_user_per_replica(d, first)
        users = sorted(homes.values())
        # Both replicas now resolve (and cache, for the hour) each user's first revision.
        _until_every_replica_serves(d, {u: first[u].revision_id for u in users})

        # A promotion as the trainer makes it: the decision in the log, then announced
        # on the revisions topic by the trainer's publisher.
        second = {
            u: revision(store, d.adapters, TENANT, u, parent=first[u].revision_id, seed=100 + n)
            for n, u in enumerate(users)
        }
        _announce_promotions(store, d, stack.kafka_bootstrap, users)
    _until_every_replica_serves(d, {u: second[u].revision_id for u in users})
    # Through the proxy each user is still answered by its home replica, on the new one.
    for home, user in homes.items():
        assert _ask(d, d.proxy, user) == (home, second[user].revision_id)

    # Rollback through the admin API, via the proxy (no routing header: either replica
    # takes it, and announces it to both).
    for user in users:
        resp = httpx.post(
            f"{d.proxy}/v1/admin/users/{TENANT}/{user}/rollback",
            headers={"Authorization": f"Bearer {ADMIN}"},
            json={"reason": "replicas test"},
            timeout=30,
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["published"], resp.json()
    _until_every_replica_serves(d, {u: first[u].revision_id for u in users})
    for home, user in homes.items():
        assert _ask(d, d.proxy, user) == (home, first[user].revision_id)
