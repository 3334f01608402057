"""Run mypy --strict over the `tessera` package and the tests.

The subpackages live in top-level folders mapped by setuptools `package-dir`, which
mypy cannot follow through the editable-install finder; so we lay out a view of the
package as symlinks in a temporary folder and point mypy at it. `tests` is linked beside
it and checked as a second package (`-p tests`).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUBPACKAGES = ["schemas", "events", "kernels", "workers", "services", "infra", "bench"]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        pkg = Path(tmp) / "tessera"
        pkg.mkdir()
        for name in SUBPACKAGES:
            (pkg / name).symlink_to(ROOT / name)
        (Path(tmp) / "tests").symlink_to(ROOT / "tests")
        cmd = [
            sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
            "--explicit-package-bases", "--namespace-packages", "-p", "tessera", "-p", "tests",
        ]
        result = subprocess.run(cmd, cwd=tmp, check=False)
        return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
