"""The rules an interaction envelope must pass to enter the log, shared by both ends.

The stream worker (`events/stream_validate.py`) applies them to every record it reads;
the ingest API (`services/ingest/service.py`) applies them to every envelope it is about
to publish, on the very bytes it publishes. So whatever the worker would refuse, the API
has refused first with a `422` saying why, instead of answering `202` and leaving the
event to die in `rejected_inputs` where the client never looks.

Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from pydantic import TypeAdapter, ValidationError

from tessera.schemas.events import INTERACTION_PAYLOADS, EventEnvelope, EventType, UserId

# Only interaction kinds may enter through the ingest topic: revision and user events
# are appended by Tessera itself, and accepting them there would let any producer forge
# a promotion or a forget.
ACCEPTED_TYPES: Final = tuple(sorted(INTERACTION_PAYLOADS))
# The envelope admits the tenant prior's reserved stream id; apps may not write to it.
_USER_ID: TypeAdapter[str] = TypeAdapter(UserId)
# How JSON spells U+0000 (a raw NUL byte is not valid JSON, and 0000 has no letter case).
NUL_ESCAPE: Final = b"\\u0000"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an envelope cannot enter the log: the first offending field (a path in the
    envelope, e.g. `data.context.2.text`), what is wrong with it, a machine-readable
    kind, and `reason`, the one line the worker records (every problem, located)."""

    field: str
    problem: str
    type: str
    reason: str


def refusal_of(
    env: EventEnvelope,
    *,
    max_text_chars: int,
    raw_size: int | None = None,
    maybe_nul: bool = True,
) -> Refusal | None:
    """None when `env` may enter the log; else the first rule it breaks: an interaction
    kind, an app user id, the payload of that kind, no text longer than
    `max_text_chars`, no NUL. `raw_size` (bytes of the JSON record the envelope is
    sent as) and `maybe_nul` (whether that JSON holds a `\\u0000` escape) let short
    records skip the per-string walk; both ends pass the same values for the same
    record, so they decide alike."""
    if env.event_type not in INTERACTION_PAYLOADS:
        problem = (
            f"unknown event type {env.event_type!r} (expected one of {', '.join(ACCEPTED_TYPES)})"
        )
        return Refusal("event_type", problem, "event_type_unknown", f"event_type: {problem}")
    try:
        _USER_ID.validate_python(env.user_id)
    except ValidationError as exc:
        return pydantic_refusal(exc, prefix="user_id")
    try:
        INTERACTION_PAYLOADS[EventType(env.event_type)].model_validate(env.data)
    except ValidationError as exc:
        return pydantic_refusal(exc, prefix="data")
    if raw_size is not None and raw_size <= max_text_chars and not maybe_nul:
        # No string in the record can be longer than the record itself, and JSON can only
        # carry U+0000 escaped: the walk below would find nothing (it is a third of the
        # check's time, and almost every record is short).
        return None
    # PostgreSQL text and jsonb cannot hold U+0000: refused here with a clear reason
    # rather than failing the whole batch's transaction later.
    for path, text in strings(env.data, "data"):
        if len(text) > max_text_chars:
            problem = f"text has {len(text)} characters, limit is {max_text_chars}"
            return Refusal(path, problem, "string_too_long", f"{path}: {problem}")
        if "\x00" in text:
            problem = "contains a NUL character (U+0000), which cannot be stored"
            return Refusal(path, problem, "string_nul", f"{path}: {problem}")
    return None


def pydantic_refusal(exc: ValidationError, *, prefix: str = "") -> Refusal:
    """A pydantic error as a `Refusal`: the first error's field, and a reason listing
    `field.path: message; ...` (at most three, then a count)."""
    errors = exc.errors(include_url=False)
    parts = []
    for err in errors[:3]:
        parts.append(f"{_located(prefix, err['loc'])}: {err['msg']}")
    if len(errors) > 3:
        parts.append(f"and {len(errors) - 3} more errors")
    first = errors[0] if errors else None
    return Refusal(
        field=_located(prefix, first["loc"]) if first else prefix or "$",
        problem=first["msg"] if first else str(exc),
        type=first["type"] if first else "invalid",
        reason="; ".join(parts),
    )


def _located(prefix: str, loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in (prefix, *loc) if p != "") or "$"


def strings(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string in a decoded JSON document, with its path (`data.context.0.text`)."""
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from strings(value, f"{path}.{i}")
