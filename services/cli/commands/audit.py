"""`tessera audit user | revision | request`: the audit trail, read from PostgreSQL.

The CLI runs with direct database access (an operator's tool), so it needs no key; the
same answers are served to key holders by the admin API (services/routes/admin.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

import typer

from tessera.schemas.settings import get_settings
from tessera.services.cli.apps import audit_app
from tessera.services.cli.commands.infra import stack_info

if TYPE_CHECKING:
    from tessera.events.postgres_store import PostgresEventStore

T = TypeVar("T")

TENANT_HELP = "Tenant of the user (default: settings.default_tenant, TESSERA_DEFAULT_TENANT)."
JSON_HELP = "Print the answer as JSON (the admin API's shape) instead of text."


@contextmanager
def _store() -> Iterator[PostgresEventStore]:
    from tessera.events.postgres_store import PostgresEventStore

    store = PostgresEventStore(stack_info().database_url, pool_size=1)
    try:
        yield store
    finally:
        store.close()


def _answer(
    query: Callable[[PostgresEventStore], T], render: Callable[[T], str], as_json: bool
) -> None:
    from pydantic import BaseModel

    from tessera.events.store import EventStoreError
    from tessera.services.audit.queries import AuditNotFound

    try:
        with _store() as store:
            result = query(store)
    except AuditNotFound as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    except EventStoreError as exc:
        typer.secho(f"error: the event store failed: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    if as_json and isinstance(result, BaseModel):
        typer.echo(result.model_dump_json(indent=2))
    else:
        typer.echo(render(result))


@audit_app.command("user")
def audit_user(
    user_id: str = typer.Argument(..., help="The user whose lineage to show."),
    tenant: str | None = typer.Option(None, "--tenant", "-t", help=TENANT_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """The user's revision lineage as a tree: state, dataset positions, metrics, gate
    reasons, trigger and time of each revision; then the stream's history."""
    from tessera.services.audit.queries import user_lineage
    from tessera.services.audit.render import lineage_text

    tenant_id = tenant or get_settings().default_tenant
    _answer(lambda s: user_lineage(s, tenant_id, user_id), lineage_text, as_json)


@audit_app.command("revision")
def audit_revision(
    revision_id: str = typer.Argument(..., help="The revision id."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """A revision's full provenance: base digest, parent, dataset events, hyperparameters,
    code version, adapter digest, metrics, gate decision and every event naming it."""
    from tessera.services.audit.queries import revision_provenance
    from tessera.services.audit.render import provenance_text

    _answer(lambda s: revision_provenance(s, revision_id), provenance_text, as_json)


@audit_app.command("request")
def audit_request(
    request_id: str = typer.Argument(..., help="The inference request id."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Which revision answered an inference request (when the server logged it)."""
    from tessera.services.audit.queries import request_audit
    from tessera.services.audit.render import request_text

    _answer(lambda s: request_audit(s, request_id), request_text, as_json)
