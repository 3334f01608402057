"""An item's `data` (the envelope's payload) holds exactly its kind's payload fields, as
a plain dump of the item without its common fields would: serialized through the
payload model, on the parsed models the server really uses (text limits added)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tessera.schemas.api import COMMON_FIELDS, item_data, limited_request_model

_COMMON = {
    "event_id": str(uuid.uuid4()),
    "user_id": "u-1",
    "occurred_at": "2026-11-23T07:00:00+01:00",
    "correlation_id": str(uuid.uuid4()),
}
_CONTEXT = [{"role": "user", "text": "earlier"}, {"role": "assistant", "text": "reply"}]


@pytest.mark.parametrize(
    "item",
    [
        {"type": "text", "text": "hello"},
        {"type": "text", "text": "hello", "context": _CONTEXT},
        {"type": "exchange", "prompt": "p", "response": "r"},
        {"type": "exchange", "prompt": "p", "response": "r", "context": _CONTEXT},
        {"type": "feedback", "target_event_id": str(uuid.uuid4()), "rating": 4},
        {"type": "feedback", "target_event_id": str(uuid.uuid4()), "edited_response": "e"},
        {
            "type": "feedback",
            "target_event_id": str(uuid.uuid4()),
            "rating": 1,
            "edited_response": "e",
        },
    ],
)
def test_item_data_is_the_payload_fields_of_the_item(item: dict[str, Any]) -> None:
    request = limited_request_model(4_000, 1_000).model_validate({"events": [_COMMON | item]})
    (parsed,) = request.events
    data = item_data(parsed)
    assert data == parsed.model_dump(mode="json", exclude=set(COMMON_FIELDS), exclude_none=True)
    expected = {k: v for k, v in item.items() if k != "type"}
    if item["type"] != "feedback":
        expected.setdefault("context", [])  # the one default a payload fills in
    assert data == expected  # none of the common fields, JSON-ready
