"""`tessera export REVISION DIR` and `tessera import DIR --tenant T --user U`.

Export writes a revision's adapter as a peft folder (`adapter_config.json` +
`adapter_model.safetensors`, the blob's own bytes) that `PeftModel.from_pretrained(base,
DIR)` loads. Import checks a peft folder against the base model and the tenant's LoRA
shape and makes it a candidate revision of the user: by default the trainer group gates
it (like `tessera train`), with `--local` this process does. Operator tools with direct
database access, like `tessera audit`; key holders use the HTTP routes instead
(services/routes/revisions_api.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tessera.schemas.settings import get_settings
from tessera.services.cli.apps import app
from tessera.services.cli.commands.infra import stack_info


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg="red", err=True)
    return typer.Exit(1)


@app.command("export")
def export(
    revision: Annotated[str, typer.Argument(help="Revision id (see `tessera audit user`).")],
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the peft adapter into.")],
) -> None:
    """Write REVISION's adapter as a peft folder in OUT_DIR."""
    from tessera.events.postgres_store import PostgresEventStore
    from tessera.workers.adapter_store import AdapterStoreError, LocalAdapterStore
    from tessera.workers.peft_format import export_blob

    with PostgresEventStore(stack_info().database_url, pool_size=1) as store:
        row = store.get_revision(revision)
    if row is None:
        raise _fail(f"no revision {revision!r}")
    if row.state == "forgotten":
        raise _fail(f"revision {revision!r} was forgotten: its adapter is erased")
    try:
        blob = LocalAdapterStore(get_settings().adapter_store_dir).path(row.adapter_digest)
    except AdapterStoreError as exc:
        raise _fail(str(exc)) from exc
    export_blob(blob, out_dir, base_model_id=row.base_model_id)
    typer.echo(f"wrote {out_dir} (revision {revision} of {row.tenant_id}/{row.user_id}, "
               f"{row.state}; adapter sha256 {row.adapter_digest})")


@app.command("import")
def import_(
    folder: Annotated[Path, typer.Argument(help="A peft adapter folder.")],
    tenant: Annotated[str, typer.Option(help="Tenant of the user.")],
    user: Annotated[str, typer.Option(help="User the adapter is for.")],
    local: Annotated[
        bool, typer.Option(help="Gate it in this process instead of asking the trainers.")
    ] = False,
) -> None:
    """Bring a peft adapter in as a candidate revision of USER, gated like any other."""
    from tessera.events.postgres_store import PostgresEventStore
    from tessera.workers.adapter_import import import_target, stage_import
    from tessera.workers.adapter_store import LocalAdapterStore
    from tessera.workers.base_model import resolve_base_model
    from tessera.workers.metrics import configure_logging
    from tessera.workers.peft_format import PeftFormatError, read_peft_dir
    from tessera.workers.runtime import pipeline_config

    configure_logging(json_logs=False)
    settings, info = get_settings(), stack_info()
    with PostgresEventStore(info.database_url, pool_size=1) as store:
        row = store.get_user(tenant, user)
    if row is None or row.last_position is None:
        raise _fail(f"no interaction events for {tenant}/{user}: nothing to judge it on")
    target = import_target(resolve_base_model(settings),
                           pipeline_config(settings).personal_train)
    try:
        request = stage_import(read_peft_dir(folder), target,
                               LocalAdapterStore(settings.adapter_store_dir), tenant_id=tenant,
                               user_id=user, up_to_position=row.last_position, source="cli",
                               actor="cli")
    except PeftFormatError as exc:
        raise _fail(str(exc)) from exc
    if local:
        from tessera.workers.adapter_import import handle_request
        from tessera.workers.runtime import open_pipeline

        with open_pipeline(settings, database_url=info.database_url,
                           bootstrap=info.kafka_bootstrap) as pipeline:
            outcome = handle_request(pipeline, request)
        typer.echo(f"{outcome.outcome}: {outcome.revision_id or '-'}")
        for reason in outcome.reasons:
            typer.echo(f"  {reason}")
        return
    from tessera.events.kafka import ensure_topics
    from tessera.workers.train_worker import send_requests

    ensure_topics(info.kafka_bootstrap, settings)
    send_requests(info.kafka_bootstrap, settings.topic_training_requests, [request])
    typer.echo(f"queued the import of {folder} for {tenant}/{user}; follow it with "
               f"`tessera audit user {user} --tenant {tenant}`")
