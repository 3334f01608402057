"""Random multi-LoRA problems and dtype-keyed tolerances shared by the kernel tests."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tessera.kernels import LoraBatchMeta, build_batch_meta

# (rtol, atol) per dtype for y after one add_lora, with |y| and |delta| of order 1. The
# reference rounds x @ A.T and the delta to the dtype (as peft does), the fast paths
# accumulate in float32 and round once, so 16-bit results differ by a few ulps.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float32: (1e-5, 1e-4),
    torch.float16: (5e-3, 1e-2),
    torch.bfloat16: (3e-2, 6e-2),
}


@dataclass(frozen=True)
class Case:
    y: Tensor  # [T, out]
    x: Tensor  # [T, in]
    lora_a: Tensor  # [S, R, in]
    lora_b: Tensor  # [S, out, R]
    scales: Tensor  # [S]
    slots: Tensor  # [T]
    meta: LoraBatchMeta


def make_case(
    *,
    tokens: int,
    adapters: int,
    rank: int,
    in_features: int,
    out_features: int,
    dtype: torch.dtype,
    base_fraction: float = 0.25,
    non_contiguous: bool = False,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> Case:
    """A batch where about `base_fraction` of the tokens use no adapter (slot -1).

    With `non_contiguous`, x is a column-strided view and y a row-padded view, as when the
    op is handed slices of a fused projection.
    """
    gen = torch.Generator().manual_seed(seed)
    slots = torch.randint(0, adapters, (tokens,), generator=gen)
    base = torch.rand(tokens, generator=gen) < base_fraction
    slots[base] = -1
    if non_contiguous:  # slice after the move: .to(device) would make a view dense again
        x = torch.randn(tokens, 2 * in_features, generator=gen).to(device, dtype)[:, ::2]
        y = torch.randn(tokens, out_features + 3, generator=gen).to(device, dtype)
        y = y[:, :out_features]
    else:
        x = torch.randn(tokens, in_features, generator=gen).to(device, dtype)
        y = torch.randn(tokens, out_features, generator=gen).to(device, dtype)
    lora_a = torch.randn(adapters, rank, in_features, generator=gen) / in_features**0.5
    lora_b = torch.randn(adapters, out_features, rank, generator=gen) / rank**0.5
    scales = torch.rand(adapters, generator=gen) + 0.5
    slots = slots.to(device)
    return Case(
        y=y,
        x=x,
        lora_a=lora_a.to(device, dtype),
        lora_b=lora_b.to(device, dtype),
        scales=scales.to(device),
        slots=slots,
        meta=build_batch_meta(slots),
    )


def exact_delta(case: Case) -> Tensor:
    """The one line of math in float64, straight from the definition: [T, out]."""
    x = case.x.double().cpu()
    out = torch.zeros(case.y.shape, dtype=torch.float64)
    for i, slot in enumerate(case.slots.tolist()):
        if slot >= 0:
            a, b = case.lora_a[slot].double().cpu(), case.lora_b[slot].double().cpu()
            out[i] = (x[i] @ a.T) @ b.T * float(case.scales[slot])
    return out
