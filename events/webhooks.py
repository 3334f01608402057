"""Where webhooks are configured and their deliveries logged (migration 0080_webhooks).

`WebhookStore` is the interface; `PostgresWebhookStore` keeps it in PostgreSQL (driver
errors translated here, transient ones retried) and `MemoryWebhookStore` is its twin for
tests and single-process use. Both pass tests/events/test_webhook_store.py.

One endpoint (URL + signing secret) per tenant. Every delivery attempt is a row; the
dispatcher's read position in the event log is a cursor per consumer name, so a
restarted dispatcher carries on after the last event it finished.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from tessera.events.db import make_pool, translated, with_retry


@dataclass(frozen=True, slots=True)
class Webhook:
    tenant_id: str
    url: str
    secret: str  # the HMAC-SHA256 key; never shown back through the API
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    """One POST of one event to one tenant's URL."""

    tenant_id: str
    event_id: uuid.UUID
    event_type: str
    position: int
    url: str
    attempt: int  # 1, 2, ... for the same event
    ok: bool
    status_code: int | None = None  # None: no HTTP answer (connection error, timeout)
    error: str | None = None
    attempted_at: datetime | None = None  # set by the store
    id: int | None = None  # set by the store


class WebhookStore(Protocol):
    def set_webhook(self, tenant_id: str, url: str, secret: str) -> Webhook: ...

    def get_webhook(self, tenant_id: str) -> Webhook | None: ...

    def delete_webhook(self, tenant_id: str) -> bool: ...

    def record_attempt(self, attempt: DeliveryAttempt) -> None: ...

    def deliveries(
        self, tenant_id: str, *, event_id: uuid.UUID | None = None, limit: int = 100
    ) -> list[DeliveryAttempt]:
        """Newest first."""
        ...

    def cursor(self, consumer: str) -> int:
        """The last log position `consumer` finished (0: none)."""
        ...

    def set_cursor(self, consumer: str, position: int) -> None: ...


