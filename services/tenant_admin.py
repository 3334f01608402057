"""Tenant set-up for the demo, the benchmark and tests, over `events.tenants`."""

from __future__ import annotations

from tessera.events.tenant_directory import PostgresTenants


def ensure_tenant_with_key(database_url: str, tenant_id: str) -> str:
    """Create `tenant_id` unless it exists and issue it a new API key (returned in
    plaintext this once; only its digest is stored)."""
    directory = PostgresTenants(database_url, max_size=1)
    try:
        directory.create_tenant(tenant_id)
        return directory.issue_api_key(tenant_id)
    finally:
        directory.close()
