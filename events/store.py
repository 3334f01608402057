"""The event store contract: an append-only log with per-user streams and tracking.

Two implementations obey it (PostgreSQL and in-memory); one contract test suite runs
against both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from tessera.schemas.events import EventEnvelope


@dataclass(frozen=True, slots=True)
class Tracking:
    """A consumer's position: the last Kafka offset whose effects are in the log."""

    group: str
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as the log holds it: global position and per-user stream version added."""

    position: int
    stream_version: int
    envelope: EventEnvelope


@dataclass(frozen=True, slots=True)
class RejectedInput:
    """Input that could not become an event, kept with the reason (never lost silently)."""

    source: str  # e.g. "kafka:tessera.interactions/3@1042" or "http"
    reason: str
    payload: str  # raw text as received (truncated by the store if huge)
    received_at: datetime


class EventStoreError(Exception):
    """Base of the store's translated errors."""


class TransientStoreError(EventStoreError):
    """The database is unreachable or asked us to retry; the operation may be repeated."""


class EventStore(Protocol):
    def append(
        self, events: Sequence[EventEnvelope], *, tracking: Sequence[Tracking] = ()
    ) -> list[StoredEvent]:
        """Append in order, atomically with `tracking`. Events whose `event_id` is already
        in the log are skipped (idempotent); returns only the newly stored ones. If a
        tracking row is not newer than the stored one, the whole call is a replay and
        stores nothing."""
        ...

    def read(
        self,
        *,
        after: int = 0,
        upto: int | None = None,
        tenant_id: str | None = None,
        user_id: str | None = None,
        event_types: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[StoredEvent]:
        """Events with `after < position <= upto`, in position order."""
        ...

    def max_tracking_offset(self, group: str, topic: str, partition: int) -> int | None: ...

    def head_position(self) -> int:
        """The highest position in the log (0 when empty)."""
        ...

    def record_rejected(self, rejected: Sequence[RejectedInput]) -> None: ...
