"""Multi-LoRA wiring: a mixed batch gives each row exactly what peft gives its adapter alone."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from tessera.services.inference.adapters import AdapterFormatError, adapter_from_tensors, read_blob
from tessera.services.inference.lora_layers import LoadedAdapter, wrap_model

from .helpers import make_peft, save_blob, tiny_model


def _load(path: Path, digest: str, names: list[str]) -> LoadedAdapter:
    tensors, meta = read_blob(path)
    return adapter_from_tensors(digest, tensors, meta, module_names=names, dtype=torch.float32)


def test_mixed_batch_matches_peft_per_adapter(tmp_path: Path) -> None:
    base = tiny_model()
    specs = [(1, 4, 8, None), (2, 8, 16, ["q_proj", "v_proj"]), (3, 2, 4, ["down_proj", "o_proj"])]
    peft_models, adapters = [], []
    served = copy.deepcopy(base)
    table = wrap_model(
        served,
        target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        n_slots=5,
        max_rank=8,
    )
    for seed, r, alpha, targets in specs:
        pm = make_peft(base, seed, r=r, alpha=alpha, targets=targets)
        path, digest = save_blob(pm, tmp_path / str(seed), r=r, alpha=alpha, targets=targets)
        peft_models.append(pm)
        adapters.append(_load(path, digest, list(table.layers)))
    # slots in a scrambled order, one slot left empty, a base-only row in the middle
    slots = [4, 0, 2]
    for slot, ad in zip(slots, adapters, strict=True):
        table.load(slot, ad)
    torch.manual_seed(7)
    ids = torch.randint(0, 256, (5, 6))
    row_slots = torch.tensor([4, -1, 0, 2, 4])
    with torch.no_grad(), table.context.use(row_slots.repeat_interleave(6)):
        got = served(input_ids=ids).logits
    with torch.no_grad():
        want = [
            peft_models[0](input_ids=ids[0:1]).logits,
            base(input_ids=ids[1:2]).logits,
            peft_models[1](input_ids=ids[2:3]).logits,
            peft_models[2](input_ids=ids[3:4]).logits,
            peft_models[0](input_ids=ids[4:5]).logits,
        ]
    for row, w in enumerate(want):
        torch.testing.assert_close(got[row : row + 1], w, rtol=1e-4, atol=1e-4)
    # the adapters really change the output (the test could not pass with LoRA ignored)
    assert not torch.allclose(want[0], base(input_ids=ids[0:1]).logits, atol=1e-3)
    # outside a context the served model is the base model
    with torch.no_grad():
        torch.testing.assert_close(served(input_ids=ids).logits, base(input_ids=ids).logits)


def test_clear_slot_gives_base(tmp_path: Path) -> None:
    base = tiny_model()
    served = copy.deepcopy(base)
    table = wrap_model(served, target_modules=["q_proj", "v_proj"], n_slots=2, max_rank=4)
    pm = make_peft(base, 1, r=4, alpha=8, targets=["q_proj", "v_proj"])
    path, digest = save_blob(pm, tmp_path, r=4, alpha=8, targets=["q_proj", "v_proj"])
    table.load(1, _load(path, digest, list(table.layers)))
    table.clear(1)
    ids = torch.randint(0, 256, (1, 5))
    with torch.no_grad(), table.context.use(torch.ones(5, dtype=torch.long)):
        got = served(input_ids=ids).logits
    torch.testing.assert_close(got, base(input_ids=ids).logits)


def test_rejects_adapter_that_does_not_fit(tmp_path: Path) -> None:
    base = tiny_model()
    table = wrap_model(copy.deepcopy(base), target_modules=["q_proj"], n_slots=2, max_rank=2)
    pm = make_peft(base, 1, r=4, alpha=8, targets=["q_proj"])
    path, digest = save_blob(pm, tmp_path, r=4, alpha=8, targets=["q_proj"])
    with pytest.raises(ValueError, match="rank 4 > max rank 2"):
        table.load(0, _load(path, digest, list(table.layers)))
    pm2 = make_peft(base, 1, r=2, alpha=8, targets=["v_proj"])
    path2, digest2 = save_blob(pm2, tmp_path / "v", r=2, alpha=8, targets=["v_proj"])
    with pytest.raises(AdapterFormatError, match="not a wrapped layer"):
        _load(path2, digest2, list(table.layers))


def test_a_smaller_rank_overwriting_a_slot_leaves_no_trace_of_the_old_one(
    tmp_path: Path,
) -> None:
    """Placing writes only what it must; the rank padding left by a larger adapter that
    held the slot before must still read as zeros."""
    base = tiny_model()
    served = copy.deepcopy(base)
    targets = ["q_proj", "v_proj"]
    table = wrap_model(served, target_modules=targets, n_slots=1, max_rank=8)
    big = make_peft(base, 1, r=8, alpha=16, targets=targets)
    small = make_peft(base, 2, r=2, alpha=4, targets=targets)
    big_path, big_digest = save_blob(big, tmp_path / "big", r=8, alpha=16, targets=targets)
    path, digest = save_blob(small, tmp_path / "small", r=2, alpha=4, targets=targets)
    table.load(0, _load(big_path, big_digest, list(table.layers)))
    table.load(0, _load(path, digest, list(table.layers)))
    ids = torch.randint(0, 256, (1, 5))
    with torch.no_grad(), table.context.use(torch.zeros(5, dtype=torch.long)):
        got = served(input_ids=ids).logits
    with torch.no_grad():
        torch.testing.assert_close(got, small(input_ids=ids).logits, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(got, big(input_ids=ids).logits, atol=1e-3)
