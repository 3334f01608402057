"""Tessera adapter blobs <-> peft adapter folders, the format every LoRA tool reads.

A peft folder holds `adapter_config.json` (a `LoraConfig`) and `adapter_model.safetensors`
whose keys are those of `get_peft_model_state_dict` - the very keys of our blob
(workers/adapter_store.py). So an export copies the blob's bytes unchanged (the file's
sha256 *is* the revision's adapter digest, and its `tessera` metadata, which peft
ignores, keeps the base digest) and writes the config beside it.

An import reads such a folder (or a tar of it), refuses what Tessera cannot serve or
warm-start from - another base model, another rank or set of target modules, LoRA
variants (DoRA, rsLoRA, biases, per-layer ranks), keys or shapes that are not the base
model's - and turns it into a blob. All checks run without torch or the model: the base
model's linear shapes come from its safetensors headers (`linear_shapes`).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from tessera.workers.adapter_store import (
    METADATA_KEY,
    AdapterBlobConfig,
    load_adapter_blob,
)

if TYPE_CHECKING:
    import torch

CONFIG_FILE: Final = "adapter_config.json"
WEIGHTS_FILE: Final = "adapter_model.safetensors"
PEFT_PREFIX: Final = "base_model.model."
_A, _B = ".lora_A.weight", ".lora_B.weight"
# An uploaded folder is two files; anything bigger than this is not a LoRA adapter of a
# small base model (SmolLM2-135M at rank 256 on every linear is ~120 MB).
MAX_TAR_BYTES: Final = 512 << 20
# Options of LoraConfig whose non-default values change the math our serving path does.
_UNSUPPORTED: Final[dict[str, Any]] = {
    "use_dora": False, "use_rslora": False, "fan_in_fan_out": False,
    "modules_to_save": None, "layers_to_transform": None, "rank_pattern": {},
    "alpha_pattern": {}, "layer_replication": None,
}
_QUANT_SUFFIX = re.compile(r"\.(q\d\w*|f16|f32|bf16|gguf)$", re.IGNORECASE)


class PeftFormatError(ValueError):
    """An adapter folder Tessera cannot take; the message says what is wrong."""


def peft_config(cfg: AdapterBlobConfig, *, base_model_id: str) -> dict[str, Any]:
    """The `adapter_config.json` of a blob: a plain LoRA, inference only."""
    return {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model_id,
        "r": cfg.r, "lora_alpha": cfg.lora_alpha, "target_modules": sorted(cfg.target_modules),
        "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
        "use_rslora": False, "use_dora": False,
    }


def export_blob(blob: Path, out_dir: Path, *, base_model_id: str) -> Path:
    """Write `out_dir/adapter_config.json` and `out_dir/adapter_model.safetensors` (the
    blob's bytes); `PeftModel.from_pretrained(base, out_dir)` loads it."""
    _, cfg = load_adapter_blob(blob)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / WEIGHTS_FILE).write_bytes(blob.read_bytes())
    config = json.dumps(peft_config(cfg, base_model_id=base_model_id), indent=2, sort_keys=True)
    (out_dir / CONFIG_FILE).write_text(config + "\n", encoding="utf-8")
    return out_dir


def export_tar(blob_bytes: bytes, cfg: AdapterBlobConfig, *, base_model_id: str) -> bytes:
    """The same two files as an uncompressed tar (fixed mtimes: same blob, same bytes)."""
    config = json.dumps(peft_config(cfg, base_model_id=base_model_id), indent=2,
                        sort_keys=True).encode() + b"\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in ((CONFIG_FILE, config), (WEIGHTS_FILE, blob_bytes)):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass(frozen=True)
class PeftAdapter:
    """A peft LoRA adapter as read, before any check against a base model."""

    config: dict[str, Any]
    weights: bytes  # adapter_model.safetensors as given
    tensors: dict[str, torch.Tensor]
    tessera_base_digest: str | None  # set when Tessera exported it

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.weights).hexdigest()


def read_peft_dir(folder: Path) -> PeftAdapter:
    """Read a peft adapter folder (PeftFormatError when it is not one)."""
    files = {name: folder / name for name in (CONFIG_FILE, WEIGHTS_FILE)}
    missing = [name for name, path in files.items() if not path.is_file()]
    if missing:
        raise PeftFormatError(f"{folder} is not a peft adapter folder: no {', '.join(missing)}"
                              " (adapter_model.bin is not read: save with safetensors)")
    return read_peft_files(files[CONFIG_FILE].read_bytes(), files[WEIGHTS_FILE].read_bytes())


