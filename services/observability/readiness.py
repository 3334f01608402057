"""`/readyz` and gRPC health: is this process able to do its work right now?

Readiness asks each dependency — PostgreSQL (a query), the broker (a metadata request),
the model (the inference engine's thread runs) — and names the ones that failed.
Liveness (`/healthz`) stays "the process answers": restarting a process because its
database is down would not help, but taking it out of the proxy's rotation does. The
probes run concurrently with a timeout each, and an answer is reused for `cache_s` so
a scrape storm does not become a connection storm on PostgreSQL.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

log = logging.getLogger(__name__)

Probe = Callable[[], None]  # raises when the dependency is not usable


@dataclass(frozen=True)
class Check:
    name: str
    probe: Probe


@dataclass(frozen=True)
class Report:
    checks: dict[str, str]  # name -> "ok" or why not

    @property
    def ready(self) -> bool:
        return all(v == "ok" for v in self.checks.values())

    @property
    def failed(self) -> list[str]:
        return [k for k, v in self.checks.items() if v != "ok"]


class Readiness:
    def __init__(
        self, checks: Sequence[Check], *, timeout_s: float = 2.0, cache_s: float = 1.0
    ) -> None:
        self.checks = list(checks)
        self._timeout_s = timeout_s
        self._cache_s = cache_s
        self._lock = threading.Lock()
        self._last: tuple[float, Report] | None = None
        self._pool = ThreadPoolExecutor(max(1, len(self.checks)), "readiness")

    def report(self) -> Report:
        """Every check's answer (blocking: call it off the event loop)."""
        with self._lock:
            if self._last and time.monotonic() - self._last[0] < self._cache_s:
                return self._last[1]
            futures = {c.name: self._pool.submit(c.probe) for c in self.checks}
            out: dict[str, str] = {}
            deadline = time.monotonic() + self._timeout_s
            for name, future in futures.items():
                try:
                    future.result(timeout=max(0.0, deadline - time.monotonic()))
                    out[name] = "ok"
                except TimeoutError:
                    out[name] = f"no answer within {self._timeout_s:g} s"
                except Exception as exc:
                    out[name] = f"{type(exc).__name__}: {exc}".strip()[:300]
            report = Report(out)
            if not report.ready:
                log.warning("not ready: %s", ", ".join(f"{k}: {out[k]}" for k in report.failed))
            self._last = (time.monotonic(), report)
            return report


def model_probe(engine: object) -> Probe:
    def probe() -> None:
        if not getattr(engine, "running", False):
            raise RuntimeError("the inference engine is not running")

    return probe


def backend_checks(
    database_url: str, kafka_bootstrap: str, *, timeout_s: float, engine: object | None = None
) -> list[Check]:
    """PostgreSQL, the broker and (when this process serves inference) the model."""
    from tessera.events.health import ping_broker, ping_database

    checks = [
        Check("postgres", lambda: ping_database(database_url, timeout_s=timeout_s)),
        Check("broker", lambda: ping_broker(kafka_bootstrap, timeout_s=timeout_s)),
    ]
    if engine is not None:
        checks.append(Check("model", model_probe(engine)))
    return checks
