"""`tessera study regression-probe`: is the gate's regression rise real, and which personal
recipe avoids it? (bench/study/regression_probe.py, README "Study")."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tessera.bench.commands.apps import study_app

DEFAULT_ARMS = ('{"lr8e-4": {"lr": 8e-4}, "lr8e-4-prox1": {"lr": 8e-4, "prox_weight": 1.0}, '
                '"lr4e-4": {"lr": 4e-4}}')


@study_app.command("regression-probe")
def regression_probe(
    arms: Annotated[str, typer.Option(
        help="JSON map: arm name -> personal overrides on top of the prior's config.")
    ] = DEFAULT_ARMS,
    n_speakers: Annotated[int, typer.Option(min=1, help="Speakers to choose.")] = 3,
    min_messages: Annotated[int, typer.Option(min=2, help="Least messages of a speaker.")] = 400,
    seed: Annotated[int, typer.Option(help="Seed of the speaker choice (0: tuning).")] = 0,
    max_train: Annotated[int, typer.Option(min=1, help="History messages per speaker.")] = 64,
    max_test: Annotated[int, typer.Option(min=1, help="Test messages per speaker.")] = 16,
    max_length: Annotated[int, typer.Option(min=16, help="Token cap per example.")] = 64,
    out: Annotated[Path, typer.Option(help="Where the JSON goes.")
                   ] = Path("bench/results/regression-probe.json"),
) -> None:
    """Train a prior and each recipe arm's personal adapters; compare answers and NLLs."""
    from tessera.bench.study.regression_probe import run_probe
    from tessera.schemas.settings import get_settings
    from tessera.workers.base_model import load_base_model, resolve_base_model
    from tessera.workers.runtime import pipeline_config

    try:
        arm_map: dict[str, dict[str, Any]] = json.loads(arms)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--arms is not JSON: {exc}") from exc
    settings = get_settings()
    prior = pipeline_config(settings).train.with_overrides({"max_length": max_length})
    info = resolve_base_model(settings)
    model, tokenizer = load_base_model(info)
    document = run_probe(model, tokenizer, base_digest=info.digest, arms=arm_map,
                         prior_config=prior, n_speakers=n_speakers, min_messages=min_messages,
                         seed=seed, max_train=max_train, max_test=max_test)
    document["command"] = shlex.join(["tessera", *sys.argv[1:]])
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, sort_keys=True)
    out.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    typer.echo(json.dumps(document["aggregate"], indent=1), err=True)
    typer.echo(text)
