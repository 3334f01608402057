"""On the real base model (SmolLM2-135M, fp32, CPU): each row of a mixed batch, padded and
with its own adapter, gives the logits peft gives that user's adapter alone."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from tessera.services.inference.adapters import adapter_from_tensors, read_blob
from tessera.services.inference.lora_layers import wrap_model
from tessera.services.inference.model_runner import ModelRunner

from .helpers import TARGETS, save_blob

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def smollm() -> tuple[torch.nn.Module, object]:
    from tessera.workers.base_model import load_base_model, resolve_base_model

    return load_base_model(resolve_base_model(), dtype=torch.float32)


def _peft_with_adapters(base: torch.nn.Module, names: list[str], r: int) -> PeftModel:
    model: PeftModel | None = None
    for i, name in enumerate(names):
        torch.manual_seed(100 + i)
        cfg = LoraConfig(r=r, lora_alpha=2 * r, target_modules=TARGETS, init_lora_weights=False)
        if model is None:
            model = get_peft_model(copy.deepcopy(base), cfg, adapter_name=name)
        else:
            model.add_adapter(name, cfg)
    assert model is not None
    return model.eval()


def test_mixed_batch_equals_peft_on_smollm2(smollm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base, tokenizer = smollm
    names = ["u0", "u1", "u2"]
    r = 8
    pm = _peft_with_adapters(base, names, r)
    served = copy.deepcopy(base)
    table = wrap_model(served, target_modules=TARGETS, n_slots=4, max_rank=r)
    for slot, name in zip([2, 0, 3], names, strict=True):
        pm.set_adapter(name)
        path, digest = save_blob(pm, tmp_path / name, r=r, alpha=2 * r, adapter_name=name)
        tensors, meta = read_blob(path)
        table.load(
            slot,
            adapter_from_tensors(
                digest, tensors, meta, module_names=table.layers, dtype=torch.float32
            ),
        )
    prompts = ["The capital of France is", "Hi!", "Write a haiku about the sea, please", "Hello"]
    ids = [tokenizer.encode(p) for p in prompts]
    row_slots = [2, 0, 3, -1]  # u0, u1, u2, base model
    runner = ModelRunner(served, table, pad_token_id=tokenizer.pad_token_id)
    got = runner.prefill(ids, row_slots)
    nxt = [int(t) for t in got.argmax(1)]
    got_step = runner.decode(nxt, row_slots)
    with torch.no_grad():
        for row, adapter in enumerate([*names, None]):  # None: the base model
            seq = torch.tensor([ids[row]])
            if adapter is None:
                with pm.disable_adapter():
                    want = pm(input_ids=seq).logits[0, -1]
                    want_step = pm(
                        input_ids=torch.cat([seq, torch.tensor([[nxt[row]]])], 1)
                    ).logits[0, -1]
            else:
                pm.set_adapter(adapter)
                want = pm(input_ids=seq).logits[0, -1]
                want_step = pm(input_ids=torch.cat([seq, torch.tensor([[nxt[row]]])], 1)).logits[
                    0, -1
                ]
            torch.testing.assert_close(got[row], want, rtol=1e-4, atol=2e-4)
            torch.testing.assert_close(got_step[row], want_step, rtol=1e-4, atol=2e-4)
        # the adapters change the output, so the comparison above is not vacuous
        pm.set_adapter("u0")
        with pm.disable_adapter():
            plain = pm(input_ids=torch.tensor([ids[0]])).logits[0, -1]
        assert (got[0] - plain).abs().max() > 1e-2
