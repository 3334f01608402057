"""Ids, envelopes and the code version of the events the revision pipeline appends.

Ids are derived, not random: the revision id from `(tenant, user, up_to_position)` and
each event id from the revision id and the event kind. A request retried after a crash,
or handled twice by two workers during a rebalance, therefore appends the same events,
which the log's `event_id` uniqueness turns into no-ops: one request, one revision.
Event ids are unique per tenant, and the revision id hashes the tenant in, so another
tenant can neither collide with these ids nor, by sending one first, suppress them.
"""

from __future__ import annotations

import hashlib
import subprocess
import uuid
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Final

from pydantic import BaseModel

from tessera.schemas.events import EventEnvelope, EventType, utcnow

_NAMESPACE: Final = uuid.UUID("5c6f0f7e-3f55-4b8e-9a2d-7465737365ff")


def revision_id_for(tenant_id: str, user_id: str, up_to_position: int) -> str:
    """The one revision id a request `(tenant, user, up_to_position)` can produce."""
    digest = hashlib.sha256(f"{tenant_id}/{user_id}/{up_to_position}".encode()).hexdigest()
    return f"rev-{up_to_position}-{digest[:16]}"


def revision_event(
    event_type: EventType,
    payload: BaseModel,
    *,
    tenant_id: str,
    user_id: str,
    revision_id: str,
    correlation_id: uuid.UUID | None = None,
) -> EventEnvelope:
    """An envelope in the revision owner's stream with a derived, idempotent event id."""
    return EventEnvelope(
        event_id=uuid.uuid5(_NAMESPACE, f"{revision_id}/{event_type}"),
        event_type=event_type,
        tenant_id=tenant_id,
        user_id=user_id,
        occurred_at=utcnow(),
        correlation_id=correlation_id or uuid.uuid5(_NAMESPACE, revision_id),
        data=payload.model_dump(mode="json"),
    )


@lru_cache(maxsize=1)
def code_version() -> str:
    """The git commit of the source tree (with "+dirty" when it has local changes), else
    the installed package version. Recorded in every revision's provenance."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", "."],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        if commit:
            return f"git:{commit}{'+dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return f"tessera=={metadata.version('tessera')}"
    except metadata.PackageNotFoundError:
        return "tessera==unknown"