def read_peft_tar(data: bytes) -> PeftAdapter:
    """Read the two files from a tar (optionally gzip'd), at its top or in one folder.
    Nothing is extracted to disk: members are read by name, so paths cannot escape."""
    if len(data) > MAX_TAR_BYTES:
        raise PeftFormatError(f"archive is {len(data)} bytes; at most {MAX_TAR_BYTES}")
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for member in tar.getmembers():
                name = member.name.rsplit("/", 1)[-1]
                if member.isfile() and name in (CONFIG_FILE, WEIGHTS_FILE):
                    if name in found:
                        raise PeftFormatError(f"archive holds more than one {name}")
                    fh = tar.extractfile(member)
                    if fh is not None:
                        found[name] = fh.read()
    except tarfile.TarError as exc:
        raise PeftFormatError(f"body is not a tar archive: {exc}") from exc
    missing = [n for n in (CONFIG_FILE, WEIGHTS_FILE) if n not in found]
    if missing:
        raise PeftFormatError(f"archive lacks {', '.join(missing)}")
    return read_peft_files(found[CONFIG_FILE], found[WEIGHTS_FILE])


def read_peft_files(config_json: bytes, weights: bytes) -> PeftAdapter:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        config = json.loads(config_json)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PeftFormatError(f"{CONFIG_FILE} is not JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise PeftFormatError(f"{CONFIG_FILE} must hold a JSON object")
    try:
        tensors = load(weights)
    except (SafetensorError, ValueError) as exc:
        raise PeftFormatError(f"{WEIGHTS_FILE} is not a safetensors file: {exc}") from exc
    meta = _safetensors_metadata(weights)
    digest = None
    if METADATA_KEY in meta:
        try:
            digest = AdapterBlobConfig.from_json(meta[METADATA_KEY]).base_digest
        except (ValueError, KeyError, TypeError):
            digest = None  # not ours after all; judged by its config like any other
    return PeftAdapter(config=config, weights=weights, tensors=tensors,
                       tessera_base_digest=digest)


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    meta = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()}


@dataclass(frozen=True)
class ImportTarget:
    """What an imported adapter must fit: the base model and the tenant's LoRA shape."""

    base_model_id: str
    base_digest: str
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    # Every linear layer of the base model: module path -> (out_features, in_features).
    linear_shapes: Mapping[str, tuple[int, int]]


def linear_shapes(model_dir: Path) -> dict[str, tuple[int, int]]:
    """Module path -> (out, in) of every 2-D `*.weight` in the base model's safetensors
    files, read from their headers only (no torch, no weights loaded)."""
    shapes: dict[str, tuple[int, int]] = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        with path.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        for key, entry in header.items():
            shape = entry.get("shape") if isinstance(entry, dict) else None
            if key.endswith(".weight") and isinstance(shape, list) and len(shape) == 2:
                shapes[key.removesuffix(".weight")] = (int(shape[0]), int(shape[1]))
    return shapes


def same_base_name(given: str, model_id: str) -> bool:
    """`HuggingFaceTB/SmolLM2-135M-Instruct` names the model `SmolLM2-135M-Instruct.Q4_1`
    was converted from: compare the last path part, without a quantisation suffix."""
    def norm(name: str) -> str:
        return _QUANT_SUFFIX.sub("", name.rstrip("/").rsplit("/", 1)[-1]).lower()

    return bool(given) and norm(given) == norm(model_id)


def check_fits(adapter: PeftAdapter, target: ImportTarget) -> None:
    """Raise PeftFormatError listing every reason `adapter` cannot be served on
    `target`'s base model in place of a revision trained by Tessera."""
    cfg = adapter.config
    problems: list[str] = []
    if str(cfg.get("peft_type", "")).upper() != "LORA":
        problems.append(f"peft_type is {cfg.get('peft_type')!r}; only LORA adapters are taken")
    problems += _base_problems(adapter, target)
    if cfg.get("bias", "none") != "none":
        problems.append(f"bias={cfg.get('bias')!r}: LoRA biases are not served (use 'none')")
    for option, default in _UNSUPPORTED.items():
        if cfg.get(option, default) not in (default, None, {}, False):
            problems.append(f"{option}={cfg.get(option)!r} is not supported (use {default!r})")
    if cfg.get("r") != target.rank:
        problems.append(f"rank r={cfg.get('r')!r}; this tenant's adapters have r={target.rank}")
    alpha = cfg.get("lora_alpha")
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or alpha <= 0:
        problems.append(f"lora_alpha={alpha!r} must be a positive number")
    targets = cfg.get("target_modules")
    if not isinstance(targets, list) or sorted(set(map(str, targets))) != sorted(
        target.target_modules
    ):
        problems.append(f"target_modules={targets!r}; this tenant's adapters target "
                        f"{sorted(target.target_modules)} (a list, not a regex)")
    if not problems:
        problems += _tensor_problems(adapter, target)
    if problems:
        raise PeftFormatError("adapter does not fit: " + "; ".join(problems))


