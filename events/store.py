"""The event store contract: an append-only log with per-user streams and tracking.

Two implementations obey it (PostgreSQL and in-memory); one contract test suite runs
against both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Literal, Protocol

from tessera.schemas.events import EventEnvelope

if TYPE_CHECKING:
    from tessera.events.projections import HeadRow, ProjectionState, RevisionRow, UserRow


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
    # Who the input was about, when it said so: forgetting a user deletes these rows too.
    tenant_id: str | None = None
    user_id: str | None = None


ServedSource = Literal["personal", "prior", "base"]


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """Which adapter answered one inference request (the request audit)."""

    request_id: str
    tenant_id: str
    user_id: str
    revision_id: str | None  # None when the base model answered
    adapter_digest: str | None
    source: ServedSource
    at: datetime


# Longest rejected payload kept; longer ones are cut (with a marker) so a flood of huge
# junk cannot fill the database.
MAX_REJECTED_PAYLOAD_CHARS = 64_000


# An escaped NUL in JSON text: "\\u0000" after an even number of backslashes. PostgreSQL's
# jsonb refuses it, so both stores refuse it (with the event id) before writing anything.
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def check_storable(events: Sequence[EventEnvelope]) -> None:
    """Raise UnstorableEventError naming the first event whose data or ids hold a NUL."""
    for env in events:
        if "\x00" in env.user_id + env.event_type or _JSON_NUL.search(
            json.dumps(env.data, default=str)
        ):
            raise UnstorableEventError(
                f"event {env.event_id}: contains a NUL character (\\u0000), "
                "which PostgreSQL cannot store"
            )


def truncate_payload(payload: str) -> str:
    """Rejected input made storable: NUL characters (which PostgreSQL text refuses, and
    junk input may well hold) shown as U+FFFD, and cut to MAX_REJECTED_PAYLOAD_CHARS."""
    payload = payload.replace("\x00", "\ufffd")
    if len(payload) <= MAX_REJECTED_PAYLOAD_CHARS:
        return payload
    return payload[:MAX_REJECTED_PAYLOAD_CHARS] + f"...[truncated {len(payload)} chars]"


def storable_rejected(rejected: RejectedInput) -> RejectedInput:
    """The row both stores keep: payload cut and NUL-free, reason NUL-free."""
    return replace(
        rejected,
        payload=truncate_payload(rejected.payload),
        reason=rejected.reason.replace("\x00", "\ufffd"),
    )


class EventStoreError(Exception):
    """Base of the store's translated errors."""


class TransientStoreError(EventStoreError):
    """The database is unreachable or asked us to retry; the operation may be repeated."""


class UnstorableEventError(EventStoreError):
    """An event holds a value the log cannot store (e.g. a NUL character in its text).
    Raised before anything is written; the caller should reject that event."""


class NotFoundError(EventStoreError):
    """The tenant, user or revision named does not exist."""


class EventStore(Protocol):
    def append(
        self, events: Sequence[EventEnvelope], *, tracking: Sequence[Tracking] = ()
    ) -> list[StoredEvent]:
        """Append in order, atomically with `tracking`. Events whose `event_id` their
        tenant already has in the log are skipped (idempotent per tenant: the same id in
        another tenant is another event); returns only the newly stored ones. If a
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

    def read_rejected(self, *, limit: int | None = None) -> list[RejectedInput]:
        """Rejected inputs, oldest first."""
        ...

    # --- projections (see events/projections.py) ---

    def get_user(self, tenant_id: str, user_id: str) -> UserRow | None: ...

    def list_users(self, tenant_id: str) -> list[UserRow]:
        """The tenant's users that have interactions or were forgotten, by user id."""
        ...

    def get_head(self, tenant_id: str, user_id: str) -> HeadRow | None:
        """The revision the stream serves now (`user_id` may be PRIOR_USER_ID)."""
        ...

    def get_revision(self, revision_id: str) -> RevisionRow | None: ...

    def list_revisions(self, tenant_id: str, user_id: str) -> list[RevisionRow]:
        """The stream's revisions in training order."""
        ...

    def projection_state(self) -> ProjectionState:
        """Every projection row (for audits of the whole catalog and for tests)."""
        ...

    # --- forgetting ---

    def forget_user(self, tenant_id: str, user_id: str, *, actor: str, reason: str) -> list[str]:
        """In one transaction: erase the user's interaction content (event data, rejected
        inputs, request log), redact the gate reasons of their revisions and of the priors
        trained on them (events/forget_scope.py), mark their revisions forgotten, clear
        their head and append a USER_FORGOTTEN tombstone naming the priors to retrain.
        Returns the adapter digests of their revisions, which the caller deletes from the
        adapter store. A user with no events but refused input is forgotten too;
        NotFoundError when neither exists."""
        ...

    def purge_erased(self, *, full: bool = True) -> None:
        """Physically reclaim what forgets erased (PostgreSQL: VACUUM [FULL]); a no-op
        where erased content leaves no copy behind (memory)."""
        ...

    def last_forgotten_position(self, tenant_id: str, user_id: str) -> int:
        """Position of the user's latest tombstone (0 if never forgotten): a fresh history
        starts after it, so datasets use only events with a greater position."""
        ...

    # --- request audit ---

    def record_requests(self, records: Sequence[RequestRecord]) -> None:
        """Store request -> revision rows; a request id already stored is kept as is."""
        ...

    def get_request(self, request_id: str) -> RequestRecord | None: ...
