"""Projection rows in PostgreSQL: load, save and query users, revisions and heads.

Column names equal the field names of the row dataclasses in events/projections.py, so
the column lists below are derived from those dataclasses and cannot drift apart.
Also: `served_revision`, which answers "what does this user get now" from either a
store or a plain connection.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final, Protocol, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from tessera.events.db import json_rows
from tessera.events.projections import (
    HeadRow,
    ProjectionState,
    RevisionRow,
    StreamKey,
    UserRow,
)
from tessera.events.store import ServedSource
from tessera.schemas.events import PRIOR_USER_ID

Row = TypeVar("Row", UserRow, RevisionRow, HeadRow)
AnyConnection = psycopg.Connection[Any]

_TABLES: Final[dict[type[Any], tuple[str, tuple[str, ...]]]] = {
    UserRow: ("users", ("tenant_id", "user_id")),
    RevisionRow: ("revisions", ("revision_id",)),
    HeadRow: ("heads", ("tenant_id", "user_id")),
}
_JSON_COLUMNS: Final = frozenset({"metrics", "baseline_metrics", "reasons", "provenance"})


_COLUMN_NAMES: Final[dict[type[Any], tuple[str, ...]]] = {
    cls: tuple(f.name for f in fields(cls)) for cls in (UserRow, RevisionRow, HeadRow)
}


def _columns(cls: type[Any]) -> tuple[str, ...]:
    return _COLUMN_NAMES[cls]


def _values(row: UserRow | RevisionRow | HeadRow) -> tuple[Any, ...]:
    """A row for COPY (getattr, not dataclasses.astuple, which deep-copies every value)."""
    values = [getattr(row, name) for name in _columns(type(row))]
    return tuple(
        Jsonb(v) if name in _JSON_COLUMNS else v
        for name, v in zip(_columns(type(row)), values, strict=True)
    )


def _as_dict(row: UserRow | RevisionRow | HeadRow) -> dict[str, Any]:
    return {name: getattr(row, name) for name in _columns(type(row))}


def _select(cls: type[Row], where: sql.Composable, order: str) -> sql.Composed:
    table, _ = _TABLES[cls]
    return sql.SQL("SELECT {cols} FROM {table} WHERE {where} ORDER BY {order}").format(
        cols=sql.SQL(", ").join(map(sql.Identifier, _columns(cls))),
        table=sql.Identifier(table),
        where=where,
        order=sql.SQL(", ").join(map(sql.Identifier, order.split(","))),
    )


def _fetch(
    conn: AnyConnection, cls: type[Row], where: sql.Composable, params: Sequence[Any], order: str
) -> list[Row]:
    with conn.cursor(row_factory=class_row(cls)) as cur:
        return cur.execute(_select(cls, where, order), params).fetchall()


# Stream keys travel as one JSON parameter ([[tenant, user], ...]): psycopg's Python-level
# array dumper costs more per element than the whole query does on the server.
_IN_KEYS: Final = sql.SQL(
    "(tenant_id, user_id) IN (SELECT k->>0, k->>1 FROM jsonb_array_elements(%s::jsonb) AS k)"
)


def keys_param(keys: Sequence[StreamKey]) -> tuple[str]:
    """The parameters of `_IN_KEYS`."""
    return (json.dumps(keys),)


def start_load_for_append(
    conn: AnyConnection, user_keys: Iterable[StreamKey], revision_keys: Iterable[StreamKey]
) -> Callable[[], ProjectionState]:
    """Send the queries for the rows an append may touch (users of `user_keys`; revisions
    and heads of `revision_keys`, the streams with revision or forget events) and return
    a function that collects them. Split in two so that, in pipeline mode, the queries
    share one round trip with the append's other reads."""
    ukeys, rkeys = sorted(set(user_keys)), sorted(set(revision_keys))
    pending: list[psycopg.Cursor[Any]] = []

    def send(cls: type[Row], keys: Sequence[StreamKey], order: str) -> None:
        if keys:
            cur = conn.cursor(row_factory=class_row(cls))
            cur.execute(_select(cls, _IN_KEYS, order), keys_param(keys))
            pending.append(cur)

    send(UserRow, ukeys, "tenant_id,user_id")
    send(RevisionRow, rkeys, "revision_id")
    send(HeadRow, rkeys, "tenant_id,user_id")

    def collect() -> ProjectionState:
        state = ProjectionState()
        for cur in pending:
            with cur:
                for row in cur.fetchall():
                    if isinstance(row, UserRow):
                        state.users[(row.tenant_id, row.user_id)] = row
                    elif isinstance(row, RevisionRow):
                        state.revisions[row.revision_id] = row
                    elif isinstance(row, HeadRow):
                        state.heads[(row.tenant_id, row.user_id)] = row
        return state

    return collect


