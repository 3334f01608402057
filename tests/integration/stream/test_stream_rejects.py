"""Each kind of bad record goes to the DLQ and `rejected_inputs` with its reason, and the
worker keeps going (good records after the bad ones, in the same partition, land)."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from tessera.events.store import truncate_payload
from tessera.events.stream_worker import REASON_HEADER, SOURCE_HEADER

from .support import (
    StreamEnv,
    Worker,
    consume_all,
    interaction,
    produce_raw,
    scalar,
    stored_streams,
    wait_until,
)

pytestmark = pytest.mark.integration

KEY = b"acme/alice"


def _good(n: int) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(interaction("alice", n).model_dump_json())
    return doc


def _with(n: int, **changes: Any) -> bytes:
    doc = _good(n)
    doc.update(changes)
    return json.dumps(doc).encode()


def _without(n: int, field: str) -> bytes:
    doc = _good(n)
    del doc[field]
    return json.dumps(doc).encode()


# value -> the start of the reason it must be rejected with (max_text_chars is 1000).
BAD: list[tuple[str, bytes | None, str]] = [
    ("non-JSON", b"{this is not json", "not JSON: "),
    ("not UTF-8", b"\xff\xfe\xfa", "not JSON: "),
    ("JSON, not an object", b"[1, 2, 3]", "not a JSON object: got list"),
    ("nested too deeply", b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     "not JSON: nested too deeply to decode"),
    ("null value", None, "empty record: the value is null"),
    ("missing field", _without(100, "tenant_id"), "tenant_id: Field required"),
    ("wrong type", _with(101, schema_version="two"),
     "schema_version: Input should be a valid integer"),
    ("wrong type (time)", _with(102, occurred_at=[2026]),
     "occurred_at: Input should be a valid datetime"),
    ("unknown event_type", _with(103, event_type="interaction.poke"),
     "event_type: unknown event type 'interaction.poke'"),
    ("system event_type", _with(104, event_type="revision.promoted"),
     "event_type: unknown event type 'revision.promoted'"),
    ("payload invalid", _with(105, event_type="interaction.exchange", data={"prompt": "p"}),
     "data.response: Field required"),
    ("payload extra field", _with(106, data={"text": "t", "mood": "x"}),
     "data.mood: Extra inputs are not permitted"),
    ("text too long", _with(107, data={"text": "x" * 1001}),
     "data.text: text has 1001 characters, limit is 1000"),
    ("context text too long", _with(108, data={"text": "t", "context": [
        {"role": "user", "text": "y" * 1500}]}),
     "data.context.0.text: text has 1500 characters, limit is 1000"),
    ("NUL character", _with(109, data={"text": "a\u0000b"}), "data.text: contains a NUL character"),
    ("reserved user", _with(110, user_id="~prior"), "user_id: String should match pattern"),
]


def test_each_bad_record_is_dead_lettered_with_its_reason_and_the_worker_goes_on(
    stream_env: StreamEnv, worker: Worker
) -> None:
    good_before = [interaction("alice", n) for n in range(3)]
    good_after = [interaction("alice", n) for n in range(3, 6)]
    records: list[tuple[bytes | None, bytes | None]] = [
        (KEY, ev.model_dump_json().encode()) for ev in good_before
    ]
    records += [(KEY, value) for _, value, _ in BAD]
    records += [(KEY, ev.model_dump_json().encode()) for ev in good_after]
    worker.start()
    produce_raw(stream_env, records)

    url = stream_env.database_url
    wait_until(
        "all records consumed",
        lambda: scalar(url, "SELECT coalesce(sum(last_offset + 1), 0) FROM tracking")
        >= len(records),
        timeout_s=60, worker=worker,
    )
    worker.assert_alive()

    # The good records on both sides of the bad ones are in the log, in order.
    assert stored_streams(url) == {
        ("acme", "alice"): [str(ev.event_id) for ev in good_before + good_after]
    }

    # rejected_inputs: one row per bad record, with its reason and the raw payload.
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT source, reason, payload, tenant_id, user_id FROM rejected_inputs ORDER BY id"
        ).fetchall()
    assert len(rows) == len(BAD)
    for (name, value, reason), (source, got_reason, payload, tenant, _user) in zip(
        BAD, rows, strict=True
    ):
        assert got_reason.startswith(reason), f"{name}: {got_reason!r}"
        assert source.startswith(f"kafka:{stream_env.topic}/"), name
        expected_payload = "" if value is None else value.decode("utf-8", errors="replace")
        assert payload == truncate_payload(expected_payload.replace("\x00", "\\u0000")), name
        if name in {"payload invalid", "text too long"}:
            assert tenant == "acme", "a rejection that names its tenant keeps it (for forget)"

    # The DLQ holds each bad record untouched, with the same reason and source in headers.
    dead = consume_all(stream_env.bootstrap, stream_env.dlq, expect=len(BAD))
    assert [value for _, value, _ in dead] == [value for _, value, _ in BAD]
    assert all(key == KEY for key, _, _ in dead)
    by_source = {r[0]: r[1] for r in rows}
    for _, _, headers in dead:
        source = headers[SOURCE_HEADER].decode()
        assert headers[REASON_HEADER].decode() == by_source[source]
