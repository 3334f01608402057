"""A personal head superseded by a refreshed tenant prior: the user is served the prior."""

from __future__ import annotations

import pytest

from tessera.events.catalog import ServedRevision, served_revision
from tessera.events.projections import ProjectionError
from tessera.events.store import EventStore

from .factories import superseded_by_prior
from .test_projections import T, U, states, train_and_promote

PRIOR = "~prior"


def test_a_superseded_head_stops_being_served_and_the_prior_is(store: EventStore) -> None:
    train_and_promote(store, "p1", user=PRIOR, kind="prior")
    train_and_promote(store, "r1", previous="p1")
    train_and_promote(store, "p2", user=PRIOR, previous="p1", kind="prior")
    assert served_revision(store, T, U) == ServedRevision("r1", "digest-r1", "personal")

    store.append([superseded_by_prior(T, U, "r1", "p2")])

    assert states(store) == {"r1": "superseded"}
    assert store.get_head(T, U) is None
    assert served_revision(store, T, U) == ServedRevision("p2", "digest-p2", "prior")
    # A rebased revision that wins its gate is served again, as any promotion.
    train_and_promote(store, "r2", previous="p2")
    assert served_revision(store, T, U).revision_id == "r2"
    assert states(store) == {"r1": "superseded", "r2": "promoted"}


def test_only_the_head_being_served_can_be_superseded(store: EventStore) -> None:
    train_and_promote(store, "p1", user=PRIOR, kind="prior")
    train_and_promote(store, "r1", previous="p1")
    train_and_promote(store, "r2", previous="r1")
    with pytest.raises(ProjectionError, match="is serving 'r2'"):
        store.append([superseded_by_prior(T, U, "r1", "p1")])
    with pytest.raises(ProjectionError, match="serving None"):
        store.append([superseded_by_prior(T, "bob", "r2", "p1")])
    assert served_revision(store, T, U).revision_id == "r2"
