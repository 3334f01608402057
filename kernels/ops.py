"""The public multi-LoRA ops used by serving: validate, pick a backend, run.

    add_lora(y, x, lora_a, lora_b, scales, meta)   y[i] += (x[i] @ A[s].T) @ B[s].T * scale[s]

with s = slot[i]; tokens with slot -1 are left alone. `lora_a` / `lora_b` are stacked
slot tables: S device slots sharing one max rank R (smaller ranks zero-padded by the
caller). `add_lora` is `lora_shrink` then `lora_expand` through an [N, R] float32 buffer
whose rows follow `meta.sorted_token_ids`. Projections that share x (q/k/v, gate/up) can
share one shrink over their A stacked along R and expand from column slices of it.

Backends: "triton" (SGMV kernels; CUDA tensors, or CPU under TRITON_INTERPRET=1),
"torch" (batched or segment-wise matmuls in torch, the CPU serving path) and "reference"
(the per-adapter loop, for tests and benchmarks; `lora_shrink` / `lora_expand` have no
reference of their own and run the torch path for it). "auto" takes Triton for CUDA
tensors, or when TESSERA_FORCE_TRITON=1 and TRITON_INTERPRET=1 are both set (tests),
else torch.
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
    if backend not in ("auto", "triton", "torch", "reference"):
        raise LoraOpError(f"unknown backend {backend!r}; use auto, triton, torch or reference")
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
            raise LoraOpError(f"{name} is on {t.device} but the activations are on {device}")


def _validate_shrink(x: Tensor, lora_a: Tensor, scales: Tensor, meta: LoraBatchMeta) -> None:
    _check_table("x", x, (None, None), "[T, in]")
    num_tokens, in_features = x.shape
    _check_table("lora_a", lora_a, (None, None, in_features), f"[S, R, in={in_features}]")
    _check_table("scales", scales, (lora_a.shape[0],), f"[S={lora_a.shape[0]}]")
    _check_float("x", x)
    if lora_a.dtype != x.dtype:
        raise LoraOpError(f"lora_a is {lora_a.dtype} but x is {x.dtype}; cast the slot table")
    if not scales.dtype.is_floating_point:
        raise LoraOpError(f"scales must be a float tensor, got {scales.dtype}")
    _check_devices(x.device, lora_a=lora_a, scales=scales)
    _check_meta(meta, num_tokens, lora_a.shape[0], x.device)


def _validate_expand(y: Tensor, lora_b: Tensor, meta: LoraBatchMeta) -> None:
    _check_table("y", y, (meta.num_tokens, None), f"[T={meta.num_tokens}, out]")
    out_features = y.shape[1]
    _check_table("lora_b", lora_b, (None, out_features, None), f"[S, out={out_features}, R]")
    _check_float("y", y)
    if lora_b.dtype != y.dtype:
        raise LoraOpError(f"lora_b is {lora_b.dtype} but y is {y.dtype}; cast the slot table")
    _check_devices(y.device, lora_b=lora_b)
    _check_meta(meta, meta.num_tokens, lora_b.shape[0], y.device)


def _validate_buf(buf: Tensor, rank: int, meta: LoraBatchMeta, device: torch.device) -> None:
    n = meta.num_lora_tokens
    _check_table("buf", buf, (n, rank), f"[N={n}, R={rank}] (the lora_shrink output)")
    if buf.dtype != torch.float32:
        raise LoraOpError(f"buf must be float32 (the lora_shrink output), got {buf.dtype}")
    _check_devices(device, buf=buf)


def _shrink(
    resolved: ResolvedBackend, x: Tensor, lora_a: Tensor, scales: Tensor, meta: LoraBatchMeta
) -> Tensor:
    if resolved == "triton":
        from . import triton_sgmv

        return triton_sgmv.sgmv_shrink(x, lora_a, scales, meta)
    return torch_ops.shrink(x, lora_a, scales, meta)


def _expand(
    resolved: ResolvedBackend, y: Tensor, buf: Tensor, lora_b: Tensor, meta: LoraBatchMeta
) -> None:
    if resolved == "triton":
        from . import triton_sgmv

        triton_sgmv.sgmv_expand(y, buf, lora_b, meta)
    else:
        torch_ops.expand(y, buf, lora_b, meta)


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
    resolved = resolve_backend(backend, x.device)
    if meta.no_lora:
        return x.new_zeros((0, lora_a.shape[1]), dtype=torch.float32)
    return _shrink(resolved, x, lora_a, scales, meta)


def lora_expand(
    y: Tensor,  # [T, out]
    buf: Tensor,  # [N, R] float32, from lora_shrink
    lora_b: Tensor,  # [S, out, R]
    meta: LoraBatchMeta,
    *,
    backend: Backend = "auto",
) -> None:
    """y[t] += buf[j] @ lora_b[slot[t]].T  for t = meta.sorted_token_ids[j], in place."""
    _validate_expand(y, lora_b, meta)
    _validate_buf(buf, lora_b.shape[2], meta, y.device)
    resolved = resolve_backend(backend, y.device)
    if not meta.no_lora:
        _expand(resolved, y, buf, lora_b, meta)


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
    _validate_expand(y, lora_b, meta)
    num_slots, rank = lora_a.shape[0], lora_a.shape[1]
    if lora_b.shape[0] != num_slots or lora_b.shape[2] != rank:
        raise LoraOpError(
            f"lora_b must be [S={num_slots}, out, R={rank}] to match lora_a, "
            f"got shape {tuple(lora_b.shape)}"
        )
    resolved = resolve_backend(backend, x.device)
    if meta.no_lora:
        return
    if resolved == "reference":
        torch_ops.reference_add_lora(y, x, lora_a, lora_b, scales, meta.token_slots)
        return
    _expand(resolved, y, _shrink(resolved, x, lora_a, scales, meta), lora_b, meta)
