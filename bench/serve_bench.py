"""`tessera bench serve`: multi-LoRA decode throughput and time to first token.

For a batch of B requests (equal-length prompts, greedy decoding) it times the decode
steps three ways on the same base weights:

- distinct: our serving path, B rows with B different adapters in one slot table;
- base: the same batch on the unmodified base model (no adapters, no wrappers);
- peft_mixed: peft's mixed-adapter batch (`adapter_names=`), B adapters loaded in peft.

Then it runs the engine under a steady request rate (users cycling over B adapters) and
reports the p50 / p99 time to first token. All three decode loops share one KV-cache
routine, so the figures differ only by how LoRA is applied.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from tessera.services.inference.lora_layers import LoadedAdapter, LoraSlotTable, wrap_model

ALL_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ServeBenchConfig:
    batches: tuple[int, ...] = (1, 8, 32, 64)
    prompt_tokens: int = 16
    new_tokens: int = 16
    peft_new_tokens: int = 8
    rank: int = 8
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    rounds: int = 2
    ttft_seconds: float = 6.0
    ttft_load: float = 0.5
    ttft_max_tokens: int = 16
    seed: int = 0


@dataclass(frozen=True)
class Row:
    batch: int
    distinct_tok_s: float
    base_tok_s: float
    peft_mixed_tok_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    ttft_requests: int

    @property
    def as_dict(self) -> dict[str, float | int]:
        return {
            "batch": self.batch,
            "distinct_tok_s": round(self.distinct_tok_s, 1),
            "base_tok_s": round(self.base_tok_s, 1),
            "peft_mixed_tok_s": round(self.peft_mixed_tok_s, 1),
            "distinct_vs_base": round(self.distinct_tok_s / self.base_tok_s, 3),
            "distinct_vs_peft": round(self.distinct_tok_s / self.peft_mixed_tok_s, 2),
            "ttft_p50_ms": round(self.ttft_p50_ms, 1),
            "ttft_p99_ms": round(self.ttft_p99_ms, 1),
            "ttft_requests": self.ttft_requests,
        }


def random_adapters(
    model: nn.Module, n: int, rank: int, seed: int, targets: Sequence[str]
) -> list[LoadedAdapter]:
    """`n` random rank-`rank` adapters over the `targets` linears of `model`."""
    gen = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    linears = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in targets
    ]
    out = []
    for i in range(n):
        weights = {
            name: (
                torch.randn(rank, m.in_features, generator=gen, dtype=dtype) * 0.02,
                torch.randn(m.out_features, rank, generator=gen, dtype=dtype) * 0.02,
            )
            for name, m in linears
        }
        out.append(LoadedAdapter(digest=f"bench-{i}", rank=rank, scale=2.0, weights=weights))
    return out


def peft_model_with(base: nn.Module, adapters: Sequence[LoadedAdapter]) -> nn.Module:
    """A peft model over a copy of `base` holding `adapters` as `a0`, `a1`, ..."""
    from peft import LoraConfig, get_peft_model

    rank = adapters[0].rank
    targets = sorted({name.rsplit(".", 1)[-1] for name in adapters[0].weights})
    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets)
    model = get_peft_model(copy.deepcopy(base), cfg, adapter_name="a0")
    for i in range(1, len(adapters)):
        model.add_adapter(f"a{i}", cfg)
    with torch.no_grad():
        for name, module in model.named_modules():
            lora_a = getattr(module, "lora_A", None)
            if lora_a is None or not hasattr(module, "lora_B"):
                continue
            key = name.removeprefix("base_model.model.")
            for i, ad in enumerate(adapters):
                a, b = ad.weights[key]
                lora_a[f"a{i}"].weight.copy_(a)
                module.lora_B[f"a{i}"].weight.copy_(b)
    return model.eval()


def decode_rate(
    forward: Callable[[Tensor, Tensor, DynamicCache], Tensor],
    batch: int,
    prompt_tokens: int,
    new_tokens: int,
    vocab: int,
    seed: int,
    device: torch.device | None = None,
) -> float:
    """Greedy-decode `new_tokens` for `batch` prompts; tokens/s over the decode steps."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, prompt_tokens), generator=gen).to(device)
    cache = DynamicCache()
    with torch.inference_mode():
        pos = torch.arange(prompt_tokens, device=device).expand(batch, -1)
        nxt = forward(ids, pos, cache).argmax(-1, keepdim=True)
        _synchronize(device)
        start = time.perf_counter()
        for step in range(new_tokens):
            pos = torch.full((batch, 1), prompt_tokens + step, device=device)
            nxt = forward(nxt, pos, cache).argmax(-1, keepdim=True)
        _synchronize(device)
        elapsed = time.perf_counter() - start
    return batch * new_tokens / elapsed


def _synchronize(device: torch.device | None) -> None:
    # CUDA launches are asynchronous: without a sync the clock stops before the GPU does.
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def hf_forward(
    model: nn.Module, **extra: object
) -> Callable[[Tensor, Tensor, DynamicCache], Tensor]:
    def run(ids: Tensor, pos: Tensor, cache: DynamicCache) -> Tensor:
        out = model(
            input_ids=ids,
            position_ids=pos,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
            **extra,
        )
        logits: Tensor = out.logits[:, -1, :]
        return logits

    return run


def lora_forward(
    model: nn.Module, table: LoraSlotTable, slots: Tensor
) -> Callable[[Tensor, Tensor, DynamicCache], Tensor]:
    plain = hf_forward(model)

    def run(ids: Tensor, pos: Tensor, cache: DynamicCache) -> Tensor:
        with table.context.use(slots.repeat_interleave(ids.shape[1])):
            return plain(ids, pos, cache)

    return run


def best_rates(
    forwards: Sequence[Callable[[Tensor, Tensor, DynamicCache], Tensor]],
    batch: int,
    prompt_tokens: int,
    new_tokens: int,
    vocab: int,
    seed: int,
    rounds: int,
    device: torch.device | None = None,
) -> list[float]:
    """The best rate of each forward over `rounds` interleaved runs (after a warm-up), so a
    burst of load from other processes hurts neither side of a comparison alone."""
    for fwd in forwards:
        decode_rate(fwd, batch, prompt_tokens, 2, vocab, seed, device)
    best = [0.0] * len(forwards)
    for _ in range(rounds):
        for i, fwd in enumerate(forwards):
            rate = decode_rate(fwd, batch, prompt_tokens, new_tokens, vocab, seed, device)
            best[i] = max(best[i], rate)
    return best


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    idx = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[idx]


def write_result(result: dict[str, object], out: Path) -> None:
    import json

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


def summarize_ttft(ttfts: Sequence[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds."""
    ms = [t * 1000 for t in ttfts]
    return (statistics.median(ms) if ms else float("nan"), percentile(ms, 0.99))


def build_tables(
    base: nn.Module, adapters: Sequence[LoadedAdapter], rank: int
) -> tuple[nn.Module, LoraSlotTable]:
    """A wrapped copy of `base` with adapter i in slot i."""
    served = copy.deepcopy(base)
    # every candidate linear is wrapped, as a server does; untargeted ones skip LoRA
    table = wrap_model(served, target_modules=ALL_TARGETS, n_slots=len(adapters), max_rank=rank)
    for slot, ad in enumerate(adapters):
        table.load(slot, ad)
    return served, table
