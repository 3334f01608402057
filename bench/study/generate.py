"""Replies of a model (base, or base + a stored adapter) to a speaker's test prompts.

Each test example's chat messages (its conversation context and the prompt it answered)
are rendered with the chat template and a generation prompt, exactly as the trainer and
the NLL see them, and the model continues them. Rows go through left-padded `generate`
calls in batches: on CPU one decode step costs about the same for 1 or 16 rows (it is
bound by reading the weights). Greedy by default, so a figure is reproducible; the
repetition options are there so a serving default can be chosen on these figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from tessera.workers.adapter_store import AdapterStore, load_adapter_blob
from tessera.workers.dataset import Example, pad_token_id, token_ids
from tessera.workers.lora_attach import lora_attached

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class GenerationConfig:
    """How the study generates replies (recorded in its JSON as `generation`)."""

    max_new_tokens: int = 32  # a chat reply's length; decode steps dominate the cost
    max_prompt_tokens: int = 192  # older context is cut first, as encode_example does
    batch_size: int = 16
    repetition_penalty: float = 1.0  # HF semantics: > 1 discourages any repeated token
    no_repeat_ngram_size: int = 0  # > 0 forbids repeating any n-gram of tokens
    # Other repetition penalties whose style figures are also reported (`generation_sweep`)
    sweep_penalties: tuple[float, ...] = ()
    # Strengths at which each personal adapter is also served pushed away from its prior
    # (bench/study/extrapolation.py; reported in `generation_sweep` as `extrapolation`)
    extrapolations: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.max_prompt_tokens < 1 or self.batch_size < 1:
            raise ValueError(f"generation sizes must be positive: {self}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if any(p <= 0 for p in self.sweep_penalties):
            raise ValueError(f"sweep penalties must be > 0, got {self.sweep_penalties}")
        if any(not math.isfinite(x) or x < 0 for x in self.extrapolations):
            raise ValueError(f"extrapolations must be finite and >= 0, got {self.extrapolations}")
        if self.no_repeat_ngram_size < 0:
            raise ValueError(f"no_repeat_ngram_size must be >= 0, got {self.no_repeat_ngram_size}")

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "decoding": "greedy"}


def prompt_ids(
    tokenizer: PreTrainedTokenizerBase, example: Example, *, max_tokens: int
) -> list[int]:
    """The example's messages + generation prompt, the oldest tokens cut beyond the cap."""
    messages = [{"role": r, "content": c} for r, c in example.messages] or [
        {"role": "user", "content": ""}]
    ids: list[int] = token_ids(tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True))
    return ids[-max_tokens:]


def _generate_batch(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, rows: Sequence[list[int]],
    config: GenerationConfig,
) -> list[str]:
    import torch

    pad_id = pad_token_id(tokenizer)
    width = max(len(r) for r in rows)
    # Left padding: every row's last prompt token sits in the last column, where generation
    # continues; generate derives position ids from the mask, so pads shift nothing.
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    generator = cast("PreTrainedModel", model)  # peft's wrapper forwards generate()
    with torch.inference_mode():
        out = generator.generate(  # type: ignore[operator]
            input_ids=ids, attention_mask=mask, max_new_tokens=config.max_new_tokens,
            do_sample=False, repetition_penalty=config.repetition_penalty,
            no_repeat_ngram_size=config.no_repeat_ngram_size,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=pad_id)
    return [str(tokenizer.decode(row[width:], skip_special_tokens=True)).strip() for row in out]


def generate_replies(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example],
    *, adapter: Path | None, config: GenerationConfig,
) -> list[str]:
    """One reply per example, in order; `adapter` None is the base model."""
    if not examples:
        return []
    rows = [prompt_ids(tokenizer, e, max_tokens=config.max_prompt_tokens) for e in examples]
    # Similar lengths batch together (less padding); replies are put back in input order.
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    replies: list[str] = [""] * len(rows)
    if adapter is None:
        _fill(model, tokenizer, rows, order, replies, config)
        return replies
    state, cfg = load_adapter_blob(adapter)
    with lora_attached(model, rank=cfg.r, alpha=cfg.lora_alpha,
                       target_modules=cfg.target_modules, state_dict=state) as peft_model:
        peft_model.eval()
        _fill(peft_model, tokenizer, rows, order, replies, config)
    return replies


def _fill(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, rows: Sequence[list[int]],
    order: Sequence[int], replies: list[str], config: GenerationConfig,
) -> None:
    for start in range(0, len(order), config.batch_size):
        chunk = order[start:start + config.batch_size]
        for i, text in zip(chunk, _generate_batch(model, tokenizer, [rows[i] for i in chunk],
                                                  config), strict=True):
            replies[i] = text


class Replies:
    """Generated replies cached by (model, data set): a model served to several speakers,
    or the prior served as someone's model, generates once per data set."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 adapters: AdapterStore, config: GenerationConfig) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self._adapters = adapters
        self.config = config
        self._cache: dict[tuple[str, str], list[str]] = {}

    def with_config(self, config: GenerationConfig) -> Replies:
        """The same model and store generating with another config (its own cache)."""
        return Replies(self._model, self._tokenizer, self._adapters, config)

    def of(self, data_key: str, examples: Sequence[Example], digest: str | None) -> list[str]:
        """Replies of the base (`digest` None) or a stored adapter to `examples`."""
        key = (digest or "base", data_key)
        if key not in self._cache:
            adapter = self._adapters.path(digest) if digest is not None else None
            self._cache[key] = generate_replies(self._model, self._tokenizer, examples,
                                                adapter=adapter, config=self.config)
        return self._cache[key]
