"""Follow the event log and notify each tenant's webhook when a user's model changed.

Notified events: a revision promoted or rejected, a rollback, a head superseded by a
refreshed tenant prior, and a forget - what an app needs to know that what its user is
served changed (or that a request for a revision ended). The body is JSON:

    {"id": event id, "type": "revision.promoted", "tenant_id", "user_id", "position",
     "occurred_at", "data": the event's payload (no user content: revision ids, digests,
     reasons, metrics; a forget's tombstone)}

The log is the source of truth, so nothing is lost when the dispatcher is down: it reads
on from its cursor (`webhook_cursors`), advanced after each event's delivery finished
(accepted, refused or given up). A crash between delivery and cursor means the event is
sent again: receivers dedupe by `X-Tessera-Delivery`. Events of a tenant without a
webhook at that time are passed over.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from typing import Final, Protocol

from tessera.events.store import StoredEvent
from tessera.events.webhooks import WebhookStore
from tessera.schemas.events import EventType
from tessera.services.webhooks.sender import Notification, WebhookSender

log = logging.getLogger(__name__)

NOTIFIED: Final = (
    EventType.REVISION_PROMOTED,
    EventType.REVISION_REJECTED,
    EventType.REVISION_ROLLED_BACK,
    EventType.REVISION_SUPERSEDED_BY_PRIOR,
    EventType.USER_FORGOTTEN,
)
CONSUMER: Final = "webhooks"


class EventLog(Protocol):
    """The part of the event store the dispatcher reads (both stores provide it)."""

    def read(
        self,
        *,
        after: int = 0,
        upto: int | None = None,
        tenant_id: str | None = None,
        user_id: str | None = None,
        event_types: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[StoredEvent]: ...

    def head_position(self) -> int: ...


def notification(stored: StoredEvent) -> Notification:
    env = stored.envelope
    body = {
        "id": str(env.event_id), "type": str(env.event_type), "tenant_id": env.tenant_id,
        "user_id": env.user_id, "position": stored.position,
        "occurred_at": env.occurred_at.isoformat(), "data": env.data,
    }
    return Notification(event_id=env.event_id, event_type=str(env.event_type),
                        tenant_id=env.tenant_id, position=stored.position,
                        body=json.dumps(body, sort_keys=True).encode())


class WebhookDispatcher:
    def __init__(
        self,
        events: EventLog,
        hooks: WebhookStore,
        sender: WebhookSender,
        *,
        consumer: str = CONSUMER,
        batch: int = 100,
    ) -> None:
        self._events = events
        self._hooks = hooks
        self._sender = sender
        self._consumer = consumer
        self._batch = batch

    def start_at_head_if_new(self) -> None:
        """A dispatcher that never ran starts at the log's end: enabling webhooks does
        not replay a deployment's whole history to its tenants."""
        if self._hooks.cursor(self._consumer) == 0:
            self._hooks.set_cursor(self._consumer, self._events.head_position())

    def run_once(self) -> int:
        """Deliver the notified events after the cursor (one batch); how many were read."""
        after = self._hooks.cursor(self._consumer)
        events = self._events.read(after=after, event_types=[str(t) for t in NOTIFIED],
                                   limit=self._batch)
        for stored in events:
            hook = self._hooks.get_webhook(stored.envelope.tenant_id)
            if hook is not None:
                self._sender.deliver(hook, notification(stored))
            self._hooks.set_cursor(self._consumer, stored.position)
        return len(events)

    def run(self, stop: threading.Event, *, poll_s: float = 1.0) -> None:
        """Until `stop` is set: deliver what is new, then wait `poll_s` when idle."""
        self.start_at_head_if_new()
        while not stop.is_set():
            try:
                if self.run_once() == 0:
                    stop.wait(poll_s)
            except Exception:  # a database blip must not end the dispatcher
                log.exception("webhook dispatch failed; retrying in %.0fs", poll_s * 5)
                stop.wait(poll_s * 5)
