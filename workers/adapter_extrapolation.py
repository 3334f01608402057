"""Push a personal adapter further from the prior it was trained from: one LoRA whose
weight change is `delta_personal + s * (delta_personal - delta_prior)`.

The personal adapter starts from the tenant prior and moves toward its user; what makes
it *that user's* model is the difference. Extrapolating along it (s > 0) amplifies what
the user's data taught beyond the shared model, the weight-space form of contrasting the
two models' predictions; s = 0 is the personal adapter itself. The result is an ordinary
LoRA of rank r_personal + r_prior (A stacked, B scaled and concatenated), so anything
that serves or evaluates an adapter takes it unchanged, with no second forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from tessera.workers.adapter_store import AdapterBlobConfig

if TYPE_CHECKING:
    import torch

State = Mapping[str, "torch.Tensor"]


class IncompatibleAdapters(ValueError):
    """The two adapters do not cover the same layers of the same base."""


def _pairs(state: State) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each LoRA layer's (A, B), keyed by the module path before `.lora_A.weight`."""
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key, a in state.items():
        if key.endswith(".lora_A.weight"):
            prefix = key.removesuffix(".lora_A.weight")
            b = state.get(f"{prefix}.lora_B.weight")
            if b is None:
                raise IncompatibleAdapters(f"{prefix} has lora_A but no lora_B")
            out[prefix] = (a, b)
    return out


def extrapolate(
    personal: tuple[State, AdapterBlobConfig],
    prior: tuple[State, AdapterBlobConfig],
    strength: float,
) -> tuple[dict[str, torch.Tensor], AdapterBlobConfig]:
    """The LoRA whose delta W is `(1 + s) * delta_personal - s * delta_prior` (s =
    `strength`), as a state dict with peft's key names and its blob config."""
    import torch

    if not math.isfinite(strength) or strength < 0:
        raise ValueError(f"strength must be a finite number >= 0, got {strength}")
    (p_state, p_cfg), (q_state, q_cfg) = personal, prior
    if p_cfg.base_digest != q_cfg.base_digest:
        raise IncompatibleAdapters(
            f"different base models: {p_cfg.base_digest[:12]} vs {q_cfg.base_digest[:12]}")
    p_pairs, q_pairs = _pairs(p_state), _pairs(q_state)
    if set(p_pairs) != set(q_pairs):
        only = sorted(set(p_pairs) ^ set(q_pairs))[:3]
        raise IncompatibleAdapters(f"the adapters adapt different layers, e.g. {only}")
    rank = p_cfg.r + q_cfg.r
    out: dict[str, torch.Tensor] = {}
    for prefix, (a_p, b_p) in p_pairs.items():
        a_q, b_q = q_pairs[prefix]
        # alpha = rank below makes the new scaling 1, so each side's own scaling goes into B
        out[f"{prefix}.lora_A.weight"] = torch.cat([a_p, a_q], dim=0).float()
        out[f"{prefix}.lora_B.weight"] = torch.cat(
            [(1 + strength) * p_cfg.scaling * b_p, -strength * q_cfg.scaling * b_q], dim=1
        ).float()
    targets = tuple(sorted(set(p_cfg.target_modules) | set(q_cfg.target_modules)))
    return out, AdapterBlobConfig(rank, float(rank), targets, p_cfg.base_digest)
