"""The night benchmark on the tiny model: its JSON, and groups give the K = 1 path's gains."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tessera.bench.night import NightBenchConfig, run_night_bench
from tessera.workers.dataset import DatasetSplit, Example
from tessera.workers.gate import GateConfig
from tessera.workers.lora_config import LoraTrainConfig
from tessera.workers.regression_set import RegressionSet, load_regression_set

TOPICS = ("pizza", "hiking", "chess", "films", "music")


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> Iterator[tuple[Any, Any]]:
    import torch

    from tessera.workers.base_model import BaseModelInfo, load_base_model

    torch.set_num_threads(1)  # two cores shared by many test processes
    yield load_base_model(BaseModelInfo(tiny_model_dir, "tiny", "0" * 64, 0))


def _split(topic: str, n_train: int) -> DatasetSplit:
    examples = [Example((("user", f"Do you like {topic}? ({i})"),),
                        f"I love {topic}, day {i}." + " Truly" * (i % 3), i + 1, "exchange")
                for i in range(n_train + 2)]
    return DatasetSplit(train=tuple(examples[:n_train]), heldout=tuple(examples[n_train:]),
                        digest=topic, from_position=0, to_position=len(examples))


def test_night_bench_report_and_group_gains_equal_single_user_gains(
    tiny: tuple[Any, Any]
) -> None:
    model, tokenizer = tiny
    full = load_regression_set()
    regression = RegressionSet(version=full.version, digest="subset-of-" + full.digest,
                               examples=full.examples[:4], canary_prompts=full.canary_prompts[:1])
    # dropout 0: a user's adapter is then the same alone or in a group (test_group_trainer)
    lora = LoraTrainConfig(rank=4, alpha=8, lr=2e-2, epochs=2, batch_size=4, max_length=64,
                           dropout=0.0)
    config = NightBenchConfig(ks=(3,), lora=lora, gate=GateConfig(min_heldout_examples=2),
                              prior_examples_per_user=2, chunk_tokens=256)
    splits = [_split(topic, 3 + i) for i, topic in enumerate(TOPICS)]
    partials: list[dict[str, Any]] = []
    report = run_night_bench(model, tokenizer, splits, users=list(TOPICS), config=config,
                             regression=regression, base_digest="0" * 64, device="cpu",
                             checkpoint=partials.append)
    json.dumps(report)  # JSON-ready
    # after K = 1, the report so far (a run stopped later keeps it); none after the last K
    assert [p["partial"] for p in partials] == [True] and "partial" not in report
    assert partials[0]["results"] == report["results"][:1]
    assert report["device"] == "cpu" and report["users"] == len(TOPICS)
    by_k = {r["k"]: r for r in report["results"]}
    assert sorted(by_k) == [1, 3]  # K = 1 runs even when not asked for
    for result in by_k.values():
        assert {"k", "users_per_hour", "seconds", "promoted", "rejected",
                "mean_heldout_gain"} <= set(result)
        assert result["promoted"] + result["rejected"] == len(TOPICS)
        assert result["users_per_hour"] > 0
    assert report["speedup"]["1"] == report["cpu_speedup"]["1"] == 1.0
    assert report["speedup"]["3"] == pytest.approx(
        by_k[3]["users_per_hour"] / by_k[1]["users_per_hour"], rel=1e-2)
    alone, grouped = by_k[1]["per_user_gain"], by_k[3]["per_user_gain"]
    assert set(alone) == set(grouped) == set(TOPICS)
    assert any(abs(g) > 1.0 for g in alone.values())  # training moved the held-out NLL
    for user in TOPICS:
        assert grouped[user] == pytest.approx(alone[user], abs=0.01), user
    assert by_k[3]["promoted"] == by_k[1]["promoted"]
