"""Projections of the log: users, the revision catalog and the served heads.

`apply_event` is the single definition of what an event does to them. It is
deterministic and does no I/O: it reads and writes a `ProjectionState` (a set of rows in
memory). The PostgreSQL store loads the rows an append touches, applies, and writes
back the changed ones in the append's transaction; the memory store keeps the whole
state; `rebuild_projections` replays the log into an empty state. So live, in-memory and
rebuilt projections cannot disagree about the rules.

Revision state machine (RevisionState):
    trained -> evaluated -> promoted | rejected       (rejected also straight from trained)
    promoted -> superseded (another revision promoted, or a refreshed prior beat it: the
                            stream then has no head and serves the prior)
             | rolled_back (head moved away)
    superseded | rolled_back -> promoted               (rollback to it / rolling forward)
    any -> forgotten                                   (user forgotten; final)
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Final

from pydantic import ValidationError

from tessera.events.projection_rows import (
    HeadRow,
    ProjectionError,
    ProjectionState,
    RevisionRow,
    StreamKey,
    UserRow,
)
from tessera.events.records import StoredEvent
from tessera.schemas.events import INTERACTION_TYPES, PRIOR_USER_ID, RevisionState
from tessera.schemas.revisions import (
    REVISION_PAYLOADS,
    RevisionEvaluated,
    RevisionPromoted,
    RevisionRejected,
    RevisionRolledBack,
    RevisionSupersededByPrior,
    RevisionTrained,
    UserForgotten,
)

__all__ = [
    "ROLLBACK_TARGET_STATES", "HeadRow", "ProjectionError", "ProjectionState", "RevisionRow",
    "StreamKey", "UserRow", "apply_event", "check_rollback", "needs_revisions",
]

# States a rollback may return to: once served and not erased or refused.
ROLLBACK_TARGET_STATES: Final = frozenset(
    {RevisionState.PROMOTED, RevisionState.SUPERSEDED, RevisionState.ROLLED_BACK}
)


def needs_revisions(event_type: str) -> bool:
    """Whether applying this event type reads the stream's revisions and head."""
    return event_type in REVISION_PAYLOADS


def apply_event(state: ProjectionState, stored: StoredEvent) -> None:
    """Apply one event to `state`. Events must come in position order. The state must hold
    the stream's user row, and, for revision and forget events, all the stream's revisions
    and its head (see `needs_revisions`)."""
    env = stored.envelope
    key: StreamKey = (env.tenant_id, env.user_id)
    etype = env.event_type
    if etype in INTERACTION_TYPES:
        _apply_interaction(state, key, stored)
        return
    payload_model = REVISION_PAYLOADS.get(etype)
    if payload_model is None:
        return  # an event kind projections do not follow
    try:
        payload = payload_model.model_validate(env.data)
    except ValidationError as exc:
        raise ProjectionError(
            f"event {env.event_id} ({etype}) has an invalid payload: {exc}"
        ) from exc
    if isinstance(payload, RevisionTrained):
        _apply_trained(state, key, stored, payload)
    elif isinstance(payload, RevisionEvaluated):
        _apply_evaluated(state, key, stored, payload)
    elif isinstance(payload, RevisionPromoted):
        _apply_promoted(state, key, stored, payload)
    elif isinstance(payload, RevisionRejected):
        _apply_rejected(state, key, stored, payload)
    elif isinstance(payload, RevisionRolledBack):
        _apply_rolled_back(state, key, stored, payload)
    elif isinstance(payload, RevisionSupersededByPrior):
        _apply_superseded_by_prior(state, key, stored, payload)
    elif isinstance(payload, UserForgotten):
        _apply_forgotten(state, key, stored)


def _at(stored: StoredEvent) -> datetime:
    # recorded_at is set by the store, so the same event gives the same timestamps live
    # and on rebuild.
    env = stored.envelope
    return env.recorded_at or env.occurred_at


def _apply_interaction(state: ProjectionState, key: StreamKey, stored: StoredEvent) -> None:
    row = state.users.get(key) or UserRow(tenant_id=key[0], user_id=key[1])
    # Built directly rather than with dataclasses.replace: this runs for every interaction.
    state.users[key] = UserRow(
        tenant_id=row.tenant_id,
        user_id=row.user_id,
        interactions=row.interactions + 1,
        first_position=row.first_position if row.first_position is not None else stored.position,
        last_position=stored.position,
        last_occurred_at=stored.envelope.occurred_at,
        forgotten_at=row.forgotten_at,
        forgotten_position=row.forgotten_position,
    )
    state.dirty_users.add(key)


