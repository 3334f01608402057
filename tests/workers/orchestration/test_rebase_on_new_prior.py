"""A personal chain rebases when the tenant prior it grew from has been replaced."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from types import SimpleNamespace

from tessera.events.projections import RevisionRow
from tessera.schemas.events import PRIOR_USER_ID
from tessera.workers.pipeline import RevisionPipeline

NOW = datetime(2026, 11, 22, tzinfo=UTC)


def _row(revision_id: str, user_id: str, parent: str | None) -> RevisionRow:
    values: dict[str, object] = {f.name: None for f in dataclasses.fields(RevisionRow)}
    values.update(revision_id=revision_id, tenant_id="acme", user_id=user_id,
                  parent_revision_id=parent, kind="prior" if user_id == PRIOR_USER_ID
                  else "personal", state="promoted", trained_at=NOW, updated_at=NOW)
    return RevisionRow(**values)  # type: ignore[arg-type]


def _pipeline(*rows: RevisionRow) -> SimpleNamespace:
    by_id = {r.revision_id: r for r in rows}
    return SimpleNamespace(store=SimpleNamespace(get_revision=by_id.get))


def test_chain_rests_on_the_prior_it_started_from_and_not_on_a_newer_one() -> None:
    prior1 = _row("p1", PRIOR_USER_ID, None)
    prior2 = _row("p2", PRIOR_USER_ID, None)
    r1 = _row("r1", "alice", "p1")
    r2 = _row("r2", "alice", "r1")
    pipe = _pipeline(prior1, prior2, r1, r2)
    assert RevisionPipeline.rests_on(pipe, r2, prior1)  # type: ignore[arg-type]
    assert not RevisionPipeline.rests_on(pipe, r2, prior2)  # type: ignore[arg-type]


def test_chain_from_the_base_model_rebases_on_a_prior() -> None:
    prior = _row("p1", PRIOR_USER_ID, None)
    r1 = _row("r1", "alice", None)
    assert not RevisionPipeline.rests_on(_pipeline(prior, r1), r1, prior)  # type: ignore[arg-type]
