"""Timing of the multi-LoRA op alone, per backend, for `tessera bench kernel`.

Each shape is one `add_lora` over a batch of `tokens` tokens spread evenly over
`adapters` adapters (every token uses one; the worst case for the op), with in = out =
`hidden` as in an attention projection. The batch metadata is built once outside the
timed region, as serving builds it once per forward step for all layers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from tessera.kernels.metadata import build_batch_meta
from tessera.kernels.ops import ResolvedBackend, add_lora

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class KernelShape:
    tokens: int
    adapters: int
    rank: int
    hidden: int
    dtype: str


@dataclass(frozen=True)
class KernelTiming:
    tokens: int
    adapters: int
    rank: int
    hidden: int
    dtype: str
    triton_ms: float | None
    """None where Triton was not timed (no GPU)."""
    torch_ms: float
    reference_ms: float
    speedup_vs_reference: float
    """reference_ms over the time of the backend serving uses on this device."""
    serving_backend: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def default_shapes(dtype: str) -> list[KernelShape]:
    """SmolLM2-135M's width (576), rank 8, decode-like and prefill-like batches."""
    grid = [
        (1, 1, 8),
        (8, 8, 8),
        (32, 32, 8),
        (64, 64, 8),
        (256, 4, 8),
        (256, 32, 8),
        (256, 64, 8),
        (64, 64, 16),
        (64, 64, 64),
    ]
    return [KernelShape(t, s, r, 576, dtype) for t, s, r in grid]


def _time_ms(
    fns: dict[str, Callable[[], None]], device: torch.device, *, warmup: int, reps: int
) -> dict[str, float]:
    """Wall time in milliseconds of each of `fns`, at the lower quintile of `reps` calls.

    The functions take turns call by call, so a burst of load from other processes hits
    them alike; the lower quintile rather than the median keeps such bursts (common on
    a shared CPU) out of the figure. CUDA calls are synchronised around each call.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: _lower_quintile(s) for name, s in samples.items()}


def _lower_quintile(samples: list[float]) -> float:
    """The sample at the 20th percentile by rank (never extrapolated, so never below the min)."""
    ordered = sorted(samples)
    return ordered[(len(ordered) - 1) // 5]


def time_shape(
    shape: KernelShape,
    device: torch.device,
    *,
    with_triton: bool,
    warmup: int = 3,
    reps: int = 20,
    seed: int = 0,
) -> KernelTiming:
    """Time `add_lora` on every backend for one shape; results are checked to agree first."""
    dtype = DTYPES[shape.dtype]
    gen = torch.Generator().manual_seed(seed)
    t, s, r, h = shape.tokens, shape.adapters, shape.rank, shape.hidden
    x = torch.randn(t, h, generator=gen).to(device, dtype)
    y = torch.zeros(t, h, device=device, dtype=dtype)
    lora_a = (torch.randn(s, r, h, generator=gen) / h**0.5).to(device, dtype)
    lora_b = (torch.randn(s, h, r, generator=gen) / r**0.5).to(device, dtype)
    scales = torch.ones(s, device=device)
    slots = torch.randperm(t, generator=gen) % s  # even spread, shuffled batch order
    meta = build_batch_meta(slots.to(device))

    backends: list[ResolvedBackend] = ["reference", "torch"]
    if with_triton:
        backends.append("triton")
    outputs = {}
    for backend in backends:
        out = torch.zeros_like(y)
        add_lora(out, x, lora_a, lora_b, scales, meta, backend=backend)
        outputs[backend] = out.float()
    for backend in backends[1:]:
        err = (outputs[backend] - outputs["reference"]).abs().max().item()
        scale = outputs["reference"].abs().max().item()
        if err > 0.05 * max(scale, 1.0):
            raise RuntimeError(f"{backend} disagrees with the reference on {shape}: {err:.3g}")

    def call(backend: ResolvedBackend) -> Callable[[], None]:
        return lambda: add_lora(y, x, lora_a, lora_b, scales, meta, backend=backend)

    ms = _time_ms({b: call(b) for b in backends}, device, warmup=warmup, reps=reps)
    serving: ResolvedBackend = "triton" if with_triton else "torch"
    return KernelTiming(
        tokens=t,
        adapters=s,
        rank=r,
        hidden=h,
        dtype=shape.dtype,
        triton_ms=round(ms["triton"], 4) if with_triton else None,
        torch_ms=round(ms["torch"], 4),
        reference_ms=round(ms["reference"], 4),
        speedup_vs_reference=round(ms["reference"] / ms[serving], 2),
        serving_backend=serving,
    )
