"""Who may audit and correct what (ARCHITECTURE.md, "Tenancy and auth"), for HTTP and
gRPC alike:

- the admin key may read the audit of every tenant and run rollback and forget;
- a tenant key may read the audit of its own tenant's users only, and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from tessera.services.auth import Forbidden, KeyAuthenticator


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: the admin (tenant_id None) or one tenant."""

    tenant_id: str | None

    @property
    def is_admin(self) -> bool:
        return self.tenant_id is None

    @property
    def scope(self) -> str | None:
        """The tenant whose data this caller may read; None: every tenant."""
        return self.tenant_id

    @property
    def actor(self) -> str:
        """How the log names this caller in rollback and forget events."""
        return "admin-key" if self.tenant_id is None else f"tenant:{self.tenant_id}"


def resolve_caller(auth: KeyAuthenticator, key: str | None) -> Caller:
    """The caller behind `key`; raises `Unauthenticated` for a missing or unknown key.
    Blocking (a tenant key may need a database lookup)."""
    if auth.is_admin(key):
        return Caller(tenant_id=None)
    return Caller(tenant_id=auth.tenant_for_key(key))


def require_admin(caller: Caller, action: str) -> None:
    if not caller.is_admin:
        raise Forbidden(f"{action} needs the admin key; a tenant key may only read its audit")


def require_tenant(caller: Caller, tenant_id: str) -> None:
    if caller.tenant_id is not None and caller.tenant_id != tenant_id:
        raise Forbidden(
            f"this key belongs to tenant {caller.tenant_id!r} and sees only its own users; "
            f"the audit of tenant {tenant_id!r} needs that tenant's key or the admin key"
        )
