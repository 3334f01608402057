"""Tenants, their API keys and quotas behind one interface, for servers and the CLI.

`PostgresTenants` runs events/tenants.py's queries on a small pool of its own (each call
one transaction, errors translated); `MemoryTenants` is the twin. Both are run through
tests/events/test_tenant_directory_contract.py. Keys are stored as sha256 only, in both.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from psycopg_pool import ConnectionPool

from tessera.events import tenants
from tessera.events.db import make_pool, translated
from tessera.events.store import NotFoundError
from tessera.events.tenants import ApiKeyInfo, TenantQuota
from tessera.schemas.events import utcnow


class TenantDirectory(Protocol):
    def create_tenant(self, tenant_id: str) -> bool:
        """True if created, False if it existed; TenantError for an invalid id."""
        ...

    def tenant_exists(self, tenant_id: str) -> bool: ...

    def list_tenants(self) -> list[str]: ...

    def issue_api_key(self, tenant_id: str) -> str:
        """A new key, in plaintext this once; NotFoundError for an unknown tenant."""
        ...

    def authenticate(self, key: str) -> str | None:
        """The key's tenant; None for a malformed, unknown or revoked key."""
        ...

    def revoke_api_key(self, key_id: str) -> bool:
        """False when there was no live key with that id."""
        ...

    def list_api_keys(self, tenant_id: str) -> list[ApiKeyInfo]:
        """The tenant's keys by creation time (never the keys themselves)."""
        ...

    def set_quota(self, tenant_id: str, quota: TenantQuota) -> None:
        """NotFoundError for an unknown tenant, TenantError for an invalid rate."""
        ...

    def get_quota(self, tenant_id: str) -> TenantQuota | None:
        """None when there is no such tenant."""
        ...

    def close(self) -> None: ...


class PostgresTenants:
    """TenantDirectory on PostgreSQL through a small pool (`timeout_s`: how long a call
    waits for a connection before a transient error)."""

    def __init__(self, url: str, *, max_size: int = 2, timeout_s: float = 10.0) -> None:
        self.pool: ConnectionPool = make_pool(
            url, min_size=1, max_size=max_size, timeout_s=timeout_s
        )

    def create_tenant(self, tenant_id: str) -> bool:
        with translated("create tenant"), self.pool.connection() as conn:
            return tenants.create_tenant(conn, tenant_id)

    def tenant_exists(self, tenant_id: str) -> bool:
        with translated("read tenant"), self.pool.connection() as conn:
            return tenants.tenant_exists(conn, tenant_id)

    def list_tenants(self) -> list[str]:
        with translated("list tenants"), self.pool.connection() as conn:
            return tenants.list_tenants(conn)

    def issue_api_key(self, tenant_id: str) -> str:
        with translated("issue API key"), self.pool.connection() as conn:
            return tenants.issue_api_key(conn, tenant_id)

    def authenticate(self, key: str) -> str | None:
        if not tenants.key_is_well_formed(key):
            return None  # never borrow a connection for a key that cannot exist
        with translated("look up an API key"), self.pool.connection() as conn:
            return tenants.authenticate(conn, key)

    def revoke_api_key(self, key_id: str) -> bool:
        with translated("revoke API key"), self.pool.connection() as conn:
            return tenants.revoke_api_key(conn, key_id)

    def list_api_keys(self, tenant_id: str) -> list[ApiKeyInfo]:
        with translated("list API keys"), self.pool.connection() as conn:
            return tenants.list_api_keys(conn, tenant_id)

    def set_quota(self, tenant_id: str, quota: TenantQuota) -> None:
        with translated("set tenant quota"), self.pool.connection() as conn:
            tenants.set_quota(conn, tenant_id, quota)

    def get_quota(self, tenant_id: str) -> TenantQuota | None:
        with translated("read a tenant's quota"), self.pool.connection() as conn:
            return tenants.get_quota(conn, tenant_id)

    def close(self) -> None:
        self.pool.close()


@dataclass(slots=True)
class _Key:
    tenant_id: str
    sha256: str
    created_at: datetime
    revoked_at: datetime | None = None


class MemoryTenants:
    """The twin: the same rules (ids, key shape, hashed keys, quotas) in memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._quotas: dict[str, TenantQuota] = {}
        self._keys: dict[str, _Key] = {}

    def create_tenant(self, tenant_id: str) -> bool:
        tenants.validate_tenant_id(tenant_id)
        with self._lock:
            if tenant_id in self._quotas:
                return False
            self._quotas[tenant_id] = TenantQuota()
            return True

    def tenant_exists(self, tenant_id: str) -> bool:
        with self._lock:
            return tenant_id in self._quotas

    def list_tenants(self) -> list[str]:
        with self._lock:
            return sorted(self._quotas)

    def issue_api_key(self, tenant_id: str) -> str:
        key_id, key, digest = tenants.new_api_key()
        with self._lock:
            if tenant_id not in self._quotas:
                raise NotFoundError(f"no tenant {tenant_id!r}: create it first")
            self._keys[key_id] = _Key(tenant_id, digest, utcnow())
        return key

    def authenticate(self, key: str) -> str | None:
        key_id = tenants.key_id_of(key)
        with self._lock:
            row = self._keys.get(key_id) if key_id is not None else None
        if row is None or row.revoked_at is not None:
            return None
        return row.tenant_id if tenants.key_matches(key, row.sha256) else None

    def revoke_api_key(self, key_id: str) -> bool:
        with self._lock:
            row = self._keys.get(key_id)
            if row is None or row.revoked_at is not None:
                return False
            row.revoked_at = utcnow()
            return True

    def list_api_keys(self, tenant_id: str) -> list[ApiKeyInfo]:
        with self._lock:
            infos = [ApiKeyInfo(key_id, k.tenant_id, k.created_at, k.revoked_at)
                     for key_id, k in self._keys.items() if k.tenant_id == tenant_id]
        return sorted(infos, key=lambda i: (i.created_at, i.key_id))

    def set_quota(self, tenant_id: str, quota: TenantQuota) -> None:
        tenants.checked_rates(quota)
        with self._lock:
            if tenant_id not in self._quotas:
                raise NotFoundError(f"no tenant {tenant_id!r}: create it first")
            self._quotas[tenant_id] = quota

    def get_quota(self, tenant_id: str) -> TenantQuota | None:
        with self._lock:
            return self._quotas.get(tenant_id)

    def close(self) -> None:
        """Nothing held."""


if TYPE_CHECKING:  # mypy proves both classes satisfy the protocol
    _pg: TenantDirectory = PostgresTenants("")
    _mem: TenantDirectory = MemoryTenants()
