"""The in-memory event store: the same contract as PostgreSQL, for tests and tools.

Everything happens under one lock, which plays the part of the PostgreSQL store's
transaction plus table lock: an append (events, tracking, projections) is all or nothing.
"""

from __future__ import annotations

import copy
import threading
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from tessera.events import forget_guard, forget_scope
from tessera.events.projections import (
    HeadRow,
    ProjectionState,
    RevisionRow,
    UserRow,
    apply_event,
)
from tessera.events.store import (
    EventStore,
    NotFoundError,
    RejectedInput,
    RequestRecord,
    StoredEvent,
    Tracking,
    check_storable,
    storable_rejected,
)
from tessera.schemas.events import (
    INTERACTION_TYPES,
    PRIOR_USER_ID,
    EventEnvelope,
    EventType,
    utcnow,
)
from tessera.schemas.revisions import UserForgotten


def _tracking_key(t: Tracking) -> tuple[str, str, int]:
    return (t.group, t.topic, t.partition)


def _is_replay(stored: dict[tuple[str, str, int], int], tracking: Sequence[Tracking]) -> bool:
    return any(
        (old := stored.get(_tracking_key(t))) is not None and t.offset <= old for t in tracking
    )


class MemoryEventStore:
    """EventStore kept in process memory."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._events: list[StoredEvent] = []
        self._ids: set[tuple[str, uuid.UUID]] = set()  # (tenant, event id): unique per tenant
        self._versions: dict[tuple[str, str], int] = {}
        self._tracking: dict[tuple[str, str, int], int] = {}
        self._rejected: list[RejectedInput] = []
        self._requests: dict[str, RequestRecord] = {}
        self._state = ProjectionState()

    # --- the log ---

    def append(
        self, events: Sequence[EventEnvelope], *, tracking: Sequence[Tracking] = ()
    ) -> list[StoredEvent]:
        with self._lock:
            if _is_replay(self._tracking, tracking):
                return []
            check_storable(events)
            # Apply to a copy first: a projection error must leave nothing behind. Rows are
            # frozen, so copying the three dicts is enough.
            state = ProjectionState(
                users=dict(self._state.users),
                revisions=dict(self._state.revisions),
                heads=dict(self._state.heads),
            )
            versions = dict(self._versions)
            new: list[StoredEvent] = []
            seen: set[tuple[str, uuid.UUID]] = set()
            now = utcnow()
            for env in events:
                id_key = (env.tenant_id, env.event_id)
                if id_key in self._ids or id_key in seen:
                    continue
                seen.add(id_key)
                key = (env.tenant_id, env.user_id)
                versions[key] = versions.get(key, 0) + 1
                stored = StoredEvent(
                    position=len(self._events) + len(new) + 1,
                    stream_version=versions[key],
                    envelope=env.model_copy(update={"recorded_at": now}),
                )
                apply_event(state, stored)
                new.append(stored)
            forgotten = {
                key: row.forgotten_position
                for key, row in self._state.users.items()
                if row.forgotten_position is not None
            }
            forget_guard.check(forget_guard.claims(ev.envelope for ev in new), forgotten)
            state.clear_dirty()
            self._state = state
            self._versions = versions
            self._events.extend(new)
            self._ids |= seen
            for t in tracking:
                self._tracking[_tracking_key(t)] = t.offset
            return new

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
        types = set(event_types) if event_types is not None else None
        out: list[StoredEvent] = []
        with self._lock:
            for ev in self._events[after:]:  # position p sits at index p - 1
                if upto is not None and ev.position > upto:
                    break
                env = ev.envelope
                if tenant_id is not None and env.tenant_id != tenant_id:
                    continue
                if user_id is not None and env.user_id != user_id:
                    continue
                if types is not None and env.event_type not in types:
                    continue
                out.append(ev)
                if limit is not None and len(out) >= limit:
                    break
        return out

    def max_tracking_offset(self, group: str, topic: str, partition: int) -> int | None:
        with self._lock:
            return self._tracking.get((group, topic, partition))

    def tracking_rows(self) -> list[Tracking]:
        with self._lock:
            return [Tracking(g, t, p, o) for (g, t, p), o in sorted(self._tracking.items())]

    def head_position(self) -> int:
        with self._lock:
            return len(self._events)

    def record_rejected(self, rejected: Sequence[RejectedInput]) -> None:
        with self._lock:
            self._rejected.extend(storable_rejected(r) for r in rejected)

    def read_rejected(self, *, limit: int | None = None) -> list[RejectedInput]:
        with self._lock:
            return list(self._rejected[:limit])

    # --- projections ---

    def get_user(self, tenant_id: str, user_id: str) -> UserRow | None:
        with self._lock:
            return self._state.users.get((tenant_id, user_id))

    def list_users(self, tenant_id: str) -> list[UserRow]:
        with self._lock:
            return [u for k, u in sorted(self._state.users.items()) if k[0] == tenant_id]

    def get_head(self, tenant_id: str, user_id: str) -> HeadRow | None:
        with self._lock:
            return self._state.heads.get((tenant_id, user_id))

    def get_revision(self, revision_id: str) -> RevisionRow | None:
        with self._lock:
            return self._state.revisions.get(revision_id)

    def list_revisions(self, tenant_id: str, user_id: str) -> list[RevisionRow]:
        with self._lock:
            return self._state.revisions_of(tenant_id, user_id)

    def projection_state(self) -> ProjectionState:
        with self._lock:
            return copy.deepcopy(self._state)

    # --- forgetting ---

    def forget_user(self, tenant_id: str, user_id: str, *, actor: str, reason: str) -> list[str]:
        with self._lock:
            kept = [r for r in self._rejected if not _rejected_is_about(r, tenant_id, user_id)]
            if (tenant_id, user_id) not in self._versions and len(kept) == len(self._rejected):
                raise NotFoundError(f"no events for user {tenant_id}/{user_id}: nothing to forget")
            self._rejected = kept
            revisions = self._state.revisions_of(tenant_id, user_id)
            priors = [
                r for r in self._state.revisions_of(tenant_id, PRIOR_USER_ID)
                if forget_scope.trained_on(r, user_id)
            ]
            tombstone = EventEnvelope(
                event_type=EventType.USER_FORGOTTEN,
                tenant_id=tenant_id,
                user_id=user_id,
                occurred_at=utcnow(),
                data=UserForgotten(
                    actor=actor,
                    reason=reason,
                    forgotten_revision_ids=[r.revision_id for r in revisions],
                    retrain_prior_revision_ids=forget_scope.priors_to_retrain(priors),
                ).model_dump(mode="json"),
            )
            self.append([tombstone])
            self._events = [_redacted(ev, tenant_id, user_id) for ev in self._events]
            self._redact_reasons(tenant_id, {r.revision_id for r in [*revisions, *priors]})
            self._requests = {
                k: r
                for k, r in self._requests.items()
                if (r.tenant_id, r.user_id) != (tenant_id, user_id)
            }
            return sorted({r.adapter_digest for r in revisions})

    def _redact_reasons(self, tenant_id: str, revision_ids: set[str]) -> None:
        """Twin of forget_scope.redact_reasons_in_transaction (in events and catalog)."""
        reasons = list(forget_scope.REDACTED_REASONS)
        for i, ev in enumerate(self._events):
            env = ev.envelope
            if (env.tenant_id == tenant_id and env.event_type in forget_scope.REASON_EVENT_TYPES
                    and env.data.get("revision_id") in revision_ids and env.data.get("reasons")):
                data = {**env.data, "reasons": reasons}
                self._events[i] = replace(ev, envelope=env.model_copy(update={"data": data}))
        for rid in revision_ids:
            row = self._state.revisions.get(rid)
            if row is not None and row.tenant_id == tenant_id and row.reasons:
                self._state.revisions[rid] = replace(row, reasons=list(reasons))

    def purge_erased(self, *, full: bool = True) -> None:
        """Nothing to do: erased content is not kept anywhere in memory."""

    def last_forgotten_position(self, tenant_id: str, user_id: str) -> int:
        with self._lock:
            row = self._state.users.get((tenant_id, user_id))
            return (row.forgotten_position or 0) if row else 0

    # --- request audit ---

    def record_requests(self, records: Sequence[RequestRecord]) -> None:
        with self._lock:
            for r in records:
                self._requests.setdefault(r.request_id, r)

    def get_request(self, request_id: str) -> RequestRecord | None:
        with self._lock:
            return self._requests.get(request_id)


def _redacted(ev: StoredEvent, tenant_id: str, user_id: str) -> StoredEvent:
    env = ev.envelope
    if (env.tenant_id, env.user_id) != (
        tenant_id,
        user_id,
    ) or env.event_type not in INTERACTION_TYPES:
        return ev
    return replace(ev, envelope=env.model_copy(update={"data": {}}))


def _rejected_is_about(r: RejectedInput, tenant_id: str, user_id: str) -> bool:
    """Mirror of the PostgreSQL store's rule: rows naming the user, or (when the tenant is
    unknown or the same) whose raw payload mentions the user id as a JSON string."""
    if (r.tenant_id, r.user_id) == (tenant_id, user_id):
        return True
    return r.tenant_id in (None, tenant_id) and f'"{user_id}"' in r.payload


if TYPE_CHECKING:  # mypy proves the class satisfies the EventStore protocol
    _conforms: EventStore = MemoryEventStore()
