"""Builders of events for the store tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from tessera.schemas.events import EventEnvelope, EventType
from tessera.schemas.revisions import (
    RevisionEvaluated,
    RevisionPromoted,
    RevisionRejected,
    RevisionRolledBack,
    RevisionSupersededByPrior,
    RevisionTrained,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def exchange(tenant: str, user: str, n: int = 0, **extra: Any) -> EventEnvelope:
    return EventEnvelope(
        event_type=EventType.EXCHANGE,
        tenant_id=tenant,
        user_id=user,
        occurred_at=T0 + timedelta(seconds=n),
        data={"prompt": f"secret prompt {user} {n}", "response": f"reply {n}", "context": []},
        **extra,
    )


def revision_event(tenant: str, user: str, event_type: EventType, payload: Any) -> EventEnvelope:
    return EventEnvelope(
        event_type=event_type,
        tenant_id=tenant,
        user_id=user,
        occurred_at=T0,
        data=payload.model_dump(mode="json"),
    )


def trained(
    tenant: str, user: str, rid: str, *, parent: str | None = None, kind: str = "personal",
    dataset_from: int = 1,
) -> EventEnvelope:
    return revision_event(
        tenant,
        user,
        EventType.REVISION_TRAINED,
        RevisionTrained(
            revision_id=rid,
            kind=kind,
            parent_revision_id=parent,
            base_model_id="smollm2-135m",
            base_digest="b" * 64,
            adapter_digest=f"digest-{rid}",
            adapter_bytes=1234,
            rank=8,
            alpha=16.0,
            target_modules=["q_proj", "v_proj"],
            hyperparameters={"lr": 1e-4},
            seed=7,
            dataset_from=dataset_from,
            dataset_to=10,
            dataset_digest="d" * 64,
            heldout_positions=[3, 9],
            code_version="test",
            trigger="test",
            train_seconds=1.5,
        ),
    )


def evaluated(tenant: str, user: str, rid: str, loss: float = 1.0) -> EventEnvelope:
    return revision_event(
        tenant,
        user,
        EventType.REVISION_EVALUATED,
        RevisionEvaluated(
            revision_id=rid,
            metrics={"heldout_loss": loss},
            baseline_metrics={"heldout_loss": 2.0},
        ),
    )


def promoted(tenant: str, user: str, rid: str, previous: str | None = None) -> EventEnvelope:
    return revision_event(
        tenant,
        user,
        EventType.REVISION_PROMOTED,
        RevisionPromoted(
            revision_id=rid,
            adapter_digest=f"digest-{rid}",
            previous_revision_id=previous,
            reasons=["beats baseline"],
        ),
    )


def rejected(tenant: str, user: str, rid: str) -> EventEnvelope:
    return revision_event(
        tenant,
        user,
        EventType.REVISION_REJECTED,
        RevisionRejected(
            revision_id=rid,
            reasons=["worse than baseline"],
        ),
    )


def rolled_back(tenant: str, user: str, frm: str | None, to: str | None) -> EventEnvelope:
    return revision_event(
        tenant,
        user,
        EventType.REVISION_ROLLED_BACK,
        RevisionRolledBack(
            from_revision_id=frm,
            to_revision_id=to,
            to_adapter_digest=f"digest-{to}" if to else None,
            reason="test",
            actor="admin",
        ),
    )


def superseded_by_prior(tenant: str, user: str, rid: str, prior: str) -> EventEnvelope:
    return revision_event(
        tenant,
        user,
        EventType.REVISION_SUPERSEDED_BY_PRIOR,
        RevisionSupersededByPrior(
            revision_id=rid,
            prior_revision_id=prior,
            head_nll=2.5,
            prior_nll=2.25,
            heldout_positions=[3, 9],
            actor="gate:prior-refresh",
            reason="prior beats head",
        ),
    )


def new_id() -> uuid.UUID:
    return uuid.uuid4()
