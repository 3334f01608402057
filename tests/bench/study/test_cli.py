"""`tessera study personalization` as a user runs it: a child process on the tiny model,
two real chitchat speakers, the test broker and database; last stdout line is the JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tessera.infra.stack import StackInfo

from .conftest import child_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TESSERA = Path(sys.executable).with_name("tessera")


def test_cli_prints_and_writes_the_study(
    stack: StackInfo, database_url: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results" / "study.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    env.update(child_env(tmp_path))
    env.update({
        "TESSERA_DATABASE_URL": database_url,
        "TESSERA_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "TESSERA_TRAIN_OVERRIDES": json.dumps({"rank": 2, "alpha": 4, "epochs": 1, "lr": 0.02,
                                               "dropout": 0.0}),
        "TESSERA_HOLDOUT_K": "2",
        "TESSERA_MIN_TRAIN_EXAMPLES": "2",
        "OMP_NUM_THREADS": "1",
    })
    proc = subprocess.run(
        [str(TESSERA), "study", "personalization", "--n-speakers", "2", "--min-messages", "40",
         "--days", "2", "--max-train", "12", "--max-test", "3", "--max-length", "48",
         "--general-speakers", "1", "--general-per-speaker", "3", "--ranks", "2,1",
         "--base-model", str(tiny_model_dir), "--tag", "cli", "--out", str(out),
         "--gen-tokens", "8", "--repetition-penalty", "1.3", "--no-repeat-ngram", "3"],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert doc == json.loads(out.read_text())
    assert [r["label"] for r in doc["runs"]] == ["r2", "r1"]
    assert [r["train"]["rank"] for r in doc["runs"]] == [2, 1]
    assert len(doc["speakers"]) == 2 and doc["design"]["days"] == 2
    for s in doc["speakers"]:
        assert (s["n_train"], s["n_test"], len(s["nll_by_night"])) == (12, 3, 2)
        assert s["nll_base"] > 0 and s["drift_base"] > 0
    assert "personal beats base" in proc.stdout
    assert doc["generation"] == {"max_new_tokens": 8, "max_prompt_tokens": 192,
                                 "batch_size": 16, "repetition_penalty": 1.3,
                                 "no_repeat_ngram_size": 3, "decoding": "greedy",
                                 "sweep_penalties": [],
                                 "extrapolations": []}
    for key in ("attribution_base", "attribution_shared", "attribution_personal",
                "attribution_real", "repetition_base", "repetition_personal"):
        assert 0.0 <= doc[f"mean_{key}"] <= 1.0, key
    assert isinstance(doc["served_worse_than_prior"], int)
    for label in ("r2", "r1"):
        assert (out.parent / f"study-{label}.png").read_bytes()[:4] == b"\x89PNG"
