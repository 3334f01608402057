"""`tessera bench kernel`: times every backend and writes the JSON it prints last."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from tessera.bench.cli import app
from tessera.bench.kernel_bench import KernelShape, time_shape


def test_time_shape_times_each_backend() -> None:
    timing = time_shape(
        KernelShape(tokens=16, adapters=4, rank=8, hidden=64, dtype="float32"),
        torch.device("cpu"),
        with_triton=False,
        reps=3,
    )
    assert timing.triton_ms is None
    assert timing.torch_ms > 0 and timing.reference_ms > 0
    assert timing.serving_backend == "torch"
    assert abs(timing.speedup_vs_reference - timing.reference_ms / timing.torch_ms) < 0.05 * (
        timing.speedup_vs_reference + 1
    )


def test_bench_kernel_command_writes_and_prints_the_result(tmp_path: Path) -> None:
    out = tmp_path / "kernel.json"
    result = CliRunner().invoke(
        app, ["bench", "kernel", "--quick", "--reps", "2", "--device", "cpu", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert printed == json.loads(out.read_text())
    assert printed["device"].startswith("cpu")
    assert len(printed["results"]) == 3
    keys = {"tokens", "adapters", "rank", "hidden", "dtype", "triton_ms", "torch_ms"}
    keys |= {"reference_ms", "speedup_vs_reference"}
    for row in printed["results"]:
        assert keys <= row.keys()
        assert row["reference_ms"] > 0 and row["torch_ms"] > 0
