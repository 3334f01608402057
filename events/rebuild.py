"""Rebuild the projections (users, revisions, heads) by replaying the whole log.

The same `apply_event` that maintains them live replays every event into an empty
state, which is then bulk-written. It runs in one transaction holding the events table
lock, so no append interleaves and readers see the old projections until the commit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from psycopg import sql

from tessera.events import catalog
from tessera.events.db import connect, translated
from tessera.events.pg_log import lock_events
from tessera.events.projections import ProjectionState, apply_event
from tessera.events.store import StoredEvent
from tessera.schemas.events import INTERACTION_TYPES, EventEnvelope

# Rows fetched per round trip from the server-side cursor.
FETCH_ROWS: Final = 5_000

# Interactions' data is not needed by the projections, so it is not transferred.
_REPLAY: Final = sql.SQL(
    "SELECT position, stream_version, event_id, event_type, schema_version, tenant_id, "
    "user_id, occurred_at, recorded_at, "
    "CASE WHEN event_type = ANY(%s::text[]) THEN '{}'::jsonb ELSE data END "
    "FROM events ORDER BY position"
)


@dataclass(frozen=True, slots=True)
class RebuildReport:
    events: int
    users: int
    revisions: int
    heads: int


def rebuild_projections(
    url: str, *, on_progress: Callable[[int], None] | None = None
) -> RebuildReport:
    """Truncate the projections and replay the log into them; `on_progress(n)` is called
    after every chunk of n events (for a progress bar)."""
    state = ProjectionState()
    count = 0
    with connect(url) as conn, translated("rebuild projections"), conn.transaction():
        lock_events(conn, timeout="60s")
        conn.execute("TRUNCATE users, revisions, heads")
        with conn.cursor(name="tessera_replay") as cur:
            cur.itersize = FETCH_ROWS
            cur.execute(_REPLAY, (sorted(INTERACTION_TYPES),))
            while rows := cur.fetchmany(FETCH_ROWS):
                for row in rows:
                    apply_event(state, _stored(row))
                count += len(rows)
                if on_progress is not None:
                    on_progress(len(rows))
        state.clear_dirty()
        catalog.copy_all(conn, state)
    users, revisions, heads = state.rows()
    return RebuildReport(events=count, users=len(users), revisions=len(revisions), heads=len(heads))


def _stored(row: tuple[Any, ...]) -> StoredEvent:
    (position, version, event_id, event_type, schema_version, tenant_id, user_id,
     occurred_at, recorded_at, data) = row  # fmt: skip
    # Trusted rows (validated on append): construct without re-validating.
    env = EventEnvelope.model_construct(
        event_id=event_id,
        event_type=event_type,
        schema_version=schema_version,
        tenant_id=tenant_id,
        user_id=user_id,
        occurred_at=occurred_at,
        recorded_at=recorded_at,
        data=data,
    )
    return StoredEvent(position=int(position), stream_version=int(version), envelope=env)
