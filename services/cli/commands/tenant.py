"""`tessera tenant create | key | revoke | list | set-quota`: tenants, their API keys and
their quotas."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer

from tessera.services.cli.apps import tenant_app
from tessera.services.cli.commands.infra import stack_info

if TYPE_CHECKING:  # psycopg is imported only when a command runs, so --help stays instant
    from tessera.events.tenant_directory import TenantDirectory
    from tessera.events.tenants import TenantQuota


@contextmanager
def _directory() -> Iterator[TenantDirectory]:
    """A migrated database's tenants; store errors become a clean CLI exit."""
    from tessera.events.migrate import migrate
    from tessera.events.store import EventStoreError
    from tessera.events.tenant_directory import PostgresTenants

    try:
        url = stack_info().database_url
        migrate(url)
        directory = PostgresTenants(url, max_size=1)
        try:
            yield directory
        finally:
            directory.close()
    except EventStoreError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc


@tenant_app.command("create")
def create(tenant_id: str = typer.Argument(..., help="New tenant id, e.g. acme")) -> None:
    """Create a tenant and print its first API key (shown only this once)."""
    with _directory() as directory:
        if not directory.create_tenant(tenant_id):
            typer.secho(
                f"error: tenant {tenant_id!r} already exists; "
                f"`tessera tenant key {tenant_id}` issues another key",
                fg="red",
                err=True,
            )
            raise typer.Exit(1)
        key = directory.issue_api_key(tenant_id)
    typer.echo(f"created tenant {tenant_id}")
    typer.echo(f"api key (store it now; it is not kept): {key}")


@tenant_app.command("key")
def key(tenant_id: str = typer.Argument(..., help="Existing tenant id")) -> None:
    """Issue another API key for a tenant and print it (shown only this once)."""
    with _directory() as directory:
        issued = directory.issue_api_key(tenant_id)
    typer.echo(f"api key (store it now; it is not kept): {issued}")


@tenant_app.command("revoke")
def revoke(key_id: str = typer.Argument(..., help="The key id: the part after 'tsk_'")) -> None:
    """Revoke an API key; requests with it are refused from now on."""
    with _directory() as directory:
        if not directory.revoke_api_key(key_id):
            typer.secho(f"error: no live key with id {key_id!r}", fg="red", err=True)
            raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


@tenant_app.command("list")
def list_command() -> None:
    """List tenants with their keys' ids and states (never the keys) and their quotas."""
    from tessera.events.tenants import TenantQuota

    with _directory() as directory:
        for tenant_id in directory.list_tenants():
            keys = directory.list_api_keys(tenant_id)
            live = [k.key_id for k in keys if k.revoked_at is None]
            quota = directory.get_quota(tenant_id) or TenantQuota()
            typer.echo(
                f"{tenant_id}  keys: {', '.join(live) or '-'}  ({len(keys) - len(live)} revoked)"
                f"  quota: {_quota_text(quota)}"
            )


@tenant_app.command("set-quota")
def set_quota(
    tenant_id: str = typer.Argument(..., help="Existing tenant id"),
    events_per_s: float | None = typer.Option(
        None, min=0, help="Ingested events per second (0: no limit)."
    ),
    requests_per_s: float | None = typer.Option(
        None, min=0, help="Inference requests per second (0: no limit)."
    ),
    tokens_per_s: float | None = typer.Option(
        None, min=0, help="Generated tokens per second (0: no limit)."
    ),
    default: bool = typer.Option(
        False, "--default", help="Put every limit not given back to the server's default."
    ),
) -> None:
    """Set a tenant's quotas; limits not given keep their value (or, with --default, go
    back to TESSERA_QUOTA_*). Servers apply it within TESSERA_QUOTA_REFRESH_S."""
    from tessera.events.tenants import TenantQuota

    with _directory() as directory:
        current = directory.get_quota(tenant_id)
        if current is None:
            typer.secho(f"error: no tenant {tenant_id!r}: create it first", fg="red", err=True)
            raise typer.Exit(1)
        if default:
            current = TenantQuota()
        quota = TenantQuota(
            ingest_events_per_s=_given(events_per_s, current.ingest_events_per_s),
            inference_requests_per_s=_given(requests_per_s, current.inference_requests_per_s),
            inference_tokens_per_s=_given(tokens_per_s, current.inference_tokens_per_s),
        )
        directory.set_quota(tenant_id, quota)
    typer.echo(f"{tenant_id}  {_quota_text(quota)}")


def _given(value: float | None, current: float | None) -> float | None:
    return current if value is None else value


def _quota_text(quota: TenantQuota) -> str:
    def one(value: float | None, unit: str) -> str:
        shown = "default" if value is None else ("no limit" if value == 0 else f"{value:g}")
        return f"{unit}: {shown}"

    return ", ".join(
        (
            one(quota.ingest_events_per_s, "events/s"),
            one(quota.inference_requests_per_s, "requests/s"),
            one(quota.inference_tokens_per_s, "tokens/s"),
        )
    )
