"""Tenant set-up for the demo, the benchmark and tests, over `events.tenants`."""

from __future__ import annotations

from tessera.events.db import connect
from tessera.events.tenants import create_tenant, issue_api_key


def ensure_tenant_with_key(database_url: str, tenant_id: str) -> str:
    """Create `tenant_id` unless it exists and issue it a new API key (returned in
    plaintext this once; only its digest is stored)."""
    with connect(database_url, autocommit=True) as conn:
        create_tenant(conn, tenant_id)
        return issue_api_key(conn, tenant_id)
