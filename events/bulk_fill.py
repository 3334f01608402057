"""A synthetic catalog at scale, written server-side (for `tessera bench catalog`).

Every row is a closed-form function of the user's number `i` (0..N-1), so PostgreSQL
generates the rows itself (`generate_series`) instead of Python formatting millions of
them: the log (interactions and revision events, with valid payloads), and the
projections exactly as `apply_event` would leave them (tests/bench checks that a rebuild
gives the same rows back).

User `i`'s stream, step `j` = 0, 1, ...: `r(i) = 1 + i % 3` blocks of two interactions
then a revision trained, evaluated and decided (the third revision, if any, is rejected;
the others are promoted, each superseding the one before), then `new(i)` interactions
not yet trained on: `DUE_NEW_EVENTS` for every `DUE_EVERY`-th user, else `i % 3`.

Positions interleave users as a busy log does: `position = j * N + i + 1`. The log is
written step by step, so the heap is in position order; numbers left unused (a user with
fewer steps) are gaps, which sequences produce anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from psycopg import sql
from psycopg.types.json import Jsonb

from tessera.events.db import Connection, connect
from tessera.schemas.events import EventType
from tessera.schemas.revisions import RevisionTrained

BLOCK: Final = 5  # steps per revision: two interactions, trained, evaluated, decided
MAX_REVISIONS: Final = 3
DUE_EVERY: Final = 20
DUE_NEW_EVENTS: Final = 25
EPOCH: Final = datetime(2026, 1, 1, tzinfo=UTC)

# SQL fragments over the bound parameters %(n)s (users) and %(t)s (tenants) and a column
# `i` (the user's number); `{j}` is replaced by a step expression.
_R = "(1 + i %% 3)"  # revisions of user i
_NEW = f"(CASE WHEN i %% {DUE_EVERY} = 0 THEN {DUE_NEW_EVENTS} ELSE i %% 3 END)"
_LEN = f"({BLOCK} * {_R} + {_NEW})"
_POS = "(({j}) * %(n)s::bigint + i + 1)"
_TS = "(%(epoch)s::timestamptz + ({p}) * interval '1 millisecond')"
_TENANT = "('tenant-' || (i %% %(t)s))"
_USER = "('user-' || lpad(i::text, 7, '0'))"
_RID = "('rev-' || i || '-' || ({b}))"
_DIGEST = "encode(sha256(convert_to({x}, 'UTF8')), 'hex')"
_HEAD_B = f"(CASE WHEN {_R} = 1 THEN 0 ELSE 1 END)"  # the promoted revision served now


def pos(j: str) -> str:
    return _POS.format(j=j)


def ts(p: str) -> str:
    return _TS.format(p=p)


def rid(b: str) -> str:
    return _RID.format(b=b)


def digest(x: str) -> str:
    return _DIGEST.format(x=x)


def _provenance(b: str) -> str:
    """The RevisionTrained payload of user i's revision b (the template plus its ids)."""
    parent = f"CASE WHEN ({b}) = 0 THEN NULL ELSE {rid(f'({b}) - 1')} END"
    data_digest = digest(rid(b) + " || '/data'")
    return (
        f"(%(template)s::jsonb || jsonb_build_object('revision_id', {rid(b)}, "
        f"'parent_revision_id', {parent}, 'adapter_digest', {digest(rid(b))}, "
        f"'dataset_from', {pos(f'{BLOCK} * ({b})')}, "
        f"'dataset_to', {pos(f'{BLOCK} * ({b}) + 1')}, "
        f"'dataset_digest', {data_digest}))"
    )


_PROMOTED_REASONS: Final = ["held-out loss below the baseline"]
_REJECTED_REASONS: Final = ["held-out loss above the baseline"]
_METRICS: Final = {"heldout_nll": 2.5}
_BASELINE: Final = "CASE WHEN b = 0 THEN NULL ELSE " + rid("b - 1") + " END"

# One step of every user that has it: b = block, k = place in the block.
_EVENTS_AT_STEP = f"""
INSERT INTO events (position, event_id, tenant_id, user_id, stream_version, event_type,
                    schema_version, occurred_at, recorded_at, data)
SELECT p, md5(i || '/' || %(j)s)::uuid, {_TENANT}, {_USER}, %(j)s + 1, etype, 1,
       {ts('p')}, {ts('p')},
       CASE etype
         WHEN %(trained)s THEN {_provenance('b')}
         WHEN %(evaluated)s THEN jsonb_build_object('revision_id', {rid('b')},
              'metrics', %(metrics)s::jsonb, 'baseline_revision_id', {_BASELINE},
              'baseline_metrics', %(metrics)s::jsonb)
         WHEN %(promoted)s THEN jsonb_build_object('revision_id', {rid('b')},
              'adapter_digest', {digest(rid('b'))}, 'previous_revision_id', {_BASELINE},
              'reasons', %(promoted_reasons)s::jsonb)
         WHEN %(rejected)s THEN jsonb_build_object('revision_id', {rid('b')},
              'reasons', %(rejected_reasons)s::jsonb)
         ELSE jsonb_build_object('prompt', 'question ' || %(j)s, 'response', 'answer ' || i)
       END
FROM (
  SELECT i, b, {pos('%(j)s')} AS p,
         CASE WHEN b >= {_R} OR k < 2 THEN %(exchange)s
              WHEN k = 2 THEN %(trained)s WHEN k = 3 THEN %(evaluated)s
              WHEN b = 2 THEN %(rejected)s ELSE %(promoted)s END AS etype
  FROM (SELECT i, %(j)s / {BLOCK} AS b, %(j)s %% {BLOCK} AS k
        FROM generate_series(0, %(n)s - 1) AS i) AS s
  WHERE %(j)s < {_LEN}
) AS e
ORDER BY p
"""

