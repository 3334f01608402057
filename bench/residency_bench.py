"""`tessera bench residency`: serving many more adapters than fit in memory.

One engine over the real base model with `device_slots` LoRA slots and a CPU cache of
`cpu_cache` adapters; `adapters` distinct adapter blobs in a real content-addressed store
(random rank-r LoRA weights over the serving targets, written by `save_adapter_blob` and
`LocalAdapterStore.put_file`, one per user). Requests arrive at a steady rate from users
drawn from a Zipf distribution (rank k with probability proportional to 1/k^s), and the
same arrival times and token counts are replayed in arms, each on a fresh engine (empty
slots and cache) over the same wrapped model:

- resident: every request's user is mapped onto one of `device_slots` adapters, all
  placed in slots before the run (every request is a slot hit): the ceiling;
- zipf: the real mapping (1 user = 1 adapter): slot misses, CPU-cache misses, cold loads
  from the store on the loader threads while resident rows keep decoding;
- zipf + prefetch (with `prefetch_lead_s`): before each request, one interaction event of
  its user reaches the `Prefetcher` `prefetch_lead_s` earlier, as the stream would
  deliver it (called directly, not through a broker: the Kafka path is tested on its own).

A request "waited for a cold load" when its adapter had to be read from the store
(`Generation.cold_load_s` is set); its wait (store -> CPU -> slot) is the cold-load
latency.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tessera.services.inference.adapter_loader import AdapterLoader
from tessera.services.inference.engine import EngineConfig, InferenceEngine
from tessera.services.inference.lora_layers import LoraSlotTable
from tessera.services.inference.model_runner import ModelRunner
from tessera.services.inference.prefetch import Prefetcher
from tessera.services.inference.requests import GenerateRequest, GenerateResult, Generation
from tessera.services.inference.residency import AdapterResidency
from tessera.services.inference.revisions import RevisionResolver, Served
from tessera.services.inference.sampling import SamplingParams
from tessera.services.inference.tokens import TextCodec
from tessera.workers.adapter_store import AdapterBlobConfig, LocalAdapterStore, save_adapter_blob

TENANT = "bench"


@dataclass(frozen=True)
class ResidencyConfig:
    adapters: int = 1000
    device_slots: int = 32
    cpu_cache: int = 128
    requests: int = 120
    rate: float = 0.0  # requests per second; 0: `load` x the measured all-resident capacity
    load: float = 0.8
    zipf_s: float = 1.1
    prompt_tokens: int = 16
    max_tokens: int = 8
    max_batch: int = 32
    loader_threads: int = 1
    prefetch: bool = False
    prefetch_lead_s: float = 0.5
    rank: int = 8
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    seed: int = 0
    cold_load_grace_ms: float = 10.0  # the engine's wait at a boundary for reads it started


@dataclass
class ArmResult:
    """One arm's requests, as the engine answered them."""

    tok_s: float
    ttfts: list[float]
    cold_waits: list[float]  # cold_load_s of the requests that waited for a store read
    cold_ttfts: list[float]
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def cold_share(self) -> float:
        return len(self.cold_waits) / max(1, len(self.ttfts))


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def target_linears(model: nn.Module, targets: Sequence[str]) -> list[tuple[str, nn.Linear]]:
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in targets
    ]


def write_adapters(
    model: nn.Module, store: LocalAdapterStore, cfg: ResidencyConfig, scratch: Path
) -> list[str]:
    """`cfg.adapters` distinct random adapters as real blobs in `store`; their digests.
    A manifest in the store's folder lets a rerun with the same shape skip the writing."""
    linears = target_linears(model, cfg.targets)
    spec = {
        "n": cfg.adapters,
        "rank": cfg.rank,
        "targets": list(cfg.targets),
        "seed": cfg.seed,
        "shapes": [[n, m.in_features, m.out_features] for n, m in linears],
    }
    manifest = store.root / "bench-residency.json"
    if manifest.is_file():
        saved = json.loads(manifest.read_text())
        if saved["spec"] == spec and all(store.exists(d) for d in saved["digests"]):
            return list(saved["digests"])
    blob_cfg = AdapterBlobConfig(cfg.rank, 2.0 * cfg.rank, tuple(cfg.targets), "bench")
    gen = torch.Generator().manual_seed(cfg.seed)
    digests = []
    for i in range(cfg.adapters):
        state = {}
        for name, m in linears:
            state[f"base_model.model.{name}.lora_A.weight"] = (
                torch.randn(cfg.rank, m.in_features, generator=gen) * 0.02
            )
            state[f"base_model.model.{name}.lora_B.weight"] = (
                torch.randn(m.out_features, cfg.rank, generator=gen) * 0.02
            )
        blob = scratch / f"adapter-{i}.safetensors"
        save_adapter_blob(state, blob_cfg, blob)
        digests.append(store.put_file(blob))
        blob.unlink()
    manifest.write_text(json.dumps({"spec": spec, "digests": digests}))
    return digests


