"""build_batch_meta: tokens grouped by slot, base-only tokens left out, bad input refused."""

from __future__ import annotations

import pytest
import torch

from tessera.kernels import build_batch_meta


def test_segments_follow_slot_order_and_keep_batch_order_within_a_slot() -> None:
    slots = torch.tensor([2, -1, 0, 2, 0, -1, 5, 2])
    meta = build_batch_meta(slots)

    assert meta.num_tokens == 8
    assert meta.sorted_token_ids.tolist() == [2, 4, 0, 3, 7, 6]
    assert meta.sorted_slots.tolist() == [0, 0, 2, 2, 2, 5]
    assert meta.segments == ((0, 0, 2), (2, 2, 3), (5, 5, 1))
    assert meta.segment_slots.tolist() == [0, 2, 5]
    assert meta.segment_starts.tolist() == [0, 2, 5]
    assert meta.segment_lengths.tolist() == [2, 3, 1]
    assert meta.max_segment_length == 3
    assert meta.max_slot == 5
    assert meta.num_lora_tokens == 6
    assert not meta.no_lora


def test_all_base_only_is_the_early_exit() -> None:
    meta = build_batch_meta(torch.full((4,), -1))
    assert meta.no_lora
    assert meta.num_segments == 0
    assert meta.num_lora_tokens == 0
    assert meta.max_segment_length == 0
    assert meta.max_slot == -1


def test_empty_batch() -> None:
    meta = build_batch_meta(torch.zeros(0, dtype=torch.int32))
    assert meta.num_tokens == 0 and meta.no_lora


def test_int32_slots_are_widened() -> None:
    meta = build_batch_meta(torch.tensor([1, 1, 0], dtype=torch.int32))
    assert meta.token_slots.dtype == torch.int64
    assert meta.segments == ((0, 0, 1), (1, 1, 2))


@pytest.mark.parametrize(
    ("slots", "message"),
    [
        (torch.zeros(2, 3, dtype=torch.int64), "1-D"),
        (torch.zeros(3), "integer"),
        (torch.tensor([0, -2]), ">= -1"),
    ],
)
def test_bad_slot_mappings_are_refused(slots: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_batch_meta(slots)


def test_metadata_is_put_on_the_named_device() -> None:
    target = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    meta = build_batch_meta(torch.tensor([1, -1, 1, 0]), device=target)
    for t in (meta.token_slots, meta.sorted_token_ids, meta.segment_lengths):
        assert t.device.type == target.type
    assert meta.token_slots.tolist() == [1, -1, 1, 0]
    assert meta.segments == ((0, 0, 1), (1, 1, 2))
