"""Measure K adapters in multi-LoRA passes over the whole group, not one revision at a time.

- `group_mean_nll`: K adapters (or the base, `None`) with their own example lists ->
  each one's token-weighted mean target NLL, equal to `evaluator.mean_target_nll` per
  adapter up to float rounding; every row is routed to its adapter's slot, so the
  examples of all adapters share length-sorted batches;
- `group_canaries`: every adapter's greedy canary answers in ONE `generate` call (on CPU a
  decode step costs about the same for 3 rows or 3K: it is bound by reading the weights);
- `evaluate_group`: the gate's figures of K candidates and their baselines: candidates'
  and baselines' held-out NLL and the candidates' regression NLL in one pass, the
  candidates' canaries in one call. A baseline's regression figures and canaries do not
  depend on the user, so they come from `evaluator.evaluate` once per distinct baseline
  (usually the tenant prior), through its `MetricsCache`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import DynamicCache

from tessera.workers.adapter_store import AdapterBlobConfig, load_adapter_blob, sha256_file
from tessera.workers.dataset import (
    IGNORE_INDEX,
    EncodedExample,
    Example,
    collate,
    encode_example,
    pad_token_id,
)
from tessera.workers.dataset import token_ids as template_ids
from tessera.workers.evaluator import (
    CANARY_TOKENS,
    DEFAULT_MAX_LENGTH,
    MetricsCache,
    adapter_norm,
    degenerate_reason,
    evaluate,
)
from tessera.workers.gate import EvalMetrics
from tessera.workers.group_lora import (
    RowRouting,
    group_lora_attached,
    length_chunks,
    row_target_nll,
)
from tessera.workers.prefix_nll import MIN_PREFIX, shared_prefix_length
from tessera.workers.regression_set import RegressionSet

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

BASE_SLOT = -1
# Padded tokens per NLL batch, as the evaluator's MAX_BATCH_TOKENS.
MAX_BATCH_TOKENS = 4096

Job = tuple[int, Sequence[Example]]  # (slot, examples): one mean NLL to measure


class _Slots:
    """Distinct adapter blobs -> slots (None -> the base model, slot -1)."""

    def __init__(self) -> None:
        self.paths: list[Path] = []
        self._by_digest: dict[str, int] = {}

    def slot(self, adapter: Path | None) -> int:
        if adapter is None:
            return BASE_SLOT
        digest = sha256_file(adapter)
        if digest not in self._by_digest:
            self._by_digest[digest] = len(self.paths)
            self.paths.append(adapter)
        return self._by_digest[digest]


def _loaded(paths: Sequence[Path]) -> tuple[list[dict[str, torch.Tensor]], AdapterBlobConfig]:
    states, configs = [], []
    for path in paths:
        state, cfg = load_adapter_blob(path)
        states.append(state)
        configs.append(cfg)
    shapes = {(c.r, c.lora_alpha, tuple(c.target_modules)) for c in configs}
    if len(shapes) > 1:
        raise ValueError(f"adapters of different shapes cannot share a pass: {sorted(shapes)}")
    return states, configs[0]


def _prefix_kv(model: torch.nn.Module, routing: RowRouting | None, prefix: Sequence[int],
               slots: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Keys and values of every layer for `prefix`, one row per slot in `slots` (the LoRA
    on v_proj makes them differ per adapter)."""
    decoder: torch.nn.Module = model.get_decoder()  # type: ignore[operator]
    ids = torch.tensor([list(prefix)] * len(slots))
    with routing.rows(slots) if routing is not None else nullcontext():
        out = decoder(input_ids=ids, past_key_values=DynamicCache(), use_cache=True)
    return [(layer.keys, layer.values) for layer in out.past_key_values.layers]


