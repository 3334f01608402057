"""Multi-LoRA in plain torch: the per-adapter reference loop and the fast CPU path.

The reference is peft's way (one masked matmul pair per adapter) and serves as both the
correctness oracle and the slow baseline. The fast path works on the slot-sorted tokens
of `LoraBatchMeta`: one gather of the LoRA tokens, one batched matmul per op over a
per-token gather of the adapter weights, and one scatter back (see `gather_bmm` below for
why this beat segment-wise matmuls on CPU).

All functions here assume validated inputs (see `ops.py`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .metadata import LoraBatchMeta


def reference_add_lora(
    y: Tensor,  # [T, out]
    x: Tensor,  # [T, in]
    lora_a: Tensor,  # [S, R, in]
    lora_b: Tensor,  # [S, out, R]
    scales: Tensor,  # [S]
    token_slots: Tensor,  # [T] int, -1 = base only
) -> None:
    """y[i] += (x[i] @ lora_a[slot[i]].T) @ lora_b[slot[i]].T * scales[slot[i]]  (slot[i] >= 0).

    One masked matmul pair per slot, in float32, as peft computes a mixed batch.
    """
    for slot in range(lora_a.shape[0]):
        mask = token_slots == slot
        if not bool(mask.any()):
            continue
        xs = x[mask].float()
        delta = (xs @ lora_a[slot].float().T) @ lora_b[slot].float().T * scales[slot].float()
        y[mask] += delta.to(y.dtype)


def shrink_sorted(
    x: Tensor,  # [T, in]
    lora_a: Tensor,  # [S, R, in]
    scales: Tensor,  # [S]
    meta: LoraBatchMeta,
) -> Tensor:  # [N, R] float32, rows in meta.sorted_token_ids order
    """buf[j] = (x[t] @ lora_a[slot[t]].T) * scales[slot[t]] for t = sorted_token_ids[j]."""
    ids = meta.sorted_token_ids
    xs = x.index_select(0, ids).float()  # [N, in]
    slots = meta.token_slots.index_select(0, ids)  # [N]
    a = lora_a.index_select(0, slots).float()  # [N, R, in]
    buf = torch.bmm(a, xs.unsqueeze(2)).squeeze(2)  # [N, R]
    return buf * scales.float().index_select(0, slots).unsqueeze(1)


def expand_sorted(
    y: Tensor,  # [T, out]
    buf: Tensor,  # [N, R] float32, rows in meta.sorted_token_ids order
    lora_b: Tensor,  # [S, out, R]
    meta: LoraBatchMeta,
) -> None:
    """y[t] += buf[j] @ lora_b[slot[t]].T for t = sorted_token_ids[j]."""
    ids = meta.sorted_token_ids
    slots = meta.token_slots.index_select(0, ids)
    b = lora_b.index_select(0, slots).float()  # [N, out, R]
    delta = torch.bmm(b, buf.unsqueeze(2)).squeeze(2)  # [N, out]
    y.index_add_(0, ids, delta.to(y.dtype))


def shrink_segments(
    x: Tensor,  # [T, in]
    lora_a: Tensor,  # [S, R, in]
    scales: Tensor,  # [S]
    meta: LoraBatchMeta,
) -> Tensor:  # [N, R] float32
    """As `shrink_sorted`, one matmul per segment (kept to measure against gather + bmm)."""
    xs = x.index_select(0, meta.sorted_token_ids).float()
    buf = xs.new_empty((xs.shape[0], lora_a.shape[1]))
    for slot, start, length in meta.segments:
        seg = xs[start : start + length]
        torch.mm(seg, lora_a[slot].float().T, out=buf[start : start + length])
        buf[start : start + length] *= float(scales[slot])
    return buf


def expand_segments(
    y: Tensor,  # [T, out]
    buf: Tensor,  # [N, R] float32
    lora_b: Tensor,  # [S, out, R]
    meta: LoraBatchMeta,
) -> None:
    """As `expand_sorted`, one matmul per segment."""
    delta = buf.new_empty((buf.shape[0], lora_b.shape[1]))
    for slot, start, length in meta.segments:
        torch.mm(
            buf[start : start + length], lora_b[slot].float().T, out=delta[start : start + length]
        )
    y.index_add_(0, meta.sorted_token_ids, delta.to(y.dtype))
