"""Negative log-likelihood of the target tokens only, without the full-vocabulary logits.

A causal LM's output layer (hidden -> 49k-token vocabulary for SmolLM2) is a fifth of its
weights and, run at every position, a fifth of the compute. Training and evaluation only
need it where a target token is predicted (loss on targets only), which is a small share
of each sequence (prompt and context are most of it), so we run the decoder, gather the
hidden states that predict a target token and project only those.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tessera.workers.dataset import IGNORE_INDEX

if TYPE_CHECKING:
    import torch


def _causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    # A peft wrapper holds the (LoRA-injected) causal LM; the base is the causal LM itself.
    get_base = getattr(model, "get_base_model", None)
    inner: torch.nn.Module = get_base() if callable(get_base) else model
    return inner


def target_nll(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, int]:
    """(sum of NLL over target tokens, number of target tokens) for one collated batch.

    Same value as the model's own shifted cross-entropy with `labels`, token for token.
    """
    import torch

    causal = _causal_lm(model)
    decoder = causal.get_decoder()  # type: ignore[operator]
    head = causal.get_output_embeddings()  # type: ignore[operator]
    hidden = decoder(input_ids=batch["input_ids"],
                     attention_mask=batch["attention_mask"]).last_hidden_state  # [B, T, H]
    targets = batch["labels"][:, 1:]  # token t+1 is predicted from position t
    keep = targets != IGNORE_INDEX  # [B, T-1]
    picked = hidden[:, :-1][keep]  # [N, H]
    logits = head(picked).float()  # [N, V]
    nll = torch.nn.functional.cross_entropy(logits, targets[keep], reduction="sum")
    return nll, int(keep.sum())
