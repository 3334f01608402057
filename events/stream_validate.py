"""Validation of records read from `tessera.interactions`: raw bytes in, an envelope or a
precise reason out. Pure functions, no I/O, so every rule is unit-testable.

The HTTP/gRPC ingest API applies the same rules (`schemas.event_rules`) to the records it
publishes, but the topic is a public boundary of its own (anyone with broker access can
produce to it), so the stream worker trusts nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from tessera.schemas.event_rules import NUL_ESCAPE, pydantic_refusal, refusal_of
from tessera.schemas.events import EventEnvelope


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
        reason = _check(doc, max_text_chars, raw_size=len(raw), maybe_nul=NUL_ESCAPE in raw)
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
            env, max_text_chars, raw_size=len(raw), maybe_nul=NUL_ESCAPE in raw
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
        return pydantic_refusal(exc).reason
    return _check_envelope(env, max_text_chars, raw_size=raw_size, maybe_nul=maybe_nul)


def _check_envelope(
    env: EventEnvelope, max_text_chars: int, *, raw_size: int | None, maybe_nul: bool
) -> EventEnvelope | str:
    """The rules beyond the envelope model, shared with the ingest API (so the API
    refuses, with a 422, whatever would be refused here): see `schemas.event_rules`."""
    refusal = refusal_of(env, max_text_chars=max_text_chars, raw_size=raw_size, maybe_nul=maybe_nul)
    return env if refusal is None else refusal.reason
