"""The revision state machine, heads and `served_revision`, on both stores."""

from __future__ import annotations

import pytest

from tessera.events.catalog import ServedRevision, served_revision
from tessera.events.projections import ProjectionError
from tessera.events.store import EventStore
from tessera.schemas.events import PRIOR_USER_ID, EventEnvelope, RevisionState

from .factories import evaluated, exchange, promoted, rejected, rolled_back, trained

T, U = "acme", "alice"


def states(store: EventStore, user: str = U) -> dict[str, str]:
    return {r.revision_id: r.state for r in store.list_revisions(T, user)}


def train_and_promote(
    store: EventStore,
    rid: str,
    *,
    user: str = U,
    previous: str | None = None,
    kind: str = "personal",
) -> None:
    store.append(
        [
            trained(T, user, rid, parent=previous, kind=kind),
            evaluated(T, user, rid),
            promoted(T, user, rid, previous),
        ]
    )


def test_lifecycle_promote_supersede_reject(store: EventStore) -> None:
    store.append([exchange(T, U, 0), trained(T, U, "r1")])
    r1 = store.get_revision("r1")
    assert r1 is not None and r1.state == RevisionState.TRAINED
    assert r1.provenance["hyperparameters"] == {"lr": 1e-4} and r1.dataset_to == 10
    store.append([evaluated(T, U, "r1", loss=1.25)])
    r1 = store.get_revision("r1")
    assert r1 is not None and r1.metrics == {"heldout_loss": 1.25}
    assert r1.evaluated_at is not None and r1.state == RevisionState.EVALUATED
    store.append([promoted(T, U, "r1")])
    head = store.get_head(T, U)
    assert head is not None and (head.revision_id, head.adapter_digest) == ("r1", "digest-r1")

    train_and_promote(store, "r2", previous="r1")
    store.append([trained(T, U, "r3", parent="r2"), evaluated(T, U, "r3"), rejected(T, U, "r3")])
    assert states(store) == {"r1": "superseded", "r2": "promoted", "r3": "rejected"}
    r3 = store.get_revision("r3")
    assert r3 is not None and r3.reasons == ["worse than baseline"] and r3.decided_at
    assert served_revision(store, T, U) == ServedRevision("r2", "digest-r2", "personal")


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([evaluated(T, U, "nope")], "not a revision of acme/alice"),
        ([trained(T, U, "r1"), promoted(T, U, "r1")], "is trained, expected one of"),
        ([trained(T, U, "r1"), trained(T, U, "r1")], "already trained"),
        ([trained(T, U, "r1", kind="prior")], "does not match stream"),
        ([trained(T, "bob", "r1"), evaluated(T, U, "r1")], "not a revision of acme/alice"),
        ([rolled_back(T, U, "r9", None)], "is serving None"),
    ],
)
def test_illegal_transitions_are_refused(
    store: EventStore, events: list[EventEnvelope], message: str
) -> None:
    with pytest.raises(ProjectionError, match=message):
        store.append(events)
    assert store.head_position() == 0


def test_rollback_and_roll_forward(store: EventStore) -> None:
    train_and_promote(store, "r1")
    train_and_promote(store, "r2", previous="r1")
    store.append([rolled_back(T, U, "r2", "r1")])
    assert states(store) == {"r1": "promoted", "r2": "rolled_back"}
    assert served_revision(store, T, U).revision_id == "r1"
    store.append([rolled_back(T, U, "r1", "r2")])  # forward again
    assert states(store) == {"r1": "rolled_back", "r2": "promoted"}
    store.append([trained(T, U, "r3"), rejected(T, U, "r3")])
    with pytest.raises(ProjectionError, match="it is rejected"):
        store.append([rolled_back(T, U, "r2", "r3")])
    with pytest.raises(ProjectionError, match="is serving 'r2'"):
        store.append([rolled_back(T, U, "r1", None)])  # stale: r1 is not the head
    store.append([rolled_back(T, U, "r2", None)])
    assert store.get_head(T, U) is None
    assert served_revision(store, T, U) == ServedRevision(None, None, "base")


def test_served_revision_falls_back_to_prior_then_base(store: EventStore) -> None:
    assert served_revision(store, T, U) == ServedRevision(None, None, "base")
    train_and_promote(store, "p1", user=PRIOR_USER_ID, kind="prior")
    assert served_revision(store, T, U) == ServedRevision("p1", "digest-p1", "prior")
    assert served_revision(store, "other", U).source == "base"  # priors are per tenant
    train_and_promote(store, "r1")
    assert served_revision(store, T, U) == ServedRevision("r1", "digest-r1", "personal")
    assert served_revision(store, T, "bob").source == "prior"
    store.append([rolled_back(T, U, "r1", None)])
    assert served_revision(store, T, U).source == "prior"


def test_forget_erases_content_and_starts_a_fresh_history(store: EventStore) -> None:
    from datetime import UTC, datetime

    from tessera.events.store import RejectedInput, RequestRecord

    at = datetime(2026, 1, 5, tzinfo=UTC)
    store.append([exchange(T, U, i) for i in range(3)] + [exchange(T, "bob", 9)])
    train_and_promote(store, "r1")
    store.record_rejected(
        [
            RejectedInput("http", "bad", '{"user_id": "alice", "text": "secret"}', at),
            RejectedInput("http", "bad", "{}", at, T, U),
            RejectedInput("http", "bad", '{"user_id": "bob"}', at),
        ]
    )
    store.record_requests([RequestRecord("q1", T, U, "r1", "digest-r1", "personal", at)])

    digests = store.forget_user(T, U, actor="admin@acme", reason="user request")

    assert digests == ["digest-r1"]
    assert states(store) == {"r1": "forgotten"}
    assert store.get_head(T, U) is None
    assert served_revision(store, T, U).source == "base"
    alice = store.read(tenant_id=T, user_id=U)
    assert all(
        e.envelope.data == {} for e in alice if e.envelope.event_type.startswith("interaction")
    )
    tomb = alice[-1]
    assert tomb.envelope.event_type == "user.forgotten"
    assert tomb.envelope.data == {
        "actor": "admin@acme",
        "reason": "user request",
        "forgotten_revision_ids": ["r1"],
        "retrain_prior_revision_ids": [],  # no prior was trained on alice
    }
    assert [r.payload for r in store.read_rejected()] == ['{"user_id": "bob"}']
    assert store.get_request("q1") is None
    bob = store.read(tenant_id=T, user_id="bob")
    assert bob[0].envelope.data["prompt"] == "secret prompt bob 9"
    assert store.last_forgotten_position(T, U) == tomb.position
    assert store.last_forgotten_position(T, "bob") == 0
    user = store.get_user(T, U)
    assert user is not None and user.interactions == 0 and user.forgotten_position == tomb.position

    (later,) = store.append([exchange(T, U, 50)])
    assert later.stream_version == tomb.stream_version + 1  # versions continue
    user = store.get_user(T, U)
    assert user is not None and (user.interactions, user.first_position) == (1, later.position)
    with pytest.raises(ProjectionError, match="is forgotten"):
        store.append([rolled_back(T, U, None, "r1")])


def test_forget_unknown_user_is_refused(store: EventStore) -> None:
    from tessera.events.store import NotFoundError

    with pytest.raises(NotFoundError, match="nothing to forget"):
        store.forget_user(T, "ghost", actor="admin", reason="test")
