"""Replay: after a long random scenario driven through the real actions (ingest, train,
promote, reject, rollback back and forward, refused rollbacks, forget, fresh histories),
`tessera db rebuild-projections` rebuilds exactly the projections maintained live."""

from __future__ import annotations

import random

import pytest
from typer.testing import CliRunner

from tessera.events.postgres_store import PostgresEventStore
from tessera.schemas.events import PRIOR_USER_ID
from tessera.schemas.settings import get_settings
from tessera.services.cli import app
from tessera.services.corrective import CorrectiveActions, NothingToForget, RollbackRefused
from tessera.workers.adapter_store import LocalAdapterStore

from .builders import interactions, marker, revision

STREAMS = [("acme", u) for u in ("ann", "ben", "cat", PRIOR_USER_ID)] + [
    ("beta", u) for u in ("dan", "eve")
]
STEPS = 160


def _scenario(
    rng: random.Random, store: PostgresEventStore, adapters: LocalAdapterStore,
    actions: CorrectiveActions,
) -> dict[str, int]:
    done = {"ingest": 0, "train": 0, "rollback": 0, "refused": 0, "forget": 0}
    for _ in range(STEPS):
        tenant, user = rng.choice(STREAMS)
        op = rng.choices(["ingest", "train", "rollback", "forget"], [5, 4, 3, 1])[0]
        if op == "ingest" or (op == "train" and user != PRIOR_USER_ID
                              and store.get_user(tenant, user) is None):
            if user != PRIOR_USER_ID:
                interactions(store, tenant, user, [marker("r") for _ in range(rng.randint(1, 2))])
                done["ingest"] += 1
            continue
        if op == "train":
            head = store.get_head(tenant, user)
            outcome = rng.choice(["promoted", "promoted", "rejected", "trained"])
            revision(store, adapters, tenant, user, parent=head.revision_id if head else None,
                     outcome=outcome, user_nll=rng.uniform(1, 3), seed=rng.randint(0, 10**6))
            done["train"] += 1
        elif op == "rollback":
            revs = store.list_revisions(tenant, user)
            target = rng.choice([None, *(r.revision_id for r in revs)])
            try:
                actions.rollback(tenant, user, to_revision_id=target, reason="random",
                                 actor="test")
                done["rollback"] += 1
            except RollbackRefused:
                done["refused"] += 1
        elif op == "forget" and user != PRIOR_USER_ID:
            try:
                actions.forget(tenant, user, actor="test", reason="random")
                done["forget"] += 1
            except NothingToForget:
                pass
    return done


def test_rebuilt_projections_equal_live_ones(
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    store: PostgresEventStore,
    adapters: LocalAdapterStore,
    actions: CorrectiveActions,
) -> None:
    done = _scenario(random.Random(20261122), store, adapters, actions)
    assert all(done.values()), done  # every kind of step really happened
    live = store.projection_state().rows()
    users, revisions, heads = live
    assert {r.state for r in revisions} >= {
        "promoted", "superseded", "rolled_back", "rejected", "forgotten"}
    assert heads and any(u.forgotten_at for u in users)

    monkeypatch.setenv("TESSERA_DATABASE_URL", database_url)
    monkeypatch.setenv("TESSERA_KAFKA_BOOTSTRAP", "127.0.0.1:9")  # unused by this command
    get_settings.cache_clear()
    try:
        out = CliRunner().invoke(app, ["db", "rebuild-projections"])
    finally:
        get_settings.cache_clear()
    assert out.exit_code == 0, out.output
    assert f"{len(revisions)} revisions, {len(heads)} heads" in out.output

    rebuilt = store.projection_state().rows()
    for name, a, b in zip(("users", "revisions", "heads"), live, rebuilt, strict=True):
        assert a == b, f"rebuilt {name} differ from live ones"
