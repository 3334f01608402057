"""Batch metadata for the multi-LoRA ops: tokens grouped by adapter slot (SGMV segments).

Built once per forward step from the batch's slot mapping and shared by every LoRA layer
of that step, so the sort and the host synchronisation it needs are paid once, not once
per layer. Serving should pass the slot mapping as a CPU tensor and name the model's
device: the grouping then runs on the host and reaches the device in one copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

BASE_ONLY_SLOT = -1
"""Slot id of a token served by the base model alone (no adapter)."""


@dataclass(frozen=True)
class LoraBatchMeta:
    """Where each adapter's tokens lie once the batch is sorted by slot.

    Tensors live on the device of the slot mapping they were built from. Segment `g`
    covers `sorted_token_ids[segment_starts[g] : segment_starts[g] + segment_lengths[g]]`,
    all of which use slot `segment_slots[g]`; tokens with slot -1 belong to no segment.
    """

    num_tokens: int
    """T, the number of tokens in the batch (rows of x and y)."""
    token_slots: Tensor
    """[T] int64: the slot of each token in batch order; -1 = base model only."""
    sorted_token_ids: Tensor
    """[N] int64: positions of the N tokens that use an adapter, stably sorted by slot."""
    sorted_slots: Tensor
    """[N] int64: the slot of each of those tokens (token_slots[sorted_token_ids])."""
    segment_slots: Tensor
    """[G] int64: the slot of each segment (distinct, ascending)."""
    segment_starts: Tensor
    """[G] int64: where each segment starts in `sorted_token_ids`."""
    segment_lengths: Tensor
    """[G] int64: how many tokens each segment holds (all >= 1)."""
    segments: tuple[tuple[int, int, int], ...]
    """The same segments on the host as (slot, start, length), for CPU loops and checks."""
    max_segment_length: int
    """The longest segment (0 when there is none); sizes the kernels' token grid axis."""
    max_slot: int
    """The highest slot used (-1 when none), so slot range checks need no device sync."""

    @property
    def num_segments(self) -> int:
        """G, the number of adapters active in this batch."""
        return len(self.segments)

    @property
    def num_lora_tokens(self) -> int:
        """N, the number of tokens that use an adapter."""
        return int(self.sorted_token_ids.shape[0])

    @property
    def no_lora(self) -> bool:
        """True when no token uses an adapter: every op returns at once."""
        return not self.segments


def build_batch_meta(
    token_slots: Tensor, *, device: torch.device | str | None = None
) -> LoraBatchMeta:
    """Group the tokens of a batch by adapter slot.

    `token_slots` is [T] integer, one slot per token, -1 for "base model only". The
    grouping runs where `token_slots` lies; the result's tensors are put on `device`
    (default: that same device). Raises ValueError for a wrong shape, a non-integer
    dtype or a slot below -1.
    """
    if token_slots.dim() != 1:
        raise ValueError(f"token_slots must be 1-D [T], got shape {tuple(token_slots.shape)}")
    if token_slots.dtype.is_floating_point or token_slots.dtype.is_complex:
        raise ValueError(f"token_slots must be an integer tensor, got {token_slots.dtype}")
    slots = token_slots.to(torch.int64)
    num_tokens = int(slots.shape[0])
    if num_tokens and int(slots.min()) < BASE_ONLY_SLOT:
        raise ValueError(f"slot ids must be >= {BASE_ONLY_SLOT}, got {int(slots.min())}")

    lora_ids = torch.nonzero(slots >= 0, as_tuple=False).flatten()
    # stable sort keeps each adapter's tokens in batch order, so results do not depend
    # on how equal keys happen to be permuted.
    order = torch.sort(slots[lora_ids], stable=True).indices
    sorted_ids = lora_ids[order]
    sorted_slots = slots[sorted_ids]
    seg_slots, seg_lengths = torch.unique_consecutive(sorted_slots, return_counts=True)
    seg_starts = torch.cumsum(seg_lengths, 0) - seg_lengths

    host = torch.stack([seg_slots, seg_starts, seg_lengths]).cpu().tolist()
    segments = tuple((int(s), int(b), int(n)) for s, b, n in zip(*host, strict=True))

    # one buffer, one copy to the target device; the fields are views into it
    parts = [slots, sorted_ids, sorted_slots, seg_slots, seg_starts, seg_lengths]
    packed = torch.cat(parts).to(device or slots.device)
    views = torch.split(packed, [int(p.shape[0]) for p in parts])
    return LoraBatchMeta(
        num_tokens=num_tokens,
        token_slots=views[0],
        sorted_token_ids=views[1],
        sorted_slots=views[2],
        segment_slots=views[3],
        segment_starts=views[4],
        segment_lengths=views[5],
        segments=segments,
        max_segment_length=max((n for _, _, n in segments), default=0),
        max_slot=max((s for s, _, _ in segments), default=BASE_ONLY_SLOT),
    )
