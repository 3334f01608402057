"""Trainable multi-LoRA layers: per-row routing, gradients per slot, clean restore."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tessera.workers.group_lora import (
    GroupLoraLinear,
    RowRouting,
    group_lora_attached,
    peft_key,
)


def _weights(n: int, rank: int = 2) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    a = [torch.randn(rank, 6, generator=gen) for _ in range(n)]
    b = [torch.randn(5, rank, generator=gen) for _ in range(n)]
    return a, b


def test_each_row_gets_its_slots_update_and_gradients_stay_per_slot() -> None:
    torch.manual_seed(0)
    base = nn.Linear(6, 5).requires_grad_(False)
    a, b = _weights(3)
    routing = RowRouting()
    layer = GroupLoraLinear(base, a=a, b=b, scales=torch.full((3,), 0.5), routing=routing)
    x = torch.randn(4, 3, 6)
    slots = [0, 2, -1, 2]
    with routing.rows(slots):
        y = layer(x)
    # reference: peft's formula row by row, with leaf copies of the weights
    ra = [t.clone().requires_grad_(True) for t in a]
    rb = [t.clone().requires_grad_(True) for t in b]
    want = torch.stack([base(x[i]) + (((x[i] @ ra[s].T) @ rb[s].T) * 0.5 if s >= 0 else 0)
                        for i, s in enumerate(slots)])
    torch.testing.assert_close(y, want)
    weights = torch.randn_like(y)
    (y * weights).sum().backward()
    (want * weights).sum().backward()
    for s in range(3):
        grad_a, grad_b = layer.lora_a[s].grad, layer.lora_b[s].grad
        if s == 1:  # no row uses slot 1: nothing flows into it
            assert grad_a is None or float(grad_a.abs().max()) == 0.0
            continue
        assert grad_a is not None and grad_b is not None
        torch.testing.assert_close(grad_a, ra[s].grad)
        torch.testing.assert_close(grad_b, rb[s].grad)
    with routing.rows([0]), pytest.raises(RuntimeError, match="routed"):
        layer(torch.randn(3, 6))  # a flat input cannot be routed by row
    assert torch.equal(layer(x), base(x))  # outside a routing block: the base alone


def test_attach_puts_the_original_linears_back() -> None:
    model = nn.Sequential()
    model.add_module("q_proj", nn.Linear(6, 5))
    model.add_module("o_proj", nn.Linear(5, 5))
    original = model.q_proj
    a, b = _weights(2)
    states = [{peft_key("q_proj", "lora_A"): a[i], peft_key("q_proj", "lora_B"): b[i]}
              for i in range(2)]
    with group_lora_attached(model, states, scale=1.0, targets=("q_proj",)) as group:
        assert isinstance(model.q_proj, GroupLoraLinear)
        assert model.o_proj.__class__ is nn.Linear  # not a target
        got = group.slot_state_dict(1)
        assert set(got) == set(states[1])
        assert all(torch.equal(got[k], states[1][k]) for k in got)
    assert model.q_proj is original
    with pytest.raises(ValueError, match="no weights"), \
            group_lora_attached(model, [{}], scale=1.0, targets=("q_proj",)):
        pass
    assert model.q_proj is original  # restored after a failed attach too
