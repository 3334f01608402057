"""The revision pipeline's stages sit below it: none imports workers/pipeline.py.

The tenant prior, the stale-head sweep and the history check used to reach back into the
pipeline (function-level and TYPE_CHECKING imports around a cycle). They now take what
they need (a store, a config, the `RevisionWorker` protocol) from workers/revision_types.py;
this test keeps any import of the pipeline, at any level, out of them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.source_ast import parse_source

WORKERS = Path(__file__).resolve().parents[2] / "workers"
BELOW_THE_PIPELINE = [
    "revision_types", "revision_plan", "revision_train", "revision_eval", "revision_decide",
    "prior", "stale_heads", "history_gate",
]


def _imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(parse_source(path.read_text())):  # every level, TYPE_CHECKING too
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("module", BELOW_THE_PIPELINE)
def test_stage_does_not_import_the_pipeline(module: str) -> None:
    assert "tessera.workers.pipeline" not in _imported_modules(WORKERS / f"{module}.py")


@pytest.mark.parametrize("module", BELOW_THE_PIPELINE)
def test_stage_imports_nothing_inside_functions_but_heavy_libraries(module: str) -> None:
    # A function-level import of our own code would be hiding a cycle.
    tree = parse_source((WORKERS / f"{module}.py").read_text())
    for func in ast.walk(tree):
        if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(func):
                if isinstance(node, ast.ImportFrom):
                    assert not (node.module or "").startswith("tessera"), (module, func.name)
