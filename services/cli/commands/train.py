"""`tessera train USER`, `tessera worker train`, `tessera worker schedule`.

`tessera train USER` asks the trainer group for a revision of USER on their events so
far (`--wait` follows it to its decision); `--local` trains it in this process instead,
with a progress bar, without any worker running.
"""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from tessera.workers.training_request import TrainingRequest

from tessera.schemas.settings import get_settings
from tessera.services.cli.apps import app, worker_app
from tessera.services.cli.commands.infra import stack_info


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg="red", err=True)
    return typer.Exit(1)


@app.command("train")
def train(
    user: Annotated[str, typer.Argument(help="User id, or ~prior for the tenant prior.")],
    tenant: Annotated[str, typer.Option(help="Tenant of the user.")] = "demo",
    wait: Annotated[bool, typer.Option(help="Wait for the gate's decision.")] = False,
    local: Annotated[
        bool, typer.Option(help="Train here (progress bar) instead of asking the workers.")
    ] = False,
    timeout_s: Annotated[float, typer.Option(help="Longest --wait, in seconds.")] = 3600.0,
) -> None:
    """Request (or, with --local, run) a new revision for USER on all their events."""
    from tessera.workers.metrics import configure_logging
    from tessera.workers.scheduler_state import SchedulerState
    from tessera.workers.training_request import TrainingRequest

    configure_logging(json_logs=False)
    settings = get_settings()
    info = stack_info()
    state = SchedulerState(info.database_url)
    position = (state.tenant_head_position(tenant) if user == "~prior"
                else state.user_head_position(tenant, user))
    if position is None:
        raise _fail(f"no interaction events for {tenant}/{user}: nothing to train on")
    request = TrainingRequest(tenant_id=tenant, user_id=user, up_to_position=position,
                              trigger="manual")
    if local:
        from tessera.workers.runtime import open_pipeline

        with open_pipeline(settings, database_url=info.database_url,
                           bootstrap=info.kafka_bootstrap, progress=True) as pipeline:
            outcome = pipeline.run(request)
        state.record_requests([request])
        typer.echo(f"{outcome.outcome}: {outcome.revision_id or '-'}")
        for reason in outcome.reasons:
            typer.echo(f"  {reason}")
        return

    from tessera.events.kafka import ensure_topics
    from tessera.workers.train_worker import send_requests

    ensure_topics(info.kafka_bootstrap, settings)
    send_requests(info.kafka_bootstrap, settings.topic_training_requests, [request])
    state.record_requests([request])
    typer.echo(f"requested a revision of {tenant}/{user} up to position {position}")
    if wait:
        _wait_for_decision(info.database_url, request, timeout_s)


def _wait_for_decision(database_url: str, request: TrainingRequest, timeout_s: float) -> None:
    from tessera.events.postgres_store import PostgresEventStore

    deadline = time.monotonic() + timeout_s
    with PostgresEventStore(database_url) as store:
        while time.monotonic() < deadline:
            for row in store.list_revisions(request.tenant_id, request.user_id):
                if row.dataset_to >= request.up_to_position and row.state not in (
                    "trained", "evaluated"
                ):
                    typer.echo(f"{row.state}: {row.revision_id}")
                    for reason in row.reasons:
                        typer.echo(f"  {reason}")
                    return
            time.sleep(1.0)
    raise _fail(f"no decision within {timeout_s:.0f}s (is `tessera worker train` running?)")


@worker_app.command("train")
def worker_train(
    group: Annotated[str | None, typer.Option(help="Consumer group (default: settings).")] = None,
    max_requests: Annotated[
        int | None, typer.Option(help="Exit after this many requests (tests, batch jobs).")
    ] = None,
    json_logs: Annotated[bool, typer.Option(help="One JSON object per log line.")] = True,
) -> None:
    """Join the trainer group on `tessera.training-requests` and train revisions.

    A request's Kafka offset is committed only after its outcome is in PostgreSQL, so a
    killed worker's request is taken over by another member. SIGINT/SIGTERM stop cleanly
    after the request in hand."""
    from tessera.events.kafka import ensure_topics
    from tessera.workers.group_night import handle_message
    from tessera.workers.metrics import configure_logging, start_metrics_server
    from tessera.workers.runtime import open_pipeline
    from tessera.workers.train_worker import TrainWorker, WorkerConfig

    configure_logging(json_logs=json_logs)
    settings = get_settings()
    info = stack_info()
    ensure_topics(info.kafka_bootstrap, settings)
    if settings.worker_metrics_port is not None:
        start_metrics_server(settings.worker_metrics_port)
    with open_pipeline(settings, database_url=info.database_url,
                       bootstrap=info.kafka_bootstrap) as pipeline:
        config = WorkerConfig(bootstrap=info.kafka_bootstrap,
                              topic=settings.topic_training_requests,
                              group_id=group or settings.train_group)
        # Imported adapters and the night's groups arrive on the same topic and meet the
        # same gate.
        worker = TrainWorker(config, lambda message: handle_message(pipeline, message))
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: worker.stop())
        typer.echo(f"trainer ready: {config.topic} @ {config.bootstrap} (group {config.group_id})",
                   err=True)
        worker.run(max_requests=max_requests)


@worker_app.command("schedule")
def worker_schedule(
    json_logs: Annotated[bool, typer.Option(help="One JSON object per log line.")] = True,
) -> None:
    """Run the nightly cron and the threshold trigger (see `TESSERA_NIGHTLY_CRON`,
    `TESSERA_SCHEDULER_TIMEZONE`, `TESSERA_NIGHTLY_MIN_NEW_EVENTS`,
    `TESSERA_THRESHOLD_NEW_EVENTS`; the night's budget and groups: `TESSERA_NIGHT_*`). A
    night missed while down runs once at start."""
    from apscheduler.schedulers.blocking import BlockingScheduler

    from tessera.events.kafka import ensure_topics
    from tessera.workers.metrics import configure_logging
    from tessera.workers.scheduler import ScheduleConfig, TrainingScheduler
    from tessera.workers.scheduler_state import SchedulerState
    from tessera.workers.train_worker import send_requests

    configure_logging(json_logs=json_logs)
    settings = get_settings()
    info = stack_info()
    ensure_topics(info.kafka_bootstrap, settings)
    try:
        config = ScheduleConfig.from_settings(settings)
        config.trigger()
    except (ValueError, KeyError) as exc:
        raise _fail(f"bad schedule ({settings.nightly_cron!r} in "
                    f"{settings.scheduler_timezone!r}): {exc}") from exc
    topic = settings.topic_training_requests
    scheduler = TrainingScheduler(
        SchedulerState(info.database_url),
        lambda requests: send_requests(info.kafka_bootstrap, topic, requests),
        config,
        send_groups=lambda groups: send_requests(info.kafka_bootstrap, topic, groups),
    )
    blocking = BlockingScheduler(timezone=config.timezone)
    scheduler.install(blocking)

    def stop(*_: object) -> None:
        scheduler.stop()
        blocking.shutdown(wait=False)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    typer.echo(f"scheduler: nightly {config.cron!r} ({config.timezone}), threshold "
               f"{config.threshold_new_events} events", err=True)
    blocking.start()
