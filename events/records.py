"""The event store's records and errors: what the store contract (`store`) and the
projections (`projections`) both speak, kept apart so neither imports the other.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from tessera.schemas.events import EventEnvelope


@dataclass(frozen=True, slots=True)
class Tracking:
    """A consumer's position: the last Kafka offset whose effects are in the log."""

    group: str
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as the log holds it: global position and per-user stream version added."""

    position: int
    stream_version: int
    envelope: EventEnvelope


@dataclass(frozen=True, slots=True)
class RejectedInput:
    """Input that could not become an event, kept with the reason (never lost silently)."""

    source: str  # e.g. "kafka:tessera.interactions/3@1042" or "http"
    reason: str
    payload: str  # raw text as received (truncated by the store if huge)
    received_at: datetime
    # Who the input was about, when it said so: forgetting a user deletes these rows too.
    tenant_id: str | None = None
    user_id: str | None = None


ServedSource = Literal["personal", "prior", "base"]


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """Which adapter answered one inference request (the request audit)."""

    request_id: str
    tenant_id: str
    user_id: str
    revision_id: str | None  # None when the base model answered
    adapter_digest: str | None
    source: ServedSource
    at: datetime


# Longest rejected payload kept; longer ones are cut (with a marker) so a flood of huge
# junk cannot fill the database.
MAX_REJECTED_PAYLOAD_CHARS = 64_000


# An escaped NUL in JSON text: "\\u0000" after an even number of backslashes. PostgreSQL's
# jsonb refuses it, so both stores refuse it (with the event id) before writing anything.
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def check_storable(events: Sequence[EventEnvelope]) -> None:
    """Raise UnstorableEventError naming the first event whose data or ids hold a NUL."""
    for env in events:
        if "\x00" in env.user_id + env.event_type or _JSON_NUL.search(
            json.dumps(env.data, default=str)
        ):
            raise UnstorableEventError(
                f"event {env.event_id}: contains a NUL character (\\u0000), "
                "which PostgreSQL cannot store"
            )


def truncate_payload(payload: str) -> str:
    """Rejected input made storable: NUL characters (which PostgreSQL text refuses, and
    junk input may well hold) shown as U+FFFD, and cut to MAX_REJECTED_PAYLOAD_CHARS."""
    payload = payload.replace("\x00", "\ufffd")
    if len(payload) <= MAX_REJECTED_PAYLOAD_CHARS:
        return payload
    return payload[:MAX_REJECTED_PAYLOAD_CHARS] + f"...[truncated {len(payload)} chars]"


def storable_rejected(rejected: RejectedInput) -> RejectedInput:
    """The row both stores keep: payload cut and NUL-free, reason NUL-free."""
    return replace(
        rejected,
        payload=truncate_payload(rejected.payload),
        reason=rejected.reason.replace("\x00", "\ufffd"),
    )


class EventStoreError(Exception):
    """Base of the store's translated errors."""


class TransientStoreError(EventStoreError):
    """The database is unreachable or asked us to retry; the operation may be repeated."""


class UnstorableEventError(EventStoreError):
    """An event holds a value the log cannot store (e.g. a NUL character in its text).
    Raised before anything is written; the caller should reject that event."""


class NotFoundError(EventStoreError):
    """The tenant, user or revision named does not exist."""
