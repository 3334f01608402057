"""Multi-LoRA layers: the base model's target linears, each with a table of adapter slots.

Every wrapped linear holds stacked slot tables (`lora_a [S, R, in]`, `lora_b [S, out, R]`)
and one shared `scales [S]`; a forward applies
`y[t] = base(x[t]) + (x[t] @ A[slot[t]].T) @ B[slot[t]].T * scale[slot[t]]`
for each token `t`, where the token -> slot mapping is set once per forward step in a
`LoraBatchContext` shared by all layers (slot -1 = base model only). Adapters of a smaller
rank are zero-padded up to R, which leaves the product unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tessera.kernels.metadata import LoraBatchMeta, build_batch_meta
from tessera.kernels.ops import add_lora


@dataclass(frozen=True)
class LoadedAdapter:
    """An adapter in memory, ready to be copied into a slot.

    `weights` maps a module name of the base model (e.g. `model.layers.0.self_attn.q_proj`)
    to `(A [r, in], B [out, r])`; `scale` is `lora_alpha / r` as peft applies it.
    """

    digest: str
    rank: int
    scale: float
    weights: dict[str, tuple[Tensor, Tensor]]

    @property
    def n_bytes(self) -> int:
        return sum(a.nbytes + b.nbytes for a, b in self.weights.values())


class LoraBatchContext:
    """The current forward step's token -> slot mapping, shared by every LoRA layer."""

    def __init__(self) -> None:
        self.meta: LoraBatchMeta | None = None
        self.active_slots: frozenset[int] = frozenset()

    @contextmanager
    def use(self, token_slots: Tensor) -> Iterator[LoraBatchMeta]:
        """Within the block, layers apply adapters per `token_slots` ([T], batch order of
        the flattened `[B, L]` input). Outside, layers are the base model alone."""
        self.meta = build_batch_meta(token_slots)
        self.active_slots = frozenset(slot for slot, _, _ in self.meta.segments)
        try:
            yield self.meta
        finally:
            self.meta = None
            self.active_slots = frozenset()


class MultiLoraLinear(nn.Module):
    """A base `nn.Linear` plus per-slot LoRA deltas chosen per token."""

    def __init__(
        self,
        base: nn.Linear,
        *,
        n_slots: int,
        max_rank: int,
        scales: Tensor,
        context: LoraBatchContext,
    ) -> None:
        super().__init__()
        self.base = base
        self.context = context
        w = base.weight
        # plain tensors (not parameters): they never train and must not show up in
        # state_dict comparisons against the base model
        self.lora_a = torch.zeros(
            n_slots, max_rank, base.in_features, dtype=w.dtype, device=w.device
        )
        self.lora_b = torch.zeros(
            n_slots, base.out_features, max_rank, dtype=w.dtype, device=w.device
        )
        self.scales = scales
        # slots whose adapter has weights for this layer: a layer that none of the
        # batch's adapters targets (e.g. o_proj for q/v adapters) skips the LoRA ops
        self.loaded: set[int] = set()

    def forward(self, x: Tensor) -> Tensor:
        y: Tensor = self.base(x)
        meta = self.context.meta
        if meta is None or meta.no_lora or self.loaded.isdisjoint(self.context.active_slots):
            return y
        x2 = x.reshape(-1, x.shape[-1])
        y2 = y.view(-1, y.shape[-1])  # a view: add_lora writes into y itself
        if x2.shape[0] != meta.num_tokens:
            raise RuntimeError(
                f"LoRA batch context has {meta.num_tokens} tokens, layer input has {x2.shape[0]}"
            )
        add_lora(y2, x2, self.lora_a, self.lora_b, self.scales, meta)
        return y

    def set_slot(self, slot: int, a: Tensor | None, b: Tensor | None) -> None:
        """Write one adapter's A [r, in] and B [out, r] into `slot` (zeros when absent)."""
        self.loaded.discard(slot)
        if a is None or b is None:
            self.lora_a[slot].zero_()
            self.lora_b[slot].zero_()
            return
        # only the rank padding is zeroed: a loader thread places adapters while the
        # engine steps, and every op here is one more wait for the GIL
        r = a.shape[0]
        self.lora_a[slot, :r].copy_(a)
        self.lora_b[slot, :, :r].copy_(b)
        if r < self.lora_a.shape[1]:
            self.lora_a[slot, r:].zero_()
            self.lora_b[slot, :, r:].zero_()
        self.loaded.add(slot)


