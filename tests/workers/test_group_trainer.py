"""Batched multi-user training: a user's adapter trained in a group is the one trained alone.

Dropout is 0 in the equality tests: alone, peft draws dropout masks from the global RNG
over that user's own padded batches; in a group the masks come from the group's generator
over the group's chunks, so with dropout > 0 the two runs see different masks by design.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tessera.workers.adapter_store import load_adapter_blob, sha256_file
from tessera.workers.dataset import Example
from tessera.workers.group_trainer import GroupMember, check_group, train_group
from tessera.workers.lora_config import LoraTrainConfig
from tessera.workers.trainer import train_adapter

BASE = "0" * 64
CONFIG = LoraTrainConfig(rank=4, alpha=8, lr=5e-3, epochs=2, batch_size=4, max_length=64,
                         dropout=0.0)


def _examples(n: int, salt: str) -> list[Example]:
    return [
        Example((("user", f"What did you do on day {i}? {salt}" + " really" * (i % 3)),),
                f"I went to the {salt} and ate pizza {i}." + " yes" * (i % 4), i + 1,
                "exchange")
        for i in range(n)
    ]


def _members(tmp: Path, warm: Path) -> list[GroupMember]:
    return [
        GroupMember("alice", _examples(10, "beach"), CONFIG, seed=1),
        # fewer examples: stops contributing after its steps; warm start; own lr and clip
        GroupMember("bob", _examples(3, "park"),
                    CONFIG.with_overrides({"lr": 2e-2, "max_grad_norm": 0.5, "epochs": 3}),
                    init_adapter=warm, seed=2),
        GroupMember("carol", _examples(7, "city"),
                    CONFIG.with_overrides({"batch_size": 2, "prox_weight": 0.1}),
                    init_adapter=warm, seed=3),
        GroupMember("dave", _examples(6, "museum"), CONFIG.with_overrides({"max_steps": 2}),
                    seed=4),
    ]


def _alone(tiny: tuple[Any, Any], member: GroupMember, out: Path) -> Any:
    model, tokenizer = tiny
    return train_adapter(model, tokenizer, member.examples, config=member.config,
                         base_digest=BASE, init_adapter=member.init_adapter, seed=member.seed,
                         out_dir=out)


@pytest.fixture()
def warm(tiny: tuple[Any, Any], tmp_path: Path) -> Path:
    result = _alone(tiny, GroupMember("prior", _examples(8, "shop"), CONFIG, seed=9),
                    tmp_path / "prior")
    path: Path = result.blob_path
    return path


def test_group_adapters_equal_alone_and_retrain_gives_same_digests(
    tiny: tuple[Any, Any], tmp_path: Path, warm: Path
) -> None:
    model, tokenizer = tiny
    members = _members(tmp_path, warm)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grouped = train_group(model, tokenizer, members, base_digest=BASE, out_dir=tmp_path / "g1",
                          chunk_tokens=256)  # small chunks: several per step, users mixed
    assert all(o.error is None for o in grouped)
    for member, outcome in zip(members, grouped, strict=True):
        alone = _alone(tiny, member, tmp_path / f"alone-{member.user_id}")
        assert outcome.result is not None
        g_state, g_cfg = load_adapter_blob(outcome.result.blob_path)
        a_state, a_cfg = load_adapter_blob(alone.blob_path)
        assert g_cfg == a_cfg
        assert set(g_state) == set(a_state)
        moved = max(float(a_state[k].abs().max()) for k in a_state if "lora_B" in k)
        assert moved > 1e-3  # B left zero: the comparison would prove nothing
        for key in a_state:  # measured differences: < 1e-6 (float rounding only)
            torch.testing.assert_close(g_state[key], a_state[key], rtol=1e-4, atol=1e-5,
                                       msg=f"{member.user_id} {key}")
        assert outcome.result.steps == alone.steps
        assert outcome.result.train_loss == pytest.approx(alone.train_loss, rel=1e-4, abs=1e-6)
    assert [o.result.steps for o in grouped if o.result] == [6, 3, 8, 2]
    again = train_group(model, tokenizer, members, base_digest=BASE, out_dir=tmp_path / "g2",
                        chunk_tokens=256)
    assert [sha256_file(o.result.blob_path) for o in again if o.result] == [
        sha256_file(o.result.blob_path) for o in grouped if o.result]
    after = model.state_dict()
    assert set(after) == set(before)  # the base is restored, unchanged
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_dropout_group_is_deterministic(tiny: tuple[Any, Any], tmp_path: Path) -> None:
    model, tokenizer = tiny
    cfg = CONFIG.with_overrides({"dropout": 0.1})
    members = [GroupMember("a", _examples(5, "x"), cfg, seed=1),
               GroupMember("b", _examples(4, "y"), cfg, seed=2)]
    one = train_group(model, tokenizer, members, base_digest=BASE, out_dir=tmp_path / "1")
    two = train_group(model, tokenizer, members, base_digest=BASE, out_dir=tmp_path / "2")
    assert [sha256_file(o.result.blob_path) for o in one if o.result] == [
        sha256_file(o.result.blob_path) for o in two if o.result]
    assert len({sha256_file(o.result.blob_path) for o in one if o.result}) == 2


def test_members_without_examples_fail_alone_and_shapes_must_agree(
    tiny: tuple[Any, Any], tmp_path: Path
) -> None:
    model, tokenizer = tiny
    outcomes = train_group(model, tokenizer, [GroupMember("a", _examples(3, "x"), CONFIG),
                                              GroupMember("empty", [], CONFIG)],
                           base_digest=BASE, out_dir=tmp_path)
    assert outcomes[0].result is not None and outcomes[0].error is None
    assert outcomes[1].result is None and outcomes[1].error is not None
    assert "no training examples" in outcomes[1].error
    with pytest.raises(ValueError, match="rank"):
        check_group([GroupMember("a", [], CONFIG),
                     GroupMember("b", [], CONFIG.with_overrides({"rank": 8}))])
