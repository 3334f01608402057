"""(event_type, data) builders for `make_events` in worker tests."""

from __future__ import annotations

import uuid
from typing import Any

from tessera.schemas.events import EventType

EventSpec = tuple[str, dict[str, Any]]  # (event_type, data)


def exchange(prompt: str, response: str, **extra: Any) -> EventSpec:
    return (EventType.EXCHANGE.value, {"prompt": prompt, "response": response, **extra})


def text(body: str, **extra: Any) -> EventSpec:
    return (EventType.TEXT.value, {"text": body, **extra})


def feedback(target: uuid.UUID, **extra: Any) -> EventSpec:
    return (EventType.FEEDBACK.value, {"target_event_id": str(target), **extra})
