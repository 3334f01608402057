"""`tessera demo`: the main job on the embedded defaults, as a list of steps.

Start the stack, migrate, create this run's demo tenants and keys, start the ingest
worker and the API server, send real conversations (chitchat-dataset, one user per
speaker) through `POST /v1/events`, wait until PostgreSQL has committed them, print what
the log holds, replay a few speakers as nights of training, answer one prompt per user.

Every run gets fresh tenants (`demo-<run>` and `demo-<run>-days`): event ids are derived
from the conversations, so a second run in an old tenant would send only events the log
already holds, and its nights would have nothing new to train on.
"""

from __future__ import annotations

from typing import Final

import typer

from tessera.bench.demo_learning import step_side_by_side, step_train_days
from tessera.bench.demo_run import DemoRun, Step
from tessera.services.cli.apps import app


def step_stack(run: DemoRun) -> None:
    from tessera.services.cli.commands.infra import stack_info

    info = stack_info()
    run.database_url, run.kafka_bootstrap = info.database_url, info.kafka_bootstrap
    typer.echo(f"  postgres {info.database_url}\n  kafka    {info.kafka_bootstrap}")


def step_migrate(run: DemoRun) -> None:
    from tessera.events.migrate import migrate

    migrate(run.database_url)
    typer.echo("  schema up to date")


def step_tenant(run: DemoRun) -> None:
    from tessera.services.tenant_admin import ensure_tenant_with_key

    run.api_key = ensure_tenant_with_key(run.database_url, run.tenant_id)
    typer.echo(f"  tenant {run.tenant_id!r} (this run's) with a fresh API key")


def step_processes(run: DemoRun) -> None:
    from tessera.bench.subprocesses import TesseraProcess
    from tessera.infra.stack import free_port

    env = {"TESSERA_DATABASE_URL": run.database_url, "TESSERA_KAFKA_BOOTSTRAP": run.kafka_bootstrap}
    logs = run.state_dir / "demo-logs"
    worker = TesseraProcess(
        "ingest worker", ["worker", "ingest"], log_path=logs / "worker.log", env=env
    )
    run.processes.append(worker)
    port = free_port()
    server = TesseraProcess(
        "API server",
        # Ingest only for now: the serving steps start inference when they need it.
        ["serve", "--http-port", str(port), "--grpc-port", "0", "--without", "inference"],
        log_path=logs / "serve.log",
        env=env,
    )
    run.processes.append(server)
    run.http_url = f"http://127.0.0.1:{port}"
    server.wait_http(f"{run.http_url}/healthz", timeout_s=90)
    typer.echo(
        f"  worker pid {worker.pid}, server pid {server.pid} at {run.http_url} (logs {logs})"
    )


def step_ingest(run: DemoRun) -> None:
    from tqdm import tqdm

    from tessera.bench.chitchat import load_speakers
    from tessera.bench.ingest_client import BatchResult, IngestClient
    from tessera.schemas.settings import get_settings

    settings = get_settings()
    speakers = load_speakers(
        min_messages=20, limit=run.users, seed=run.seed, max_chars=settings.max_text_chars
    )
    items = [
        m.as_ingest_item(s.speaker_id)
        for s in speakers
        for m in s.messages[: run.messages_per_user]
    ]
    batch = min(250, settings.max_batch_events)
    batches = [items[i : i + batch] for i in range(0, len(items), batch)]
    typer.echo(f"  {len(items)} messages of {len(speakers)} speakers (chitchat-dataset)")
    client = IngestClient(run.http_url, run.api_key, connections=4)
    with tqdm(total=len(items), unit="event", desc="  ingest") as bar:

        def done(result: BatchResult) -> None:
            bar.update(len(result.accepted))

        results = client.post_all(batches, on_batch=done)
    client.close()
    run.accepted = [i for r in results for i in r.accepted]


