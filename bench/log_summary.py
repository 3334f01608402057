"""What the event log holds, in numbers: for the demo, the benchmark and operators."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tessera.events.log_reads import PostgresLogReads


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
    with PostgresLogReads(database_url) as reads:
        return reads.count_events(tenant_id)


def count_present(database_url: str, event_ids: Sequence[uuid.UUID], *, tenant_id: str) -> int:
    """How many of `event_ids` the tenant has in the log (ids are unique per tenant)."""
    with PostgresLogReads(database_url) as reads:
        return len(reads.present([(tenant_id, eid) for eid in set(event_ids)]))


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
    with PostgresLogReads(database_url) as reads:
        counts = reads.tenant_counts(tenant_id)
    return LogSummary(
        tenant_id=tenant_id,
        events_by_type=counts.events_by_type,
        users=counts.users,
        first_position=counts.first_position,
        last_position=counts.last_position,
        longest_stream=counts.longest_stream,
        rejected_inputs=counts.rejected_inputs,
    )
