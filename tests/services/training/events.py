"""Revision events for the webhook tests (the log's own payload models)."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel

from tessera.schemas.events import EventEnvelope, EventType
from tessera.schemas.revisions import (
    RevisionEvaluated,
    RevisionPromoted,
    RevisionRejected,
    RevisionRolledBack,
    RevisionTrained,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _env(tenant: str, user: str, kind: EventType, data: dict[str, object]) -> EventEnvelope:
    return EventEnvelope(event_type=kind, tenant_id=tenant, user_id=user, occurred_at=T0,
                         data=data)


def _rev(tenant: str, user: str, kind: EventType, payload: BaseModel) -> EventEnvelope:
    return _env(tenant, user, kind, payload.model_dump(mode="json"))


def exchange(tenant: str, user: str, n: int) -> EventEnvelope:
    return _env(tenant, user, EventType.EXCHANGE,
                {"prompt": f"prompt {n}", "response": f"reply {n}", "context": []})


def trained(tenant: str, user: str, rid: str, *, parent: str | None = None,
            adapter_digest: str | None = None) -> EventEnvelope:
    return _rev(tenant, user, EventType.REVISION_TRAINED, RevisionTrained(
        revision_id=rid, kind="personal", parent_revision_id=parent, base_model_id="base",
        base_digest="b" * 64, adapter_digest=adapter_digest or f"digest-{rid}",
        adapter_bytes=1, rank=8, alpha=16.0, target_modules=["q_proj", "v_proj"], seed=0,
        dataset_from=1, dataset_to=1, dataset_digest="d" * 64, code_version="test", trigger="test",
        train_seconds=0.0))


def evaluated(tenant: str, user: str, rid: str) -> EventEnvelope:
    return _rev(tenant, user, EventType.REVISION_EVALUATED,
                RevisionEvaluated(revision_id=rid, metrics={"user_nll": 1.0}))


def promoted(tenant: str, user: str, rid: str, previous: str | None = None) -> EventEnvelope:
    return _rev(tenant, user, EventType.REVISION_PROMOTED, RevisionPromoted(
        revision_id=rid, adapter_digest=f"digest-{rid}", previous_revision_id=previous,
        reasons=["beats baseline"]))


def rejected(tenant: str, user: str, rid: str) -> EventEnvelope:
    return _rev(tenant, user, EventType.REVISION_REJECTED,
                RevisionRejected(revision_id=rid, reasons=["worse than baseline"]))


def rolled_back(tenant: str, user: str, frm: str | None, to: str | None) -> EventEnvelope:
    return _rev(tenant, user, EventType.REVISION_ROLLED_BACK, RevisionRolledBack(
        from_revision_id=frm, to_revision_id=to, reason="test", actor="admin-key"))