# The last interaction: the user's last step if it has new events, else the second
# step of its last block.
_LAST_INTERACTION = f"(CASE WHEN {_NEW} > 0 THEN {_LEN} - 1 ELSE {BLOCK} * ({_R} - 1) + 1 END)"

_USERS = f"""
INSERT INTO users (tenant_id, user_id, interactions, first_position, last_position,
                   last_occurred_at)
SELECT {_TENANT}, {_USER}, 2 * {_R} + {_NEW}, {pos('0')}, {pos(_LAST_INTERACTION)},
       {ts(pos(_LAST_INTERACTION))}
FROM generate_series(0, %(n)s - 1) AS i
"""

# A revision's state and the position of the last event that changed it: the head is
# promoted (by its own decision), the third is rejected, the first of several is
# superseded by the second's promotion.
_REVISIONS = f"""
INSERT INTO revisions (revision_id, tenant_id, user_id, kind, parent_revision_id, state,
    base_model_id, base_digest, adapter_digest, dataset_from, dataset_to, dataset_digest,
    metrics, baseline_revision_id, baseline_metrics, reasons, provenance, trained_at,
    evaluated_at, decided_at, updated_at, trained_position, position)
SELECT prov->>'revision_id', {_TENANT}, {_USER}, 'personal', prov->>'parent_revision_id',
       state, prov->>'base_model_id', prov->>'base_digest', prov->>'adapter_digest',
       (prov->>'dataset_from')::bigint, (prov->>'dataset_to')::bigint,
       prov->>'dataset_digest', %(metrics)s::jsonb, {_BASELINE}, %(metrics)s::jsonb,
       CASE WHEN state = 'rejected' THEN %(rejected_reasons)s::jsonb
            ELSE %(promoted_reasons)s::jsonb END,
       prov, {ts(pos(f'{BLOCK} * b + 2'))}, {ts(pos(f'{BLOCK} * b + 3'))},
       {ts(pos(f'{BLOCK} * b + 4'))}, {ts('changed')}, {pos(f'{BLOCK} * b + 2')}, changed
FROM (
  SELECT i, b, {_provenance('b')} AS prov,
         CASE WHEN b = 2 THEN 'rejected' WHEN b = {_HEAD_B} THEN 'promoted'
              ELSE 'superseded' END AS state,
         CASE WHEN b < {_HEAD_B} THEN {pos(f'{BLOCK} * {_HEAD_B} + 4')}
              ELSE {pos(f'{BLOCK} * b + 4')} END AS changed
  FROM generate_series(0, %(n)s - 1) AS i, generate_series(0, {MAX_REVISIONS - 1}) AS b
  WHERE b < {_R}
  -- OFFSET 0 keeps the subquery: flattened, each prov->> would rebuild the payload.
  OFFSET 0
) AS r
"""

_HEADS = f"""
INSERT INTO heads (tenant_id, user_id, revision_id, adapter_digest, position, updated_at)
SELECT {_TENANT}, {_USER}, {rid(_HEAD_B)}, {digest(rid(_HEAD_B))},
       {pos(f'{BLOCK} * {_HEAD_B} + 4')}, {ts(pos(f'{BLOCK} * {_HEAD_B} + 4'))}
FROM generate_series(0, %(n)s - 1) AS i
"""


@dataclass(frozen=True, slots=True)
class FillReport:
    users: int
    tenants: int
    events: int
    revisions: int
    last_position: int


def tenant_of(i: int, tenants: int) -> str:
    return f"tenant-{i % tenants}"


def user_of(i: int) -> str:
    return f"user-{i:07d}"


def revisions_of(i: int) -> int:
    return 1 + i % 3


def new_events_of(i: int) -> int:
    return DUE_NEW_EVENTS if i % DUE_EVERY == 0 else i % 3


def head_of(i: int) -> str:
    """The revision user i is served after the fill."""
    return f"rev-{i}-{0 if revisions_of(i) == 1 else 1}"


def steps_of(i: int) -> int:
    return BLOCK * revisions_of(i) + new_events_of(i)


