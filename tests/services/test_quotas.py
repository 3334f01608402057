"""Per-tenant token buckets (services/quotas.py) on a controlled clock: bursts, refill,
debt for what is known only afterwards, per-tenant overrides, and tenants apart."""

from __future__ import annotations

import pytest

from tessera.events.tenants import TenantQuota
from tessera.services.quotas import QuotaExceeded, Rates, TenantQuotas


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _quotas(clock: Clock, overrides: dict[str, TenantQuota] | None = None,
            refresh_s: float = 30.0) -> TenantQuotas:
    table = overrides or {}
    return TenantQuotas(Rates(events=10, requests=2, tokens=20), overrides=table.get,
                        burst_s=2.0, refresh_s=refresh_s, clock=clock)


def test_events_burst_then_refuse_with_the_wait_then_refill() -> None:
    clock = Clock()
    quotas = _quotas(clock)
    quotas.take_events("a", 20)  # the burst: 2 s of 10 events/s
    with pytest.raises(QuotaExceeded, match="10 ingested events per second") as exc:
        quotas.take_events("a", 5)
    assert exc.value.retry_after_s == pytest.approx(0.5)
    quotas.take_events("b", 20)  # another tenant has its own bucket
    clock.now += 0.5
    quotas.take_events("a", 5)
    with pytest.raises(QuotaExceeded):
        quotas.check_events("a")


def test_a_batch_larger_than_the_bucket_passes_when_full_and_leaves_a_debt() -> None:
    clock = Clock()
    quotas = _quotas(clock)
    quotas.take_events("a", 50)  # > capacity 20: passes on a full bucket
    with pytest.raises(QuotaExceeded) as exc:
        quotas.take_events("a", 1)
    assert exc.value.retry_after_s == pytest.approx(3.1)  # level -30 back to +1 at 10/s
    clock.now += 5.0  # level 20 again: full
    quotas.take_events("a", 50)


def test_generated_tokens_are_charged_afterwards_and_debt_blocks_new_requests() -> None:
    clock = Clock()
    quotas = _quotas(clock)
    quotas.admit_request("a")
    quotas.charge_tokens("a", 45)  # capacity 40 at 20/s: level -5
    with pytest.raises(QuotaExceeded, match="generated tokens") as exc:
        quotas.admit_request("a")
    assert exc.value.retry_after_s == pytest.approx(0.3)
    quotas.admit_request("b")
    clock.now += 0.3
    quotas.admit_request("a")
    quotas.admit_request("a")  # the requests bucket: 4 (2/s for 2 s), 3 taken now
    quotas.admit_request("a")
    with pytest.raises(QuotaExceeded, match="2 inference requests per second"):
        quotas.admit_request("a")


def test_per_tenant_overrides_and_zero_means_no_limit() -> None:
    clock = Clock()
    quotas = _quotas(clock, {"big": TenantQuota(ingest_events_per_s=0),
                             "small": TenantQuota(ingest_events_per_s=1)})
    for _ in range(100):
        quotas.take_events("big", 1000)
    quotas.take_events("small", 2)
    with pytest.raises(QuotaExceeded, match="quota of 1 ingested"):
        quotas.take_events("small", 1)


def test_a_changed_override_applies_after_the_refresh() -> None:
    clock = Clock()
    table = {"a": TenantQuota(ingest_events_per_s=1)}
    quotas = _quotas(clock, table, refresh_s=10)
    quotas.take_events("a", 2)
    table["a"] = TenantQuota(ingest_events_per_s=100)
    clock.now += 1.0  # still cached: 1 event/s
    quotas.take_events("a", 1)
    with pytest.raises(QuotaExceeded):
        quotas.take_events("a", 1)
    clock.now += 10.0  # refreshed: 100 events/s; the bucket (2 held) may grow to 200
    assert quotas.rates("a").events == 100
    quotas.take_events("a", 2)
    clock.now += 1.5
    quotas.take_events("a", 150)
    with pytest.raises(QuotaExceeded, match="quota of 100 ingested"):
        quotas.take_events("a", 100)


def test_a_database_outage_keeps_the_last_known_rates() -> None:
    clock = Clock()
    answers: list[TenantQuota | Exception] = [TenantQuota(ingest_events_per_s=1)]

    def lookup(_tenant: str) -> TenantQuota | None:
        answer = answers[-1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    quotas = TenantQuotas(Rates(events=10, requests=2, tokens=20), overrides=lookup,
                          burst_s=2.0, refresh_s=10, clock=clock)
    assert quotas.rates("a").events == 1
    answers.append(ConnectionError("PostgreSQL is down"))
    clock.now += 11.0
    assert quotas.rates("a").events == 1  # the last known, not an error
    quotas.take_events("a", 2)
    assert quotas.rates("b") == quotas.defaults  # never known: the settings' defaults
