"""Next-token choice and incremental text: repetition penalty, greedy, seeded temperature /
top-p, stop strings."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import torch
from torch import Tensor

# Below this a temperature is greedy: softmax(logits / T) is one-hot in practice, and a
# tiny T (1e-300) turns the logits into inf and the probabilities into NaN.
GREEDY_BELOW: Final = 1e-2
MAX_TEMPERATURE: Final = 5.0
# Stop strings are scanned on every step of every sequence and held back while streaming:
# a few short ones keep that cost (and a tenant's share of the engine thread) small.
MAX_STOP_STRINGS: Final = 4
MAX_STOP_CHARS: Final = 64
# A repetition penalty below 1 rewards repeating (the opposite of its use), and past 2
# it mangles every reply: a prompt's own words become nearly unsayable. 1 is off.
MIN_REPETITION_PENALTY: Final = 1.0
MAX_REPETITION_PENALTY: Final = 2.0


def check_repetition_penalty(value: float) -> float:
    """`value` if it is a finite penalty within [1, 2]; else ValueError."""
    if not (math.isfinite(value) and MIN_REPETITION_PENALTY <= value <= MAX_REPETITION_PENALTY):
        raise ValueError(
            f"repetition_penalty must be within [{MIN_REPETITION_PENALTY:g}, "
            f"{MAX_REPETITION_PENALTY:g}] (1 = off), got {value!r}"
        )
    return value


@dataclass(frozen=True)
class SamplingParams:
    """How one request picks tokens. A temperature below `GREEDY_BELOW` (0 included) is
    greedy; otherwise the request's own generator (seeded with `seed`) draws from the
    top-p nucleus, so the same seed and prompt give the same text whatever else shares
    the batch. `repetition_penalty` (Hugging Face semantics, applied before the token
    choice; None: the server's default) makes every token already in the prompt or the
    reply less likely. Invalid values (NaN, inf, out of range) raise ValueError here, for
    every API alike."""

    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    repetition_penalty: float | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        if not (math.isfinite(self.temperature) and 0.0 <= self.temperature <= MAX_TEMPERATURE):
            raise ValueError(f"temperature must be within [0, {MAX_TEMPERATURE:g}]")
        if not (math.isfinite(self.top_p) and 0.0 < self.top_p <= 1.0):
            raise ValueError("top_p must be within (0, 1]")
        if self.seed is not None and not 0 <= self.seed < 2**64:
            raise ValueError("seed must be within [0, 2**64)")
        if len(self.stop) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings")
        if any(not 0 < len(s) <= MAX_STOP_CHARS for s in self.stop):
            raise ValueError(f"stop strings must have 1 to {MAX_STOP_CHARS} characters")
        if self.repetition_penalty is not None:
            check_repetition_penalty(self.repetition_penalty)

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW


def make_generator(params: SamplingParams) -> torch.Generator | None:
    """A CPU generator for sampled requests (None for greedy ones)."""
    if params.greedy:
        return None
    gen = torch.Generator()
    gen.manual_seed(params.seed if params.seed is not None else int(torch.seed()) % (2**63))
    return gen


def token_history(prompt_ids: Sequence[int], max_tokens: int) -> Tensor:
    """A sequence's token record for `apply_repetition_penalty`: room for the prompt and
    `max_tokens` reply tokens, the unwritten tail holding the prompt's first id (a token
    the sequence already has, so it changes nothing). Kept on the CPU; the engine writes
    reply token i at `len(prompt) + i`, so no step rebuilds it from Python lists."""
    history = torch.full((len(prompt_ids) + max_tokens,), int(prompt_ids[0]), dtype=torch.long)
    history[: len(prompt_ids)] = torch.tensor(list(prompt_ids), dtype=torch.long)
    return history


def apply_repetition_penalty(
    logits: Tensor, histories: Sequence[Tensor | None], penalties: Sequence[float]
) -> Tensor:
    """Hugging Face's RepetitionPenaltyLogitsProcessor on `logits [B, V]`: for every id
    `t` in row r's history (prompt and reply), when `histories[r]` is not None,
    `logits[r, t] /= p[r]` if `logits[r, t] > 0`, else `logits[r, t] *= p[r]`. In place
    when `logits` is contiguous (it is returned either way).

    One gather and one scatter over the penalised rows together (on the flattened
    logits: no copy of a row); a row whose history is None is neither read nor written,
    so a request without a penalty gets bit-identical logits and costs nothing. An id
    that occurs more than once is penalised once (every duplicate writes the same
    value), as in transformers."""
    rows = [r for r, h in enumerate(histories) if h is not None]
    if not rows:
        return logits
    logits = logits.contiguous()
    device, vocab = logits.device, logits.shape[1]
    # histories differ in length: pad with each row's own first id (already present)
    padded = torch.nn.utils.rnn.pad_sequence(
        [h for h in histories if h is not None], batch_first=True, padding_value=-1
    )
    ids = torch.where(padded < 0, padded[:, :1], padded).to(device)  # [k, L]
    row_idx = torch.tensor(rows, dtype=torch.long, device=device).unsqueeze(1)  # [k, 1]
    flat_idx = row_idx * vocab + ids  # [k, L] into logits.view(-1)
    p = torch.tensor([penalties[r] for r in rows], dtype=logits.dtype, device=device)[:, None]
    # logits made under inference_mode may only be written in place under it
    with torch.inference_mode():
        flat = logits.view(-1)
        score = flat.take(flat_idx)  # [k, L]
        penalised = torch.where(score < 0, score * p, score / p)
        flat.scatter_(0, flat_idx.view(-1), penalised.view(-1))
    return logits


def greedy_tokens(logits: Tensor) -> list[int]:
    """The argmax of each row of `logits [B, V]`, a NaN counting as -inf (one sync)."""
    clean = torch.where(torch.isnan(logits), float("-inf"), logits)
    return [int(t) for t in clean.argmax(dim=-1).tolist()]


def sample_token(logits: Tensor, params: SamplingParams, gen: torch.Generator) -> int:
    """One token drawn from `logits [V]` at the request's temperature and top-p.

    Sanitised, so no logits a model or a request produces can make the draw raise: NaN
    counts as -inf; +inf entries, if any, are the only candidates (equally likely); in
    float64, a finite float32 logit over `GREEDY_BELOW` cannot overflow; a row with
    nothing left to draw from falls back to its argmax."""
    x = logits.detach().to("cpu", torch.float64)
    x = torch.where(torch.isnan(x), float("-inf"), x)
    top = torch.isposinf(x)
    if bool(top.any()):
        probs = top.to(torch.float64)
    else:
        probs = torch.softmax(x / max(params.temperature, GREEDY_BELOW), dim=-1)
    probs = torch.nan_to_num(probs, nan=0.0, posinf=0.0, neginf=0.0).clamp_(min=0.0)
    if params.top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        keep = (sorted_p.cumsum(0) - sorted_p) < params.top_p * float(sorted_p.sum())
        keep[0] = True
        probs = torch.zeros_like(probs).scatter_(0, order[keep], sorted_p[keep])
    total = float(probs.sum())
    if not (math.isfinite(total) and total > 0.0):
        return int(x.argmax())
    return int(torch.multinomial(probs, 1, generator=gen))


def choose_tokens(
    logits: Tensor, params: Sequence[SamplingParams], generators: Sequence[torch.Generator | None]
) -> list[int]:
    """One token per row of `logits [B, V]`."""
    greedy = greedy_tokens(logits)
    return [
        greedy[row] if p.greedy or gen is None else sample_token(logits[row], p, gen)
        for row, (p, gen) in enumerate(zip(params, generators, strict=True))
    ]


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
