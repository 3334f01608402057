"""AuditReads: one contract, run on the PostgreSQL reads and on the in-memory twin."""

from __future__ import annotations

from tessera.events.audit_reads import audit_reads_for
from tessera.events.store import EventStore
from tessera.schemas.events import PRIOR_USER_ID, EventType

from .factories import evaluated, exchange, promoted, rejected, rolled_back, trained


def _history_types(store: EventStore, tenant: str, user: str) -> list[str]:
    found = audit_reads_for(store).user_audit(tenant, user)
    return [str(e.envelope.event_type) for e in found.history]


def test_user_audit_gathers_the_stream(store: EventStore) -> None:
    store.append([exchange("t1", "alice", n) for n in range(3)])
    store.append([trained("t1", "alice", "r1"), evaluated("t1", "alice", "r1"),
                  promoted("t1", "alice", "r1")])
    store.append([trained("t1", "alice", "r2", parent="r1"), evaluated("t1", "alice", "r2"),
                  rejected("t1", "alice", "r2"), exchange("t1", "bob", 9)])
    found = audit_reads_for(store).user_audit("t1", "alice")
    assert found.user is not None and found.user.interactions == 3
    assert [r.revision_id for r in found.revisions] == ["r1", "r2"]
    assert found.head is not None and found.head.revision_id == "r1"
    assert (found.served.revision_id, found.served.source) == ("r1", "personal")
    # Revision events only (no interactions), in position order, this stream only.
    assert _history_types(store, "t1", "alice") == [
        EventType.REVISION_TRAINED, EventType.REVISION_EVALUATED, EventType.REVISION_PROMOTED,
        EventType.REVISION_TRAINED, EventType.REVISION_EVALUATED, EventType.REVISION_REJECTED,
    ]
    positions = [e.position for e in found.history]
    assert positions == sorted(positions)
    assert all(e.envelope.recorded_at is not None for e in found.history)


def test_user_audit_of_an_unknown_user_is_empty_and_falls_back_to_the_prior(
    store: EventStore,
) -> None:
    store.append([trained("t1", PRIOR_USER_ID, "p1", kind="prior"),
                  evaluated("t1", PRIOR_USER_ID, "p1"), promoted("t1", PRIOR_USER_ID, "p1")])
    found = audit_reads_for(store).user_audit("t1", "nobody")
    assert found.user is None and found.revisions == [] and found.head is None
    assert found.history == []
    assert (found.served.revision_id, found.served.source) == ("p1", "prior")
    other = audit_reads_for(store).user_audit("t2", "nobody")
    assert (other.served.revision_id, other.served.source) == (None, "base")


def test_revision_audit_counts_the_dataset_and_its_redactions(store: EventStore) -> None:
    # Positions 1..6: alice 1, 3, 5; bob 2, 4, 6 (all in t1), then a t2 event at 7.
    store.append([exchange("t1", "alice" if n % 2 == 0 else "bob", n) for n in range(6)])
    store.append([exchange("t2", "alice", 7)])
    store.append([trained("t1", "alice", "r1", dataset_from=2), evaluated("t1", "alice", "r1"),
                  promoted("t1", "alice", "r1"), rolled_back("t1", "alice", "r1", None)])
    store.append([trained("t1", PRIOR_USER_ID, "p1", kind="prior", dataset_from=1)])
    reads = audit_reads_for(store)
    found = reads.revision_audit("r1", max_ids=500)
    assert found is not None
    assert found.revision.revision_id == "r1" and found.parent is None
    assert [r.revision_id for r in found.stream] == ["r1"]
    assert found.head is None  # rolled back to nothing: the head was cleared
    # Personal dataset [2, 10]: alice's interactions at 3 and 5.
    assert (found.dataset.count, found.dataset.redacted) == (2, 0)
    alice = [str(e.envelope.event_id) for e in store.read(tenant_id="t1", user_id="alice")]
    assert found.dataset.event_ids == alice[1:3]
    assert [str(e.envelope.event_type) for e in found.history][-1] == (
        EventType.REVISION_ROLLED_BACK
    )
    # A prior's dataset spans its tenant; a forget of bob is counted as redactions.
    store.forget_user("t1", "bob", actor="admin", reason="asked")
    prior = reads.revision_audit("p1", max_ids=4)
    assert prior is not None
    assert (prior.dataset.count, prior.dataset.redacted) == (6, 3)
    assert len(prior.dataset.event_ids) == 4  # capped; the count stays exact
    assert reads.revision_audit("nope", max_ids=10) is None


def test_revision_audit_names_the_parent(store: EventStore) -> None:
    store.append([exchange("t1", "alice", 0), trained("t1", "alice", "r1"),
                  trained("t1", "alice", "r2", parent="r1")])
    found = audit_reads_for(store).revision_audit("r2", max_ids=10)
    assert found is not None and found.parent is not None
    assert found.parent.revision_id == "r1"


def test_live_adapter_digests_skip_forgotten_revisions(store: EventStore) -> None:
    store.append([exchange("t1", "alice", 0), trained("t1", "alice", "r1"),
                  exchange("t1", "bob", 1), trained("t1", "bob", "r2")])
    reads = audit_reads_for(store)
    assert reads.live_adapter_digests([]) == set()
    assert reads.live_adapter_digests(["digest-r1", "digest-r2", "nope"]) == {
        "digest-r1", "digest-r2"
    }
    store.forget_user("t1", "alice", actor="admin", reason="asked")
    assert reads.live_adapter_digests(["digest-r1", "digest-r2"]) == {"digest-r2"}
