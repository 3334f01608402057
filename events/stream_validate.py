"""Validation of records read from `tessera.interactions`: raw bytes in, an envelope or a
precise reason out. Pure functions, no I/O, so every rule is unit-testable.

The HTTP/gRPC ingest API validates too, but the topic is a public boundary of its own
(anyone with broker access can produce to it), so the stream worker trusts nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from tessera.schemas.events import INTERACTION_PAYLOADS, EventEnvelope, EventType, UserId

# Only interaction kinds may enter through the ingest topic: revision and user events
# are appended by Tessera itself, and accepting them here would let any producer forge
# a promotion or a forget.
_ACCEPTED_TYPES = tuple(sorted(INTERACTION_PAYLOADS))
# The envelope admits the tenant prior's reserved stream id; apps may not write to it.
_USER_ID: TypeAdapter[str] = TypeAdapter(UserId)
# How JSON spells U+0000 (a raw NUL byte is not valid JSON, and 0000 has no letter case).
_NUL_ESCAPE = b"\\u0000"


@dataclass(frozen=True, slots=True)
class Invalid:
    """Why a record cannot become an event (one line, names the field and the problem),
    and whose it was when the record said so (forgetting a user finds these rows)."""

    reason: str
    tenant_id: str | None = None
    user_id: str | None = None


def validate_record(raw: bytes | None, *, max_text_chars: int) -> EventEnvelope | Invalid:
    """Decode and check one record value. Never raises on bad input."""
    if raw is None:
        return Invalid("empty record: the value is null")
    accepted = _accept_fast(raw, max_text_chars)
    if accepted is not None:
        return accepted
    # Refused, or not decodable by the fast parser: the slow path names the reason (and
    # decides the few inputs only Python's decoder takes, such as a leading BOM).
    return validate_record_slowly(raw, max_text_chars=max_text_chars)


def validate_record_slowly(raw: bytes, *, max_text_chars: int) -> EventEnvelope | Invalid:
    """`validate_record` without its fast path: `json.loads`, then the rules on the
    document, so a refusal can name the field and the problem."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return Invalid(f"not JSON: {exc}")
    except RecursionError:
        return Invalid("not JSON: nested too deeply to decode")
    if not isinstance(doc, dict):
        return Invalid(f"not a JSON object: got {type(doc).__name__}")
    try:
        reason = _check(doc, max_text_chars, raw_size=len(raw), maybe_nul=_NUL_ESCAPE in raw)
    except Exception as exc:
        # A record that trips an unforeseen error (a validator bug, a pathological
        # document) must become a rejection, not a poison pill that crashes the worker
        # on every restart.
        return Invalid(f"could not be validated: {type(exc).__name__}: {exc}")
    if isinstance(reason, str):
        tenant, user = doc.get("tenant_id"), doc.get("user_id")
        return Invalid(
            reason,
            tenant_id=tenant if isinstance(tenant, str) else None,
            user_id=user if isinstance(user, str) else None,
        )
    return reason


def _accept_fast(raw: bytes, max_text_chars: int) -> EventEnvelope | None:
    """The envelope when `raw` passes every rule, decoded by pydantic-core's JSON parser
    straight into the model (~3x cheaper than `json.loads` + `model_validate`, which is
    most of the worker's validation time); None otherwise. It never accepts what the
    slow path refuses: where the two decoders differ (invalid UTF-8, lone surrogates, a
    BOM) this one fails, and the slow path decides."""
    try:
        env = EventEnvelope.model_validate_json(raw)
    except ValueError:  # ValidationError included
        return None
    try:
        checked = _check_envelope(
            env, max_text_chars, raw_size=len(raw), maybe_nul=_NUL_ESCAPE in raw
        )
    except Exception:  # the slow path turns it into a rejection with the reason
        return None
    return checked if isinstance(checked, EventEnvelope) else None


def _check(
    doc: dict[str, Any],
    max_text_chars: int,
    *,
    raw_size: int | None = None,
    maybe_nul: bool = True,
) -> EventEnvelope | str:
    """The envelope and payload rules. `raw_size` (bytes of the JSON the document came
    from) and `maybe_nul` (whether that JSON contains a `\\u0000` escape) let short
    records skip the per-string walk."""
    try:
        env = EventEnvelope.model_validate(doc)
    except ValidationError as exc:
        return _describe(exc)
    return _check_envelope(env, max_text_chars, raw_size=raw_size, maybe_nul=maybe_nul)


def _check_envelope(
    env: EventEnvelope, max_text_chars: int, *, raw_size: int | None, maybe_nul: bool
) -> EventEnvelope | str:
    """The rules beyond the envelope model: an interaction kind, an app user id, the
    payload of that kind, text limits and no NUL."""
    if env.event_type not in INTERACTION_PAYLOADS:
        return (
            f"event_type: unknown event type {env.event_type!r} "
            f"(expected one of {', '.join(_ACCEPTED_TYPES)})"
        )
    try:
        _USER_ID.validate_python(env.user_id)
    except ValidationError as exc:
        return _describe(exc, prefix="user_id")
    try:
        INTERACTION_PAYLOADS[EventType(env.event_type)].model_validate(env.data)
    except ValidationError as exc:
        return _describe(exc, prefix="data")
    if raw_size is not None and raw_size <= max_text_chars and not maybe_nul:
        # No string in the record can be longer than the record itself, and JSON can only
        # carry U+0000 escaped: the walk below would find nothing (it is a third of the
        # check's time, and almost every record is short).
        return env
    # PostgreSQL text and jsonb cannot hold U+0000; refuse it here with a clear reason
    # rather than fail the whole batch's transaction later.
    for path, text in _strings(env.data, "data"):
        if len(text) > max_text_chars:
            return f"{path}: text has {len(text)} characters, limit is {max_text_chars}"
        if "\x00" in text:
            return f"{path}: contains a NUL character (U+0000)"
    return env


def _describe(exc: ValidationError, *, prefix: str = "") -> str:
    """Pydantic errors as `field.path: message; ...` (at most three, then a count)."""
    parts = []
    errors = exc.errors(include_url=False)
    for err in errors[:3]:
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        parts.append(f"{loc or '$'}: {err['msg']}")
    if len(errors) > 3:
        parts.append(f"and {len(errors) - 3} more errors")
    return "; ".join(parts)


def _strings(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string in a decoded JSON document, with its path (`data.context.0.text`)."""
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, f"{path}.{i}")
