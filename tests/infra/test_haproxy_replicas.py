"""Two `tessera serve` replicas (inference on the tiny model) behind HAProxy with the
config of infra/haproxy.cfg.template: a user's requests always reach the same replica
(consistent hash of X-Tessera-User), and when that replica is killed they are answered
by the other one."""

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
from tessera.events.tenants import create_tenant, issue_api_key
from tessera.infra.haproxy import USER_HEADER, Replica, render_config
from tessera.infra.stack import StackInfo, free_port
from tessera.services.replica_header import REPLICA_HEADER

pytestmark = pytest.mark.skipif(
    shutil.which("haproxy") is None,
    reason="haproxy is not installed (`make sysdeps` installs the Debian package as root)",
)

TENANT = "acme"
USERS = [f"user-{n}" for n in range(16)]


@dataclass
class Deployment:
    proxy: str  # base URL of HAProxy
    key: str
    replicas: dict[str, TesseraProcess]


def _env(database_url: str, stack: StackInfo, root: Path, tiny: Path, name: str) -> dict[str, str]:
    tag = f"rp-{uuid.uuid4().hex[:8]}"
    return {
        "TESSERA_DATABASE_URL": database_url,
        "TESSERA_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "TESSERA_STATE_DIR": str(root / "state"),
        "TESSERA_BASE_MODEL": str(tiny),
        "TESSERA_REPLICA_ID": name,
        "TESSERA_TOPIC_REVISIONS": f"{tag}.revisions",
        "TESSERA_TOPIC_PARTITIONS": "1",
        "TESSERA_INFERENCE_TARGET_MODULES": json.dumps(["q_proj", "v_proj"]),
        "TESSERA_INFERENCE_MAX_TOKENS": "4",
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
    with ExitStack() as stack_ctx:
        replicas = {
            name: stack_ctx.enter_context(TesseraProcess(
                name, ["serve", "--http-port", str(port), "--no-grpc", "--without", "audit"],
                log_path=tmp_path / f"{name}.log",
                env=_env(database_url, stack, tmp_path, tiny, name)))
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
            yield Deployment(f"http://127.0.0.1:{proxy_port}", key, replicas)
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
