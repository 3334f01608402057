"""gRPC items become the same dicts HTTP bodies do, even when a field cannot convert."""

from __future__ import annotations

from typing import Any

import pytest

from tessera.schemas.proto_gen import tessera_pb2 as pb
from tessera.schemas.settings import Settings
from tessera.services.ingest.grpc_service import item_to_dict
from tessera.services.ingest.service import IngestConfig, IngestService, InvalidBatch


class _NeverPublish:
    def publish(self, topic: str, records: Any) -> Any:
        raise AssertionError("an invalid batch must not be published")


@pytest.mark.parametrize("seconds", [-62135596801, 253402300800])
def test_out_of_range_timestamp_is_a_field_error_not_a_crash(seconds: int) -> None:
    item = pb.IngestItem(user_id="u1", text=pb.Text(text="hello"))
    item.occurred_at.seconds = seconds
    converted = item_to_dict(item)
    assert "out-of-range" in converted["occurred_at"]

    service = IngestService(
        publisher=_NeverPublish(),  # type: ignore[arg-type]
        config=IngestConfig.from_settings(Settings()),
    )
    with pytest.raises(InvalidBatch) as info:
        service.parse({"events": [converted]}, tenant_id="acme")
    fields = [(e.index, e.field) for e in info.value.errors]
    assert (0, "occurred_at") in fields
