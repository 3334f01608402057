"""Tenant and API-key operations the services need, over `events.tenants`.

`events.tenants` (create_tenant, issue_api_key, authenticate) is the owner of the
tenants and api_keys tables. Until it is part of the build, this module falls back to
the same tables directly (keys stored as sha256 hex only), so the demo and the benchmark
run; `USING_EVENTS_TENANTS` says which path is live.
"""

from __future__ import annotations

import hashlib
import importlib.util
import secrets

from tessera.events.db import Connection, connect, translated

USING_EVENTS_TENANTS = importlib.util.find_spec("tessera.events.tenants") is not None


def ensure_tenant_with_key(database_url: str, tenant_id: str) -> str:
    """Create `tenant_id` if it does not exist and issue it a new API key (returned;
    only its digest is stored)."""
    with translated(f"issue an API key for {tenant_id}"), connect(database_url) as conn:
        key = _ensure_and_issue(conn, tenant_id)
        conn.commit()
    return key


def lookup_tenant(conn: Connection, key: str) -> str | None:
    """The tenant of a live (not revoked) key, else None."""
    if USING_EVENTS_TENANTS:
        from tessera.events.tenants import authenticate

        return authenticate(conn, key)  # type: ignore[no-any-return]
    row = conn.execute(
        "SELECT tenant_id FROM api_keys WHERE key_sha256 = %s AND revoked_at IS NULL",
        (hashlib.sha256(key.encode()).hexdigest(),),
    ).fetchone()
    return None if row is None else str(row[0])


def _ensure_and_issue(conn: Connection, tenant_id: str) -> str:
    if USING_EVENTS_TENANTS:
        from tessera.events.tenants import create_tenant, issue_api_key

        create_tenant(conn, tenant_id)
        return issue_api_key(conn, tenant_id)  # type: ignore[no-any-return]
    conn.execute(
        "INSERT INTO tenants (tenant_id) VALUES (%s) ON CONFLICT DO NOTHING", (tenant_id,)
    )
    key = f"tsk_{secrets.token_urlsafe(32)}"
    conn.execute(
        "INSERT INTO api_keys (key_id, tenant_id, key_sha256) VALUES (%s, %s, %s)",
        (secrets.token_hex(8), tenant_id, hashlib.sha256(key.encode()).hexdigest()),
    )
    return key
