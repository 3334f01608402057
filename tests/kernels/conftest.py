"""Kernel tests run the Triton kernels on CPU through the interpreter.

TRITON_INTERPRET must be set before `tessera.kernels.triton_sgmv` is imported (Triton
decides at decoration time whether a kernel is compiled or interpreted), so it is set
here, at collection, before any test module imports the kernels.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
