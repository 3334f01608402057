"""The event store contract: an append-only log with per-user streams and tracking.

Two implementations obey it (PostgreSQL and in-memory); one contract test suite runs
against both. The records and errors live in `records` (so the projections need not
import this module) and are re-exported here, where most callers import them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from tessera.events.projections import HeadRow, ProjectionState, RevisionRow, UserRow
from tessera.events.records import (
    MAX_REJECTED_PAYLOAD_CHARS,
    EventStoreError,
    NotFoundError,
    RejectedInput,
    RequestRecord,
    ServedSource,
    StoredEvent,
    Tracking,
    TransientStoreError,
    UnstorableEventError,
    check_storable,
    storable_rejected,
    truncate_payload,
)
from tessera.schemas.events import EventEnvelope


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

    def tracking_rows(self) -> list[Tracking]:
        """Every consumer position, by group, topic and partition."""
        ...

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


__all__ = [
    "MAX_REJECTED_PAYLOAD_CHARS",
    "EventStore",
    "EventStoreError",
    "NotFoundError",
    "RejectedInput",
    "RequestRecord",
    "ServedSource",
    "StoredEvent",
    "Tracking",
    "TransientStoreError",
    "UnstorableEventError",
    "check_storable",
    "storable_rejected",
    "truncate_payload",
]
