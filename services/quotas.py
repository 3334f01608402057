"""Per-tenant quotas: token buckets for ingested events, inference requests and generated
tokens, so one tenant at its limit cannot take another's share of a server.

Each tenant has one bucket per kind, filled at its rate (events, requests or tokens per
second) up to `rate * burst_s`. A call takes what it costs, or is refused with the time
until it could pass (`QuotaExceeded.retry_after_s`: HTTP `429` with `Retry-After`, gRPC
`RESOURCE_EXHAUSTED`); the caller does no further work for it. A batch larger than a
bucket passes once the bucket is full and leaves it in debt, so every batch the batch
limit allows can pass and the long-run rate still holds. Generated tokens are known
only afterwards: they are charged when a request ends, and a tenant whose token bucket
is in debt has its new requests refused until it has refilled.

Rates come from settings (`TESSERA_QUOTA_*`), overridden per tenant in the tenants table
(`tessera tenant set-quota`), read through a cache of `refresh_s`; a rate of 0 means no
limit. Buckets live in this process: with N server processes behind a balancer each
enforces the full rate on its own share of the traffic, so a tenant may reach up to N
times its rate in all (set per-process rates of rate / N where that matters).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final, Literal

from cachetools import TTLCache

from tessera.events.tenant_directory import PostgresTenants
from tessera.events.tenants import TenantQuota
from tessera.schemas.settings import Settings

log = logging.getLogger(__name__)

Kind = Literal["events", "requests", "tokens"]
OverrideLookup = Callable[[str], TenantQuota | None]  # tenant -> its stored overrides
_UNITS: Final[dict[Kind, str]] = {
    "events": "ingested events",
    "requests": "inference requests",
    "tokens": "generated tokens",
}
_TENANTS_CACHED: Final = 10_000
_EPSILON: Final = 1e-9  # float refill arithmetic: a hair short of the cost is enough


class QuotaExceeded(Exception):
    """The tenant is over its quota; `retry_after_s` says when the call could pass."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class Rates:
    """Per-second rates of one tenant; 0: no limit."""

    events: float
    requests: float
    tokens: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Rates:
        return cls(
            events=settings.quota_ingest_events_per_s,
            requests=settings.quota_inference_requests_per_s,
            tokens=settings.quota_inference_tokens_per_s,
        )

    def overridden(self, quota: TenantQuota | None) -> Rates:
        if quota is None:
            return self
        return replace(
            self,
            events=_pick(quota.ingest_events_per_s, self.events),
            requests=_pick(quota.inference_requests_per_s, self.requests),
            tokens=_pick(quota.inference_tokens_per_s, self.tokens),
        )

    def of(self, kind: Kind) -> float:
        return {"events": self.events, "requests": self.requests, "tokens": self.tokens}[kind]


def _pick(override: float | None, default: float) -> float:
    return default if override is None else override


class TokenBucket:
    """`rate` units per second, holding at most `capacity`; the level may go negative
    (debt) when a charge exceeds it."""

    __slots__ = ("capacity", "level", "rate", "updated")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.level = capacity
        self.updated = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_s(self, cost: float, now: float) -> float:
        """Seconds until `cost` could be taken (0: now). More than the capacity needs
        a full bucket."""
        self.refill(now)
        short = min(cost, self.capacity) - self.level
        return 0.0 if short <= _EPSILON else short / self.rate

    def take(self, cost: float, now: float) -> float:
        """Take `cost` if it can be taken now (returns 0), else the seconds to wait."""
        wait = self.wait_s(cost, now)
        if wait == 0.0:
            self.level -= cost
        return wait