def step_wait_committed(run: DemoRun, stall_s: float = 120.0) -> None:
    """Wait while the worker makes progress; give up only after `stall_s` without any."""
    from tqdm import tqdm

    from tessera.bench.log_summary import wait_until_committed

    with tqdm(total=len(run.accepted), unit="event", desc="  committed") as bar:
        try:
            wait_until_committed(
                run.database_url,
                run.accepted,
                tenant_id=run.tenant_id,
                stall_s=stall_s,
                on_progress=bar.update,
            )
        except RuntimeError as exc:
            logs = run.state_dir / "demo-logs"
            raise RuntimeError(f"{exc}; see the worker log in {logs}") from exc


def step_summary(run: DemoRun) -> None:
    from tessera.bench.log_summary import summarise

    typer.echo(summarise(run.database_url, tenant_id=run.tenant_id).render(indent="  "))


STEPS: Final[list[tuple[str, Step]]] = [
    ("start the stack", step_stack),
    ("migrate the event store", step_migrate),
    ("create the demo tenant", step_tenant),
    ("start the ingest worker and the API server", step_processes),
    ("ingest real conversations over HTTP", step_ingest),
    ("wait until PostgreSQL has committed them", step_wait_committed),
    ("what the log holds", step_summary),
    ("continual training: speakers' histories replayed as nights", step_train_days),
    ("one batch, many personal models: the same prompt for each user", step_side_by_side),
]


def night_size_problem(*, train_messages: int, days: int, holdout_k: int,
                       min_train_examples: int, min_heldout_examples: int) -> str | None:
    """Why the replayed nights could never yield a decided personal revision, else None
    (checked before the stack starts, rather than after minutes of ingest)."""
    per_night = train_messages // days
    if per_night < holdout_k + min_train_examples:
        return (f"--train-messages {train_messages} over --days {days} gives a user "
                f"{per_night} events a night, but a personal revision needs "
                f"TESSERA_HOLDOUT_K ({holdout_k}) + TESSERA_MIN_TRAIN_EXAMPLES "
                f"({min_train_examples}) = {holdout_k + min_train_examples}: raise "
                f"--train-messages or lower --days")
    if holdout_k < min_heldout_examples:
        return (f"TESSERA_HOLDOUT_K ({holdout_k}) is below the gate's min_heldout_examples "
                f"({min_heldout_examples}): every personal revision would be rejected")
    return None


@app.command("demo")
def demo(
    users: int = typer.Option(40, min=1, help="Speakers of chitchat-dataset to ingest as users."),
    messages: int = typer.Option(150, min=1, help="Most messages sent per user."),
    seed: int = typer.Option(0, help="Seed of the speaker selection."),
    train_users: int = typer.Option(2, min=1, help="Speakers replayed as nights of training."),
    days: int = typer.Option(2, min=1, help="Nights the replayed histories are cut into."),
    train_messages: int = typer.Option(40, min=6, help="Messages per replayed speaker."),
) -> None:
    """Run the main job on the embedded stack (see README)."""
    from tessera.schemas.settings import get_settings
    from tessera.workers.gate import GateConfig

    settings = get_settings()
    try:
        gate = GateConfig.model_validate(settings.gate_overrides)
    except ValueError as exc:  # pydantic's ValidationError says which field is wrong
        typer.secho(f"error: TESSERA_GATE_OVERRIDES: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    problem = night_size_problem(
        train_messages=train_messages, days=days, holdout_k=settings.holdout_k,
        min_train_examples=settings.min_train_examples,
        min_heldout_examples=gate.min_heldout_examples,
    )
    if problem is not None:
        typer.secho(f"error: {problem}", fg="red", err=True)
        raise typer.Exit(2)
    run = DemoRun(
        users=users, messages_per_user=messages, seed=seed, state_dir=settings.state_dir,
        train_users=train_users, days=days, train_messages=train_messages,
    )
    try:
        for i, (title, step) in enumerate(STEPS, 1):
            typer.secho(f"[{i}/{len(STEPS)}] {title}", bold=True)
            step(run)
    except Exception as exc:
        typer.secho(f"demo failed: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    finally:
        for proc in reversed(run.processes):
            proc.stop()
