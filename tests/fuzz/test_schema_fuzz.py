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

from tessera.events.stream_validate import Invalid, validate_record, validate_record_slowly
from tessera.schemas.events import EventEnvelope
from tessera.services.ingest.service import IngestConfig, IngestService, InvalidBatch

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


# Envelopes that are valid, or valid but for one field, so both decoders of the worker
# get far: the fast path (pydantic-core's parser) must never accept what the slow path
# (json.loads + the rules) refuses, nor give a different event.
_VALID_TEXT = {"event_id": "0b7e2f8e-5f55-4a8e-9a43-6d1f5e1c2a10", "event_type": "interaction.text",
               "schema_version": 1, "tenant_id": "t1", "user_id": "u1",
               "occurred_at": "2026-01-01T00:00:00Z", "data": {"text": "hi"}}
_ODD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "event_id": st.one_of(st.uuids().map(str), json_values),
    "event_type": st.sampled_from(["interaction.exchange", "interaction.feedback",
                                   "revision.promoted", "text"]),
    "schema_version": st.one_of(st.just(1.0), st.just("1"), json_values),
    "tenant_id": st.text(max_size=8),
    "user_id": st.one_of(st.just("__prior__"), st.text(max_size=8)),
    "occurred_at": st.one_of(st.datetimes().map(lambda d: d.isoformat()), st.text(max_size=12)),
    "data": st.one_of(st.fixed_dictionaries({"text": st.one_of(st.text(max_size=120),
                                                               json_values)}),
                      st.fixed_dictionaries({"text": st.just("a"),
                                             "context": st.lists(st.fixed_dictionaries(
                                                 {"role": st.just("user"),
                                                  "text": st.text(max_size=10)}),
                                                 max_size=2)}),
                      json_values),
    "extra": json_values,
}
envelope_docs = st.one_of(
    st.fixed_dictionaries({"text": st.text(max_size=150)}).map(
        lambda d: {**_VALID_TEXT, "data": d}),
    st.sampled_from(sorted(_ODD_VALUES)).flatmap(
        lambda field: _ODD_VALUES[field].map(lambda v: {**_VALID_TEXT, field: v})),
)
envelope_bytes = st.one_of(
    envelope_docs.map(lambda d: json.dumps(d).encode()),
    envelope_docs.map(lambda d: json.dumps(d, ensure_ascii=False).encode("utf-8", "replace")),
    envelope_docs.map(lambda d: b"\xef\xbb\xbf" + json.dumps(d).encode()),
)


@FUZZ
@given(raw=envelope_bytes)
def test_the_workers_fast_path_agrees_with_the_slow_one(raw: bytes) -> None:
    fast, slow = validate_record(raw, max_text_chars=100), validate_record_slowly(
        raw, max_text_chars=100)
    if isinstance(slow, Invalid):
        assert fast == slow
    else:
        assert isinstance(fast, EventEnvelope)
        assert fast.model_dump() == slow.model_dump()
