"""`tessera bench night`: users per hour of a night's revisions, one by one vs in groups."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tessera.bench.commands.apps import bench_app

DEFAULT_OUT = Path("bench/results/night.json")


def _ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"--k takes comma-separated integers, got {text!r}") from exc
    if not ks or min(ks) < 1:
        raise typer.BadParameter(f"--k needs group sizes >= 1, got {text!r}")
    return ks


@bench_app.command("night")
def bench_night(
    users: Annotated[int, typer.Option(min=1, help="Users (chitchat speakers, one tenant).")]
    = 16,
    k: Annotated[str, typer.Option(help="Group sizes, comma-separated; 1 always runs.")]
    = "1,8,16",
    events_per_user: Annotated[
        int, typer.Option(min=4, help="Events per user (their first M turns).")] = 12,
    holdout_k: Annotated[int, typer.Option(min=1, help="Most recent examples held out.")] = 4,
    max_length: Annotated[int, typer.Option(min=8, help="Token cap per example.")] = 64,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs of each personal revision.")] = 2,
    chunk_tokens: Annotated[
        int, typer.Option(min=64, help="Padded tokens per chunk of a group step.")] = 1024,
    canaries: Annotated[bool, typer.Option(help="Generate the canaries at the gate.")] = True,
    threads: Annotated[int, typer.Option(min=0, help="torch CPU threads (0: default).")] = 0,
    out: Annotated[Path, typer.Option(help="Where to write the JSON result.")] = DEFAULT_OUT,
) -> None:
    """Train and gate one revision per user warm-started from a shared adapter, first one
    user at a time (K = 1), then K at a time; the last line printed is the JSON result
    (also written to --out, and after each K with "partial": true)."""
    import torch

    from tessera.bench.night import NightBenchConfig, run_night_bench
    from tessera.bench.train_bench import speaker_events
    from tessera.schemas.settings import get_settings
    from tessera.workers.base_model import BaseModelError, load_base_model, resolve_base_model
    from tessera.workers.dataset import build_dataset
    from tessera.workers.gate import GateConfig
    from tessera.workers.lora_config import PERSONAL_DEFAULTS, LoraTrainConfig
    from tessera.workers.regression_set import load_regression_set

    if threads:
        torch.set_num_threads(threads)
    settings = get_settings()
    lora = LoraTrainConfig().with_overrides(
        {**PERSONAL_DEFAULTS, **settings.personal_train_overrides,
         "max_length": max_length, "epochs": epochs})
    # The bench holds out fewer examples than the service's gate asks for by default.
    gate = GateConfig.model_validate({**settings.gate_overrides,
                                      "min_heldout_examples": holdout_k})
    config = NightBenchConfig(ks=_ks(k), lora=lora, gate=gate, chunk_tokens=chunk_tokens,
                              canaries=canaries)
    def save(report: dict[str, object]) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")

    try:
        info = resolve_base_model(settings)
        model, tokenizer = load_base_model(info)
        streams = speaker_events(users, events_per_user)
        splits = [build_dataset(s, holdout_k=holdout_k) for s in streams]
        report = run_night_bench(
            model, tokenizer, splits, users=[s[0].envelope.user_id for s in streams],
            config=config, regression=load_regression_set(), base_digest=info.digest,
            device=f"cpu ({torch.get_num_threads()} torch threads)",
            progress=lambda line: typer.echo(line, err=True),
            checkpoint=lambda partial: save({**partial, "model_id": info.model_id}))
    except (BaseModelError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    report["model_id"] = info.model_id
    save(report)
    typer.echo(json.dumps(report))
