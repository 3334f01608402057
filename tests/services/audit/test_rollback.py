"""Rollback: the served head moves back (and forward), the log says who and why, the
move is announced on the revisions topic, and forbidden targets are refused."""

from __future__ import annotations

import pytest

from tessera.events.catalog import served_revision
from tessera.events.postgres_store import PostgresEventStore
from tessera.schemas.events import EventType
from tessera.services.corrective import CorrectiveActions, RollbackRefused
from tessera.workers.adapter_store import LocalAdapterStore

from .builders import TopicReader, interactions, marker, revision

T, U = "acme", "alice"


@pytest.fixture()
def chain(store: PostgresEventStore, adapters: LocalAdapterStore) -> dict[str, str]:
    """r1 (promoted) <- r2 (promoted, served) <- r3 (rejected); r4 trained only."""
    interactions(store, T, U, [marker("a")])
    r1 = revision(store, adapters, T, U, parent=None, user_nll=2.0)
    interactions(store, T, U, [marker("b")])
    r2 = revision(store, adapters, T, U, parent=r1.revision_id, user_nll=1.8)
    r3 = revision(store, adapters, T, U, parent=r2.revision_id, outcome="rejected", user_nll=2.2)
    r4 = revision(store, adapters, T, U, parent=r2.revision_id, outcome="trained")
    return {"r1": r1.revision_id, "r2": r2.revision_id, "r3": r3.revision_id,
            "r4": r4.revision_id}


def test_rollback_to_parent_then_forward(
    store: PostgresEventStore,
    actions: CorrectiveActions,
    chain: dict[str, str],
    topic_reader: TopicReader,
) -> None:
    assert served_revision(store, T, U).revision_id == chain["r2"]

    back = actions.rollback(T, U, reason="r2 answers rudely", actor="ops:kim")
    assert (back.from_revision_id, back.to_revision_id) == (chain["r2"], chain["r1"])
    assert back.published
    assert served_revision(store, T, U).revision_id == chain["r1"]
    assert store.get_revision(chain["r2"]).state == "rolled_back"  # type: ignore[union-attr]
    assert store.get_revision(chain["r1"]).state == "promoted"  # type: ignore[union-attr]

    forward = actions.rollback(T, U, to_revision_id=chain["r2"], reason="fixed", actor="ops:kim")
    assert (forward.from_revision_id, forward.to_revision_id) == (chain["r1"], chain["r2"])
    assert served_revision(store, T, U).revision_id == chain["r2"]
    assert store.get_revision(chain["r1"]).state == "rolled_back"  # type: ignore[union-attr]

    # Both moves are in the log with actor and reason, and were announced in order.
    logged = store.read(tenant_id=T, user_id=U, event_types=[EventType.REVISION_ROLLED_BACK])
    assert [(e.envelope.data["to_revision_id"], e.envelope.data["actor"],
             e.envelope.data["reason"]) for e in logged] == [
        (chain["r1"], "ops:kim", "r2 answers rudely"), (chain["r2"], "ops:kim", "fixed")]
    records = topic_reader.wait_for(2)
    assert [(k, v["event_type"], v["data"]["to_revision_id"]) for k, v in records] == [
        (f"{T}/{U}", "revision.rolled_back", chain["r1"]),
        (f"{T}/{U}", "revision.rolled_back", chain["r2"]),
    ]


def test_rollback_past_the_first_revision_falls_back_to_base(
    store: PostgresEventStore, actions: CorrectiveActions, chain: dict[str, str]
) -> None:
    actions.rollback(T, U, reason="one back", actor="ops")
    result = actions.rollback(T, U, reason="all the way", actor="ops")
    assert (result.from_revision_id, result.to_revision_id) == (chain["r1"], None)
    served = served_revision(store, T, U)
    assert (served.source, served.revision_id) == ("base", None)
    with pytest.raises(RollbackRefused, match="nothing to roll back"):
        actions.rollback(T, U, reason="again", actor="ops")
    # ...and rolling forward from nothing works too.
    actions.rollback(T, U, to_revision_id=chain["r2"], reason="restore", actor="ops")
    assert served_revision(store, T, U).revision_id == chain["r2"]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("r3", "the gate rejected it .user_nll did not improve."),
        ("r4", "is trained and was never promoted"),
        ("r2", "already served"),
        ("nope", "not a revision of acme/alice"),
    ],
)
def test_refusals_leave_the_head_alone(
    store: PostgresEventStore,
    actions: CorrectiveActions,
    chain: dict[str, str],
    target: str,
    message: str,
) -> None:
    position = store.head_position()
    with pytest.raises(RollbackRefused, match=message):
        actions.rollback(T, U, to_revision_id=chain.get(target, target), reason="x", actor="ops")
    assert served_revision(store, T, U).revision_id == chain["r2"]
    assert store.head_position() == position  # nothing appended


def test_other_users_revision_is_refused(
    store: PostgresEventStore,
    adapters: LocalAdapterStore,
    actions: CorrectiveActions,
    chain: dict[str, str],
) -> None:
    interactions(store, T, "bob", [marker("c")])
    bob = revision(store, adapters, T, "bob", parent=None)
    interactions(store, "other", U, [marker("d")])
    same_name_elsewhere = revision(store, adapters, "other", U, parent=None)
    for rid in (bob.revision_id, same_name_elsewhere.revision_id):
        with pytest.raises(RollbackRefused, match="not a revision of acme/alice"):
            actions.rollback(T, U, to_revision_id=rid, reason="x", actor="ops")


def test_forgotten_revision_is_refused(
    store: PostgresEventStore, actions: CorrectiveActions, chain: dict[str, str]
) -> None:
    actions.forget(T, U, actor="ops", reason="user asked")
    interactions(store, T, U, [marker("e")])  # a fresh history
    with pytest.raises(RollbackRefused, match="forgotten"):
        actions.rollback(T, U, to_revision_id=chain["r1"], reason="x", actor="ops")


def test_missing_blob_is_refused(
    store: PostgresEventStore,
    adapters: LocalAdapterStore,
    actions: CorrectiveActions,
    chain: dict[str, str],
) -> None:
    row = store.get_revision(chain["r1"])
    assert row is not None
    adapters.delete(row.adapter_digest)
    with pytest.raises(RollbackRefused, match="missing from the adapter store"):
        actions.rollback(T, U, reason="x", actor="ops")
    assert served_revision(store, T, U).revision_id == chain["r2"]