def _template() -> dict[str, Any]:
    """Every field of a RevisionTrained payload, as the pipeline dumps it; the per-row
    ids are overwritten in SQL."""
    template: dict[str, Any] = RevisionTrained(
        revision_id="-", kind="personal", base_model_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        base_digest="0" * 64, adapter_digest="-", adapter_bytes=1_843_200, rank=8, alpha=16.0,
        target_modules=["q_proj", "v_proj"], hyperparameters={"lr": 0.0004, "epochs": 2},
        seed=7, dataset_from=0, dataset_to=0, dataset_digest="-", code_version="bench",
        trigger="nightly", train_seconds=12.5,
    ).model_dump(mode="json")
    return template


def fill_catalog(
    conn: Connection, *, users: int, tenants: int, on_step: Callable[[int, int], None] | None = None
) -> FillReport:
    """Write the synthetic log and projections into an empty, migrated database, one
    transaction per step (`on_step(step, steps)` after each). Raises ValueError when the
    log is not empty."""
    if users < 1 or tenants < 1:
        raise ValueError("users and tenants must be at least 1")
    row = conn.execute("SELECT count(*) FROM (SELECT 1 FROM events LIMIT 1) AS e").fetchone()
    if row is not None and row[0]:
        raise ValueError("the database already holds events: fill a fresh one")
    params: dict[str, Any] = {
        "n": users, "t": tenants, "epoch": EPOCH, "template": Jsonb(_template()),
        "metrics": Jsonb(_METRICS), "promoted_reasons": Jsonb(_PROMOTED_REASONS),
        "rejected_reasons": Jsonb(_REJECTED_REASONS),
        "exchange": str(EventType.EXCHANGE), "trained": str(EventType.REVISION_TRAINED),
        "evaluated": str(EventType.REVISION_EVALUATED),
        "promoted": str(EventType.REVISION_PROMOTED),
        "rejected": str(EventType.REVISION_REJECTED),
    }
    steps = max(steps_of(i) for i in range(min(users, DUE_EVERY * 3)))
    with conn.transaction():
        deferred = _drop_indexes(conn)
    for j in range(steps):
        with conn.transaction():
            conn.execute(_EVENTS_AT_STEP.encode(), {**params, "j": j})
        if on_step is not None:
            on_step(j + 1, steps)
    with conn.transaction():
        for query in (_USERS, _REVISIONS, _HEADS):
            conn.execute(query.encode(), params)
        for statement in deferred:
            conn.execute(statement)
        last = (steps - 1) * users + users
        conn.execute(
            "SELECT setval(pg_get_serial_sequence('events', 'position'), %s)", (last,)
        )
    return FillReport(
        users=users, tenants=tenants,
        events=sum(steps_of(i) for i in range(users)),
        revisions=sum(revisions_of(i) for i in range(users)),
        last_position=last,
    )


_FILLED_TABLES: Final = ("events", "users", "revisions", "heads")


def _drop_indexes(conn: Connection) -> list[sql.SQL | sql.Composed]:
    """Drop every index and key of the filled tables and return the statements that
    recreate them as the catalog defines them (whatever the migrations made). One sort
    per index after the fill is many times cheaper than millions of random insertions
    during it (random keys such as digests and event ids thrash a small buffer cache)."""
    recreate: list[sql.SQL | sql.Composed] = []
    for table in _FILLED_TABLES:
        constraints = conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype IN ('p', 'u', 'x')",
            (table,),
        ).fetchall()
        indexes = conn.execute(
            "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)",
            (table,),
        ).fetchall()
        for name, definition in constraints:
            conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                sql.Identifier(table), sql.Identifier(name)))
            # The definition is the server's own text for its catalog, not input.
            recreate.append(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                sql.Identifier(table), sql.Identifier(name), sql.SQL(definition)))
        for name, definition in indexes:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
            recreate.append(sql.SQL(definition))
    return recreate


def catalog_bytes(conn: Connection) -> int:
    """Bytes on disk of the log and its projections, indexes and TOAST included."""
    row = conn.execute(
        "SELECT sum(pg_total_relation_size(t::regclass)) "
        "FROM unnest(ARRAY['events', 'users', 'revisions', 'heads']) AS t"
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def vacuum_analyze(conn: Connection) -> None:
    """Statistics and visibility map after a bulk write, as autovacuum would leave them
    (needs an autocommit connection: VACUUM cannot run in a transaction)."""
    conn.execute("VACUUM (ANALYZE) events, users, revisions, heads")


def _on_database(url: str, name: str) -> str:
    head, _, _ = url.rpartition("/")
    return f"{head}/{name}"


def fresh_database(url: str, name: str) -> str:
    """(Re)create the empty database `name` on the server of `url`; its URL (migrations
    not applied)."""
    drop_database(url, name)
    with connect(_on_database(url, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return _on_database(url, name)


def drop_database(url: str, name: str) -> None:
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with connect(_on_database(url, "postgres"), autocommit=True) as conn:
        conn.execute(drop)