def _base_problems(adapter: PeftAdapter, target: ImportTarget) -> list[str]:
    if adapter.tessera_base_digest is not None:  # exported by a Tessera: exact weights known
        if adapter.tessera_base_digest != target.base_digest:
            return [f"it was trained on base weights {adapter.tessera_base_digest[:12]}, "
                    f"this server's base is {target.base_digest[:12]} ({target.base_model_id})"]
        return []
    given = str(adapter.config.get("base_model_name_or_path") or "")
    if not same_base_name(given, target.base_model_id):
        return [f"base_model_name_or_path={given!r}; this server's base model is "
                f"{target.base_model_id!r}"]
    return []


def expected_shapes(target: ImportTarget) -> dict[str, tuple[int, int]]:
    """Every key a fitting adapter holds, with its shape: A [r, in], B [out, r]."""
    out: dict[str, tuple[int, int]] = {}
    for module, (n_out, n_in) in target.linear_shapes.items():
        if module.rsplit(".", 1)[-1] in target.target_modules:
            out[f"{PEFT_PREFIX}{module}{_A}"] = (target.rank, n_in)
            out[f"{PEFT_PREFIX}{module}{_B}"] = (n_out, target.rank)
    return out


def _tensor_problems(adapter: PeftAdapter, target: ImportTarget) -> list[str]:
    import torch

    want = expected_shapes(target)
    given = adapter.tensors
    problems: list[str] = []
    missing, extra = sorted(set(want) - set(given)), sorted(set(given) - set(want))
    if missing or extra:
        problems.append(f"keys do not match the base model's {sorted(target.target_modules)} "
                        f"layers: {len(missing)} missing (e.g. {missing[:2]}), {len(extra)} "
                        f"unexpected (e.g. {extra[:2]})")
    for key in sorted(set(want) & set(given)):
        tensor = given[key]
        if tuple(tensor.shape) != want[key]:
            problems.append(f"{key} has shape {tuple(tensor.shape)}, the base model needs "
                            f"{want[key]}")
        elif not tensor.is_floating_point() or not bool(torch.isfinite(tensor).all()):
            problems.append(f"{key} is not a finite floating-point tensor")
        if len(problems) >= 5:
            break
    return problems


def to_blob(
    adapter: PeftAdapter, target: ImportTarget, path: Path, *, origin: Mapping[str, str]
) -> AdapterBlobConfig:
    """Write a fitting adapter as a Tessera blob at `path` (call `check_fits` first).

    The blob carries the tenant's alpha; when the adapter's differs, B is rescaled by
    alpha_given / alpha_tenant, so scale * B @ A - the layer's update - is unchanged and
    later revisions warm-started from it train at the tenant's usual scale. `origin`
    (an extra `origin` field of the `tessera` metadata, which readers ignore) names the
    tenant, user and source: the same file imported for two users gives two blobs, so
    forgetting one user never deletes the other's adapter from the content-addressed
    store. It is one metadata entry because safetensors writes several in a random order
    (a Rust HashMap), and the blob's bytes must be reproducible."""
    import torch
    from safetensors.torch import save_file

    factor = float(adapter.config["lora_alpha"]) / target.alpha
    tensors = {
        key: (adapter.tensors[key].to(torch.float32) * factor if key.endswith(_B)
              else adapter.tensors[key].to(torch.float32)).contiguous()
        for key in sorted(adapter.tensors)
    }
    cfg = AdapterBlobConfig(target.rank, target.alpha, tuple(sorted(target.target_modules)),
                            target.base_digest)
    meta = {**json.loads(cfg.to_json()), "origin": dict(origin)}
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})
    return cfg