def zipf_users(n_users: int, n_requests: int, s: float, seed: int) -> list[int]:
    """User ranks 0..n-1 drawn with P(k) proportional to 1 / (k + 1)^s."""
    weights = [1.0 / (k + 1) ** s for k in range(n_users)]
    return random.Random(seed).choices(range(n_users), weights=weights, k=n_requests)


class Bench:
    """The wrapped model and the store, shared by every arm; one fresh engine per arm."""

    def __init__(
        self,
        model: nn.Module,
        table: LoraSlotTable,
        tokenizer: object,
        store: LocalAdapterStore,
        digests: list[str],
        cfg: ResidencyConfig,
    ) -> None:
        from tessera.services.inference.tokens import as_hf_tokenizer

        self.model, self.table, self.store, self.digests, self.cfg = (
            model,
            table,
            store,
            digests,
            cfg,
        )
        self.codec = TextCodec(as_hf_tokenizer(tokenizer))
        self.dtype = next(model.parameters()).dtype

    def engine(
        self, adapter_of: dict[int, int], grace_ms: float
    ) -> tuple[InferenceEngine, AdapterLoader]:
        """A started engine where user `u` is served adapter `adapter_of[u]`."""
        for slot in range(self.table.n_slots):
            self.table.clear(slot)
        residency = AdapterResidency(
            self.table, self.store, cpu_capacity=self.cfg.cpu_cache, dtype=self.dtype
        )
        served = {u: Served(f"rev-{a}", self.digests[a], "personal") for u, a in adapter_of.items()}
        resolver = RevisionResolver(lambda _t, u: served[int(u)], ttl_s=3600)
        loader = AdapterLoader(residency, threads=self.cfg.loader_threads)
        runner = ModelRunner(self.model, self.table, pad_token_id=self.codec.pad_id)
        config = EngineConfig(
            max_batch=self.cfg.max_batch,
            queue_size=100_000,
            timeout_s=3600,
            max_tokens=4096,
            cold_load_grace_s=grace_ms / 1000,
        )
        engine = InferenceEngine(
            runner, residency, resolver, self.codec, config=config, loader=loader
        )
        return engine.start(), loader

    def run(
        self,
        users: list[int],
        adapter_of: dict[int, int],
        rate: float,
        *,
        warm: Sequence[int] = (),
        prefetch_lead_s: float | None = None,
        grace_ms: float | None = None,
    ) -> ArmResult:
        """Replay `users` at `rate` requests/s; the `warm` adapters are placed first; the
        engine's cold-load grace is `grace_ms` (default: the config's)."""
        grace = self.cfg.cold_load_grace_ms if grace_ms is None else grace_ms
        engine, loader = self.engine(adapter_of, grace)
        try:
            for a in warm:
                engine.residency.release(engine.residency.acquire(self.digests[a]))
            engine.residency.hits = engine.residency.misses = 0
            engine.residency.cpu_hits = engine.residency.cpu_misses = 0
            prefetcher = Prefetcher(engine.resolver, loader, scope="all")
            gens, results, elapsed = self._replay(engine, prefetcher, users, rate, prefetch_lead_s)
        finally:
            engine.stop()
        res = engine.residency
        cold = [
            (g.cold_load_s, r.ttft_s)
            for g, r in zip(gens, results, strict=True)
            if g.cold_load_s is not None
        ]
        return ArmResult(
            tok_s=sum(r.completion_tokens for r in results) / elapsed,
            ttfts=[r.ttft_s for r in results],
            cold_waits=[c for c, _ in cold],
            cold_ttfts=[t for _, t in cold],
            counters={
                "hits": res.hits,
                "misses": res.misses,
                "cpu_hits": res.cpu_hits,
                "cpu_misses": res.cpu_misses,
                "loads": res.loads,
                "prefetch_queued": loader.prefetch_queued,
                "prefetch_dropped": loader.prefetch_dropped,
            },
        )

    def _replay(
        self,
        engine: InferenceEngine,
        prefetcher: Prefetcher,
        users: list[int],
        rate: float,
        lead_s: float | None,
    ) -> tuple[list[Generation], list[GenerateResult], float]:
        """Submit at the steady rate (events `lead_s` ahead); the handles, their results
        and the seconds from the first submit to the last finish."""
        params = SamplingParams(max_tokens=self.cfg.max_tokens)
        prompt = list(range(100, 100 + self.cfg.prompt_tokens))
        timeline = [(i / rate, 1, u) for i, u in enumerate(users)]
        if lead_s is not None:
            timeline += [(i / rate - lead_s, 0, u) for i, u in enumerate(users)]
        timeline.sort()
        gens: list[Generation] = []
        start = time.monotonic()
        for at, is_request, user in timeline:
            threading.Event().wait(max(0.0, start + at - time.monotonic()))
            if is_request:
                gens.append(engine.submit(GenerateRequest(TENANT, str(user), prompt, params)))
            else:
                prefetcher.on_event(TENANT, str(user))
        results = [g.result() for g in gens]
        return gens, results, time.monotonic() - start