class MemoryWebhookStore:
    """`WebhookStore` in process memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hooks: dict[str, Webhook] = {}
        self._attempts: list[DeliveryAttempt] = []
        self._cursors: dict[str, int] = {}

    def set_webhook(self, tenant_id: str, url: str, secret: str) -> Webhook:
        hook = Webhook(tenant_id, url, secret, datetime.now(UTC))
        with self._lock:
            self._hooks[tenant_id] = hook
        return hook

    def get_webhook(self, tenant_id: str) -> Webhook | None:
        with self._lock:
            return self._hooks.get(tenant_id)

    def delete_webhook(self, tenant_id: str) -> bool:
        with self._lock:
            return self._hooks.pop(tenant_id, None) is not None

    def record_attempt(self, attempt: DeliveryAttempt) -> None:
        with self._lock:
            self._attempts.append(replace(attempt, id=len(self._attempts) + 1,
                                          attempted_at=datetime.now(UTC)))

    def deliveries(
        self, tenant_id: str, *, event_id: uuid.UUID | None = None, limit: int = 100
    ) -> list[DeliveryAttempt]:
        with self._lock:
            found = [a for a in reversed(self._attempts) if a.tenant_id == tenant_id
                     and (event_id is None or a.event_id == event_id)]
        return found[:limit]

    def cursor(self, consumer: str) -> int:
        with self._lock:
            return self._cursors.get(consumer, 0)

    def set_cursor(self, consumer: str, position: int) -> None:
        with self._lock:
            self._cursors[consumer] = position


_ATTEMPT_COLUMNS = ("id, tenant_id, event_id, event_type, position, url, attempt, ok, "
                    "status_code, error, attempted_at")


class PostgresWebhookStore:
    """`WebhookStore` on PostgreSQL, through a small pool of its own."""

    def __init__(self, url: str, *, pool_size: int = 2) -> None:
        self._pool = make_pool(url, min_size=1, max_size=pool_size)

    def close(self) -> None:
        self._pool.close()

    def _run(self, what: str, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        def once() -> list[tuple[Any, ...]]:
            with translated(what), self._pool.connection() as conn:
                cur = conn.execute(sql, params)
                return list(cur.fetchall()) if cur.description is not None else []

        rows: list[tuple[Any, ...]] = with_retry(once)
        return rows

    def set_webhook(self, tenant_id: str, url: str, secret: str) -> Webhook:
        (row,) = self._run(
            "set a webhook",
            "INSERT INTO webhooks (tenant_id, url, secret) VALUES (%(t)s, %(u)s, %(s)s) "
            "ON CONFLICT (tenant_id) DO UPDATE SET url = EXCLUDED.url, "
            "secret = EXCLUDED.secret, updated_at = now() RETURNING updated_at",
            {"t": tenant_id, "u": url, "s": secret},
        )
        return Webhook(tenant_id, url, secret, row[0])

    def get_webhook(self, tenant_id: str) -> Webhook | None:
        rows = self._run("read a webhook",
                         "SELECT url, secret, updated_at FROM webhooks WHERE tenant_id = %(t)s",
                         {"t": tenant_id})
        return Webhook(tenant_id, *rows[0]) if rows else None

    def delete_webhook(self, tenant_id: str) -> bool:
        rows = self._run("delete a webhook",
                         "DELETE FROM webhooks WHERE tenant_id = %(t)s RETURNING tenant_id",
                         {"t": tenant_id})
        return bool(rows)

    def record_attempt(self, attempt: DeliveryAttempt) -> None:
        self._run(
            "log a webhook delivery",
            "INSERT INTO webhook_deliveries (tenant_id, event_id, event_type, position, url, "
            "attempt, ok, status_code, error) VALUES (%(tenant_id)s, %(event_id)s, "
            "%(event_type)s, %(position)s, %(url)s, %(attempt)s, %(ok)s, %(status_code)s, "
            "%(error)s)",
            {"tenant_id": attempt.tenant_id, "event_id": attempt.event_id,
             "event_type": attempt.event_type, "position": attempt.position, "url": attempt.url,
             "attempt": attempt.attempt, "ok": attempt.ok, "status_code": attempt.status_code,
             "error": attempt.error},
        )

    def deliveries(
        self, tenant_id: str, *, event_id: uuid.UUID | None = None, limit: int = 100
    ) -> list[DeliveryAttempt]:
        rows = self._run(
            "read webhook deliveries",
            f"SELECT {_ATTEMPT_COLUMNS} FROM webhook_deliveries WHERE tenant_id = %(t)s "
            "AND (%(e)s::uuid IS NULL OR event_id = %(e)s::uuid) ORDER BY id DESC LIMIT %(n)s",
            {"t": tenant_id, "e": event_id, "n": limit},
        )
        return [
            DeliveryAttempt(tenant_id=r[1], event_id=r[2], event_type=r[3], position=r[4],
                            url=r[5], attempt=r[6], ok=r[7], status_code=r[8], error=r[9],
                            attempted_at=r[10], id=r[0])
            for r in rows
        ]

    def cursor(self, consumer: str) -> int:
        rows = self._run("read the webhook cursor",
                         "SELECT position FROM webhook_cursors WHERE consumer = %(c)s",
                         {"c": consumer})
        return int(rows[0][0]) if rows else 0

    def set_cursor(self, consumer: str, position: int) -> None:
        self._run(
            "move the webhook cursor",
            "INSERT INTO webhook_cursors (consumer, position) VALUES (%(c)s, %(p)s) "
            "ON CONFLICT (consumer) DO UPDATE SET position = EXCLUDED.position, "
            "updated_at = now()",
            {"c": consumer, "p": position},
        )


if TYPE_CHECKING:  # mypy proves both classes satisfy the protocol

    def _conforms(m: MemoryWebhookStore, p: PostgresWebhookStore) -> list[WebhookStore]:
        return [m, p]
