"""The chitchat loader: speakers as users, turns as exchanges (or texts when they open)."""

from __future__ import annotations

from tessera.bench.chitchat import load_speakers
from tessera.schemas.api import limited_request_model


def test_selection_is_deterministic_and_respects_minimum() -> None:
    first = load_speakers(min_messages=30, limit=5, seed=7, max_chars=2000)
    again = load_speakers(min_messages=30, limit=5, seed=7, max_chars=2000)
    other = load_speakers(min_messages=30, limit=5, seed=8, max_chars=2000)
    assert [s.speaker_id for s in first] == [s.speaker_id for s in again]
    assert [s.speaker_id for s in first] != [s.speaker_id for s in other]
    assert all(len(s.messages) >= 30 for s in first)


def test_messages_become_valid_items_in_time_order() -> None:
    (speaker,) = load_speakers(min_messages=20, limit=1, seed=0, max_chars=2000)
    stamps = [m.occurred_at for m in speaker.messages]
    assert stamps == sorted(stamps)
    items = [m.as_ingest_item(speaker.speaker_id) for m in speaker.messages]
    kinds = {i["type"] for i in items}
    assert kinds <= {"exchange", "text"} and "exchange" in kinds
    for message, item in zip(speaker.messages, items, strict=True):
        if message.prompt is None:
            assert item["type"] == "text" and item["context"] == []
        else:
            assert (item["prompt"], item["response"]) == (message.prompt, message.text)
            # Context: the turns before the prompt; the speaker's own ones are "user".
            assert all(t["role"] in {"user", "other"} for t in item["context"])
    # Every item passes the API's validation, with the same limit the loader applied.
    limited_request_model(2000).model_validate({"events": items})
    # Ids are stable: a second load gives the same ones (re-sending is idempotent).
    again = load_speakers(min_messages=20, limit=1, seed=0, max_chars=2000)[0]
    assert [str(m.event_id(speaker.speaker_id)) for m in again.messages] == [
        item["event_id"] for item in items
    ]
