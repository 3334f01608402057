"""The running batch's model state: left-padded KV cache, attention mask, forward steps.

Rows are sequences. The KV cache is kept as plain per-layer tensors `[B, H, L, D]`,
left-padded so every row's newest token is in the last column; `mask [B, L]` marks real
positions. New sequences are prefilled together (their own left-padded batch) and then
merged in by padding both sides to the same length; finished rows are dropped with an
index select, and columns that became padding in every row are trimmed. Position ids are
each row's count of real tokens, so padding never shifts a row's rotary positions.

One forward step sets the batch's token -> adapter-slot mapping on the LoRA context, so
every row is computed with its own adapter in the same matmuls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from tessera.services.inference.lora_layers import LoraSlotTable


@dataclass
class BatchState:
    """KV tensors per layer `[B, H, L, D]`, the mask `[B, L]` and positions `[B]` (the
    number of real tokens each row holds)."""

    keys: list[Tensor]
    values: list[Tensor]
    mask: Tensor
    positions: Tensor

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])


def _pad_left(t: Tensor, length: int, dim: int) -> Tensor:
    missing = length - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


class ModelRunner:
    """Prefill, decode, merge and select over one `BatchState`; single-threaded use."""

    def __init__(self, model: nn.Module, table: LoraSlotTable, *, pad_token_id: int) -> None:
        self.model = model
        self.table = table
        self.pad_token_id = pad_token_id
        self.device = next(model.parameters()).device
        self.state: BatchState | None = None

    @property
    def rows(self) -> int:
        return 0 if self.state is None else self.state.rows

    def _forward(
        self, ids: Tensor, mask: Tensor, positions: Tensor, slots: Tensor, past: BatchState | None
    ) -> tuple[Tensor, DynamicCache]:
        cache = DynamicCache(
            ddp_cache_data=list(zip(past.keys, past.values, strict=True)) if past else None
        )
        token_slots = slots.repeat_interleave(ids.shape[1])
        with torch.inference_mode(), self.table.context.use(token_slots):
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        return out.logits[:, -1, :].float(), cache

    @staticmethod
    def _kv(cache: DynamicCache) -> tuple[list[Tensor], list[Tensor]]:
        keys: list[Tensor] = []
        values: list[Tensor] = []
        for layer in cache.layers:
            k, v = getattr(layer, "keys", None), getattr(layer, "values", None)
            if not isinstance(k, Tensor) or not isinstance(v, Tensor):
                raise TypeError(f"unsupported KV cache layer {type(layer).__name__}")
            keys.append(k)
            values.append(v)
        return keys, values

    def prefill(self, prompts: Sequence[Sequence[int]], slots: Sequence[int]) -> Tensor:
        """Run the prompts (one adapter slot each, -1 = base) and append them as new rows
        after the existing ones. Returns their last-token logits `[n, V]` (float32)."""
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("prefill needs at least one non-empty prompt")
        n, length = len(prompts), max(len(p) for p in prompts)
        ids = torch.full((n, length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((n, length), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, length - len(p) :] = torch.tensor(list(p), dtype=torch.long)
            mask[i, length - len(p) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        slot_t = torch.tensor(list(slots), dtype=torch.long, device=self.device)
        logits, cache = self._forward(ids, mask, pos, slot_t, None)
        keys, values = self._kv(cache)
        new = BatchState(keys, values, mask, mask.sum(1))
        self.state = new if self.state is None else self._concat(self.state, new)
        return logits

    def decode(self, last_tokens: Sequence[int], slots: Sequence[int]) -> Tensor:
        """One step for every row: feed each row's last token; returns logits `[B, V]`."""
        st = self.state
        if st is None or len(last_tokens) != st.rows or len(slots) != st.rows:
            raise ValueError("decode needs exactly one token and one slot per running row")
        ids = torch.tensor(list(last_tokens), dtype=torch.long, device=self.device).unsqueeze(1)
        mask = torch.cat([st.mask, st.mask.new_ones((st.rows, 1))], dim=1)
        pos = st.positions.unsqueeze(1)
        slot_t = torch.tensor(list(slots), dtype=torch.long, device=self.device)
        logits, cache = self._forward(ids, mask, pos, slot_t, st)
        keys, values = self._kv(cache)
        self.state = BatchState(keys, values, mask, st.positions + 1)
        return logits

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only `rows` (in that order); trims columns that are padding everywhere."""
        st = self.state
        if st is None:
            return
        if not rows:
            self.state = None
            return
        idx = torch.tensor(list(rows), dtype=torch.long, device=self.device)
        mask = st.mask.index_select(0, idx)
        real_cols = mask.any(0).nonzero()
        first = int(real_cols[0]) if real_cols.numel() else mask.shape[1]
        self.state = BatchState(
            [k.index_select(0, idx)[:, :, first:] for k in st.keys],
            [v.index_select(0, idx)[:, :, first:] for v in st.values],
            mask[:, first:],
            st.positions.index_select(0, idx),
        )

    @staticmethod
    def _concat(a: BatchState, b: BatchState) -> BatchState:
        length = max(a.mask.shape[1], b.mask.shape[1])
        return BatchState(
            [
                torch.cat([_pad_left(x, length, 2), _pad_left(y, length, 2)])
                for x, y in zip(a.keys, b.keys, strict=True)
            ],
            [
                torch.cat([_pad_left(x, length, 2), _pad_left(y, length, 2)])
                for x, y in zip(a.values, b.values, strict=True)
            ],
            torch.cat([_pad_left(a.mask, length, 1), _pad_left(b.mask, length, 1)]),
            torch.cat([a.positions, b.positions]),
        )
