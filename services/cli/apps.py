"""The typer root app and its sub-apps; command modules register onto these.

Heavy imports (torch, triton, transformers) stay inside command functions so that
`tessera --help` is instant.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Tessera: persistent personal models over one shared base.", no_args_is_help=True
)
infra_app = typer.Typer(help="The local stack: broker and PostgreSQL.", no_args_is_help=True)
db_app = typer.Typer(help="Event store maintenance.", no_args_is_help=True)
worker_app = typer.Typer(help="Long-running workers.", no_args_is_help=True)
audit_app = typer.Typer(help="Audit trails: lineage, provenance, requests.", no_args_is_help=True)
tenant_app = typer.Typer(help="Tenants and their API keys.", no_args_is_help=True)

app.add_typer(infra_app, name="infra")
app.add_typer(db_app, name="db")
app.add_typer(worker_app, name="worker")
app.add_typer(audit_app, name="audit")
app.add_typer(tenant_app, name="tenant")
