"""Projections rebuilt from the log equal the live ones after a long random scenario."""

from __future__ import annotations

import random

import pytest

from tessera.events.postgres_store import PostgresEventStore
from tessera.events.rebuild import rebuild_projections
from tessera.schemas.events import PRIOR_USER_ID, RevisionState

from .factories import (
    evaluated,
    exchange,
    promoted,
    rejected,
    rolled_back,
    superseded_by_prior,
    trained,
)

T = "acme"
USERS = ["alice", "bob", "carol", PRIOR_USER_ID]


def random_step(store: PostgresEventStore, rng: random.Random, step: int) -> None:
    """One legal action, chosen from what the projections say is possible now."""
    user = rng.choice(USERS)
    revisions = store.list_revisions(T, user)
    by_state: dict[str, list[str]] = {}
    for r in revisions:
        by_state.setdefault(r.state, []).append(r.revision_id)
    head = store.get_head(T, user)
    current = head.revision_id if head else None
    kind = "prior" if user == PRIOR_USER_ID else "personal"
    action = rng.choices(
        ["ingest", "train", "evaluate", "decide", "rollback", "forget", "supersede"],
        [3, 2, 2, 3, 1, 1, 1],
    )[0]
    if action == "ingest" and user != PRIOR_USER_ID:
        store.append([exchange(T, user, step * 10 + i) for i in range(rng.randint(1, 5))])
    elif action == "train":
        # Trained after the user's last forget (the log refuses one reaching before it).
        after = store.last_forgotten_position(T, user)
        store.append([trained(T, user, f"{user}-{step}", parent=current, kind=kind,
                              dataset_from=after + 1)])
    elif action == "evaluate" and by_state.get(RevisionState.TRAINED):
        store.append(
            [evaluated(T, user, rng.choice(by_state[RevisionState.TRAINED]), rng.random())]
        )
    elif action == "decide" and by_state.get(RevisionState.EVALUATED):
        rid = rng.choice(by_state[RevisionState.EVALUATED])
        decision = promoted(T, user, rid, current) if rng.random() < 0.6 else rejected(T, user, rid)
        store.append([decision])
    elif action == "rollback":
        targets = [r.revision_id for r in revisions if r.state in ("superseded", "rolled_back")]
        target = rng.choice([*targets, None])
        store.append([rolled_back(T, user, current, target)])
    elif action == "supersede" and user != PRIOR_USER_ID and current is not None:
        prior = store.get_head(T, PRIOR_USER_ID)
        if prior is not None:
            store.append([superseded_by_prior(T, user, current, prior.revision_id)])
    elif (
        action == "forget"
        and user != PRIOR_USER_ID
        and rng.random() < 0.2
        and store.read(tenant_id=T, user_id=user, limit=1)
    ):
        store.forget_user(T, user, actor="admin", reason=f"step {step}")


# 1: every stream is written on its own (the smallest bound on memory); the default: the
# whole scenario in one batch.
@pytest.mark.parametrize("streams_per_flush", [1, 10_000])
def test_rebuilt_projections_equal_live(database_url: str, streams_per_flush: int) -> None:
    rng = random.Random(20261122)
    with PostgresEventStore(database_url) as store:
        for step in range(300):
            random_step(store, rng, step)
        live = store.projection_state()
        users, revisions, heads = live.rows()
        # The scenario must have exercised every state, or the comparison proves little.
        seen = {r.state for r in revisions}
        assert seen >= {"promoted", "superseded", "rejected", "rolled_back", "forgotten"}, seen
        assert heads and any(u.forgotten_at for u in users)
        assert store.read(event_types=["revision.superseded_by_prior"], limit=1)

        report = rebuild_projections(database_url, streams_per_flush=streams_per_flush)

        assert report.events == store.head_position()
        assert store.projection_state().rows() == live.rows()
        assert (report.users, report.revisions, report.heads) == (
            len(users), len(revisions), len(heads))
        # Streamed: no more than the bound of streams held at once, one write per batch.
        streams = len({(T, u) for u in USERS if store.read(tenant_id=T, user_id=u, limit=1)})
        assert report.max_streams_held == min(streams, streams_per_flush)
        assert report.flushes == -(-streams // streams_per_flush)
