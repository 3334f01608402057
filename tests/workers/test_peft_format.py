"""Portable adapters: an exported revision is a peft folder that peft loads to the very
logits Tessera serves; a peft folder imports to a blob, and misfits are refused."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tessera.services.inference.adapters import adapter_from_tensors, read_blob
from tessera.services.inference.lora_layers import wrap_model
from tessera.workers.adapter_store import AdapterBlobConfig, save_adapter_blob, sha256_file
from tessera.workers.lora_attach import lora_attached
from tessera.workers.peft_format import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    ImportTarget,
    PeftFormatError,
    check_fits,
    export_blob,
    export_tar,
    linear_shapes,
    read_peft_dir,
    read_peft_tar,
    same_base_name,
    to_blob,
)

TARGETS = ("q_proj", "v_proj")
BASE_DIGEST = "0" * 64  # the `tiny` fixture's


def _random_adapter(model: Any, seed: int, *, r: int = 4, alpha: float = 8.0,
                    targets: tuple[str, ...] = TARGETS) -> dict[str, torch.Tensor]:
    """A LoRA state dict with A and B both random (peft's init leaves B zero, which
    would make every comparison below trivially true)."""
    from peft import get_peft_model_state_dict

    torch.manual_seed(seed)
    with lora_attached(model, rank=r, alpha=alpha, target_modules=targets) as pm:
        state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(pm).items()}
    return {k: torch.randn_like(v) * 0.2 for k, v in state.items()}


def _serving_logits(model: Any, blob: Path, ids: torch.Tensor) -> torch.Tensor:
    """Logits through Tessera's serving path (multi-LoRA layers, kernels' torch path)."""
    served = copy.deepcopy(model)
    table = wrap_model(served, target_modules=list(TARGETS), n_slots=2, max_rank=8)
    tensors, meta = read_blob(blob)
    table.load(1, adapter_from_tensors("x" * 64, tensors, meta, module_names=list(table.layers),
                                       dtype=torch.float32))
    with torch.no_grad(), table.context.use(torch.full((ids.numel(),), 1)):
        out: torch.Tensor = served(input_ids=ids).logits
    return out


def _target(model_dir: Path, **changes: Any) -> ImportTarget:
    values: dict[str, Any] = {
        "base_model_id": "tiny", "base_digest": BASE_DIGEST, "rank": 4, "alpha": 8.0,
        "target_modules": TARGETS, "linear_shapes": linear_shapes(model_dir),
    }
    values.update(changes)
    return ImportTarget(**values)


@pytest.fixture()
def blob(tiny: tuple[Any, Any], tmp_path: Path) -> Path:
    path = tmp_path / "blob.safetensors"
    cfg = AdapterBlobConfig(4, 8.0, TARGETS, BASE_DIGEST)
    save_adapter_blob(_random_adapter(tiny[0], 1), cfg, path)
    return path


def test_export_loads_in_peft_with_tesseras_logits(
    tiny: tuple[Any, Any], blob: Path, tmp_path: Path
) -> None:
    from peft import PeftModel

    model, _ = tiny
    folder = export_blob(blob, tmp_path / "peft", base_model_id="tiny")
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    assert sha256_file(folder / WEIGHTS_FILE) == sha256_file(blob)  # = the adapter digest
    ids = torch.randint(0, 400, (2, 12), generator=torch.Generator().manual_seed(3))
    peft_model = PeftModel.from_pretrained(copy.deepcopy(model), str(folder))
    peft_model.eval()
    with torch.no_grad():
        got = peft_model(input_ids=ids).logits
        base = model(input_ids=ids).logits
    torch.testing.assert_close(got, _serving_logits(model, blob, ids), rtol=1e-5, atol=1e-5)
    tensors, _ = read_blob(blob)
    with lora_attached(model, rank=4, alpha=8.0, target_modules=TARGETS,
                       state_dict=tensors) as pm, torch.no_grad():
        torch.testing.assert_close(got, pm(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, base, atol=1e-3)  # the adapter really acts


def test_tar_export_reimports_to_the_same_blob(blob: Path, tiny_model_dir: Path,
                                               tmp_path: Path) -> None:
    _, meta = read_blob(blob)
    data = export_tar(blob.read_bytes(), AdapterBlobConfig.from_json(json.dumps(meta)),
                      base_model_id="tiny")
    adapter = read_peft_tar(data)
    assert adapter.tessera_base_digest == BASE_DIGEST
    target = _target(tiny_model_dir)
    check_fits(adapter, target)
    again, other = tmp_path / "again.safetensors", tmp_path / "other.safetensors"
    to_blob(adapter, target, again, origin={"user_id": "alice"})
    to_blob(adapter, target, other, origin={"user_id": "bob"})
    # the same tensors and config, but one blob per user (forget deletes blobs by digest)
    assert sha256_file(again) != sha256_file(other)
    got, got_meta = read_blob(again)
    want, want_meta = read_blob(blob)
    assert got_meta == {**want_meta, "origin": {"user_id": "alice"}}
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key])


def test_peft_saved_adapter_imports_with_same_logits(
    tiny: tuple[Any, Any], tiny_model_dir: Path, tmp_path: Path
) -> None:
    """An adapter peft itself saved (alpha 16, not the tenant's 8) serves as peft runs it."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    model, _ = tiny
    # peft records the base model's own name_or_path: here the tiny model's folder
    config = LoraConfig(r=4, lora_alpha=16, target_modules=list(TARGETS), lora_dropout=0.0,
                        task_type="CAUSAL_LM")
    pm = get_peft_model(copy.deepcopy(model), config)
    set_peft_model_state_dict(pm, _random_adapter(model, 2, alpha=16.0))
    pm.save_pretrained(str(tmp_path / "third"))
    adapter = read_peft_dir(tmp_path / "third")
    target = _target(tiny_model_dir, base_model_id=f"{tiny_model_dir.name}.Q4_1")
    check_fits(adapter, target)
    blob = tmp_path / "imported.safetensors"
    assert to_blob(adapter, target, blob, origin={}).lora_alpha == 8.0
    ids = torch.randint(0, 400, (1, 10), generator=torch.Generator().manual_seed(5))
    pm.eval()
    with torch.no_grad():
        want = pm(input_ids=ids).logits
    torch.testing.assert_close(_serving_logits(model, blob, ids), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"r": 8}, "rank r=8"),
        ({"target_modules": ["q_proj", "k_proj"]}, "target_modules"),
        ({"target_modules": ".*proj"}, "not a regex"),
        ({"base_model_name_or_path": "meta-llama/Llama-3-8B"}, "base_model_name_or_path"),
        ({"use_dora": True}, "use_dora"),
        ({"bias": "all"}, "bias"),
        ({"peft_type": "IA3"}, "peft_type"),
    ],
)
def test_misfit_configs_are_refused(
    blob: Path, tiny_model_dir: Path, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    folder = export_blob(blob, tmp_path / "p", base_model_id="tiny")
    # no Tessera metadata: judged by its config like any third-party adapter
    tensors, _ = read_blob(blob)
    from safetensors.torch import save_file

    save_file(tensors, str(folder / WEIGHTS_FILE))
    config = json.loads((folder / CONFIG_FILE).read_text())
    config.update(change)
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(PeftFormatError, match=message):
        check_fits(read_peft_dir(folder), _target(tiny_model_dir))


def test_wrong_keys_shapes_and_base_digest_are_refused(
    blob: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    folder = export_blob(blob, tmp_path / "p", base_model_id="tiny")
    with pytest.raises(PeftFormatError, match="trained on base weights 000000000000"):
        check_fits(read_peft_dir(folder), _target(tiny_model_dir, base_digest="1" * 64))
    tensors, _ = read_blob(blob)
    first = sorted(tensors)[0]
    save_file({k: v for k, v in tensors.items() if k != first}, str(folder / WEIGHTS_FILE))
    with pytest.raises(PeftFormatError, match="1 missing"):
        check_fits(read_peft_dir(folder), _target(tiny_model_dir))
    bad = dict(tensors)
    bad[first] = torch.zeros(4, 7)
    save_file(bad, str(folder / WEIGHTS_FILE))
    with pytest.raises(PeftFormatError, match=r"shape \(4, 7\)"):
        check_fits(read_peft_dir(folder), _target(tiny_model_dir))
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(PeftFormatError, match=r"no adapter_model\.safetensors"):
        read_peft_dir(folder)
    with pytest.raises(PeftFormatError, match="not a tar"):
        read_peft_tar(b"definitely not a tar archive" * 40)


def test_base_names_match_across_quantisation() -> None:
    assert same_base_name("HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct.Q4_1")
    assert not same_base_name("HuggingFaceTB/SmolLM2-360M-Instruct", "SmolLM2-135M-Instruct")
    assert not same_base_name("", "SmolLM2-135M-Instruct")