def load_for_append(
    conn: AnyConnection, user_keys: Iterable[StreamKey], revision_keys: Iterable[StreamKey]
) -> ProjectionState:
    """The rows an append may touch, loaded at once (see start_load_for_append)."""
    return start_load_for_append(conn, user_keys, revision_keys)()


def _upsert(conn: AnyConnection, rows: Sequence[UserRow | RevisionRow | HeadRow]) -> None:
    if not rows:
        return
    cls = type(rows[0])
    table, key = _TABLES[cls]
    cols = _columns(cls)
    # One statement per table and batch; see json_rows for why JSON.
    query = sql.SQL(
        "INSERT INTO {table} ({cols}) SELECT {cols} FROM jsonb_populate_recordset("
        "NULL::{table}, %s::jsonb) ON CONFLICT ({key}) DO UPDATE SET {sets}"
    ).format(
        table=sql.Identifier(table),
        cols=sql.SQL(", ").join(map(sql.Identifier, cols)),
        key=sql.SQL(", ").join(map(sql.Identifier, key)),
        sets=sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in cols if c not in key
        ),
    )
    conn.execute(query, (json_rows([_as_dict(r) for r in rows]),))


def save_dirty(conn: AnyConnection, state: ProjectionState) -> None:
    """Write the rows `apply_event` changed; delete heads it cleared."""
    _upsert(conn, [state.users[k] for k in sorted(state.dirty_users)])
    _upsert(conn, [state.revisions[k] for k in sorted(state.dirty_revisions)])
    _upsert(conn, [state.heads[k] for k in sorted(state.dirty_heads) if k in state.heads])
    cleared = sorted(k for k in state.dirty_heads if k not in state.heads)
    if cleared:
        conn.execute(sql.SQL("DELETE FROM heads WHERE {}").format(_IN_KEYS), keys_param(cleared))
    state.clear_dirty()


def copy_all(conn: AnyConnection, state: ProjectionState) -> None:
    """Bulk-write every row of `state` into empty projection tables (rebuild)."""
    users, revisions, heads = state.rows()
    for rows in (users, revisions, heads):
        if not rows:
            continue
        cls = type(rows[0])
        table, _ = _TABLES[cls]
        stmt = sql.SQL("COPY {table} ({cols}) FROM STDIN").format(
            table=sql.Identifier(table), cols=sql.SQL(", ").join(map(sql.Identifier, _columns(cls)))
        )
        with conn.cursor() as cur, cur.copy(stmt) as copy:
            for row in rows:
                copy.write_row(_values(row))


def read_state(conn: AnyConnection) -> ProjectionState:
    """Every projection row."""
    state = ProjectionState()
    true = sql.SQL("true")
    for u in _fetch(conn, UserRow, true, (), "tenant_id,user_id"):
        state.users[(u.tenant_id, u.user_id)] = u
    for r in _fetch(conn, RevisionRow, true, (), "revision_id"):
        state.revisions[r.revision_id] = r
    for h in _fetch(conn, HeadRow, true, (), "tenant_id,user_id"):
        state.heads[(h.tenant_id, h.user_id)] = h
    return state


_BY_STREAM: Final = sql.SQL("tenant_id = %s AND user_id = %s")


def get_user(conn: AnyConnection, tenant_id: str, user_id: str) -> UserRow | None:
    rows = _fetch(conn, UserRow, _BY_STREAM, (tenant_id, user_id), "tenant_id")
    return rows[0] if rows else None


def list_users(conn: AnyConnection, tenant_id: str) -> list[UserRow]:
    return _fetch(conn, UserRow, sql.SQL("tenant_id = %s"), (tenant_id,), "user_id")


# The serving resolver's cache miss: rendered once, since composing it on every call
# cost the client about a fifth of a head lookup's CPU (`tessera bench catalog`).
_HEAD_BY_STREAM: Final = _select(HeadRow, _BY_STREAM, "tenant_id").as_bytes(None)


def get_head(conn: AnyConnection, tenant_id: str, user_id: str) -> HeadRow | None:
    with conn.cursor(row_factory=class_row(HeadRow)) as cur:
        return cur.execute(_HEAD_BY_STREAM, (tenant_id, user_id)).fetchone()


