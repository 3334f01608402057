"""Forgetting reaches past the user's interactions (both stores): gate reasons that may
quote their text are redacted (their revisions' and those of priors trained on them),
those priors are named in the tombstone for retraining, and a user known only from
refused input is still erased."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tessera.events.forget_scope import REDACTED_REASONS
from tessera.events.projections import ProjectionState, apply_event
from tessera.events.store import EventStore, NotFoundError, RejectedInput
from tessera.schemas.events import PRIOR_USER_ID, EventEnvelope, EventType

from .factories import evaluated, exchange, promoted, rejected, trained

T = "acme"


def _with(env: EventEnvelope, **data: Any) -> EventEnvelope:
    return env.model_copy(update={"data": {**env.data, **data}})


def _prior(rid: str, users: list[str]) -> EventEnvelope:
    env = trained(T, PRIOR_USER_ID, rid, kind="prior")
    return _with(env, hyperparameters={"dataset": {"builder": "prior", "users": users}})


def _quote(who: str) -> list[str]:
    # What the gate writes for a looping canary: the generated words, quoted.
    return [f"degenerate canary 'Any news?': 'SECRET-{who} SECRET-{who}' repeated 9 times"]


def _replayed(store: EventStore) -> ProjectionState:
    state = ProjectionState()
    for ev in store.read():
        apply_event(state, ev)
    state.clear_dirty()
    return state


def test_forget_redacts_reasons_and_marks_the_priors_trained_on_the_user(
    store: EventStore,
) -> None:
    store.append([exchange(T, "alice", i) for i in range(3)] + [exchange(T, "bob", 7)])
    store.append([trained(T, "alice", "a-1"), evaluated(T, "alice", "a-1"),
                  _with(rejected(T, "alice", "a-1"), reasons=_quote("alice"))])
    store.append([_prior("p-both", ["alice", "bob"]), evaluated(T, PRIOR_USER_ID, "p-both"),
                  _with(promoted(T, PRIOR_USER_ID, "p-both"), reasons=_quote("p-both"))])
    store.append([_prior("p-bob", ["bob"]), evaluated(T, PRIOR_USER_ID, "p-bob"),
                  _with(rejected(T, PRIOR_USER_ID, "p-bob"), reasons=_quote("bob"))])
    store.append([_prior("p-old", ["alice"]), evaluated(T, PRIOR_USER_ID, "p-old"),
                  rejected(T, PRIOR_USER_ID, "p-old")])

    store.forget_user(T, "alice", actor="dpo", reason="erasure request")

    everything = str([ev.envelope.data for ev in store.read()]) + str(store.projection_state())
    assert "SECRET-alice" not in everything and "SECRET-p-both" not in everything
    assert "SECRET-bob" in everything  # a prior without her keeps its reasons
    for rid in ("a-1", "p-both", "p-old"):
        assert store.get_revision(rid).reasons == REDACTED_REASONS  # type: ignore[union-attr]
    assert store.get_revision("p-bob").reasons == _quote("bob")  # type: ignore[union-attr]

    (tomb,) = store.read(tenant_id=T, user_id="alice", event_types=[EventType.USER_FORGOTTEN])
    # p-old was rejected: it can never be served, so it needs no retraining.
    assert tomb.envelope.data["retrain_prior_revision_ids"] == ["p-both"]
    # The log says what the catalog says: a replay gives the same rows.
    assert _replayed(store).rows() == store.projection_state().rows()


def test_forgetting_a_user_known_only_from_refused_input_still_erases_it(
    store: EventStore,
) -> None:
    at = datetime.now(UTC)
    store.record_rejected([
        RejectedInput(source="http", reason="bad rating", payload='{"text": "SECRET-ghost"}',
                      received_at=at, tenant_id=T, user_id="ghost"),
        RejectedInput(source="kafka:x/0@1", reason="not JSON",
                      payload='{"user_id": "ghost", "text": "SECRET-ghost-2', received_at=at),
        RejectedInput(source="http", reason="bad rating", payload='{"text": "other"}',
                      received_at=at, tenant_id=T, user_id="someone"),
    ])

    store.forget_user(T, "ghost", actor="dpo", reason="erasure request")

    assert [r.user_id for r in store.read_rejected()] == ["someone"]
    (tomb,) = store.read(tenant_id=T, user_id="ghost", event_types=[EventType.USER_FORGOTTEN])
    assert tomb.envelope.data["actor"] == "dpo"  # the erasure is audited like any other
    # Nothing anywhere about a name: still refused, nothing recorded.
    with pytest.raises(NotFoundError, match="nothing to forget"):
        store.forget_user(T, "nobody", actor="dpo", reason="typo")
    assert store.read(tenant_id=T, user_id="nobody") == []
