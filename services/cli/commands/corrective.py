"""`tessera rollback` and `tessera forget`: the corrective actions from the command line.

Both write the log first, then announce on `tessera.revisions` so running servers switch
(rollback) or purge their caches (forget). The actor recorded in the log is
`cli:<login>` unless `--actor` says otherwise.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer

from tessera.schemas.settings import get_settings
from tessera.services.cli.apps import app
from tessera.services.cli.commands.infra import stack_info

if TYPE_CHECKING:
    from tessera.services.audit.backend import AdminBackend

TENANT_HELP = "Tenant of the user (default: settings.default_tenant, TESSERA_DEFAULT_TENANT)."
ACTOR_HELP = "Who is acting, as the log records it (default: cli:<login>)."


def _actor(actor: str | None) -> str:
    if actor:
        return actor
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name in this environment (containers)
        return "cli:unknown"


@contextmanager
def _backend() -> Iterator[AdminBackend]:
    from tessera.events.kafka import KafkaSetupError
    from tessera.services.audit.backend import open_backend

    settings = get_settings()
    stack = stack_info()
    try:
        backend = open_backend(
            database_url=stack.database_url,
            adapter_dir=settings.adapter_store_dir,
            kafka_bootstrap=stack.kafka_bootstrap,
            revisions_topic=settings.topic_revisions,
        )
    except KafkaSetupError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    try:
        yield backend
    finally:
        backend.close()


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", fg="red", err=True)
    return typer.Exit(code)


def _announced(published: bool, error: str | None) -> str:
    if published:
        return "servers notified on the revisions topic"
    return f"NOT announced ({error}); servers pick it up within their cache TTL"


@app.command("rollback")
def rollback(
    user_id: str = typer.Argument(..., help="The user (or '~prior' for the tenant prior)."),
    to: str | None = typer.Option(
        None, "--to", help="Revision to serve (back or forward); default: the head's parent."
    ),
    reason: str = typer.Option(..., "--reason", help="Why; kept in the log."),
    tenant: str | None = typer.Option(None, "--tenant", "-t", help=TENANT_HELP),
    actor: str | None = typer.Option(None, "--actor", help=ACTOR_HELP),
) -> None:
    """Switch the revision a user is served (back, or forward with --to).

    Without --to, go back to the head's parent
    (or, when that is the tenant prior or the base model, clear the personal head).
    Rejected and forgotten revisions are refused."""
    from tessera.events.store import EventStoreError
    from tessera.services.corrective import CorrectiveError

    tenant_id = tenant or get_settings().default_tenant
    with _backend() as backend:
        try:
            result = backend.actions.rollback(
                tenant_id, user_id, to_revision_id=to, reason=reason, actor=_actor(actor)
            )
        except CorrectiveError as exc:
            raise _fail(str(exc)) from exc
        except EventStoreError as exc:
            raise _fail(f"the event store failed: {exc}", 2) from exc
    target = result.to_revision_id or "no personal revision (tenant prior or base model)"
    typer.echo(
        f"rolled back {tenant_id}/{user_id}: {result.from_revision_id} -> {target}\n"
        f"  event {result.event_id} at position {result.position}; "
        f"{_announced(result.published, result.publish_error)}"
    )


@app.command("forget")
def forget(
    user_id: str = typer.Argument(..., help="The user to forget."),
    reason: str = typer.Option(..., "--reason", help="Why; kept in the tombstone."),
    tenant: str | None = typer.Option(None, "--tenant", "-t", help=TENANT_HELP),
    actor: str | None = typer.Option(None, "--actor", help=ACTOR_HELP),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Erase a user's content and adapters everywhere; the log keeps a tombstone.

    Removes the user's interaction content and adapters from PostgreSQL, the adapter store
    and the caches of running servers. The log keeps a tombstone (who, when, by whom, no
    content); later events for the user start a fresh history. Cannot be undone."""
    from tessera.events.store import EventStoreError
    from tessera.services.corrective import CorrectiveError

    tenant_id = tenant or get_settings().default_tenant
    if not yes:
        typer.confirm(
            f"Erase everything {tenant_id}/{user_id} wrote and every adapter trained on it?",
            abort=True,
        )
    with _backend() as backend:
        try:
            result = backend.actions.forget(
                tenant_id, user_id, actor=_actor(actor), reason=reason
            )
        except CorrectiveError as exc:
            raise _fail(str(exc)) from exc
        except EventStoreError as exc:
            raise _fail(f"the event store failed: {exc}", 2) from exc
    typer.echo(
        f"forgot {tenant_id}/{user_id}: tombstone {result.tombstone_event_id} at position "
        f"{result.position}\n"
        f"  revisions forgotten: {', '.join(result.forgotten_revision_ids) or 'none'}\n"
        f"  adapter blobs deleted: {len(result.deleted_digests)}"
        + (f" (kept {len(result.kept_digests)} shared with live revisions)"
           if result.kept_digests else "")
        + f"\n  {_announced(result.published, result.publish_error)}"
    )
