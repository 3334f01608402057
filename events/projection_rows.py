"""The projections' rows (users, revisions, heads) and the in-memory set of them that
`events.projections.apply_event` reads and writes; the stores persist these rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tessera.events.records import EventStoreError

StreamKey = tuple[str, str]  # (tenant_id, user_id)


class ProjectionError(EventStoreError):
    """An event contradicts the projections (unknown revision, illegal transition, bad
    payload). The append that carried it is refused as a whole."""


@dataclass(frozen=True, slots=True)
class UserRow:
    tenant_id: str
    user_id: str
    interactions: int = 0  # since the last forget
    first_position: int | None = None  # first interaction since the last forget
    last_position: int | None = None
    last_occurred_at: datetime | None = None
    forgotten_at: datetime | None = None
    forgotten_position: int | None = None


@dataclass(frozen=True, slots=True)
class RevisionRow:
    revision_id: str
    tenant_id: str
    user_id: str
    kind: str
    parent_revision_id: str | None
    state: str
    base_model_id: str
    base_digest: str
    adapter_digest: str
    dataset_from: int
    dataset_to: int
    dataset_digest: str
    metrics: dict[str, float]
    baseline_revision_id: str | None
    baseline_metrics: dict[str, float]
    reasons: list[str]
    provenance: dict[str, Any]  # the full RevisionTrained payload
    trained_at: datetime
    evaluated_at: datetime | None
    decided_at: datetime | None
    updated_at: datetime
    trained_position: int
    position: int  # of the last event that changed the row


@dataclass(frozen=True, slots=True)
class HeadRow:
    tenant_id: str
    user_id: str
    revision_id: str
    adapter_digest: str
    position: int
    updated_at: datetime


@dataclass(slots=True)
class ProjectionState:
    """Rows in memory plus the keys changed since the last `clear_dirty()`. A key that is
    dirty but absent from `heads` is a deleted head."""

    users: dict[StreamKey, UserRow] = field(default_factory=dict)
    revisions: dict[str, RevisionRow] = field(default_factory=dict)
    heads: dict[StreamKey, HeadRow] = field(default_factory=dict)
    dirty_users: set[StreamKey] = field(default_factory=set)
    dirty_revisions: set[str] = field(default_factory=set)
    dirty_heads: set[StreamKey] = field(default_factory=set)

    def clear_dirty(self) -> None:
        self.dirty_users.clear()
        self.dirty_revisions.clear()
        self.dirty_heads.clear()

    def revisions_of(self, tenant_id: str, user_id: str) -> list[RevisionRow]:
        """The stream's revisions in training order."""
        rows = [
            r for r in self.revisions.values() if (r.tenant_id, r.user_id) == (tenant_id, user_id)
        ]
        return sorted(rows, key=lambda r: r.trained_position)

    def rows(self) -> tuple[list[UserRow], list[RevisionRow], list[HeadRow]]:
        """Every row, in a canonical order (for comparisons and bulk writes)."""
        return (
            [self.users[k] for k in sorted(self.users)],
            [self.revisions[k] for k in sorted(self.revisions)],
            [self.heads[k] for k in sorted(self.heads)],
        )
