"""Target NLL of many examples that start with the same tokens, the shared start run once.

Every example the gate measures is rendered with the same chat template, so each begins
with the same system turn (22 of SmolLM2's tokens: a third of all the tokens of the
regression set and a user's held-out events together). Causal attention makes those
positions' keys and values identical in every row, so they are computed once for the
prefix, expanded (without copying) to each batch, and only the rest of every example
goes through the model. Same figure as `target_nll` on the whole rows, up to float
rounding (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from tessera.workers.dataset import IGNORE_INDEX, EncodedExample

if TYPE_CHECKING:
    import torch

# Below this many shared tokens the second forward call is not worth it.
MIN_PREFIX = 8

PrefixCache = list[tuple["torch.Tensor", "torch.Tensor"]]  # per layer: keys, values [1,H,P,D]


def shared_prefix_length(encoded: Sequence[EncodedExample]) -> int:
    """How many leading tokens every example shares, such that no target token is
    predicted from inside them and every example keeps at least one token after them."""
    if not encoded:
        return 0
    first = encoded[0].input_ids
    limit = min(len(e.input_ids) for e in encoded) - 1
    for e in encoded:
        targets = [i for i, label in enumerate(e.labels) if label != IGNORE_INDEX]
        if targets:  # token t is predicted at position t - 1, which must stay outside
            limit = min(limit, targets[0] - 1)
    length = 0
    while length < limit and all(e.input_ids[length] == first[length] for e in encoded):
        length += 1
    return length


def _decoder_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    # A peft wrapper holds the (LoRA-injected) causal LM; the base is the causal LM itself.
    get_base = getattr(model, "get_base_model", None)
    causal: torch.nn.Module = get_base() if callable(get_base) else model
    decoder: torch.nn.Module = causal.get_decoder()  # type: ignore[operator]
    head: torch.nn.Module = causal.get_output_embeddings()  # type: ignore[operator]
    return decoder, head


def prefix_cache(model: torch.nn.Module, prefix: Sequence[int]) -> PrefixCache:
    """Keys and values of every layer for `prefix` (one row), to be reused by
    `target_nll_after`. Call under `torch.inference_mode()`."""
    import torch
    from transformers import DynamicCache

    decoder, _ = _decoder_and_head(model)
    out = decoder(input_ids=torch.tensor([list(prefix)]), past_key_values=DynamicCache(),
                  use_cache=True)
    return [(layer.keys, layer.values) for layer in out.past_key_values.layers]


def target_nll_after(
    model: torch.nn.Module, cache: PrefixCache, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, int]:
    """(sum of target NLL, number of target tokens) for a collated batch of the examples'
    tokens AFTER the shared prefix whose `cache` is given. Labels of the batch's first
    column are never targets (`shared_prefix_length` guarantees it)."""
    import torch
    from transformers import DynamicCache

    decoder, head = _decoder_and_head(model)
    rows = batch["input_ids"].shape[0]
    past = DynamicCache(ddp_cache_data=[(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1))
                                        for k, v in cache])
    prefix_len = cache[0][0].shape[-2]
    mask = batch["attention_mask"]
    full_mask = torch.cat([mask.new_ones((rows, prefix_len)), mask], dim=1)
    hidden = decoder(input_ids=batch["input_ids"], attention_mask=full_mask,
                     past_key_values=past, use_cache=True).last_hidden_state  # [B, T, H]
    targets = batch["labels"][:, 1:]  # token t+1 is predicted from position t
    keep = targets != IGNORE_INDEX
    logits = head(hidden[:, :-1][keep]).float()  # [N, V]: only where a target is predicted
    nll = torch.nn.functional.cross_entropy(logits, targets[keep], reduction="sum")
    return nll, int(keep.sum())
