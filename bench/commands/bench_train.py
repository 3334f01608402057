"""`tessera bench train`: revisions per hour and where a revision's time goes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tessera.bench.commands.apps import bench_app

DEFAULT_OUT = Path("bench/results/train.json")


@bench_app.command("train")
def bench_train(
    users: Annotated[int, typer.Option(min=1, help="Users (chitchat speakers) to train.")] = 2,
    events_per_user: Annotated[
        int, typer.Option(min=4, help="Events per user (their first M turns).")
    ] = 32,
    holdout_k: Annotated[
        int | None,
        typer.Option(min=1, help="Most recent examples held out (default: TESSERA_HOLDOUT_K)."),
    ] = None,
    rank: Annotated[
        int | None, typer.Option(min=1, help="LoRA rank (default: the trainer's default).")
    ] = None,
    threads: Annotated[int, typer.Option(min=0, help="torch CPU threads (0: default).")] = 0,
    out: Annotated[Path, typer.Option(help="Where to write the JSON result.")] = DEFAULT_OUT,
) -> None:
    """Train one revision for each of N users with M events on the default base model;
    the last line printed is the JSON result (also written to --out)."""
    import torch

    from tessera.bench.train_bench import BenchConfig, run_train_bench
    from tessera.schemas.settings import get_settings
    from tessera.workers.base_model import BaseModelError
    from tessera.workers.lora_config import LoraTrainConfig

    if threads:
        torch.set_num_threads(threads)
    settings = get_settings()
    lora = LoraTrainConfig(rank=rank) if rank is not None else LoraTrainConfig()
    config = BenchConfig(users=users, events_per_user=events_per_user,
                         holdout_k=holdout_k or settings.holdout_k, lora=lora)
    try:
        report = run_train_bench(config, settings=settings,
                                 progress=lambda line: typer.echo(line, err=True))
    except (BaseModelError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    typer.echo(json.dumps(report))
