"""`tessera bench residency`: many adapters, Zipf users, cold loads and prefetch."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from tessera.bench.commands.apps import bench_app
from tessera.bench.commands.bench_device import describe_device

DEFAULT_OUT = Path("bench/results/residency.json")


@bench_app.command("residency")
def bench_residency(
    adapters: Annotated[int, typer.Option(min=1, help="Distinct adapters (= users).")] = 1000,
    device_slots: Annotated[int, typer.Option(min=1, help="LoRA slots in the model.")] = 32,
    cpu_cache: Annotated[int, typer.Option(min=1, help="Adapters kept in the CPU LRU.")] = 128,
    requests: Annotated[int, typer.Option(min=1, help="Requests per arm.")] = 120,
    rate: Annotated[
        float, typer.Option(min=0, help="Requests/s; 0: --load x the all-resident capacity.")
    ] = 0.0,
    load: Annotated[float, typer.Option(min=0.01, help="Share of capacity (rate 0).")] = 0.8,
    zipf_s: Annotated[float, typer.Option(min=0, help="Zipf exponent of user popularity.")] = 1.1,
    prompt_tokens: Annotated[int, typer.Option(min=1)] = 16,
    max_tokens: Annotated[int, typer.Option(min=1, help="Tokens generated per request.")] = 8,
    max_batch: Annotated[int, typer.Option(min=1)] = 32,
    loader_threads: Annotated[int, typer.Option(min=1)] = 1,
    cold_load_grace_ms: Annotated[
        float,
        typer.Option(
            min=0,
            max=1000,
            help="The engine's wait at a step boundary for the reads it started; above 0, "
            "the Zipf load also runs with 0 (reported as no_grace).",
        ),
    ] = 10.0,
    prefetch: Annotated[
        bool, typer.Option(help="Also run the Zipf load with prefetch from the event stream.")
    ] = False,
    prefetch_lead_s: Annotated[
        float, typer.Option(min=0, help="An event of the user arrives this long before.")
    ] = 0.5,
    rank: Annotated[int, typer.Option(min=1)] = 8,
    targets: Annotated[str, typer.Option(help="Comma-separated target linears.")] = (
        "q_proj,v_proj"
    ),
    store_dir: Annotated[
        Path | None,
        typer.Option(help="Keep the adapter store here and reuse it (default: a temp dir)."),
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="A local HF model folder (default: the base model).")
    ] = None,
    threads: Annotated[int, typer.Option(min=0, help="torch threads (0: torch's).")] = 1,
    seed: Annotated[int, typer.Option()] = 0,
    out: Annotated[Path, typer.Option(help="Where to write the JSON result.")] = DEFAULT_OUT,
) -> None:
    """Serve a Zipf load over many adapter files (CPU path); the last line printed is the
    JSON result (see bench/README.md)."""
    import torch

    from tessera.bench import residency_bench as rb
    from tessera.schemas.settings import Settings
    from tessera.services.inference.lora_layers import wrap_model
    from tessera.workers.adapter_store import LocalAdapterStore
    from tessera.workers.base_model import load_base_model, resolve_base_model

    if threads:
        torch.set_num_threads(threads)
    cfg = rb.ResidencyConfig(
        adapters,
        device_slots,
        cpu_cache,
        requests,
        rate,
        load,
        zipf_s,
        prompt_tokens,
        max_tokens,
        max_batch,
        loader_threads,
        prefetch,
        prefetch_lead_s,
        rank,
        tuple(t.strip() for t in targets.split(",") if t.strip()),
        seed,
        cold_load_grace_ms,
    )
    load_before = os.getloadavg()
    info = resolve_base_model(Settings(base_model=model) if model else None)
    base, tokenizer = load_base_model(info, dtype=torch.float32)
    with tempfile.TemporaryDirectory(prefix="tessera-residency-") as tmp:
        store = LocalAdapterStore(store_dir or Path(tmp) / "store")
        t0 = time.monotonic()
        digests = rb.write_adapters(base, store, cfg, Path(tmp))
        write_s = time.monotonic() - t0
        table = wrap_model(
            base, target_modules=list(cfg.targets), n_slots=device_slots, max_rank=rank
        )
        bench = rb.Bench(base, table, tokenizer, store, digests, cfg)
        users = rb.zipf_users(adapters, requests, zipf_s, seed)
        req_rate = rate or load * rb.capacity_rps(bench, users)
        resident_map = {u: u % device_slots for u in set(users)}
        resident = bench.run(users, resident_map, req_rate, warm=sorted(set(resident_map.values())))
        own = {u: u for u in set(users)}
        zipf = bench.run(users, own, req_rate)
        warmed = (
            bench.run(users, own, req_rate, prefetch_lead_s=prefetch_lead_s) if prefetch else None
        )
        no_grace = bench.run(users, own, req_rate, grace_ms=0.0) if cold_load_grace_ms else None
        result = {
            **rb.summarize(resident, zipf, warmed, cfg, no_grace),
            "benchmark": "residency",
            "model": info.model_id,
            "device": describe_device(torch.device("cpu")),
            "requests": requests,
            "rate_rps": round(req_rate, 3),
            "zipf_s": zipf_s,
            "distinct_users": len(set(users)),
            "prompt_tokens": prompt_tokens,
            "max_tokens": max_tokens,
            "max_batch": max_batch,
            "loader_threads": loader_threads,
            "prefetch_lead_s": prefetch_lead_s if prefetch else None,
            "adapter_bytes": store.path(digests[0]).stat().st_size,
            "write_adapters_s": round(write_s, 1),
            "machine_load": {
                "before": [round(x, 2) for x in load_before],
                "after": [round(x, 2) for x in os.getloadavg()],
            },
        }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
