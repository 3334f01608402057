"""Payloads of the events Tessera itself appends about adapter revisions and users.

A revision's events live in its owner's stream: a personal revision in the user's
stream, a tenant prior's in the stream `PRIOR_USER_ID` ("~prior"). The projection of
these events (events/projections.py) is the revision catalog and the served heads.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from tessera.schemas.events import EventType

RevisionKind = Literal["personal", "prior"]
Sha256 = str  # lowercase hex; not constrained further so that tests may use short fakes


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RevisionTrained(_Payload):
    """A candidate adapter was trained: everything needed to reproduce it."""

    revision_id: str = Field(min_length=1, max_length=128)
    kind: RevisionKind
    parent_revision_id: str | None = None
    base_model_id: str = Field(min_length=1)
    base_digest: Sha256 = Field(min_length=1)
    adapter_digest: Sha256 = Field(min_length=1, description="sha256 of the safetensors file")
    adapter_bytes: int = Field(ge=0)
    rank: int = Field(ge=1)
    alpha: float = Field(gt=0)
    target_modules: list[str] = Field(min_length=1)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    seed: int
    dataset_from: int = Field(ge=0, description="First event position of the dataset")
    dataset_to: int = Field(ge=0, description="Last event position of the dataset")
    dataset_digest: Sha256 = Field(min_length=1)
    heldout_positions: list[int] = Field(default_factory=list)
    code_version: str = Field(min_length=1)
    trigger: str = Field(min_length=1, description="What asked for it: nightly, threshold, cli:...")
    train_seconds: float = Field(ge=0)


class RevisionEvaluated(_Payload):
    """The candidate was scored on held-out data, next to what the user is served now."""

    revision_id: str = Field(min_length=1)
    metrics: dict[str, float]
    baseline_revision_id: str | None = None
    baseline_metrics: dict[str, float] = Field(default_factory=dict)


class RevisionPromoted(_Payload):
    """The gate passed: this revision is now served (supersedes the previous head)."""

    revision_id: str = Field(min_length=1)
    adapter_digest: Sha256 = Field(min_length=1)
    previous_revision_id: str | None = None
    reasons: list[str] = Field(default_factory=list)


class RevisionRejected(_Payload):
    """The gate refused the candidate; reasons say why."""

    revision_id: str = Field(min_length=1)
    reasons: list[str] = Field(min_length=1)


class RevisionRolledBack(_Payload):
    """The served head was switched back (or forward) by a person, or cleared."""

    from_revision_id: str | None = None
    to_revision_id: str | None = None
    to_adapter_digest: Sha256 | None = None
    reason: str = Field(min_length=1)
    actor: str = Field(min_length=1)


class RevisionSupersededByPrior(_Payload):
    """A refreshed tenant prior beat the user's personal head on the user's held-out
    examples: the head is set aside and the user is served the prior until a candidate
    rebased on it wins (ARCHITECTURE.md, "never worse than the shared model")."""

    revision_id: str = Field(min_length=1, description="The personal head set aside")
    prior_revision_id: str = Field(min_length=1, description="The prior now served instead")
    head_nll: float = Field(description="The head's mean target NLL on the held-out examples")
    prior_nll: float = Field(description="The prior's mean target NLL on the same examples")
    heldout_positions: list[int] = Field(min_length=1)
    actor: str = Field(min_length=1)
    reason: str = Field(min_length=1)


class UserForgotten(_Payload):
    """Tombstone: the user's content and adapters were erased. Holds no content."""

    actor: str = Field(min_length=1)
    reason: str = Field(min_length=1)
    forgotten_revision_ids: list[str] = Field(default_factory=list)
    retrain_prior_revision_ids: list[str] = Field(
        default_factory=list,
        description="The tenant's priors trained on this user's events that may still be "
        "served: the next nightly run trains a new prior without them first.",
    )


REVISION_PAYLOADS: Final[dict[str, type[_Payload]]] = {
    EventType.REVISION_TRAINED: RevisionTrained,
    EventType.REVISION_EVALUATED: RevisionEvaluated,
    EventType.REVISION_PROMOTED: RevisionPromoted,
    EventType.REVISION_REJECTED: RevisionRejected,
    EventType.REVISION_ROLLED_BACK: RevisionRolledBack,
    EventType.REVISION_SUPERSEDED_BY_PRIOR: RevisionSupersededByPrior,
    EventType.USER_FORGOTTEN: UserForgotten,
}
