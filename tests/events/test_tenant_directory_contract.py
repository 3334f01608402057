"""TenantDirectory: one contract, run on PostgreSQL and on the in-memory twin."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tessera.events.store import NotFoundError
from tessera.events.tenant_directory import MemoryTenants, PostgresTenants, TenantDirectory
from tessera.events.tenants import TenantError, TenantQuota


@pytest.fixture(params=["memory", "postgres"])
def directory(request: pytest.FixtureRequest) -> Iterator[TenantDirectory]:
    if request.param == "memory":
        yield MemoryTenants()
        return
    pg = PostgresTenants(request.getfixturevalue("database_url"))
    try:
        yield pg
    finally:
        pg.close()


def test_tenants_and_keys(directory: TenantDirectory) -> None:
    assert directory.create_tenant("acme") is True
    assert directory.create_tenant("acme") is False
    directory.create_tenant("globex")
    assert directory.list_tenants() == ["acme", "globex"]
    assert directory.tenant_exists("acme") and not directory.tenant_exists("ghost")
    key, other = directory.issue_api_key("acme"), directory.issue_api_key("globex")
    assert key.startswith("tsk_") and key != other
    assert directory.authenticate(key) == "acme"
    assert directory.authenticate(other) == "globex"
    for wrong in (key[:-4] + "AAAA", "tsk_nothing", ""):  # wrong secret, malformed, empty
        assert directory.authenticate(wrong) is None
    key_id = key.split("_")[1]
    assert directory.revoke_api_key(key_id) is True
    assert directory.revoke_api_key(key_id) is False
    assert directory.authenticate(key) is None and directory.authenticate(other) == "globex"
    second = directory.issue_api_key("acme")
    infos = directory.list_api_keys("acme")
    assert [i.key_id for i in infos] == [key_id, second.split("_")[1]]
    assert infos[0].revoked_at is not None and infos[1].revoked_at is None
    assert all(i.tenant_id == "acme" for i in infos)


def test_refusals(directory: TenantDirectory) -> None:
    with pytest.raises(TenantError, match="invalid tenant id"):
        directory.create_tenant("Bad Tenant!")
    with pytest.raises(NotFoundError, match="no tenant 'ghost'"):
        directory.issue_api_key("ghost")
    with pytest.raises(NotFoundError, match="no tenant 'ghost'"):
        directory.set_quota("ghost", TenantQuota())
    directory.create_tenant("acme")
    with pytest.raises(TenantError, match="invalid rate"):
        directory.set_quota("acme", TenantQuota(ingest_events_per_s=-1.0))
    assert directory.list_api_keys("acme") == []


def test_quotas(directory: TenantDirectory) -> None:
    assert directory.get_quota("acme") is None
    directory.create_tenant("acme")
    assert directory.get_quota("acme") == TenantQuota()
    quota = TenantQuota(ingest_events_per_s=5.0, inference_requests_per_s=0.0)
    directory.set_quota("acme", quota)
    assert directory.get_quota("acme") == quota
    directory.set_quota("acme", TenantQuota())
    assert directory.get_quota("acme") == TenantQuota()
