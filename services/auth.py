"""API keys -> callers, for HTTP (FastAPI dependencies) and gRPC (metadata) alike.

A key arrives as `Authorization: Bearer <key>` or `X-API-Key: <key>`. Tenant keys are
resolved by `events.tenants.authenticate` (keys are stored as sha256 only); the admin key
comes from settings. A key is checked cheapest first: its format (a malformed key never
reaches the database), then the caches, then the database. Valid keys are cached for
`auth_cache_ttl_s` so a busy client does not cost a round trip per call (a revoked key
therefore stops working within that time); failed look-ups are cached apart, bounded and
briefly (`auth_negative_cache_ttl_s`), so a flood of wrong keys neither reaches the
database twice per key nor pushes valid keys out. For HTTP, `services.auth_gate` runs
this before a request's body is read.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Callable, Mapping
from typing import Annotated, Final

from cachetools import TTLCache
from fastapi import Depends, HTTPException, Request, status
from starlette.concurrency import run_in_threadpool

from tessera.events.tenant_directory import PostgresTenants
from tessera.events.tenants import key_is_well_formed

KeyLookup = Callable[[str], str | None]  # key -> tenant_id, or None when unknown/revoked

_BEARER: Final = "bearer "
# Where `services.auth_gate` leaves the tenant of a key it checked (request.state).
GATE_TENANT_STATE: Final = "tessera_tenant_id"
# Keys live in a process at once: valid ones are few per process; failed ones are what
# an attacker controls, so their cache is bounded apart and its entries die quickly.
_VALID_MAX: Final = 10_000
_FAILED_MAX: Final = 10_000


class Unauthenticated(Exception):
    """No key, or a key that belongs to no tenant (or is revoked)."""


class Forbidden(Exception):
    """A valid key that may not do this (a tenant key on an admin action)."""


def key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The API key of a request: `Authorization: Bearer <key>`, else `X-API-Key`.
    Header names must already be lower-case (both HTTP/2 metadata and starlette are)."""
    auth = headers.get("authorization")
    if auth and auth[: len(_BEARER)].lower() == _BEARER:
        return auth[len(_BEARER) :].strip() or None
    key = headers.get("x-api-key")
    return key.strip() if key else None


def _any_key(_key: str) -> bool:
    return True


class KeyAuthenticator:
    """Resolves keys to tenants through `lookup`: a key failing `well_formed` is refused
    at once; otherwise a cache of valid keys, then one of failed look-ups, then `lookup`.
    Both caches are keyed by the key's digest (the plain key is never kept)."""

    def __init__(
        self,
        *,
        lookup: KeyLookup,
        admin_key: str,
        cache_ttl_s: float = 30.0,
        negative_ttl_s: float = 5.0,
        well_formed: Callable[[str], bool] = _any_key,
        valid_max: int = _VALID_MAX,
        failed_max: int = _FAILED_MAX,
    ) -> None:
        self._lookup = lookup
        self._well_formed = well_formed
        self._admin_digest = _digest(admin_key)
        # TTLCache needs a positive ttl; a 0 setting means "do not cache".
        self._valid: TTLCache[bytes, str] | None = (
            TTLCache(valid_max, cache_ttl_s) if cache_ttl_s > 0 else None
        )
        self._failed: TTLCache[bytes, bool] | None = (
            TTLCache(failed_max, negative_ttl_s) if negative_ttl_s > 0 else None
        )
        self._lock = threading.Lock()  # cachetools caches are not thread-safe

    def is_admin(self, key: str | None) -> bool:
        return key is not None and hmac.compare_digest(_digest(key), self._admin_digest)

    def cached_tenant(self, key: str | None) -> str | None:
        """Without blocking: the tenant of a key known valid, None when only `lookup` can
        tell. Raises `Unauthenticated` for no key, a malformed one or a recent failure."""
        return self._cached(self._checked(key))

    def tenant_for_key(self, key: str | None) -> str:
        """The tenant a key belongs to. Blocking on a cache miss (database lookup)."""
        key = self._checked(key)
        tenant = self._cached(key)
        if tenant is not None:
            return tenant
        tenant = self._lookup(key)
        digest = _digest(key)
        with self._lock:
            if tenant is not None and self._valid is not None:
                self._valid[digest] = tenant
            elif tenant is None and self._failed is not None:
                self._failed[digest] = True
        if tenant is None:
            raise Unauthenticated("unknown or revoked API key")
        return tenant

    def _checked(self, key: str | None) -> str:
        if not key:
            raise Unauthenticated(
                "no API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`"
            )
        if not self._well_formed(key):
            raise Unauthenticated("malformed API key: tenant keys read tsk_<key id>_<secret>")
        return key

    def _cached(self, key: str) -> str | None:
        digest = _digest(key)
        with self._lock:
            tenant = self._valid.get(digest) if self._valid is not None else None
            failed = self._failed is not None and digest in self._failed
        if failed:
            raise Unauthenticated("unknown or revoked API key")
        return tenant

    def admin(self, key: str | None) -> None:
        """Raise unless `key` is the admin key."""
        if not key:
            raise Unauthenticated("no API key: admin actions need the admin key")
        if not self.is_admin(key):
            raise Forbidden("this action needs the admin key")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class DatabaseKeyLookup:
    """`KeyLookup` over the tenants table through a small pool of its own."""

    def __init__(self, database_url: str) -> None:
        self.tenants = PostgresTenants(database_url, max_size=2)

    def __call__(self, key: str) -> str | None:
        return self.tenants.authenticate(key)


def authenticator_from_database(
    database_url: str,
    *,
    admin_key: str,
    cache_ttl_s: float = 30.0,
    negative_ttl_s: float = 5.0,
) -> KeyAuthenticator:
    """A `KeyAuthenticator` whose lookups go to the tenants table; malformed keys are
    refused before any connection is borrowed."""
    return KeyAuthenticator(
        lookup=DatabaseKeyLookup(database_url),
        admin_key=admin_key,
        cache_ttl_s=cache_ttl_s,
        negative_ttl_s=negative_ttl_s,
        well_formed=key_is_well_formed,
    )


# --- FastAPI dependencies ------------------------------------------------------------


def _authenticator(request: Request) -> KeyAuthenticator:
    auth = getattr(request.app.state, "auth", None)
    if not isinstance(auth, KeyAuthenticator):
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "authentication is not configured on this server"
        )
    return auth


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"}
    )


async def tenant_caller(request: Request) -> str:
    """Dependency: the calling tenant's id, or 401."""
    auth = _authenticator(request)
    checked = getattr(request.state, GATE_TENANT_STATE, None)
    if isinstance(checked, str):  # the gate resolved it before the body was read
        return checked
    key = key_from_headers(request.headers)
    try:
        return await run_in_threadpool(auth.tenant_for_key, key)
    except Unauthenticated as exc:
        raise _unauthorized(str(exc)) from None


async def admin_caller(request: Request) -> None:
    """Dependency: passes only for the admin key (401 without a key, 403 with another)."""
    auth = _authenticator(request)
    try:
        auth.admin(key_from_headers(request.headers))
    except Unauthenticated as exc:
        raise _unauthorized(str(exc)) from None
    except Forbidden as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None


TenantCaller = Annotated[str, Depends(tenant_caller)]
AdminCaller = Annotated[None, Depends(admin_caller)]
