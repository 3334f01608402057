"""Tenants and API keys against PostgreSQL: only hashes stored, revocation, bad keys."""

from __future__ import annotations

import hashlib

import psycopg
import pytest

from tessera.events import tenants
from tessera.events.store import NotFoundError


def test_issue_authenticate_revoke(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert tenants.create_tenant(conn, "acme") is True
        assert tenants.create_tenant(conn, "acme") is False  # already there
        tenants.create_tenant(conn, "globex")
        key = tenants.issue_api_key(conn, "acme")
        other = tenants.issue_api_key(conn, "globex")
        assert key.startswith("tsk_") and key != other

        assert tenants.authenticate(conn, key) == "acme"
        assert tenants.authenticate(conn, other) == "globex"
        # Same id, wrong secret; malformed; empty: all refused.
        assert tenants.authenticate(conn, key[:-4] + "AAAA") is None
        assert tenants.authenticate(conn, "tsk_nothing") is None
        assert tenants.authenticate(conn, "") is None

        # Only the sha256 is stored: the plaintext appears in no column.
        rows = conn.execute("SELECT key_id, tenant_id, key_sha256 FROM api_keys").fetchall()
        assert all(key not in " ".join(map(str, row)) for row in rows)
        assert hashlib.sha256(key.encode()).hexdigest() in {r[2] for r in rows}

        key_id = key.split("_")[1]
        assert tenants.revoke_api_key(conn, key_id) is True
        assert tenants.revoke_api_key(conn, key_id) is False
        assert tenants.authenticate(conn, key) is None
        assert tenants.authenticate(conn, other) == "globex"
        (info,) = tenants.list_api_keys(conn, "acme")
        assert info.key_id == key_id and info.revoked_at is not None
        assert tenants.list_tenants(conn) == ["acme", "globex"]


def test_bad_tenant_ids_and_unknown_tenants(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        with pytest.raises(tenants.TenantError, match="invalid tenant id"):
            tenants.create_tenant(conn, "Bad Tenant!")
        with pytest.raises(NotFoundError, match="no tenant 'ghost'"):
            tenants.issue_api_key(conn, "ghost")


def test_quota_overrides_are_stored_with_the_tenant(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        tenants.create_tenant(conn, "acme")
        assert tenants.get_quota(conn, "acme") == tenants.TenantQuota()  # all defaults
        assert tenants.get_quota(conn, "ghost") is None
        quota = tenants.TenantQuota(ingest_events_per_s=50.0, inference_tokens_per_s=0.0)
        tenants.set_quota(conn, "acme", quota)
        assert tenants.get_quota(conn, "acme") == quota
        tenants.set_quota(conn, "acme", tenants.TenantQuota())
        assert tenants.get_quota(conn, "acme") == tenants.TenantQuota()
        with pytest.raises(NotFoundError, match="no tenant 'ghost'"):
            tenants.set_quota(conn, "ghost", quota)
        for bad in (-1.0, float("nan"), float("inf")):
            with pytest.raises(tenants.TenantError, match="invalid rate"):
                tenants.set_quota(conn, "acme", tenants.TenantQuota(inference_requests_per_s=bad))
