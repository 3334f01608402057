"""The public multi-LoRA ops used by serving: validate, pick a backend, run.

    add_lora(y, x, lora_a, lora_b, scales, meta)   y[i] += (x[i] @ A[s].T) @ B[s].T * scale[s]

with s = slot[i]; tokens with slot -1 are left alone. `lora_a` / `lora_b` are stacked
slot tables: S device slots sharing one max rank R (smaller ranks zero-padded by the
caller). `add_lora` is `lora_shrink` then `lora_expand` through an [N, R] float32 buffer
whose rows follow `meta.sorted_token_ids`.

Backends: "triton" (SGMV kernels; CUDA tensors, or CPU under TRITON_INTERPRET=1),
"torch" (gather + batched matmul, the CPU serving path) and "reference" (the per-adapter
loop, for tests and benchmarks). "auto" takes Triton for CUDA tensors, or when
TESSERA_FORCE_TRITON=1 and TRITON_INTERPRET=1 are both set (tests), else torch.
"""

from __future__ import annotations

import os
from typing import Literal

import torch
from torch import Tensor

from . import torch_ops
from .metadata import LoraBatchMeta

Backend = Literal["auto", "triton", "torch", "reference"]
ResolvedBackend = Literal["triton", "torch", "reference"]

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class LoraOpError(ValueError):
    """Inputs to a multi-LoRA op that do not fit together; the message says which."""


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def resolve_backend(backend: Backend, device: torch.device) -> ResolvedBackend:
    """The backend that `backend` means for tensors on `device` (see the module doc)."""
    if backend == "auto":
        if device.type == "cuda":
            return "triton"
        if os.environ.get("TESSERA_FORCE_TRITON") == "1" and _interpreting():
            return "triton"
        return "torch"
    if backend == "triton" and device.type != "cuda" and not _interpreting():
        raise LoraOpError(
            "backend='triton' needs CUDA tensors, or TRITON_INTERPRET=1 set before the "
            "kernels are imported to run the kernels on CPU"
        )
    if backend not in ("triton", "torch", "reference"):
        raise LoraOpError(f"unknown backend {backend!r}; use auto, triton, torch or reference")
    return backend


def _check_float(name: str, t: Tensor) -> None:
    if t.dtype not in SUPPORTED_DTYPES:
        raise LoraOpError(f"{name} must be float32, float16 or bfloat16, got {t.dtype}")


def _check_table(name: str, t: Tensor, shape: tuple[int | None, ...], what: str) -> None:
    if t.dim() != len(shape) or any(
        want is not None and got != want for got, want in zip(t.shape, shape, strict=True)
    ):
        raise LoraOpError(f"{name} must be {what}, got shape {tuple(t.shape)}")


def _check_meta(meta: LoraBatchMeta, num_tokens: int, num_slots: int, device: torch.device) -> None:
    if meta.num_tokens != num_tokens:
        raise LoraOpError(
            f"meta was built for {meta.num_tokens} tokens but x has {num_tokens} rows"
        )
    if meta.max_slot >= num_slots:
        raise LoraOpError(
            f"slot {meta.max_slot} is used but the slot table holds only {num_slots} slots"
        )
    if meta.token_slots.device != device:
        raise LoraOpError(f"meta is on {meta.token_slots.device} but the tensors are on {device}")


def _check_devices(device: torch.device, **tensors: Tensor) -> None:
    for name, t in tensors.items():
        if t.device != device:
            raise LoraOpError(f"{name} is on {t.device} but x is on {device}")


def _validate_shrink(x: Tensor, lora_a: Tensor, scales: Tensor, meta: LoraBatchMeta) -> None:
    _check_table("x", x, (None, None), "[T, in]")
    num_tokens, in_features = x.shape
    _check_table("lora_a", lora_a, (None, None, in_features), f"[S, R, in={in_features}]")
    _check_table("scales", scales, (lora_a.shape[0],), f"[S={lora_a.shape[0]}]")
    _check_float("x", x)
    _check_float("lora_a", lora_a)
    if lora_a.dtype != x.dtype:
        raise LoraOpError(f"lora_a is {lora_a.dtype} but x is {x.dtype}; cast the slot table")
    if not scales.dtype.is_floating_point:
        raise LoraOpError(f"scales must be a float tensor, got {scales.dtype}")
    _check_devices(x.device, lora_a=lora_a, scales=scales)
    _check_meta(meta, num_tokens, lora_a.shape[0], x.device)


