"""One request inside the engine: its tokens so far, the text it has streamed, and how
its next token is chosen and its result built. The engine owns the batch; this owns one
row of it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from tessera.services.inference.engine_metrics import TOKENS, TPOT, TTFT
from tessera.services.inference.requests import GenerateResult, Generation, TokenEvent
from tessera.services.inference.sampling import find_stop, safe_prefix_len, sample_token
from tessera.services.inference.tokens import TextCodec


@dataclass
class RequestSequence:
    gen: Generation
    prompt_ids: list[int]
    slot: int
    deadline: float
    submitted: float
    generator: torch.Generator | None
    # The repetition penalty in force (request's, else the server's) and, when it is on
    # (not 1), the token record it reads (sampling.token_history); None costs nothing.
    penalty: float = 1.0
    history: torch.Tensor | None = None
    out_ids: list[int] = field(default_factory=list)
    emitted: int = 0  # characters of text already streamed
    first_token_at: float | None = None

    def take_token(self, logits: torch.Tensor, row: int, greedy: int, now: float) -> int:
        """Choose this step's token (the batch's greedy pick, or sampled from `row`)."""
        p = self.gen.request.params
        if p.greedy or self.generator is None:
            token = greedy
        else:
            token = sample_token(logits[row], p, self.generator)
        self.out_ids.append(token)
        if self.history is not None:
            self.history[len(self.prompt_ids) + len(self.out_ids) - 1] = token
        TOKENS.inc()
        if self.first_token_at is None:
            self.first_token_at = now
            TTFT.observe(now - self.submitted)
        return token

    def stream(self, codec: TextCodec, token: int) -> str | None:
        """Stream what became final; returns a finish reason or None to go on."""
        p = self.gen.request.params
        is_eos = token in codec.eos_ids
        text = codec.decode(self.out_ids[:-1] if is_eos else self.out_ids)
        cut = find_stop(text, p.stop)
        if cut is not None:
            text = text[:cut]
        final = cut is not None or is_eos or len(self.out_ids) >= p.max_tokens
        ready = len(text) if final else safe_prefix_len(text, p.stop)
        if ready > self.emitted:
            self.gen.emit(TokenEvent(text[self.emitted : ready], token))
            self.emitted = ready
        if cut is not None or is_eos:
            return "stop"
        if len(self.out_ids) >= p.max_tokens:
            return "length"
        return None

    def result(self, codec: TextCodec, reason: str) -> GenerateResult:
        """The finished request's answer."""
        p = self.gen.request.params
        text = codec.decode([t for t in self.out_ids if t not in codec.eos_ids])
        cut = find_stop(text, p.stop)
        now = time.monotonic()
        first = self.first_token_at or now
        if len(self.out_ids) > 1:
            TPOT.observe((now - first) / (len(self.out_ids) - 1))
        return GenerateResult(
            request_id=self.gen.request_id,
            text=text if cut is None else text[:cut],
            finish_reason="stop" if reason == "stop" else "length",
            revision=self.gen.revision,
            prompt_tokens=len(self.prompt_ids),
            completion_tokens=len(self.out_ids),
            ttft_s=first - self.submitted,
            total_s=now - self.submitted,
        )
