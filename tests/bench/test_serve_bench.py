"""The serving benchmark compares like with like: the three variants compute the same."""

from __future__ import annotations

import torch
from transformers import DynamicCache

from tessera.bench import serve_bench as bm
from tests.services.inference.helpers import tiny_model


def test_variants_agree_and_rates_are_positive() -> None:
    base = tiny_model()
    adapters = bm.random_adapters(base, 3, 4, seed=0, targets=("q_proj", "v_proj", "down_proj"))
    served, table = bm.build_tables(base, adapters, 4)
    peft = bm.peft_model_with(base, adapters)
    ids = torch.randint(0, 256, (3, 5))
    pos = torch.arange(5).expand(3, -1)
    with torch.inference_mode():
        ours = bm.lora_forward(served, table, torch.arange(3))(ids, pos, DynamicCache())
        mixed = bm.hf_forward(peft, adapter_names=["a0", "a1", "a2"])(ids, pos, DynamicCache())
        plain = bm.hf_forward(base)(ids, pos, DynamicCache())
    torch.testing.assert_close(ours, mixed, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(ours, plain, atol=1e-3)
    rates = bm.best_rates([bm.hf_forward(base)], 2, 4, 3, 256, 0, rounds=2)
    assert len(rates) == 1 and rates[0] > 0


def test_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert bm.percentile(values, 0.99) == 99.0
    p50, p99 = bm.summarize_ttft([0.001 * v for v in values])
    assert (round(p50, 1), round(p99, 1)) == (50.5, 99.0)
