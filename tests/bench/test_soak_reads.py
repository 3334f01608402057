"""The soak's log checks read through events/ (markers, tracking, revision audit)."""

from __future__ import annotations

from pathlib import Path

from tessera.bench.soak import TENANT, _logged_markers, _revision_audit, _tracking_rows
from tessera.events.postgres_store import PostgresEventStore
from tessera.events.store import Tracking
from tessera.schemas.events import EventEnvelope
from tests.events.factories import evaluated, exchange, promoted, trained


def _digest(env: EventEnvelope) -> EventEnvelope:
    """The factories' digests are labels; the adapter store checks for sha256 hex."""
    return env.model_copy(update={"data": {**env.data, "adapter_digest": "a" * 64}})


def test_soak_reads(database_url: str, tmp_path: Path) -> None:
    texts = ["soak-1 0", "soak-1 1", "soak-2 0", "probe-x"]
    with PostgresEventStore(database_url) as store:
        store.append(
            [exchange(TENANT, "u", n).model_copy(update={"data": {"text": t}})
             for n, t in enumerate(texts)],
            tracking=[Tracking("ingest", "tessera.interactions", 0, 7),
                      Tracking("ingest", "other", 0, 1)],
        )
        store.append([_digest(trained(TENANT, "u", "r1")), evaluated(TENANT, "u", "r1"),
                      _digest(promoted(TENANT, "u", "r1")), _digest(trained(TENANT, "v", "r2"))])
    assert _logged_markers(database_url) == {"soak-1": 2, "soak-2": 1}
    assert _tracking_rows(database_url) == {"tessera.interactions/0": 7}
    audit = _revision_audit(database_url, tmp_path / "adapters")
    assert audit == {"revisions_promoted": 1, "revisions_half_promoted": 0,
                     "promoted_blobs_missing": 1, "heads": 1,
                     "served_revisions_missing_from_store": 1}
