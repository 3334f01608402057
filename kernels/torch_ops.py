"""Multi-LoRA in plain torch: the per-adapter reference loop and the fast CPU path.

The reference is peft's way (one matmul pair per adapter present, in the weights' dtype)
and serves as both the correctness oracle and the slow baseline.

The fast path works on the slot-sorted tokens of `LoraBatchMeta` with two strategies,
picked per op by `_use_gather` from the measured CPU crossover (see `bench kernel`):
- gather: one batched matmul over per-token copies of the adapter weights. No Python
  loop, but it copies N*R*features weight elements; best for decode batches (about one
  token per adapter).
- segments: one matmul per active segment on the sorted tokens (SGMV done by torch).
  No weight copies, but ~28 us of call overhead per segment; best when segments are long
  (prefill) or the weights are large (rank 64, MLP widths).
Both compute in float32 and return / take the same [N, R] buffer.

All functions here assume validated inputs (see `ops.py`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .metadata import LoraBatchMeta

GATHER_ELEMENTS_PER_SEGMENT = 16_384
"""Gather while it copies at most this many weight elements per active segment.

Measured on one CPU thread (T <= 256, 1..64 adapters, ranks 8..64, widths 576/1536): a
segment's matmul costs ~28 us of overhead, a gathered weight element ~1.8 ns, so the
crossover lies near 15k elements per segment (e.g. 64 tokens / 64 adapters / rank 8:
gather 0.54 ms vs segments 1.83 ms; 256 tokens / 4 adapters: 2.0 ms vs 0.27 ms)."""


def _use_gather(meta: LoraBatchMeta, rank: int, features: int) -> bool:
    return meta.num_lora_tokens * rank * features <= GATHER_ELEMENTS_PER_SEGMENT * meta.num_segments


def reference_add_lora(
    y: Tensor,  # [T, out]
    x: Tensor,  # [T, in]
    lora_a: Tensor,  # [S, R, in]
    lora_b: Tensor,  # [S, out, R]
    scales: Tensor,  # [S]
    token_slots: Tensor,  # [T] int, -1 = base only
) -> None:
    """y[i] += (x[i] @ lora_a[slot[i]].T) @ lora_b[slot[i]].T * scales[slot[i]]  (slot[i] >= 0).

    One masked matmul pair per adapter present, in the weights' dtype, as peft computes a
    mixed batch (`adapter_names`).
    """
    for slot in torch.unique(token_slots).tolist():
        if slot < 0:
            continue
        mask = token_slots == slot
        delta = (x[mask] @ lora_a[slot].T) @ lora_b[slot].T * scales[slot].to(x.dtype)
        y[mask] += delta.to(y.dtype)


def shrink(
    x: Tensor,  # [T, in]
    lora_a: Tensor,  # [S, R, in]
    scales: Tensor,  # [S]
    meta: LoraBatchMeta,
) -> Tensor:  # [N, R] float32, rows in meta.sorted_token_ids order
    """buf[j] = (x[t] @ lora_a[slot[t]].T) * scales[slot[t]]  for t = sorted_token_ids[j]."""
    xs = x.index_select(0, meta.sorted_token_ids).float()  # [N, in]
    slots = meta.sorted_slots  # [N]
    rank = lora_a.shape[1]
    if _use_gather(meta, rank, x.shape[1]):
        a = lora_a.index_select(0, slots).float()  # [N, R, in]
        buf = torch.bmm(a, xs.unsqueeze(2)).squeeze(2)  # [N, R]
    else:
        buf = torch.cat(
            [
                F.linear(xs[start : start + n], lora_a[slot].float())
                for slot, start, n in meta.segments
            ]
        )
    return buf * scales.float().index_select(0, slots).unsqueeze(1)


def expand(
    y: Tensor,  # [T, out]
    buf: Tensor,  # [N, R] float32, rows in meta.sorted_token_ids order
    lora_b: Tensor,  # [S, out, R]
    meta: LoraBatchMeta,
) -> None:
    """y[t] += buf[j] @ lora_b[slot[t]].T  for t = sorted_token_ids[j], in place."""
    if _use_gather(meta, lora_b.shape[2], lora_b.shape[1]):
        b = lora_b.index_select(0, meta.sorted_slots).float()  # [N, out, R]
        delta = torch.bmm(b, buf.unsqueeze(2)).squeeze(2)  # [N, out]
    else:
        delta = torch.cat(
            [
                F.linear(buf[start : start + n], lora_b[slot].float())
                for slot, start, n in meta.segments
            ]
        )
    y.index_add_(0, meta.sorted_token_ids, delta.to(y.dtype))
