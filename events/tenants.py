"""Tenants and their API keys. Only a key's sha256 is stored; the key is shown once.

A key reads `tsk_<key_id>_<secret>`: `key_id` finds the row with one index lookup, the
secret makes it unguessable, and the stored sha256 of the whole key is compared in
constant time. Functions take a psycopg connection (the HTTP app's pool lends one) and
run in their own transaction, or in a savepoint when the caller has one open.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import psycopg
from pydantic import TypeAdapter, ValidationError

from tessera.events.db import translated
from tessera.events.store import EventStoreError, NotFoundError
from tessera.schemas.events import TenantId

KEY_PREFIX: Final = "tsk"
_KEY_ID_BYTES: Final = 6  # 12 hex characters
_SECRET_BYTES: Final = 32
_SECRET_CHARS: Final = 43  # len(secrets.token_urlsafe(_SECRET_BYTES))
# The whole shape of an issued key, so a malformed one is refused without a query.
_KEY_SHAPE: Final = re.compile(
    rf"{KEY_PREFIX}_([0-9a-f]{{{2 * _KEY_ID_BYTES}}})_[A-Za-z0-9_-]{{{_SECRET_CHARS}}}"
)
_TENANT_ID: Final = TypeAdapter(TenantId)

Conn = psycopg.Connection[Any]


class TenantError(EventStoreError):
    """A tenant id is not acceptable."""


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """What may be shown about a key after it was issued: never the key itself."""

    key_id: str
    tenant_id: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class TenantQuota:
    """A tenant's own limits (per second): None means the server's default, 0 no limit."""

    ingest_events_per_s: float | None = None
    inference_requests_per_s: float | None = None
    inference_tokens_per_s: float | None = None


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def validate_tenant_id(tenant_id: str) -> str:
    try:
        return _TENANT_ID.validate_python(tenant_id)
    except ValidationError as exc:
        raise TenantError(
            f"invalid tenant id {tenant_id!r}: use 1-64 of a-z, 0-9, '_' and '-', "
            "starting with a letter or digit"
        ) from exc


def create_tenant(conn: Conn, tenant_id: str) -> bool:
    """Create a tenant unless it exists: True if created, False if it was already there.
    TenantError if the id is invalid."""
    validate_tenant_id(tenant_id)
    with translated("create tenant"), conn.transaction():
        row = conn.execute(
            "INSERT INTO tenants (tenant_id) VALUES (%s) ON CONFLICT DO NOTHING RETURNING 1",
            (tenant_id,),
        ).fetchone()
    return row is not None


def tenant_exists(conn: Conn, tenant_id: str) -> bool:
    with translated("read tenant"):
        row = conn.execute("SELECT 1 FROM tenants WHERE tenant_id = %s", (tenant_id,)).fetchone()
    return row is not None


def list_tenants(conn: Conn) -> list[str]:
    with translated("list tenants"):
        return [r[0] for r in conn.execute("SELECT tenant_id FROM tenants ORDER BY tenant_id")]


def new_api_key() -> tuple[str, str, str]:
    """A fresh key as (key_id, key, sha256 of the key): the parts a store keeps, and the
    key shown to the caller once."""
    key_id = secrets.token_hex(_KEY_ID_BYTES)
    key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(_SECRET_BYTES)}"
    return key_id, key, _digest(key)


def key_matches(key: str, stored_sha256: str) -> bool:
    """Whether `key` is the one whose sha256 was stored (constant-time comparison)."""
    return hmac.compare_digest(stored_sha256, _digest(key))


def issue_api_key(conn: Conn, tenant_id: str) -> str:
    """A new key for the tenant, returned in plaintext this once; only its sha256 is kept."""
    key_id, key, digest = new_api_key()
    with translated("issue API key"), conn.transaction():
        if not tenant_exists(conn, tenant_id):
            raise NotFoundError(f"no tenant {tenant_id!r}: create it first")
        conn.execute(
            "INSERT INTO api_keys (key_id, tenant_id, key_sha256) VALUES (%s, %s, %s)",
            (key_id, tenant_id, digest),
        )
    return key


def key_id_of(key: str) -> str | None:
    """The key id of a well-formed key (the part after `tsk_`), else None."""
    return _key_id_of(key)


def _key_id_of(key: str) -> str | None:
    match = _KEY_SHAPE.fullmatch(key)
    return match.group(1) if match else None


def key_is_well_formed(key: str) -> bool:
    """Whether `key` has the shape of an issued key (checked before any database work)."""
    return _key_id_of(key) is not None


def authenticate(conn: Conn, key: str) -> str | None:
    """The tenant a key belongs to, or None for a malformed, unknown or revoked key."""
    key_id = _key_id_of(key)
    if key_id is None:
        return None
    with translated("authenticate API key"):
        row = conn.execute(
            "SELECT tenant_id, key_sha256 FROM api_keys WHERE key_id = %s AND revoked_at IS NULL",
            (key_id,),
        ).fetchone()
    if row is None:
        return None
    tenant_id, stored = row
    return str(tenant_id) if key_matches(key, str(stored)) else None


def revoke_api_key(conn: Conn, key_id: str) -> bool:
    """Revoke a key by its id (the part after `tsk_`); False if there was none to revoke."""
    with translated("revoke API key"), conn.transaction():
        row = conn.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE key_id = %s AND revoked_at IS NULL "
            "RETURNING 1",
            (key_id,),
        ).fetchone()
    return row is not None


def list_api_keys(conn: Conn, tenant_id: str) -> list[ApiKeyInfo]:
    with translated("list API keys"):
        rows = conn.execute(
            "SELECT key_id, tenant_id, created_at, revoked_at FROM api_keys "
            "WHERE tenant_id = %s ORDER BY created_at, key_id",
            (tenant_id,),
        ).fetchall()
    return [ApiKeyInfo(*row) for row in rows]


def checked_rates(quota: TenantQuota) -> tuple[float | None, float | None, float | None]:
    """The quota's rates; TenantError for a negative or non-finite one."""
    rates = (quota.ingest_events_per_s, quota.inference_requests_per_s,
             quota.inference_tokens_per_s)
    for rate in rates:
        if rate is not None and not (math.isfinite(rate) and rate >= 0):
            raise TenantError(f"invalid rate {rate!r}: use a number >= 0 (0: no limit)")
    return rates


def set_quota(conn: Conn, tenant_id: str, quota: TenantQuota) -> None:
    """Store the tenant's limits (every field: None puts back the server's default).
    NotFoundError for an unknown tenant, TenantError for a negative or non-finite rate."""
    rates = checked_rates(quota)
    with translated("set tenant quota"), conn.transaction():
        row = conn.execute(
            "UPDATE tenants SET ingest_events_per_s = %s, inference_requests_per_s = %s, "
            "inference_tokens_per_s = %s WHERE tenant_id = %s RETURNING 1",
            (*rates, tenant_id),
        ).fetchone()
    if row is None:
        raise NotFoundError(f"no tenant {tenant_id!r}: create it first")


def get_quota(conn: Conn, tenant_id: str) -> TenantQuota | None:
    """The tenant's stored limits, or None when there is no such tenant."""
    with translated("read tenant quota"):
        row = conn.execute(
            "SELECT ingest_events_per_s, inference_requests_per_s, inference_tokens_per_s "
            "FROM tenants WHERE tenant_id = %s",
            (tenant_id,),
        ).fetchone()
    return None if row is None else TenantQuota(*row)
