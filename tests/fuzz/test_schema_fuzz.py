"""hypothesis on the two validation boundaries, without a server: the ingest API's
parser (`IngestService.parse`) and the stream worker's record check
(`events.stream_validate.validate_record`). Arbitrary JSON and arbitrary bytes must come
out as events or as a rejection with a reason — never as any other exception."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tessera.events.stream_validate import Invalid, validate_record
from tessera.schemas.events import EventEnvelope
from tessera.services.ingest_service import IngestConfig, IngestService, InvalidBatch

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=40))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=30,
)
# Items that are nearly right, so validation goes deep instead of failing at the top.
item_fields = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "exchange", "feedback", "TEXT", ""]),
     "user_id": st.one_of(st.text(max_size=200), st.sampled_from(["u1", "../x", "a'--"]))},
    optional={"occurred_at": st.one_of(st.datetimes().map(lambda d: d.isoformat()),
                                       st.text(max_size=30), st.integers()),
              "text": json_values, "prompt": json_values, "response": json_values,
              "rating": json_values, "target_event_id": json_values, "context": json_values,
              "event_id": json_values, "correlation_id": json_values, "extra": json_values},
)
bodies = st.one_of(json_values, st.fixed_dictionaries({"events": st.lists(item_fields,
                                                                           max_size=4)}))


def _service() -> IngestService:
    config = IngestConfig(topic="unused", max_batch_events=3, max_text_chars=100,
                          max_future_skew=timedelta(minutes=5), max_past_age=timedelta(days=3650))
    # parse() never touches the publisher; nothing is sent in these tests.
    return IngestService(publisher=None, config=config)  # type: ignore[arg-type,unused-ignore]


@FUZZ
@given(body=bodies)
def test_ingest_parse_accepts_or_lists_every_problem(body: Any) -> None:
    service = _service()
    raw = json.dumps(body).encode()
    try:
        envelopes = service.parse(raw, tenant_id="t1")
    except InvalidBatch as exc:
        assert exc.detail and exc.errors, "a rejection must say why"
        assert all(e.problem for e in exc.errors)
        assert exc.too_large == any(e.field == "events" and e.type == "too_long"
                                    for e in exc.errors)
        return
    assert len(envelopes) == len(body["events"]) <= 3
    assert all(e.tenant_id == "t1" for e in envelopes)


@FUZZ
@given(raw=st.one_of(st.binary(max_size=300), bodies.map(lambda b: json.dumps(b).encode())))
def test_stream_validation_never_raises(raw: bytes) -> None:
    out = validate_record(raw, max_text_chars=100)
    assert isinstance(out, EventEnvelope | Invalid)
    if isinstance(out, Invalid):
        assert out.reason


def test_deep_and_invalid_utf8_records_are_rejections() -> None:
    deep = b"[" * 200_000 + b"]" * 200_000
    for raw in (deep, b'{"user_id": "\xff"}', b"\xed\xa0\x80", None):
        out = validate_record(raw, max_text_chars=100)
        assert isinstance(out, Invalid) and out.reason
