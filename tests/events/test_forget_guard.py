"""Under the append lock, the log refuses a revision whose data a forget has erased since
it was read (both stores): a personal dataset reaching back to or below the user's
tombstone, or a prior sampled from a user forgotten after the sample was taken."""

from __future__ import annotations

from typing import Any

import pytest

from tessera.events.forget_guard import ForgottenDataRefused
from tessera.events.store import EventStore
from tessera.schemas.events import PRIOR_USER_ID, EventEnvelope

from .factories import exchange, trained

T = "acme"


def _prior(rid: str, dataset: dict[str, Any]) -> EventEnvelope:
    env = trained(T, PRIOR_USER_ID, rid, kind="prior")
    data = {**env.data, "hyperparameters": {"dataset": {"builder": "prior", **dataset}}}
    return env.model_copy(update={"data": data})


def _forgotten_alice(store: EventStore) -> int:
    store.append([exchange(T, "alice", i) for i in range(3)] + [exchange(T, "bob", 9)])
    store.forget_user(T, "alice", actor="dpo", reason="erasure request")
    return store.last_forgotten_position(T, "alice")


def test_a_personal_revision_reaching_before_the_tombstone_is_refused(store: EventStore) -> None:
    tombstone = _forgotten_alice(store)
    head = store.head_position()
    # Trained on positions 1.. (read before the forget): refused, nothing stored.
    with pytest.raises(ForgottenDataRefused, match="acme/alice, who was forgotten"):
        store.append([trained(T, "alice", "r-race", dataset_from=1)])
    with pytest.raises(ForgottenDataRefused):
        store.append([trained(T, "alice", "r-at", dataset_from=tombstone)])
    assert store.head_position() == head
    assert store.get_revision("r-race") is None
    # One whose data starts after the tombstone (a fresh history) is fine, and so is bob.
    store.append([trained(T, "alice", "r-fresh", dataset_from=tombstone + 1)])
    store.append([trained(T, "bob", "r-bob", dataset_from=1)])
    assert store.get_revision("r-fresh") is not None
    assert store.get_revision("r-bob") is not None


def test_a_prior_sampled_before_a_users_forget_is_refused(store: EventStore) -> None:
    tombstone = _forgotten_alice(store)
    with pytest.raises(ForgottenDataRefused, match="'p-race'"):
        store.append([_prior("p-race", {"users": ["alice", "bob"]})])
    with pytest.raises(ForgottenDataRefused):
        store.append([_prior("p-older", {"users": ["alice"],
                                         "forgotten_after": {"alice": tombstone - 1}})])
    assert store.get_revision("p-race") is None
    # Sampled after the forget (only her fresh events), or without her: accepted.
    store.append([_prior("p-after", {"users": ["alice", "bob"],
                                     "forgotten_after": {"alice": tombstone}})])
    store.append([_prior("p-bob", {"users": ["bob"]})])
    assert {r.revision_id for r in store.list_revisions(T, PRIOR_USER_ID)} == {
        "p-after", "p-bob"}


def test_a_replayed_revision_already_in_the_log_is_not_refused(store: EventStore) -> None:
    store.append([exchange(T, "alice", 0)])
    first = trained(T, "alice", "r-1", dataset_from=1)
    store.append([first])
    store.forget_user(T, "alice", actor="dpo", reason="erasure request")
    # A retried append of the same event is the usual no-op, not an error.
    assert store.append([first]) == []
    assert store.get_revision("r-1").state == "forgotten"  # type: ignore[union-attr]
