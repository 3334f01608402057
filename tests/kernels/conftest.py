"""Kernel tests run the Triton kernels on CPU through the interpreter.

TRITON_INTERPRET must be set before `tessera.kernels.triton_sgmv` is imported (Triton
decides at decoration time whether a kernel is compiled or interpreted). The root
tests/conftest.py sets it for the whole session; this repeats it for runs that start here.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
