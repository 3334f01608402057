"""`tessera audit user` shows a head superseded by a refreshed prior, with its figures."""

from __future__ import annotations

import uuid

from tessera.events.postgres_store import PostgresEventStore
from tessera.schemas.events import PRIOR_USER_ID
from tessera.services.audit.queries import user_lineage
from tessera.services.audit.render import lineage_text
from tessera.workers.adapter_store import LocalAdapterStore
from tessera.workers.stale_heads import HeadCheck, superseded_event

from .builders import interactions, marker, revision

U = "alice"


def test_lineage_shows_the_supersession_and_the_prior_served(
    store: PostgresEventStore, adapters: LocalAdapterStore
) -> None:
    t = f"acme-{uuid.uuid4().hex[:8]}"
    interactions(store, t, U, [marker("a"), marker("b")])
    p1 = revision(store, adapters, t, PRIOR_USER_ID, parent=None)
    r1 = revision(store, adapters, t, U, parent=p1.revision_id, user_nll=2.0)
    p2 = revision(store, adapters, t, PRIOR_USER_ID, parent=None)
    prior = store.get_revision(p2.revision_id)
    assert prior is not None
    check = HeadCheck(U, r1.revision_id, head_nll=2.0, prior_nll=1.8, heldout_positions=(5, 6))
    store.append([superseded_event(t, prior, check)])

    lin = user_lineage(store, t, U)

    assert (lin.served.source, lin.served.revision_id) == ("prior", p2.revision_id)
    (node,) = lin.revisions
    assert node.state == "superseded" and not node.served
    last = lin.history[-1]
    assert (last.event_type, last.revision_id, last.actor) == (
        "revision.superseded_by_prior", r1.revision_id, "gate:prior-refresh")
    assert last.data["prior_revision_id"] == p2.revision_id
    assert (last.data["head_nll"], last.data["prior_nll"]) == (2.0, 1.8)
    assert last.data["heldout_positions"] == [5, 6]
    text = lineage_text(lin)
    assert f"{t}/{U}: served prior {p2.revision_id}" in text
    assert f"revision.superseded_by_prior {r1.revision_id} -> prior {p2.revision_id}" in text
    assert "NLL 1.8000 vs 2.0000 (-10.00%)" in text
