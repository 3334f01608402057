"""Attach a LoRA adapter to the shared base model for one job, then take it off again.

One base model is loaded per process and reused for many users, so an adapter must never
stay behind: `lora_attached` wraps the model with peft, optionally loads a state dict
(checked key by key), and on exit `unload()`s the LoRA layers, leaving the original
modules, frozen and in eval mode, exactly as they were.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from peft import PeftModel
    from transformers import PreTrainedModel


class AdapterMismatch(ValueError):
    """A state dict does not fit the LoRA layers it was meant for."""


@contextmanager
def lora_attached(
    model: PreTrainedModel,
    *,
    rank: int,
    alpha: float,
    target_modules: Sequence[str],
    dropout: float = 0.0,
    state_dict: Mapping[str, torch.Tensor] | None = None,
) -> Iterator[PeftModel]:
    """`model` wrapped with fresh LoRA layers (A random from torch's RNG, B zero), loaded
    from `state_dict` when given; the base is restored on exit, even after an error."""
    from peft import (
        LoraConfig,
        get_peft_model,
        get_peft_model_state_dict,
        set_peft_model_state_dict,
    )

    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,  # type: ignore[arg-type]  # peft annotates int; float works
        target_modules=list(target_modules),
        lora_dropout=dropout,
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    try:
        if state_dict is not None:
            expected = set(get_peft_model_state_dict(peft_model))
            given = set(state_dict)
            if expected != given:
                missing = sorted(expected - given)[:3]
                extra = sorted(given - expected)[:3]
                raise AdapterMismatch(
                    f"adapter keys do not match rank={rank} targets={list(target_modules)}: "
                    f"missing {missing}, unexpected {extra}"
                )
            for key, tensor in get_peft_model_state_dict(peft_model).items():
                if tuple(tensor.shape) != tuple(state_dict[key].shape):
                    raise AdapterMismatch(
                        f"{key}: adapter has shape {tuple(state_dict[key].shape)}, "
                        f"the model needs {tuple(tensor.shape)}"
                    )
            set_peft_model_state_dict(peft_model, dict(state_dict))
        yield peft_model
    finally:
        base = peft_model.unload()  # drop the LoRA layers without merging them
        base.eval()
        base.requires_grad_(False)
        if hasattr(base, "peft_config"):
            del base.peft_config  # so the next get_peft_model sees a clean model
