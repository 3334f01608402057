"""hypothesis across the two validation boundaries: whatever the ingest API accepts (and
would answer 202 for), the stream worker accepts too, as the same event, and the store
can hold it. So nothing the worker would dead-letter ever gets a 202: the API refuses
it first with a 4xx that says why."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tessera.events.kafka import encode_envelope
from tessera.events.store import check_storable
from tessera.events.stream_validate import validate_record
from tessera.schemas.events import EventEnvelope
from tessera.services.ingest.service import IngestConfig, IngestService, InvalidBatch

MAX_TEXT_CHARS = 40  # near a uuid's 36 characters: every string in `data` is limited
MAX_RECORD_BYTES = 4096
PROPERTY = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

# Text the way hostile or careless clients send it: NULs and other control characters,
# non-BMP characters, lengths on both sides of the limit.
texts = st.one_of(
    st.text(max_size=MAX_TEXT_CHARS + 2),
    st.text(alphabet=st.sampled_from(["a", "\x00", "\x1f", "é", "😀", "\\", '"']),
            min_size=1, max_size=MAX_TEXT_CHARS + 2),
    st.integers(0, 2 * MAX_RECORD_BYTES).map(lambda n: "w" * n),
)
turns = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "other"]),
                                        "text": texts}), max_size=3)
common = {
    "user_id": st.one_of(st.sampled_from(["u1", "a.b@c:d-e_f"]), st.text(max_size=10)),
    "occurred_at": st.just((datetime.now(UTC) - timedelta(minutes=1)).isoformat()),
}
optional = {"event_id": st.uuids().map(str), "correlation_id": st.uuids().map(str)}
items = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": texts, **common},
                          optional={"context": turns, **optional}),
    st.fixed_dictionaries({"type": st.just("exchange"), "prompt": texts, "response": texts,
                           **common}, optional={"context": turns, **optional}),
    st.fixed_dictionaries({"type": st.just("feedback"),
                           "target_event_id": st.uuids().map(str), **common},
                          optional={"rating": st.integers(0, 6), "edited_response": texts,
                                    **optional}),
)
bodies = st.fixed_dictionaries({"events": st.lists(items, min_size=1, max_size=3)})


def _service(max_text_chars: int = MAX_TEXT_CHARS) -> IngestService:
    config = IngestConfig(topic="unused", max_batch_events=10, max_text_chars=max_text_chars,
                          max_future_skew=timedelta(minutes=5),
                          max_past_age=timedelta(days=3650), max_record_bytes=MAX_RECORD_BYTES)
    # Nothing is published here: only the API's decision is asked for.
    return IngestService(publisher=None, config=config)  # type: ignore[arg-type,unused-ignore]


def _accepted(body: dict[str, Any], as_bytes: bool) -> list[EventEnvelope] | None:
    raw: bytes | dict[str, Any] = json.dumps(body).encode() if as_bytes else body
    try:
        envelopes: list[EventEnvelope] = _service().parse(raw, tenant_id="t1")
    except InvalidBatch as exc:
        assert exc.errors and all(e.problem for e in exc.errors), "a refusal says why"
        return None
    return envelopes


@PROPERTY
@given(body=bodies, as_bytes=st.booleans())
def test_what_the_api_accepts_the_worker_stores_unchanged(
    body: dict[str, Any], as_bytes: bool  # bytes: HTTP; a decoded mapping: gRPC
) -> None:
    envelopes = _accepted(body, as_bytes)
    if envelopes is None:
        return
    for env in envelopes:
        record = encode_envelope(env)
        assert len(record) <= MAX_RECORD_BYTES
        out = validate_record(record, max_text_chars=MAX_TEXT_CHARS)
        assert isinstance(out, EventEnvelope), f"API accepted, worker refuses: {out}"
        assert out.model_dump() == env.model_dump()
    check_storable(envelopes)  # and PostgreSQL can hold it


def test_the_examples_that_used_to_get_202_then_a_dead_letter_are_refused() -> None:
    now = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    nul = {"type": "text", "user_id": "u1", "occurred_at": now, "text": "a\x00b"}
    # With a text limit under a uuid's length, the worker's limit on every string of
    # `data` refuses a feedback's target id; so must the API.
    feedback = {"type": "feedback", "user_id": "u1", "occurred_at": now, "rating": 3,
                "target_event_id": str(uuid.uuid4())}
    for item in (nul, feedback):
        for as_bytes in (True, False):
            service = _service(max_text_chars=30)
            raw: Any = json.dumps({"events": [item]}).encode() if as_bytes else {"events": [item]}
            try:
                service.parse(raw, tenant_id="t1")
            except InvalidBatch as exc:
                assert exc.errors[0].index == 0 and not exc.too_large
                continue
            raise AssertionError(f"accepted {item!r}")
