"""What the night's planner reads beside who is due: when each user last got a revision,
and which tenant prior each tenant serves (the warm start a night's group shares).

`NightReads` has a PostgreSQL implementation and an in-memory twin over any
`EventStore`; tests/events/test_night_reads_contract.py runs both.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

from tessera.events.db import connect, translated, with_retry
from tessera.events.store import EventStore
from tessera.schemas.events import PRIOR_USER_ID

StreamKey = tuple[str, str]


class NightReads(Protocol):
    def last_revision_times(self, tenant_id: str | None = None) -> dict[StreamKey, datetime]:
        """(tenant, user) -> when the user's latest personal revision was trained (any
        state); users never trained are absent."""
        ...

    def prior_heads(self, tenant_id: str | None = None) -> dict[str, str]:
        """tenant -> the revision id of the tenant prior it serves (tenants without one
        are absent)."""
        ...


_LAST_REVISION_TIMES: Final = """
SELECT tenant_id, user_id, max(trained_at) FROM revisions
WHERE user_id <> %(prior)s AND (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s::text)
GROUP BY tenant_id, user_id
"""

_PRIOR_HEADS: Final = """
SELECT tenant_id, revision_id FROM heads
WHERE user_id = %(prior)s AND (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s::text)
"""


class PostgresNightReads:
    """NightReads on PostgreSQL: one short connection per call (read once a night)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def last_revision_times(self, tenant_id: str | None = None) -> dict[StreamKey, datetime]:
        rows = self._fetch("read revision times", _LAST_REVISION_TIMES, tenant_id)
        return {(t, u): at for t, u, at in rows}

    def prior_heads(self, tenant_id: str | None = None) -> dict[str, str]:
        rows = self._fetch("read prior heads", _PRIOR_HEADS, tenant_id)
        return {t: rid for t, rid in rows}

    def _fetch(self, what: str, query: str, tenant_id: str | None) -> list[tuple[Any, ...]]:
        def read() -> list[tuple[Any, ...]]:
            with connect(self.url, autocommit=True) as conn, translated(what):
                params = {"prior": PRIOR_USER_ID, "tenant": tenant_id}
                rows: list[tuple[Any, ...]] = conn.execute(query.encode(), params).fetchall()
                return rows

        result: list[tuple[Any, ...]] = with_retry(read)
        return result


class MemoryNightReads:
    """The twin: the same answers from any EventStore's projections."""

    def __init__(self, store: EventStore) -> None:
        self._store = store

    def last_revision_times(self, tenant_id: str | None = None) -> dict[StreamKey, datetime]:
        out: dict[StreamKey, datetime] = {}
        for r in self._store.projection_state().revisions.values():
            if r.user_id == PRIOR_USER_ID or tenant_id not in (None, r.tenant_id):
                continue
            key = (r.tenant_id, r.user_id)
            out[key] = max(out.get(key, r.trained_at), r.trained_at)
        return out

    def prior_heads(self, tenant_id: str | None = None) -> dict[str, str]:
        return {t: head.revision_id
                for (t, u), head in self._store.projection_state().heads.items()
                if u == PRIOR_USER_ID and tenant_id in (None, t)}


if TYPE_CHECKING:  # mypy proves both classes satisfy the protocol
    from tessera.events.memory_store import MemoryEventStore

    _pg: NightReads = PostgresNightReads("")
    _mem: NightReads = MemoryNightReads(MemoryEventStore())
