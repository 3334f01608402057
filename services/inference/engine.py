"""Continuous batching: one engine thread runs every request's forward steps together.

Each loop iteration either admits waiting requests (one batched prefill, which also
yields their first token) or runs one decode step for every running sequence; so new
requests join between decode steps and never wait for a batch to drain. A sequence pins
its adapter's device slot from admission to finish. The revision that answers is fixed at
submit time (`RevisionResolver`), so a hot swap affects new requests only and never a
running one. A request whose adapter must be read from the store waits apart (`ColdLoads`,
no batch row) while a loader thread reads it and places it on a free slot, so a cold
load never stalls decoding.

Back-pressure: `submit` raises `QueueFullError` once `queue_size` requests wait. Every
request has a deadline; one still running past it fails with `RequestTimeoutError`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass

import torch

from tessera.services.inference.adapter_loader import AdapterLoader
from tessera.services.inference.cold_loads import ColdLoads
from tessera.services.inference.engine_metrics import QUEUE_DEPTH, REQUESTS, RUNNING
from tessera.services.inference.model_runner import ModelRunner
from tessera.services.inference.request_log import RequestLog
from tessera.services.inference.requests import (
    EngineError,
    EngineStoppedError,
    GenerateRequest,
    Generation,
    InvalidRequestError,
    QueueFullError,
    QuotaExceededError,
    RequestTimeoutError,
)
from tessera.services.inference.residency import AdapterResidency, SlotsBusyError
from tessera.services.inference.revisions import RevisionResolver
from tessera.services.inference.sampling import (
    apply_repetition_penalty,
    check_repetition_penalty,
    greedy_tokens,
    make_generator,
    token_history,
)
from tessera.services.inference.sequence import RequestSequence
from tessera.services.inference.tokens import TextCodec
from tessera.services.quotas import QuotaExceeded, TenantQuotas

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class EngineConfig:
    max_batch: int = 32
    queue_size: int = 256
    timeout_s: float = 60.0
    max_prompt_tokens: int = 2048
    max_tokens: int = 512
    model_id: str = "base"  # the base model's name, as `/v1/models` lists it
    # For requests that give none (settings.serve_repetition_penalty); 1.0 is off.
    repetition_penalty: float = 1.0
    # how long a step boundary waits for the adapter reads it just started
    # (settings.inference_cold_load_grace_ms); see cold_loads
    cold_load_grace_s: float = 0.01

    def __post_init__(self) -> None:
        check_repetition_penalty(self.repetition_penalty)


class InferenceEngine:
    """Owns the model runner; `submit` is thread-safe, everything else runs on its thread."""

    def __init__(
        self,
        runner: ModelRunner,
        residency: AdapterResidency,
        resolver: RevisionResolver,
        codec: TextCodec,
        *,
        config: EngineConfig,
        request_log: RequestLog | None = None,
        quotas: TenantQuotas | None = None,
        loader: AdapterLoader | None = None,
    ) -> None:
        self.runner = runner
        self.loader = loader or AdapterLoader(residency)
        self.loader.on_done = self._wake
        self.quotas = quotas  # per-tenant requests and generated tokens per second
        self.residency = residency
        self.resolver = resolver
        self.codec = codec
        self.config = config
        self.request_log = request_log
        self._waiting: deque[RequestSequence] = deque()
        self._running: list[RequestSequence] = []
        self._cold: ColdLoads[RequestSequence] = ColdLoads(self.loader)  # waiting for a store read
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = False
        self.steps = 0
        self.tokens_generated = 0

    # ---- caller side ----------------------------------------------------------------

    def start(self) -> InferenceEngine:
        if self._thread is None:
            self._stop = False
            self.loader.start()
            self._thread = threading.Thread(target=self._loop, name="inference-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self.loader.stop()

    def submit(
        self, request: GenerateRequest, *, loop: asyncio.AbstractEventLoop | None = None
    ) -> Generation:
        """Queue a request. Resolves the served revision now (so the response names it),
        encodes the prompt and checks its size. Raises QueueFullError, InvalidRequestError
        or EngineStoppedError; pass `loop` to consume the result with `aevents()`."""
        if self._thread is None or self._stop:
            raise EngineStoppedError("the inference engine is not running")
        if self.quotas is not None:  # first: an over-quota tenant costs no encoding
            try:
                self.quotas.admit_request(request.tenant_id)
            except QuotaExceeded as exc:
                raise QuotaExceededError(str(exc), exc.retry_after_s) from None
        p = request.params
        if p.max_tokens > self.config.max_tokens:
            raise InvalidRequestError(
                f"max_tokens {p.max_tokens} exceeds this server's limit {self.config.max_tokens}"
            )
        prompt_ids = (
            list(request.prompt)
            if isinstance(request.prompt, list)
            else self.codec.encode(request.prompt)
        )
        if not prompt_ids:
            raise InvalidRequestError("the prompt is empty")
        if len(prompt_ids) > self.config.max_prompt_tokens:
            raise InvalidRequestError(
                f"the prompt has {len(prompt_ids)} tokens; "
                f"the limit is {self.config.max_prompt_tokens}"
            )
        revision = request.revision or self.resolver.get(request.tenant_id, request.user_id)
        timeout = request.timeout_s or self.config.timeout_s
        if not (math.isfinite(timeout) and timeout > 0):
            raise InvalidRequestError("timeout_s must be a positive number of seconds")
        # The server's timeout bounds every request: a client cannot hold a batch row longer.
        timeout = min(timeout, self.config.timeout_s)
        gen = Generation(request, revision, timeout, loop)
        now = time.monotonic()
        seq = RequestSequence(gen, prompt_ids, -1, now + timeout, now, make_generator(p))
        seq.penalty = p.repetition_penalty or self.config.repetition_penalty
        if seq.penalty != 1.0:
            seq.history = token_history(prompt_ids, p.max_tokens)
        with self._cond:
            if len(self._waiting) + len(self._cold) >= self.config.queue_size:
                REQUESTS.labels("rejected").inc()
                raise QueueFullError(
                    f"the inference queue is full ({self.config.queue_size} waiting); retry later"
                )
            self._waiting.append(seq)
            QUEUE_DEPTH.set(len(self._waiting))
            self._cond.notify()
        if self.request_log is not None:
            self.request_log.record(
                request.request_id, request.tenant_id, request.user_id, revision
            )
        return gen

    @property
    def running(self) -> bool:
        """Whether the engine thread is alive and accepting work (readiness)."""
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stop

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    # ---- engine thread ----------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                # a finished cold load wakes us too (the loader's on_done)
                while not (self._stop or self._waiting or self._running or self._cold.ready):
                    self._cond.wait(0.5)
                if self._stop:
                    break
            try:
                admitted = self._admit()
                if admitted:
                    self._prefill(admitted)
                elif self._running:
                    self._decode()
                else:
                    time.sleep(0.005)  # every slot is pinned and nothing runs: rare
            except Exception as exc:  # one bad step must not kill the server
                log.exception("inference step failed")
                self._fail_all(EngineError(f"inference step failed: {exc}"))
        self._fail_all(EngineStoppedError("the inference engine stopped"))

    def _admit(self) -> list[RequestSequence]:
        """Move read-in, then waiting requests into the batch while room and adapter
        slots allow; one whose adapter is not in memory waits apart for a loader."""
        now = time.monotonic()
        self._cold.sweep(lambda seq: self._expired(seq, now, "waited for its adapter past"))
        admitted, failed = self._cold.take(self.config.max_batch - len(self._running))
        for seq, exc in failed:
            self._adapter_failed(seq, exc)
        while len(self._running) + len(admitted) < self.config.max_batch:
            with self._cond:
                if not self._waiting:
                    break
                seq = self._waiting.popleft()
                QUEUE_DEPTH.set(len(self._waiting))
            if self._expired(seq, now, "waited past"):
                continue
            digest = seq.gen.revision.adapter_digest
            if digest is not None:
                try:
                    slot = self.residency.try_acquire(digest)
                except SlotsBusyError:
                    with self._cond:
                        self._waiting.appendleft(seq)  # keeps its place in line
                    break
                except Exception as exc:
                    self._adapter_failed(seq, exc)
                    continue
                if slot is None:  # a loader thread reads the store; the batch decodes on
                    self._cold.park(seq, digest)
                    continue
                seq.slot = slot
            admitted.append(seq)
        if self._cold.await_fresh(self.config.cold_load_grace_s):
            read, failed = self._cold.take(
                self.config.max_batch - len(self._running) - len(admitted)
            )
            admitted += read
            for seq, error in failed:
                self._adapter_failed(seq, error)
        return admitted

    def _expired(self, seq: RequestSequence, now: float, what: str) -> bool:
        """Drop a cancelled request, or fail one past its deadline; True if dropped."""
        if seq.gen.cancelled.is_set():
            return True
        if now > seq.deadline:
            self._finish_error(
                seq,
                RequestTimeoutError(
                    f"request {seq.gen.request_id} {what} its {seq.gen.timeout_s:.0f} s timeout"
                ),
            )
        return now > seq.deadline

    def _adapter_failed(self, seq: RequestSequence, exc: Exception) -> None:
        """A missing or corrupt blob fails this request only."""
        self._finish_error(
            seq,
            InvalidRequestError(
                f"adapter {(seq.gen.revision.adapter_digest or '')[:12]} of revision "
                f"{seq.gen.revision.name} cannot be served: {exc}"
            ),
        )

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _prefill(self, seqs: list[RequestSequence]) -> None:
        logits = self.runner.prefill([s.prompt_ids for s in seqs], [s.slot for s in seqs])
        self._running.extend(seqs)
        self._advance(seqs, logits)

    def _decode(self) -> None:
        logits = self.runner.decode(
            [s.out_ids[-1] for s in self._running], [s.slot for s in self._running]
        )
        self._advance(self._running, logits)

    def _advance(self, seqs: list[RequestSequence], logits: torch.Tensor) -> None:
        """Sample one token per sequence, stream text, retire finished sequences. What
        goes wrong for one sequence here (its sampling, its text) fails that request
        only: the others in the batch carry on."""
        self.steps += 1
        # before any choice, greedy or sampled; rows without a penalty are not touched
        logits = apply_repetition_penalty(
            logits, [s.history for s in seqs], [s.penalty for s in seqs]
        )
        greedy = greedy_tokens(logits)
        now = time.monotonic()
        done: set[int] = set()
        for row, seq in enumerate(seqs):
            try:
                if self._step_seq(seq, logits, row, greedy[row], now):
                    done.add(id(seq))
            except Exception as exc:
                log.exception("request %s failed in its step", seq.gen.request_id)
                self._finish_error(seq, EngineError(f"generation failed: {exc}"))
                done.add(id(seq))
        if done:
            keep = [i for i, s in enumerate(self._running) if id(s) not in done]
            self.runner.keep(keep)
            self._running = [self._running[i] for i in keep]
        RUNNING.set(len(self._running))

    def _step_seq(
        self, seq: RequestSequence, logits: torch.Tensor, row: int, greedy: int, now: float
    ) -> bool:
        """Choose and stream `seq`'s next token; True once the sequence is finished."""
        token = seq.take_token(logits, row, greedy, now)
        self.tokens_generated += 1
        reason = seq.stream(self.codec, token)
        if reason is not None:
            seq.gen.emit(seq.result(self.codec, reason))
            self._release(seq)
            REQUESTS.labels("ok").inc()
        elif seq.gen.cancelled.is_set():
            self._finish_error(seq, EngineError("cancelled"))
        elif now > seq.deadline:
            self._finish_error(
                seq,
                RequestTimeoutError(
                    f"request {seq.gen.request_id} did not finish "
                    f"within {seq.gen.timeout_s:.0f} s"
                ),
            )
        else:
            return False
        return True

    def _finish_error(self, seq: RequestSequence, error: EngineError) -> None:
        seq.gen.emit(error)
        self._release(seq)
        REQUESTS.labels(type(error).__name__).inc()

    def _release(self, seq: RequestSequence) -> None:
        """Once per finished sequence, whatever the outcome: its slot, and its tokens
        charged to the tenant's quota (generated tokens are known only now)."""
        if self.quotas is not None and seq.out_ids:
            self.quotas.charge_tokens(seq.gen.request.tenant_id, len(seq.out_ids))
        if seq.slot >= 0:
            self.residency.release(seq.slot)
            seq.slot = -1

    def _fail_all(self, error: EngineError) -> None:
        with self._cond:
            waiting, self._waiting = list(self._waiting), deque()
        for seq in [*self._running, *self._cold.drain(), *waiting]:
            self._finish_error(seq, error)
        self._running = []
        self.runner.keep([])
        RUNNING.set(0)
        QUEUE_DEPTH.set(0)
