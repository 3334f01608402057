"""API keys -> callers, for HTTP (FastAPI dependencies) and gRPC (metadata) alike.

A key arrives as `Authorization: Bearer <key>` or `X-API-Key: <key>`. Tenant keys are
resolved by `events.tenants.authenticate` (keys are stored as sha256 only); the admin key
comes from settings. Resolutions are cached for a short time so a busy client does not
cost a database round trip per call; a revoked key therefore stops working within
`auth_cache_ttl_s`.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Mapping
from typing import Annotated, Final

from fastapi import Depends, HTTPException, Request, status
from starlette.concurrency import run_in_threadpool

KeyLookup = Callable[[str], str | None]  # key -> tenant_id, or None when unknown/revoked

_BEARER: Final = "bearer "
_CACHE_MAX: Final = 10_000


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


class KeyAuthenticator:
    """Resolves keys to tenants through `lookup`, with a small TTL cache keyed by the
    key's digest (the plain key is never kept)."""

    def __init__(self, *, lookup: KeyLookup, admin_key: str, cache_ttl_s: float = 30.0) -> None:
        self._lookup = lookup
        self._admin_digest = _digest(admin_key)
        self._ttl = cache_ttl_s
        self._cache: dict[bytes, tuple[float, str | None]] = {}
        self._lock = threading.Lock()

    def is_admin(self, key: str | None) -> bool:
        return key is not None and hmac.compare_digest(_digest(key), self._admin_digest)

    def tenant_for_key(self, key: str | None) -> str:
        """The tenant a key belongs to. Blocking on a cache miss (database lookup)."""
        if not key:
            raise Unauthenticated(
                "no API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`"
            )
        digest = _digest(key)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            tenant = hit[1]
        else:
            tenant = self._lookup(key)
            with self._lock:
                if len(self._cache) >= _CACHE_MAX:
                    self._cache.clear()  # crude but bounded; keys are few per process
                self._cache[digest] = (now + self._ttl, tenant)
        if tenant is None:
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


def authenticator_from_database(
    database_url: str, *, admin_key: str, cache_ttl_s: float = 30.0
) -> KeyAuthenticator:
    """A `KeyAuthenticator` whose lookups go to the tenants table through a small pool."""
    from tessera.events.db import make_pool, translated
    from tessera.events.tenants import authenticate

    pool = make_pool(database_url, min_size=1, max_size=2)

    def lookup(key: str) -> str | None:
        with translated("look up an API key"), pool.connection() as conn:
            return authenticate(conn, key)

    return KeyAuthenticator(lookup=lookup, admin_key=admin_key, cache_ttl_s=cache_ttl_s)


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
