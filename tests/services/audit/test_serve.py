"""`tessera serve` mounts the audit component: the admin API answers in a real server
process and a rollback made through it is in the log and on the revisions topic."""

from __future__ import annotations

from pathlib import Path

import httpx

from tessera.bench.subprocesses import TesseraProcess
from tessera.events.postgres_store import PostgresEventStore
from tessera.infra.stack import StackInfo, free_port
from tessera.workers.adapter_store import LocalAdapterStore

from .builders import TopicReader, interactions, marker, revision

ADMIN = "admin-key-serve-test"


def test_serve_hosts_the_admin_api(
    tmp_path: Path,
    stack: StackInfo,
    database_url: str,
    revisions_topic: str,
    store: PostgresEventStore,
    adapters: LocalAdapterStore,
    topic_reader: TopicReader,
) -> None:
    interactions(store, "acme", "alice", [marker("s")])
    r1 = revision(store, adapters, "acme", "alice", parent=None)
    r2 = revision(store, adapters, "acme", "alice", parent=r1.revision_id)
    port = free_port()
    env = {
        "TESSERA_DATABASE_URL": database_url,
        "TESSERA_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "TESSERA_STATE_DIR": str(adapters.root.parent),
        "TESSERA_TOPIC_REVISIONS": revisions_topic,
        "TESSERA_ADMIN_KEY": ADMIN,
    }
    args = ["serve", "--http-port", str(port), "--no-grpc", "--without", "inference"]
    with TesseraProcess("serve", args, log_path=tmp_path / "serve.log", env=env) as proc:
        base = f"http://127.0.0.1:{port}"
        proc.wait_http(f"{base}/healthz", timeout_s=90)
        assert "audit" in httpx.get(f"{base}/healthz").json()["components"]
        headers = {"Authorization": f"Bearer {ADMIN}"}
        lineage = httpx.get(f"{base}/v1/admin/users/acme/alice/lineage", headers=headers)
        assert lineage.status_code == 200, proc.log_tail()
        assert lineage.json()["served"]["revision_id"] == r2.revision_id
        done = httpx.post(f"{base}/v1/admin/users/acme/alice/rollback", headers=headers,
                          json={"reason": "smoke"}, timeout=30)
        assert done.status_code == 200, done.text
    assert store.get_head("acme", "alice").revision_id == r1.revision_id  # type: ignore[union-attr]
    (key, value), *_ = topic_reader.wait_for(1)
    assert (key, value["data"]["actor"]) == ("acme/alice", "admin-key")
