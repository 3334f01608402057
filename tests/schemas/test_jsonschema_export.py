"""The committed JSON Schema files match the models (run `tessera schemas export`)."""

from __future__ import annotations

import json
from pathlib import Path

from tessera.schemas.export import SCHEMA_DIR, export_schemas, render_schemas, stale_schemas


def test_committed_schemas_are_fresh() -> None:
    stale = stale_schemas(SCHEMA_DIR)
    assert stale == [], f"stale JSON Schema files {stale}: run `tessera schemas export`"


def test_staleness_is_detected(tmp_path: Path) -> None:
    export_schemas(tmp_path)
    assert stale_schemas(tmp_path) == []
    envelope = tmp_path / "event-envelope.json"
    schema = json.loads(envelope.read_text())
    del schema["properties"]["event_id"]  # as if the model had gained a field since export
    envelope.write_text(json.dumps(schema))
    (tmp_path / "gone-model.json").write_text("{}")
    (tmp_path / "text-data.json").unlink()
    assert stale_schemas(tmp_path) == ["event-envelope.json", "gone-model.json", "text-data.json"]


def test_schemas_describe_the_contract() -> None:
    schemas = {name: json.loads(text) for name, text in render_schemas().items()}
    envelope = schemas["event-envelope.json"]
    assert {"event_id", "event_type", "tenant_id", "user_id", "occurred_at", "data"} <= set(
        envelope["properties"]
    )
    item_union = schemas["ingest-request.json"]["properties"]["events"]["items"]
    assert set(item_union["discriminator"]["mapping"]) == {"exchange", "feedback", "text"}
