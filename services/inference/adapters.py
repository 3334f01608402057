"""Adapter blobs -> `LoadedAdapter`: the one place that knows the blob's layout.

A blob is one safetensors file holding a peft LoRA state dict (`<module>.lora_A.weight`
[r, in], `<module>.lora_B.weight` [out, r]) with a `tessera` metadata entry, JSON
`{r, lora_alpha, target_modules, base_digest}`. Module names are matched against the
serving model's wrapped layers by their path from `layers.` onward, so peft's
`base_model.model.` prefix and the model class's own prefix do not matter.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor

from tessera.services.inference.lora_layers import LoadedAdapter

_A, _B = ".lora_A.weight", ".lora_B.weight"


class AdapterFormatError(ValueError):
    """A blob that is not a usable LoRA adapter for this model; the message says why."""


def read_blob(path: Path) -> tuple[dict[str, Tensor], dict[str, object]]:
    """The tensors of a blob and its parsed `tessera` metadata."""
    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = (f.metadata() or {}).get("tessera")
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open API)
    except Exception as exc:  # safetensors raises its own error types and OSError
        raise AdapterFormatError(f"{path} is not a readable safetensors file: {exc}") from exc
    if raw_meta is None:
        raise AdapterFormatError(f"{path} has no 'tessera' metadata (r, lora_alpha, ...)")
    try:
        meta = json.loads(raw_meta)
    except json.JSONDecodeError as exc:
        raise AdapterFormatError(f"{path}: 'tessera' metadata is not JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise AdapterFormatError(f"{path}: 'tessera' metadata must be a JSON object")
    return tensors, meta


def _layer_key(name: str) -> str:
    """`base_model.model.model.layers.3.mlp.up_proj` -> `layers.3.mlp.up_proj`."""
    idx = name.find("layers.")
    return name[idx:] if idx >= 0 else name.removeprefix("base_model.model.")


def adapter_from_tensors(
    digest: str,
    tensors: Mapping[str, Tensor],
    meta: Mapping[str, object],
    *,
    module_names: Iterable[str],
    dtype: torch.dtype,
) -> LoadedAdapter:
    """Build a `LoadedAdapter` keyed by the serving model's module names."""
    by_key = {_layer_key(n): n for n in module_names}
    r, alpha = meta.get("r"), meta.get("lora_alpha")
    if not isinstance(r, int) or r < 1 or not isinstance(alpha, int | float):
        raise AdapterFormatError(f"adapter {digest[:12]}: metadata needs integer r and lora_alpha")
    weights: dict[str, tuple[Tensor, Tensor]] = {}
    for key, a in tensors.items():
        if not key.endswith(_A):
            continue
        prefix = key[: -len(_A)]
        b = tensors.get(prefix + _B)
        if b is None:
            raise AdapterFormatError(f"adapter {digest[:12]}: {prefix} has lora_A but no lora_B")
        module = by_key.get(_layer_key(prefix))
        if module is None:
            raise AdapterFormatError(
                f"adapter {digest[:12]}: module {prefix} is not a wrapped layer of the model"
            )
        if a.shape[0] != r or b.shape[1] != r:
            raise AdapterFormatError(
                f"adapter {digest[:12]}: {prefix} has rank {a.shape[0]}/{b.shape[1]}, "
                f"metadata says {r}"
            )
        weights[module] = (a.to(dtype).contiguous(), b.to(dtype).contiguous())
    if not weights:
        raise AdapterFormatError(f"adapter {digest[:12]} holds no lora_A/lora_B tensors")
    return LoadedAdapter(digest=digest, rank=r, scale=float(alpha) / r, weights=weights)
