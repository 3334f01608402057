"""Assemble a serving engine from a loaded base model: wrap, slots, residency, engine."""

from __future__ import annotations

import torch
from torch import nn

from tessera.schemas.settings import Settings
from tessera.services.inference.adapter_loader import AdapterLoader
from tessera.services.inference.engine import EngineConfig, InferenceEngine
from tessera.services.inference.lora_layers import wrap_model
from tessera.services.inference.model_runner import ModelRunner
from tessera.services.inference.request_log import RequestLog
from tessera.services.inference.residency import AdapterResidency, AdapterSource
from tessera.services.inference.revisions import Lookup, PinLookup, RevisionResolver
from tessera.services.inference.tokens import HFTokenizer, TextCodec
from tessera.services.quotas import TenantQuotas


def model_eos_ids(model: nn.Module) -> list[int]:
    """The end-of-sequence ids of the model's generation config (int or list)."""
    cfg = getattr(model, "generation_config", None)
    eos = getattr(cfg, "eos_token_id", None)
    if eos is None:
        return []
    return [int(e) for e in eos] if isinstance(eos, list | tuple) else [int(eos)]


def build_engine(
    model: nn.Module,
    tokenizer: HFTokenizer,
    store: AdapterSource,
    lookup: Lookup,
    *,
    settings: Settings,
    request_log: RequestLog | None = None,
    quotas: TenantQuotas | None = None,
    pin_lookup: PinLookup | None = None,
    model_id: str = "base",
) -> InferenceEngine:
    """A not-yet-started engine serving `model` (modified in place: its target linears
    become multi-LoRA layers) with adapters from `store` chosen by `lookup`."""
    model.eval()
    dtype = next(model.parameters()).dtype
    table = wrap_model(
        model,
        target_modules=settings.inference_target_modules,
        n_slots=settings.inference_device_slots,
        max_rank=settings.inference_max_rank,
    )
    residency = AdapterResidency(
        table, store, cpu_capacity=settings.inference_cpu_adapters, dtype=dtype
    )
    codec = TextCodec(tokenizer, extra_eos=model_eos_ids(model))
    runner = ModelRunner(model, table, pad_token_id=codec.pad_id)
    resolver = RevisionResolver(
        lookup, ttl_s=settings.inference_revision_cache_s, pin_lookup=pin_lookup
    )
    config = EngineConfig(
        max_batch=settings.inference_max_batch,
        queue_size=settings.inference_queue_size,
        timeout_s=settings.inference_request_timeout_s,
        max_prompt_tokens=settings.inference_max_prompt_tokens,
        max_tokens=settings.inference_max_tokens,
        model_id=model_id,
        repetition_penalty=settings.serve_repetition_penalty,
        cold_load_grace_s=settings.inference_cold_load_grace_ms / 1000,
    )
    loader = AdapterLoader(
        residency,
        threads=settings.inference_loader_threads,
        prefetch_queue=settings.inference_prefetch_queue,
    )
    return InferenceEngine(
        runner,
        residency,
        resolver,
        codec,
        config=config,
        request_log=request_log,
        quotas=quotas,
        loader=loader,
    )


def torch_dtype(name: str) -> torch.dtype:
    """`settings.inference_dtype` -> torch dtype."""
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
