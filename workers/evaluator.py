"""Measure a model (base, or base + one adapter) for the gate.

- `mean_target_nll`: token-weighted mean negative log-likelihood of the target tokens
  (the same tokens the trainer's loss covers), batched, without gradients;
- `canary_generations` + `degenerate_reason`: a few greedy generations that must not come
  out empty or stuck repeating one token;
- `adapter_norm`: the largest per-module Frobenius norm of the update (alpha/r) * B @ A;
- `evaluate`: all of it in one go, with the adapter attached once;
- `heldout_nlls`: one model on several users' held-out sets (a new prior against the
  heads it may supersede), the adapter attached once.

`MetricsCache` keeps the baseline's figures (keyed by adapter digest and data digests), so
evaluating against the same head twice costs nothing.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from tessera.workers.adapter_store import AdapterBlobConfig, load_adapter_blob, sha256_file
from tessera.workers.dataset import (
    EncodedExample,
    Example,
    collate,
    dataset_digest,
    encode_example,
    pad_token_id,
    token_ids,
)
from tessera.workers.gate import EvalMetrics
from tessera.workers.lora_attach import lora_attached
from tessera.workers.prefix_nll import (
    MIN_PREFIX,
    prefix_cache,
    shared_prefix_length,
    target_nll_after,
)
from tessera.workers.regression_set import RegressionSet
from tessera.workers.target_loss import target_nll

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_MAX_LENGTH = 256
CANARY_TOKENS = 16  # enough to see a loop or an empty answer; generation is slow on CPU
# Padded tokens per NLL batch: the whole regression set (~24 x 76) in one forward pass,
# a long held-out set in a few, activations a few tens of MB.
MAX_BATCH_TOKENS = 4096
MAX_RUN = 6  # the same word this many times in a row is degenerate
# A unit of 1-8 characters repeated 8+ times ("eeeeeeee", "ababab...", "lol lol lol ...").
_LOOP = re.compile(r"(.{1,8}?)\1{7,}", re.DOTALL)


@contextmanager
def _maybe_adapter(model: PreTrainedModel, adapter: Path | None) -> Iterator[torch.nn.Module]:
    if adapter is None:
        yield model
        return
    state, cfg = load_adapter_blob(adapter)
    with lora_attached(model, rank=cfg.r, alpha=cfg.lora_alpha, target_modules=cfg.target_modules,
                       state_dict=state) as peft_model:
        peft_model.eval()
        yield peft_model


def _token_batches(
    encoded: Sequence[EncodedExample], *, batch_size: int, max_batch_tokens: int
) -> Iterator[list[EncodedExample]]:
    """Length-sorted batches of at most `batch_size` examples and `max_batch_tokens` padded
    tokens. Short examples (the regression set's are ~60 tokens) then go through in a few
    big matrix products instead of many small ones; long ones do not blow up memory."""
    batch: list[EncodedExample] = []
    for enc in sorted(encoded, key=lambda e: len(e.input_ids)):
        width = len(enc.input_ids)  # sorted: the newest is the widest of the batch
        if batch and (len(batch) >= batch_size or width * (len(batch) + 1) > max_batch_tokens):
            yield batch
            batch = []
        batch.append(enc)
    if batch:
        yield batch


def _nll(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    *,
    max_length: int,
    batch_size: int,
) -> float:
    import torch

    if not examples:
        return math.nan
    encoded = [encode_example(tokenizer, e, max_length=max_length) for e in examples]
    pad_id = pad_token_id(tokenizer)
    total, count = 0.0, 0
    with torch.inference_mode():
        # The chat template's system turn starts every row: run it once (prefix_nll).
        shared = shared_prefix_length(encoded)
        cache = prefix_cache(model, encoded[0].input_ids[:shared]) if shared >= MIN_PREFIX \
            else None
        if cache is not None:
            encoded = [EncodedExample(e.input_ids[shared:], e.labels[shared:]) for e in encoded]
        # The sum is order-free, so sorting by length (less padding) gives the same figure.
        for chunk in _token_batches(encoded, batch_size=batch_size,
                                    max_batch_tokens=MAX_BATCH_TOKENS):
            batch = collate(chunk, pad_id=pad_id)
            nll_sum, n_tokens = (target_nll(model, batch) if cache is None
                                 else target_nll_after(model, cache, batch))
            total += float(nll_sum)
            count += n_tokens
    return total / count if count else math.nan


def mean_target_nll(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    *,
    adapter: Path | None,
    max_length: int = DEFAULT_MAX_LENGTH,
    batch_size: int = 32,
) -> float:
    """Mean NLL per target token over `examples` (NaN when there are none); `adapter`
    None measures the base model."""
    with _maybe_adapter(model, adapter) as m:
        return _nll(m, tokenizer, examples, max_length=max_length, batch_size=batch_size)


def _generate(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
    *, max_new_tokens: int,
) -> list[str]:
    """Greedy answers to all `prompts` in ONE left-padded `generate` call: on CPU a decode
    step costs about the same for 1 or 3 rows (it is bound by reading the weights), so the
    canaries take one prompt's time, not three."""
    import torch

    if not prompts:
        return []
    pad_id = pad_token_id(tokenizer)
    rows = [token_ids(tokenizer.apply_chat_template(
        [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True))
        for p in prompts]
    width = max(len(r) for r in rows)
    # Left padding: every row's last prompt token sits in the last column, where generation
    # continues; masked pads shift position ids (generate derives them from the mask).
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    # peft's wrapper forwards generate() to the base model; both have the same signature.
    generator = cast("PreTrainedModel", model)
    with torch.inference_mode():
        out = generator.generate(input_ids=ids, attention_mask=mask,  # type: ignore[operator]
                                 max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=pad_id)
    return [str(tokenizer.decode(row[width:], skip_special_tokens=True)) for row in out]


def canary_generations(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
    *, adapter: Path | None, max_new_tokens: int = CANARY_TOKENS,
) -> list[str]:
    """Greedy answers to `prompts` (chat template, one user turn each)."""
    with _maybe_adapter(model, adapter) as m:
        return _generate(m, tokenizer, prompts, max_new_tokens=max_new_tokens)


def degenerate_reason(text: str) -> str | None:
    """Why a generation is degenerate (empty, one word repeated, a tiny loop), else None."""
    words = re.findall(r"\w+|[^\w\s]", text.lower())
    if not words:
        return "empty output"
    run, longest = 1, 1
    for prev, word in itertools.pairwise(words):
        run = run + 1 if word == prev else 1
        longest = max(longest, run)
    if longest >= MAX_RUN:
        return f"a token repeated {longest} times in a row"
    if (loop := _LOOP.search(text)) is not None:
        return f"{loop.group(1)!r} repeated {len(loop.group(0)) // len(loop.group(1))} times"
    if len(words) >= 12 and len(set(words)) / len(words) < 0.25:
        return f"only {len(set(words))} distinct tokens in {len(words)}"
    return None


def adapter_norm(state_dict: Mapping[str, torch.Tensor], cfg: AdapterBlobConfig) -> float:
    """max over modules of ||(alpha/r) * B @ A||_F (0.0 for an empty adapter)."""
    import torch

    worst = 0.0
    for key, a in state_dict.items():
        if ".lora_A." not in key:
            continue
        b = state_dict[key.replace(".lora_A.", ".lora_B.")]
        delta = (b.float() @ a.float()) * cfg.scaling
        norm = float(torch.linalg.matrix_norm(delta))
        worst = norm if not math.isfinite(norm) else max(worst, norm)
        if not math.isfinite(worst):
            break
    return worst


@dataclass(frozen=True, slots=True)
class _General:
    """A model's figures that do not depend on the user: regression NLL and canaries."""

    regression_nll: float
    outputs: tuple[str, ...]


class MetricsCache:
    """Figures of models that do not change (the base, promoted heads), by content: the
    model's blob digest ("base" for none) plus the digest of the data measured. The
    regression set and canaries are then measured once per model and process, not once per
    user; a candidate's figures stay cached for when it becomes someone's baseline."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._user: OrderedDict[tuple[str, str, int], float] = OrderedDict()
        self._general: OrderedDict[tuple[str, str, int, bool], _General] = OrderedDict()
        self._max = max_entries

    def _trim(self) -> None:
        for table in (self._user, self._general):
            while len(table) > self._max:
                table.popitem(last=False)  # least recently used first


def _cached(table: OrderedDict[Any, Any] | None, key: object) -> Any:
    if table is None or key not in table:
        return None
    table.move_to_end(key)
    return table[key]


def heldout_nlls(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    example_sets: Sequence[Sequence[Example]],
    *,
    adapter: Path | None,
    max_length: int = DEFAULT_MAX_LENGTH,
    batch_size: int = 32,
    cache: MetricsCache | None = None,
) -> list[float]:
    """Mean target NLL of base (+ `adapter`) on each of `example_sets` (several users'
    held-out examples), attaching the adapter once for all the sets `cache` lacks. Keyed
    like `evaluate`'s user figure, so a head measured by its gate in this process is not
    measured again."""
    model_key = sha256_file(adapter) if adapter is not None else "base"
    keys = [(model_key, dataset_digest((), s, holdout_k=len(s)), max_length)
            for s in example_sets]
    table = cache._user if cache is not None else None
    found: list[float | None] = [_cached(table, key) for key in keys]
    missing = [i for i, value in enumerate(found) if value is None]
    if missing:
        with _maybe_adapter(model, adapter) as m:
            for i in missing:
                value = _nll(m, tokenizer, example_sets[i], max_length=max_length,
                             batch_size=batch_size)
                found[i] = value
                if table is not None:
                    table[keys[i]] = value
        if cache is not None:
            cache._trim()
    return [math.nan if value is None else value for value in found]


def regression_nll(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    adapter: Path | None,
    regression: RegressionSet,
    max_length: int = DEFAULT_MAX_LENGTH,
    batch_size: int = 32,
    cache: MetricsCache | None = None,
) -> float:
    """The regression-set NLL of base (+ `adapter`) alone, the figure `evaluate` gates
    on; shares `evaluate`'s cache (either canary setting answers it)."""
    model_key = sha256_file(adapter) if adapter is not None else "base"
    table = cache._general if cache is not None else None
    for canaries in (True, False):
        found: _General | None = _cached(table, (model_key, regression.digest, max_length,
                                                 canaries))
        if found is not None:
            return found.regression_nll
    with _maybe_adapter(model, adapter) as m:
        value = _nll(m, tokenizer, regression.examples, max_length=max_length,
                     batch_size=batch_size)
    if cache is not None:
        cache._general[(model_key, regression.digest, max_length, False)] = _General(value, ())
        cache._trim()
    return value


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    adapter: Path | None,
    heldout: Sequence[Example],
    regression: RegressionSet,
    max_length: int = DEFAULT_MAX_LENGTH,
    batch_size: int = 32,
    canaries: bool = True,
    cache: MetricsCache | None = None,
) -> EvalMetrics:
    """All gate figures for base (`adapter` None) or base + `adapter`, attached once and
    only when something is not in `cache`."""
    model_key = sha256_file(adapter) if adapter is not None else "base"
    user_key = (model_key, dataset_digest((), heldout, holdout_k=len(heldout)), max_length)
    general_key = (model_key, regression.digest, max_length, canaries)
    user: float | None = _cached(cache._user if cache else None, user_key)
    general: _General | None = _cached(cache._general if cache else None, general_key)
    norm = 0.0
    if adapter is not None:
        state, cfg = load_adapter_blob(adapter)
        norm = adapter_norm(state, cfg)
    if user is None or general is None:
        with _maybe_adapter(model, adapter) as m:
            if user is None:
                user = _nll(m, tokenizer, heldout, max_length=max_length, batch_size=batch_size)
            if general is None:
                # measured already without canaries (workers/regression_bound.py)?
                known: _General | None = _cached(cache._general if cache else None,
                                                 (*general_key[:3], False))
                reg = known.regression_nll if known is not None else _nll(
                    m, tokenizer, regression.examples, max_length=max_length,
                    batch_size=batch_size)
                outputs = _generate(m, tokenizer, regression.canary_prompts,
                                    max_new_tokens=CANARY_TOKENS) if canaries else []
                general = _General(reg, tuple(outputs))
        if cache is not None:
            cache._user[user_key] = user
            cache._general[general_key] = general
            cache._trim()
    failures = tuple(
        (prompt, f"{why} in {out[:60]!r}")
        for prompt, out in zip(regression.canary_prompts, general.outputs, strict=False)
        if (why := degenerate_reason(out)) is not None
    )
    return EvalMetrics(
        user_nll=user, regression_nll=general.regression_nll, adapter_norm=norm,
        heldout_examples=len(heldout), regression_version=regression.version,
        canary_failures=failures, canary_outputs=general.outputs,
        canary_prompts=tuple(regression.canary_prompts[: len(general.outputs)]),
    )
