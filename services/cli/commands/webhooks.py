"""`tessera worker webhooks`: deliver tenants' webhooks from the event log.

One dispatcher per deployment is enough (deliveries are sequential; the cursor is
shared by name, so a second one would send events twice). It starts where it stopped;
the very first run starts at the log's end (no replay of history).
"""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from tessera.schemas.settings import get_settings
from tessera.services.cli.apps import worker_app
from tessera.services.cli.commands.infra import stack_info


@worker_app.command("webhooks")
def worker_webhooks(
    json_logs: Annotated[bool, typer.Option(help="One JSON object per log line.")] = True,
) -> None:
    """Post promotions, rejections, rollbacks, supersessions and forgets to each tenant's
    webhook (signed, retried: TESSERA_WEBHOOK_*), logging every try."""
    from tessera.events.postgres_store import PostgresEventStore
    from tessera.events.webhooks import PostgresWebhookStore
    from tessera.services.webhooks.dispatcher import WebhookDispatcher
    from tessera.services.webhooks.sender import RetryPolicy, WebhookSender
    from tessera.workers.metrics import configure_logging

    configure_logging(json_logs=json_logs)
    settings, info = get_settings(), stack_info()
    policy = RetryPolicy(max_attempts=settings.webhook_max_attempts,
                         first_delay_s=settings.webhook_first_delay_s,
                         max_delay_s=settings.webhook_max_delay_s,
                         timeout_s=settings.webhook_timeout_s,
                         allow_private_hosts=settings.webhook_allow_private_hosts)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with PostgresEventStore(info.database_url, pool_size=1) as events:
        hooks = PostgresWebhookStore(info.database_url)
        sender = WebhookSender(hooks, policy)
        try:
            typer.echo("webhook dispatcher ready", err=True)
            WebhookDispatcher(events, hooks, sender).run(stop, poll_s=settings.webhook_poll_s)
        finally:
            sender.close()
            hooks.close()
