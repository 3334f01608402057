"""`tessera bench serve`: decode tokens/s with B distinct adapters vs base vs peft, and TTFT."""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tessera.bench.commands.apps import bench_app
from tessera.bench.commands.bench_device import (
    DeviceOption,
    DtypeOption,
    describe_device,
    resolve_device,
)

if TYPE_CHECKING:
    from torch import nn

    from tessera.bench.serve_bench import ServeBenchConfig
    from tessera.services.inference.engine import InferenceEngine
    from tessera.services.inference.lora_layers import LoadedAdapter, LoraSlotTable
    from tessera.services.inference.revisions import Served

DEFAULT_OUT = Path("bench/results/serve.json")


@bench_app.command("serve")
def bench_serve(
    batches: Annotated[str, typer.Option(help="Comma-separated batch sizes B.")] = "1,8,32,64",
    prompt_tokens: Annotated[int, typer.Option(min=1, help="Prompt length.")] = 16,
    new_tokens: Annotated[int, typer.Option(min=2, help="Decode steps timed (ours, base).")] = 16,
    peft_new_tokens: Annotated[int, typer.Option(min=2, help="Decode steps timed (peft).")] = 8,
    rank: Annotated[int, typer.Option(min=1, help="LoRA rank of every adapter.")] = 8,
    targets: Annotated[
        str, typer.Option(help="Comma-separated target linears (default: the trainer's).")
    ] = "q_proj,v_proj",
    rounds: Annotated[
        int, typer.Option(min=1, help="Interleaved timing rounds (best of) per variant.")
    ] = 2,
    ttft_seconds: Annotated[float, typer.Option(help="Length of each steady-rate run.")] = 6.0,
    ttft_load: Annotated[
        float, typer.Option(help="Request rate as a share of the measured capacity at B.")
    ] = 0.5,
    ttft_max_tokens: Annotated[int, typer.Option(min=1, help="Tokens per TTFT request.")] = 16,
    threads: Annotated[
        int,
        typer.Option(
            min=0,
            help="torch threads (0: torch's default). 1 by default: on shared cores, "
            "OpenMP's per-op barriers stall for whole time slices (measured 20x slower "
            "single-sequence steps with 2 threads on a loaded 2-core machine).",
        ),
    ] = 1,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    out: Annotated[Path, typer.Option(help="Where to write the JSON result.")] = DEFAULT_OUT,
) -> None:
    """Time decoding on the real base model (fp32 torch path on CPU, bf16 Triton path on a
    GPU); the last line printed is the JSON result."""
    import torch
    from tqdm import tqdm

    from tessera.bench import serve_bench as bm
    from tessera.workers.base_model import load_base_model, resolve_base_model

    if threads:
        torch.set_num_threads(threads)
    dev, dtype_name = resolve_device(device, dtype)
    sizes = tuple(int(b) for b in batches.split(",") if b.strip())
    if not sizes or min(sizes) < 1:
        raise typer.BadParameter("batches must be positive integers", param_hint="--batches")
    target_names = tuple(t.strip() for t in targets.split(",") if t.strip())
    unknown = set(target_names) - set(bm.ALL_TARGETS)
    if not target_names or unknown:
        raise typer.BadParameter(f"targets must be among {bm.ALL_TARGETS}", param_hint="--targets")
    cfg = bm.ServeBenchConfig(
        sizes,
        prompt_tokens,
        new_tokens,
        peft_new_tokens,
        rank,
        target_names,
        rounds,
        ttft_seconds,
        ttft_load,
        ttft_max_tokens,
    )
    info = resolve_base_model()
    base, tokenizer = load_base_model(info, dtype=getattr(torch, dtype_name))
    torch.nn.Module.to(base, dev)  # in place; transformers' typed wrapper of .to rejects a device
    vocab = int(base.config.vocab_size)
    adapters = bm.random_adapters(base, max(sizes), rank, cfg.seed, target_names)
    served, table = bm.build_tables(base, adapters, rank)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        engine = _engine(served, table, tokenizer, adapters, Path(tmp), max(sizes))
        try:
            for b in tqdm(sizes, desc="bench serve", unit="batch"):
                slots = torch.arange(b, device=dev)
                ours = bm.lora_forward(served, table, slots)
                plain = bm.hf_forward(base)
                distinct, base_rate = bm.best_rates(
                    [ours, plain], b, prompt_tokens, new_tokens, vocab, cfg.seed, rounds, dev
                )
                peft = bm.peft_model_with(base, adapters[:b])
                mixed = bm.hf_forward(peft, adapter_names=[f"a{i}" for i in range(b)])
                (peft_rate,) = bm.best_rates(
                    [mixed], b, prompt_tokens, peft_new_tokens, vocab, cfg.seed, 1, dev
                )
                del peft, mixed
                ttfts = _ttft(engine, b, distinct, cfg)
                p50, p99 = bm.summarize_ttft(ttfts)
                rows.append(bm.Row(b, distinct, base_rate, peft_rate, p50, p99, len(ttfts)))
        finally:
            engine.stop()
    result: dict[str, object] = {
        "benchmark": "serve",
        "device": describe_device(dev),
        "model": info.model_id,
        "dtype": dtype_name,
        "rank": rank,
        "targets": list(target_names),
        "rounds": rounds,
        "prompt_tokens": prompt_tokens,
        "new_tokens": {"distinct": new_tokens, "base": new_tokens, "peft_mixed": peft_new_tokens},
        "ttft": {"seconds": ttft_seconds, "load": ttft_load, "max_tokens": ttft_max_tokens},
        "results": [r.as_dict for r in rows],
    }
    bm.write_result(result, out)
    print(json.dumps(result))


