"""The content-addressed adapter store and the blob format."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch

from tessera.workers.adapter_store import (
    AdapterBlobConfig,
    AdapterCorrupt,
    AdapterMissing,
    LocalAdapterStore,
    load_adapter_blob,
    save_adapter_blob,
)

CFG = AdapterBlobConfig(r=4, lora_alpha=8.0, target_modules=("q_proj", "v_proj"),
                        base_digest="ab" * 32)


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    prefix = "base_model.model.model.layers.0.self_attn"
    return {
        f"{prefix}.v_proj.lora_B.weight": torch.randn(32, 4, generator=g),
        f"{prefix}.q_proj.lora_A.weight": torch.randn(4, 64, generator=g),
        f"{prefix}.q_proj.lora_B.weight": torch.randn(64, 4, generator=g),
        f"{prefix}.v_proj.lora_A.weight": torch.randn(4, 64, generator=g),
    }


def test_blob_roundtrip_and_bytes_do_not_depend_on_key_order(tmp_path: Path) -> None:
    state = _state()
    save_adapter_blob(state, CFG, tmp_path / "a.safetensors")
    save_adapter_blob(dict(reversed(list(state.items()))), CFG, tmp_path / "b.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()

    loaded, cfg = load_adapter_blob(tmp_path / "a.safetensors")
    assert cfg == CFG
    assert cfg.scaling == 2.0
    assert set(loaded) == set(state)
    for key, tensor in state.items():
        assert torch.equal(loaded[key], tensor)


def test_blob_without_tessera_metadata_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file(_state(), str(tmp_path / "foreign.safetensors"))
    with pytest.raises(AdapterCorrupt, match="no 'tessera' metadata"):
        load_adapter_blob(tmp_path / "foreign.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(AdapterCorrupt, match="not a readable safetensors"):
        load_adapter_blob(tmp_path / "junk.safetensors")


def test_put_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    store = LocalAdapterStore(tmp_path / "store")
    blob = tmp_path / "a.safetensors"
    save_adapter_blob(_state(), CFG, blob)
    digest = store.put_file(blob)
    assert digest == hashlib.sha256(blob.read_bytes()).hexdigest()
    assert store.put_file(blob) == digest
    assert store.exists(digest)
    assert store.read_bytes(digest) == blob.read_bytes()
    assert store.path(digest).read_bytes() == blob.read_bytes()
    # no temp files left behind by the atomic write
    assert [p.name for p in store.path(digest).parent.iterdir()] == [f"{digest}.safetensors"]

    other = tmp_path / "b.safetensors"
    save_adapter_blob(_state(seed=1), CFG, other)
    digest2 = store.put_file(other)
    assert digest2 != digest
    assert store.list() == sorted([digest, digest2])

    assert store.delete(digest) is True
    assert store.delete(digest) is False
    assert store.list() == [digest2]
    with pytest.raises(AdapterMissing):
        store.path(digest)
    with pytest.raises(AdapterMissing):
        store.read_bytes(digest)


def test_corrupt_blob_is_detected_on_read(tmp_path: Path) -> None:
    store = LocalAdapterStore(tmp_path / "store")
    blob = tmp_path / "a.safetensors"
    save_adapter_blob(_state(), CFG, blob)
    digest = store.put_file(blob)
    stored = store.path(digest)
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0xFF  # flip one bit of the last tensor byte
    stored.write_bytes(bytes(data))
    with pytest.raises(AdapterCorrupt, match=digest):
        store.path(digest)
    with pytest.raises(AdapterCorrupt):
        store.read_bytes(digest)
    # storing the good bytes again repairs the entry
    assert store.put_file(blob) == digest
    assert store.path(digest).read_bytes() == blob.read_bytes()


def test_digests_must_be_sha256_hex(tmp_path: Path) -> None:
    store = LocalAdapterStore(tmp_path / "store")
    for bad in ["../../etc/passwd", "ABC", "g" * 64, ""]:
        with pytest.raises(ValueError, match="sha256"):
            store.exists(bad)


def test_interrupted_write_leaves_no_visible_blob(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalAdapterStore(tmp_path / "store")
    blob = tmp_path / "a.safetensors"
    save_adapter_blob(_state(), CFG, blob)

    def crash(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        store.put_file(blob)
    monkeypatch.undo()
    assert store.list() == []
    leftovers = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert leftovers == []
