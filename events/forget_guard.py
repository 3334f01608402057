"""Refusing revisions trained on data that a forget has erased since.

A revision's training can start before `tessera forget` and end after it; without a
check its `RevisionTrained` would be appended after the tombstone and the revision
evaluated, promoted and served, made of erased text. So every append (under the log's
lock, where no forget can interleave) checks each new `RevisionTrained` against the
forgotten positions of the users whose events it learned from, and refuses the whole
append (`ForgottenDataRefused`) when one of them was forgotten at or after its data:
- personal: the stream's user, when their last forget is at or after `dataset_from`
  (the dataset reaches back to or below the tombstone, so it held erased events);
- prior: each user of `hyperparameters.dataset.users`, when their last forget is after
  the one the sample was taken after (`hyperparameters.dataset.forgotten_after[user]`,
  0 when absent: a prior sampled before any forget of theirs).
The caller deletes the refused revision's blob (workers/pipeline.py).

Only the append checks: a rebuild replays what was appended, so rules and log agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import Cursor

from tessera.events.db import Connection
from tessera.events.projections import ProjectionError, StreamKey
from tessera.schemas.events import PRIOR_USER_ID, EventEnvelope, EventType


class ForgottenDataRefused(ProjectionError):
    """A revision holds data of a user forgotten since its dataset was read."""


@dataclass(frozen=True, slots=True)
class Claim:
    """`revision_id` learned from `user`'s events; refused if they were forgotten at a
    position >= `bound`."""

    tenant_id: str
    user_id: str
    bound: int
    revision_id: str


def claims(events: Iterable[EventEnvelope]) -> list[Claim]:
    """The claims of the `RevisionTrained` events among `events`. A malformed payload
    gives none: the projections refuse it with a better message."""
    out: list[Claim] = []
    for env in events:
        if env.event_type != EventType.REVISION_TRAINED:
            continue
        data: Mapping[str, Any] = env.data
        rid = str(data.get("revision_id", ""))
        if env.user_id != PRIOR_USER_ID:
            start = data.get("dataset_from")
            if isinstance(start, int):
                out.append(Claim(env.tenant_id, env.user_id, start, rid))
            continue
        hyper = data.get("hyperparameters")
        dataset = hyper.get("dataset") if isinstance(hyper, dict) else None
        if not isinstance(dataset, dict):
            continue
        after = dataset.get("forgotten_after")
        after = after if isinstance(after, dict) else {}
        for user in dataset.get("users") or []:
            out.append(Claim(env.tenant_id, str(user), int(after.get(user, 0)) + 1, rid))
    return out


def check(found: Sequence[Claim], forgotten: Mapping[StreamKey, int]) -> None:
    """Raise ForgottenDataRefused for the first claim a forget overtook."""
    for c in found:
        position = forgotten.get((c.tenant_id, c.user_id))
        if position is not None and position >= c.bound:
            raise ForgottenDataRefused(
                f"revision {c.revision_id!r} was trained on events of {c.tenant_id}/"
                f"{c.user_id}, who was forgotten (at position {position}) while it trained; "
                "it is refused and its adapter must be deleted"
            )


def start_forgotten(conn: Connection, found: Sequence[Claim]) -> Cursor[Any]:
    """Send the query for the forgotten positions of the claims' users (in a pipeline);
    read it with `forgotten_positions`."""
    keys = sorted({(c.tenant_id, c.user_id) for c in found})
    return conn.execute(
        "SELECT tenant_id, user_id, forgotten_position FROM users "
        "WHERE forgotten_position IS NOT NULL AND (tenant_id, user_id) IN "
        "(SELECT * FROM unnest(%s::text[], %s::text[]))",
        ([t for t, _ in keys], [u for _, u in keys]),
    )


def forgotten_positions(cur: Cursor[Any]) -> dict[StreamKey, int]:
    return {(str(t), str(u)): int(p) for t, u, p in cur.fetchall()}
