"""Content-addressed adapter blobs, and the blob format itself.

A blob is ONE safetensors file holding peft's LoRA state dict (keys as
`get_peft_model_state_dict` returns them, e.g.
`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight` [r, in] and
`...lora_B.weight` [out, r]) with safetensors metadata `tessera` = JSON
`{r, lora_alpha, target_modules, base_digest}`. Its address is the sha256 of the file.

`AdapterStore` is the interface (an object store can implement it);
`LocalAdapterStore` keeps blobs in a directory, written atomically (temp file in the same
directory, fsync, rename, fsync the directory) and verified on every read.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch

BLOB_SUFFIX = ".safetensors"
METADATA_KEY = "tessera"
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class AdapterStoreError(Exception):
    """Base of the store's errors."""


class AdapterMissing(AdapterStoreError):
    """No blob with this digest is in the store."""


class AdapterCorrupt(AdapterStoreError):
    """A blob's bytes no longer hash to its digest (or it is not a valid adapter)."""


@dataclass(frozen=True, slots=True)
class AdapterBlobConfig:
    """What a blob says about itself: enough to rebuild the LoRA layers it feeds."""

    r: int
    lora_alpha: float
    target_modules: tuple[str, ...]
    base_digest: str

    def to_json(self) -> str:
        return json.dumps(
            {"r": self.r, "lora_alpha": self.lora_alpha,
             "target_modules": sorted(self.target_modules), "base_digest": self.base_digest},
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> AdapterBlobConfig:
        raw = json.loads(text)
        return cls(int(raw["r"]), float(raw["lora_alpha"]),
                   tuple(sorted(str(t) for t in raw["target_modules"])), str(raw["base_digest"]))

    @property
    def scaling(self) -> float:
        """LoRA's scale: delta W = (alpha / r) * B @ A."""
        return self.lora_alpha / self.r


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def save_adapter_blob(
    state_dict: Mapping[str, torch.Tensor], cfg: AdapterBlobConfig, path: Path
) -> None:
    """Write the blob byte-for-byte reproducibly: keys sorted, tensors contiguous float32 on
    CPU, one fixed metadata entry (same tensors + cfg -> same file -> same digest)."""
    import torch
    from safetensors.torch import save_file

    tensors = {
        key: state_dict[key].detach().to("cpu", torch.float32).contiguous()
        for key in sorted(state_dict)
    }
    save_file(tensors, str(path), metadata={METADATA_KEY: cfg.to_json()})


def load_adapter_blob(path: Path) -> tuple[dict[str, torch.Tensor], AdapterBlobConfig]:
    """The state dict and config of a blob; AdapterCorrupt when it is not one of ours."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise AdapterCorrupt(f"{path} is not a readable safetensors file: {exc}") from exc
    if METADATA_KEY not in meta:
        raise AdapterCorrupt(f"{path} has no {METADATA_KEY!r} metadata; not a Tessera adapter")
    try:
        cfg = AdapterBlobConfig.from_json(meta[METADATA_KEY])
    except (ValueError, KeyError, TypeError) as exc:
        raise AdapterCorrupt(f"{path} has malformed {METADATA_KEY!r} metadata: {exc}") from exc
    return tensors, cfg


class AdapterStore(Protocol):
    """Content-addressed blobs: the address is the sha256 of the bytes."""

    def put_file(self, path: Path) -> str:
        """Store a copy of `path`; return its digest (idempotent)."""
        ...

    def path(self, digest: str) -> Path:
        """A local file holding the verified blob (AdapterMissing / AdapterCorrupt)."""
        ...

    def read_bytes(self, digest: str) -> bytes: ...

    def exists(self, digest: str) -> bool: ...

    def delete(self, digest: str) -> bool:
        """Remove the blob; False if it was not there."""
        ...

    def list(self) -> list[str]: ...


def _check_digest(digest: str) -> str:
    # Digests become file names: refuse anything that could escape the store's directory.
    if not _DIGEST.match(digest):
        raise ValueError(f"not a sha256 hex digest: {digest!r}")
    return digest


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalAdapterStore:
    """Blobs as `<root>/<digest[:2]>/<digest>.safetensors`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _blob(self, digest: str) -> Path:
        digest = _check_digest(digest)
        return self.root / digest[:2] / f"{digest}{BLOB_SUFFIX}"

    def put_file(self, path: Path) -> str:
        digest = sha256_file(path)
        target = self._blob(digest)
        if target.is_file() and sha256_file(target) == digest:
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=BLOB_SUFFIX)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, path.open("rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            if sha256_file(tmp) != digest:
                raise AdapterStoreError(f"{path} changed while it was being stored")
            os.replace(tmp, target)  # readers see the whole blob or none
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)
        return digest

    def path(self, digest: str) -> Path:
        blob = self._blob(digest)
        if not blob.is_file():
            raise AdapterMissing(f"adapter {digest} is not in the store at {self.root}")
        actual = sha256_file(blob)
        if actual != digest:
            raise AdapterCorrupt(f"adapter blob {blob} hashes to {actual}, not {digest}")
        return blob

    def read_bytes(self, digest: str) -> bytes:
        blob = self._blob(digest)
        try:
            data = blob.read_bytes()
        except FileNotFoundError as exc:
            raise AdapterMissing(f"adapter {digest} is not in the store at {self.root}") from exc
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise AdapterCorrupt(f"adapter blob {blob} hashes to {actual}, not {digest}")
        return data

    def exists(self, digest: str) -> bool:
        return self._blob(digest).is_file()

    def delete(self, digest: str) -> bool:
        blob = self._blob(digest)
        try:
            blob.unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(blob.parent)
        return True

    def list(self) -> list[str]:
        return sorted(
            p.name.removesuffix(BLOB_SUFFIX)
            for p in self.root.glob(f"??/*{BLOB_SUFFIX}")
            if _DIGEST.match(p.name.removesuffix(BLOB_SUFFIX))
        )