def _row_nll_after(model: torch.nn.Module, kv: list[tuple[torch.Tensor, torch.Tensor]],
                   kv_rows: torch.Tensor, batch: dict[str, torch.Tensor]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """`row_target_nll` of rows continuing a cached prefix (row i after kv[kv_rows[i]])."""
    decoder: torch.nn.Module = model.get_decoder()  # type: ignore[operator]
    head: torch.nn.Module = model.get_output_embeddings()  # type: ignore[operator]
    past = DynamicCache(ddp_cache_data=[(k.index_select(0, kv_rows), v.index_select(0, kv_rows))
                                        for k, v in kv])
    mask = batch["attention_mask"]
    full_mask = torch.cat([mask.new_ones((mask.shape[0], kv[0][0].shape[-2])), mask], dim=1)
    hidden = decoder(input_ids=batch["input_ids"], attention_mask=full_mask,
                     past_key_values=past, use_cache=True).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    nll = torch.nn.functional.cross_entropy(head(hidden[:, :-1][keep]).float(), targets[keep],
                                            reduction="none")
    sums = torch.zeros(mask.shape[0], dtype=nll.dtype).index_add(0, keep.nonzero()[:, 0], nll)
    return sums, keep.sum(dim=1)


def _run_jobs(model: torch.nn.Module, routing: RowRouting | None, jobs: Sequence[Job],
              tokenizer: PreTrainedTokenizerBase, *, max_length: int) -> list[float]:
    rows: list[tuple[int, EncodedExample]] = [
        (j, encode_example(tokenizer, e, max_length=max_length))
        for j, (_, examples) in enumerate(jobs) for e in examples]
    sums = torch.zeros(len(jobs), dtype=torch.float64)
    counts = torch.zeros(len(jobs), dtype=torch.int64)
    pad_id = pad_token_id(tokenizer)
    # The chat template's system turn starts every row of the regression set: run it once
    # per adapter, as the evaluator runs it once per call (prefix_nll).
    shared = shared_prefix_length([e for _, e in rows])
    kv_slots = sorted({slot for slot, _ in jobs})
    with torch.inference_mode():
        kv = _prefix_kv(model, routing, rows[0][1].input_ids[:shared], kv_slots) \
            if shared >= MIN_PREFIX else None
        if kv is not None:
            rows = [(j, EncodedExample(e.input_ids[shared:], e.labels[shared:])) for j, e in rows]
        for chunk in length_chunks(rows, max_tokens=MAX_BATCH_TOKENS):
            job_ids = torch.tensor([j for j, _ in chunk])
            batch = collate([e for _, e in chunk], pad_id=pad_id)
            row_slots = [jobs[j][0] for j, _ in chunk]
            with routing.rows(row_slots) if routing is not None else nullcontext():
                if kv is None:
                    row_nll, row_n = row_target_nll(model, batch)
                else:
                    kv_rows = torch.tensor([kv_slots.index(s) for s in row_slots])
                    row_nll, row_n = _row_nll_after(model, kv, kv_rows, batch)
            sums.index_add_(0, job_ids, row_nll.double())
            counts.index_add_(0, job_ids, row_n)
    return [float(s / n) if n else math.nan for s, n in zip(sums, counts, strict=True)]


def _nll_jobs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, paths: Sequence[Path],
              passes: Sequence[Sequence[Job]], *, max_length: int) -> list[list[float]]:
    """Mean target NLL per job, each pass's jobs in one multi-LoRA pass over `paths`' slots
    (passes differ by their shared prefix: the regression set's apart from users' data)."""
    if not paths:
        return [_run_jobs(model, None, jobs, tokenizer, max_length=max_length)
                for jobs in passes]
    states, cfg = _loaded(paths)
    with group_lora_attached(model, states, scale=cfg.scaling,
                             targets=cfg.target_modules) as group:
        return [_run_jobs(model, group.routing, jobs, tokenizer, max_length=max_length)
                for jobs in passes]


