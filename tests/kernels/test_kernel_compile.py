"""The SGMV kernels compile for A100 (sm_80) and H100 (sm_90) targets, no GPU needed.

The interpreter runs the kernels' Python, not their compiled form; this builds cubins
with Triton's bundled ptxas in a child process without TRITON_INTERPRET.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("compile_sgmv.py")


@pytest.mark.slow
def test_kernels_compile_for_gpu_targets() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 8, proc.stdout
    # 16-bit operands must reach the tensor cores; float32 (exact products) uses FMA
    for arch in (80, 90):
        for op in ("shrink", "expand"):
            assert f"sm_{arch} {op} bf16: tensor-core mma" in lines
            assert f"sm_{arch} {op} fp32: fma" in lines
