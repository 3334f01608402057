"""What the event log holds, in numbers: for the demo, the benchmark and operators."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tessera.events.db import connect, translated


@dataclass(frozen=True, slots=True)
class LogSummary:
    tenant_id: str
    events_by_type: dict[str, int]
    users: int
    first_position: int | None
    last_position: int | None
    longest_stream: int  # highest per-user stream version
    rejected_inputs: int  # for the whole log: rejected input may not name a tenant

    @property
    def events(self) -> int:
        return sum(self.events_by_type.values())

    def render(self, indent: str = "") -> str:
        lines = [f"tenant {self.tenant_id}: {self.events} events from {self.users} users"]
        lines += [f"  {kind:<24} {n:>8}" for kind, n in sorted(self.events_by_type.items())]
        lines.append(
            f"positions {self.first_position}..{self.last_position}, "
            f"longest user stream {self.longest_stream} events, "
            f"rejected inputs {self.rejected_inputs}"
        )
        return "\n".join(indent + line for line in lines)


def count_events(database_url: str, *, tenant_id: str) -> int:
    with translated("count events"), connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM events WHERE tenant_id = %s", (tenant_id,)
        ).fetchone()
    return int(row[0]) if row else 0


def count_present(database_url: str, event_ids: Sequence[uuid.UUID], *, tenant_id: str) -> int:
    """How many of `event_ids` the tenant has in the log (ids are unique per tenant)."""
    with translated("count events by id"), connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM events WHERE tenant_id = %s AND event_id = ANY(%s)",
            (tenant_id, list(event_ids)),
        ).fetchone()
    return int(row[0]) if row else 0


def wait_until_committed(
    database_url: str,
    event_ids: Sequence[uuid.UUID],
    *,
    tenant_id: str,
    stall_s: float,
    on_progress: Callable[[int], None] | None = None,
) -> None:
    """Wait while the stream writer makes progress on `event_ids`; raise RuntimeError only
    after `stall_s` without any. `on_progress` gets each newly committed count."""
    committed = count_present(database_url, event_ids, tenant_id=tenant_id)
    if on_progress is not None and committed:
        on_progress(committed)
    last_progress = time.monotonic()
    while committed < len(event_ids):
        if time.monotonic() - last_progress > stall_s:
            raise RuntimeError(
                f"only {committed} of {len(event_ids)} events committed and no progress "
                f"for {stall_s:.0f} s"
            )
        time.sleep(0.3)
        now = count_present(database_url, event_ids, tenant_id=tenant_id)
        if now > committed:
            if on_progress is not None:
                on_progress(now - committed)
            committed, last_progress = now, time.monotonic()


def summarise(database_url: str, *, tenant_id: str) -> LogSummary:
    with translated("summarise the event log"), connect(database_url) as conn:
        by_type: dict[str, int] = dict(
            conn.execute(
                "SELECT event_type, count(*) FROM events WHERE tenant_id = %s GROUP BY event_type",
                (tenant_id,),
            ).fetchall()
        )
        row = conn.execute(
            "SELECT count(DISTINCT user_id), min(position), max(position),"
            " coalesce(max(stream_version), 0) FROM events WHERE tenant_id = %s",
            (tenant_id,),
        ).fetchone()
        rejected = conn.execute("SELECT count(*) FROM rejected_inputs").fetchone()
    if row is None or rejected is None:  # aggregates always return a row
        raise RuntimeError("PostgreSQL returned no row for an aggregate query")
    return LogSummary(
        tenant_id=tenant_id,
        events_by_type={str(k): int(v) for k, v in by_type.items()},
        users=int(row[0]),
        first_position=row[1],
        last_position=row[2],
        longest_stream=int(row[3]),
        rejected_inputs=int(rejected[0]),
    )
