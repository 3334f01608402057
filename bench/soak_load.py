"""The soak benchmark's load: ingest and inference at once, bounded by count and time,
loopback only, with every request's outcome recorded.

Each ingested event carries a unique marker (`soak-<seq>`) in its text and a
client-chosen `event_id`, so a batch is retried safely (503 or a dropped connection:
same body again) and the verifier can find duplicates even under different ids.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import httpx

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class LoadStats:
    """Counters shared by the load threads (guarded by `lock`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: Counter[str] = field(default_factory=Counter)
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    rejected: Counter[str] = field(default_factory=Counter)
    errors_5xx: int = 0
    connection_errors: int = 0
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    accepted: dict[str, float] = field(default_factory=dict)  # marker -> accepted at
    first_sent: dict[str, float] = field(default_factory=dict)  # marker -> first request

    def record(self, endpoint: str, status: int | None, seconds: float, body: bytes) -> None:
        with self.lock:
            self.requests[endpoint] += 1
            if status is None:
                self.connection_errors += 1
                self.rejected["connection error"] += 1
                return
            self.statuses[endpoint][status] += 1
            if status < 400:
                self.latencies[endpoint].append(seconds)
            elif status == 503:
                self.rejected["503 unavailable (retry)"] += 1
            elif status >= 500:
                self.errors_5xx += 1
            else:
                self.rejected[f"{status} {_reason(body)[:80]}"] += 1

    def summary(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": dict(self.requests),
                "statuses": {k: {str(s): n for s, n in v.items()} for k, v in
                             self.statuses.items()},
                "rejected": dict(self.rejected),
                "errors_5xx": self.errors_5xx,
                "connection_errors": self.connection_errors,
                "latency_ms": {k: _percentiles(v) for k, v in self.latencies.items()},
            }


def _reason(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return "no JSON body"
    if isinstance(doc, dict):
        detail = doc.get("detail") or (doc.get("error") or {}).get("message")
        return str(detail) if detail else "no reason"
    return "no reason"


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": round(pick(0.5) * 1000, 1), "p99": round(pick(0.99) * 1000, 1),
            "n": len(ordered)}


def require_loopback(base_url: str) -> None:
    host = urlparse(base_url).hostname
    if host not in LOOPBACK:
        raise ValueError(f"the soak load only targets loopback; refusing {base_url}")


class LoadGenerator:
    """Threads posting ingest batches and generate requests until `deadline` or the
    request budget is spent."""

    def __init__(self, base_url: str, api_key: str, stats: LoadStats, *, users: int,
                 batch: int, max_requests: int, deadline: float) -> None:
        require_loopback(base_url)
        self._url = base_url
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._stats = stats
        self._users = users
        self._batch = batch
        self._budget = max_requests
        self._deadline = deadline
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _spend(self) -> bool:
        with self._seq_lock:
            if self._budget <= 0 or time.monotonic() > self._deadline or self._stop.is_set():
                return False
            self._budget -= 1
            return True

    def _markers(self, n: int) -> list[int]:
        with self._seq_lock:
            start, self._seq = self._seq, self._seq + n
        return list(range(start, start + n))

    def _post(self, client: httpx.Client, endpoint: str, body: dict[str, Any]
              ) -> httpx.Response | None:
        started = time.monotonic()
        try:
            resp = client.post(endpoint, json=body, headers=self._headers, timeout=30)
        except httpx.HTTPError:
            self._stats.record(endpoint, None, time.monotonic() - started, b"")
            return None
        self._stats.record(endpoint, resp.status_code, time.monotonic() - started, resp.content)
        return resp

    def _ingest_loop(self) -> None:
        with httpx.Client(base_url=self._url) as client:
            while self._spend():
                seqs = self._markers(self._batch)
                items = [{"type": "text", "event_id": str(uuid.uuid4()),
                          "user_id": f"user{seq % self._users}",
                          "occurred_at": "2026-01-01T00:00:00Z", "text": f"soak-{seq} hello"}
                         for seq in seqs]
                sent_at = time.monotonic()
                with self._stats.lock:
                    self._stats.first_sent.update({f"soak-{s}": sent_at for s in seqs})
                # The same body until it is taken: event_id makes the retry idempotent.
                while not self._stop.is_set():
                    resp = self._post(client, "/v1/events", {"events": items})
                    if resp is not None and resp.status_code == 202:
                        now = time.monotonic()
                        with self._stats.lock:
                            self._stats.accepted.update({f"soak-{s}": now for s in seqs})
                        break
                    if resp is not None and 400 <= resp.status_code < 500:
                        break  # refused for a reason: not retried
                    if time.monotonic() > self._deadline + 60:
                        break  # given up: these markers count as never accepted
                    time.sleep(0.5)

    def _inference_loop(self) -> None:
        with httpx.Client(base_url=self._url) as client:
            n = 0
            while self._spend():
                n += 1
                user = f"user{n % self._users}"
                if n % 2:
                    resp = self._post(client, "/v1/generate",
                                      {"user_id": user, "prompt": "hello there", "max_tokens": 4})
                else:
                    resp = self._post(client, "/v1/chat/completions",
                                      {"user": user, "max_tokens": 4,
                                       "messages": [{"role": "user", "content": "hello"}]})
                if resp is None or resp.status_code >= 500:
                    time.sleep(0.5)  # the server is down or busy: do not spin

    def start(self, *, ingest_threads: int = 2, inference_threads: int = 2) -> LoadGenerator:
        for i in range(ingest_threads):
            self._threads.append(threading.Thread(target=self._ingest_loop,
                                                  name=f"soak-ingest-{i}", daemon=True))
        for i in range(inference_threads):
            self._threads.append(threading.Thread(target=self._inference_loop,
                                                  name=f"soak-infer-{i}", daemon=True))
        for t in self._threads:
            t.start()
        return self

    def join(self) -> None:
        for t in self._threads:
            t.join()

    def stop(self) -> None:
        self._stop.set()
        self.join()
