"""Trainable multi-LoRA layers: K users' adapters in the base model at once, one per row.

Serving's multi-LoRA layers (services.inference.lora_layers) made trainable: every target
linear of the frozen base gets K slots of LoRA weights, and each row of a batch is routed
to its user's slot, so one forward/backward pass trains (or measures) K adapters:

    y[t] = base(x[t]) + (drop(x[t]) @ A[s].T * scale) @ B[s].T      s = slot of t's row

computed by the kernels' torch path (`torch_ops.shrink` / `expand`, segment or gather
matmuls on the slot-sorted tokens), which is plain autograd-friendly torch. Each slot's
A and B are separate leaf parameters, so each user keeps their own optimizer state and
gradient clipping exactly as when trained alone. Rows of different users never interact
(attention and norms are per row), so one user's gradient is the one they would get alone.

Weights and state dicts use peft's keys (`base_model.model.<module>.lora_A.weight`), so a
group's output is the same blob format `train_adapter` writes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from tessera.kernels import torch_ops
from tessera.kernels.metadata import LoraBatchMeta, build_batch_meta
from tessera.workers.dataset import IGNORE_INDEX, EncodedExample

PEFT_PREFIX = "base_model.model."


def peft_key(module_name: str, which: str) -> str:
    """peft's state-dict key of a module's LoRA weight (`which` is "lora_A" or "lora_B")."""
    return f"{PEFT_PREFIX}{module_name}.{which}.weight"


@dataclass
class RowRouting:
    """The current batch's row -> slot mapping, shared by every layer of the model.

    The token-level metadata is built once per forward step (the first layer that sees a
    new [rows, length] shape builds it; the others reuse it), so during generation each
    decode step pays one sort, not one per layer.
    """

    row_slots: Tensor | None = None  # [B] int64, -1 = base model only
    dropout: float = 0.0
    generator: torch.Generator | None = None  # seeded: dropout masks are reproducible
    _meta: LoraBatchMeta | None = field(default=None, repr=False)
    _shape: tuple[int, int] = (0, 0)

    def meta_for(self, rows: int, length: int) -> LoraBatchMeta | None:
        if self.row_slots is None:
            return None
        if rows != self.row_slots.shape[0]:
            raise RuntimeError(f"routing holds {self.row_slots.shape[0]} rows, the layer "
                               f"input has {rows}")
        if self._meta is None or self._shape != (rows, length):
            self._meta = build_batch_meta(self.row_slots.repeat_interleave(length))
            self._shape = (rows, length)
        return self._meta

    @contextmanager
    def rows(self, row_slots: Sequence[int]) -> Iterator[None]:
        """Within the block, row i of every batch uses slot `row_slots[i]`."""
        self.row_slots = torch.tensor(list(row_slots), dtype=torch.int64)
        self._meta = None
        try:
            yield
        finally:
            self.row_slots = None
            self._meta = None


class GroupLoraLinear(nn.Module):
    """A frozen `nn.Linear` plus one trainable LoRA (A [r, in], B [out, r]) per slot."""

    def __init__(self, base: nn.Linear, *, a: Sequence[Tensor], b: Sequence[Tensor],
                 scales: Tensor, routing: RowRouting) -> None:
        super().__init__()
        self.base = base
        self.routing = routing
        self.lora_a = nn.ParameterList([nn.Parameter(t.detach().clone().float()) for t in a])
        self.lora_b = nn.ParameterList([nn.Parameter(t.detach().clone().float()) for t in b])
        # a plain tensor, not a buffer: it never trains and is not part of any state dict
        self.scales = scales.float()

    def forward(self, x: Tensor) -> Tensor:
        y: Tensor = self.base(x)
        if self.routing.row_slots is not None and x.dim() != 3:
            raise RuntimeError(f"rows are routed but the layer input is {tuple(x.shape)}, "
                               "not [rows, length, features]")
        meta = self.routing.meta_for(x.shape[0], x.shape[1]) if x.dim() == 3 else None
        if meta is None or meta.no_lora:
            return y
        x2 = x.reshape(-1, x.shape[-1])
        p = self.routing.dropout
        if self.training and p > 0:
            keep = torch.empty_like(x2).bernoulli_(1 - p, generator=self.routing.generator)
            x2 = x2 * keep / (1 - p)
        # stacked per call: each slot stays its own leaf parameter (own optimizer state)
        a = torch.stack(list(self.lora_a))  # [S, R, in]
        b = torch.stack(list(self.lora_b))  # [S, out, R]
        buf = torch_ops.shrink(x2, a, self.scales, meta)  # [N, R]
        y2 = y.reshape(-1, y.shape[-1])
        torch_ops.expand(y2, buf, b, meta)  # in place on y's rows (autograd tracks it)
        return y2.view_as(y)


def length_chunks(
    rows: Sequence[tuple[int, EncodedExample]], *, max_tokens: int
) -> list[list[tuple[int, EncodedExample]]]:
    """(slot, example) rows in length-sorted chunks of at most `max_tokens` padded tokens
    (at least one row each). Mixing users lets rows of similar length share a chunk, so
    a group pads less than its users would alone; the cap bounds activation memory."""
    chunks: list[list[tuple[int, EncodedExample]]] = []
    chunk: list[tuple[int, EncodedExample]] = []
    for row in sorted(rows, key=lambda r: len(r[1].input_ids)):
        width = len(row[1].input_ids)  # sorted: the newest row is the chunk's widest
        if chunk and width * (len(chunk) + 1) > max_tokens:
            chunks.append(chunk)
            chunk = []
        chunk.append(row)
    if chunk:
        chunks.append(chunk)
    return chunks


def row_target_nll(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """(NLL summed over each row's target tokens [B], target tokens per row [B]) of a
    collated batch: `target_nll` split by row, so each row's user gets their own sum."""
    decoder: nn.Module = model.get_decoder()  # type: ignore[operator]
    head: nn.Module = model.get_output_embeddings()  # type: ignore[operator]
    hidden = decoder(input_ids=batch["input_ids"],
                     attention_mask=batch["attention_mask"]).last_hidden_state  # [B, T, H]
    targets = batch["labels"][:, 1:]  # token t+1 is predicted from position t
    keep = targets != IGNORE_INDEX  # [B, T-1]
    logits = head(hidden[:, :-1][keep]).float()  # [N, V]: only where a target is predicted
    nll = torch.nn.functional.cross_entropy(logits, targets[keep], reduction="none")  # [N]
    row_of = keep.nonzero()[:, 0]  # [N]
    rows = batch["input_ids"].shape[0]
    sums = torch.zeros(rows, dtype=nll.dtype).index_add(0, row_of, nll)
    counts = keep.sum(dim=1)
    return sums, counts


def target_linears(model: nn.Module, targets: Sequence[str]) -> list[tuple[str, nn.Linear]]:
    """(name, module) of every linear whose last name part is a target, as peft picks them."""
    wanted = set(targets)
    return [(name, mod) for name, mod in model.named_modules()
            if isinstance(mod, nn.Linear) and name.rsplit(".", 1)[-1] in wanted]


class GroupLora:
    """The injected layers of one model and per-slot access to their weights."""

    def __init__(self, layers: dict[str, GroupLoraLinear], routing: RowRouting) -> None:
        self.layers = layers
        self.routing = routing

    @property
    def n_slots(self) -> int:
        return len(next(iter(self.layers.values())).lora_a)

    def slot_parameters(self, slot: int) -> list[nn.Parameter]:
        """One slot's weights, in peft's state-dict order (sorted keys)."""
        state = self._slot_items(slot)
        return [state[key] for key in sorted(state)]

    def slot_state_dict(self, slot: int) -> dict[str, Tensor]:
        """One slot's adapter as peft's state dict (detached copies)."""
        return {k: v.detach().clone() for k, v in self._slot_items(slot).items()}

    def _slot_items(self, slot: int) -> dict[str, nn.Parameter]:
        out: dict[str, nn.Parameter] = {}
        for name, layer in self.layers.items():
            out[peft_key(name, "lora_A")] = layer.lora_a[slot]
            out[peft_key(name, "lora_B")] = layer.lora_b[slot]
        return out


def _slot_weights(name: str, states: Sequence[Mapping[str, Tensor]],
                  base: nn.Linear) -> tuple[list[Tensor], list[Tensor]]:
    a_key, b_key = peft_key(name, "lora_A"), peft_key(name, "lora_B")
    a_list, b_list = [], []
    for index, state in enumerate(states):
        if a_key not in state or b_key not in state:
            raise ValueError(f"adapter {index} has no weights for {name} ({a_key})")
        a, b = state[a_key], state[b_key]
        if a.shape[1] != base.in_features or b.shape[0] != base.out_features \
                or a.shape[0] != b.shape[1]:
            raise ValueError(f"adapter {index}: {name} has A {tuple(a.shape)} and B "
                             f"{tuple(b.shape)}; the layer is {base.in_features}->"
                             f"{base.out_features}")
        a_list.append(a)
        b_list.append(b)
    if len({t.shape[0] for t in a_list}) > 1:
        raise ValueError(f"{name}: adapters of different ranks cannot share a group")
    return a_list, b_list


@contextmanager
def group_lora_attached(
    model: nn.Module,
    states: Sequence[Mapping[str, Tensor]],
    *,
    scale: float,
    targets: Sequence[str],
    dropout: float = 0.0,
    generator: torch.Generator | None = None,
) -> Iterator[GroupLora]:
    """`model` with one slot per state dict in every target linear; the original linears
    are put back on exit (even after an error), the base frozen as it was."""
    if not states:
        raise ValueError("a group needs at least one adapter")
    routing = RowRouting(dropout=dropout, generator=generator)
    scales = torch.full((len(states),), float(scale))
    found = target_linears(model, targets)
    if not found:
        raise ValueError(f"no linear layer named {list(targets)} in the model")
    extra = set(states[0]) - {peft_key(n, w) for n, _ in found for w in ("lora_A", "lora_B")}
    if extra:
        raise ValueError(f"adapter weights for modules outside {list(targets)}: "
                         f"{sorted(extra)[:3]}")
    layers: dict[str, GroupLoraLinear] = {}
    replaced: list[tuple[nn.Module, str, nn.Linear]] = []
    try:
        for name, base in found:
            a, b = _slot_weights(name, states, base)
            layer = GroupLoraLinear(base, a=a, b=b, scales=scales, routing=routing)
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            setattr(parent, child, layer)
            replaced.append((parent, child, base))
            layers[name] = layer
        yield GroupLora(layers, routing)
    finally:
        for parent, child, base in replaced:
            setattr(parent, child, base)