def _validate_expand(y: Tensor, buf: Tensor, lora_b: Tensor, meta: LoraBatchMeta) -> None:
    _check_table("y", y, (meta.num_tokens, None), f"[T={meta.num_tokens}, out]")
    out_features = y.shape[1]
    _check_table("lora_b", lora_b, (None, out_features, None), f"[S, out={out_features}, R]")
    rank = lora_b.shape[2]
    _check_table("buf", buf, (meta.num_lora_tokens, rank), f"[N={meta.num_lora_tokens}, R={rank}]")
    if buf.dtype != torch.float32:
        raise LoraOpError(f"buf must be float32 (the shrink output), got {buf.dtype}")
    _check_float("y", y)
    _check_float("lora_b", lora_b)
    if lora_b.dtype != y.dtype:
        raise LoraOpError(f"lora_b is {lora_b.dtype} but y is {y.dtype}; cast the slot table")
    _check_devices(y.device, buf=buf, lora_b=lora_b)
    _check_meta(meta, meta.num_tokens, lora_b.shape[0], y.device)


def lora_shrink(
    x: Tensor,  # [T, in]
    lora_a: Tensor,  # [S, R, in]
    scales: Tensor,  # [S]
    meta: LoraBatchMeta,
    *,
    backend: Backend = "auto",
) -> Tensor:  # [N, R] float32
    """buf[j] = (x[t] @ lora_a[slot[t]].T) * scales[slot[t]]  for t = meta.sorted_token_ids[j].

    Returns the [N, R] float32 buffer that `lora_expand` takes (N = tokens with slot >= 0).
    """
    _validate_shrink(x, lora_a, scales, meta)
    rank = lora_a.shape[1]
    if meta.no_lora:
        return x.new_zeros((0, rank), dtype=torch.float32)
    resolved = resolve_backend(backend, x.device)
    if resolved == "triton":
        from . import triton_sgmv

        return triton_sgmv.sgmv_shrink(x, lora_a, scales, meta)
    if resolved == "reference":
        return torch_ops.shrink_segments(x, lora_a, scales, meta)
    return torch_ops.shrink_sorted(x, lora_a, scales, meta)


def lora_expand(
    y: Tensor,  # [T, out]
    buf: Tensor,  # [N, R] float32, from lora_shrink
    lora_b: Tensor,  # [S, out, R]
    meta: LoraBatchMeta,
    *,
    backend: Backend = "auto",
) -> None:
    """y[t] += buf[j] @ lora_b[slot[t]].T  for t = meta.sorted_token_ids[j], in place."""
    _validate_expand(y, buf, lora_b, meta)
    if meta.no_lora:
        return
    resolved = resolve_backend(backend, y.device)
    if resolved == "triton":
        from . import triton_sgmv

        triton_sgmv.sgmv_expand(y, buf, lora_b, meta)
    elif resolved == "reference":
        torch_ops.expand_segments(y, buf, lora_b, meta)
    else:
        torch_ops.expand_sorted(y, buf, lora_b, meta)


def add_lora(
    y: Tensor,  # [T, out]
    x: Tensor,  # [T, in]
    lora_a: Tensor,  # [S, R, in]
    lora_b: Tensor,  # [S, out, R]
    scales: Tensor,  # [S]
    meta: LoraBatchMeta,
    *,
    backend: Backend = "auto",
) -> None:
    """y[i] += (x[i] @ lora_a[slot[i]].T) @ lora_b[slot[i]].T * scales[slot[i]]  for slot[i] >= 0.

    In place on `y`; rows with slot -1 are untouched. Raises LoraOpError (a ValueError)
    for inputs that do not fit together, before any compute.
    """
    _validate_shrink(x, lora_a, scales, meta)
    num_slots, rank = lora_a.shape[0], lora_a.shape[1]
    _check_table("y", y, (meta.num_tokens, None), f"[T={meta.num_tokens}, out]")
    _check_table(
        "lora_b",
        lora_b,
        (num_slots, y.shape[1], rank),
        f"[S={num_slots}, out={y.shape[1]}, R={rank}]",
    )
    _validate_expand(
        y, x.new_empty((meta.num_lora_tokens, rank), dtype=torch.float32), lora_b, meta
    )
    if meta.no_lora:
        return
    resolved = resolve_backend(backend, x.device)
    if resolved == "reference":
        torch_ops.reference_add_lora(y, x, lora_a, lora_b, scales, meta.token_slots)
        return
    buf = lora_shrink(x, lora_a, scales, meta, backend=resolved)
    lora_expand(y, buf, lora_b, meta, backend=resolved)