class LoraSlotTable:
    """All multi-LoRA layers of one model and the slot operations over them."""

    def __init__(
        self,
        model: nn.Module,
        layers: dict[str, MultiLoraLinear],
        *,
        n_slots: int,
        max_rank: int,
        scales: Tensor,
        context: LoraBatchContext,
    ) -> None:
        self.model = model
        self.layers = layers
        self.n_slots = n_slots
        self.max_rank = max_rank
        self.scales = scales
        self.context = context

    def check(self, adapter: LoadedAdapter) -> None:
        """Raise ValueError unless `adapter` fits these layers (rank, modules, shapes)."""
        if adapter.rank > self.max_rank:
            raise ValueError(
                f"adapter {adapter.digest[:12]} has rank {adapter.rank} > max rank "
                f"{self.max_rank} (raise TESSERA_INFERENCE_MAX_RANK)"
            )
        unknown = set(adapter.weights) - set(self.layers)
        if unknown:
            raise ValueError(
                f"adapter {adapter.digest[:12]} targets modules that are not wrapped: "
                f"{sorted(unknown)[:3]} (check TESSERA_INFERENCE_TARGET_MODULES)"
            )
        for name, (a, b) in adapter.weights.items():
            base = self.layers[name].base
            if tuple(a.shape) != (adapter.rank, base.in_features) or tuple(b.shape) != (
                base.out_features,
                adapter.rank,
            ):
                raise ValueError(
                    f"adapter {adapter.digest[:12]}: {name} has A {tuple(a.shape)} / B "
                    f"{tuple(b.shape)}, the layer is {base.in_features} -> {base.out_features}"
                )

    def load(self, slot: int, adapter: LoadedAdapter) -> None:
        """Copy `adapter` into `slot` of every layer (modules it lacks get zeros)."""
        if not 0 <= slot < self.n_slots:
            raise IndexError(f"slot {slot} outside 0..{self.n_slots - 1}")
        self.check(adapter)
        with torch.no_grad():
            for name, layer in self.layers.items():
                ab = adapter.weights.get(name)
                layer.set_slot(slot, *(ab if ab is not None else (None, None)))
            self.scales[slot] = adapter.scale

    def clear(self, slot: int) -> None:
        """Zero `slot` everywhere (used when an adapter is purged)."""
        with torch.no_grad():
            for layer in self.layers.values():
                layer.set_slot(slot, None, None)
            self.scales[slot] = 0.0


def wrap_model(
    model: nn.Module, *, target_modules: Sequence[str], n_slots: int, max_rank: int
) -> LoraSlotTable:
    """Replace every `nn.Linear` whose last name part is in `target_modules` with a
    `MultiLoraLinear` sharing one context and one scales table. Returns the slot table."""
    targets = set(target_modules)
    found = [
        (name, mod)
        for name, mod in model.named_modules()
        if isinstance(mod, nn.Linear) and name.rsplit(".", 1)[-1] in targets
    ]
    if not found:
        raise ValueError(f"no linear layer of the model is named any of {sorted(targets)}")
    device = found[0][1].weight.device
    scales = torch.zeros(n_slots, dtype=torch.float32, device=device)
    context = LoraBatchContext()
    layers: dict[str, MultiLoraLinear] = {}
    for name, mod in found:
        assert isinstance(mod, nn.Linear)  # narrowed above; keeps mypy exact
        wrapped = MultiLoraLinear(
            mod, n_slots=n_slots, max_rank=max_rank, scales=scales, context=context
        )
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, wrapped)
        layers[name] = wrapped
    return LoraSlotTable(
        model, layers, n_slots=n_slots, max_rank=max_rank, scales=scales, context=context
    )
