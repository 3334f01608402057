"""JSON Schema of the public contracts: the event envelope, the interaction payloads and
the ingest API models, written to `schemas/jsonschema/<name>.json`.

The committed files are what non-Python clients build against; a test regenerates them
in memory and fails when they differ, so a model change without `tessera schemas
export` cannot be merged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

from pydantic import BaseModel

from tessera.schemas.api import IngestAccepted, IngestRejected, IngestRequest
from tessera.schemas.events import EventEnvelope, ExchangeData, FeedbackData, TextData

SCHEMA_DIR: Final = Path(__file__).resolve().parent / "jsonschema"
DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"

# file stem -> model. Stems are stable names: clients refer to them.
SCHEMA_MODELS: Final[dict[str, type[BaseModel]]] = {
    "event-envelope": EventEnvelope,
    "exchange-data": ExchangeData,
    "feedback-data": FeedbackData,
    "text-data": TextData,
    "ingest-request": IngestRequest,
    "ingest-accepted": IngestAccepted,
    "ingest-rejected": IngestRejected,
}


def render_schemas() -> dict[str, str]:
    """`{file name: JSON text}`, deterministic (sorted keys, fixed indentation)."""
    out: dict[str, str] = {}
    for stem, model in SCHEMA_MODELS.items():
        schema = {"$schema": DIALECT, "$id": f"tessera:{stem}", **model.model_json_schema()}
        out[f"{stem}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def stale_schemas(directory: Path = SCHEMA_DIR) -> list[str]:
    """File names in `directory` that are missing, differ from the models, or are left
    over from a model that no longer exists."""
    wanted = render_schemas()
    present = {p.name for p in directory.glob("*.json")} if directory.is_dir() else set()
    stale = [n for n, text in wanted.items() if n not in present or _read(directory / n) != text]
    return sorted(stale + [n for n in present if n not in wanted])


def export_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema and remove left-over ones; returns the files that changed."""
    directory.mkdir(parents=True, exist_ok=True)
    changed: list[Path] = []
    wanted = render_schemas()
    for name, text in wanted.items():
        path = directory / name
        if not path.exists() or _read(path) != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    for path in directory.glob("*.json"):
        if path.name not in wanted:
            path.unlink()
            changed.append(path)
    return changed


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")
