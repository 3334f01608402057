"""`tessera demo` refuses, before starting anything, night sizes that could never yield a
decided personal revision (the gate needs its held-out examples, the trainer its minimum)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tessera.bench.commands.demo import night_size_problem

TESSERA = Path(sys.executable).with_name("tessera")
DEFAULTS = {"holdout_k": 8, "min_train_examples": 8, "min_heldout_examples": 8}


@pytest.mark.parametrize(("messages", "days", "ok"), [
    (40, 2, True),  # the demo's defaults: 20 a night = 8 held out + 12 to train on
    (32, 2, True),  # exactly 8 + 8
    (30, 2, False),
    (40, 3, False),  # 13 a night
])
def test_a_night_must_hold_the_heldout_and_the_training_minimum(
    messages: int, days: int, ok: bool
) -> None:
    problem = night_size_problem(train_messages=messages, days=days, **DEFAULTS)
    assert (problem is None) is ok
    if not ok:
        assert problem is not None and f"{messages // days} events a night" in problem


def test_a_holdout_below_the_gates_minimum_is_refused() -> None:
    problem = night_size_problem(train_messages=80, days=2, holdout_k=4, min_train_examples=8,
                                 min_heldout_examples=8)
    assert problem is not None and "every personal revision would be rejected" in problem


def test_the_cli_refuses_before_starting_the_stack(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    env["TESSERA_STATE_DIR"] = str(tmp_path / "state")
    proc = subprocess.run([str(TESSERA), "demo", "--days", "3", "--train-messages", "40"],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert "gives a user 13 events a night" in proc.stderr
    assert "raise --train-messages or lower --days" in proc.stderr
    assert not (tmp_path / "state" / "stack").exists()  # nothing was started

    env["TESSERA_GATE_OVERRIDES"] = '{"min_heldout_examples": "many"}'
    proc = subprocess.run([str(TESSERA), "demo"], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 2
    assert "TESSERA_GATE_OVERRIDES" in proc.stderr and "min_heldout_examples" in proc.stderr
