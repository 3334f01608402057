"""`tessera study personalization`: does it personalize? (bench/study, README "Study").

Replays chitchat-dataset speakers through the running system: `tessera worker ingest` and
the ingest API (`tessera serve --without inference`) as child processes, the event log in
PostgreSQL, the nightly job in this process (one pipeline, one loaded base model), the
gate, the served model. Prints a table, writes a PNG plot and `bench/results/study.json`,
and prints that JSON as the last line.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from tessera.bench.commands.apps import study_app

DEFAULT_OUT = Path("bench/results/study.json")


class HttpIngest:
    """`Ingest` over the real API: one tenant API key per tenant, created on first use."""

    def __init__(self, database_url: str, http_url: str) -> None:
        self._database_url = database_url
        self._http_url = http_url
        self._keys: dict[str, str] = {}

    def send(self, tenant_id: str, items: list[dict[str, Any]]) -> int:
        from tessera.bench.ingest_client import IngestClient
        from tessera.services.tenant_admin import ensure_tenant_with_key

        if tenant_id not in self._keys:
            self._keys[tenant_id] = ensure_tenant_with_key(self._database_url, tenant_id)
        client = IngestClient(self._http_url, self._keys[tenant_id], connections=2)
        try:
            return sum(len(r.accepted) for r in client.post_all([items]))
        finally:
            client.close()


@contextmanager
def running_ingest(
    database_url: str, kafka_bootstrap: str, log_dir: Path, *,
    env: Mapping[str, str] | None = None,
) -> Iterator[HttpIngest]:
    """The ingest worker and the API server as child processes (stopped on exit).
    `env` adds `TESSERA_*` settings for both (tests: their own topics and group)."""
    from tessera.bench.subprocesses import TesseraProcess
    from tessera.infra.stack import free_port

    child_env = {
        "TESSERA_DATABASE_URL": database_url,
        "TESSERA_KAFKA_BOOTSTRAP": kafka_bootstrap,
        # The corpus is years old: historical replay must pass the age check.
        "TESSERA_MAX_PAST_AGE_DAYS": "36500",
        **(env or {}),
    }
    port = free_port()
    processes: list[TesseraProcess] = []
    try:
        processes.append(TesseraProcess("ingest worker", ["worker", "ingest"],
                                        log_path=log_dir / "worker.log", env=child_env))
        server = TesseraProcess(
            "API server",
            ["serve", "--http-port", str(port), "--grpc-port", "0", "--without", "inference"],
            log_path=log_dir / "serve.log", env=child_env,
        )
        processes.append(server)
        url = f"http://127.0.0.1:{port}"
        server.wait_http(f"{url}/healthz", timeout_s=120)
        yield HttpIngest(database_url, url)
    finally:
        for proc in reversed(processes):
            proc.stop()


def _ints(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise typer.BadParameter(f"{option} takes comma-separated integers, got {text!r}") from exc
    if not values or any(v < 1 for v in values):
        raise typer.BadParameter(f"{option} needs positive integers, got {text!r}")
    return values


def _floats(text: str | None, option: str) -> tuple[float, ...]:
    """`--penalty-sweep`, `--extrapolation-sweep`: comma-separated numbers within (0, 10)
    (none: no sweep)."""
    if not text:
        return ()
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"{option} takes comma-separated numbers, got {text!r}"
                                 ) from exc
    if any(not 0 < v < 10 for v in values):
        raise typer.BadParameter(f"{option} values must be within (0, 10), got {text!r}")
    return values


def _seed_choices(text: str | None) -> tuple[tuple[int, int], ...]:
    """`--exclude-chosen` "0:4,1:8" as ((0, 4), (1, 8))."""
    if not text:
        return ()
    pairs = []
    for item in (i.strip() for i in text.split(",") if i.strip()):
        seed, _, n = item.partition(":")
        try:
            pairs.append((int(seed), int(n)))
        except ValueError as exc:
            raise typer.BadParameter(
                f"--exclude-chosen takes SEED:N pairs like 0:4,1:8, got {item!r}") from exc
    if any(n < 1 for _, n in pairs):
        raise typer.BadParameter(f"--exclude-chosen counts must be at least 1, got {text!r}")
    return tuple(pairs)


@study_app.command("personalization")
def personalization(
    speakers: Annotated[str | None, typer.Option(
        help="Comma-separated chitchat speaker ids (else --n-speakers chosen by --seed).")] = None,
    n_speakers: Annotated[int, typer.Option(min=1, help="Speakers to choose.")] = 6,
    min_messages: Annotated[int, typer.Option(min=2, help="Least messages of a chosen speaker.")
                            ] = 400,
    seed: Annotated[int, typer.Option(help="Seed of the speaker choice.")] = 0,
    exclude_chosen: Annotated[str | None, typer.Option(
        help="Comma-separated SEED:N pairs: skip the speakers earlier runs chose (the first "
        "N of seed SEED's order), e.g. 0:4,1:8 for speakers disjoint from both.")] = None,
    days: Annotated[int, typer.Option(min=1, help="Nights the history is cut into.")] = 3,
    ranks: Annotated[str | None, typer.Option(
        help="Comma-separated LoRA ranks, one arm each (alpha/rank kept); default: settings.")
    ] = None,
    max_train: Annotated[int, typer.Option(min=1, help="Most history messages per speaker.")
                         ] = 300,
    max_test: Annotated[int, typer.Option(min=1, help="Most test messages per speaker.")] = 60,
    test_fraction: Annotated[float, typer.Option(
        min=0.01, max=0.9, help="Share of each speaker's messages (most recent) held as test.")
    ] = 0.2,
    general_speakers: Annotated[int, typer.Option(
        min=1, help="Other speakers in the general (drift) set.")] = 8,
    general_per_speaker: Annotated[int, typer.Option(
        min=1, help="Messages of each general-set speaker.")] = 8,
    max_length: Annotated[int | None, typer.Option(
        min=16, help="Token cap of training and evaluation examples (default: settings).")
    ] = None,
    base_model: Annotated[Path | None, typer.Option(
        help="A local HF model folder instead of the default base (tests: a tiny model).")
    ] = None,
    gen_tokens: Annotated[int, typer.Option(
        min=1, help="Most new tokens of each generated reply (attribution, repetition).")
    ] = 32,
    repetition_penalty: Annotated[float, typer.Option(
        min=0.01, help="Generation: HF repetition_penalty (1 = off).")] = 1.0,
    penalty_sweep: Annotated[str | None, typer.Option(
        help="Comma-separated other repetition penalties whose attribution/repetition "
        "figures are also reported (generation_sweep), e.g. 1.1,1.3.")] = None,
    extrapolation_sweep: Annotated[str | None, typer.Option(
        help="Comma-separated strengths s at which each personal adapter is also served as "
        "delta_personal + s (delta_personal - delta_prior); its attribution, repetition "
        "and test-NLL figures go in generation_sweep, e.g. 0.5,1,2.")] = None,
    no_repeat_ngram: Annotated[int, typer.Option(
        min=0, help="Generation: forbid repeating token n-grams of this size (0 = off).")
    ] = 0,
    tag: Annotated[str, typer.Option(help="Names this run's tenants and plot (a-z0-9-).")
                   ] = "study",
    out: Annotated[Path, typer.Option(help="The JSON document; the PNG goes beside it.")
                   ] = DEFAULT_OUT,
) -> None:
    """Replay speakers' histories through the real system and measure personalization."""
    from tessera.bench.study import design as design_mod
    from tessera.bench.study.experiment import StudyConfig, run_study
    from tessera.bench.study.generate import GenerationConfig
    from tessera.bench.study.report import plot, table, write_json
    from tessera.events.migrate import migrate
    from tessera.events.store import EventStoreError
    from tessera.schemas.settings import get_settings
    from tessera.services.cli.commands.infra import stack_info
    from tessera.workers.adapter_store import LocalAdapterStore
    from tessera.workers.metrics import configure_logging
    from tessera.workers.runtime import load_engine, pipeline_config

    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,40}", tag):
        raise typer.BadParameter(f"--tag must be lowercase letters, digits and '-', got {tag!r}")
    configure_logging(json_logs=False)
    settings = get_settings()
    if base_model is not None:
        settings = settings.model_copy(update={"base_model": base_model})
    base_config = pipeline_config(settings)
    if max_length is not None:
        # Shorter examples are the cheapest way to fit a real-model study on a small CPU.
        base_config = dataclasses.replace(
            base_config, eval_max_length=max_length,
            train=base_config.train.model_validate(
                {**base_config.train.model_dump(), "max_length": max_length}))
    rank_list = _ints(ranks, "--ranks") if ranks else [base_config.train.rank]
    try:
        chosen = design_mod.choose_speakers(
            speaker_ids=[s.strip() for s in speakers.split(",") if s.strip()] if speakers
            else None,
            n_speakers=n_speakers, min_messages=min_messages, seed=seed,
            max_chars=settings.max_text_chars, exclude_choices=_seed_choices(exclude_chosen))
        general = design_mod.general_messages(
            [s.speaker_id for s in chosen], n_speakers=general_speakers,
            per_speaker=general_per_speaker, max_chars=settings.max_text_chars)
        design = design_mod.build_design(chosen, general, days=days, max_train=max_train,
                                         max_test=max_test, test_fraction=test_fraction)
    except design_mod.StudyDesignError as exc:
        raise typer.BadParameter(str(exc)) from exc

    arms = []
    for rank in rank_list:
        scale = base_config.train.alpha / base_config.train.rank
        train = base_config.train.model_validate(
            {**base_config.train.model_dump(), "rank": rank, "alpha": scale * rank})
        arms.append(StudyConfig(f"r{rank}", dataclasses.replace(base_config, train=train)))
    typer.echo(f"{len(design.speakers)} speakers, {days} nights, ranks {rank_list}, "
               f"{len(design.general)} general-set messages", err=True)
    run_id = time.strftime("%m%d%H%M%S")
    try:
        info = stack_info()
        migrate(info.database_url)
        engine = load_engine(settings)
        with running_ingest(info.database_url, info.kafka_bootstrap,
                            settings.state_dir / "study-logs" / run_id) as ingest:
            runs, document = run_study(
                design, arms, engine=engine,
                adapters=LocalAdapterStore(settings.adapter_store_dir),
                database_url=info.database_url, ingest=ingest, tenant_prefix=f"{tag}-{run_id}",
                generation=GenerationConfig(
                    max_new_tokens=gen_tokens, repetition_penalty=repetition_penalty,
                    no_repeat_ngram_size=no_repeat_ngram,
                    sweep_penalties=_floats(penalty_sweep, "--penalty-sweep"),
                    extrapolations=_floats(extrapolation_sweep, "--extrapolation-sweep")),
                progress=True)
    except (RuntimeError, EventStoreError) as exc:
        # The stack, a child process, the base model or the log failed: say which, no trace.
        typer.secho(f"study failed: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    document["command"] = shlex.join(["tessera", *sys.argv[1:]])
    for run in runs:
        typer.echo(table(f"{tag} {run.label}", run.speakers, run.aggregates))
        png = plot(out.with_name(f"{out.stem}-{run.label}.png"),
                   f"{tag} {run.label}: test NLL over nights", run.speakers)
        typer.echo(f"plot: {png}")
    typer.echo(write_json(out, document))