class TenantQuotas:
    """The quotas of every tenant this process serves (thread-safe)."""

    def __init__(
        self,
        defaults: Rates,
        *,
        overrides: OverrideLookup | None = None,
        burst_s: float = 2.0,
        refresh_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.defaults = defaults
        self._overrides = overrides
        self._burst_s = burst_s
        self._clock = clock
        self._rates: TTLCache[str, Rates] = TTLCache(
            _TENANTS_CACHED, max(refresh_s, 1e-3), timer=clock
        )
        self._last_known: dict[str, Rates] = {}  # outlives the cache: for a database outage
        # One bucket per tenant and kind; tenants are the authenticated ones, so few.
        self._buckets: dict[tuple[str, Kind], TokenBucket] = {}
        self._lock = threading.Lock()

    # --- rates ------------------------------------------------------------------------

    def knows(self, tenant_id: str) -> bool:
        """Whether the tenant's rates are cached (`take_events` will not block)."""
        with self._lock:
            return self._overrides is None or tenant_id in self._rates

    def rates(self, tenant_id: str) -> Rates:
        """The tenant's rates; blocking (a database read) when not cached."""
        with self._lock:
            cached = self._rates.get(tenant_id)
        if cached is not None:
            return cached
        if self._overrides is None:
            return self.defaults
        try:
            rates = self.defaults.overridden(self._overrides(tenant_id))
        except Exception as exc:
            # Ingest must not start failing while PostgreSQL is away (it does not need it
            # otherwise): go on with what was last known, and ask again after refresh_s.
            with self._lock:
                rates = self._last_known.get(tenant_id, self.defaults)
            log.warning("tenant %s quota not read (%s); using %s", tenant_id, exc, rates)
        with self._lock:
            self._rates[tenant_id] = rates
            self._last_known[tenant_id] = rates
        return rates

    # --- what callers use -------------------------------------------------------------

    def take_events(self, tenant_id: str, count: int) -> None:
        """Take `count` ingested events, or raise `QuotaExceeded`."""
        self._take(tenant_id, "events", count)

    def check_events(self, tenant_id: str) -> None:
        """Raise `QuotaExceeded` unless one event could be taken now (takes nothing)."""
        rates = self.rates(tenant_id)
        now = self._clock()
        with self._lock:
            bucket = self._bucket(tenant_id, "events", rates, now)
            if bucket is not None:
                self._raise_if_waiting(tenant_id, "events", bucket.wait_s(1, now), rates)

    def admit_request(self, tenant_id: str) -> None:
        """Take one inference request; refused while the tenant's generated tokens are
        over their rate (the bucket is in debt), or its requests are."""
        rates = self.rates(tenant_id)
        now = self._clock()
        with self._lock:
            tokens = self._bucket(tenant_id, "tokens", rates, now)
            if tokens is not None:
                self._raise_if_waiting(tenant_id, "tokens", tokens.wait_s(1, now), rates)
            requests = self._bucket(tenant_id, "requests", rates, now)
            if requests is not None:
                self._raise_if_waiting(tenant_id, "requests", requests.take(1, now), rates)

    def charge_tokens(self, tenant_id: str, count: int) -> None:
        """Charge tokens a request generated (known once it ended; may leave a debt)."""
        rates = self.rates(tenant_id)
        now = self._clock()
        with self._lock:
            bucket = self._bucket(tenant_id, "tokens", rates, now)
            if bucket is not None:
                bucket.refill(now)
                bucket.level -= count

    # --- inside -----------------------------------------------------------------------

    def _take(self, tenant_id: str, kind: Kind, cost: float) -> None:
        rates = self.rates(tenant_id)
        now = self._clock()
        with self._lock:
            bucket = self._bucket(tenant_id, kind, rates, now)
            if bucket is not None:
                self._raise_if_waiting(tenant_id, kind, bucket.take(cost, now), rates)

    def _bucket(self, tenant_id: str, kind: Kind, rates: Rates, now: float) -> TokenBucket | None:
        """The tenant's bucket of `kind` at its current rate; None when unlimited."""
        rate = rates.of(kind)
        if rate <= 0:
            return None
        bucket = self._buckets.get((tenant_id, kind))
        if bucket is None:
            bucket = self._buckets[(tenant_id, kind)] = TokenBucket(
                rate, rate * self._burst_s, now
            )
        elif bucket.rate != rate:  # changed by `set-quota`: refill at the old rate first
            bucket.refill(now)
            bucket.rate, bucket.capacity = rate, rate * self._burst_s
            bucket.level = min(bucket.level, bucket.capacity)
        return bucket

    def _raise_if_waiting(self, tenant_id: str, kind: Kind, wait_s: float, rates: Rates) -> None:
        if wait_s > 0:
            raise QuotaExceeded(
                f"tenant {tenant_id!r} is over its quota of {rates.of(kind):g} "
                f"{_UNITS[kind]} per second; retry after {wait_s:.2f} s",
                retry_after_s=wait_s,
            )


def retry_after_header(retry_after_s: float) -> str:
    """`Retry-After` holds whole seconds: rounded up, at least 1."""
    return str(max(1, math.ceil(retry_after_s)))


class DatabaseQuotaLookup:
    """`OverrideLookup` over the tenants table through a small pool of its own."""

    def __init__(self, database_url: str) -> None:
        # A short wait: while the database is away, calls go on with the last known rates.
        self.tenants = PostgresTenants(database_url, max_size=2, timeout_s=2.0)

    def __call__(self, tenant_id: str) -> TenantQuota | None:
        return self.tenants.get_quota(tenant_id)

    def close(self) -> None:
        self.tenants.close()


def quotas_from_settings(settings: Settings, database_url: str | None) -> TenantQuotas:
    """The server's quotas: settings' defaults, per-tenant overrides from the database."""
    return TenantQuotas(
        Rates.from_settings(settings),
        overrides=DatabaseQuotaLookup(database_url) if database_url else None,
        burst_s=settings.quota_burst_s,
        refresh_s=settings.quota_refresh_s,
    )