def _set_revision(state: ProjectionState, row: RevisionRow) -> None:
    state.revisions[row.revision_id] = row
    state.dirty_revisions.add(row.revision_id)


def _revision_in_stream(
    state: ProjectionState, key: StreamKey, revision_id: str, stored: StoredEvent
) -> RevisionRow:
    row = state.revisions.get(revision_id)
    if row is None or (row.tenant_id, row.user_id) != key:
        raise ProjectionError(
            f"event {stored.envelope.event_id} ({stored.envelope.event_type}) names revision "
            f"{revision_id!r}, which is not a revision of {key[0]}/{key[1]}"
        )
    return row


def _require_state(row: RevisionRow, allowed: set[str], stored: StoredEvent) -> None:
    if row.state not in allowed:
        raise ProjectionError(
            f"event {stored.envelope.event_id} ({stored.envelope.event_type}): revision "
            f"{row.revision_id!r} is {row.state}, expected one of {sorted(allowed)}"
        )


def _apply_trained(
    state: ProjectionState, key: StreamKey, stored: StoredEvent, p: RevisionTrained
) -> None:
    if p.revision_id in state.revisions:
        raise ProjectionError(f"revision {p.revision_id!r} was already trained")
    if (p.kind == "prior") != (key[1] == PRIOR_USER_ID):
        raise ProjectionError(
            f"revision {p.revision_id!r}: kind {p.kind!r} does not match stream {key[1]!r} "
            f"(prior revisions live in stream {PRIOR_USER_ID!r})"
        )
    at = _at(stored)
    _set_revision(
        state,
        RevisionRow(
            revision_id=p.revision_id,
            tenant_id=key[0],
            user_id=key[1],
            kind=p.kind,
            parent_revision_id=p.parent_revision_id,
            state=RevisionState.TRAINED,
            base_model_id=p.base_model_id,
            base_digest=p.base_digest,
            adapter_digest=p.adapter_digest,
            dataset_from=p.dataset_from,
            dataset_to=p.dataset_to,
            dataset_digest=p.dataset_digest,
            metrics={},
            baseline_revision_id=None,
            baseline_metrics={},
            reasons=[],
            provenance=p.model_dump(mode="json"),
            trained_at=at,
            evaluated_at=None,
            decided_at=None,
            updated_at=at,
            trained_position=stored.position,
            position=stored.position,
        ),
    )


def _apply_evaluated(
    state: ProjectionState, key: StreamKey, stored: StoredEvent, p: RevisionEvaluated
) -> None:
    row = _revision_in_stream(state, key, p.revision_id, stored)
    _require_state(row, {RevisionState.TRAINED, RevisionState.EVALUATED}, stored)
    at = _at(stored)
    _set_revision(
        state,
        replace(
            row,
            state=RevisionState.EVALUATED,
            metrics=dict(p.metrics),
            baseline_revision_id=p.baseline_revision_id,
            baseline_metrics=dict(p.baseline_metrics),
            evaluated_at=at,
            updated_at=at,
            position=stored.position,
        ),
    )


def _set_head(
    state: ProjectionState, key: StreamKey, row: RevisionRow, stored: StoredEvent
) -> None:
    state.heads[key] = HeadRow(
        tenant_id=key[0],
        user_id=key[1],
        revision_id=row.revision_id,
        adapter_digest=row.adapter_digest,
        position=stored.position,
        updated_at=_at(stored),
    )
    state.dirty_heads.add(key)


def _clear_head(state: ProjectionState, key: StreamKey) -> None:
    state.heads.pop(key, None)
    state.dirty_heads.add(key)


def _apply_promoted(
    state: ProjectionState, key: StreamKey, stored: StoredEvent, p: RevisionPromoted
) -> None:
    row = _revision_in_stream(state, key, p.revision_id, stored)
    _require_state(row, {RevisionState.EVALUATED}, stored)
    if p.adapter_digest != row.adapter_digest:
        raise ProjectionError(
            f"promotion of {p.revision_id!r} names adapter {p.adapter_digest}, "
            f"but the revision was trained as {row.adapter_digest}"
        )
    at = _at(stored)
    head = state.heads.get(key)
    if head is not None and head.revision_id != row.revision_id:
        previous = state.revisions[head.revision_id]
        _set_revision(
            state,
            replace(
                previous, state=RevisionState.SUPERSEDED, updated_at=at, position=stored.position
            ),
        )
    promoted = replace(
        row,
        state=RevisionState.PROMOTED,
        reasons=list(p.reasons),
        decided_at=at,
        updated_at=at,
        position=stored.position,
    )
    _set_revision(state, promoted)
    _set_head(state, key, promoted, stored)