def _engine(
    served: nn.Module,
    table: LoraSlotTable,
    tokenizer: object,
    adapters: list[LoadedAdapter],
    folder: Path,
    max_batch: int,
) -> InferenceEngine:
    """An engine over the already wrapped model, its adapters written as real blobs."""
    from tessera.services.inference.engine import EngineConfig, InferenceEngine
    from tessera.services.inference.model_runner import ModelRunner
    from tessera.services.inference.residency import AdapterResidency
    from tessera.services.inference.revisions import RevisionResolver, Served
    from tessera.services.inference.tokens import TextCodec, as_hf_tokenizer
    from tessera.workers.adapter_store import (
        AdapterBlobConfig,
        LocalAdapterStore,
        save_adapter_blob,
    )

    store = LocalAdapterStore(folder / "store")
    served_by_user: dict[str, Served] = {}
    for i, ad in enumerate(adapters):
        state = {}
        for name, (a, b) in ad.weights.items():
            state[f"base_model.model.{name}.lora_A.weight"] = a
            state[f"base_model.model.{name}.lora_B.weight"] = b
        cfg = AdapterBlobConfig(
            r=ad.rank,
            lora_alpha=ad.scale * ad.rank,
            target_modules=tuple(sorted({n.rsplit(".", 1)[-1] for n in ad.weights})),
            base_digest="bench",
        )
        blob = folder / f"{i}.safetensors"
        save_adapter_blob(state, cfg, blob)
        served_by_user[f"user{i}"] = Served(f"bench-rev-{i}", store.put_file(blob), "personal")
    residency = AdapterResidency(
        table, store, cpu_capacity=len(adapters), dtype=next(served.parameters()).dtype
    )
    codec = TextCodec(as_hf_tokenizer(tokenizer))
    runner = ModelRunner(served, table, pad_token_id=codec.pad_id)
    resolver = RevisionResolver(lambda t, u: served_by_user[u], ttl_s=3600)
    config = EngineConfig(max_batch=max_batch, queue_size=10_000, timeout_s=600, max_tokens=4096)
    return InferenceEngine(runner, residency, resolver, codec, config=config).start()


def _ttft(engine: InferenceEngine, batch: int, tok_s: float, cfg: ServeBenchConfig) -> list[float]:
    """TTFTs of requests arriving at a steady rate from `batch` users in turn."""
    from tessera.services.inference.requests import GenerateRequest, Generation
    from tessera.services.inference.sampling import SamplingParams

    params = SamplingParams(max_tokens=cfg.ttft_max_tokens)
    prompt = list(range(100, 100 + cfg.prompt_tokens))
    for i in range(batch):  # warm the adapter slots: steady state, not cold loads
        engine.submit(GenerateRequest("bench", f"user{i}", prompt, params)).result()
    rate = max(0.5, cfg.ttft_load * tok_s / cfg.ttft_max_tokens)  # requests per second
    gens: list[Generation] = []
    start = time.monotonic()
    n = 0
    while (at := start + n / rate) < start + cfg.ttft_seconds:
        threading.Event().wait(max(0.0, at - time.monotonic()))
        gens.append(engine.submit(GenerateRequest("bench", f"user{n % batch}", prompt, params)))
        n += 1
    return [g.result().ttft_s for g in gens]
