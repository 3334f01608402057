"""A small HTTP client for `POST /v1/events`, sending many batches over several
connections at once (the demo and the ingest benchmark use it)."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx


def encode_batch(items: Sequence[dict[str, Any]]) -> bytes:
    """The body of `POST /v1/events` for `items`."""
    return json.dumps({"events": list(items)}).encode()


class IngestRequestFailed(RuntimeError):
    """The server answered a batch with an error (the message has its body)."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    accepted: list[uuid.UUID]
    sent_at: float  # time.monotonic() when the request started
    accepted_at: float  # ... and when the 202 arrived


class IngestClient:
    """Posts batches of API items with one API key over `connections` parallel
    connections. Retries a batch on 503 / connection errors (a few times), and on 429
    (admission control) until `timeout_s` has passed. Safe: items carry `event_id`s, so
    a retried batch is idempotent."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        connections: int = 8,
        timeout_s: float = 60.0,
        retries: int = 3,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self._connections = connections
        self._timeout = timeout_s
        self._retries = retries
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._lock = threading.Lock()
        self.shed = 0
        """Answers 429 (admission control) received, and retried."""

    def _client(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = httpx.Client(base_url=self._base_url, timeout=self._timeout)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    def post_batch(self, items: Sequence[dict[str, Any]]) -> BatchResult:
        """Send one batch; items without `event_id` get one here, so retries are safe."""
        for item in items:
            item.setdefault("event_id", str(uuid.uuid4()))
        return self.post_body(encode_batch(items))

    def post_body(self, body: bytes) -> BatchResult:
        """Send one already-encoded request body (see `encode_batch`)."""
        sent_at = time.monotonic()
        deadline = sent_at + self._timeout
        attempt = 0
        while True:
            try:
                resp = self._client().post("/v1/events", content=body, headers=self._headers)
            except httpx.TransportError as exc:
                if attempt == self._retries:
                    raise IngestRequestFailed(f"POST /v1/events failed: {exc}") from exc
                attempt += 1
                time.sleep(0.2 * 2 ** (attempt - 1))
                continue
            if resp.status_code == 202:
                ids = [uuid.UUID(x) for x in resp.json()["accepted"]]
                return BatchResult(ids, sent_at, time.monotonic())
            if resp.status_code == 429 and time.monotonic() < deadline:
                # Shed by admission control: the log is behind. Come back soon (the
                # Retry-After header is in whole seconds, far coarser than the backlog),
                # jittered so that parallel connections do not return in lockstep.
                with self._lock:
                    self.shed += 1
                time.sleep(random.uniform(0.02, 0.1))
                continue
            if resp.status_code != 503 or attempt == self._retries:
                raise IngestRequestFailed(
                    f"POST /v1/events answered {resp.status_code}: {resp.text[:2000]}"
                )
            attempt += 1
            time.sleep(0.2 * 2 ** (attempt - 1))

    def post_all(
        self,
        batches: Iterable[Sequence[dict[str, Any]] | bytes],
        *,
        on_batch: Callable[[BatchResult], None] | None = None,
    ) -> list[BatchResult]:
        """Send every batch (items, or an encoded body), `connections` at a time;
        results in request order. `on_batch` is called (from the sending threads) as
        each batch is accepted."""

        def send(batch: Sequence[dict[str, Any]] | bytes) -> BatchResult:
            result = self.post_body(batch) if isinstance(batch, bytes) else self.post_batch(batch)
            if on_batch is not None:
                on_batch(result)
            return result

        with ThreadPoolExecutor(self._connections, thread_name_prefix="ingest-client") as pool:
            return list(pool.map(send, batches))
