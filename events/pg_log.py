"""The SQL of the log, inside a transaction the caller owns: append and forget.

An append is: table lock, replay check against `tracking`, skip of event ids their
tenant already logged, stream versions, the rows (one INSERT per batch), the projections
(`apply_event` on the touched rows) and the new tracking offsets. Forgetting appends a
tombstone the same way and erases the user's content. PostgresEventStore wraps both in
transactions, error translation and retries.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from psycopg import Cursor, sql

from tessera.events import catalog, forget_guard, forget_scope
from tessera.events.db import Connection, json_rows
from tessera.events.projections import apply_event, needs_revisions
from tessera.events.store import (
    NotFoundError,
    StoredEvent,
    Tracking,
    check_storable,
)
from tessera.schemas.events import (
    INTERACTION_TYPES,
    PRIOR_USER_ID,
    EventEnvelope,
    EventType,
    utcnow,
)
from tessera.schemas.revisions import UserForgotten

# How long an append waits for the events table lock before giving up with a transient
# error (retried by with_retry) instead of queueing forever behind a stuck writer.
LOCK_TIMEOUT: Final = "5s"

_EVENT_COLUMNS: Final = (
    "position",
    "event_id",
    "tenant_id",
    "user_id",
    "stream_version",
    "event_type",
    "schema_version",
    "occurred_at",
    "recorded_at",
    "causation_id",
    "correlation_id",
    "data",
)
_INSERT_COLUMNS: Final = tuple(c for c in _EVENT_COLUMNS if c != "recorded_at")
SELECT_EVENTS: Final = sql.SQL("SELECT {} FROM events").format(
    sql.SQL(", ").join(map(sql.Identifier, _EVENT_COLUMNS))
)
_INSERT_EVENTS: Final = sql.SQL(
    "INSERT INTO events ({cols}) SELECT {cols} "
    "FROM jsonb_populate_recordset(NULL::events, %s::jsonb)"
).format(cols=sql.SQL(", ").join(map(sql.Identifier, _INSERT_COLUMNS)))
_INTERACTION_TYPE_LIST: Final = sorted(str(t) for t in INTERACTION_TYPES)


def row_to_event(row: tuple[Any, ...]) -> StoredEvent:
    (
        position,
        event_id,
        tenant_id,
        user_id,
        version,
        event_type,
        schema_version,
        occurred_at,
        recorded_at,
        causation_id,
        correlation_id,
        data,
    ) = row
    # Rows were validated on the way in; model_construct skips re-validation, which
    # would dominate the cost of reading large ranges.
    env = EventEnvelope.model_construct(
        event_id=event_id,
        event_type=event_type,
        schema_version=schema_version,
        tenant_id=tenant_id,
        user_id=user_id,
        occurred_at=occurred_at,
        recorded_at=recorded_at,
        causation_id=causation_id,
        correlation_id=correlation_id,
        data=data,
    )
    return StoredEvent(position=position, stream_version=version, envelope=env)


def _event_row(ev: StoredEvent) -> dict[str, Any]:
    e = ev.envelope
    # Strings made here rather than in json_rows' default hook: fewer Python calls per row.
    return {
        "position": ev.position,
        "event_id": str(e.event_id),
        "tenant_id": e.tenant_id,
        "user_id": e.user_id,
        "stream_version": ev.stream_version,
        "event_type": e.event_type,
        "schema_version": e.schema_version,
        "occurred_at": e.occurred_at.isoformat(),
        # recorded_at is left out: the column default now() is the transaction time,
        # the same value the StoredEvents carry.
        "causation_id": e.causation_id,
        "correlation_id": e.correlation_id,
        "data": e.data,
    }


def lock_events(conn: Connection, *, timeout: str = LOCK_TIMEOUT) -> None:
    """Take the append lock for the rest of the transaction (waiting at most `timeout`)."""
    # Appends are serialised by an EXCLUSIVE table lock (plain readers are not blocked).
    # Without it, two transactions could take positions 10 and 11 and commit 11 first: a
    # reader tailing the log by "position > last seen" would then read 11, move past 10
    # and never see it. With the lock, positions become visible in increasing order.
    # Two statements, one round trip (allowed because there are no parameters).
    conn.execute(
        sql.SQL("SET LOCAL lock_timeout = {}; LOCK TABLE events IN EXCLUSIVE MODE").format(
            sql.Literal(timeout)
        )
    )


def _start_replay_check(conn: Connection, tracking: Sequence[Tracking]) -> Cursor:
    return conn.execute(
        "SELECT consumer_group, topic, partition_no, last_offset FROM tracking "
        "WHERE (consumer_group, topic, partition_no) IN "
        "(SELECT * FROM unnest(%s::text[], %s::text[], %s::int[]))",
        ([t.group for t in tracking], [t.topic for t in tracking], [t.partition for t in tracking]),
    )


def _is_replay(rows: list[tuple[Any, ...]], tracking: Sequence[Tracking]) -> bool:
    stored = {(g, t, p): o for g, t, p, o in rows}
    return any(
        (old := stored.get((t.group, t.topic, t.partition))) is not None and t.offset <= old
        for t in tracking
    )


def _save_tracking(conn: Connection, tracking: Sequence[Tracking]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO tracking (consumer_group, topic, partition_no, last_offset) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (consumer_group, topic, partition_no) "
            "DO UPDATE SET last_offset = EXCLUDED.last_offset, updated_at = now()",
            [(t.group, t.topic, t.partition, t.offset) for t in tracking],
        )


def _start_known_ids(conn: Connection, ids: Sequence[tuple[str, uuid.UUID]]) -> Cursor:
    # Event ids are unique per tenant (UNIQUE (tenant_id, event_id)): the query asks for
    # every (tenant in the batch) x (id in the batch) pair, which that index answers, and
    # the caller keeps only the pairs the batch holds (a batch spans one or a few tenants).
    # The ids as one array literal: uuids need no quoting, and building the string is far
    # cheaper than psycopg's per-element array dumper. psycopg sends a str as an untyped
    # literal, so the server parses it once, as a uuid[] constant (a text::uuid[] cast
    # would be re-evaluated for every row a seq scan visits).
    return conn.execute(
        "SELECT tenant_id, event_id FROM events "
        "WHERE tenant_id = ANY(%s::text[]) AND event_id = ANY(%s::uuid[])",
        (
            sorted({tenant for tenant, _ in ids}),
            "{" + ",".join(str(eid) for _, eid in ids) + "}",
        ),
    )


def _start_stream_versions(conn: Connection, keys: Sequence[tuple[str, str]]) -> Cursor:
    # One index probe per stream on UNIQUE (tenant_id, user_id, stream_version).
    return conn.execute(
        "SELECT k.t, k.u, coalesce((SELECT max(e.stream_version) FROM events e "
        "WHERE e.tenant_id = k.t AND e.user_id = k.u), 0) "
        "FROM (SELECT k->>0 AS t, k->>1 AS u FROM jsonb_array_elements(%s::jsonb) AS k) AS k",
        catalog.keys_param(keys),
    )


def _start_clock(conn: Connection) -> Cursor:
    # The last position handed out, and the transaction time (= recorded_at). Under the
    # lock nothing else draws positions, so ours follow this one.
    return conn.execute(
        "SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence('events', 'position')"
        "::regclass), 0), now()"
    )


def append_in_transaction(
    conn: Connection, events: Sequence[EventEnvelope], tracking: Sequence[Tracking]
) -> list[StoredEvent]:
    """The body of `append`, inside a transaction the caller owns (forget uses it too).

    Three round trips: the lock; every read (pipelined); every write (pipelined)."""
    lock_events(conn)
    unique: dict[tuple[str, uuid.UUID], EventEnvelope] = {}
    for env in events:
        # A duplicate inside the batch counts once; the same id in two tenants is two.
        unique.setdefault((env.tenant_id, env.event_id), env)
    keys = sorted({(e.tenant_id, e.user_id) for e in unique.values()})
    revision_keys = {
        (e.tenant_id, e.user_id) for e in unique.values() if needs_revisions(e.event_type)
    }
    with conn.pipeline():
        track_cur = _start_replay_check(conn, tracking) if tracking else None
        if unique:
            ids_cur = _start_known_ids(conn, list(unique))
            versions_cur = _start_stream_versions(conn, keys)
            clock_cur = _start_clock(conn)
            collect_state = catalog.start_load_for_append(conn, keys, revision_keys)
            # Revisions trained on users forgotten meanwhile are refused (events/forget_guard.py).
            guarded = forget_guard.claims(unique.values())
            guard_cur = forget_guard.start_forgotten(conn, guarded) if guarded else None
    if track_cur is not None and _is_replay(track_cur.fetchall(), tracking):
        return []
    stored: list[StoredEvent] = []
    if unique:
        known = {(row[0], row[1]) for row in ids_cur.fetchall()}
        fresh = [env for key, env in unique.items() if key not in known]
        versions: dict[tuple[str, str], int] = {(t, u): v for t, u, v in versions_cur.fetchall()}
        clock = clock_cur.fetchone()
        state = collect_state()
        if guard_cur is not None:
            forgotten = forget_guard.forgotten_positions(guard_cur)
            forget_guard.check(forget_guard.claims(fresh), forgotten)
        if fresh and clock is not None:
            stored = _number(fresh, versions, first=int(clock[0]) + 1, recorded_at=clock[1])
            for ev in stored:
                apply_event(state, ev)
            encoded = json_rows([_event_row(ev) for ev in stored])
            if "\\u0000" in encoded:  # cheap pre-check; check_storable finds the culprit
                check_storable(fresh)
    with conn.pipeline():
        if stored:
            conn.execute(
                "SELECT setval(pg_get_serial_sequence('events', 'position'), %s)",
                (stored[-1].position,),
            )
            catalog.save_dirty(conn, state)
            conn.execute(_INSERT_EVENTS, (encoded,))
        if tracking:
            _save_tracking(conn, tracking)
    return stored


def _number(
    fresh: Sequence[EventEnvelope],
    versions: dict[tuple[str, str], int],
    *,
    first: int,
    recorded_at: datetime,
) -> list[StoredEvent]:
    """Give each new event its position (dense, from `first`, in batch order) and its
    stream version (after the stream's current maximum)."""
    stored = []
    for position, env in enumerate(fresh, start=first):
        key = (env.tenant_id, env.user_id)
        versions[key] += 1
        stored.append(
            StoredEvent(
                position=position,
                stream_version=versions[key],
                envelope=env.model_copy(update={"recorded_at": recorded_at}),
            )
        )
    return stored


def forget_in_transaction(
    conn: Connection, tenant_id: str, user_id: str, *, actor: str, reason: str
) -> list[str]:
    lock_events(conn)
    has_events = (
        conn.execute(
            "SELECT 1 FROM events WHERE tenant_id = %s AND user_id = %s LIMIT 1",
            (tenant_id, user_id),
        ).fetchone()
        is not None
    )
    rejected = conn.execute(
        "DELETE FROM rejected_inputs WHERE (tenant_id = %s AND user_id = %s) "
        "OR ((tenant_id IS NULL OR tenant_id = %s) AND strpos(payload, %s) > 0)",
        (tenant_id, user_id, tenant_id, f'"{user_id}"'),
    ).rowcount
    if not has_events and not rejected:
        raise NotFoundError(f"no events for user {tenant_id}/{user_id}: nothing to forget")
    # A user known only from refused input is forgotten too, with a tombstone: the
    # erasure is audited like any other.
    revisions = catalog.list_revisions(conn, tenant_id, user_id)
    priors = [
        r for r in catalog.list_revisions(conn, tenant_id, PRIOR_USER_ID)
        if forget_scope.trained_on(r, user_id)
    ]
    tombstone = EventEnvelope(
        event_type=EventType.USER_FORGOTTEN,
        tenant_id=tenant_id,
        user_id=user_id,
        occurred_at=utcnow(),
        data=UserForgotten(
            actor=actor, reason=reason, forgotten_revision_ids=[r.revision_id for r in revisions],
            retrain_prior_revision_ids=forget_scope.priors_to_retrain(priors),
        ).model_dump(mode="json"),
    )
    append_in_transaction(conn, [tombstone], ())
    forget_scope.redact_reasons_in_transaction(
        conn, tenant_id, user_id, [r.revision_id for r in [*revisions, *priors]]
    )
    # The one exception to append-only: the content goes, the rows stay, so positions,
    # stream versions and the audit trail are unchanged.
    conn.execute(
        "UPDATE events SET data = '{}'::jsonb, redacted_at = now() "
        "WHERE tenant_id = %s AND user_id = %s AND event_type = ANY(%s::text[]) "
        "AND redacted_at IS NULL",
        (tenant_id, user_id, _INTERACTION_TYPE_LIST),
    )
    conn.execute(
        "DELETE FROM request_log WHERE tenant_id = %s AND user_id = %s", (tenant_id, user_id)
    )
    return sorted({r.adapter_digest for r in revisions})
