"""Multi-LoRA ops: SGMV shrink/expand in Triton on GPU, a torch path on CPU, batch metadata.

Imports nothing else of Tessera. Serving calls `add_lora` with a `LoraBatchMeta` built
once per forward step by `build_batch_meta`.
"""

from .metadata import BASE_ONLY_SLOT, LoraBatchMeta, build_batch_meta
from .ops import Backend, LoraOpError, add_lora, lora_expand, lora_shrink, resolve_backend

__all__ = [
    "BASE_ONLY_SLOT",
    "Backend",
    "LoraBatchMeta",
    "LoraOpError",
    "add_lora",
    "build_batch_meta",
    "lora_expand",
    "lora_shrink",
    "resolve_backend",
]
