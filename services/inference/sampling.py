"""Next-token choice and incremental text: greedy, seeded temperature / top-p, stop strings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SamplingParams:
    """How one request picks tokens. `temperature == 0` is greedy; otherwise the request's
    own generator (seeded with `seed`) draws from the top-p nucleus, so the same seed and
    prompt give the same text whatever else shares the batch."""

    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        if not 0.0 <= self.temperature <= 5.0:
            raise ValueError("temperature must be within [0, 5]")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError("top_p must be within (0, 1]")
        if self.seed is not None and not 0 <= self.seed < 2**64:
            raise ValueError("seed must be within [0, 2**64)")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty")


def make_generator(params: SamplingParams) -> torch.Generator | None:
    """A CPU generator for sampled requests (None for greedy ones)."""
    if params.temperature == 0.0:
        return None
    gen = torch.Generator()
    gen.manual_seed(params.seed if params.seed is not None else int(torch.seed()) % (2**63))
    return gen


def choose_tokens(
    logits: Tensor, params: Sequence[SamplingParams], generators: Sequence[torch.Generator | None]
) -> list[int]:
    """One token per row of `logits [B, V]` (float32)."""
    greedy = logits.argmax(dim=-1).tolist()
    out: list[int] = []
    for row, (p, gen) in enumerate(zip(params, generators, strict=True)):
        if p.temperature == 0.0 or gen is None:
            out.append(int(greedy[row]))
            continue
        probs = torch.softmax(logits[row].cpu() / p.temperature, dim=-1)
        if p.top_p < 1.0:
            sorted_p, order = probs.sort(descending=True)
            # keep the smallest prefix whose mass reaches top_p (always at least one token)
            keep = (sorted_p.cumsum(0) - sorted_p) < p.top_p
            probs = torch.zeros_like(probs).scatter_(0, order[keep], sorted_p[keep])
        out.append(int(torch.multinomial(probs, 1, generator=gen)))
    return out


def find_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index where the earliest stop string starts in `text`, or None."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def safe_prefix_len(text: str, stops: Sequence[str]) -> int:
    """How much of `text` may be streamed now: hold back a trailing partial character
    (U+FFFD from half a UTF-8 sequence) and any suffix that could begin a stop string."""
    end = len(text)
    while end and text[end - 1] == "\ufffd":
        end -= 1
    for s in stops:
        for k in range(min(len(s) - 1, end), 0, -1):
            if text[:end].endswith(s[:k]):
                end = min(end, len(text[:end]) - k)
                break
    return end
