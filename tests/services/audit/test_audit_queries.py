"""Audit queries and their CLI: lineage tree, provenance, request lookup, tenant scope."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tessera.events.postgres_store import PostgresEventStore
from tessera.events.store import RequestRecord
from tessera.infra.stack import StackInfo
from tessera.schemas.settings import get_settings
from tessera.services.audit.queries import (
    AuditNotFound,
    request_audit,
    revision_provenance,
    user_lineage,
)
from tessera.services.cli import app
from tessera.services.corrective import CorrectiveActions
from tessera.workers.adapter_store import LocalAdapterStore

from .builders import Rev, interactions, marker, revision

T, U = "acme", "alice"


@pytest.fixture()
def tree(
    store: PostgresEventStore, adapters: LocalAdapterStore, actions: CorrectiveActions
) -> dict[str, Rev]:
    """r1 <- r2 <- r3 (rejected); r1 <- r4 (branch, promoted last), then rolled back to r2."""
    interactions(store, T, U, [marker("a"), marker("b")])
    r1 = revision(store, adapters, T, U, parent=None, user_nll=2.0, trigger="nightly")
    interactions(store, T, U, [marker("c")])
    r2 = revision(store, adapters, T, U, parent=r1.revision_id, user_nll=1.7,
                  trigger="threshold")
    r3 = revision(store, adapters, T, U, parent=r2.revision_id, outcome="rejected", user_nll=1.9)
    r4 = revision(store, adapters, T, U, parent=r1.revision_id, user_nll=1.6, trigger="cli:ops")
    actions.rollback(T, U, to_revision_id=r2.revision_id, reason="r4 regressed", actor="ops:kim")
    return {"r1": r1, "r2": r2, "r3": r3, "r4": r4}


def test_lineage_is_a_tree_with_states_and_history(
    store: PostgresEventStore, tree: dict[str, Rev]
) -> None:
    ids = {k: v.revision_id for k, v in tree.items()}
    lin = user_lineage(store, T, U)
    assert lin.roots == [ids["r1"]]
    nodes = {n.revision_id: n for n in lin.revisions}
    assert [n.revision_id for n in lin.revisions] == [ids[k] for k in ("r1", "r2", "r3", "r4")]
    assert nodes[ids["r1"]].children == [ids["r2"], ids["r4"]]
    assert nodes[ids["r2"]].children == [ids["r3"]]
    assert {k: nodes[i].state for k, i in ids.items()} == {
        "r1": "superseded", "r2": "promoted", "r3": "rejected", "r4": "rolled_back"}
    assert [n.revision_id for n in lin.revisions if n.served] == [ids["r2"]]
    assert (lin.served.source, lin.served.revision_id) == ("personal", ids["r2"])
    assert nodes[ids["r3"]].reasons == ["user_nll did not improve"]
    assert nodes[ids["r2"]].trigger == "threshold"
    assert nodes[ids["r4"]].metrics["user_nll"] == pytest.approx(1.6)
    assert lin.interactions == 9
    last = lin.history[-1]
    assert (last.event_type, last.actor, last.reason, last.revision_id) == (
        "revision.rolled_back", "ops:kim", "r4 regressed", ids["r2"])


def test_provenance_names_everything_the_revision_came_from(
    store: PostgresEventStore, tree: dict[str, Rev]
) -> None:
    r2 = tree["r2"]
    prov = revision_provenance(store, r2.revision_id)
    assert prov.revision.adapter_digest == r2.digest
    assert prov.parent is not None and prov.parent.revision_id == tree["r1"].revision_id
    assert prov.provenance["code_version"] == "git:test"
    assert prov.provenance["hyperparameters"] == {"train": {"lr": 1e-3}}
    assert prov.provenance["base_digest"] == "b" * 64
    # The dataset range holds alice's 9 interactions (3 per marker).
    assert prov.dataset.count == 9 and len(prov.dataset.event_ids) == 9
    # Its own events, then r3's and r4's evaluations against it as the baseline, r4's
    # promotion over it, and the rollback back to it.
    named = [(e.event_type, e.revision_id) for e in prov.events]
    r2id, r3id, r4id = r2.revision_id, tree["r3"].revision_id, tree["r4"].revision_id
    assert named == [
        ("revision.trained", r2id), ("revision.evaluated", r2id), ("revision.promoted", r2id),
        ("revision.evaluated", r3id), ("revision.evaluated", r4id), ("revision.promoted", r4id),
        ("revision.rolled_back", r2id),
    ]


def test_request_lookup_and_tenant_scope(store: PostgresEventStore, tree: dict[str, Rev]) -> None:
    r2 = tree["r2"]
    store.record_requests([RequestRecord(
        request_id="req-1", tenant_id=T, user_id=U, revision_id=r2.revision_id,
        adapter_digest=r2.digest, source="personal", at=datetime.now(UTC))])
    req = request_audit(store, "req-1")
    assert (req.revision_id, req.source) == (r2.revision_id, "personal")
    assert req.revision is not None and req.revision.state == "promoted"

    assert request_audit(store, "req-1", scope=T).request_id == "req-1"
    for call in (
        lambda: request_audit(store, "req-1", scope="other"),
        lambda: revision_provenance(store, r2.revision_id, scope="other"),
        lambda: user_lineage(store, T, U, scope="other"),
        lambda: user_lineage(store, T, "nobody"),
        lambda: request_audit(store, "req-unknown"),
    ):
        with pytest.raises(AuditNotFound):
            call()


@pytest.fixture()
def cli_env(
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    stack: StackInfo,
    revisions_topic: str,
    adapters: LocalAdapterStore,
) -> Iterator[None]:
    state_dir = adapters.root.parent
    monkeypatch.setenv("TESSERA_DATABASE_URL", database_url)
    monkeypatch.setenv("TESSERA_KAFKA_BOOTSTRAP", stack.kafka_bootstrap)
    monkeypatch.setenv("TESSERA_STATE_DIR", str(state_dir))
    monkeypatch.setenv("TESSERA_TOPIC_REVISIONS", revisions_topic)
    monkeypatch.setenv("TESSERA_DEFAULT_TENANT", T)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_cli_audit_rollback_forget(
    cli_env: None, store: PostgresEventStore, tree: dict[str, Rev], tmp_path: Path
) -> None:
    runner = CliRunner()
    ids = {k: v.revision_id for k, v in tree.items()}

    out = runner.invoke(app, ["audit", "user", U])
    assert out.exit_code == 0, out.output
    text = out.output
    assert f"acme/alice: served personal {ids['r2']}" in text
    assert f"└── {ids['r1']}  [superseded]" in text
    assert f"├── {ids['r2']}  [promoted]  <- served" in text
    assert "gate: user_nll did not improve" in text
    assert "revision.rolled_back" in text and "by ops:kim: r4 regressed" in text

    out = runner.invoke(app, ["audit", "revision", ids["r2"]])
    assert out.exit_code == 0, out.output
    assert f"parent        {ids['r1']}" in out.output
    assert f"sha256:{tree['r2'].digest}" in out.output

    out = runner.invoke(app, ["audit", "user", U, "--tenant", T, "--json"])
    assert out.exit_code == 0, out.output
    as_json = json.loads(out.output)
    assert [r["revision_id"] for r in as_json["revisions"]] == [ids[k] for k in sorted(ids)]

    out = runner.invoke(app, ["audit", "request", "req-none"])
    assert out.exit_code == 1 and "no request 'req-none'" in out.output

    out = runner.invoke(app, ["rollback", U, "--to", ids["r3"], "--reason", "try"])
    assert out.exit_code == 1 and "the gate rejected it" in out.output

    out = runner.invoke(app, ["rollback", U, "--reason", "back to r1", "--actor", "ops:kim"])
    assert out.exit_code == 0, out.output
    assert f"rolled back acme/alice: {ids['r2']} -> {ids['r1']}" in out.output
    assert "servers notified" in out.output
    assert store.get_head(T, U).revision_id == ids["r1"]  # type: ignore[union-attr]

    out = runner.invoke(app, ["forget", U, "--reason", "erasure", "--yes"])
    assert out.exit_code == 0, out.output
    assert "forgot acme/alice: tombstone" in out.output
    assert "adapter blobs deleted: 4" in out.output
    out = runner.invoke(app, ["audit", "user", U])
    assert "served base; 0 interactions; forgotten" in out.output