def _apply_rejected(
    state: ProjectionState, key: StreamKey, stored: StoredEvent, p: RevisionRejected
) -> None:
    row = _revision_in_stream(state, key, p.revision_id, stored)
    _require_state(row, {RevisionState.TRAINED, RevisionState.EVALUATED}, stored)
    at = _at(stored)
    _set_revision(
        state,
        replace(
            row,
            state=RevisionState.REJECTED,
            reasons=list(p.reasons),
            decided_at=at,
            updated_at=at,
            position=stored.position,
        ),
    )


def check_rollback(state: ProjectionState, key: StreamKey, to_revision_id: str | None) -> None:
    """Raise ProjectionError when rolling the stream back to `to_revision_id` is not
    allowed: only a revision of this stream that was once served (promoted, superseded
    or rolled back) qualifies; rejected and forgotten revisions never do."""
    if to_revision_id is None:
        return
    row = state.revisions.get(to_revision_id)
    if row is None or (row.tenant_id, row.user_id) != key:
        raise ProjectionError(
            f"cannot roll back to {to_revision_id!r}: not a revision of {key[0]}/{key[1]}"
        )
    if row.state not in ROLLBACK_TARGET_STATES:
        raise ProjectionError(
            f"cannot roll back to {to_revision_id!r}: it is {row.state}; only a revision "
            f"that was once served (promoted, superseded or rolled back) can be restored"
        )


def _apply_rolled_back(
    state: ProjectionState, key: StreamKey, stored: StoredEvent, p: RevisionRolledBack
) -> None:
    head = state.heads.get(key)
    current = head.revision_id if head else None
    if p.from_revision_id != current:
        raise ProjectionError(
            f"rollback from {p.from_revision_id!r}, but {key[0]}/{key[1]} is serving {current!r}"
        )
    check_rollback(state, key, p.to_revision_id)
    at = _at(stored)
    if current is not None and current != p.to_revision_id:
        _set_revision(
            state,
            replace(
                state.revisions[current],
                state=RevisionState.ROLLED_BACK,
                updated_at=at,
                position=stored.position,
            ),
        )
    if p.to_revision_id is None:
        _clear_head(state, key)
        return
    target = state.revisions[p.to_revision_id]
    if p.to_adapter_digest is not None and p.to_adapter_digest != target.adapter_digest:
        raise ProjectionError(
            f"rollback to {target.revision_id!r} names adapter {p.to_adapter_digest}, "
            f"but the revision holds {target.adapter_digest}"
        )
    restored = replace(
        target, state=RevisionState.PROMOTED, updated_at=at, position=stored.position
    )
    _set_revision(state, restored)
    _set_head(state, key, restored, stored)


def _apply_superseded_by_prior(
    state: ProjectionState, key: StreamKey, stored: StoredEvent, p: RevisionSupersededByPrior
) -> None:
    # Only the head being served can be set aside; the stream then has no head, so
    # `served_revision` falls back to the tenant prior (no second rule to keep in step).
    head = state.heads.get(key)
    if head is None or head.revision_id != p.revision_id:
        raise ProjectionError(
            f"prior {p.prior_revision_id!r} supersedes {p.revision_id!r}, but {key[0]}/{key[1]} "
            f"is serving {head.revision_id if head else None!r}"
        )
    row = _revision_in_stream(state, key, p.revision_id, stored)
    _set_revision(state, replace(row, state=RevisionState.SUPERSEDED, updated_at=_at(stored),
                                 position=stored.position))
    _clear_head(state, key)


def _apply_forgotten(state: ProjectionState, key: StreamKey, stored: StoredEvent) -> None:
    at = _at(stored)
    for row in state.revisions_of(*key):
        if row.state != RevisionState.FORGOTTEN:
            _set_revision(
                state,
                replace(
                    row, state=RevisionState.FORGOTTEN, updated_at=at, position=stored.position
                ),
            )
    _clear_head(state, key)
    state.users[key] = UserRow(
        tenant_id=key[0], user_id=key[1], forgotten_at=at, forgotten_position=stored.position
    )
    state.dirty_users.add(key)