def get_revision(conn: AnyConnection, revision_id: str) -> RevisionRow | None:
    rows = _fetch(conn, RevisionRow, sql.SQL("revision_id = %s"), (revision_id,), "revision_id")
    return rows[0] if rows else None


def list_revisions(conn: AnyConnection, tenant_id: str, user_id: str) -> list[RevisionRow]:
    return _fetch(conn, RevisionRow, _BY_STREAM, (tenant_id, user_id), "trained_position")


# --- what a user is served ---


class HeadReader(Protocol):
    """Anything that can say a stream's head: both event stores do."""

    def get_head(self, tenant_id: str, user_id: str) -> HeadRow | None: ...


@dataclass(frozen=True, slots=True)
class ServedRevision:
    revision_id: str | None  # None: the base model alone
    adapter_digest: str | None
    source: ServedSource


def served_revision(
    source: HeadReader | AnyConnection, tenant_id: str, user_id: str
) -> ServedRevision:
    """The user's personal head, else the tenant prior's head, else the base model."""
    if isinstance(source, psycopg.Connection):
        return served_in_one_statement(source, tenant_id, user_id)
    personal = source.get_head(tenant_id, user_id) if user_id != PRIOR_USER_ID else None
    if personal is not None:
        return served_from(user_id, personal, None)
    return served_from(user_id, None, source.get_head(tenant_id, PRIOR_USER_ID))


def served_in_one_statement(
    conn: AnyConnection, tenant_id: str, user_id: str
) -> ServedRevision:
    """`served_revision` on a connection in one statement: the stream's head and its
    tenant prior's head come back together, so a user served the prior costs the serving
    resolver's cache miss one round trip, not two."""
    with conn.cursor(row_factory=class_row(HeadRow)) as cur:
        rows = cur.execute(_SERVED_HEADS, (tenant_id, user_id, PRIOR_USER_ID)).fetchall()
    heads = {h.user_id: h for h in rows}
    return served_from(user_id, heads.get(user_id), heads.get(PRIOR_USER_ID))


def served_from(user_id: str, head: HeadRow | None, prior_head: HeadRow | None) -> ServedRevision:
    """`served_revision`'s rule, given the stream's head and its tenant prior's head."""
    if head is not None and user_id != PRIOR_USER_ID:
        return ServedRevision(head.revision_id, head.adapter_digest, "personal")
    if prior_head is not None:
        return ServedRevision(prior_head.revision_id, prior_head.adapter_digest, "prior")
    return ServedRevision(None, None, "base")


@dataclass(frozen=True, slots=True)
class StreamRows:
    """A stream's projection rows, and what its user is served."""

    user: UserRow | None
    revisions: list[RevisionRow]  # in training order
    head: HeadRow | None
    served: ServedRevision


_STREAM_AND_PRIOR_HEADS: Final = sql.SQL("tenant_id = %s AND user_id IN (%s, %s)")
_SERVED_HEADS: Final = _select(HeadRow, _STREAM_AND_PRIOR_HEADS, "user_id").as_bytes(None)


def start_stream_reads(
    conn: AnyConnection, tenant_id: str, user_id: str
) -> Callable[[], StreamRows]:
    """Send the queries for a stream's user row, revisions, head and tenant prior's head
    and return a function that collects them: in pipeline mode the three queries share
    one round trip with the caller's other reads (see start_load_for_append)."""
    key = (tenant_id, user_id)
    users = conn.cursor(row_factory=class_row(UserRow))
    users.execute(_select(UserRow, _BY_STREAM, "tenant_id"), key)
    revisions = conn.cursor(row_factory=class_row(RevisionRow))
    revisions.execute(_select(RevisionRow, _BY_STREAM, "trained_position"), key)
    heads = conn.cursor(row_factory=class_row(HeadRow))
    heads.execute(
        _select(HeadRow, _STREAM_AND_PRIOR_HEADS, "user_id"), (*key, PRIOR_USER_ID)
    )

    def collect() -> StreamRows:
        with users, revisions, heads:
            user = users.fetchone()
            by_user = {h.user_id: h for h in heads.fetchall()}
            head = by_user.get(user_id)
            return StreamRows(
                user=user,
                revisions=revisions.fetchall(),
                head=head,
                served=served_from(user_id, head, by_user.get(PRIOR_USER_ID)),
            )

    return collect