def group_mean_nll(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    adapters: Sequence[Path | None],
    examples: Sequence[Sequence[Example]],
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> list[float]:
    """Mean NLL per target token of `examples[i]` under `adapters[i]` (None: the base
    model), NaN where there are no examples; one multi-LoRA pass for all of them."""
    if len(adapters) != len(examples):
        raise ValueError(f"{len(adapters)} adapters but {len(examples)} example lists")
    slots = _Slots()
    jobs = [(slots.slot(a), ex) for a, ex in zip(adapters, examples, strict=True)]
    return _nll_jobs(model, tokenizer, slots.paths, [jobs], max_length=max_length)[0]


def group_canaries(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    adapters: Sequence[Path | None],
    prompts: Sequence[str],
    *,
    max_new_tokens: int = CANARY_TOKENS,
) -> list[list[str]]:
    """Greedy answers to `prompts` under each adapter (as `evaluator.canary_generations`),
    every adapter's rows in one left-padded `generate` call."""
    if not adapters or not prompts:
        return [[] for _ in adapters]
    slots = _Slots()
    row_slots = [slots.slot(a) for a in adapters for _ in prompts]
    pad_id = pad_token_id(tokenizer)
    prompt_rows = [template_ids(tokenizer.apply_chat_template(
        [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True))
        for p in prompts]
    rows = prompt_rows * len(adapters)
    width = max(len(r) for r in rows)
    # Left padding, as the evaluator: every row's prompt ends in the last column.
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])

    def run() -> torch.Tensor:
        out: torch.Tensor = model.generate(  # type: ignore[operator]
            input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
            do_sample=False, eos_token_id=tokenizer.eos_token_id, pad_token_id=pad_id)
        return out

    with torch.inference_mode():
        if not slots.paths:
            out = run()
        else:
            states, cfg = _loaded(slots.paths)
            with group_lora_attached(model, states, scale=cfg.scaling,
                                     targets=cfg.target_modules) as group, \
                    group.routing.rows(row_slots):
                out = run()
    texts = [str(tokenizer.decode(row[width:], skip_special_tokens=True)) for row in out]
    n = len(prompts)
    return [texts[i * n:(i + 1) * n] for i in range(len(adapters))]


def _metrics(user_nll: float, regression_nll: float, outputs: Sequence[str], norm: float,
             heldout: int, regression: RegressionSet) -> EvalMetrics:
    failures = tuple(
        (prompt, f"{why} in {out[:60]!r}")
        for prompt, out in zip(regression.canary_prompts, outputs, strict=False)
        if (why := degenerate_reason(out)) is not None)
    return EvalMetrics(
        user_nll=user_nll, regression_nll=regression_nll, adapter_norm=norm,
        heldout_examples=heldout, regression_version=regression.version,
        canary_failures=failures, canary_outputs=tuple(outputs),
        canary_prompts=tuple(regression.canary_prompts[: len(outputs)]))


def evaluate_group(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    candidates: Sequence[Path],
    baselines: Sequence[Path | None],
    heldouts: Sequence[Sequence[Example]],
    regression: RegressionSet,
    max_length: int = DEFAULT_MAX_LENGTH,
    canaries: bool = True,
    cache: MetricsCache | None = None,
) -> list[tuple[EvalMetrics, EvalMetrics]]:
    """(candidate, baseline) gate figures per user, as `evaluator.evaluate` gives them one
    at a time; candidates' figures are not cached (they are new by definition)."""
    if not len(candidates) == len(baselines) == len(heldouts):
        raise ValueError("candidates, baselines and heldouts must be aligned per user")
    general = {}  # a baseline's user-independent figures, once per distinct baseline
    for base in baselines:
        key = sha256_file(base) if base is not None else "base"
        if key not in general:
            general[key] = evaluate(model, tokenizer, adapter=base, heldout=(),
                                    regression=regression, max_length=max_length,
                                    canaries=canaries, cache=cache)
    slots = _Slots()
    cand_slots = [slots.slot(c) for c in candidates]
    base_slots = [slots.slot(b) for b in baselines]
    k = len(candidates)
    users: list[Job] = [*((s, h) for s, h in zip(cand_slots, heldouts, strict=True)),
                        *((s, h) for s, h in zip(base_slots, heldouts, strict=True))]
    general_jobs: list[Job] = [(s, regression.examples) for s in cand_slots]
    user_nll, reg_nll = _nll_jobs(model, tokenizer, slots.paths, [users, general_jobs],
                                  max_length=max_length)
    outputs = group_canaries(model, tokenizer, list(candidates), regression.canary_prompts) \
        if canaries else [[] for _ in candidates]
    out = []
    for i, (cand, base) in enumerate(zip(candidates, baselines, strict=True)):
        state, cfg = load_adapter_blob(cand)
        cand_m = _metrics(user_nll[i], reg_nll[i], outputs[i], adapter_norm(state, cfg),
                          len(heldouts[i]), regression)
        g = general[sha256_file(base) if base is not None else "base"]
        base_m = _metrics(user_nll[k + i], g.regression_nll, g.canary_outputs, g.adapter_norm,
                          len(heldouts[i]), regression)
        out.append((cand_m, base_m))
    return out
