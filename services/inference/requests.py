"""Requests into the engine and the handle a caller waits on (blocking or async)."""

from __future__ import annotations

import asyncio
import queue
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Literal

from tessera.services.inference.revisions import Served
from tessera.services.inference.sampling import SamplingParams


class EngineError(Exception):
    """A request the engine could not complete; subclasses map to HTTP / gRPC statuses."""


class QueueFullError(EngineError):
    """The waiting queue is full: HTTP 503, gRPC RESOURCE_EXHAUSTED. Retry later."""


class RequestTimeoutError(EngineError):
    """The request did not finish within its timeout: HTTP 504, gRPC DEADLINE_EXCEEDED."""


class InvalidRequestError(EngineError, ValueError):
    """The request cannot be served as given (prompt too long, bad adapter): HTTP 400."""


class QuotaExceededError(EngineError):
    """The tenant is over its requests or tokens per second (services/quotas.py): HTTP
    429 with Retry-After, gRPC RESOURCE_EXHAUSTED."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EngineStoppedError(EngineError):
    """The engine is shutting down or not running: HTTP 503, gRPC UNAVAILABLE."""


@dataclass(frozen=True)
class GenerateRequest:
    """One generation: `prompt` is text, or token ids already encoded."""

    tenant_id: str
    user_id: str
    prompt: str | list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    timeout_s: float | None = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # A revision chosen by the caller (a pinned `model`, or the bare base); None: the
    # engine resolves what the user is served now.
    revision: Served | None = None


@dataclass(frozen=True)
class TokenEvent:
    """Newly final text of a streamed response (may be empty for held-back bytes)."""

    text: str
    token_id: int


FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class GenerateResult:
    request_id: str
    text: str
    finish_reason: FinishReason
    revision: Served
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float
    total_s: float


Event = TokenEvent | GenerateResult | EngineError


class Generation:
    """The caller's side of a running request: stream tokens, or wait for the result.

    Made with an event loop, events arrive on an asyncio queue (for async servers);
    without one, on a thread queue (for blocking callers such as the gRPC servicer)."""

    def __init__(
        self,
        request: GenerateRequest,
        revision: Served,
        timeout_s: float,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.request = request
        self.revision = revision
        self.timeout_s = timeout_s
        self._loop = loop
        self._events: queue.Queue[Event] = queue.Queue()
        self._aevents: asyncio.Queue[Event] | None = asyncio.Queue() if loop else None
        self.cancelled = threading.Event()
        # set by the engine when the request waited for its adapter to be read from the
        # store (store -> CPU cache -> device slot), in seconds; None when it was resident
        self.cold_load_s: float | None = None

    @property
    def request_id(self) -> str:
        return self.request.request_id

    def emit(self, event: Event) -> None:
        """Engine side: hand over the next event (thread-safe)."""
        if self._loop is not None and self._aevents is not None:
            try:
                self._loop.call_soon_threadsafe(self._aevents.put_nowait, event)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                self.cancel()
        else:
            self._events.put(event)

    def cancel(self) -> None:
        """The caller went away: the engine drops the sequence at its next step (or when
        it would have admitted it). A blocked `events()` (a gRPC handler's thread) is
        woken now, not when the engine gets to the sequence: a queued request may wait
        long, and the thread is the server's, shared by every tenant."""
        self.cancelled.set()
        if self._aevents is None:
            self._events.put(EngineError("cancelled: the caller went away"))

    def _timeout(self) -> RequestTimeoutError:
        self.cancel()
        return RequestTimeoutError(
            f"request {self.request_id} did not finish within {self.timeout_s:.0f} s"
        )

    def events(self) -> Iterator[TokenEvent | GenerateResult]:
        """Blocking: token events, then the final result; raises the request's error."""
        if self._aevents is not None:
            raise RuntimeError("this generation was made for async use; iterate aevents()")
        while True:
            try:  # the engine enforces the timeout; this only guards against a dead engine
                event = self._events.get(timeout=self.timeout_s + 5.0)
            except queue.Empty:
                event = self._timeout()
            if isinstance(event, EngineError):
                raise event
            yield event
            if isinstance(event, GenerateResult):
                return

    def result(self) -> GenerateResult:
        """Block until the whole response is done."""
        for event in self.events():
            if isinstance(event, GenerateResult):
                return event
        raise EngineError("the engine ended the stream without a result")

    async def aevents(self) -> AsyncIterator[TokenEvent | GenerateResult]:
        """As `events`, on the event loop; cancels the request if the consumer stops
        early (an HTTP client that disconnects)."""
        if self._aevents is None:
            raise RuntimeError("this generation was made for blocking use; iterate events()")
        try:
            while True:
                try:
                    event = await asyncio.wait_for(self._aevents.get(), self.timeout_s + 5.0)
                except TimeoutError:
                    event = self._timeout()
                if isinstance(event, EngineError):
                    raise event
                yield event
                if isinstance(event, GenerateResult):
                    return
        finally:
            self.cancel()  # no effect once finished

    async def aresult(self) -> GenerateResult:
        async for event in self.aevents():
            if isinstance(event, GenerateResult):
                return event
        raise EngineError("the engine ended the stream without a result")
