"""The training benchmark end to end on the tiny Llama (the real run uses SmolLM2)."""

from __future__ import annotations

from pathlib import Path

from tessera.bench.train_bench import STAGES, BenchConfig, run_train_bench, speaker_events
from tessera.schemas.settings import Settings
from tessera.workers.lora_config import LoraTrainConfig


def test_speaker_events_are_valid_stored_streams() -> None:
    streams = speaker_events(2, 6)
    assert [len(s) for s in streams] == [6, 6]
    positions = [e.position for s in streams for e in s]
    assert positions == sorted(set(positions))
    assert {e.envelope.user_id for e in streams[1]} == {"bench-1"}


def test_report_has_the_required_keys_and_consistent_figures(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = BenchConfig(users=2, events_per_user=8, holdout_k=2,
                         lora=LoraTrainConfig(rank=4, alpha=8, max_length=64, batch_size=4))
    report = run_train_bench(config, settings=Settings(state_dir=tmp_path,
                                                       base_model=tiny_model_dir))
    for key in ("revisions_per_hour", "seconds_per_revision", "adapter_bytes", "base_bytes",
                "adapter_to_base_ratio", "users", "events_per_user", "cores"):
        assert key in report
    assert set(report["seconds_per_revision"]) == set(STAGES)
    assert set(report["cpu_seconds_per_revision"]) == set(STAGES)
    assert 0 < report["evaluate_share_cpu"] < 1
    # Figures are rounded to the millisecond, and a tiny model's revision takes tens of them:
    # compare within that rounding, not a fixed share of the total.
    total = report["seconds_per_revision_total"]
    stage_rounding = 0.0005 * len(STAGES)
    assert abs(sum(report["seconds_per_revision"].values()) - total) <= stage_rounding + 0.0005
    assert abs(report["revisions_per_hour"] * total - 3600) <= 1.8 / (total - 0.0005) + 0.01 * total
    assert report["adapter_to_base_ratio"] == round(
        report["adapter_bytes"] / report["base_bytes"], 6)
    assert [u["train_examples"] for u in report["per_user"]] == [6, 6]
    # The gate is the trainers' (settings), recorded with the regression set it used: at 2
    # held-out examples per user it refuses to decide on noise.
    assert report["gate"]["min_heldout_examples"] == 8
    assert report["regression_set"]["version"] == "regression-v1"
    for user in report["per_user"]:
        assert not user["promote"]
        assert "too few held-out examples: 2 < 8" in " ".join(user["reasons"])
        parts = user["evaluate_seconds"]
        assert abs(parts["baseline"] + parts["candidate"] - user["seconds"]["evaluate"]) < 0.01
