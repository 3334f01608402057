"""Forget: not a byte of the user's text stays in any table or in the adapter store, the
log keeps a content-free tombstone, servers are told, and later events start afresh."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tessera.events.catalog import served_revision
from tessera.events.postgres_store import PostgresEventStore
from tessera.events.store import RejectedInput, RequestRecord
from tessera.schemas.events import EventType
from tessera.services.audit.queries import user_lineage
from tessera.services.corrective import CorrectiveActions, NothingToForget
from tessera.workers.adapter_store import LocalAdapterStore

from .builders import TopicReader, interactions, marker, revision
from .scan import find_in_database, find_in_files, text_columns

T = "acme"


def test_forget_erases_every_byte_and_keeps_a_tombstone(
    database_url: str,
    store: PostgresEventStore,
    adapters: LocalAdapterStore,
    actions: CorrectiveActions,
    topic_reader: TopicReader,
) -> None:
    alice = [marker("alice") for _ in range(3)]
    bob = [marker("bob")]
    interactions(store, T, "alice", alice[:2])
    interactions(store, T, "bob", bob)
    r1 = revision(store, adapters, T, "alice", parent=None)
    interactions(store, T, "alice", alice[2:])
    r2 = revision(store, adapters, T, "alice", parent=r1.revision_id)
    # Bob's live revision happens to share r1's blob (content addressing): it must stay.
    bob_rev = revision(store, adapters, T, "bob", parent=None, digest=r1.digest)
    store.record_rejected([RejectedInput(
        source="http", reason="bad rating", payload=f'{{"user_id": "alice", "text": "{alice[0]}"}}',
        received_at=datetime.now(UTC), tenant_id=T, user_id="alice")])
    store.record_requests([RequestRecord(
        request_id="req-alice-1", tenant_id=T, user_id="alice", revision_id=r2.revision_id,
        adapter_digest=r2.digest, source="personal", at=datetime.now(UTC))])

    # The scan finds the markers before the forget (so its silence afterwards means something).
    before = find_in_database(database_url, alice + bob)
    assert all(before[m] for m in alice + bob), before
    assert "rejected_inputs.payload" in before[alice[0]]

    result = actions.forget(T, "alice", actor="dpo:lee", reason="erasure request #42")

    assert sorted(result.forgotten_revision_ids) == sorted([r1.revision_id, r2.revision_id])
    assert result.deleted_digests == [r2.digest] and result.kept_digests == [r1.digest]
    assert result.published

    # No table holds any of Alice's text; Bob's is untouched.
    after = find_in_database(database_url, alice + bob)
    assert {m: after[m] for m in alice} == {m: [] for m in alice}
    assert after[bob[0]], "forgetting alice erased bob's content"
    assert len(text_columns(database_url)) > 10  # the scan really covered the schema

    # Adapter store: Alice's own blob is gone, the shared one stays for Bob.
    assert not adapters.exists(r2.digest)
    assert adapters.exists(r1.digest)
    assert store.get_revision(bob_rev.revision_id).state == "promoted"  # type: ignore[union-attr]
    assert find_in_files(adapters.root, alice) == {m: [] for m in alice}

    # The tombstone: who, when, by whom, which revisions; no content.
    (tomb,) = store.read(tenant_id=T, user_id="alice", event_types=[EventType.USER_FORGOTTEN])
    assert tomb.envelope.data["actor"] == "dpo:lee"
    assert tomb.envelope.data["reason"] == "erasure request #42"
    assert store.get_request("req-alice-1") is None
    assert served_revision(store, T, "alice").source == "base"
    assert {r.state for r in store.list_revisions(T, "alice")} == {"forgotten"}

    # Servers are told, and the announcement carries no content either.
    records = topic_reader.wait_for(1)
    assert [(k, v["event_type"]) for k, v in records] == [(f"{T}/alice", "user.forgotten")]
    assert not any(m in str(records) for m in alice)


def test_later_events_start_a_fresh_history(
    store: PostgresEventStore, adapters: LocalAdapterStore, actions: CorrectiveActions
) -> None:
    old = marker("old")
    interactions(store, T, "carol", [old, marker("old")])
    revision(store, adapters, T, "carol", parent=None)
    forgot = actions.forget(T, "carol", actor="ops", reason="asked")

    new = interactions(store, T, "carol", [marker("new")])
    user = store.get_user(T, "carol")
    assert user is not None
    assert user.interactions == len(new) == 3
    assert user.first_position == new[0].position > forgot.position
    assert store.last_forgotten_position(T, "carol") == forgot.position

    # A revision trained now starts from the base, not from the forgotten lineage.
    fresh = revision(store, adapters, T, "carol", parent=None)
    lineage = user_lineage(store, T, "carol")
    assert lineage.served.revision_id == fresh.revision_id
    assert lineage.forgotten_position == forgot.position
    states = {n.revision_id: n.state for n in lineage.revisions}
    assert states[fresh.revision_id] == "promoted"
    assert sorted(states.values()) == ["forgotten", "promoted"]


def test_forgetting_an_unknown_user_is_refused(actions: CorrectiveActions, tmp_path: Path) -> None:
    with pytest.raises(NothingToForget, match="nothing to forget"):
        actions.forget(T, "nobody", actor="ops", reason="x")


def test_forgetting_a_user_known_only_from_refused_input_erases_it(
    database_url: str, store: PostgresEventStore, actions: CorrectiveActions
) -> None:
    secret = marker("ghost")
    store.record_rejected([RejectedInput(
        source="http", reason="bad rating", payload=f'{{"user_id": "ghost", "text": "{secret}"}}',
        received_at=datetime.now(UTC), tenant_id=T, user_id="ghost")])
    assert find_in_database(database_url, [secret])[secret]

    result = actions.forget(T, "ghost", actor="dpo:lee", reason="erasure request #43")

    assert find_in_database(database_url, [secret]) == {secret: []}
    assert result.forgotten_revision_ids == [] and result.published
    (tomb,) = store.read(tenant_id=T, user_id="ghost", event_types=[EventType.USER_FORGOTTEN])
    assert str(tomb.envelope.event_id) == result.tombstone_event_id