def capacity_rps(bench: Bench, users: list[int]) -> float:
    """Requests/s the all-resident engine finishes when `max_batch` * 2 arrive at once."""
    n = bench.cfg.max_batch * 2
    slots = bench.cfg.device_slots
    mapping = {u: u % slots for u in set(users[:n])}
    arm = bench.run(users[:n], mapping, rate=1e9, warm=sorted(set(mapping.values())))
    return arm.tok_s / bench.cfg.max_tokens


def summarize(
    resident: ArmResult,
    zipf: ArmResult,
    prefetch: ArmResult | None,
    cfg: ResidencyConfig,
    no_grace: ArmResult | None = None,
) -> dict[str, object]:
    c = zipf.counters
    out: dict[str, object] = {
        "adapters": cfg.adapters,
        "device_slots": cfg.device_slots,
        "cpu_cache": cfg.cpu_cache,
        "tok_s": round(zipf.tok_s, 2),
        "resident_tok_s": round(resident.tok_s, 2),
        "vs_resident": round(zipf.tok_s / resident.tok_s, 3) if resident.tok_s else 0.0,
        "slot_hit_rate": round(c["hits"] / max(1, c["hits"] + c["misses"]), 3),
        "cpu_hit_rate": round(c["cpu_hits"] / max(1, c["cpu_hits"] + c["cpu_misses"]), 3),
        "cold_load_p50_ms": round(1000 * percentile(zipf.cold_waits, 0.5), 1),
        "cold_load_p99_ms": round(1000 * percentile(zipf.cold_waits, 0.99), 1),
        "cold_ttft_p99_ms": round(1000 * percentile(zipf.cold_ttfts, 0.99), 1),
        "cold_requests": len(zipf.cold_waits),
        "ttft_p99_ms": round(1000 * percentile(zipf.ttfts, 0.99), 1),
        "resident_ttft_p99_ms": round(1000 * percentile(resident.ttfts, 0.99), 1),
        "counters": c,
    }
    if prefetch is not None:
        out["cold_share_with_prefetch"] = round(prefetch.cold_share, 3)
        out["cold_share_without_prefetch"] = round(zipf.cold_share, 3)
        out["prefetch_tok_s"] = round(prefetch.tok_s, 2)
        out["prefetch_counters"] = prefetch.counters
    out["cold_load_grace_ms"] = cfg.cold_load_grace_ms
    if no_grace is not None:  # the same Zipf load, the engine never waiting for a read
        out["no_grace"] = {
            "tok_s": round(no_grace.tok_s, 2),
            "cold_load_p50_ms": round(1000 * percentile(no_grace.cold_waits, 0.5), 1),
            "cold_load_p99_ms": round(1000 * percentile(no_grace.cold_waits, 0.99), 1),
            "cold_ttft_p99_ms": round(1000 * percentile(no_grace.cold_ttfts, 0.99), 1),
        }
    return out
