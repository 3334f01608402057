"""SGMV multi-LoRA kernels in Triton (Punica style): shrink x -> [N, R], expand -> y.

Tokens arrive sorted by adapter slot (`LoraBatchMeta`); each program handles one tile of
one segment, so every tile reads a single adapter's weights and each weight tile is
loaded once per token tile rather than once per token. The grid's token axis is sized by
the longest segment; tiles past the end of a shorter segment exit at once.

On CPU the kernels run under TRITON_INTERPRET=1 (tests). The interpreter computes bf16
dots wrongly, so there (and for float32 inputs) the operands are upcast to float32 before
`tl.dot`; on a GPU 16-bit operands go to the tensor cores as they are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

from .metadata import LoraBatchMeta


@dataclass(frozen=True)
class SgmvConfig:
    """Tile sizes and launch shape of the SGMV kernels (all powers of two, >= 16 for tl.dot)."""

    block_m: int = 16
    """Tokens per tile."""
    block_n: int = 64
    """Output features per expand tile."""
    block_k: int = 64
    """Input features per shrink step."""
    block_r: int = 64
    """Most rank columns per tile; smaller ranks use the next power of two (>= 16)."""
    num_warps: int = 4
    num_stages: int = 2

    def __post_init__(self) -> None:
        for name in ("block_m", "block_n", "block_k", "block_r"):
            value = getattr(self, name)
            if value < 16 or value & (value - 1):
                raise ValueError(f"SgmvConfig.{name} must be a power of two >= 16, got {value}")

    def rank_block(self, rank: int) -> int:
        """The rank tile for `rank`: the next power of two, at least 16, at most block_r."""
        return min(self.block_r, max(16, int(triton.next_power_of_2(rank))))


def default_config(max_segment_length: int) -> SgmvConfig:
    """Tiles for a batch whose longest segment is `max_segment_length` tokens.

    Decode batches (a few tokens per adapter) take the smallest token tile so little work
    is masked away; prefill segments take taller tiles to reuse each weight tile more.
    """
    if max_segment_length <= 16:
        return SgmvConfig(block_m=16)
    if max_segment_length <= 64:
        return SgmvConfig(block_m=32)
    return SgmvConfig(block_m=64, num_warps=8)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _dot_mode(dtype: torch.dtype) -> tuple[bool, str]:
    """(upcast operands to float32, tl.dot input precision) for operands of `dtype`."""
    upcast = _interpreting() or dtype == torch.float32
    # float32 operands use exact ("ieee") products so results match the reference, not tf32.
    return upcast, "ieee" if upcast else "tf32"


# Triton kernels take untyped pointer and scalar arguments; the launchers below are typed.
@triton.jit  # type: ignore[untyped-decorator]
def _sgmv_shrink_kernel(  # type: ignore[no-untyped-def]
    x_ptr,
    a_ptr,
    scales_ptr,
    buf_ptr,
    sorted_ids_ptr,
    seg_slots_ptr,
    seg_starts_ptr,
    seg_lens_ptr,
    K,
    R,
    stride_xt,
    stride_xk,
    stride_as,
    stride_ar,
    stride_ak,
    stride_bt,
    stride_br,
    BLOCK_M: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    seg = tl.program_id(1)
    pid_r = tl.program_id(2)
    seg_len = tl.load(seg_lens_ptr + seg)
    if pid_m * BLOCK_M >= seg_len:
        return
    start = tl.load(seg_starts_ptr + seg)
    slot = tl.load(seg_slots_ptr + seg)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < seg_len
    tok = tl.load(sorted_ids_ptr + start + offs_m, mask=m_mask, other=0)
    offs_r = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    r_mask = offs_r < R
    offs_k = tl.arange(0, BLOCK_K)

    acc = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + offs_k
        k_mask = k < K
        x_tile = tl.load(
            x_ptr + tok[:, None] * stride_xt + k[None, :] * stride_xk,
            mask=m_mask[:, None] & k_mask[None, :],
            other=0.0,
        )  # [BLOCK_M, BLOCK_K]
        a_tile = tl.load(
            a_ptr + slot * stride_as + offs_r[None, :] * stride_ar + k[:, None] * stride_ak,
            mask=r_mask[None, :] & k_mask[:, None],
            other=0.0,
        )  # [BLOCK_K, BLOCK_R] = A[slot].T tile
        if UPCAST:
            x_tile = x_tile.to(tl.float32)
            a_tile = a_tile.to(tl.float32)
        acc += tl.dot(x_tile, a_tile, input_precision=PRECISION)

    acc *= tl.load(scales_ptr + slot).to(tl.float32)
    rows = start + offs_m
    tl.store(
        buf_ptr + rows[:, None] * stride_bt + offs_r[None, :] * stride_br,
        acc,
        mask=m_mask[:, None] & r_mask[None, :],
    )


# Triton kernels take untyped pointer and scalar arguments; the launchers below are typed.
@triton.jit  # type: ignore[untyped-decorator]
def _sgmv_expand_kernel(  # type: ignore[no-untyped-def]
    buf_ptr,
    b_ptr,
    y_ptr,
    sorted_ids_ptr,
    seg_slots_ptr,
    seg_starts_ptr,
    seg_lens_ptr,
    N,
    R,
    stride_bt,
    stride_br,
    stride_ws,
    stride_wn,
    stride_wr,
    stride_yt,
    stride_yn,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_R: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    seg = tl.program_id(1)
    num_n = tl.cdiv(N, BLOCK_N)
    pid_m = pid // num_n
    pid_n = pid % num_n
    seg_len = tl.load(seg_lens_ptr + seg)
    if pid_m * BLOCK_M >= seg_len:
        return
    start = tl.load(seg_starts_ptr + seg)
    slot = tl.load(seg_slots_ptr + seg)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < seg_len
    rows = start + offs_m
    tok = tl.load(sorted_ids_ptr + rows, mask=m_mask, other=0)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    offs_r = tl.arange(0, BLOCK_R)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for r0 in range(0, R, BLOCK_R):
        r = r0 + offs_r
        r_mask = r < R
        h_tile = tl.load(
            buf_ptr + rows[:, None] * stride_bt + r[None, :] * stride_br,
            mask=m_mask[:, None] & r_mask[None, :],
            other=0.0,
        )  # [BLOCK_M, BLOCK_R] float32
        w_tile = tl.load(
            b_ptr + slot * stride_ws + offs_n[None, :] * stride_wn + r[:, None] * stride_wr,
            mask=n_mask[None, :] & r_mask[:, None],
            other=0.0,
        )  # [BLOCK_R, BLOCK_N] = B[slot].T tile
        if UPCAST:
            w_tile = w_tile.to(tl.float32)
        else:
            h_tile = h_tile.to(w_tile.dtype)
        acc += tl.dot(h_tile, w_tile, input_precision=PRECISION)

    y_ptrs = y_ptr + tok[:, None] * stride_yt + offs_n[None, :] * stride_yn
    mask = m_mask[:, None] & n_mask[None, :]
    # each token lies in exactly one segment, so this read-modify-write has no race
    y_tile = tl.load(y_ptrs, mask=mask, other=0.0)
    tl.store(y_ptrs, (y_tile.to(tl.float32) + acc).to(y_ptr.dtype.element_ty), mask=mask)


def sgmv_shrink(
    x: Tensor,  # [T, in], any strides
    lora_a: Tensor,  # [S, R, in], any strides
    scales: Tensor,  # [S] float
    meta: LoraBatchMeta,
    config: SgmvConfig | None = None,
) -> Tensor:  # [N, R] float32, rows in meta.sorted_token_ids order
    """buf[j] = (x[t] @ lora_a[slot[t]].T) * scales[slot[t]]  for t = sorted_token_ids[j]."""
    cfg = config or default_config(meta.max_segment_length)
    in_features, rank = x.shape[1], lora_a.shape[1]
    # every row and rank column is written by exactly one program, so no zero fill
    buf = torch.empty((meta.num_lora_tokens, rank), dtype=torch.float32, device=x.device)
    if meta.no_lora:
        return buf
    block_r = cfg.rank_block(rank)
    upcast, precision = _dot_mode(x.dtype)
    grid = (
        triton.cdiv(meta.max_segment_length, cfg.block_m),
        meta.num_segments,
        triton.cdiv(rank, block_r),
    )
    _sgmv_shrink_kernel[grid](
        x,
        lora_a,
        scales,
        buf,
        meta.sorted_token_ids,
        meta.segment_slots,
        meta.segment_starts,
        meta.segment_lengths,
        in_features,
        rank,
        x.stride(0),
        x.stride(1),
        lora_a.stride(0),
        lora_a.stride(1),
        lora_a.stride(2),
        buf.stride(0),
        buf.stride(1),
        BLOCK_M=cfg.block_m,
        BLOCK_R=block_r,
        BLOCK_K=cfg.block_k,
        UPCAST=upcast,
        PRECISION=precision,
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )
    return buf


def sgmv_expand(
    y: Tensor,  # [T, out], any strides; updated in place
    buf: Tensor,  # [N, R] float32, from sgmv_shrink
    lora_b: Tensor,  # [S, out, R], any strides
    meta: LoraBatchMeta,
    config: SgmvConfig | None = None,
) -> None:
    """y[t] += buf[j] @ lora_b[slot[t]].T  for t = sorted_token_ids[j]."""
    if meta.no_lora:
        return
    cfg = config or default_config(meta.max_segment_length)
    out_features, rank = y.shape[1], lora_b.shape[2]
    upcast, precision = _dot_mode(lora_b.dtype)
    grid = (
        triton.cdiv(meta.max_segment_length, cfg.block_m) * triton.cdiv(out_features, cfg.block_n),
        meta.num_segments,
    )
    _sgmv_expand_kernel[grid](
        buf,
        lora_b,
        y,
        meta.sorted_token_ids,
        meta.segment_slots,
        meta.segment_starts,
        meta.segment_lengths,
        out_features,
        rank,
        buf.stride(0),
        buf.stride(1),
        lora_b.stride(0),
        lora_b.stride(1),
        lora_b.stride(2),
        y.stride(0),
        y.stride(1),
        BLOCK_M=cfg.block_m,
        BLOCK_N=cfg.block_n,
        BLOCK_R=cfg.rank_block(rank),
        UPCAST=upcast,
        PRECISION=precision,
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )
