"""The event envelope and the payloads of every event kind Tessera records.

Every event in PostgreSQL and on Kafka is an `EventEnvelope`. Interaction payloads are
what apps send; revision and user payloads are what Tessera itself appends.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

# Ids end up in Kafka keys, file names and URLs: keep them to a safe alphabet.
TenantId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
UserId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$")]

# The tenant prior lives in its own stream. "~" is outside UserId's alphabet, so no real
# user can ever collide with it.
PRIOR_USER_ID: Final = "~prior"


class EventType(StrEnum):
    EXCHANGE = "interaction.exchange"
    FEEDBACK = "interaction.feedback"
    TEXT = "interaction.text"
    REVISION_TRAINED = "revision.trained"
    REVISION_EVALUATED = "revision.evaluated"
    REVISION_PROMOTED = "revision.promoted"
    REVISION_REJECTED = "revision.rejected"
    REVISION_ROLLED_BACK = "revision.rolled_back"
    REVISION_SUPERSEDED_BY_PRIOR = "revision.superseded_by_prior"
    USER_FORGOTTEN = "user.forgotten"


INTERACTION_TYPES: Final = frozenset({EventType.EXCHANGE, EventType.FEEDBACK, EventType.TEXT})


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Turn(_Payload):
    """One earlier message of the conversation, for context."""

    role: Literal["user", "assistant", "other"]
    text: str


class ExchangeData(_Payload):
    """A prompt and the response the user accepted or wrote."""

    prompt: str = Field(min_length=1)
    response: str = Field(min_length=1)
    context: list[Turn] = Field(default_factory=list, max_length=64)


class FeedbackData(_Payload):
    """Explicit feedback on an earlier exchange: a rating and/or an edited response."""

    target_event_id: uuid.UUID
    rating: int | None = Field(None, ge=1, le=5)
    edited_response: str | None = Field(None, min_length=1)


class TextData(_Payload):
    """Free text the user authored, with what preceded it."""

    text: str = Field(min_length=1)
    context: list[Turn] = Field(default_factory=list, max_length=64)


INTERACTION_PAYLOADS: Final[dict[str, type[_Payload]]] = {
    EventType.EXCHANGE: ExchangeData,
    EventType.FEEDBACK: FeedbackData,
    EventType.TEXT: TextData,
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class EventEnvelope(BaseModel):
    """The contract every event obeys (see ARCHITECTURE.md, Contracts)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Idempotency key.")
    event_type: str = Field(min_length=1, max_length=64)
    schema_version: int = Field(1, ge=1)
    tenant_id: TenantId
    user_id: str = Field(min_length=1, max_length=128)  # UserId or PRIOR_USER_ID
    occurred_at: AwareDatetime
    recorded_at: AwareDatetime | None = None
    causation_id: uuid.UUID | None = None
    correlation_id: uuid.UUID | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @property
    def stream_key(self) -> str:
        """Kafka key: one user's events stay in one partition, in order."""
        return f"{self.tenant_id}/{self.user_id}"


class RevisionState(StrEnum):
    TRAINED = "trained"
    EVALUATED = "evaluated"
    PROMOTED = "promoted"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"
    ROLLED_BACK = "rolled_back"
    FORGOTTEN = "forgotten"
