"""Answers of the training API (HTTP services/routes/revisions_api.py, gRPC
tessera.v1.Training): a user's revisions with their state, and a request's receipt."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class RevisionSummary(BaseModel):
    revision_id: str
    tenant_id: str
    user_id: str
    kind: str
    state: str  # trained | evaluated | promoted | rejected | superseded | rolled_back | ...
    served: bool
    parent_revision_id: str | None
    trigger: str
    origin: dict[str, Any] | None  # {"kind": "import", "sha256": ...} for imports
    adapter_digest: str
    dataset_from: int
    dataset_to: int
    metrics: dict[str, float]
    baseline_revision_id: str | None
    baseline_metrics: dict[str, float]
    reasons: list[str]
    trained_at: str
    decided_at: str | None


class RevisionList(BaseModel):
    tenant_id: str
    user_id: str
    served_revision_id: str | None
    revisions: list[RevisionSummary]


class Requested(BaseModel):
    tenant_id: str
    user_id: str
    up_to_position: int
    # The id the candidate gets (ids are derived, so known ahead); a request that finds
    # nothing new to learn is skipped and no revision of this id appears.
    revision_id: str | None
    follow: str  # where the revision will be listed
